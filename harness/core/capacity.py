"""Capacity maths: step the load up, find where the Service stops meeting its SLO,
and say how many pods a target rate needs.

Two load models. Closed loop (``--step-users``): each user sends its next request when the
reply arrives, so a slow server slows the offered load down (coordinated omission: latency is
under-reported once the server saturates). Open loop (``--step-rps``): a step offers a rate,
spread over paced users (``constant_throughput`` with a live interval), so the offered load
holds while each reply arrives within the pacing interval. The shape lives in
``harness/plugin/capacity_shape.py``, the command in ``harness/commands/capacity.py``; this module
is the pure arithmetic: the step plan, per-step figures from spread.json, the knee and the
capacity result.

``capacity.json`` (``analyse_capacity``), schema ``nodeport-harness/capacity/v1``: ``mode``
(closed / open), ``load_model``, ``step_time_s``, ``settle_s``, ``slo`` (p95_ms,
fail_ratio), ``steps`` (see ``measure_steps``, annotated by ``find_knee``: ``load``,
``fail_ratio``, ``meets_slo``, ``gain``), ``knee_index`` / ``breach_index`` /
``plateau_index`` / ``generator_bound_index`` (0-based, ``null`` when none),
``capacity_rps`` (the knee's throughput), ``capacity_is_lower_bound`` (no step the pods
limited broke the SLO), ``limited_by`` (``slo``, ``load_generator``, ``max_load`` or
``null``), ``capacity_per_pod`` / ``capacity_per_node``, ``saturation_rps`` /
``saturation_index`` (the most any step delivered), ``generator_cpu_max``, ``pods``,
``nodes``, ``target_rps``, ``headroom``, ``pods_needed``, ``nodes_needed``,
``pods_needed_is_upper_bound``, ``headline`` and ``reasoning`` (the recommendation in
words), ``lab`` (ground truth when the command started the lab: pods, pod_concurrency,
pod_service_ms, true_capacity_rps, saturation_vs_truth) and ``notes``.

The load generator is checked, not assumed: each step carries the CPU each Locust process
used over the step's measured window (run.json ``steps[].cpu``, from the capacity shape). A
step where a process used ``GENERATOR_BOUND`` of a core, or was starved (``is_starved``:
running or waiting for a CPU that share of the time on a machine with no CPU to spare;
Linux only), measured the client, not the pods: it can be neither the knee nor the breach,
nor a plateau, and the result says from which step the generator was the limit.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.core.analysis import jain_index
from harness.core.findings import fraction
from harness.core.histogram import SERIES_SHIFT, hist_items, percentiles
from harness.core.text import ms, number, parse_duration, pct, rate, secs
from harness.errors import HarnessError

CAPACITY_SCHEMA = "nodeport-harness/capacity/v1"
MAX_STEPS = 200  # a bounded run: 200 steps of 10 s is already over half an hour
EDGE_SLACK_S = 0.05  # a step edge this close to a whole second counts as on it
MIN_MEASURED_S = 2.0  # seconds a step must keep after its settle time
NOT_PODS = ("unknown", "(other)")  # replies naming no pod / names over the recorder's cap
# A load-generator process this busy (share of one core, or of the window spent running or
# waiting for a CPU when starved) had no time left: the step measured the client, not the
# pods. Locust warns at the same 90 %.
GENERATOR_BOUND = 0.9
# A never-idle process on a machine with less idle CPU than this was starved by others.
STARVED_IDLE_CPUS = 0.5
MIN_CPU_WINDOW_S = 0.5  # CPU samples covering less of a step's window than this say nothing
CLOSED_MODEL = ("closed loop: each user sends its next request when the reply arrives, so a "
                "slower server is offered less load and latency past saturation is "
                "under-reported (coordinated omission); users rise in steps (--step-rps measures "
                "in an open loop)")
OPEN_MODEL = ("open loop (paced users): each step offers a fixed rate spread over users paced "
              "at {pacing}, so the offered load holds while replies take less than that; "
              "beyond it users fall behind and the step is marked as not held")

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
            pacing=secs(self.pacing_s or 0))

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
        raise HarnessError(f"--step-time {options.step_time} leaves under {secs(MIN_MEASURED_S)} "
                           f"to measure after the {secs(settle)} settle time; use at least "
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
        raise HarnessError(f"{names[2]} {number(maximum)} is below the first step's "
                           f"{number(start)}")
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
    (fairness over the known pods), ``pod_window_s`` (how long the pod counts cover), and the
    load generator's figures (see ``generator_figures``): ``generator_cpu``,
    ``generator_cpu_by_process``, ``generator_process``, ``generator_busy``,
    ``generator_machine_idle``, ``generator_starved``, ``generator_window_s``,
    ``generator_bound``.
    """
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
    for index, step in enumerate(steps, 1):
        start, end = step.get("start"), step.get("end")
        row: dict[str, Any] = {"step": index}
        if step.get("rate") is not None:
            row.update(rate=step["rate"], paced_users=step.get("users"),
                       offered_rps=float(step["rate"]))
        else:
            row.update(users=step.get("users"), offered_rps=None)
        row.update(start=start, end=end)
        first, last = measured_window(start, end, settle_s)
        window = range(first, last)
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
        row.update(generator_figures(step.get("cpu")))
        out.append(row)
    return out


