"""Pods that appeared during a run, and whether they got the traffic kube-proxy's rules give
them from then on.

A pod that joins the endpoints mid-run (a restarted pod's replacement, a scale-up, a pod that
became ready again) only gets *new* connections: with keep-alive, the connections opened
before stay where they are, so it can serve next to nothing for the rest of the run
(kubernetes/kubernetes#126378). From the data alone: run.json's ``changes`` say when a pod
joined (the watch on the EndpointSlices), or a pod that served but was not among the
discovered endpoints appeared when it first served; the per-second series say what it
served from then on, per entry point; the spread model (``spread_model.predict``) says what
it should have served, second by second, over the endpoints of each second (the discovered
ones, changed by the changes and the pod faults recorded up to it).

Pure: from spread.json's series, target.json, the run's start, its faults and changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.spread_model import predict

NOT_PODS = ("unknown", "(other)")
GONE = ("left", "removed")  # changes after which a pod is no endpoint
GONE_FAULTS = ("kill", "killed", "delete", "restart", "restarted")  # pod faults that end it

Row = dict[str, Any]


def pod_arrivals(
    spread: Mapping[str, Any],
    target: Mapping[str, Any],
    start: float | None,
    faults: Sequence[Mapping[str, Any]] = (),
    changes: Sequence[Mapping[str, Any]] = (),
) -> list[Row]:
    """One row per pod that appeared during the run, in order of appearance: ``pod``,
    ``node``, ``joined_s`` (seconds from the start), ``source`` ("joined": the watch saw
    it join the endpoints; "served": first seen serving, not among the discovered
    endpoints), ``seconds`` (whole seconds after it appeared), ``successes`` (it served
    then), ``total`` (all successes then), ``share``, ``expected`` (successes the rules
    give it then) and ``expected_share``. Empty without a start, series or endpoints."""
    series = spread.get("series") or {}
    if start is None or not series:
        return []
    endpoints = {e["pod"]: e.get("node") for e in target.get("endpoints", ())
                 if e.get("pod") and e.get("ready", True)}
    if not endpoints and not changes:
        return []  # nothing known of the endpoints: the model predicts nothing
    pod_nodes = {**(spread.get("pod_nodes") or {}), **endpoints}
    events: list[tuple[float, str, str, str | None]] = []  # (t, "in" | "out", pod, node)
    arrived: dict[str, tuple[float, str]] = {}
    for change in changes:
        t, name = change.get("t"), change.get("name")
        if change.get("kind") != "endpoint" or not isinstance(t, int | float) or not name:
            continue
        if change.get("change") == "joined":
            node = change.get("node") or pod_nodes.get(name)
            pod_nodes.setdefault(name, node)
            events.append((float(t), "in", name, node))
            arrived.setdefault(name, (float(t), "joined"))
        elif change.get("change") in GONE:
            events.append((float(t), "out", name, None))
    for fault in faults:
        t = fault.get("t")
        if fault.get("kind") == "pod" and fault.get("action") in GONE_FAULTS and isinstance(
                t, int | float):
            events.append((float(t), "out", str(fault.get("name")), None))
    served = _served(series)
    seconds = sorted({int(row["t"]) for rows in series.values() for row in rows})
    for pod, by_second in served.items():
        # Serving from the first second on, it was there all along (a stale target).
        if pod in endpoints or pod in arrived or min(by_second) <= seconds[0]:
            continue
        first = min(by_second) - start  # first seen serving: it appeared by then
        events.append((first, "in", pod, pod_nodes.get(pod)))
        arrived[pod] = (first, "served")
    if not arrived:
        return []
    events.sort(key=lambda e: e[0])
    order = sorted(arrived, key=lambda pod: (arrived[pod][0], pod))
    first = {pod: math.ceil(start + arrived[pod][0]) for pod in order}
    figures = {pod: [0, 0, 0.0, 0] for pod in order}  # successes, total, expected, seconds
    # Entry point -> second -> successes.
    ok = {entry: {int(row["t"]): int(row.get("requests", 0)) - int(row.get("failures", 0))
                  for row in rows} for entry, rows in series.items()}
    members = dict(endpoints)  # the ready endpoints of the second: pod -> node
    probabilities: dict[str, dict[str, float]] | None = None
    done = 0  # events applied
    for second in seconds:
        # The endpoints at mid-second: the discovered ones, changed by every event so far.
        while done < len(events) and events[done][0] <= second + 0.5 - start:
            _, what, pod, node = events[done]
            if what == "in":
                members[pod] = node
            else:
                members.pop(pod, None)
            done += 1
            probabilities = None
        if probabilities is None:
            probabilities = _choices(target, list(series), members)
        counts = {entry: by_second.get(second, 0) for entry, by_second in ok.items()}
        total = sum(counts.values())
        for pod in order:
            if second < first[pod]:  # only the whole seconds after it appeared
                continue
            row = figures[pod]
            row[0] += served.get(pod, {}).get(second, 0)
            row[1] += total
            row[2] += sum(count * probabilities.get(entry, {}).get(pod, 0.0)
                          for entry, count in counts.items())
            row[3] += 1
    out = []
    for pod in order:
        successes, total, expected, count = figures[pod]
        joined, source = arrived[pod]
        out.append({
            "pod": pod,
            "node": pod_nodes.get(pod),
            "joined_s": round(joined, 1),
            "source": source,
            "seconds": count,
            "successes": successes,
            "total": total,
            "share": successes / total if total else None,
            "expected": expected,
            "expected_share": expected / total if total else None,
        })
    return out


def _served(series: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[int, int]]:
    """Pod -> epoch second -> successes, over every entry point."""
    out: dict[str, dict[int, int]] = {}
    for rows in series.values():
        for row in rows:
            for pod, count in (row.get("pods") or {}).items():
                if pod not in NOT_PODS and count:
                    per = out.setdefault(pod, {})
                    per[int(row["t"])] = per.get(int(row["t"]), 0) + int(count)
    return out


def _choices(target: Mapping[str, Any], entries: list[str],
             members: Mapping[str, str | None]) -> dict[str, dict[str, float]]:
    """Entry point -> pod -> probability of one connection, over these ready endpoints."""
    over = {**target, "endpoints": [{"pod": pod, "node": node, "ready": True}
                                    for pod, node in sorted(members.items())]}
    return predict(over, {entry: 1 for entry in entries}, None,
                   target.get("proxy_mode"))["entries"]
