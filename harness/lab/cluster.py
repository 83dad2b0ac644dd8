"""The lab seen from its caller: ``with LabCluster(nodes=3) as lab: ...`` and its helpers.

``LabCluster`` starts ``python -m harness.lab.process`` (``process.py``: the pods, the
kube-proxy emulation and the API server in one gevent hub; gevent is monkey-patched there
only, never in the caller) with its ``LabConfig`` as JSON, waits for its ``lab.json`` and
talks to it through the lab's Kubernetes API server (``/lab/v1/`` control endpoints).
``control_call``, ``read_lab_info``, ``read_fault_log`` and ``pid_alive`` reach a lab some
other process started.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from harness.core.faults import Fault
from harness.errors import LabError
from harness.lab.config import MAX_BLOCK, MAX_KERNEL_BLOCK, LabConfig

LAB_SCHEMA = "nodeport-harness/lab/v1"
LAB_FILE = "lab.json"
LOG_FILE = "lab.log"
STATE_MARKER = ".nodeport-lab"  # this folder is a lab's: it may be re-used and kept private
# What a lab leaves in its folder (an older lab's folder has no marker)
STATE_FILES = {LAB_FILE, LOG_FILE, STATE_MARKER, "ca.crt", "apiserver.crt", "apiserver.key",
               "kubeconfig", "kubeconfig-restricted"}
# Every lab holds this listener on its own block: it is how labs find a free block.
RESERVED_PORT = 8080
EXIT_ADDRESS_IN_USE = 3
START_TIMEOUT_S = 30.0
REAL_START_TIMEOUT_S = 240.0


def reserved_address(block: int) -> str:
    return f"127.{block}.0.10"


def block_is_free(block: int) -> bool:
    """True when no lab (nor anything else) listens on this block's reserved address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((reserved_address(block), RESERVED_PORT))
        sock.listen(1)  # bind alone does not clash with another socket's listen
        return True
    except OSError:
        return False
    finally:
        sock.close()


