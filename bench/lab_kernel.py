"""Benchmark the kernel datapath: req/s direct to a pod vs through a node's NodePort, with wrk.

One pod, on node-1, entered through node-1's ExternalIP: the difference between the two is
kube-proxy's rules in the kernel alone (KUBE-NODEPORTS -> KUBE-EXT -> KUBE-SVC -> KUBE-SEP
DNAT, the masquerade mark and MASQUERADE), not a second hop. Both paths cross the lab's
gateway and node namespaces alike. Slices are interleaved (direct, proxied, direct, ...) so
drift in the machine's load hits both alike; each runs wrk for a bounded time, with
keep-alive and with a new connection per request (``-H 'Connection: close'``).

Prints JSON lines: one per slice, then one summary per connection mode: the ratio
proxied/direct of req/s (each proxied slice against the mean of the direct slices around it;
the median of those is ``ratio``, goal at least 0.95) and the pod's CPU time per request on
each path. Needs root, iptables and wrk (apt-get install -y iptables wrk).

    python bench/lab_kernel.py [--seconds 2] [--rounds 4] [--connections 16] [--threads 1]
                               [--masquerade random-fully|plain]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.lab import netns
from harness.lab.cluster import LabCluster

GOAL = 0.95
SCRIPT = """wrk.method = "POST"
wrk.body = '{"sender": "bench"}'
wrk.headers["Content-Type"] = "application/json"
"""
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNIT_MS[unit], 3)


def parse_wrk(out: str) -> dict[str, float]:
    """wrk's summary: req/s, requests, errors, latency percentiles (ms)."""
    result: dict[str, float] = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    }
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    counts = [int(n) for n in errors.groups()] if errors else [0, 0, 0, 0]
    # With Connection: close every reply ends in the server's close, which wrk counts as a
    # read error; connect, write and timeout errors are the real ones.
    result["socket_errors"] = counts[0] + counts[2] + counts[3]
    result["reads_closed"] = counts[1]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if match:
            result[f"p{pct}_ms"] = _ms(match.group(1))
    return result


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_counters(ns: str | None = None) -> dict[str, int]:
    """The kernel's TCP counters (nstat) in a namespace, or in this one."""
    argv = ["nstat", "-az"]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    rows = (line.split() for line in out.splitlines()[1:])
    return {row[0]: int(row[1]) for row in rows if len(row) >= 2 and row[1].isdigit()}


