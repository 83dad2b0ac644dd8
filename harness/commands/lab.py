"""The ``nodeport-harness lab`` command: run the lab in the foreground, or act on a running one.

    nodeport-harness lab [options]                     start the lab; Ctrl-C stops it
    nodeport-harness lab stats                         per-pod served counts (JSON)
    nodeport-harness lab fault node NODE down|up       take a node's NodePort off / back
    nodeport-harness lab fault pod POD kill            kill a pod (its connections reset)
    nodeport-harness lab stop                          stop the lab running from --state-dir

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

from harness.errors import LabError

DEFAULT_STATE_DIR = ".lab"
USAGE_ACTIONS = ("stats", "fault node NODE down|up", "fault pod POD kill", "stop")


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("action", nargs="*", metavar="ACTION",
                        help="nothing (start the lab), or: " + "; ".join(USAGE_ACTIONS))
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="where the lab keeps lab.json, its kubeconfig and its log "
                             "(default .lab/)")
    lab = parser.add_argument_group("lab shape (when starting)")
    lab.add_argument("--nodes", type=int, default=3, help="worker nodes (default 3)")
    lab.add_argument("--pods", type=int, default=6, help="helloworld pods (default 6)")
    lab.add_argument("--placement", help="pods per node, e.g. 3,2,1 (default: even)")
    lab.add_argument("--service-type", default="NodePort",
                     choices=("NodePort", "ClusterIP", "LoadBalancer"))
    lab.add_argument("--node-port", type=int, help="the Service's nodePort (default: allocated)")
    lab.add_argument("--policy", default="Cluster", choices=("Cluster", "Local"),
                     help="externalTrafficPolicy (default Cluster)")
    lab.add_argument("--affinity", default="None", choices=("None", "ClientIP"),
                     help="sessionAffinity (default None)")
    lab.add_argument("--proxy-mode", default="iptables", choices=("iptables", "ipvs"),
                     help="kube-proxy mode: random (iptables) or round-robin (ipvs)")
    lab.add_argument("--pod-service-ms", type=float, default=0.0,
                     help="time each request takes in a pod, ms (default 0)")
    lab.add_argument("--pod-concurrency", type=int, default=0,
                     help="requests a pod serves at once; the rest queue (0: no cap)")
    lab.add_argument("--no-external-ip", action="store_true",
                     help="nodes have an InternalIP only")
    lab.add_argument("--block", default="0",
                     help="address block: 127.<B>.x.y, 0-250, or 'auto' (default 0)")
    lab.add_argument("--extra-api-nodes", type=int, default=0,
                     help="extra nodes the API lists without listeners (scale tests)")
    lab.add_argument("--hop-ms", type=float, default=0.2,
                     help="added per client->pod chunk when the pod is on another node")
    lab.add_argument("--restricted-token", action="store_true",
                     help="also write a least-privilege kubeconfig (kubeconfig-restricted)")
    lab.add_argument("--lb-check-s", type=float, default=0.5,
                     help="LoadBalancer health-check interval, s (default 0.5)")
    lab.add_argument("--seed", type=int, help="random seed (pod names, nodePort, choices)")


add_arguments = add_lab_arguments


def run_lab(args: argparse.Namespace) -> int:
    words = list(args.action or [])
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
    allowed = {"node": ("down", "up"), "pod": ("kill",)}
    if len(rest) != 3 or rest[0] not in allowed or rest[2] not in allowed[rest[0]]:
        raise LabError(f"bad fault {' '.join(rest)!r}; use 'lab fault node NODE down|up' "
                       "or 'lab fault pod POD kill'")
    kind, name, action = rest
    return _print(_control(args, "POST", "/lab/v1/faults",
                           {"kind": kind, "name": name, "action": action}))


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


def _print(data: Any) -> int:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


# -- the foreground lab ------------------------------------------------------------------


def _lab_options(args: argparse.Namespace) -> dict[str, Any]:
    placement = None
    if args.placement:
        try:
            placement = [int(part) for part in args.placement.split(",")]
        except ValueError:
            raise LabError(f"--placement must be comma-separated pod counts, e.g. 3,2,1; "
                           f"got {args.placement!r}") from None
    if str(args.block).lower() == "auto":
        block = None
    else:
        try:
            block = int(args.block)
        except ValueError:
            raise LabError(f"--block must be a number 0-250 or 'auto', got {args.block!r}"
                           ) from None
    return {
        "nodes": args.nodes, "pods": sum(placement) if placement else args.pods,
        "placement": placement, "service_type": args.service_type,
        "node_port": args.node_port, "policy": args.policy, "affinity": args.affinity,
        "proxy_mode": args.proxy_mode, "pod_service_ms": args.pod_service_ms,
        "pod_concurrency": args.pod_concurrency, "external_ip": not args.no_external_ip,
        "state_dir": args.state_dir, "block": block, "extra_api_nodes": args.extra_api_nodes,
        "hop_ms": args.hop_ms, "restricted_token": args.restricted_token,
        "lb_check_s": args.lb_check_s, "seed": args.seed,
    }


def _foreground(args: argparse.Namespace) -> int:
    from harness.lab.cluster import LabCluster

    lab = LabCluster(**_lab_options(args))
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
    kubeconfig = shlex.quote(str(lab.kubeconfig))
    first = info["nodes"][0]
    ip = first["external_ip"] or first["internal_ip"]
    address_type = "ExternalIP" if first["external_ip"] else "InternalIP"
    state_dir = shlex.quote(str(info["state_dir"]))
    lines = [
        f"lab ready: {len(info['nodes'])} nodes, {len(info['pods'])} pods; Service "
        f"{info['service']} ({info['service_type']}"
        + (f", nodePort {info['node_port']}" if info.get("node_port") else "")
        + f", externalTrafficPolicy {info['policy']}, sessionAffinity {info['affinity']}, "
        f"{info['proxy_mode']})",
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
    lines += [
        "",
        "Try it (another terminal):",
        f"  export KUBECONFIG={kubeconfig}",
        "  kubectl get nodes -o wide",
        "  IP=$(kubectl get nodes -o wide -o json | jq -r '.items[0].status.addresses "
        f"| .[] | select( .type==\"{address_type}\" ) | .address ')",
        "  PORT=$(kubectl get svc helloworld -o json | jq -r '.spec.ports[0].nodePort')",
        "  curl -s -X POST http://$IP:$PORT/api/messages -H 'Content-Type: application/json' "
        "-d '{\"sender\": \"world1\"}'",
    ]
    if not info.get("node_port"):
        lines.append("  (a ClusterIP Service has no nodePort yet: 'nodeport-harness expose' "
                     "makes it a NodePort; pods answer on <pod IP>:8080 meanwhile)")
    extra = "" if str(info["state_dir"]) == str(Path(".lab").resolve()) else (
        f" --state-dir {state_dir}")
    lines += [
        f"  curl -s -X POST http://{ip}:{info.get('node_port') or 'PORT'}/api/messages "
        "-d '{\"sender\": \"world1\"}'",
        f"  nodeport-harness lab stats{extra}",
        f"  nodeport-harness lab fault node {info['nodes'][-1]['name']} down{extra}",
        "",
        "Ctrl-C stops the lab.",
    ]
    return "\n".join(lines)
