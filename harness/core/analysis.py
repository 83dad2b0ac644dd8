"""Pure functions from spread aggregates and the Target to metrics, findings and capacity.

``summarize(spread, target, run)`` returns the ``nodeport-harness/summary/v1`` dict:

- ``schema``; ``run``: entry_strategy, connection_mode, load_model, start / end (epoch s),
  duration_s; ``service``: name, namespace, type, external_traffic_policy, session_affinity,
  node_port, lb_ingress, health_check_node_port (``null`` without a target).
- ``totals``: requests, successes, failures, fail_ratio, rps.
- ``nodes``: one row per cluster node and per other entry point (``is_node`` false, e.g.
  ``lb``): name, is_node, targeted, ready, pods (ready endpoints on it), requests,
  successes, failures, share (of all requests), availability (successes / requests),
  failure_kinds, http_status, first_failure_s / last_failure_s (seconds from start),
  latency (stats, see below).
- ``pods``: one row per pod that exists (ready endpoints) or served: name, node,
  in_endpoints, successes, failures, share (of successes over ``fairness.pods``),
  expected_share (1 / pods), band_low / band_high (the 95 % range of that share under a
  uniform spread: binomial), within_band, latency. ``zero_pods``: endpoint pods with no
  success. ``unknown_successes``: replies that named no pod (or one beyond the recorder's
  cap); ``pod_cap``: ``max_pods``, ``names_over_cap`` (distinct names beyond it, at least),
  ``other_successes`` (the replies that named one of them).
- ``fairness``: pods, jain, cv, max_min_ratio (``null`` when a pod got nothing), chi2,
  chi2_p (against uniform).
- ``cross_node``: share (cross / (local + cross)), local / cross_node / unknown latency
  stats, cost_ms (cross minus local at p50/p95/p99), enough_samples (both >= 30).
- ``failures``: total, ratio, by_kind, by_node (node -> kind -> count), http_status.
- ``keepalive``: the run's TCP connections (one per request in close mode; a failed connect
  counts): connections, requests, mean_requests_per_connection, p50_requests_per_connection
  (whole), connections_with_pod, mean_distinct_pods (pods per connection), single_pod_share,
  evicted.
- ``latency``: ``overall`` and ``failed`` stats. Stats are count, mean, p50, p90, p95, p99,
  max in ms (bucket midpoints: within 0.78 %), ``null`` when empty.
- ``timeline``: ``nodes`` (node -> rows) and ``overall`` (rows); a row is t (seconds from
  start), requests, failures, availability, p50, p95 (coarse: within 3.1 %).
- ``faults``: each fault (t, kind, name, action, until) with its impact: requests, failures,
  fail_ratio from its second until it was undone or the run ended, before_fail_ratio,
  via_node_share (failures that entered through the faulty node).
- ``markers``: t (seconds from start), label. ``changes``: the cluster changes the run saw
  (run.json's). ``incidents``: see `harness.core.incidents.detect_incidents`.
  ``pod_arrivals``: pods that appeared during the run and what they served after, against
  the rules (`harness.core.arrivals.pod_arrivals`). ``findings``: see `build_findings`.
  ``whatifs``: predictions for changed topologies (`harness.core.whatif.build_whatifs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats as scipy_stats

from harness.core.arrivals import pod_arrivals
from harness.core.entry import LB_ENTRY
from harness.core.faults import UNDO_ACTIONS, parse_marker
from harness.core.findings import Row, build_findings, fraction
from harness.core.histogram import (
    SERIES_SHIFT,
    bucket_range_us,
    bucket_value_ms,
    hist_items,
    percentiles,
)
from harness.core.incidents import detect_incidents
from harness.core.recorder import OTHER_POD, UNKNOWN_POD, check_spread
from harness.core.runinfo import THRESHOLDS
from harness.core.spread_model import compare, predict
from harness.core.text import fair_index, ms, number, pct
from harness.core.whatif import build_whatifs
from harness.errors import HarnessError

SUMMARY_SCHEMA = "nodeport-harness/summary/v1"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "max": 1.0}
MIN_SAMPLES = 30  # below this a percentile difference is noise, not a cost



# -- statistics ------------------------------------------------------------------------------

def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 even, 1/n all on one."""
    square_sum = sum(v * v for v in values)
    if not values or square_sum == 0:
        return None
    return sum(values) ** 2 / (len(values) * square_sum)


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Population standard deviation over the mean."""
    if not values:
        return None
    mean = sum(values) / len(values)
    if mean == 0:
        return None
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def max_min_ratio(values: Sequence[float]) -> float | None:
    """Largest over smallest; None when the smallest is 0 (a pod got nothing)."""
    if not values or min(values) <= 0:
        return None
    return max(values) / min(values)


def chi_square_uniform(counts: Sequence[int]) -> tuple[float | None, float | None]:
    """Chi-square statistic and p-value of ``counts`` against a uniform spread."""
    if len(counts) < 2 or sum(counts) == 0:
        return None, None
    result = scipy_stats.chisquare(list(counts))
    return float(result.statistic), float(result.pvalue)


def expected_band(total: int, pods: int, confidence: float = 0.95) -> tuple[float, float]:
    """The share one pod gets ``confidence`` of the time when ``total`` requests spread
    uniformly over ``pods``: a binomial interval, as shares."""
    if total <= 0 or pods <= 0:
        return 0.0, 0.0
    low, high = scipy_stats.binom.interval(confidence, total, 1.0 / pods)
    return float(low) / total, float(high) / total


def latency_stats(hist: Any, shift: int = 0) -> dict[str, Any]:
    """count, mean, p50, p90, p95, p99, max (ms) of a histogram in the recorder's layout."""
    items = hist_items(hist)
    count = sum(n for _, n in items)
    values = percentiles(items, QUANTILES.values(), shift)
    result: dict[str, Any] = {"count": count}
    result["mean"] = (
        sum(bucket_value_ms(i, shift) * n for i, n in items) / count if count else None
    )
    for name, value in zip(QUANTILES, values, strict=True):
        result[name] = value
    return result


