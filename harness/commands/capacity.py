"""`nodeport-harness capacity`: step the load up, find where the Service stops meeting its SLO,
and say how many pods a target rate needs.

Two load models. Closed loop (``--step-users``): each user sends its next request when the
reply arrives, so a slow server slows the offered load down (coordinated omission: latency is
under-reported once the server saturates). Open loop (``--step-rps``): a step offers a rate,
spread over paced users (``constant_throughput`` with a live interval), so the offered load
holds while each reply arrives within the pacing interval. The shape itself lives in
``harness/plugin/capacity.py``; this module holds its options, the pure arithmetic
(step plan, per-step figures from spread.json, the capacity result) and the command.

``capacity.json`` (``analyse_capacity``), schema ``nodeport-harness/capacity/v1``: ``mode``
(closed / open), ``load_model``, ``step_time_s``, ``settle_s``, ``slo`` (p95_ms,
fail_ratio), ``steps`` (see ``measure_steps``, annotated by ``analysis.find_knee``:
``load``, ``fail_ratio``, ``meets_slo``, ``gain``), ``knee_index`` / ``breach_index`` /
``plateau_index`` (0-based, ``null`` when none), ``capacity_rps`` (the knee's throughput),
``capacity_per_pod`` / ``capacity_per_node``, ``saturation_rps`` / ``saturation_index``
(the most any step delivered), ``pods``, ``nodes``, ``target_rps``, ``headroom``,
``pods_needed``, ``nodes_needed``, ``reasoning`` (the recommendation in words), ``lab``
(ground truth when the command started the lab: pods, pod_concurrency, pod_service_ms,
true_capacity_rps, saturation_vs_truth) and ``notes``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

CAPACITY_SCHEMA = "nodeport-harness/capacity/v1"
LOCUSTFILE = Path(__file__).parent.parent / "plugin" / "capacity.py"
MAX_STEPS = 200  # a bounded run: 200 steps of 10 s is already over half an hour
EDGE_SLACK_S = 0.05  # a step edge this close to a whole second counts as on it
MIN_MEASURED_S = 2.0  # seconds a step must keep after its settle time
NOT_PODS = ("unknown", "(other)")  # replies naming no pod / names over the recorder's cap
CLOSED_MODEL = ("closed loop: each user sends its next request when the reply arrives, so a "
                "slower server is offered less load and latency past saturation is "
                "under-reported (coordinated omission); users rise in steps")
OPEN_MODEL = ("open loop (paced users): each step offers a fixed rate spread over users paced "
              "at {pacing:g} s, so the offered load holds while replies take less than that; "
              "beyond it users fall behind and the step is marked as not held")

# dest -> environment variable Locust reads it from (set by the command for its child).
CAPACITY_OPTIONS = (
    "step_users", "start_users", "max_users", "step_rps", "start_rps", "max_rps", "step_time",
    "settle_s", "pacing_s", "slo_p95_ms", "slo_fail_ratio", "target_rps", "headroom",
    "capacity_lab",
)


def add_capacity_options(parser, *, locust: bool = False) -> None:
    """The step-load and SLO options, on argparse or on Locust's parser (env LOCUST_*)."""

    def add(*names, ui: bool = True, **kwargs):
        if locust:
            kwargs["include_in_web_ui"] = ui
            kwargs["env_var"] = "LOCUST_" + names[-1].lstrip("-").replace("-", "_").upper()
        parser.add_argument(*names, **kwargs)

    add("--step-users", type=int, default=None,
        help="closed loop: users added per step (give this or --step-rps)")
    add("--start-users", type=int, default=None, help="users in the first step "
        "(default: --step-users)")
    add("--max-users", type=int, default=None, help="users in the last step")
    add("--step-rps", type=float, default=None,
        help="open loop: requests/s added per step, offered by paced users")
    add("--start-rps", type=float, default=None,
        help="rate of the first step (default: --step-rps)")
    add("--max-rps", type=float, default=None, help="rate of the last step")
    add("--step-time", default="10s", help="how long each step lasts, e.g. 10s, 1m "
        "(default %(default)s)")
    add("--settle-s", type=float, default=1.0,
        help="seconds at each step's start left out of its figures (default %(default)s)")
    add("--pacing-s", type=float, default=None,
        help="open loop: seconds between one user's requests (default: 10 x the p95 SLO, "
             "0.2-2 s)")
    add("--slo-p95-ms", type=float, default=None, help="SLO: p95 latency in ms (required)")
    add("--slo-fail-ratio", type=float, default=0.01,
        help="SLO: largest failed share of requests (default %(default)s)")
    add("--target-rps", type=float, default=None,
        help="requests/s to plan pods for (at the SLO, with --headroom spare)")
    add("--headroom", type=float, default=0.3,
        help="share of each pod's measured capacity kept spare (default %(default)s)")
    # The lab's ground truth, when the command started it (JSON; not for users).
    add("--capacity-lab", default="", ui=False, help=argparse.SUPPRESS)


