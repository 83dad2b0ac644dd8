"""What recording costs inside Locust: a bare FastHttpUser vs NodePortUser, same pod, one run.

Starts a one-pod lab and drives its pod directly (pod IP:8080, not through the node proxy)
with real ``locust --headless`` subprocesses (one process, N users, fixed duration),
alternating the bare user (bench/bare_locustfile.py) and NodePortUser (harness/locustfile.py
with an inventory whose one "node" is the pod's address and nodePort 8080, so the full
plugin path runs: discovery, pod extraction from X-Served-By, recording, reports).
Rounds go A B, B A, A B, ... so a drift in the machine's load hits both alike.

Per run, two figures over the same steady seconds (first and last partial seconds dropped):

- ``rps``: requests per second, from Locust's final ``--json-file`` stats (per-second counts);
- ``cpu_us_per_req``: the Locust process's CPU time per request, sampled from /proc at the
  same second boundaries. This is the recording cost itself, whichever side is the
  bottleneck: when the lab pod saturates first (``locust_cpu_util`` well under 1), both
  users get the same rate and only the CPU figure shows the difference.

The Locust process and the lab are pinned to different cores when there are two or more.
Then bench/overhead_core.py runs (10 M synthetic samples into a SpreadRecorder: ns per
sample, memory growth) and its lines are passed through. Prints JSON lines. Linux only.

    python bench/overhead.py [--rounds 4] [--seconds 6] [--users 16] [--samples 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from harness.lab.cluster import LabCluster  # noqa: E402

BUDGET = 0.03  # recording may cost at most 3 % of the load generator
KINDS = ("bare", "nodeport")
RUN_TIMEOUT_S = 120


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of a process (gevent's resolver threads included)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except OSError:  # a thread that just ended
            pass


def locust_argv(kind: str, args, host: str, inventory: Path, work: Path, name: str) -> list[str]:
    argv = [sys.executable, "-m", "locust", "--headless", "--only-summary", "--skip-log-setup",
            "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s",
            "--json-file", str(work / name)]
    if kind == "bare":
        return argv + ["-f", str(BENCH / "bare_locustfile.py"), "-H", host]
    return argv + ["-f", str(ROOT / "harness" / "locustfile.py"), "--inventory", str(inventory),
                   "--report-dir", str(work / "reports"), "--run-id", name,
                   "--plotlyjs", "cdn"]


def run_locust(kind: str, args, host: str, inventory: Path, work: Path, name: str,
               cores: set[int] | None, lab_pid: int) -> dict:
    """One locust run; CPU of Locust and of the lab sampled at every second boundary."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.time()
    proc = subprocess.Popen(
        locust_argv(kind, args, host, inventory, work, name), cwd=work, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    if cores:
        pin(proc.pid, cores)
    samples: dict[int, tuple[float, float]] = {}  # second -> (locust cpu, lab cpu)
    deadline = started + RUN_TIMEOUT_S
    pinned_late = False
    while proc.poll() is None and time.time() < deadline:
        now = time.time()
        time.sleep(max(0.0, int(now) + 1 - now))
        try:
            samples[int(round(time.time()))] = (cpu_seconds(proc.pid), cpu_seconds(lab_pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        if cores and not pinned_late:  # threads started after the first pin
            try:
                pin(proc.pid, cores)
            except FileNotFoundError:
                pass
            pinned_late = True
    try:
        _, stderr = proc.communicate(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        raise SystemExit(f"locust ({kind}) did not finish within {RUN_TIMEOUT_S} s") from None
    path = work / name
    if not path.exists() and (work / f"{name}.json").exists():
        path = work / f"{name}.json"
    if proc.returncode not in (0, 1) or not path.exists():
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise SystemExit(f"locust ({kind}) failed with exit code {proc.returncode}: {tail}")
    stats = json.loads(path.read_text())
    per_second: dict[int, int] = {}
    failures = requests = 0
    for entry in stats:
        requests += entry["num_requests"]
        failures += entry["num_failures"]
        for second, count in entry["num_reqs_per_sec"].items():
            per_second[int(second)] = per_second.get(int(second), 0) + count
    # Steady seconds: not the first or last (partial) one, and sampled at both ends.
    seconds = sorted(per_second)[1:-1]
    steady = [s for s in seconds if s in samples and s + 1 in samples]
    if not steady:
        raise SystemExit(f"locust ({kind}): no steady second to measure; raise --seconds")
    window = (steady[0], steady[-1] + 1)
    counted = sum(per_second[s] for s in range(*window) if s in per_second)
    span = window[1] - window[0]
    locust_cpu = samples[window[1]][0] - samples[window[0]][0]
    lab_cpu = samples[window[1]][1] - samples[window[0]][1]
    result = {
        "requests": requests, "failures": failures, "steady_seconds": span,
        "rps": round(counted / span, 1),
        "cpu_us_per_req": round(1e6 * locust_cpu / max(1, counted), 2),
        "locust_cpu_util": round(locust_cpu / span, 3),
        "lab_cpu_util": round(lab_cpu / span, 3),
    }
    if kind == "nodeport":
        result["recorded"] = recorded(work / "reports" / name)
    return result


def recorded(run_dir: Path) -> dict:
    """What the harness recorded (proves the full path ran: pods named, not "unknown")."""
    try:
        spread = json.loads((run_dir / "spread.json").read_text())
    except (OSError, ValueError):
        return {"error": f"no spread.json in {run_dir}"}
    return {"requests": spread["totals"]["requests"],
            "pods": {name: p["successes"] for name, p in spread["pods"].items()}}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of (bare, nodeport)")
    parser.add_argument("--seconds", type=int, default=6, help="locust --run-time per run")
    parser.add_argument("--users", type=int, default=16, help="locust users per run")
    parser.add_argument("--samples", type=int, default=10_000_000,
                        help="synthetic samples for bench/overhead_core.py (0: skip it)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 3 <= args.seconds <= 60 and 1 <= args.users <= 1000):
        parser.error("bounds: 1 <= --rounds <= 20, 3 <= --seconds <= 60, 1 <= --users <= 1000")

    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        lab_cores, locust_cores = {available[0]}, set(available[1:])
    else:
        lab_cores = locust_cores = None
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, \
            LabCluster(nodes=1, pods=1) as lab:
        work = Path(tmp)
        if lab_cores:
            pin(lab.process.pid, lab_cores)
        pod = lab.pods[0]
        host = f"http://{pod['ip']}:{pod['port']}"
        inventory = work / "inventory.json"  # JSON is YAML: load_inventory reads it
        inventory.write_text(json.dumps({
            "service": {"name": "helloworld", "nodePort": pod["port"]},
            "nodes": [{"name": "pod-direct", "address": pod["ip"]}],
            "endpoints": [{"pod": pod["name"], "node": "pod-direct", "ip": pod["ip"]}],
        }))
        emit(bench="overhead_setup", target=host, pod=pod["name"], users=args.users,
             seconds=args.seconds, rounds=args.rounds,
             locust_cores=sorted(locust_cores) if locust_cores else None,
             lab_cores=sorted(lab_cores) if lab_cores else None)
        for round_no in range(1, args.rounds + 1):
            order = KINDS if round_no % 2 else KINDS[::-1]
            for kind in order:
                result = run_locust(kind, args, host, inventory, work, f"r{round_no}-{kind}",
                                    locust_cores, lab.process.pid)
                results[kind].append(result)
                emit(bench="overhead_run", round=round_no, user=kind, **result)
    medians = {kind: {key: statistics.median(r[key] for r in results[kind])
                      for key in ("rps", "cpu_us_per_req", "locust_cpu_util", "lab_cpu_util")}
               for kind in KINDS}
    # Paired per round (same machine state): cost = nodeport/bare - 1.
    cpu_cost = [n["cpu_us_per_req"] / b["cpu_us_per_req"] - 1
                for b, n in zip(results["bare"], results["nodeport"], strict=True)]
    rps_cost = [1 - n["rps"] / b["rps"]
                for b, n in zip(results["bare"], results["nodeport"], strict=True)]
    bare, nodeport = medians["bare"], medians["nodeport"]
    cost = statistics.median(cpu_cost)
    emit(bench="overhead", rps_bare=bare["rps"], rps_nodeport=nodeport["rps"],
         rps_ratio=ratio(nodeport["rps"], bare["rps"]),
         rps_cost_per_round=[round(c, 4) for c in rps_cost],
         cpu_us_per_req_bare=bare["cpu_us_per_req"],
         cpu_us_per_req_nodeport=nodeport["cpu_us_per_req"],
         cpu_ratio=ratio(nodeport["cpu_us_per_req"], bare["cpu_us_per_req"]),
         cpu_cost_per_round=[round(c, 4) for c in cpu_cost],
         recording_cost=round(cost, 4), budget=BUDGET, within_budget=cost <= BUDGET,
         locust_cpu_util={k: medians[k]["locust_cpu_util"] for k in KINDS},
         lab_cpu_util={k: medians[k]["lab_cpu_util"] for k in KINDS},
         bottleneck="locust" if bare["locust_cpu_util"] >= 0.9 else "lab")

    if args.samples > 0:
        core = [sys.executable, str(BENCH / "overhead_core.py"), "--samples", str(args.samples)]
        if locust_cores:
            core = ["taskset", "-c", ",".join(map(str, sorted(locust_cores)))] + core
        done = subprocess.run(core, stdout=subprocess.PIPE, text=True, timeout=900, check=False)
        for line in done.stdout.splitlines():
            print(line, flush=True)
        if done.returncode:
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