def _count_quantile(hist: Any, q: float) -> float | None:
    # Requests per connection use the latency layout over plain counts (exact below 128).
    items = hist_items(hist)
    total = sum(n for _, n in items)
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for index, count in items:
        seen += count
        if seen >= rank:
            low, high = bucket_range_us(index)
            return low if high - low == 1 else (low + high) / 2
    return None


# -- the summary -----------------------------------------------------------------------------

def summarize(
    spread: Mapping[str, Any],
    target: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics and findings for one run (spread.json + target.json + run info)."""
    check_spread(spread)
    run = dict(run or {})
    target = target or {}
    start = run.get("start", spread.get("start"))
    end = spread.get("end")
    duration = run.get("duration_s")
    if duration is None and spread.get("start") is not None:
        duration = end - spread["start"]
    totals = dict(spread["totals"])
    totals["fail_ratio"] = fraction(totals["failures"], totals["requests"])
    totals["rps"] = totals["requests"] / duration if duration else None

    endpoints = [e for e in target.get("endpoints", ()) if e.get("ready", True)]
    pod_nodes = {**spread.get("pod_nodes", {}), **{e["pod"]: e.get("node") for e in endpoints}}
    timeline = _timeline(spread, start)
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "run": {
            "entry_strategy": run.get("entry_strategy"),
            "connection_mode": run.get("connection_mode"),
            "load_model": run.get("load_model", "closed-loop"),
            "start": start,
            "end": end,
            "duration_s": duration,
        },
        "service": _service(target),
        "totals": totals,
        "nodes": _nodes(spread, target, endpoints, timeline),
        **_with_model(_pods(spread, endpoints, pod_nodes), spread, target, _churn(run)),
        "cross_node": _cross_node(spread),
        "failures": _failures(spread, totals),
        "keepalive": _keepalive(spread),
        "lb": _lb(spread, target, run),
        "latency": {
            "overall": latency_stats(spread["latency"]["buckets"]),
            "failed": latency_stats(spread.get("failure_latency")),
        },
        "timeline": timeline,
        "markers": [
            {"t": m["t"] - start, "label": m["label"]}
            for m in spread.get("markers", ()) if start is not None
        ],
    }
    summary["faults"] = _faults(spread, target, run, start, summary["markers"])
    summary["changes"] = [dict(c) for c in run.get("changes") or ()]
    summary["incidents"] = detect_incidents(
        spread, start, [n["name"] for n in target.get("nodes", ())], pod_nodes,
        summary["faults"], summary["changes"])
    summary["pod_arrivals"] = pod_arrivals(spread, target, start, summary["faults"],
                                           summary["changes"])
    summary["findings"] = build_findings(summary)
    summary["whatifs"] = build_whatifs(target, summary, run)
    return summary


def _service(target: Mapping[str, Any]) -> dict[str, Any] | None:
    service = target.get("service")
    if not service:
        return None
    return {
        "name": service.get("name"),
        "namespace": service.get("namespace"),
        "type": service.get("type"),
        "external_traffic_policy": service.get("external_traffic_policy"),
        "session_affinity": service.get("session_affinity"),
        "node_port": (service.get("port") or {}).get("node_port"),
        "lb_ingress": list(service.get("lb_ingress", ())),
        "health_check_node_port": service.get("health_check_node_port"),
    }


def _nodes(
    spread: Mapping[str, Any], target: Mapping[str, Any], endpoints: list[Row],
    timeline: Mapping[str, Any],
) -> list[Row]:
    entries = spread.get("entry_nodes", {})
    total = spread["totals"]["requests"]
    known = {n["name"]: n for n in target.get("nodes", ())}
    if not known:  # no target: the nodes we can infer
        names = {n for n in spread.get("pod_nodes", {}).values() if n}
        known = {name: {"name": name} for name in sorted(names | set(entries))}
    rows = []
    for name in [*known, *(e for e in entries if e not in known)]:
        info = known.get(name)
        part = entries.get(name, {})
        series = timeline["nodes"].get(name, [])
        failing = [r["t"] for r in series if r["failures"]]
        rows.append({
            "name": name,
            "is_node": info is not None,
            "targeted": bool(info and info.get("targeted", True) and info.get("address", "?")),
            "ready": bool(info and info.get("ready", True)),
            "pods": sum(1 for e in endpoints if e.get("node") == name),
            "requests": part.get("requests", 0),
            "successes": part.get("successes", 0),
            "failures": part.get("failures", 0),
            "share": fraction(part.get("requests", 0), total),
            "availability": fraction(part.get("successes", 0), part.get("requests", 0)),
            "failure_kinds": dict(part.get("failure_kinds", {})),
            "http_status": dict(part.get("http_status", {})),
            "first_failure_s": failing[0] if failing else None,
            "last_failure_s": failing[-1] if failing else None,
            "latency": latency_stats(part.get("latency")),
            # Failed requests too (a time-out at its duration): what its clients waited.
            "latency_all": latency_stats(_added(part.get("latency"),
                                                part.get("failure_latency"))),
        })
    return rows


def _pods(
    spread: Mapping[str, Any], endpoints: list[Row], pod_nodes: Mapping[str, str | None]
) -> dict[str, Any]:
    seen = spread.get("pods", {})
    in_endpoints = [e["pod"] for e in endpoints]
    names = list(dict.fromkeys(
        in_endpoints
        + [p for p, d in seen.items() if p not in (UNKNOWN_POD, OTHER_POD) and d["successes"]]
    ))
    counts = [seen.get(p, {}).get("successes", 0) for p in names]
    total = sum(counts)
    expected = 1.0 / len(names) if names else None
    band_low, band_high = expected_band(total, len(names))
    rows = []
    for name, count in zip(names, counts, strict=True):
        share = fraction(count, total)
        rows.append({
            "name": name,
            "node": pod_nodes.get(name),
            "in_endpoints": name in in_endpoints,
            "successes": count,
            "failures": seen.get(name, {}).get("failures", 0),
            "share": share,
            "expected_share": expected,
            "band_low": band_low,
            "band_high": band_high,
            "within_band": None if share is None else band_low <= share <= band_high,
            "latency": latency_stats(seen.get(name, {}).get("latency")),
        })
    chi2, chi2_p = chi_square_uniform(counts)
    return {
        "pods": rows,
        "zero_pods": [r["name"] for r in rows if r["in_endpoints"] and r["successes"] == 0],
        "unknown_successes": sum(
            seen.get(p, {}).get("successes", 0) for p in (UNKNOWN_POD, OTHER_POD)
        ),
        # Of those, the replies that named a pod beyond the recorder's cap ("(other)").
        "pod_cap": {
            "max_pods": (spread.get("limits") or {}).get("max_pods"),
            "names_over_cap": (spread.get("limits") or {}).get("pod_names_over_cap") or 0,
            "other_successes": seen.get(OTHER_POD, {}).get("successes", 0),
        },
        "fairness": {
            "pods": len(names),
            "jain": jain_index(counts),
            "cv": coefficient_of_variation(counts),
            "max_min_ratio": max_min_ratio(counts),
            "chi2": chi2,
            "chi2_p": chi2_p,
        },
    }


def _churn(run: Mapping[str, Any]) -> set[str]:
    """Pods that joined, left or were restarted during the run (its changes and pod faults):
    kube-proxy's choice among a changing set of endpoints is judged apart from the rest
    (pod incidents and pod arrivals tell their story)."""
    names = {c.get("name") for c in run.get("changes") or () if c.get("kind") == "endpoint"}
    for fault in run.get("faults") or ():
        if fault.get("kind") == "pod":
            names |= {fault.get("name"), fault.get("replacement")}
    return {n for n in names if n}


def _with_model(part: dict[str, Any], spread: Mapping[str, Any],
                target: Mapping[str, Any], churn: set[str] | None = None) -> dict[str, Any]:
    """Judge the pod spread against what kube-proxy's rules predict for this topology and
    these connections (harness.core.spread_model), not against uniform: each pod's
    expected_share and band become the model's; fairness.model holds the verdict. Without a
    target (no endpoints known) the uniform expectation stays."""
    if not any(e.get("pod") for e in target.get("endpoints", ())):
        part["fairness"]["model"] = None
        return part
    entry_requests = {name: int(p.get("requests", 0))
                      for name, p in spread.get("entry_nodes", {}).items()}
    connections = (spread.get("connections") or {}).get("tracked") or None
    prediction = predict(target, entry_requests, connections, target.get("proxy_mode"))
    result = compare(prediction, {row["name"]: row["successes"] for row in part["pods"]},
                     exclude=churn or ())
    for row in part["pods"]:
        model = prediction["pods"].get(row["name"], {"expected_share": 0.0, "band_low": 0.0,
                                                     "band_high": 0.0})
        row.update(model)
        share = row["share"]
        row["within_band"] = (None if share is None
                              else model["band_low"] - 1e-9 <= share <= model["band_high"] + 1e-9)
    part["fairness"]["model"] = {
        **{k: prediction[k] for k in ("proxy_mode", "policy", "affinity", "dropped_share",
                                      "choices", "requests_per_choice", "assumptions")},
        **result,
    }
    return part


def _cross_node(spread: Mapping[str, Any]) -> dict[str, Any]:
    locality = spread.get("locality", {})
    stats = {name: latency_stats(locality.get(name, {}).get("latency"))
             for name in ("local", "cross_node", "unknown")}
    local, cross = stats["local"], stats["cross_node"]
    cost = {
        q: (cross[q] - local[q]) if cross[q] is not None and local[q] is not None else None
        for q in ("p50", "p95", "p99")
    }
    return {
        "share": fraction(cross["count"], cross["count"] + local["count"]),
        **stats,
        "cost_ms": cost,
        "enough_samples": min(local["count"], cross["count"]) >= MIN_SAMPLES,
    }


def _failures(spread: Mapping[str, Any], totals: Mapping[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    http_status: dict[str, int] = {}
    by_node = {}
    for name, part in spread.get("entry_nodes", {}).items():
        by_node[name] = dict(part.get("failure_kinds", {}))
        for kind, count in part.get("failure_kinds", {}).items():
            by_kind[kind] = by_kind.get(kind, 0) + count
        for status, count in part.get("http_status", {}).items():
            http_status[status] = http_status.get(status, 0) + count
    return {
        "total": totals["failures"],
        "ratio": totals["fail_ratio"],
        "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "by_node": by_node,
        "http_status": http_status,
    }


def _keepalive(spread: Mapping[str, Any]) -> dict[str, Any]:
    # TCP connections as the client counted them: one per request in close mode, one per
    # socket the keep-alive client opened (a connect that failed included). Counts are
    # whole numbers; only the means are fractions.
    conns = spread.get("connections", {})
    tracked = conns.get("tracked", 0)
    distinct = {int(k): v for k, v in conns.get("distinct_pods", {}).items()}
    with_pod = sum(v for k, v in distinct.items() if k >= 1)
    p50 = _count_quantile(conns.get("requests_per_connection"), 0.5)
    return {
        "connections": tracked,
        "requests": conns.get("requests", 0),
        "mean_requests_per_connection": fraction(conns.get("requests", 0), tracked),
        # A whole number of requests: exact below 128, else within the bucket (0.78 %).
        "p50_requests_per_connection": None if p50 is None else int(p50),
        "connections_with_pod": with_pod,
        "mean_distinct_pods": fraction(sum(k * v for k, v in distinct.items()), with_pod),
        "single_pod_share": fraction(distinct.get(1, 0), with_pod),
        "evicted": conns.get("evicted", 0),
    }


def _lb(spread: Mapping[str, Any], target: Mapping[str, Any],
        run: Mapping[str, Any]) -> dict[str, Any] | None:
    """How a LoadBalancer spread the run's successes over nodes, from the recorder's
    ``via_nodes`` (the node each success's pod saw as its peer: kube-proxy's SNAT source)."""
    entries = spread.get("entry_nodes", {})
    if run.get("entry_strategy") != LB_ENTRY and LB_ENTRY not in entries:
        return None
    part = entries.get(LB_ENTRY, {})
    via = {name: count for name, count in part.get("via_nodes", {}).items() if count}
    unknown = via.pop(UNKNOWN_POD, 0)
    successes = part.get("successes", 0)
    service = target.get("service") or {}
    ingress = list(service.get("lb_ingress") or ())
    if service.get("external_traffic_policy") == "Local":
        reason = "local_policy"  # the pod saw the client: its address names no LB choice
    elif not successes:
        reason = "no_successes"
    elif not via:
        reason = "no_node_address"
    else:
        reason = None
    counts: dict[str, int] = {}
    if reason is None:
        nodes = target.get("nodes", ())
        listed = [n["name"] for n in nodes if n.get("targeted", True) and n.get("address", "?")]
        counts = {name: via.get(name, 0) for name in listed}
        counts.update((name, count) for name, count in via.items() if name not in counts)
    else:
        unknown = sum(via.values()) + unknown
    return {
        "entry": LB_ENTRY,
        "address": ingress[0] if ingress else None,
        "successes": successes,
        "seen": reason is None,
        "unseen_reason": reason,
        "via_nodes": counts,
        "unknown": unknown,
        "shares": {name: fraction(count, successes) for name, count in counts.items()},
        "nodes": len(counts),
        "nodes_used": sum(1 for count in counts.values() if count),
    }


def _timeline(spread: Mapping[str, Any], start: float | None) -> dict[str, Any]:
    base = math.floor(start) if start is not None else 0
    nodes: dict[str, list[Row]] = {}
    overall: dict[int, list[Any]] = {}
    for name, rows in spread.get("series", {}).items():
        out = []
        for row in rows:
            t = row["t"] - base
            out.append(_second(t, row["requests"], row["failures"], row.get("latency"),
                               row.get("failure_latency")))
            total = overall.setdefault(t, [0, 0, {}, {}])
            total[0] += row["requests"]
            total[1] += row["failures"]
            for index, count in hist_items(row.get("latency")):
                total[2][index] = total[2].get(index, 0) + count
            for index, count in hist_items(row.get("failure_latency")):
                total[3][index] = total[3].get(index, 0) + count
        nodes[name] = out
    return {
        "nodes": nodes,
        "overall": [_second(t, *overall[t]) for t in sorted(overall)],
    }


def _second(t: int, requests: int, failures: int, hist: Any, failed: Any = None) -> Row:
    p50, p95 = percentiles(hist, (0.5, 0.95), SERIES_SHIFT)
    (failed_p95,) = percentiles(failed, (0.95,), SERIES_SHIFT)
    return {
        "t": t, "requests": requests, "failures": failures,
        "availability": fraction(requests - failures, requests), "p50": p50, "p95": p95,
        "failed_p95": failed_p95,
    }


def _added(*hists: Any) -> dict[int, int]:
    total: dict[int, int] = {}
    for hist in hists:
        for index, count in hist_items(hist):
            total[index] = total.get(index, 0) + count
    return total


def _faults(
    spread: Mapping[str, Any], target: Mapping[str, Any], run: Mapping[str, Any],
    start: float | None, markers: list[Row],
) -> list[Row]:
    node_names = {n["name"] for n in target.get("nodes", ())}
    faults = [dict(f) for f in run.get("faults", ())]
    if not faults:  # fall back on markers such as "node-2 down"
        for marker in markers:
            fault = parse_marker(marker["label"], marker["t"], node_names)
            if fault is not None:
                faults.append(fault.to_dict())
    faults.sort(key=lambda f: f["t"])
    if start is None:
        return faults
    series = spread.get("series", {})
    seconds = sorted({row["t"] for rows in series.values() for row in rows})
    # Requests to a dead node fail only when their time-out ends, and series count requests
    # by the second they complete: the steady state starts a time-out (+ 1 s of binning)
    # after the fault. The first second (ramp-up) and the last (cut by the stop) are partial.
    settle = float(run.get("timeout_s") or 0.0) + 1.0
    first, last = (seconds[0], seconds[-1]) if seconds else (None, None)
    for fault in faults:
        undo = next((f["t"] for f in faults if f["t"] > fault["t"] and f["name"] == fault["name"]
                     and f["action"] in UNDO_ACTIONS), None)
        fault["until"] = undo
        if fault["action"] in UNDO_ACTIONS:
            continue
        begin = start + fault["t"]
        stop = math.inf if undo is None else start + undo
        window, before, steady = [0, 0], [0, 0], [0, 0]
        before_seconds, steady_seconds = set(), set()
        via_node = 0
        for name, rows in series.items():
            for row in rows:
                t = row["t"]
                if t + 1 <= begin:
                    before[0] += row["requests"]
                    before[1] += row["failures"]
                    if t != first:
                        before_seconds.add(t)
                elif t < stop:
                    window[0] += row["requests"]
                    window[1] += row["failures"]
                    if name == fault["name"]:
                        via_node += row["failures"]
                    if t >= begin + settle and t != last:
                        steady[0] += row["requests"]
                        steady[1] += row["failures"]
                        steady_seconds.add(t)
        before_rps_requests = sum(
            row["requests"] for rows in series.values() for row in rows
            if row["t"] in before_seconds)
        fault.update({
            "requests": window[0],
            "failures": window[1],
            "fail_ratio": fraction(window[1], window[0]),
            "before_fail_ratio": fraction(before[1], before[0]),
            "via_node_share": fraction(via_node, window[1]),
            "settle_s": settle,
            "steady_requests": steady[0],
            "steady_fail_ratio": fraction(steady[1], steady[0]),
            "rps_before": (before_rps_requests / len(before_seconds)
                           if before_seconds else None),
            "rps_steady": steady[0] / len(steady_seconds) if steady_seconds else None,
        })
    return faults


# -- thresholds ------------------------------------------------------------------------------

def evaluate_thresholds(
    summary: Mapping[str, Any], thresholds: Mapping[str, Any]
) -> list[Row]:
    """Check a summary against limits; one result per threshold that is set (not None)."""
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise HarnessError(f"unknown threshold {', '.join(unknown)}: use "
                           f"{', '.join(THRESHOLDS)}")
    results = []
    for name, limit in thresholds.items():
        if limit is None or limit is False:
            continue
        value, passed, shown, op, limit_shown = _threshold(summary, name, limit)
        what = THRESHOLDS[name]
        bound = limit_shown if op == "=" else f"{op} {limit_shown}"
        if value is None:
            text = f"{what}: no data, so the {bound} limit cannot be met"
        else:
            text = f"{what} {shown} (limit {bound}): {'passed' if passed else 'BREACHED'}"
        # label, shown, op and limit_shown: the parts of the sentence, for a view that
        # writes it its own way (the terminal's "✓ p95 latency 3.2 ms <= 5 ms").
        results.append({"name": name, "limit": limit, "value": value, "passed": passed,
                        "text": text, "label": what, "shown": shown, "op": op,
                        "limit_shown": limit_shown})
    return results


def _threshold(s: Mapping[str, Any], name: str,
               limit: Any) -> tuple[Any, bool, str, str, str]:
    """(value, passed, value shown, comparison: "≤", "≥" or "=", limit shown)."""
    if name == "max_fail_ratio":
        value = s["totals"]["fail_ratio"]
        return value, value is not None and value <= limit, pct(value), "≤", pct(limit)
    if name in ("max_p95_ms", "max_p99_ms"):
        value = s["latency"]["overall"][name[4:7]]
        return value, value is not None and value <= limit, ms(value), "≤", ms(limit)
    if name == "min_fairness":
        value = s["fairness"]["jain"]
        return (value, value is not None and value >= limit, fair_index(value), "≥",
                fair_index(limit))
    if name == "require_all_pods":
        zero = s["zero_pods"]
        existing = sum(1 for p in s["pods"] if p["in_endpoints"])
        value = len(zero) if existing else None
        shown = (f"{number(value)} of {number(existing)}"
                 + (f" ({', '.join(zero)})" if zero else ""))
        return value, value == 0, shown, "=", "0"
    shares = [n["share"] for n in s["nodes"] if n["share"] is not None and n["requests"]]
    lb = s.get("lb")
    if lb is not None:  # one LB address took it all: the nodes it chose are what count
        shares = [v for v in lb["shares"].values() if v is not None] if lb["seen"] else []
    value = max(shares) if shares else None
    return value, value is not None and value <= limit, pct(value), "≤", pct(limit)


__all__ = [
    "SUMMARY_SCHEMA", "build_findings", "chi_square_uniform", "coefficient_of_variation",
    "evaluate_thresholds", "expected_band", "jain_index", "latency_stats", "max_min_ratio",
    "summarize",
]