# -- the step plan (pure) --------------------------------------------------------------------

@dataclass(frozen=True)
class StepPlan:
    """What each step offers: users (closed loop) or a rate over paced users (open loop)."""

    mode: str  # "closed" or "open"
    loads: tuple[float, ...]  # users per step, or requests/s per step
    step_time_s: float
    settle_s: float
    pacing_s: float | None = None  # open loop: target seconds between one user's requests

    @property
    def duration_s(self) -> float:
        return len(self.loads) * self.step_time_s

    def users(self, index: int) -> int:
        """Users running during step ``index``."""
        load = self.loads[index]
        if self.mode == "closed":
            return int(load)
        return users_for_rate(load, self.pacing_s or 1.0)

    def interval_s(self, index: int) -> float | None:
        """Open loop: seconds between one user's requests in step ``index`` (so that
        users x 1/interval is exactly the step's rate)."""
        if self.mode == "closed":
            return None
        return self.users(index) / self.loads[index]

    def load_model(self) -> str:
        return CLOSED_MODEL if self.mode == "closed" else OPEN_MODEL.format(
            pacing=round(self.pacing_s or 0, 3))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "loads": list(self.loads), "step_time_s": self.step_time_s,
                "settle_s": self.settle_s, "pacing_s": self.pacing_s,
                "users": [self.users(i) for i in range(len(self.loads))]}


def step_loads(start: float, step: float, maximum: float) -> list[float]:
    """start, start + step, ... up to maximum (which is always the last step)."""
    loads: list[float] = []
    value = start
    while value < maximum - 1e-9 and len(loads) <= MAX_STEPS:
        loads.append(value)
        value = start + step * len(loads)  # no drift from repeated float additions
    loads.append(maximum)
    return loads


def users_for_rate(rate: float, pacing_s: float) -> int:
    """Paced users needed to offer ``rate`` requests/s with about ``pacing_s`` between one
    user's requests."""
    return max(1, math.ceil(rate * pacing_s - 1e-9))


def default_pacing(slo_p95_ms: float | None) -> float:
    """Ten times the SLO: a reply may take that long before its user falls behind."""
    if not slo_p95_ms:
        return 1.0
    return min(2.0, max(0.2, 10 * slo_p95_ms / 1000.0))