class LabCluster:
    """A running lab: start with ``start()`` or ``with``; ``stop()`` leaves nothing behind.

    Configured by a ``LabConfig``, or its settings as keywords (``LabCluster(nodes=3,
    placement=[3, 2, 1])``), or both (the keywords win); invalid settings raise LabError here.
    Without ``state_dir`` the lab lives in a temporary directory removed on stop; without
    ``block`` it takes a free 127.<block>.0.0/16.

    ``lb_address`` is where the lab's LoadBalancer lives; it only listens while the Service
    is of type LoadBalancer (on the Service port).
    """

    def __init__(self, config: LabConfig | None = None, **settings: Any):
        config = config or LabConfig()
        self.config = config.replace(**settings) if settings else config
        self.block = self.config.block
        self._own_dir = self.config.state_dir is None
        self.state_dir = Path(self.config.state_dir) if not self._own_dir else None
        self.process: subprocess.Popen | None = None
        self._info: dict[str, Any] = {}
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LabCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LabCluster:
        if self.process is not None:
            return self
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="nodeport-lab-"))
        claim_state_dir(self.state_dir)
        try:
            _refuse_running_lab(self.state_dir)
            kernel = self.config.datapath == "kernel"
            if kernel:
                from harness.lab.netns import preflight

                preflight()  # not root, no iptables, no netns: one line saying what to do
            if self.config.control_plane == "real":
                from harness.lab.binaries import find

                find()  # not built: one line naming `nodeport-harness lab build`
            blocks = [self.block] if self.block is not None else _candidate_blocks(
                MAX_KERNEL_BLOCK if kernel else MAX_BLOCK)
            last: LabError | None = None
            for block in blocks[:20]:
                if self.block is None and not block_is_free(block):
                    continue
                try:
                    self._launch(block)
                    return self
                except _AddressInUse as err:
                    last = LabError(str(err))
                    if self.block is not None:
                        break
            raise last or LabError("no free 127.<block>.0.0/16 address block for the lab; "
                                   "stop other labs or pass --block")
        except BaseException:
            self.stop()  # e.g. Ctrl-C while starting: the lab process goes too
            if self._own_dir:  # nothing of a failed start stays behind
                shutil.rmtree(self.state_dir, ignore_errors=True)
            raise

    def _launch(self, block: int) -> None:
        assert self.state_dir is not None
        lab_file = self.state_dir / LAB_FILE
        with contextlib.suppress(FileNotFoundError):
            lab_file.unlink()
        log_path = self.state_dir / LOG_FILE
        # The child gets the config with its place settled: this directory, this block.
        config = self.config.replace(state_dir=str(self.state_dir), block=block)
        argv = [
            sys.executable, "-m", "harness.lab.process",
            "--config", json.dumps(config.to_dict()), "--parent-pid", str(os.getpid()),
        ]
        with open(log_path, "wb") as log:
            # Own session: the caller's Ctrl-C reaches the caller, which then stops the lab
            # cleanly; stderr goes to a file so a chatty lab can never block on a full pipe.
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True,
            )
        self._finalizer = weakref.finalize(self, _terminate, self.process,
                                           self.state_dir if self._own_dir else None,
                                           block if config.datapath == "kernel" else None)
        # A real control plane starts etcd, the API server, the controllers and the pods.
        timeout = REAL_START_TIMEOUT_S if config.control_plane == "real" else START_TIMEOUT_S
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                self._finalizer.detach()
                line = _last_line(log_path).removeprefix("error: ")
                if code == EXIT_ADDRESS_IN_USE:
                    raise _AddressInUse(line)
                raise LabError(f"the lab failed to start: {line or f'exit code {code}'}")
            info = read_json(lab_file)
            if info and info.get("pid") == self.process.pid:
                self._info = info
                return
            time.sleep(0.02)
        self.stop()
        raise LabError(f"the lab did not become ready within {timeout:.0f} s; "
                       f"see {log_path}")

    def stop(self) -> None:
        """Terminate the lab process (its whole process group) and wait for it."""
        if self._finalizer is not None:
            self._finalizer()  # idempotent: runs _terminate once
            self._finalizer = None
        self.process = None

    # -- what a test or command needs ---------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The lab's ``lab.json`` as read when it became ready."""
        return dict(self._info)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def kubeconfig(self) -> Path:
        return Path(self._need("kubeconfig"))

    @property
    def restricted_kubeconfig(self) -> Path | None:
        path = self._info.get("restricted_kubeconfig")
        return Path(path) if path else None

    @property
    def api_url(self) -> str:
        return self._need("api_url")

    @property
    def token(self) -> str:
        return self._need("token")

    @property
    def node_port(self) -> int | None:
        return self._info.get("node_port")

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return [dict(n) for n in self._info.get("nodes", [])]

    @property
    def pods(self) -> list[dict[str, Any]]:
        return [dict(p) for p in self._info.get("pods", [])]

    @property
    def lb_address(self) -> str | None:
        return self._info.get("lb_address")

    def node_url(self, node: str | int = 0, address: str = "external_ip") -> str:
        """http://<node address>:<nodePort> for a node name or index."""
        entry = self._node(node)
        ip = entry.get(address) or entry["internal_ip"]
        return f"http://{ip}:{self.node_port}"

    def stats(self) -> dict[str, int]:
        """Pod name -> successful /api/messages it served (killed pods included)."""
        return {k: int(v) for k, v in self.control("GET", "/lab/v1/stats").items()}

    def node_down(self, name: str) -> dict:
        return self.fault("node", name, "down")

    def node_up(self, name: str) -> dict:
        return self.fault("node", name, "up")

    def kill_pod(self, name: str) -> dict:
        return self.fault("pod", name, "kill")

    def restart_pod(self, name: str) -> dict:
        """Kill a pod; its replacement (``replacement`` in the answer: a new name, the same
        node) joins the endpoints once ready (``restart_delay_s`` later)."""
        return self.fault("pod", name, "restart")

    def current_pods(self) -> list[dict[str, Any]]:
        """The application's pods as the lab's API lists them now (``pods`` is the lab at
        its start): name, node, ip, port, ready."""
        self._need("api_url")
        info = self._info
        items = control_call(info, "GET", f"/api/v1/namespaces/{info['namespace']}/pods"
                             f"?labelSelector=app%3D{info['service']}").get("items") or []
        out = []
        for item in items:
            status = item.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or ())
            ports = (item["spec"]["containers"][0].get("ports") or [{}])
            out.append({"name": item["metadata"]["name"], "node": item["spec"].get("nodeName"),
                        "ip": status.get("podIP"), "port": ports[0].get("containerPort"),
                        "ready": ready})
        return out

    def fault(self, kind: str, name: str, action: str) -> dict:
        """One fault (``harness.core.faults``' vocabulary; the lab checks it): what it did."""
        return self.control("POST", "/lab/v1/faults", Fault(kind, name, action).to_dict())

    def fault_log(self, since: float | None = None) -> list[dict]:
        """Every fault the lab applied (from epoch ``since`` on), whoever sent it."""
        return read_fault_log(self._info, since)

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        return control_call(self._info, method, path, body)

    def _need(self, key: str) -> Any:
        if not self._info:
            raise LabError("the lab is not running; call start() (or use it in a with block)")
        return self._info[key]

    def _node(self, node: str | int) -> dict[str, Any]:
        nodes = self._info.get("nodes", [])
        if isinstance(node, int):
            return nodes[node]
        for entry in nodes:
            if entry["name"] == node:
                return entry
        raise LabError(f"no node named {node!r} in the lab; it has "
                       f"{', '.join(n['name'] for n in nodes)}")


class _AddressInUse(LabError):
    """The lab process could not bind its block's addresses (another lab took them)."""


