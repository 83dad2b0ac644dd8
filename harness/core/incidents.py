"""Incidents read from the data alone: when requests through an entry point (a node or the
LoadBalancer) began to fail, or a pod stopped being served, and when that ended.

Nobody has to announce a fault: the per-second series of spread.json say it. An entry point
is failing in a second when it had failures and no success, or at least half its requests
failed; seconds in which it completed nothing (users waiting on time-outs) continue an
outage. A failure is reported when it ends, so an outage's start is estimated from the
first failing second's failure latencies (a 5 s time-out reported at 12.4 s was sent at
7.4 s), never before the entry point's last success. A pod stopped being served when it
got nothing for a stretch in which its share of the seconds before predicts at least
``MIN_EXPECTED`` successes (Poisson: a chance below 1e-8 of seeing none by luck). Each
incident is matched to the cluster changes and faults recorded near its start.

Pure: from spread.json's series, the run's start and run.json's faults and changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.histogram import SERIES_SHIFT, percentiles

MIN_EXPECTED = 20.0  # successes a pod's share predicts over a silent stretch
MIN_FAILURES = 3  # an entry incident needs at least this many failed requests
BASELINE_S = 10  # seconds before an incident that give the "before" figures
MATCH_BEFORE_S, MATCH_AFTER_S = 3.0, 3.0  # a change this close to a start may be its cause
NOT_PODS = ("unknown", "(other)")

Row = dict[str, Any]


def detect_incidents(
    spread: Mapping[str, Any],
    start: float | None,
    node_names: Sequence[str] = (),
    pod_nodes: Mapping[str, str | None] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    changes: Sequence[Mapping[str, Any]] = (),
) -> list[Row]:
    """Every incident the series show, in order of start: ``scope`` (node | lb | pod),
    ``name``, ``start_s`` / ``end_s`` (seconds from the run's start; ``end_s`` None: to the
    end), ``kinds`` (failures by kind during it), ``requests`` / ``failures`` (all entry
    points, during it), ``failed_share`` (of those requests), ``scope_failed_share`` (of the
    entry point's own requests; None for a pod), ``rps_before`` / ``rps_during`` (all
    requests per second), ``availability`` (entry point -> {before, during}: successes per
    request), ``caused_by`` (texts of the faults and changes near its start)."""
    series = spread.get("series") or {}
    seconds = sorted({int(row["t"]) for rows in series.values() for row in rows})
    if not seconds or start is None:
        return []
    grid = _Grid(series, seconds)
    nodes = set(node_names)
    incidents = []
    for entry in series:
        scope = "node" if entry in nodes or not nodes and entry != "lb" else "lb"
        for begin, end, begin_estimate in _entry_outages(grid, entry):
            incidents.append(_incident(grid, scope, entry, begin, end, begin_estimate, start))
    for pod, begin, end, share in _pod_silences(grid):
        incident = _incident(grid, "pod", pod, begin, end, float(begin), start)
        incident["share_before"] = share  # of the successes in the seconds before
        incidents.append(incident)
    pod_nodes = dict(pod_nodes or {})
    for incident in incidents:
        incident["caused_by"] = _causes(incident, faults, changes, pod_nodes)
    return sorted(incidents, key=lambda i: (i["start_s"], i["scope"], i["name"]))


class _Grid:
    """The series as per-second counts, every second of the run present."""

    def __init__(self, series: Mapping[str, Sequence[Mapping[str, Any]]], seconds: list[int]):
        self.first, self.last = seconds[0], seconds[-1]
        self.span = range(self.first, self.last + 1)
        self.entries: dict[str, dict[int, Mapping[str, Any]]] = {
            name: {int(row["t"]): row for row in rows} for name, rows in series.items()}
        self.requests = {t: 0 for t in self.span}
        self.failures = {t: 0 for t in self.span}
        self.pods: dict[str, dict[int, int]] = {}
        self.successes = {t: 0 for t in self.span}
        for rows in self.entries.values():
            for t, row in rows.items():
                self.requests[t] += int(row.get("requests", 0))
                self.failures[t] += int(row.get("failures", 0))
                self.successes[t] += int(row.get("requests", 0)) - int(row.get("failures", 0))
                for pod, count in (row.get("pods") or {}).items():
                    if pod not in NOT_PODS:
                        per = self.pods.setdefault(pod, {})
                        per[t] = per.get(t, 0) + int(count)

    def row(self, entry: str, t: int) -> Mapping[str, Any]:
        return self.entries[entry].get(t, {})


def _entry_outages(grid: _Grid, entry: str) -> list[tuple[int, int | None, float]]:
    """(first failing second, first healthy second after it or None, estimated start)."""
    out: list[tuple[int, int | None, float]] = []
    t = grid.first
    last_success: int | None = None
    while t <= grid.last:
        row = grid.row(entry, t)
        requests, failures = int(row.get("requests", 0)), int(row.get("failures", 0))
        if not _failing(requests, failures):
            if requests > failures:
                last_success = t
            t += 1
            continue
        begin, failed = t, 0
        end = None
        while t <= grid.last:
            row = grid.row(entry, t)
            requests, failures = int(row.get("requests", 0)), int(row.get("failures", 0))
            if requests > failures and not _failing(requests, failures):
                end = t
                break
            failed += failures
            t += 1
        if failed >= MIN_FAILURES:
            out.append((begin, end, _estimate_start(grid.row(entry, begin), begin,
                                                    last_success)))
        if end is not None:
            last_success = end
            t = end + 1
    return out


def _failing(requests: int, failures: int) -> bool:
    return failures > 0 and (failures == requests or failures * 2 >= requests)


def _estimate_start(row: Mapping[str, Any], second: int, last_success: int | None) -> float:
    """When the requests that failed in ``second`` were sent: mid-second minus their median
    latency, and not before the last second with a success (it was still answering)."""
    (median,) = percentiles(row.get("failure_latency"), (0.5,), SERIES_SHIFT)
    estimate = second + 0.5 - (median or 0.0) / 1000.0
    floor = float(last_success) if last_success is not None else -math.inf
    return min(float(second) + 0.5, max(estimate, floor))


def _pod_silences(grid: _Grid) -> list[tuple[str, int, int | None, float]]:
    """(pod, first silent second, first second it served again or None, its share before)
    where its share of
    the seconds before predicts at least MIN_EXPECTED successes over the silence. The first
    and last seconds are partial (ramp-up, the stop) and judge nothing."""
    inner = range(grid.first + 1, grid.last)
    out = []
    for pod, served in grid.pods.items():
        t = inner.start
        while t < inner.stop:
            if served.get(t, 0):
                t += 1
                continue
            begin = t
            while t < inner.stop and not served.get(t, 0):
                t += 1
            end = t if t < inner.stop else (t if served.get(t, 0) else None)
            base = range(max(inner.start, begin - BASELINE_S), begin)
            base_total = sum(grid.successes[s] for s in base)
            share = sum(served.get(s, 0) for s in base) / base_total if base_total else 0.0
            expected = share * sum(grid.successes[s] for s in range(begin, t))
            if expected >= MIN_EXPECTED:
                out.append((pod, begin, end, share))
    return out


def _incident(grid: _Grid, scope: str, name: str, failing: int, end: int | None,
              begin_estimate: float, start: float) -> Row:
    begin_estimate = max(begin_estimate, start)  # an outage from the start began with it
    # The outage's seconds run from its estimated start (users were already waiting on the
    # requests that failed later), not from the second the first failure was reported; the
    # second it began in is partly before, partly during, and counts for neither.
    begin = max(grid.first, min(failing, math.ceil(begin_estimate)))
    stop = grid.last + 1 if end is None else end
    during = range(begin, stop)
    base = range(max(grid.first + 1, math.floor(begin_estimate) - BASELINE_S),
                 math.floor(begin_estimate))
    kinds: dict[str, int] = {}
    # A pod's outage shows as the failures of the seconds around its start (connections to
    # it reset); an entry point's as its own failures.
    window = range(max(grid.first, begin - 1), min(stop, begin + 2)) if scope == "pod" else during
    for entry in grid.entries:
        if scope != "pod" and entry != name:
            continue
        for t in window:
            for kind, count in (grid.row(entry, t).get("kinds") or {}).items():
                kinds[kind] = kinds.get(kind, 0) + int(count)
    requests = sum(grid.requests[t] for t in during)
    failures = sum(grid.failures[t] for t in during)
    own_requests = own_failures = None
    if scope != "pod":
        own_requests = sum(int(grid.row(name, t).get("requests", 0)) for t in during)
        own_failures = sum(int(grid.row(name, t).get("failures", 0)) for t in during)
    # Rates over whole seconds: the run's last second is cut short by the stop.
    full = [t for t in during if t != grid.last]
    return {
        "scope": scope,
        "name": name,
        "start_s": round(begin_estimate - start, 1),
        "end_s": None if end is None else round(end - start, 1),
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "requests": requests,
        "failures": failures,
        "failed_share": failures / requests if requests else None,
        "scope_failed_share": (own_failures / own_requests if own_requests else None)
        if own_requests is not None else None,
        "rps_before": (sum(grid.requests[t] for t in base) / len(base)) if base else None,
        "rps_during": (sum(grid.requests[t] for t in full) / len(full)) if full else None,
        "availability": {
            entry: {"before": _availability(grid, entry, base),
                    "during": _availability(grid, entry, during)}
            for entry in grid.entries},
    }


def _availability(grid: _Grid, entry: str, seconds: range) -> float | None:
    requests = sum(int(grid.row(entry, t).get("requests", 0)) for t in seconds)
    failures = sum(int(grid.row(entry, t).get("failures", 0)) for t in seconds)
    return (requests - failures) / requests if requests else None


def _causes(incident: Mapping[str, Any], faults: Sequence[Mapping[str, Any]],
            changes: Sequence[Mapping[str, Any]], pod_nodes: Mapping[str, str | None]
            ) -> list[str]:
    """Faults and cluster changes near the incident's start that concern what failed: the
    same name, a pod of the failing node, or the node of the silent pod (an LB incident:
    any node)."""
    name, scope = incident["name"], incident["scope"]
    related = {name}
    if scope == "node":
        related |= {pod for pod, node in pod_nodes.items() if node == name}
    elif scope == "pod" and pod_nodes.get(name):
        related.add(pod_nodes[name])
    begin = incident["start_s"]
    out = []
    for fault in faults:
        t = fault.get("t")
        if t is None or not begin - MATCH_BEFORE_S <= t <= begin + MATCH_AFTER_S:
            continue
        if scope == "lb" or fault.get("name") in related:
            source = " (lab fault)" if fault.get("source") == "lab" else ""
            out.append(f"{fault.get('kind', 'node')} {fault.get('name')} "
                       f"{fault.get('action')} at {t:.1f} s{source}")
    for change in changes:
        t = change.get("t")
        if t is None or not begin - MATCH_BEFORE_S <= t <= begin + MATCH_AFTER_S:
            continue
        if (scope == "lb" and change.get("kind") == "node") or change.get("name") in related:
            out.append(str(change.get("text") or f"{change.get('name')} {change.get('change')}"))
    return out