def make_plan(options: Any) -> StepPlan:
    """The plan from parsed options (command or Locust), or HarnessError naming the bad one."""
    from harness.commands.run import parse_duration

    closed = options.step_users is not None
    opened = options.step_rps is not None
    if closed and opened:
        raise HarnessError("give either --step-users (closed loop) or --step-rps (open loop), "
                           "not both")
    if not closed and not opened:
        raise HarnessError("capacity needs a step: --step-users N (closed loop) or "
                           "--step-rps R (open loop)")
    if options.slo_p95_ms is None or options.slo_p95_ms <= 0:
        raise HarnessError("capacity needs a positive --slo-p95-ms (the p95 latency SLO, ms)")
    if not 0 <= options.slo_fail_ratio <= 1:
        raise HarnessError(f"--slo-fail-ratio must be between 0 and 1, got "
                           f"{options.slo_fail_ratio}")
    if not 0 <= options.headroom < 1:
        raise HarnessError(f"--headroom must be in [0, 1), e.g. 0.3 keeps 30 % spare; got "
                           f"{options.headroom}")
    if options.target_rps is not None and options.target_rps <= 0:
        raise HarnessError(f"--target-rps must be positive, got {options.target_rps}")
    try:
        step_time = parse_duration(options.step_time)
    except HarnessError:
        raise HarnessError(f"--step-time {options.step_time!r} is not a duration; use e.g. "
                           "10s or 1m") from None
    settle = float(options.settle_s)
    if settle < 0:
        raise HarnessError(f"--settle-s must not be negative, got {settle}")
    if step_time < settle + MIN_MEASURED_S:
        raise HarnessError(f"--step-time {options.step_time} leaves under {MIN_MEASURED_S:g} s "
                           f"to measure after the {settle:g} s settle time; use at least "
                           f"{math.ceil(settle + MIN_MEASURED_S)}s")
    if closed:
        names, values = ("--step-users", "--start-users", "--max-users"), (
            options.step_users, options.start_users, options.max_users)
    else:
        names, values = ("--step-rps", "--start-rps", "--max-rps"), (
            options.step_rps, options.start_rps, options.max_rps)
    step, start, maximum = values
    if maximum is None:
        raise HarnessError(f"{names[0]} needs {names[2]} (the load of the last step)")
    start = step if start is None else start
    for name, value in zip(names, (step, start, maximum), strict=True):
        if value <= 0:
            raise HarnessError(f"{name} must be positive, got {value}")
    if maximum < start:
        raise HarnessError(f"{names[2]} {maximum:g} is below the first step's {start:g}")
    loads = step_loads(float(start), float(step), float(maximum))
    if len(loads) > MAX_STEPS:
        raise HarnessError(f"{len(loads)} steps is more than {MAX_STEPS}: raise {names[0]} "
                           f"or lower {names[2]}")
    pacing = None
    if opened:
        pacing = options.pacing_s if options.pacing_s is not None else default_pacing(
            options.slo_p95_ms)
        if pacing <= 0:
            raise HarnessError(f"--pacing-s must be positive, got {pacing}")
    elif options.pacing_s is not None:
        raise HarnessError("--pacing-s is for the open loop (--step-rps) only")
    return StepPlan("closed" if closed else "open", tuple(loads), step_time, settle, pacing)


def capacity_settings(options: Any, plan: StepPlan) -> dict[str, Any]:
    """What run.json's ``capacity`` holds: the plan and the SLO the report is judged by."""
    lab = None
    if getattr(options, "capacity_lab", ""):
        with contextlib.suppress(ValueError):
            lab = json.loads(options.capacity_lab)
    return {**plan.to_dict(), "slo_p95_ms": options.slo_p95_ms,
            "slo_fail_ratio": options.slo_fail_ratio, "target_rps": options.target_rps,
            "headroom": options.headroom, "lab": lab if isinstance(lab, dict) else None}


# -- per-step figures (pure) -------------------------------------------------------------------

