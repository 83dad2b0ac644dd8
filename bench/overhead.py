"""What recording costs inside Locust: a bare FastHttpUser vs NodePortUser, same pod, one run.

Starts a one-pod lab and drives its pod directly (pod IP:8080, not through the node proxy)
with real ``locust --headless`` subprocesses (one process, N users, fixed duration): the
bare user (bench/bare_locustfile.py: the same request, nothing else) and NodePortUser
(harness/plugin/locustfile.py with an inventory whose one "node" is the pod's address and nodePort
8080, so the full plugin path runs: pod extraction from X-Served-By, recording, reports).
The Locust processes and the lab are pinned to different cores when there are two or more.

1. Interleaved (``overhead_run``, summary ``overhead``): one run at a time, rounds A B, B A,
   A B, ... Per run, over the same steady seconds (first and last partial ones dropped):
   ``rps`` from Locust's final ``--json-file`` stats (per-second counts) and
   ``cpu_us_per_req``, the Locust process's CPU time per request sampled from /proc at the
   same second boundaries (the recording cost whichever side is the bottleneck). On a
   machine shared with other work, pairs scatter by several %: more than the cost itself.
2. Paired (``overhead_paired_run``, summary ``overhead_paired``): bare and NodePortUser run
   at the same time on the same core, so whatever else the machine does hits both alike and
   each gets half the core; the ratio of their CPU per request (and of their rates), over
   the seconds both were running, is the cost. Rounds alternate which one starts first.
   ``--calibrate`` rounds of bare vs bare show the method's noise floor. Its
   ``recording_cost`` (median over rounds) is the figure to hold against the 3 % budget.
   ``--naive-rounds`` pair bare with the naive recorder (bench/naive_locustfile.py: an
   ``events.request`` listener parsing every reply as JSON), 4.7 % on the reference
   machines: ``overhead_naive`` says how this machine scales such costs.
3. bench/overhead_send.py: NodePortUser.send()'s own work per request in a tight loop (a stub
   client returning a real reply); ``overhead_estimate`` sets it against the bare user's CPU
   per request and the reference 10.3 k req/s per core. Warm caches: a lower bound.
4. bench/overhead_core.py: 10 M synthetic samples into a SpreadRecorder (ns per sample,
   memory growth; goal <= 20 MB).

Prints JSON lines (those of 3 and 4 passed through). Linux only. About six minutes.

    python bench/overhead.py [--rounds 4] [--paired-rounds 6] [--naive-rounds 4]
                             [--samples 10000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from harness.lab.cluster import LabCluster  # noqa: E402

BUDGET = 0.03  # recording may cost at most 3 % of the load generator
SATURATED = 0.95  # Locust's CPU use (of one core) for a round to count as clean
REFERENCE_RPS = 10_300  # FastHttpUser on one core, loopback, measured on these machines
REFERENCE_NAIVE = 0.047  # what a naive JSON-parse events.request listener cost there
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
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task), cores)


def locust_argv(kind: str, users: int, seconds: int, host: str, inventory: Path, work: Path,
                name: str) -> list[str]:
    argv = [sys.executable, "-m", "locust", "--headless", "--only-summary", "--skip-log-setup",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
            "--json-file", str(work / name)]
    if kind in ("bare", "naive"):
        return argv + ["-f", str(BENCH / f"{kind}_locustfile.py"), "-H", host]
    return argv + ["-f", str(ROOT / "harness" / "plugin" / "locustfile.py"),
                   "--inventory", str(inventory),
                   "--report-dir", str(work / "reports"), "--run-id", name,
                   "--plotlyjs", "cdn"]


def run_locust(kind: str, users: int, seconds: int, host: str, inventory: Path, work: Path,
               name: str, cores: set[int] | None, lab_pid: int) -> dict:
    """One locust run: its requests per second (from Locust's --json-file) and the CPU time
    of Locust and of the lab sampled at every second boundary; ``measure`` turns them into
    figures."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(ROOT), str(BENCH))))
    started = time.time()
    log = work / f"{name}.log"  # a file: a chatty run can never block on a full pipe
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            locust_argv(kind, users, seconds, host, inventory, work, name), cwd=work, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
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
            with contextlib.suppress(FileNotFoundError):
                pin(proc.pid, cores)
            pinned_late = True
    try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SystemExit(f"locust ({kind}) did not finish within {RUN_TIMEOUT_S} s") from None
    stderr = log.read_text(errors="replace")
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
    raw = {"kind": kind, "requests": requests, "failures": failures,
           "per_second": per_second, "samples": samples}
    if kind == "nodeport":
        raw["recorded"] = recorded(work / "reports" / name)
    return raw


def steady_seconds(raw: dict) -> set[int]:
    """Seconds measured whole: not a run's first or last (partial) one, sampled at both ends."""
    seconds = sorted(raw["per_second"])[1:-1]
    return {s for s in seconds if s in raw["samples"] and s + 1 in raw["samples"]}


def measure(raw: dict, seconds: set[int] | None = None) -> dict:
    """Rate and CPU per request over ``seconds`` (default: the run's own steady seconds)."""
    seconds = steady_seconds(raw) if seconds is None else seconds
    if not seconds:
        raise SystemExit(f"locust ({raw['kind']}): no steady second to measure; raise --seconds")
    per_second, samples = raw["per_second"], raw["samples"]
    window = (min(seconds), max(seconds) + 1)
    counted = sum(per_second.get(s, 0) for s in range(*window))
    span = window[1] - window[0]
    locust_cpu = samples[window[1]][0] - samples[window[0]][0]
    lab_cpu = samples[window[1]][1] - samples[window[0]][1]
    result = {
        "requests": raw["requests"], "failures": raw["failures"], "steady_seconds": span,
        "rps": round(counted / span, 1),
        "cpu_us_per_req": round(1e6 * locust_cpu / max(1, counted), 2),
        "locust_cpu_util": round(locust_cpu / span, 3),
        "lab_cpu_util": round(lab_cpu / span, 3),
    }
    if "recorded" in raw:
        result["recorded"] = raw["recorded"]
    return result


def recorded(run_dir: Path) -> dict:
    """What the harness recorded (proves the full path ran: pods named, not "unknown")."""
    try:
        spread = json.loads((run_dir / "spread.json").read_text())
    except (OSError, ValueError):
        return {"error": f"no spread.json in {run_dir}"}
    return {"requests": spread["totals"]["requests"],
            "pods": {name: p["successes"] for name, p in spread["pods"].items()}}


def bottleneck(medians: dict) -> str:
    if medians["locust_cpu_util"] >= 0.9:
        return "locust"
    if medians["lab_cpu_util"] >= 0.9:
        return "lab"
    return "neither: cores shared with other processes"


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of (bare, nodeport), one at a time")
    parser.add_argument("--seconds", type=int, default=5, help="locust --run-time per run")
    parser.add_argument("--paired-rounds", type=int, default=6,
                        help="rounds of bare and nodeport at the same time on one core")
    parser.add_argument("--paired-seconds", type=int, default=8,
                        help="locust --run-time of a paired round")
    parser.add_argument("--naive-rounds", type=int, default=4,
                        help="paired rounds of bare vs the naive listener (the yardstick)")
    parser.add_argument("--calibrate", type=int, default=2,
                        help="paired rounds of bare vs bare: the method's noise floor")
    parser.add_argument("--users", type=int, default=16, help="locust users per run")
    parser.add_argument("--samples", type=int, default=10_000_000,
                        help="synthetic samples for bench/overhead_core.py (0: skip it)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 0 <= args.paired_rounds <= 20
            and 0 <= args.calibrate <= 5 and 0 <= args.naive_rounds <= 20
            and 3 <= args.seconds <= 60 and 3 <= args.paired_seconds <= 60
            and 1 <= args.users <= 1000):
        parser.error("bounds: 1 <= --rounds <= 20, 0 <= --paired-rounds/--naive-rounds <= 20, "
                     "0 <= --calibrate <= 5, 3 <= --seconds/--paired-seconds <= 60, "
                     "1 <= --users <= 1000")

    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        lab_cores, locust_cores = {available[0]}, set(available[1:])
    else:
        lab_cores = locust_cores = None
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    paired: list[dict] = []
    noise: list[dict] = []
    naive: list[dict] = []
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
             seconds=args.seconds, rounds=args.rounds, paired_rounds=args.paired_rounds,
             paired_seconds=args.paired_seconds,
             locust_cores=sorted(locust_cores) if locust_cores else None,
             lab_cores=sorted(lab_cores) if lab_cores else None)

        def run(kind: str, name: str, seconds: int) -> dict:
            return run_locust(kind, args.users, seconds, host, inventory, work, name,
                              locust_cores, lab.process.pid)

        for round_no in range(1, args.rounds + 1):
            order = KINDS if round_no % 2 else KINDS[::-1]
            for kind in order:
                result = measure(run(kind, f"r{round_no}-{kind}", args.seconds))
                results[kind].append(result)
                emit(bench="overhead_run", round=round_no, user=kind, **result)
        summarize_interleaved(results)

        def pair(kinds: tuple[str, str], round_no: int, label: str) -> dict:
            raws = run_together(
                [(kind, f"p{round_no}-{i}-{kind}", args.paired_seconds)
                 for i, kind in enumerate(kinds)], run)
            # Both over the seconds they ran together, never one alone on the core.
            common = steady_seconds(raws[0]) & steady_seconds(raws[1])
            a, b = (measure(raw, common) for raw in raws)
            if kinds[0] != "bare":
                a, b = b, a
            line = {"cpu_cost": round(b["cpu_us_per_req"] / a["cpu_us_per_req"] - 1, 4),
                    "rps_cost": round(1 - b["rps"] / a["rps"], 4)}
            brief = ("rps", "cpu_us_per_req", "locust_cpu_util")
            emit(bench="overhead_paired_run", round=round_no, users=label,
                 started_first=kinds[0], seconds=a["steady_seconds"],
                 a={k: a[k] for k in brief}, b={k: b[k] for k in brief}, **line)
            return line

        # Launch order alternates: the process started first may get a better share.
        schedule = [("bare", "bare", "bare vs bare (calibration)")] * args.calibrate
        schedule += [("bare", "nodeport", "bare vs nodeport")] * args.paired_rounds
        schedule += [("bare", "naive", "bare vs naive listener")] * args.naive_rounds
        for round_no, (first, second, label) in enumerate(schedule, 1):
            kinds = (first, second) if round_no % 2 else (second, first)
            line = pair(kinds, round_no, label)
            {"bare": noise, "nodeport": paired, "naive": naive}[second].append(line)
        # The harness's own work per request without the network, in a tight loop.
        send = run_json([sys.executable, str(BENCH / "overhead_send.py"), "--host", host,
                         "--pod", pod["name"]], locust_cores, timeout=300)
    bare_cpu = statistics.median(r["cpu_us_per_req"] for r in results["bare"])
    added_us = send["ns_added_per_request"] / 1000
    emit(bench="overhead_estimate", added_us_per_request=round(added_us, 3),
         bare_cpu_us_per_req=round(bare_cpu, 2),
         cost_at_measured_rate=round(added_us / bare_cpu, 4),
         reference_us_per_req=round(1e6 / REFERENCE_RPS, 1),
         cost_at_reference_rate=round(added_us * REFERENCE_RPS / 1e6, 4), budget=BUDGET,
         note="tight loop, warm caches: a lower bound of the in-Locust cost")
    if paired:
        cost = statistics.median(p["cpu_cost"] for p in paired)
        emit(bench="overhead_paired", rounds=len(paired),
             cpu_cost_per_round=[p["cpu_cost"] for p in paired],
             rps_cost_per_round=[p["rps_cost"] for p in paired],
             recording_cost=round(cost, 4),
             rps_cost=round(statistics.median(p["rps_cost"] for p in paired), 4),
             noise_floor=[n["cpu_cost"] for n in noise],
             budget=BUDGET, within_budget=cost <= BUDGET)
    if naive:
        cost = statistics.median(p["cpu_cost"] for p in naive)
        emit(bench="overhead_naive", rounds=len(naive),
             cpu_cost_per_round=[p["cpu_cost"] for p in naive], naive_cost=round(cost, 4),
             reference_naive_cost=REFERENCE_NAIVE,
             machine_scale=round(cost / REFERENCE_NAIVE, 2),
             note="the naive JSON-parse listener measured here vs on the reference machines")

    if args.samples > 0:
        run_json([sys.executable, str(BENCH / "overhead_core.py"), "--samples",
                  str(args.samples)], locust_cores, timeout=900)
    return 0


