"""The lab cluster's process and its Python API: ``with LabCluster() as lab: ...``.

``LabCluster`` starts ``python -m harness.lab.cluster`` in its own process (gevent is
monkey-patched there only, never in the caller), waits for its ``lab.json`` and talks to it
through the lab's Kubernetes API server (``/lab/v1/`` control endpoints). The lab process
runs every pod as a helloworld server, the kube-proxy emulation and the API server, all in
one gevent hub, until SIGTERM/SIGINT or until its parent goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
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

from harness.errors import LabError

LAB_SCHEMA = "nodeport-harness/lab/v1"
LAB_FILE = "lab.json"
LOG_FILE = "lab.log"
POD_PORT = 8080
# Every lab holds this listener on its own block: it is how labs find a free block.
RESERVED_PORT = 8080
EXIT_ADDRESS_IN_USE = 3
START_TIMEOUT_S = 30.0


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

    ``lb_address`` is where the lab's LoadBalancer lives; it only listens while the Service
    is of type LoadBalancer (on the Service port).
    """

    def __init__(
        self,
        nodes: int = 3,
        pods: int = 6,
        placement: list[int] | None = None,
        service_type: str = "NodePort",
        node_port: int | None = None,
        policy: str = "Cluster",
        affinity: str = "None",
        proxy_mode: str = "iptables",
        pod_service_ms: float = 0,
        pod_concurrency: int = 0,
        external_ip: bool = True,
        state_dir: str | os.PathLike | None = None,
        block: int | None = None,
        extra_api_nodes: int = 0,
        hop_ms: float = 0.2,
        restricted_token: bool = False,
        lb_check_s: float = 0.5,
        seed: int | None = None,
        data_plane: str = "handoff",
    ):
        self.config: dict[str, Any] = {
            "nodes": nodes, "pods": pods, "placement": list(placement) if placement else None,
            "service_type": service_type, "node_port": node_port, "policy": policy,
            "affinity": affinity, "proxy_mode": proxy_mode, "pod_service_ms": pod_service_ms,
            "pod_concurrency": pod_concurrency, "external_ip": external_ip,
            "extra_api_nodes": extra_api_nodes, "hop_ms": hop_ms,
            "restricted_token": restricted_token, "lb_check_s": lb_check_s, "seed": seed,
            "data_plane": data_plane,
        }
        _validate(self.config)
        if block is not None and not 0 <= block <= 250:
            raise LabError(f"--block must be between 0 and 250, got {block}")
        self.block = block
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else None
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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.chmod(0o700)
        try:
            _refuse_running_lab(self.state_dir)
            blocks = [self.block] if self.block is not None else _candidate_blocks()
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
        argv = [
            sys.executable, "-m", "harness.lab.cluster",
            "--state-dir", str(self.state_dir), "--block", str(block),
            "--config", json.dumps(self.config), "--parent-pid", str(os.getpid()),
        ]
        with open(log_path, "wb") as log:
            # Own session: the caller's Ctrl-C reaches the caller, which then stops the lab
            # cleanly; stderr goes to a file so a chatty lab can never block on a full pipe.
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True,
            )
        self._finalizer = weakref.finalize(self, _terminate, self.process,
                                           self.state_dir if self._own_dir else None)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                self._finalizer.detach()
                line = _last_line(log_path).removeprefix("error: ")
                if code == EXIT_ADDRESS_IN_USE:
                    raise _AddressInUse(line)
                raise LabError(f"the lab failed to start: {line or f'exit code {code}'}")
            info = _read_json(lab_file)
            if info and info.get("pid") == self.process.pid:
                self._info = info
                return
            time.sleep(0.02)
        self.stop()
        raise LabError(f"the lab did not become ready within {START_TIMEOUT_S:.0f} s; "
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

    def fault(self, kind: str, name: str, action: str) -> dict:
        return self.control("POST", "/lab/v1/faults",
                            {"kind": kind, "name": name, "action": action})

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

    url = info["api_url"].rstrip("/") + path
    if not url.startswith("https://127."):
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


def _validate(config: dict[str, Any]) -> None:
    choices = {
        "service_type": ("ClusterIP", "NodePort", "LoadBalancer"),
        "policy": ("Cluster", "Local"),
        "affinity": ("None", "ClientIP"),
        "proxy_mode": ("iptables", "ipvs"),
        "data_plane": ("handoff", "pipe"),
    }
    for key, allowed in choices.items():
        if config[key] not in allowed:
            flag = "--" + key.replace("_", "-")
            raise LabError(f"{flag} must be one of {', '.join(allowed)}, got {config[key]!r}")
    if not 1 <= int(config["nodes"]) <= 89:
        raise LabError(f"--nodes must be between 1 and 89, got {config['nodes']}")
    if not 0 <= int(config["pods"]) <= 250:
        raise LabError(f"--pods must be between 0 and 250, got {config['pods']}")
    placement = config["placement"]
    if placement is not None:
        if len(placement) != config["nodes"] or any(int(p) < 0 for p in placement):
            raise LabError(f"--placement needs {config['nodes']} non-negative counts "
                           f"(one per node), got {','.join(map(str, placement))}")
        if sum(placement) > 250:
            raise LabError("--placement puts more than 250 pods in the lab; use fewer")
    port = config["node_port"]
    if port is not None and not 30000 <= int(port) <= 32767:
        raise LabError(f"--node-port must be in 30000-32767, got {port}")
    for key in ("pod_service_ms", "pod_concurrency", "extra_api_nodes", "hop_ms"):
        if float(config[key]) < 0:
            raise LabError(f"--{key.replace('_', '-')} must not be negative")
    if int(config["extra_api_nodes"]) > 10000:
        raise LabError("--extra-api-nodes must be at most 10000")
    if not 0.01 <= float(config["lb_check_s"]) <= 60:
        raise LabError("lb_check_s must be between 0.01 and 60 seconds")


def _candidate_blocks() -> list[int]:
    # Start somewhere random so labs started at once (parallel tests) rarely collide.
    start = random.randrange(1, 251)
    return [(start + i - 1) % 250 + 1 for i in range(250)]


def _refuse_running_lab(state_dir: Path) -> None:
    info = _read_json(state_dir / LAB_FILE)
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


def _terminate(process: subprocess.Popen, own_dir: Path | None) -> None:
    """SIGTERM the lab, then SIGKILL its process group if it does not go in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything it left in its group
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
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


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def read_lab_info(state_dir: str | os.PathLike) -> dict[str, Any]:
    """The lab.json of a lab running from state_dir, or LabError saying how to start one."""
    path = Path(state_dir) / LAB_FILE
    info = _read_json(path)
    if not info:
        raise LabError(f"no running lab found in {state_dir} (no {LAB_FILE}); start one with "
                       "'nodeport-harness lab' or pass --state-dir")
    if not pid_alive(int(info.get("pid") or 0)):
        raise LabError(f"the lab recorded in {path} (pid {info.get('pid')}) is not running; "
                       "start one with 'nodeport-harness lab'")
    return info


# -- inside the lab process ------------------------------------------------------------------


def run_lab_process(state_dir: Path, block: int, config: dict[str, Any], parent_pid: int) -> int:
    """The lab process body: patch gevent in, start everything, serve until told to stop."""
    from gevent import monkey

    monkey.patch_all()  # this process only; before the API server imports ssl
    import gevent
    from gevent.event import Event

    from harness.helloworld import HelloApp, make_app, serve
    from harness.lab import apiserver
    from harness.lab.proxy import NodePortProxy
    from harness.lab.state import LabApiError, LabState

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")

    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        reservation.bind((reserved_address(block), RESERVED_PORT))
        reservation.listen(1)
    except OSError as err:
        log(f"error: the lab's address block 127.{block}.0.0/16 is in use "
            f"({reserved_address(block)}:{RESERVED_PORT}: {err.strerror}); another lab may "
            "be running there: stop it or pass another --block")
        return EXIT_ADDRESS_IN_USE
    _raise_file_limit()
    try:
        state = LabState(
            nodes=config["nodes"], pods=config["pods"], placement=config["placement"],
            service_type=config["service_type"], node_port=config["node_port"],
            policy=config["policy"], affinity=config["affinity"], block=block,
            external_ip=config["external_ip"], extra_api_nodes=config["extra_api_nodes"],
            seed=config["seed"],
        )
    except (ValueError, LabApiError) as err:
        log(f"error: {err}")
        return 2

    apps: dict[str, HelloApp] = {}
    servers: dict[str, Any] = {}
    for pod in state.pods:
        app = make_app(pod.name, pod.node, config["pod_service_ms"], config["pod_concurrency"])
        try:
            servers[pod.name] = serve(app, pod.ip, pod.port)
        except OSError as err:
            log(f"error: pod {pod.name} cannot listen on {pod.ip}:{pod.port} "
                f"({err.strerror}); stop whatever uses it or pass another --block")
            return EXIT_ADDRESS_IN_USE
        apps[pod.name] = app

    def sync_pods() -> None:
        alive = {pod.name for pod in state.pods}
        for name in [name for name in servers if name not in alive]:
            servers.pop(name).kill()  # a killed pod stops serving and resets its clients

    state.subscribe(sync_pods)

    def handoff(pod_name: str) -> Any:
        server = servers.get(pod_name)
        return server.adopt if server is not None else None

    proxy = NodePortProxy(state, proxy_mode=config["proxy_mode"], hop_ms=config["hop_ms"],
                          lb_check_s=config["lb_check_s"], seed=config["seed"], log=log,
                          handoff=handoff if config["data_plane"] == "handoff" else None)
    proxy.start()
    if proxy.errors:
        log(f"error: {proxy.errors[0]}; pass another --node-port or stop what uses it")
        return 2

    def stats() -> dict[str, int]:
        return {name: app.served for name, app in apps.items()}

    def faults(kind: str, name: str, action: str) -> dict:
        return _apply_fault(state, LabApiError, kind, name, action)

    ca_pem, certfile, keyfile = apiserver.make_tls(str(state_dir))
    ca_path = state_dir / "ca.crt"
    if not ca_path.exists():
        _write_private(ca_path, ca_pem.decode())
    token = secrets.token_urlsafe(32)
    tokens = {token: "admin"}
    restricted = secrets.token_urlsafe(32) if config["restricted_token"] else None
    if restricted:
        tokens[restricted] = "restricted"
    api = apiserver.serve(state, host="127.0.0.1", port=0, certfile=certfile, keyfile=keyfile,
                          tokens=tokens, stats=stats, faults=faults)
    api_url = f"https://127.0.0.1:{api.server_port}"
    kubeconfig = state_dir / "kubeconfig"
    apiserver.write_kubeconfig(str(kubeconfig), api_url, ca_pem, token)
    restricted_kubeconfig = None
    if restricted:
        restricted_kubeconfig = state_dir / "kubeconfig-restricted"
        apiserver.write_kubeconfig(str(restricted_kubeconfig), api_url, ca_pem, restricted,
                                   context="lab-restricted")

    svc = state.service(state.namespace, state.app) or {}
    port = (svc.get("spec", {}).get("ports") or [{}])[0]
    info = {
        "schema": LAB_SCHEMA,
        "pid": os.getpid(),
        "block": block,
        "state_dir": str(state_dir.resolve()),
        "api_url": api_url,
        "ca": str(ca_path.resolve()),
        "token": token,
        "kubeconfig": str(kubeconfig.resolve()),
        "restricted_kubeconfig": str(restricted_kubeconfig.resolve())
        if restricted_kubeconfig else None,
        "namespace": state.namespace,
        "service": state.app,
        "service_type": config["service_type"],
        "service_port": port.get("port"),
        "node_port": port.get("nodePort"),
        "lb_address": state.lb_address,
        "policy": config["policy"],
        "affinity": config["affinity"],
        "proxy_mode": config["proxy_mode"],
        "data_plane": config["data_plane"],
        "hop_ms": config["hop_ms"],
        "lb_check_s": config["lb_check_s"],
        "nodes": [
            {"name": n.name, "external_ip": n.external_ip, "internal_ip": n.internal_ip,
             "zone": n.zone}
            for n in state.live_nodes()
        ],
        "api_only_nodes": len(state.nodes) - len(state.live_nodes()),
        "pods": [{"name": p.name, "node": p.node, "ip": p.ip, "port": p.port}
                 for p in state.pods],
        # Ground truth for capacity runs against a lab started by hand.
        "pod_service_ms": config["pod_service_ms"],
        "pod_concurrency": config["pod_concurrency"],
        "started": time.time(),
    }
    lab_file = state_dir / LAB_FILE

    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)

    def watch_parent() -> None:
        # A caller killed hard (SIGKILL) cannot stop us: notice and go, leaving nothing.
        while not stop.wait(0.5):
            if parent_pid and (os.getppid() != parent_pid or not pid_alive(parent_pid)):
                stop.set()

    watcher = gevent.spawn(watch_parent)
    _write_private(lab_file, json.dumps(info, indent=2) + "\n")
    log(f"lab ready: {len(info['nodes'])} nodes, {len(state.pods)} pods, API {api_url}")
    stop.wait()
    watcher.kill()
    with contextlib.suppress(OSError):
        if _read_json(lab_file).get("pid") == os.getpid():
            lab_file.unlink()
    proxy.stop()
    api.stop(timeout=1)
    for server in servers.values():
        server.kill()
    reservation.close()
    log("lab stopped")
    return 0


def _apply_fault(state: Any, api_error: type[Exception], kind: str, name: str,
                 action: str) -> dict:
    """node down|up, pod kill: the lab's faults, as the control API receives them."""
    if kind == "node":
        if action not in ("down", "up"):
            raise api_error(422, "Invalid", f'node action must be "down" or "up", not {action!r}')
        try:
            node = state.node(name)
        except KeyError:
            raise api_error(404, "NotFound", f'nodes "{name}" not found') from None
        if node.api_only:
            raise api_error(422, "Invalid", f'node "{name}" is listed by the API only')
        state.add_event("Node", name, "NodeNotReady" if action == "down" else "NodeReady",
                        f"lab fault: node {action}")
        # Reported NotReady at once (a real node controller takes ~40 s to notice).
        node.ready = action == "up"
        state.set_node_up(name, action == "up")
        return {"kind": kind, "name": name, "action": action, "ready": node.ready}
    if kind == "pod":
        if action != "kill":
            raise api_error(422, "Invalid", f'pod action must be "kill", not {action!r}')
        try:
            pod = state.kill_pod(name)
        except KeyError:
            raise api_error(404, "NotFound", f'pods "{name}" not found') from None
        return {"kind": kind, "name": name, "action": action, "node": pod.node}
    raise api_error(422, "Invalid", f'fault kind must be "node" or "pod", not {kind!r}')


def _raise_file_limit() -> None:
    # Every proxied connection holds two descriptors; the default soft limit (1024) is low.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _lab_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.cluster",
                                     description="The lab process (started by LabCluster).")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--block", type=int, default=0)
    parser.add_argument("--config", default="{}", help="LabCluster settings as JSON")
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="exit when this process goes away (0: never)")
    args = parser.parse_args(argv)
    config = {**LabCluster().config, **json.loads(args.config)}
    return run_lab_process(Path(args.state_dir), args.block, config, args.parent_pid)


if __name__ == "__main__":
    sys.exit(_lab_main())
