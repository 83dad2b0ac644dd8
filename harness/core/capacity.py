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
CLOSED_MODEL = ("closed loop: each user sends its next request when the reply arrives, so a "
                "slower server is offered less load and latency past saturation is "
                "under-reported (coordinated omission); users rise in steps")
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
    (fairness over the known pods), ``pod_window_s`` (how long the pod counts cover).
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
        parts.append(f"The most any step delivered was {rate(result['saturation_rps'])} "
                     f"(step {peak['step']}, p95 {ms(peak.get('p95'))}).")
    lab = result.get("lab")
    if lab and lab.get("saturation_vs_truth") is not None:
        parts.append(
            f"The lab's pods can serve {rate(lab['true_capacity_rps'])} "
            f"({number(lab['pods'])} pods x {number(lab['pod_concurrency'])} at a time / "
            f"{ms(lab['pod_service_ms'])}); the measured peak is "
            f"{pct(lab['saturation_vs_truth'])} of that.")
    parts.append("Measured " + ("in a closed loop (users rise in steps)."
                                if result["mode"] == "closed" else
                                "in an open loop (a fixed rate offered per step)."))
    return " ".join(parts)


def exit_code_for(result: Mapping[str, Any]) -> int:
    """1 when steps ran but not even the first met the SLO (capacity is below the plan),
    else 0."""
    return 1 if result["steps"] and result["knee_index"] is None else 0


# -- capacity --------------------------------------------------------------------------------

def find_knee(
    steps: Sequence[Mapping[str, Any]],
    slo_p95_ms: float,
    max_fail_ratio: float = 0.01,
    min_gain: float = 0.05,
) -> dict[str, Any]:
    """Annotate step-load results (in increasing load) and find where capacity ends.

    ``knee_index``: the last step of the first run of steps meeting the SLO (p95 and failure
    ratio), so a lucky step after a breach does not count. ``plateau_index``: the first step
    whose throughput grew less than ``min_gain`` over the previous one.
    """
    annotated = []
    previous_rps = None
    for step in steps:
        row = dict(step)
        duration = row.get("duration_s") or 0
        if row.get("rps") is None:
            row["rps"] = row["requests"] / duration if duration else 0.0
        row["load"] = row.get("users", row.get("rate"))
        row["fail_ratio"] = fraction(row.get("failures", 0), row.get("requests", 0)) or 0.0
        row["meets_slo"] = (row.get("p95") is not None and row["p95"] <= slo_p95_ms
                            and row["fail_ratio"] <= max_fail_ratio)
        row["gain"] = (row["rps"] / previous_rps - 1) if previous_rps else None
        previous_rps = row["rps"]
        annotated.append(row)
    knee = None
    for index, row in enumerate(annotated):
        if not row["meets_slo"]:
            break
        knee = index
    plateau = next((i for i, r in enumerate(annotated)
                    if r["gain"] is not None and r["gain"] < min_gain), None)
    return {
        "steps": annotated,
        "slo_p95_ms": slo_p95_ms,
        "max_fail_ratio": max_fail_ratio,
        "min_gain": min_gain,
        "knee_index": knee,
        "knee": annotated[knee] if knee is not None else None,
        "breach_index": (knee + 1 if knee is not None and knee + 1 < len(annotated)
                         else 0 if knee is None and annotated else None),
        "plateau_index": plateau,
        "peak_rps": max((r["rps"] for r in annotated), default=None),
        "capacity_rps": annotated[knee]["rps"] if knee is not None else None,
    }


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
) -> dict[str, Any]:
    """Capacity per pod and per node at the knee, and pods needed for ``target_rps`` when
    each pod may run at most ``1 - headroom`` of its measured capacity."""
    if not 0 <= headroom < 1:
        raise HarnessError(f"headroom {headroom} must be in [0, 1): e.g. 0.3 keeps 30 % spare")
    result = find_knee(steps, slo_p95_ms, max_fail_ratio, min_gain)
    slo = f"p95 ≤ {ms(slo_p95_ms)} and failures ≤ {pct(max_fail_ratio)}"
    knee, capacity = result["knee"], result["capacity_rps"]
    per_pod = capacity / pods if capacity is not None and pods else None
    per_node = capacity / nodes if capacity is not None and nodes else None
    result.update({"pods": pods, "nodes": nodes, "target_rps": target_rps,
                   "headroom": headroom, "capacity_per_pod": per_pod,
                   "capacity_per_node": per_node, "pods_needed": None, "nodes_needed": None})
    steps_out = result["steps"]
    if not steps_out:
        result["reasoning"] = "No steps were recorded, so there is no capacity to report."
        return result
    if knee is None:
        first = steps_out[0]
        result["reasoning"] = (
            f"Even the first step ({_load(first)}, {rate(first['rps'])}) broke the SLO "
            f"({_why(first, slo_p95_ms, max_fail_ratio)}): capacity is below it; start the "
            "steps lower.")
        return result
    parts = [f"The highest step meeting the SLO ({slo}) ran {_load(knee)} at "
             f"{rate(knee['rps'])} with p95 {ms(knee.get('p95'))}"]
    breach = result["breach_index"]
    if breach is not None:
        parts[-1] += (f"; the next ({_load(steps_out[breach])}) broke it "
                      f"({_why(steps_out[breach], slo_p95_ms, max_fail_ratio)})")
    else:
        parts[-1] += "; no step broke it, so the true limit is higher than measured"
    parts.append(f"With {number(pods)} pods that is {rate(per_pod)} per pod"
                 + (f" ({rate(per_node)} per node over {number(nodes)} nodes)" if nodes else ""))
    plateau = result["plateau_index"]
    if plateau is not None:
        gain = steps_out[plateau]["gain"]
        parts.append(f"Throughput stopped growing at {_load(steps_out[plateau])} "
                     f"({'+' if gain >= 0 else ''}{pct(gain)} over the previous step)")
    if target_rps is not None and per_pod:
        usable = per_pod * (1 - headroom)
        needed = math.ceil(target_rps / usable - 1e-9)
        result["pods_needed"] = needed
        text = (f"For {rate(target_rps)} with {pct(headroom)} headroom each pod may take "
                f"{rate(usable)}: {number(target_rps)} / {number(usable)} = "
                f"{number(target_rps / usable)}, so {number(needed)} pods")
        if nodes:
            per_node_pods = pods / nodes
            result["nodes_needed"] = math.ceil(needed / per_node_pods - 1e-9)
            text += (f" ({number(result['nodes_needed'])} nodes at today's "
                     f"{number(per_node_pods)} pods per node)")
        parts.append(text)
    parts.append("This assumes the pods, not the load generator, were the limit")
    result["reasoning"] = ". ".join(parts) + "."
    return result


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
