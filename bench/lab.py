"""Benchmark the lab's kube-proxy emulation: req/s direct to a pod vs through a node's NodePort.

Prints JSON lines: one per measured slice, then one summary per connection mode with the
ratio proxied/direct (of req/s, and of the lab process's CPU time per request). Slices are
interleaved (direct, proxied, direct, ...) so drift in the machine's load hits both alike.
The load runs in this process (gevent greenlets on raw sockets, bounded in count and time);
the lab runs in its own process, as always.

    python bench/lab.py [--seconds 1.5] [--rounds 3] [--concurrency 16] [--data-plane pipe]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time

import gevent
from gevent import socket as gsocket

from harness.lab.cluster import LabCluster

BODY = b'{"sender": "bench"}'
REQUEST = (
    b"POST /api/messages HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n%%s\r\n%s" % (len(BODY), BODY)
)
KEEPALIVE_REQUEST = REQUEST % b""
CLOSE_REQUEST = REQUEST % b"Connection: close\r\n"
LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
MAX_REQUESTS_PER_SLICE = 2_000_000


def _read_response(sock: gsocket.socket) -> bool:
    """Read one HTTP response; True if it was a 200."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = LENGTH.search(head)
    want = int(match.group(1)) if match else 0
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def _worker(address: tuple[str, int], deadline: float, new_connection: bool,
            counts: dict[str, int]) -> None:
    sock = None
    request = CLOSE_REQUEST if new_connection else KEEPALIVE_REQUEST
    while time.monotonic() < deadline and counts["ok"] < MAX_REQUESTS_PER_SLICE:
        try:
            if sock is None:
                sock = gsocket.create_connection(address, timeout=5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(request)
            ok = _read_response(sock)
        except OSError:
            ok = False
        counts["ok" if ok else "failed"] += 1
        if new_connection or not ok:
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc; Linux only)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(address: tuple[str, int], seconds: float, concurrency: int,
            new_connection: bool, lab_pid: int) -> dict[str, float]:
    counts = {"ok": 0, "failed": 0}
    lab_cpu = _cpu_seconds(lab_pid)
    client_cpu = time.process_time()
    started = time.monotonic()
    deadline = started + seconds
    workers = [gevent.spawn(_worker, address, deadline, new_connection, counts)
               for _ in range(concurrency)]
    gevent.joinall(workers, timeout=seconds + 10)
    gevent.killall(workers, timeout=2)
    elapsed = time.monotonic() - started
    lab_cpu = _cpu_seconds(lab_pid) - lab_cpu
    client_cpu = time.process_time() - client_cpu
    return {"ok": counts["ok"], "failed": counts["failed"],
            "rps": round(counts["ok"] / elapsed, 1), "seconds": round(elapsed, 3),
            "lab_cpu_s": round(lab_cpu, 3), "client_cpu_s": round(client_cpu, 3),
            "lab_cpu_us_per_req": round(1e6 * lab_cpu / max(1, counts["ok"]), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one slice")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent connections")
    parser.add_argument("--hop-ms", type=float, default=0.2,
                        help="lab cross-node hop (the measured path is same-node)")
    parser.add_argument("--data-plane", choices=("handoff", "pipe"), default="handoff",
                        help="how the lab's node proxy reaches its in-process pods")
    args = parser.parse_args(argv)
    # One pod, on node-1, entered through node-1: the difference is the proxy alone.
    with LabCluster(nodes=3, pods=1, placement=[1, 0, 0], hop_ms=args.hop_ms,
                    data_plane=args.data_plane) as lab:
        pod = lab.pods[0]
        node = lab.nodes[0]
        targets = {
            "direct": (pod["ip"], pod["port"]),
            "proxied": (node["external_ip"] or node["internal_ip"], lab.node_port),
        }
        pid = lab.process.pid
        totals: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for mode, new_connection in (("keepalive", False), ("new-connection", True)):
            measure(targets["direct"], 0.3, args.concurrency, new_connection, pid)  # warm-up
            for round_no in range(args.rounds):
                for target, address in targets.items():
                    result = measure(address, args.seconds, args.concurrency, new_connection,
                                     pid)
                    totals.setdefault((mode, target), []).append(result["rps"])
                    cpu.setdefault((mode, target), []).append(result["lab_cpu_us_per_req"])
                    print(json.dumps({"bench": "lab", "mode": mode, "target": target,
                                      "round": round_no + 1, **result}), flush=True)
                    gevent.sleep(0.2)  # let TIME_WAIT churn settle between slices
        for mode in ("keepalive", "new-connection"):
            direct = sum(totals[(mode, "direct")]) / args.rounds
            proxied = sum(totals[(mode, "proxied")]) / args.rounds
            goal = 0.9 if mode == "keepalive" else 0.8
            # The lab's CPU per request: when the lab process is the bottleneck (one core),
            # direct/proxied CPU per request is the throughput ratio it reaches, whatever
            # the load generator or the neighbours on this machine were doing.
            cpu_direct = statistics.median(cpu[(mode, "direct")])
            cpu_proxied = statistics.median(cpu[(mode, "proxied")])
            print(json.dumps({
                "bench": "lab", "summary": mode, "direct_rps": round(direct, 1),
                "proxied_rps": round(proxied, 1),
                "ratio": round(proxied / direct, 3) if direct else None,
                "lab_cpu_us_per_req": {"direct": cpu_direct, "proxied": cpu_proxied},
                "cpu_ratio": round(cpu_direct / cpu_proxied, 3) if cpu_proxied else None,
                "goal": goal,
                "data_plane": args.data_plane, "concurrency": args.concurrency,
                "seconds": args.seconds, "rounds": args.rounds,
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
