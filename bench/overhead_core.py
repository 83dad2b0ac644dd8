"""Cost of SpreadRecorder alone: ns per request, memory growth, and to_dict/merge/drain times.

Prints JSON lines. The recording budget is 3 % of a core at 10k req/s (3 µs per request,
pod extraction included), and memory should grow by at most 20 MB over the run.
Usage: python bench/overhead_core.py [--samples 10000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import resource
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.core.recorder import SpreadRecorder  # noqa: E402

NODES = ["node-1", "node-2", "node-3"]
POD_NODES = {f"pod-{i}": NODES[i % 3] for i in range(6)}
POOL = 1 << 16  # pre-generated requests, cycled: generation must not be measured


def make_pool(seed: int = 1, users: int = 100) -> dict[str, list]:
    """A realistic mix: round-robin entry, random pods, lognormal latency, 0.1 % failures,
    keep-alive connections (one per user and node) that are replaced after a failure."""
    rng = random.Random(seed)
    pods = list(POD_NODES)
    generation = [0] * (users * 3)
    pool: dict[str, list] = {k: [] for k in ("entry", "pod", "latency", "failure", "conn")}
    for i in range(POOL):
        user, node = rng.randrange(users), i % 3
        failure = None
        if rng.random() < 0.001:
            failure = rng.choice(["timeout", "refused", "http_503"])
        key = user * 3 + node
        pool["entry"].append(NODES[node])
        pool["pod"].append(None if failure else rng.choice(pods))
        pool["latency"].append(rng.lognormvariate(0.7, 0.5))  # ~2 ms median
        pool["failure"].append(failure)
        pool["conn"].append(key * 1_000_000 + generation[key] + 1)  # 0: one-request
        if failure:
            generation[key] += 1
    return pool


def drive(record, pool: dict[str, list], samples: int, connections: str = "int") -> float:
    """Seconds to feed ``samples`` requests to ``record``; ``connections``: int keys, tuple
    keys (what traffic.py passes: user, node, generation) or none (not tracked)."""
    entry, pod, latency = pool["entry"], pool["pod"], pool["latency"]
    failure, conn = pool["failure"], pool["conn"]
    if connections == "tuple":
        conn = [(c // 1_000_000 // 3, entry[j], c % 1_000_000) for j, c in enumerate(conn)]
    mask = POOL - 1
    started = time.perf_counter()
    if connections == "none":
        for i in range(samples):
            j = i & mask
            record(entry[j], pod[j], latency[j], failure[j])
    else:
        for i in range(samples):
            j = i & mask
            record(entry[j], pod[j], latency[j], failure[j], conn[j])
    return time.perf_counter() - started


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def retained_bytes(root: object) -> int:
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    args = parser.parse_args()
    pool = make_pool()

    def nothing(entry_node, pod, latency_ms, failure=None, connection=None):
        return None

    baseline = min(drive(nothing, pool, 1_000_000) for _ in range(3)) / 1_000_000

    recorder = SpreadRecorder(POD_NODES)
    drive(recorder.record, pool, 100_000)  # warm-up: nodes, pods, live connections exist
    gc.collect()
    rss_before, retained_before = rss_bytes(), retained_bytes(recorder)
    # In chunks: on a shared machine the median chunk is the figure, the best one the floor.
    chunk = max(1, args.samples // 10)
    chunks = sorted(drive(recorder.record, pool, chunk) / chunk for _ in range(10))
    gc.collect()
    per_sample = chunks[len(chunks) // 2]
    emit(bench="record", samples=chunk * 10, ns_per_sample=round(per_sample * 1e9),
         ns_per_sample_net=round((per_sample - baseline) * 1e9),
         ns_per_sample_net_best=round((chunks[0] - baseline) * 1e9),
         loop_ns=round(baseline * 1e9), budget_ns=3000,
         rss_growth_mb=round((rss_bytes() - rss_before) / 2**20, 2),
         retained_growth_mb=round((retained_bytes(recorder) - retained_before) / 2**20, 2),
         retained_mb=round(retained_bytes(recorder) / 2**20, 2), goal_growth_mb=20,
         series_seconds=len(recorder.to_dict()["series"]["node-1"]))

    # The same mix with int, tuple or no connection keys, interleaved so load noise is shared.
    variants = {name: SpreadRecorder(POD_NODES) for name in ("int", "tuple", "none")}
    best = dict.fromkeys(variants, math.inf)
    for _ in range(3):
        for name, variant in variants.items():
            seconds = drive(variant.record, pool, 300_000, name) / 300_000
            best[name] = min(best[name], seconds)
    emit(bench="record_connection_keys", samples=900_000, **{
        f"ns_net_{name}": round((seconds - baseline) * 1e9) for name, seconds in best.items()})

    started = time.perf_counter()
    data = recorder.to_dict()
    to_dict_ms = (time.perf_counter() - started) * 1000
    text = json.dumps(data)
    emit(bench="to_dict", ms=round(to_dict_ms, 2), json_kb=round(len(text) / 1024, 1))

    started = time.perf_counter()
    master = SpreadRecorder(POD_NODES)
    for _ in range(4):  # four workers' final reports
        master.merge(data)
    emit(bench="merge", ms_per_merge=round((time.perf_counter() - started) * 1000 / 4, 2),
         requests=master.totals()["requests"])

    worker = SpreadRecorder(POD_NODES)
    drive(worker.record, pool, 30_000)  # ~3 s of a busy worker between reports
    started = time.perf_counter()
    delta = worker.drain()
    emit(bench="drain", ms=round((time.perf_counter() - started) * 1000, 2),
         json_kb=round(len(json.dumps(delta)) / 1024, 1))


if __name__ == "__main__":
    main()