def measured_window(start: float | None, end: float | None, settle_s: float) -> tuple[int, int]:
    """The whole epoch seconds [first, last) a step's figures count: from its start plus the
    settle time to its end (first == last: nothing measured)."""
    if start is None or end is None:
        return 0, 0
    # Steps start on whole seconds, a few ms late: that slack is not a lost second.
    first = math.ceil(start + settle_s - EDGE_SLACK_S)
    return first, max(first, math.floor(end + EDGE_SLACK_S))


CPU_COLUMNS = ("cpu_s", "busy_s", "idle_s")  # a sample's cumulative figures after its time


def cpu_over(samples: Sequence[Sequence[float | None]], start: float,
             end: float) -> dict[str, float | None] | None:
    """What one process used between ``start`` and ``end`` (epoch), from its samples
    ``[epoch, cpu_s, busy_s, idle_s, cpus]`` (any order; the first three cumulative, None
    where not measured): ``cpu_s`` (CPU time, every thread), ``busy_s`` (time its event-loop
    thread was running or waiting for a CPU), ``idle_s`` (CPU time its machine left idle,
    all CPUs), ``cpus`` (its machine's CPUs) and ``wall_s`` (the part of the window the
    samples cover). Values between samples are interpolated; None when the samples cover
    less than ``MIN_CPU_WINDOW_S`` of the window."""
    points = sorted([float(x) if x is not None else None
                     for x in (*sample, None, None, None, None)[:5]]
                    for sample in samples if sample and sample[0] is not None)
    points = [p for p in points if p[1] is not None]
    if not points:
        return None
    lo, hi = max(start, points[0][0]), min(end, points[-1][0])
    if hi - lo < MIN_CPU_WINDOW_S:
        return None

    times = [p[0] for p in points]

    def at(t: float, column: int) -> float | None:
        after = points[min(bisect.bisect_left(times, t), len(points) - 1)]
        before = points[max(bisect.bisect_right(times, t) - 1, 0)]
        a, b = before[column], after[column]
        if a is None or b is None:
            return None
        span = after[0] - before[0]
        return a if span <= 0 else a + (b - a) * (t - before[0]) / span

    used: dict[str, float | None] = {}
    for column, name in enumerate(CPU_COLUMNS, 1):
        first, last = at(lo, column), at(hi, column)
        used[name] = max(0.0, last - first) if first is not None and last is not None else None
    used["cpus"] = points[-1][4]
    used["wall_s"] = hi - lo
    return used