def control_call(info: dict[str, Any], method: str, path: str, body: dict | None = None,
                 timeout: float = 10.0) -> dict:
    """One call to a running lab's control API (HTTPS, the lab's CA, the admin token)."""
    import ssl  # here, not at the top: the lab process must patch gevent in before ssl
    import urllib.error
    import urllib.request

    # The lab's control API (its own server beside a real control plane, else the API
    # server itself); API calls go to the API server (a real one: on the lab's uplink).
    base = info.get("control_url") if path.startswith("/lab/") else None
    url = (base or info["api_url"]).rstrip("/") + path
    if not url.startswith(("https://127.", "https://198.18.")):
        raise LabError(f"the lab API URL {info['api_url']!r} is not a loopback https:// URL; "
                       "remove the stale lab.json and start the lab again")
    context = ssl.create_default_context(cafile=info["ca"])
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json",
               "Accept": "application/json"}
    # The URL was checked to be https://127.x above.
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(  # noqa: S310 - checked https://127. above
                request, context=context, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            message = json.loads(raw).get("message") or raw.decode(errors="replace")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")
        raise LabError(f"the lab refused {method} {path}: {message.strip() or err.reason}"
                       ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise LabError(f"the lab API at {info['api_url']} is not reachable ({reason}); "
                       "is the lab still running?") from None


def read_fault_log(info: dict[str, Any], since: float | None = None,
                   timeout: float = 10.0) -> list[dict]:
    """A running lab's fault log (``GET /lab/v1/faults``): id, time (epoch seconds), kind,
    name, action and what each did, oldest first; from epoch ``since`` on when given."""
    path = "/lab/v1/faults" + (f"?since={since!r}" if since is not None else "")
    return list(control_call(info, "GET", path, timeout=timeout).get("faults") or [])


def _candidate_blocks(last: int = MAX_BLOCK) -> list[int]:
    # Start somewhere random so labs started at once (parallel tests) rarely collide.
    start = random.randrange(1, last + 1)
    return [(start + i - 1) % last + 1 for i in range(last)]


def claim_state_dir(state_dir: Path) -> None:
    """Make ``state_dir`` the lab's private folder (mode 700: it holds the lab's keys and
    tokens): create it, or take an existing one that is empty or already a lab's. Any other
    folder (``--state-dir /tmp``, ``.``) is refused, never chmod-ed: the lab would take it
    from its other users."""
    try:
        state_dir.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        if not state_dir.is_dir():
            raise LabError(f"--state-dir {state_dir} is not a folder: pass a new folder, "
                           "e.g. --state-dir .lab") from None
        foreign = sorted(name for name in os.listdir(state_dir) if name not in STATE_FILES)
        if foreign and not (state_dir / STATE_MARKER).is_file():
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more"
                                              if len(foreign) > 3 else "")
            raise LabError(
                f"--state-dir {state_dir} already holds files that are not the lab's "
                f"({shown}); the lab makes its folder private (mode 700) and keeps keys "
                f"there: pass a new or empty folder, e.g. --state-dir {state_dir / 'lab'}"
            ) from None
        if state_dir.stat().st_uid != os.getuid():
            raise LabError(f"--state-dir {state_dir} belongs to another user: pass a folder "
                           "of your own") from None
        with contextlib.suppress(OSError):
            state_dir.chmod(0o700)
    except OSError as err:
        raise LabError(f"cannot create --state-dir {state_dir}: "
                       f"{err.strerror or err}") from None
    with contextlib.suppress(OSError):
        (state_dir / STATE_MARKER).write_text("a nodeport-harness lab's state folder\n")


def _refuse_running_lab(state_dir: Path) -> None:
    info = read_json(state_dir / LAB_FILE)
    pid = info.get("pid") if info else None
    if pid and pid_alive(pid):
        raise LabError(f"a lab is already running from {state_dir} (pid {pid}); stop it "
                       "(Ctrl-C in its terminal) or use another --state-dir")


def pid_alive(pid: int) -> bool:
    """True if a process with this pid runs (and is not a zombie)."""
    if pid <= 0:
        return False  # 0 and negatives address process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _terminate(process: subprocess.Popen, own_dir: Path | None,
               kernel_block: int | None = None) -> None:
    """SIGTERM the lab, then SIGKILL its process group if it does not go in time; a kernel
    lab's namespaces are removed here too when the lab process could not do it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything it left in its group
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    if kernel_block is not None:
        from harness.lab.netns import cleanup

        cleanup(kernel_block)  # nothing when the lab tore down itself
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def read_lab_info(state_dir: str | os.PathLike) -> dict[str, Any]:
    """The lab.json of a lab running from state_dir, or LabError saying how to start one."""
    path = Path(state_dir) / LAB_FILE
    info = read_json(path)
    if not info:
        raise LabError(f"no running lab found in {state_dir} (no {LAB_FILE}); start one with "
                       "'nodeport-harness lab' or pass --state-dir")
    if not pid_alive(int(info.get("pid") or 0)):
        raise LabError(f"the lab recorded in {path} (pid {info.get('pid')}) is not running; "
                       "start one with 'nodeport-harness lab'")
    return info
