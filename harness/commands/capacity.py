"""`nodeport-harness capacity`: step the load up, find where the Service stops meeting its
SLO, and say how many pods a target rate needs (the maths: harness.core.capacity; the Locust
shape: harness/plugin/capacity_shape.py; the page: harness.report.capacity_page)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.core.capacity import capacity_headline, exit_code_for, make_plan
from harness.core.text import number, secs
from harness.errors import HarnessError
from harness.options import CAPACITY_OPTIONS, add_capacity_options

LOCUSTFILE = Path(__file__).parent.parent / "plugin" / "capacity_shape.py"


# -- the command -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.options import add_harness_options

    parser.epilog = (
        "Writes the run folder of `nodeport-harness run` plus capacity.json, steps.csv and "
        "capacity.html. Exit code 0: measured, or a lower bound when no step broke the SLO "
        "(even if --target-rps needs more pods); 1: not even the first step met the SLO, or "
        "the load generator was the limit from the first step, or a --max-* threshold was "
        "breached; 2: usage error.")
    add_harness_options(parser)
    # Capacity is a property of the pods: a new connection per request lets kube-proxy spread
    # every request instead of pinning keep-alive connections unevenly.
    parser.set_defaults(connection="close")
    steps = parser.add_argument_group("steps and SLO")
    add_capacity_options(steps)
    load = parser.add_argument_group("load generator")
    load.add_argument("--processes", type=int, default=None,
                      help="Locust worker processes on this machine (-1: one per core); per-pod "
                           "shares per step are then approximate (workers report every ~3 s)")
    load.add_argument("--stop-timeout", type=float, default=None,
                      help="seconds users get to finish their request at the end "
                           "(default: --timeout + 2)")
    load.add_argument("--loglevel", default="WARNING", help="Locust log level")
    lab = parser.add_argument_group("lab (with --lab)")
    lab.add_argument("--lab-nodes", type=int, default=3, help="lab worker nodes (default 3)")
    lab.add_argument("--lab-pods", type=int, default=3, help="lab pods (default 3)")
    lab.add_argument("--lab-pod-service-ms", type=float, default=20.0,
                     help="time each request takes in a lab pod, ms (default %(default)s; 0: "
                          "none, so the lab has no known capacity and the load generator "
                          "is usually the limit)")
    lab.add_argument("--lab-pod-concurrency", type=int, default=2,
                     help="requests a lab pod serves at once (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from harness.commands import run as run_cmd
    from harness.options import check_numbers, check_users

    check_numbers(args)  # NaN and infinity pass every range check below
    for flag in ("start_users", "max_users", "step_users"):
        check_users(getattr(args, flag), args.processes, "--" + flag.replace("_", "-"))
    plan = make_plan(args)
    if args.lab and min(args.lab_nodes, args.lab_pods, args.lab_pod_concurrency) < 1:
        raise HarnessError("--lab-nodes, --lab-pods and --lab-pod-concurrency must be at least 1")
    if args.lab and args.lab_pod_service_ms < 0:
        raise HarnessError("--lab-pod-service-ms must not be negative (0: pods without a "
                           "service time)")
    if not args.run_id:
        args.run_id = time.strftime("capacity-%Y%m%d-%H%M%S")
    # What run_cmd.run needs: the shape ignores -u/-r/-t (it owns the load), but Locust
    # shows -u as the run's users and -t bounds the run should the shape ever not end.
    args.users = max(plan.users(i) for i in range(len(plan.loads)))
    args.spawn_rate = None
    args.run_time = f"{math.ceil(plan.duration_s) + 30}s"
    args.locustfile = str(LOCUSTFILE)
    print(f"capacity: {number(len(plan.loads))} steps of {secs(plan.step_time_s)} "
          f"({'users' if plan.mode == 'closed' else 'req/s'}: "
          # "; " between loads: a thousands comma would make ", " ambiguous (1,000, 2,000).
          f"{'; '.join(number(load) for load in plan.loads)}), about "
          f"{secs(plan.duration_s)}", file=sys.stderr)
    with _target(args) as lab_truth:
        if lab_truth:
            args.capacity_lab = json.dumps(lab_truth)
        with _environ(capacity_env(args)):
            code = run_cmd.run(args)
    return _conclude(Path(args.report_dir) / args.run_id, code)


@contextlib.contextmanager
def _target(args: argparse.Namespace) -> Iterator[dict[str, Any] | None]:
    """With --lab, a lab whose pods have a known capacity, targeted through its kubeconfig."""
    if not args.lab:
        yield None
        return
    if args.kubeconfig or args.inventory or args.context:
        raise HarnessError("--lab cannot be combined with --kubeconfig, --context or --inventory")
    from harness.lab.cluster import LabCluster

    with LabCluster(nodes=args.lab_nodes, pods=args.lab_pods,
                    pod_service_ms=args.lab_pod_service_ms,
                    pod_concurrency=args.lab_pod_concurrency,
                    datapath=getattr(args, "lab_datapath", None) or "userspace") as lab:
        args.lab, args.kubeconfig = False, str(lab.kubeconfig)
        yield {"pods": len(lab.pods), "nodes": len(lab.nodes),
               "pod_service_ms": args.lab_pod_service_ms,
               "pod_concurrency": args.lab_pod_concurrency}


def capacity_env(args: argparse.Namespace) -> dict[str, str]:
    """Our options as the LOCUST_* variables the capacity locustfile's options read (the
    `run` command's child gets only the harness options on its command line)."""
    env = {}
    for dest in CAPACITY_OPTIONS:
        value = getattr(args, dest, None)
        if value not in (None, ""):
            env["LOCUST_" + dest.upper()] = str(value)
    return env


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _conclude(run_dir: Path, code: int) -> int:
    """Print the recommendation (the headline, then its reasoning); exit 1 when no step
    measured a capacity."""
    path = run_dir / "capacity.json"
    if code not in (0, 1) or not path.is_file():
        return code if code else 2
    result = json.loads(path.read_text())
    print(f"capacity: {result.get('headline') or capacity_headline(result)}", file=sys.stderr)
    print(f"  {result['reasoning']}", file=sys.stderr)
    print(f"capacity report: {run_dir / 'capacity.html'}", file=sys.stderr)
    return max(code, exit_code_for(result))