def generator_figures(cpu: Mapping[str, Any] | None) -> dict[str, Any]:
    """A step's load-generator figures from run.json's ``steps[].cpu`` (process -> what
    ``cpu_over`` measured): ``generator_cpu_by_process`` (process -> share of one core),
    ``generator_cpu`` (the largest share, 0-1), ``generator_process`` (the process that was
    the limit, else the busiest), its ``generator_busy`` (share of the window its event loop
    was running or waiting for a CPU) and ``generator_machine_idle`` (share of its machine's
    CPU left idle), ``generator_starved`` (a process was never idle while its machine had
    no CPU to spare: ``is_starved``), ``generator_window_s`` (the
    window the figures cover) and ``generator_bound`` (a process used ``GENERATOR_BOUND`` of
    a core, or was starved; None when no CPU was recorded)."""
    figures: dict[str, dict[str, Any]] = {}
    window = None
    for name, used in sorted((cpu or {}).items()):
        wall = (used or {}).get("wall_s")
        if not wall or used.get("cpu_s") is None:
            continue
        window = wall if window is None else min(window, wall)
        share = used["cpu_s"] / wall
        busy = min(1.0, used["busy_s"] / wall) if used.get("busy_s") is not None else None
        cpus = used.get("cpus")
        idle = (min(1.0, used["idle_s"] / (wall * cpus))
                if used.get("idle_s") is not None and cpus else None)
        figures[name] = {"cpu": share, "busy": busy, "idle": idle,
                         "starved": is_starved(share, busy, idle * cpus if idle is not None
                                               else None)}
    if not figures:
        return {"generator_cpu": None, "generator_cpu_by_process": {}, "generator_process": None,
                "generator_busy": None, "generator_machine_idle": None,
                "generator_starved": None, "generator_window_s": None, "generator_bound": None}
    # The process named is the one whose figures say why the step is bound, if one does.
    process = max(figures, key=lambda n: (figures[n]["cpu"] >= GENERATOR_BOUND,
                                          figures[n]["starved"], figures[n]["cpu"], n))
    chosen = figures[process]
    return {
        "generator_cpu": max(f["cpu"] for f in figures.values()),
        "generator_cpu_by_process": {n: f["cpu"] for n, f in figures.items()},
        "generator_process": process,
        "generator_busy": chosen["busy"],
        "generator_machine_idle": chosen["idle"],
        "generator_starved": any(f["starved"] for f in figures.values()),
        "generator_window_s": window,
        "generator_bound": chosen["cpu"] >= GENERATOR_BOUND or chosen["starved"],
    }


def is_starved(cpu: float, busy: float | None, idle_cpus: float | None) -> bool:
    """A process other processes kept from the CPU it wanted: below ``GENERATOR_BOUND`` of a
    core, yet running or waiting for a CPU that share of the time, on a machine with less
    than ``STARVED_IDLE_CPUS`` of a CPU idle. Waiting alone is not enough: a client and a
    server taking turns on one CPU of a machine with a CPU to spare wait for each other, and
    neither is short of CPU."""
    return (busy is not None and idle_cpus is not None and cpu < GENERATOR_BOUND <= busy
            and idle_cpus < STARVED_IDLE_CPUS)


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
    settings = run.get("capacity")
    if not isinstance(settings, Mapping):
        raise HarnessError("run.json has no capacity settings: pass a folder written by "
                           "nodeport-harness capacity")
    steps = measure_steps(spread, run.get("steps") or [], float(settings.get("settle_s", 1.0)))
    pods, nodes = _pods_and_nodes(target or {}, spread)
    slo_p95 = float(settings["slo_p95_ms"])
    fail_ratio = float(settings.get("slo_fail_ratio", 0.01))
    mode = settings.get("mode", "closed")
    plan = plan_capacity(steps, pods=pods, nodes=nodes or None, slo_p95_ms=slo_p95,
                         target_rps=settings.get("target_rps"),
                         headroom=float(settings.get("headroom", 0.3)),
                         max_fail_ratio=fail_ratio, mode=mode)
    rows = plan["steps"]
    peak_index = max(range(len(rows)), key=lambda i: rows[i]["rps"]) if rows else None
    saturation = rows[peak_index]["rps"] if peak_index is not None else None
    cpus = [r["generator_cpu"] for r in rows if r.get("generator_cpu") is not None]
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
            "steps", "knee_index", "breach_index", "plateau_index", "generator_bound_index",
            "capacity_rps", "capacity_is_lower_bound", "limited_by", "capacity_per_pod",
            "capacity_per_node", "pods", "nodes", "target_rps", "headroom", "pods_needed",
            "nodes_needed", "pods_needed_is_upper_bound", "min_gain")},
        "saturation_rps": saturation,
        "saturation_index": peak_index,
        "generator_cpu_max": max(cpus) if cpus else None,
        "lab": _lab_truth(settings.get("lab"), saturation),
        "partial": run.get("partial"),
    }
    result["notes"] = capacity_notes(result)
    result["reasoning"] = _reasoning(plan["reasoning"], result)
    result["headline"] = capacity_headline(result)
    return result


