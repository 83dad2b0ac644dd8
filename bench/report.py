"""Benchmark building a run's reports from a synthetic one-hour run (5 nodes x 20 pods).

A real SpreadRecorder with a fake clock records the run (3600 seconds of series per entry
node, keep-alive connections, a node down for five minutes), then `build_report` runs once
per plotly.js mode. Prints JSON lines: the recording, then one line per mode with the build
time (goal: under 3 s) and the page's size, then the other outputs' sizes.

    python bench/report.py [--seconds 3600] [--rate 50] [--nodes 5] [--pods 20]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.recorder import SpreadRecorder
from harness.report.build import OUTPUTS, build_report
from harness.report.files import write_json_atomic

GOAL_S = 3.0
T0 = 1_700_000_000.0


def target(nodes: int, pods: int) -> Target:
    names = [f"node-{i + 1}" for i in range(nodes)]
    return Target(
        nodes=tuple(Node(name=n, addresses={"InternalIP": f"10.0.0.{i + 11}"},
                         address=f"10.0.0.{i + 11}", address_type="InternalIP")
                    for i, n in enumerate(names)),
        service=ServiceInfo(name="helloworld", namespace="bench", type="NodePort",
                            port=ServicePort("http", 80, 8080, 30080)),
        endpoints=tuple(Endpoint(pod=f"helloworld-7d4b9c-{i:05d}", node=names[i % nodes],
                                 ip=f"10.244.{i % nodes}.{i + 2}") for i in range(pods)),
        source="inventory",
    )


def record(tgt: Target, seconds: int, rate: int) -> SpreadRecorder:
    """``rate`` requests per second per node; node-2 down from 40 % to 48 % of the run."""
    rng = random.Random(1)
    now = [T0]
    recorder = SpreadRecorder(tgt.pod_nodes(), clock=lambda: now[0],
                              nodes=[n.name for n in tgt.nodes])
    nodes = [n.name for n in tgt.nodes]
    where = tgt.pod_nodes()
    down = (int(seconds * 0.4), int(seconds * 0.48))
    # Each (node, user) keeps its connection, so pods are pinned per connection.
    pinned = {(n, u): rng.choice(list(where)) for n in nodes for u in range(8)}
    lognormal = rng.lognormvariate
    for second in range(seconds):
        for i in range(rate):
            now[0] = T0 + second + i / rate
            for node in nodes:
                user = i % 8
                connection = (node, user)
                if node == "node-2" and down[0] <= second < down[1]:
                    recorder.record(node, None, 0.3, "refused", connection)
                    continue
                pod = pinned[connection]
                latency = lognormal(1.3, 0.35) + (0.6 if where[pod] != node else 0.0)
                recorder.record(node, pod, latency, None, connection)
    recorder.mark(T0 + down[0], "node-2 down")
    recorder.mark(T0 + down[1], "node-2 up")
    recorder.close()
    return recorder


def run_json(seconds: int, down: tuple[int, int]) -> dict:
    return {
        "schema": "nodeport-harness/run/v1", "run_id": "bench-1h", "started": T0,
        "stopped": T0 + seconds, "duration_s": float(seconds), "role": "local",
        "entry": "all", "connection": "keepalive", "users": 40,
        "load_model": "closed loop: each user waits for its reply (coordinated omission "
                      "applies)",
        "faults": [
            {"t": down[0], "kind": "node", "name": "node-2", "action": "down"},
            {"t": down[1], "kind": "node", "name": "node-2", "action": "up"},
        ],
        "workers": {}, "partial": None, "command": "nodeport-harness run -t 1h",
        "options": {"max_p95_ms": 50.0, "max_fail_ratio": 0.01},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--rate", type=int, default=50, help="requests/s per node")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()

    tgt = target(args.nodes, args.pods)
    started = time.perf_counter()
    recorder = record(tgt, args.seconds, args.rate)
    spread = recorder.to_dict()
    print(json.dumps({"bench": "report_record", "seconds_recorded": args.seconds,
                      "nodes": args.nodes, "pods": args.pods,
                      "requests": spread["totals"]["requests"],
                      "record_s": round(time.perf_counter() - started, 3)}), flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        run_dir = Path(tmp) / "bench-1h"
        write_json_atomic(run_dir / "target.json", tgt.to_dict())
        write_json_atomic(run_dir / "spread.json", spread)
        down = (int(args.seconds * 0.4), int(args.seconds * 0.48))
        write_json_atomic(run_dir / "run.json", run_json(args.seconds, down))
        spread_bytes = (run_dir / "spread.json").stat().st_size
        for mode in ("inline", "cdn", "directory"):
            started = time.perf_counter()
            build_report(run_dir, plotlyjs=mode)
            elapsed = time.perf_counter() - started
            print(json.dumps({
                "bench": "report_build", "plotlyjs": mode, "build_s": round(elapsed, 3),
                "goal_s": GOAL_S, "ok": elapsed < GOAL_S,
                "html_bytes": (run_dir / "index.html").stat().st_size,
                "spread_json_bytes": spread_bytes,
                "series_rows": args.seconds * args.nodes,
            }), flush=True)
        print(json.dumps({"bench": "report_outputs", "bytes": {
            name: (run_dir / name).stat().st_size for name in OUTPUTS}}), flush=True)


if __name__ == "__main__":
    main()