def run_together(runs: list[tuple], run) -> list[dict]:
    """``run(*args)`` for every args tuple, all at the same time (threads: each waits on its
    own subprocess)."""
    out: list[dict | BaseException | None] = [None] * len(runs)

    def one(i: int) -> None:
        try:
            out[i] = run(*runs[i])
        except BaseException as err:  # SystemExit from run_locust included
            out[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in out:
        if isinstance(result, BaseException):
            raise result
    return out  # type: ignore[return-value]


def summarize_interleaved(results: dict[str, list[dict]]) -> None:
    medians = {kind: {key: round(statistics.median(r[key] for r in results[kind]), 3)
                      for key in ("rps", "cpu_us_per_req", "locust_cpu_util", "lab_cpu_util")}
               for kind in KINDS}
    # Paired per round (adjacent in time): cost = nodeport/bare - 1.
    pairs = list(zip(results["bare"], results["nodeport"], strict=True))
    cpu_cost = [n["cpu_us_per_req"] / b["cpu_us_per_req"] - 1 for b, n in pairs]
    rps_cost = [1 - n["rps"] / b["rps"] for b, n in pairs]
    # Clean rounds: Locust had its core in both runs. When other processes take part of it,
    # Locust's CPU per request rises (fewer requests per wake-up) and the pair says little.
    clean = [c for c, (b, n) in zip(cpu_cost, pairs, strict=True)
             if min(b["locust_cpu_util"], n["locust_cpu_util"]) >= SATURATED]
    bare, nodeport = medians["bare"], medians["nodeport"]
    emit(bench="overhead", rps_bare=bare["rps"], rps_nodeport=nodeport["rps"],
         rps_ratio=ratio(nodeport["rps"], bare["rps"]),
         rps_cost_per_round=[round(c, 4) for c in rps_cost],
         cpu_us_per_req_bare=bare["cpu_us_per_req"],
         cpu_us_per_req_nodeport=nodeport["cpu_us_per_req"],
         cpu_ratio=ratio(nodeport["cpu_us_per_req"], bare["cpu_us_per_req"]),
         cpu_cost_per_round=[round(c, 4) for c in cpu_cost],
         clean_rounds=len(clean),
         cpu_cost_median=round(statistics.median(clean if len(clean) >= 2 else cpu_cost), 4),
         cpu_cost_from="clean rounds" if len(clean) >= 2 else "all rounds",
         locust_cpu_util={k: medians[k]["locust_cpu_util"] for k in KINDS},
         lab_cpu_util={k: medians[k]["lab_cpu_util"] for k in KINDS},
         bottleneck=bottleneck(bare))


def run_json(argv: list[str], cores: set[int] | None, timeout: float) -> dict:
    """Run a bench script (pinned), pass its JSON lines through; the first one parsed."""
    if cores:
        argv = ["taskset", "-c", ",".join(map(str, sorted(cores)))] + argv
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=timeout,
                          check=False)
    for line in done.stdout.splitlines():
        print(line, flush=True)
    if done.returncode or not done.stdout.strip():
        raise SystemExit(f"{argv[-1]}... failed with exit code {done.returncode}")
    return json.loads(done.stdout.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