def _pods_and_nodes(target: Mapping[str, Any], spread: Mapping[str, Any]) -> tuple[int, int]:
    """Ready pods behind the Service and the nodes they run on (what capacity divides by)."""
    ready = [e for e in target.get("endpoints", ()) if e.get("ready", True) and e.get("pod")]
    if ready:
        return len(ready), len({e.get("node") for e in ready if e.get("node")})
    seen = {p: n for p, n in (spread.get("pod_nodes") or {}).items() if p not in NOT_PODS}
    return len(seen), len({n for n in seen.values() if n})


def _lab_truth(lab: Any, saturation: float | None) -> dict[str, Any] | None:
    if not isinstance(lab, Mapping) or lab.get("pod_service_ms") is None or not lab.get(
            "pod_concurrency"):
        return None
    if not lab["pod_service_ms"]:  # pods without a service time: no capacity to compare with
        return {**lab, "true_capacity_rps": None, "saturation_vs_truth": None}
    truth = lab["pods"] * lab["pod_concurrency"] * 1000.0 / lab["pod_service_ms"]
    return {**lab, "true_capacity_rps": truth,
            "saturation_vs_truth": saturation / truth if saturation is not None else None}


def capacity_notes(result: Mapping[str, Any]) -> list[str]:
    """Caveats the reader needs next to the figures. The load model (and the closed loop's
    coordinated omission) is not among them: ``load_model`` says it, once."""
    notes = []
    rows = result["steps"]
    if result["mode"] == "open":
        dropped = [r["step"] for r in rows if r.get("held") is False]
        if dropped:
            bound = [r["step"] for r in rows if r.get("held") is False and r.get(
                "generator_bound")]
            why = ("the load generator was the limit in steps " + _steps(bound)
                   if bound == dropped else
                   "replies took longer than the pacing interval" + (
                       f" (and the load generator was the limit in steps {_steps(bound)})"
                       if bound else ""))
            notes.append(f"Open loop: steps {_steps(dropped)} did not achieve 90 % of the "
                         f"offered rate: {why}.")
    if result.get("connection") == "keepalive":
        notes.append("Keep-alive connections: kube-proxy picks a pod per connection, so pods "
                     "can be loaded unevenly; --connection close spreads each request.")
    uneven = [r["step"] for r in rows if r.get("jain") is not None and r["jain"] < 0.9]
    if uneven:
        notes.append(f"Uneven pod shares (Jain's index < 0.9) in steps {_steps(uneven)}: the "
                     "busiest pod limits capacity first.")
    if result.get("partial"):
        notes.append(f"The run was partial ({result['partial']}): later steps may be missing.")
    return notes


def _steps(numbers: Sequence[int]) -> str:
    return ", ".join(map(str, numbers))