def measure(url: str, script: Path, seconds: int, connections: int, threads: int,
            close: bool, pod_pid: int, pod_ns: str) -> dict[str, float]:
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
            "--latency", "--timeout", "5s", "-s", str(script)]
    if close:
        argv += ["-H", "Connection: close"]
    cpu, pod_tcp, our_tcp = _cpu_seconds(pod_pid), tcp_counters(pod_ns), tcp_counters()
    proc = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30)
    cpu = _cpu_seconds(pod_pid) - cpu
    if proc.returncode != 0:
        raise HarnessError(f"wrk failed: {proc.stderr.strip() or proc.stdout.strip()}")
    result = parse_wrk(proc.stdout)
    result["pod_cpu_us_per_req"] = round(1e6 * cpu / max(1, result["requests"]), 1)
    # SYNs the pod's TIME-WAIT sockets refused (PAWS: an older timestamp on the same
    # address and port), and the client's SYN retransmissions (a second each) they cost.
    result["pod_paws_timewait"] = tcp_counters(pod_ns).get("TcpExtPAWSTimewait", 0) - \
        pod_tcp.get("TcpExtPAWSTimewait", 0)
    result["client_syn_retrans"] = tcp_counters().get("TcpExtTCPSynRetrans", 0) - \
        our_tcp.get("TcpExtTCPSynRetrans", 0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=2,
                        help="length of one slice, whole seconds (wrk's unit)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="proxied slices per mode, each between two direct ones")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--masquerade", choices=("random-fully", "plain"),
                        default="random-fully",
                        help="diagnosis: 'plain' reloads node-1's rules without kube-proxy's "
                             "MASQUERADE --random-fully, to see what the random source ports "
                             "cost new connections (PAWS in the pod's TIME-WAIT)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 60 or not 0 < args.rounds <= 20:
        parser.error("--seconds must be in 1-60 and --rounds in 1-20")
    if shutil.which("wrk") is None:
        print("error: wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    try:
        netns.preflight()
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lab-kernel-bench-") as tmp, \
            LabCluster(datapath="kernel", nodes=3, placement=[1, 0, 0]) as lab:
        script = Path(tmp) / "post.lua"
        script.write_text(SCRIPT)
        pod, node = lab.pods[0], lab.nodes[0]
        urls = {"direct": f"http://{pod['ip']}:{pod['port']}/api/messages",
                "proxied": f"http://{node['external_ip']}:{lab.node_port}/api/messages"}
        lay = netns.Layout(lab.info()["block"])
        pod_ns = lay.pod_ns(pod["ip"])
        if args.masquerade == "plain":  # nothing changes during the bench: no re-sync
            node_ns = lay.node_ns(node["name"])
            netns.iptables_restore(node_ns, netns.iptables_save(node_ns)
                                   .replace(" --random-fully", ""))
        pod_pid = int(netns.run(["ip", "netns", "pids", pod_ns]).stdout.split()[0])
        rps: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        paws: dict[tuple[str, str], list[float]] = {}
        syn: dict[tuple[str, str], list[float]] = {}
        load = os.getloadavg()[0]
        for mode, close in (("keepalive", False), ("new-connection", True)):
            measure(urls["direct"], script, 1, args.connections, args.threads, close,
                    pod_pid, pod_ns)  # warm-up
            # direct, proxied, direct, ..., direct: every proxied slice has a direct one
            # just before and just after it, so it is judged against the load of its time.
            order = ["direct", "proxied"] * args.rounds + ["direct"]
            for slot, target in enumerate(order):
                result = measure(urls[target], script, args.seconds, args.connections,
                                 args.threads, close, pod_pid, pod_ns)
                rps.setdefault((mode, target), []).append(result["rps"])
                cpu.setdefault((mode, target), []).append(result["pod_cpu_us_per_req"])
                paws.setdefault((mode, target), []).append(result["pod_paws_timewait"])
                syn.setdefault((mode, target), []).append(result["client_syn_retrans"])
                print(json.dumps({"bench": "lab_kernel", "mode": mode, "target": target,
                                  "slice": slot + 1, **result}), flush=True)
                time.sleep(0.2)  # let TIME_WAIT churn settle between slices
        for mode in ("keepalive", "new-connection"):
            direct, proxied = rps[(mode, "direct")], rps[(mode, "proxied")]
            paired = [p / ((direct[i] + direct[i + 1]) / 2) for i, p in enumerate(proxied)]
            ratio = statistics.median(paired)
            cpu_direct = round(statistics.median(cpu[(mode, "direct")]), 1)
            cpu_proxied = round(statistics.median(cpu[(mode, "proxied")]), 1)
            print(json.dumps({
                "bench": "lab_kernel", "summary": mode,
                "direct_rps": round(statistics.mean(direct), 1),
                "proxied_rps": round(statistics.mean(proxied), 1),
                "ratio_of_means": round(statistics.mean(proxied) / statistics.mean(direct), 3),
                "paired_ratios": [round(r, 3) for r in paired],
                "ratio": round(ratio, 3), "goal": GOAL, "met": ratio >= GOAL,
                # The pod's CPU per request: what the path costs the pod, whatever else the
                # machine was doing meanwhile.
                "pod_cpu_us_per_req": {"direct": cpu_direct, "proxied": cpu_proxied},
                "cpu_ratio": round(cpu_direct / cpu_proxied, 3) if cpu_proxied else None,
                "pod_paws_timewait": {t: sum(paws[(mode, t)]) for t in ("direct", "proxied")},
                "client_syn_retrans": {t: sum(syn[(mode, t)]) for t in ("direct", "proxied")},
                "masquerade": args.masquerade,
                "connections": args.connections, "threads": args.threads,
                "seconds": args.seconds, "rounds": args.rounds,
                "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