def measure_steps(spread: Mapping[str, Any], steps: Sequence[Mapping[str, Any]],
                  settle_s: float = 1.0) -> list[dict[str, Any]]:
    """Each step's figures from spread.json's per-second series.

    A step counts the whole seconds between its start + ``settle_s`` and its end (users
    spawning and queues filling stay out). Per step: ``step`` (1-based), ``users`` (closed
    loop) or ``rate`` and ``paced_users`` (open loop), ``offered_rps`` (open loop, else
    null), ``start`` / ``end`` (epoch), ``window_start`` (epoch second), ``window_s``,
    ``requests``, ``successes``, ``failures``, ``rps`` (completed requests/s, failures
    included), ``goodput_rps`` (successes/s), ``rps_min`` / ``rps_max`` (its slowest and
    busiest second), ``held`` (open loop: achieved >= 90 % of offered), ``p50`` / ``p95`` /
    ``p99`` (ms, successes, from the series' coarse histogram: within 3.1 %),
    ``pod_successes`` / ``pod_shares`` (pod -> count / share of the step's successes that
    named a pod, every known pod listed), ``unknown_successes``, ``pods_served``, ``jain``
    (fairness over the known pods), ``pod_window_s`` (how long the pod counts cover).
    """
    from harness.core.analysis import jain_index
    from harness.core.recorder import SERIES_SHIFT, hist_items, percentiles

    shift = int((spread.get("histogram") or {}).get("series_shift", SERIES_SHIFT))
    seconds: dict[int, list[Any]] = {}  # epoch second -> [requests, failures, {bucket: n}]
    for rows in (spread.get("series") or {}).values():
        for row in rows:
            cell = seconds.setdefault(int(row["t"]), [0, 0, {}])
            cell[0] += int(row.get("requests", 0))
            cell[1] += int(row.get("failures", 0))
            for index, count in hist_items(row.get("latency")):
                cell[2][index] = cell[2].get(index, 0) + count
    known_pods = [p for p in (spread.get("pod_nodes") or {}) if p not in NOT_PODS]
    out = []
    for number, step in enumerate(steps, 1):
        start, end = step.get("start"), step.get("end")
        row: dict[str, Any] = {"step": number}
        if step.get("rate") is not None:
            row.update(rate=step["rate"], paced_users=step.get("users"),
                       offered_rps=float(step["rate"]))
        else:
            row.update(users=step.get("users"), offered_rps=None)
        row.update(start=start, end=end)
        if start is None or end is None:
            first, last = 0, 0
        else:
            # Steps start on whole seconds, a few ms late: that slack is not a lost second.
            first = math.ceil(start + settle_s - EDGE_SLACK_S)
            last = math.floor(end + EDGE_SLACK_S)
        window = range(first, max(first, last))
        requests = failures = 0
        hist: dict[int, int] = {}
        per_second = []
        for second in window:
            cell = seconds.get(second)
            count = cell[0] if cell else 0
            per_second.append(count)
            if cell:
                requests += cell[0]
                failures += cell[1]
                for index, n in cell[2].items():
                    hist[index] = hist.get(index, 0) + n
        span = len(window)
        p50, p95, p99 = percentiles(hist, (0.5, 0.95, 0.99), shift)
        rps = requests / span if span else 0.0
        row.update(
            window_start=first if span else None, window_s=span, duration_s=span,
            requests=requests, successes=requests - failures, failures=failures,
            rps=rps, goodput_rps=(requests - failures) / span if span else 0.0,
            rps_min=min(per_second) if per_second else None,
            rps_max=max(per_second) if per_second else None,
            p50=p50, p95=p95, p99=p99,
        )
        row["held"] = (rps >= 0.9 * row["offered_rps"]) if row["offered_rps"] else None
        row.update(_pod_figures(step, known_pods, jain_index))
        out.append(row)
    return out


def _pod_figures(step: Mapping[str, Any], known_pods: Sequence[str], jain) -> dict[str, Any]:
    counts = dict(step.get("pod_successes") or {})
    named = {pod: int(counts.get(pod, 0)) for pod in known_pods}
    for pod, count in counts.items():  # pods that appeared during the run (replacements)
        if pod not in NOT_PODS:
            named.setdefault(pod, int(count))
    total = sum(named.values())
    window = None
    if step.get("pods_from") is not None and step.get("pods_to") is not None:
        window = round(step["pods_to"] - step["pods_from"], 3)
    return {
        "pod_successes": named,
        "pod_shares": {pod: (n / total if total else None) for pod, n in named.items()},
        "unknown_successes": sum(int(counts.get(p, 0)) for p in NOT_PODS),
        # No count at all: not measured (a master whose workers had not reported yet).
        "pods_served": sum(1 for n in named.values() if n) if total else None,
        "jain": jain(list(named.values())) if total else None,
        "pod_window_s": window,
    }


# -- the result (pure) -------------------------------------------------------------------------