def _reasoning(base: str, result: Mapping[str, Any]) -> str:
    rows = result["steps"]
    parts = [base.rstrip(".") + "."] if base else []
    index = result.get("saturation_index")
    if index is not None and index != result.get("knee_index"):
        peak = rows[index]
        parts.append(f"The most any step delivered was {rate(result['saturation_rps'])} "
                     f"(step {peak['step']}, p95 {ms(peak.get('p95'))}"
                     + (", with the load generator as the limit)." if peak.get(
                         "generator_bound") else ")."))
    lab = result.get("lab")
    if lab and lab.get("saturation_vs_truth") is not None:
        parts.append(
            f"The lab's pods can serve {rate(lab['true_capacity_rps'])} "
            f"({number(lab['pods'])} pods x {number(lab['pod_concurrency'])} at a time / "
            f"{ms(lab['pod_service_ms'])}); the measured peak is "
            f"{pct(lab['saturation_vs_truth'])} of that.")
    elif lab and lab.get("true_capacity_rps") is None:
        parts.append("The lab's pods have no service time, so the lab has no known capacity "
                     "to compare with.")
    parts.append("Measured " + ("in a closed loop (users rise in steps)."
                                if result["mode"] == "closed" else
                                "in an open loop (a fixed rate offered per step)."))
    return " ".join(parts)


def capacity_headline(result: Mapping[str, Any]) -> str:
    """The recommendation in one sentence (the reasoning paragraph follows it): a
    measurement, a lower bound (with what to raise), or why there is none."""
    rows, knee = result["steps"], result["knee_index"]
    if not rows:
        return "No step was recorded."
    bound = result.get("generator_bound_index")
    if knee is None:
        if result.get("breach_index") is None and bound is not None:
            return (f"The load generator, not the pods, was the limit from step "
                    f"{rows[bound]['step']}: nothing about the pods was measured; "
                    f"{GENERATOR_ADVICE} or start with less load.")
        return (f"Not even the first step ({_load(rows[0])}) met the SLO: capacity is below "
                "it.")
    lower = bool(result.get("capacity_is_lower_bound"))
    at_least = "at least " if lower else ""
    text = (f"Capacity at the SLO: {at_least}{rate(result['capacity_rps'])} "
            f"({at_least}{rate(result['capacity_per_pod'])} per pod)")
    needed = None
    if result.get("pods_needed") is not None:
        needed = (f"{number(result['pods_needed'])} pods for {rate(result['target_rps'])} "
                  f"with {pct(result['headroom'])} headroom")
    if not lower:
        return text + (f"; {needed}." if needed else ".")
    if bound is not None:
        text += (f"; the load generator, not the pods, was the limit from step "
                 f"{rows[bound]['step']}: {GENERATOR_ADVICE}.")
    else:
        text += f"; no step broke the SLO: raise {_max_option(result['mode'])}."
    return text + (f" At most {needed}." if needed else "")


def exit_code_for(result: Mapping[str, Any]) -> int:
    """1 when steps ran but none measured a capacity (not even the first met the SLO, or the
    load generator was the limit from the first step), else 0 (a lower bound included)."""
    return 1 if result["steps"] and result["knee_index"] is None else 0


# -- capacity --------------------------------------------------------------------------------

GENERATOR_ADVICE = "add load-generator processes (--processes N, or more machines)"


