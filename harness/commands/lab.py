"""The ``nodeport-harness lab`` command: run the lab in the foreground, or act on a running one.

    nodeport-harness lab [options]                     start the lab; Ctrl-C stops it
    nodeport-harness lab stats                         per-pod served counts (JSON)
    nodeport-harness lab fault node NODE down|up       take a node's NodePort off / back
    nodeport-harness lab fault pod POD kill            kill a pod (its connections reset)
    nodeport-harness lab fault pod POD restart         kill it; a replacement (a new name,
                                                       same node) joins once ready
    nodeport-harness lab stop                          stop the lab running from --state-dir
    nodeport-harness lab build [--force]               build the real control plane's
                                                       binaries (Go; once per version)

Every action finds the running lab through ``--state-dir`` (default ``.lab/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.core.faults import USAGE, check_fault
from harness.errors import HarnessError, LabError
from harness.lab import config as lab_config

DEFAULT_STATE_DIR = ".lab"
USAGE_ACTIONS = ("stats", *(f"fault {usage}" for usage in USAGE), "stop", "build [--force]")
# The lab settings this command offers as flags (the rest keep LabConfig's defaults).
COMMAND_SETTINGS = ("nodes", "pods", "placement", "service_type", "node_port", "policy",
                    "affinity", "proxy_mode", "pod_service_ms", "slow_pod_ms", "pod_concurrency",
                    "external_ip", "block", "extra_api_nodes", "hop_ms", "restricted_token",
                    "lb_check_s", "restart_delay_s", "seed", "datapath", "control_plane")


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("action", nargs="*", metavar="ACTION",
                        help="nothing (start the lab), or: " + "; ".join(USAGE_ACTIONS))
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="where the lab keeps lab.json, its kubeconfig and its log "
                             "(default .lab/)")
    parser.add_argument("--force", action="store_true",
                        help="'lab build': rebuild every binary, even those up to date")
    lab = parser.add_argument_group("lab shape (when starting)")
    lab_config.add_arguments(lab, COMMAND_SETTINGS)


add_arguments = add_lab_arguments


def run_lab(args: argparse.Namespace) -> int:
    words = list(args.action or [])
    if getattr(args, "force", False) and words != ["build"]:
        raise LabError("--force is for 'lab build' only")
    if words == ["build"]:
        return _build(args)
    if not words:
        return _foreground(args)
    verb, rest = words[0], words[1:]
    if verb == "stats" and not rest:
        return _print(_control(args, "GET", "/lab/v1/stats"))
    if verb == "fault":
        return _fault(args, rest)
    if verb == "stop" and not rest:
        return _stop(args)
    raise LabError(f"unknown lab action {' '.join(words)!r}; use one of: "
                   + "; ".join(USAGE_ACTIONS))


run = run_lab


# -- actions on a running lab ------------------------------------------------------------


def _fault(args: argparse.Namespace, rest: list[str]) -> int:
    use = "use " + " or ".join(f"'lab fault {usage}'" for usage in USAGE)
    if len(rest) != 3:
        raise LabError(f"bad fault {' '.join(rest)!r}; {use}")
    try:
        fault = check_fault(*rest)
    except HarnessError as err:
        raise LabError(f"bad fault {' '.join(rest)!r} ({err}); {use}") from None
    return _print(_control(args, "POST", "/lab/v1/faults", fault.to_dict()))


def _control(args: argparse.Namespace, method: str, path: str,
             body: dict | None = None) -> dict:
    from harness.lab.cluster import control_call, read_lab_info

    return control_call(read_lab_info(args.state_dir), method, path, body)


def _stop(args: argparse.Namespace) -> int:
    from harness.lab.cluster import pid_alive, read_lab_info

    info = read_lab_info(args.state_dir)
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        raise LabError(f"the lab (pid {pid}) did not stop within 10 s; kill it with "
                       f"'kill -9 {pid}'")
    print(f"lab (pid {pid}) stopped")
    return 0


def _build(args: argparse.Namespace) -> int:
    from harness.core.text import secs
    from harness.lab import binaries

    started = time.monotonic()
    timings = binaries.build(log=lambda line: print(line, flush=True),
                             force=getattr(args, "force", False))
    built = [name for name, taken in timings.items() if taken is not None]
    print(f"Kubernetes {binaries.KUBERNETES_VERSION}: "
          + (f"built {len(built)} of {len(timings)} in {secs(time.monotonic() - started)}"
             if built else f"all {len(timings)} up to date")
          + f"; binaries in {binaries.cache_dir()}")
    return 0


def _print(data: Any) -> int:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


# -- the foreground lab ------------------------------------------------------------------


def _foreground(args: argparse.Namespace) -> int:
    from harness.lab.cluster import LabCluster

    lab = LabCluster(lab_config.from_args(args, state_dir=args.state_dir))
    stop = threading.Event()
    previous = {}

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    # Handlers first: a Ctrl-C while the lab starts must still stop it cleanly.
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        lab.start()
        print(_banner(lab), flush=True)
        while not stop.is_set():
            stop.wait(0.5)
            if not lab.running:
                code = lab.process.poll() if lab.process is not None else None
                if code == 0:
                    break  # stopped from outside ('lab stop'): a normal end
                raise LabError(f"the lab process exited unexpectedly (code {code}); see "
                               f"{Path(args.state_dir) / 'lab.log'}")
        else:
            print("stopping the lab...", file=sys.stderr, flush=True)
    finally:
        lab.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("lab stopped", file=sys.stderr, flush=True)
    return 0


def _banner(lab: Any) -> str:
    info = lab.info()
    first = info["nodes"][0]
    address_type = "ExternalIP" if first["external_ip"] else "InternalIP"
    state_dir = shlex.quote(str(info["state_dir"]))
    lines = [
        f"lab ready: {len(info['nodes'])} nodes, {len(info['pods'])} pods; Service "
        f"{info['service']} ({info['service_type']}"
        + (f", nodePort {info['node_port']}" if info.get("node_port") else "")
        + f", externalTrafficPolicy {info['policy']}, sessionAffinity {info['affinity']}, "
        f"{info['proxy_mode']}"
        + (", kernel datapath" if info.get("datapath") == "kernel" else "")
        + (f", real control plane: Kubernetes {info.get('kubernetes_version')}"
           if info.get("control_plane") == "real" else "") + ")",
        f"API server {info['api_url']}  kubeconfig {lab.kubeconfig}",
    ]
    if info.get("restricted_kubeconfig"):
        lines.append(f"least-privilege kubeconfig {info['restricted_kubeconfig']}")
    lines.append("")
    for node in info["nodes"]:
        pods = [p["name"] for p in info["pods"] if p["node"] == node["name"]]
        lines.append(f"  {node['name']:<8} ExternalIP {node['external_ip'] or '-':<14} "
                     f"InternalIP {node['internal_ip']:<14} pods: {', '.join(pods) or '-'}")
    if info["service_type"] == "LoadBalancer":
        lines.append(f"  LoadBalancer {info['lb_address']}:{info['service_port']}")
    lines += ["", SEED_HEADER, "", *seed_commands(lab.kubeconfig, address_type), ""]
    if not info.get("node_port"):
        lines.append("(a ClusterIP Service has no nodePort yet: 'nodeport-harness expose' "
                     "makes it a NodePort; pods answer on <pod IP>:8080 meanwhile)")
    extra = "" if str(info["state_dir"]) == str(Path(".lab").resolve()) else (
        f" --state-dir {state_dir}")
    lines += [
        f"Then: nodeport-harness lab stats{extra}; "
        f"nodeport-harness lab fault node {info['nodes'][-1]['name']} down{extra}",
        "Ctrl-C stops the lab.",
    ]
    return "\n".join(lines)


# The README's "Using it" shows the same block (tests/test_readme.py holds them together).
SEED_HEADER = "In another terminal (the seed's steps):"


def seed_commands(kubeconfig: str | os.PathLike, address_type: str = "ExternalIP",
                  ) -> list[str]:
    """The seed's steps against the lab, to paste as they are: the kubeconfig's absolute
    path, then the first node's address and the nodePort read from the API (so they hold for
    any --block), then the seed's POST."""
    return [
        f"export KUBECONFIG={shlex.quote(str(Path(kubeconfig).resolve()))}",
        "NODE_IP=$(kubectl get nodes -o json | jq -r '.items[0].status.addresses[] "
        f"| select(.type==\"{address_type}\") | .address')",
        "PORT=$(kubectl get svc helloworld -o json | jq -r '.spec.ports[0].nodePort')",
        "curl -X POST http://$NODE_IP:$PORT/api/messages -H 'Content-Type: application/json' "
        "-d '{ \"sender\": \"world1\" }'",
    ]