def analyse_capacity(spread: Mapping[str, Any], run: Mapping[str, Any],
                     target: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """capacity.json's content from a capacity run folder's spread.json, run.json, target.json."""
    from harness.core.analysis import plan_capacity

    settings = run.get("capacity")
    if not isinstance(settings, Mapping):
        raise HarnessError("run.json has no capacity settings: pass a folder written by "
                           "nodeport-harness capacity")
    steps = measure_steps(spread, run.get("steps") or [], float(settings.get("settle_s", 1.0)))
    pods, nodes = _pods_and_nodes(target or {}, spread)
    slo_p95 = float(settings["slo_p95_ms"])
    fail_ratio = float(settings.get("slo_fail_ratio", 0.01))
    plan = plan_capacity(steps, pods=pods, nodes=nodes or None, slo_p95_ms=slo_p95,
                         target_rps=settings.get("target_rps"),
                         headroom=float(settings.get("headroom", 0.3)),
                         max_fail_ratio=fail_ratio)
    rows = plan["steps"]
    peak_index = max(range(len(rows)), key=lambda i: rows[i]["rps"]) if rows else None
    saturation = rows[peak_index]["rps"] if peak_index is not None else None
    mode = settings.get("mode", "closed")
    result: dict[str, Any] = {
        "schema": CAPACITY_SCHEMA,
        "run_id": run.get("run_id"),
        "mode": mode,
        "load_model": run.get("load_model"),
        "step_time_s": settings.get("step_time_s"),
        "settle_s": settings.get("settle_s"),
        "pacing_s": settings.get("pacing_s"),
        "connection": run.get("connection"),
        "entry": run.get("entry"),
        "slo": {"p95_ms": slo_p95, "fail_ratio": fail_ratio},
        **{key: plan[key] for key in (
            "steps", "knee_index", "breach_index", "plateau_index", "capacity_rps",
            "capacity_per_pod", "capacity_per_node", "pods", "nodes", "target_rps",
            "headroom", "pods_needed", "nodes_needed", "min_gain")},
        "saturation_rps": saturation,
        "saturation_index": peak_index,
        "lab": _lab_truth(settings.get("lab"), saturation),
        "partial": run.get("partial"),
    }
    result["notes"] = capacity_notes(result)
    result["reasoning"] = _reasoning(plan["reasoning"], result)
    return result


def _pods_and_nodes(target: Mapping[str, Any], spread: Mapping[str, Any]) -> tuple[int, int]:
    """Ready pods behind the Service and the nodes they run on (what capacity divides by)."""
    ready = [e for e in target.get("endpoints", ()) if e.get("ready", True) and e.get("pod")]
    if ready:
        return len(ready), len({e.get("node") for e in ready if e.get("node")})
    seen = {p: n for p, n in (spread.get("pod_nodes") or {}).items() if p not in NOT_PODS}
    return len(seen), len({n for n in seen.values() if n})


def _lab_truth(lab: Any, saturation: float | None) -> dict[str, Any] | None:
    if not isinstance(lab, Mapping) or not lab.get("pod_service_ms") or not lab.get(
            "pod_concurrency"):
        return None
    truth = lab["pods"] * lab["pod_concurrency"] * 1000.0 / lab["pod_service_ms"]
    return {**lab, "true_capacity_rps": truth,
            "saturation_vs_truth": saturation / truth if saturation is not None else None}


def capacity_notes(result: Mapping[str, Any]) -> list[str]:
    """Caveats the reader needs next to the figures."""
    notes = []
    rows = result["steps"]
    if result["mode"] == "closed":
        notes.append("Closed loop: users wait for each reply, so past saturation the offered "
                     "load drops with the server and latency is under-reported (coordinated "
                     "omission). Use --step-rps for an open-loop measurement.")
    else:
        dropped = [r["step"] for r in rows if r.get("held") is False]
        if dropped:
            notes.append("Open loop: steps " + ", ".join(map(str, dropped)) + " did not "
                         "achieve 90 % of the offered rate: replies took longer than the "
                         "pacing interval (or the load generator was short of CPU).")
    if result.get("connection") == "keepalive":
        notes.append("Keep-alive connections: kube-proxy picks a pod per connection, so pods "
                     "can be loaded unevenly; --connection close spreads each request.")
    uneven = [r["step"] for r in rows if r.get("jain") is not None and r["jain"] < 0.9]
    if uneven:
        notes.append("Uneven pod shares (Jain's index < 0.9) in steps "
                     + ", ".join(map(str, uneven)) + ": the busiest pod limits capacity first.")
    if result.get("partial"):
        notes.append(f"The run was partial ({result['partial']}): later steps may be missing.")
    return notes


def _reasoning(base: str, result: Mapping[str, Any]) -> str:
    rows = result["steps"]
    parts = [base.rstrip(".") + "."] if base else []
    index = result.get("saturation_index")
    if index is not None:
        peak = rows[index]
        parts.append(f"The most any step delivered was {_rate(result['saturation_rps'])} "
                     f"(step {peak['step']}, p95 {_ms(peak.get('p95'))}).")
    lab = result.get("lab")
    if lab and lab.get("saturation_vs_truth") is not None:
        parts.append(
            f"The lab's pods can serve {_rate(lab['true_capacity_rps'])} ({lab['pods']} pods "
            f"x {lab['pod_concurrency']} at a time / {lab['pod_service_ms']:g} ms); the "
            f"measured peak is {lab['saturation_vs_truth'] * 100:.0f} % of that.")
    parts.append("Measured " + ("in a closed loop (users rise in steps)."
                                if result["mode"] == "closed" else
                                "in an open loop (a fixed rate offered per step)."))
    return " ".join(parts)


def _rate(rps: float | None) -> str:
    return "n/a" if rps is None else f"{rps:,.1f} req/s"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def exit_code_for(result: Mapping[str, Any]) -> int:
    """1 when steps ran but not even the first met the SLO (capacity is below the plan),
    else 0."""
    return 1 if result["steps"] and result["knee_index"] is None else 0


# -- the command -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.options import add_harness_options

    parser.epilog = (
        "Writes the run folder of `nodeport-harness run` plus capacity.json, steps.csv and "
        "capacity.html. Exit code 0: measured (even if --target-rps needs more pods); 1: not "
        "even the first step met the SLO, or a --max-* threshold was breached; 2: usage "
        "error.")
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
                     help="time each request takes in a lab pod, ms (default %(default)s)")
    lab.add_argument("--lab-pod-concurrency", type=int, default=2,
                     help="requests a lab pod serves at once (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from harness.commands import run as run_cmd

    plan = make_plan(args)
    if args.lab and min(args.lab_nodes, args.lab_pods, args.lab_pod_concurrency) < 1:
        raise HarnessError("--lab-nodes, --lab-pods and --lab-pod-concurrency must be at least 1")
    if args.lab and args.lab_pod_service_ms <= 0:
        raise HarnessError("--lab-pod-service-ms must be positive: a pod without a service "
                           "time has no known capacity")
    if not args.run_id:
        args.run_id = time.strftime("capacity-%Y%m%d-%H%M%S")
    # What run_cmd.run needs: the shape ignores -u/-r/-t (it owns the load), but Locust
    # shows -u as the run's users and -t bounds the run should the shape ever not end.
    args.users = max(plan.users(i) for i in range(len(plan.loads)))
    args.spawn_rate = None
    args.run_time = f"{math.ceil(plan.duration_s) + 30}s"
    args.locustfile = str(LOCUSTFILE)
    print(f"capacity: {len(plan.loads)} steps of {plan.step_time_s:g} s "
          f"({'users' if plan.mode == 'closed' else 'req/s'}: "
          f"{', '.join(f'{load:g}' for load in plan.loads)}), about "
          f"{plan.duration_s:.0f} s", file=sys.stderr)
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
                    pod_concurrency=args.lab_pod_concurrency) as lab:
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
    """Print the recommendation; exit 1 when not even the first step met the SLO."""
    path = run_dir / "capacity.json"
    if code not in (0, 1) or not path.is_file():
        return code if code else 2
    result = json.loads(path.read_text())
    print(f"capacity: {result['reasoning']}", file=sys.stderr)
    print(f"capacity report: {run_dir / 'capacity.html'}", file=sys.stderr)
    return max(code, exit_code_for(result))


__all__ = [
    "CAPACITY_SCHEMA", "StepPlan", "add_capacity_options", "analyse_capacity",
    "capacity_settings", "default_pacing", "exit_code_for", "make_plan", "measure_steps",
    "step_loads", "users_for_rate",
]