def find_knee(
    steps: Sequence[Mapping[str, Any]],
    slo_p95_ms: float,
    max_fail_ratio: float = 0.01,
    min_gain: float = 0.05,
) -> dict[str, Any]:
    """Annotate step-load results (in increasing load) and find where capacity ends.

    ``generator_bound_index``: the first step where the load generator was the limit
    (``generator_bound``, or derived from ``generator_cpu`` / ``generator_busy``); that step
    and the later ones measured the client, so only the steps before it count for the rest.
    ``knee_index``: the last step of the first run of counted steps meeting the SLO (p95 and
    failure ratio), so a lucky step after a breach does not count. ``breach_index``: the
    counted step after the knee (or the first one), when it broke the SLO.
    ``capacity_is_lower_bound``: there is a knee but no counted step broke the SLO (the plan
    ended, or the load generator ran out first); ``limited_by`` says which: ``slo``,
    ``load_generator`` or ``max_load``. ``plateau_index``: among the counted steps, the first
    from which no step delivered ``min_gain`` more than the best step before it (a dip that
    recovers is not a plateau).
    """
    annotated = []
    previous_rps = None
    for number_, step in enumerate(steps, 1):
        row = dict(step)
        row.setdefault("step", number_)  # 1-based, as the sentences name steps
        duration = row.get("duration_s") or 0
        if row.get("rps") is None:
            row["rps"] = row["requests"] / duration if duration else 0.0
        row["load"] = row.get("users", row.get("rate"))
        row["fail_ratio"] = fraction(row.get("failures", 0), row.get("requests", 0)) or 0.0
        row["meets_slo"] = (row.get("p95") is not None and row["p95"] <= slo_p95_ms
                            and row["fail_ratio"] <= max_fail_ratio)
        row["gain"] = (row["rps"] / previous_rps - 1) if previous_rps else None
        if row.get("generator_bound") is None and row.get("generator_cpu") is not None:
            row["generator_bound"] = (row["generator_cpu"] >= GENERATOR_BOUND
                                      or bool(row.get("generator_starved")))
        previous_rps = row["rps"]
        annotated.append(row)
    bound = next((i for i, r in enumerate(annotated) if r.get("generator_bound")), None)
    counted = annotated if bound is None else annotated[:bound]
    knee = None
    for index, row in enumerate(counted):
        if not row["meets_slo"]:
            break
        knee = index
    breach = (knee + 1 if knee is not None and knee + 1 < len(counted)
              else 0 if knee is None and counted else None)
    limited_by = ("slo" if breach is not None else "load_generator" if bound is not None
                  else "max_load" if annotated else None)
    return {
        "steps": annotated,
        "slo_p95_ms": slo_p95_ms,
        "max_fail_ratio": max_fail_ratio,
        "min_gain": min_gain,
        "knee_index": knee,
        "knee": annotated[knee] if knee is not None else None,
        "breach_index": breach,
        "plateau_index": _plateau(counted, min_gain),
        "generator_bound_index": bound,
        "capacity_is_lower_bound": knee is not None and breach is None,
        "limited_by": limited_by,
        "peak_rps": max((r["rps"] for r in annotated), default=None),
        "capacity_rps": annotated[knee]["rps"] if knee is not None else None,
    }


def _plateau(rows: Sequence[Mapping[str, Any]], min_gain: float) -> int | None:
    """The first step from which no step delivered ``min_gain`` more than the best step
    before it (None while the last step still did): a dip that recovers is not a plateau,
    nor is a noisy step a new high."""
    best = None
    growing = 0
    for index, row in enumerate(rows):
        if best is None or not best or row["rps"] >= best * (1 + min_gain):
            growing = index
        best = row["rps"] if best is None else max(best, row["rps"])
    return growing + 1 if growing + 1 < len(rows) else None


def plan_capacity(
    steps: Sequence[Mapping[str, Any]],
    *,
    pods: int,
    slo_p95_ms: float,
    nodes: int | None = None,
    target_rps: float | None = None,
    headroom: float = 0.3,
    max_fail_ratio: float = 0.01,
    min_gain: float = 0.05,
    mode: str | None = None,
) -> dict[str, Any]:
    """Capacity per pod and per node at the knee, and pods needed for ``target_rps`` when
    each pod may run at most ``1 - headroom`` of its measured capacity; ``reasoning`` tells
    it as one account (a lower bound says "at least", its pods needed "at most")."""
    if not 0 <= headroom < 1:
        raise HarnessError(f"headroom {headroom} must be in [0, 1): e.g. 0.3 keeps 30 % spare")
    result = find_knee(steps, slo_p95_ms, max_fail_ratio, min_gain)
    capacity = result["capacity_rps"]
    per_pod = capacity / pods if capacity is not None and pods else None
    per_node = capacity / nodes if capacity is not None and nodes else None
    result.update({"pods": pods, "nodes": nodes, "target_rps": target_rps,
                   "headroom": headroom, "capacity_per_pod": per_pod,
                   "capacity_per_node": per_node, "pods_needed": None, "nodes_needed": None,
                   "pods_needed_is_upper_bound": None})
    if target_rps is not None and per_pod:
        result["pods_needed"] = math.ceil(target_rps / (per_pod * (1 - headroom)) - 1e-9)
        result["pods_needed_is_upper_bound"] = result["capacity_is_lower_bound"]
        if nodes:
            result["nodes_needed"] = math.ceil(result["pods_needed"] / (pods / nodes) - 1e-9)
    if mode is None:
        mode = "closed" if any(r.get("users") is not None for r in result["steps"]) else "open"
    result["reasoning"] = _account(result, mode)
    return result


