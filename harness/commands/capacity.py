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
from harness.targets import clear_lab_shape, lab_config

LOCUSTFILE = Path(__file__).parent.parent / "plugin" / "capacity_shape.py"
# With --lab, pods of a known capacity (pods x concurrency / service time) unless the
# --lab-<flag> options say otherwise.
LAB_DEFAULTS = {"pods": 3, "pod_service_ms": 20.0, "pod_concurrency": 2}
_LAB_HELP = {
    "lab_pods": "with --lab: helloworld pods (default 3)",
    "lab_pod_service_ms": "with --lab: time each request takes in a pod, ms (default 20; 0: "
                          "none, so the lab has no known capacity and the load generator is "
                          "usually the limit)",
    "lab_pod_concurrency": "with --lab: requests a pod serves at once (default 2)",
}


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
    # The --lab-<flag> options come with the run options; capacity's lab defaults differ.
    for action in parser._actions:
        action.help = _LAB_HELP.get(action.dest, action.help)


def run(args: argparse.Namespace) -> int:
    from harness.commands import run as run_cmd
    from harness.options import check_numbers, check_users

    check_numbers(args)  # NaN and infinity pass every range check below
    for flag in ("start_users", "max_users", "step_users"):
        check_users(getattr(args, flag), args.processes, "--" + flag.replace("_", "-"))
    plan = make_plan(args)
    lab = lab_config(args, **LAB_DEFAULTS)
    if lab is not None and min(lab.pods, lab.pod_concurrency) < 1:
        raise HarnessError("--lab-pods and --lab-pod-concurrency must be at least 1 (the lab's "
                           "capacity is pods x concurrency / service time)")
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
    with _target(args, lab) as lab_truth:
        if lab_truth:
            args.capacity_lab = json.dumps(lab_truth)
        with _environ(capacity_env(args)):
            code = run_cmd.run(args)
    return _conclude(Path(args.report_dir) / args.run_id, code)


@contextlib.contextmanager
def _target(args: argparse.Namespace, config: Any) -> Iterator[dict[str, Any] | None]:
    """With --lab (``config``, its LabConfig), a lab whose pods have a known capacity,
    targeted through its kubeconfig."""
    if config is None:
        yield None
        return
    if args.kubeconfig or args.inventory or args.context:
        raise HarnessError("--lab cannot be combined with --kubeconfig, --context or --inventory")
    from harness.lab.cluster import LabCluster

    with LabCluster(config) as lab:
        args.lab, args.kubeconfig = False, str(lab.kubeconfig)
        clear_lab_shape(args)  # the run targets this lab through its kubeconfig
        yield {"pods": len(lab.pods), "nodes": len(lab.nodes),
               "pod_service_ms": config.pod_service_ms,
               "pod_concurrency": config.pod_concurrency}


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