def _account(result: Mapping[str, Any], mode: str) -> str:
    """The reasoning: what limited the measurement, the capacity it gives, where throughput
    stopped growing (in the same terms as the knee), the pods needed and the load generator's
    check, in that order and with one formatter for every figure."""
    rows = result["steps"]
    if not rows:
        return "No steps were recorded, so there is no capacity to report."
    slo_p95, max_fail = result["slo_p95_ms"], result["max_fail_ratio"]
    slo = f"p95 ≤ {ms(slo_p95)} and failures ≤ {pct(max_fail)}"
    knee, breach = result["knee_index"], result["breach_index"]
    bound = result["generator_bound_index"]
    if knee is None:
        if breach is not None:
            first = rows[0]
            return (f"Even the first step ({_load(first)}, {rate(first['rps'])}) broke the SLO "
                    f"({_why(first, slo_p95, max_fail)}): capacity is below it; start the "
                    "steps lower.")
        return (f"The load generator, not the pods, was the limit from step {rows[bound]['step']}"
                f" ({_generator_why(rows[bound])}): no step measured the pods; "
                f"{GENERATOR_ADVICE} or start with less load.")
    top = rows[knee]
    lower = result["capacity_is_lower_bound"]
    at_least = "at least " if lower else ""
    if breach is not None:
        parts = [f"The highest step meeting the SLO ({slo}) ran {_load(top)} at "
                 f"{rate(top['rps'])} with p95 {ms(top.get('p95'))}; the next "
                 f"({_load(rows[breach])}) broke it ({_why(rows[breach], slo_p95, max_fail)})"]
    elif bound is not None:
        parts = [f"The load generator, not the pods, was the limit from step "
                 f"{rows[bound]['step']} ({_load(rows[bound])}: "
                 f"{_generator_why(rows[bound])}), so the steps from there measured the client",
                 f"No step before it broke the SLO ({slo}): capacity is at least "
                 f"{rate(top['rps'])}, what step {top['step']} ({_load(top)}) delivered with p95 "
                 f"{ms(top.get('p95'))}; {GENERATOR_ADVICE} to find the limit"]
    else:
        parts = [f"No step broke the SLO ({slo}): capacity is at least {rate(top['rps'])}, "
                 f"what the highest step ({_load(top)}) delivered with p95 "
                 f"{ms(top.get('p95'))}; raise {_max_option(mode)} to find the limit"]
    pods, nodes = result["pods"], result["nodes"]
    parts.append(f"With {number(pods)} pods that is {at_least}"
                 f"{rate(result['capacity_per_pod'])} per pod"
                 + (f" ({at_least}{rate(result['capacity_per_node'])} per node over "
                    f"{number(nodes)} nodes)" if nodes else ""))
    plateau = _plateau_sentence(result)
    if plateau:
        parts.append(plateau)
    if result["pods_needed"] is not None:
        usable = result["capacity_per_pod"] * (1 - result["headroom"])
        at_most = "at most " if lower else ""
        text = (f"For {rate(result['target_rps'])} with {pct(result['headroom'])} headroom "
                f"each pod may take {at_least}{rate(usable)}: {number(result['target_rps'])} / "
                f"{number(usable)} = {number(result['target_rps'] / usable)}, so {at_most}"
                f"{number(result['pods_needed'])} pods")
        if result["nodes_needed"] is not None:
            text += (f" ({at_most}{number(result['nodes_needed'])} nodes at today's "
                     f"{number(pods / nodes)} pods per node)")
        parts.append(text)
    check = _generator_check(result)
    if check:
        parts.append(check)
    return ". ".join(parts) + "."


def _plateau_sentence(result: Mapping[str, Any]) -> str | None:
    """Where throughput stopped growing, told against the knee (never a contradiction of
    it): before the knee it is the level the capacity sits on; after it, latency set the
    limit first."""
    rows, knee, breach = result["steps"], result["knee_index"], result["breach_index"]
    bound = result["generator_bound_index"]
    counted = rows if bound is None else rows[:bound]
    plateau = result["plateau_index"]
    if plateau is None:
        last = counted[-1] if len(counted) > 1 else None
        if last is None or last["gain"] is None:
            return None
        return (f"Throughput was still growing at step {last['step']} ({_signed(last['gain'])} "
                f"over step {counted[-2]['step']})")
    level = max(range(plateau), key=lambda i: (rows[i]["rps"], -i))
    text = (f"Throughput stopped growing at {rate(rows[level]['rps'])} (step "
            f"{rows[level]['step']}): no step from step {rows[plateau]['step']} on delivered "
            f"{pct(result['min_gain'])} more than that")
    if knee is None:
        return text
    if level == knee:
        return text + "; that step is the knee"
    if plateau <= knee:
        return (text + f"; p95 stayed within the SLO up to step {rows[knee]['step']}, so the "
                "capacity is that throughput level, not a latency limit")
    return text + (f"; the SLO broke first, at step {rows[breach]['step']}: latency, not "
                   "throughput, set the capacity" if breach is not None else "")


def _generator_check(result: Mapping[str, Any]) -> str | None:
    """What the load generator's CPU says about the steps that count (None when the account
    already began with it)."""
    rows, bound = result["steps"], result["generator_bound_index"]
    if bound is not None:
        if result["breach_index"] is None:
            return None
        return (f"From step {rows[bound]['step']} on the load generator, not the pods, was the "
                f"limit ({_generator_why(rows[bound])}): those steps measured the client")
    measured = [r for r in rows if r.get("generator_cpu") is not None]
    if not measured:
        return ("The load generator's CPU was not recorded, so this assumes the pods, not the "
                "load generator, were the limit")
    peak = max(measured, key=lambda r: r["generator_cpu"])
    return (f"The load generator was not the limit: its busiest process peaked at "
            f"{pct(peak['generator_cpu'])} of a core (step {peak['step']}), below "
            f"{pct(GENERATOR_BOUND)}")


def _generator_why(step: Mapping[str, Any]) -> str:
    name, cpu, busy = (step.get("generator_process"), step.get("generator_cpu"),
                       step.get("generator_busy"))
    who = f"its busiest process ({name})" if name else "its busiest process"
    if (cpu is None or cpu < GENERATOR_BOUND) and step.get("generator_starved"):
        # Starved rather than busy: other processes on its machine took the rest.
        return (f"{who} was running or waiting for a CPU {pct(busy)} of the time, using "
                f"{pct(cpu)} of a core, while its machine had "
                f"{pct(step.get('generator_machine_idle'))} of its CPU idle")
    return f"{who} used {pct(cpu)} of a core" if cpu is not None else f"{who} had no CPU left"


def _signed(gain: float) -> str:
    return ("+" if gain >= 0 else "") + pct(gain)


def _max_option(mode: str) -> str:
    return "--max-users" if mode == "closed" else "--max-rps"


def _load(step: Mapping[str, Any]) -> str:
    if step.get("users") is not None:
        return f"{number(step['users'])} users"
    if step.get("rate") is not None:
        return f"{rate(step['rate'])} offered"
    return "this step"


def _why(step: Mapping[str, Any], slo_p95_ms: float, max_fail_ratio: float) -> str:
    reasons = []
    if step.get("p95") is None or step["p95"] > slo_p95_ms:
        reasons.append(f"p95 {ms(step.get('p95'))} > {ms(slo_p95_ms)}")
    if step["fail_ratio"] > max_fail_ratio:
        reasons.append(f"failures {pct(step['fail_ratio'])} > {pct(max_fail_ratio)}")
    return " and ".join(reasons)
