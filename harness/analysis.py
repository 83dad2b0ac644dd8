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
  success. ``unknown_successes``: replies that named no pod.
- ``fairness``: pods, jain, cv, max_min_ratio (``null`` when a pod got nothing), chi2,
  chi2_p (against uniform).
- ``cross_node``: share (cross / (local + cross)), local / cross_node / unknown latency
  stats, cost_ms (cross minus local at p50/p95/p99), enough_samples (both >= 30).
- ``failures``: total, ratio, by_kind, by_node (node -> kind -> count), http_status.
- ``keepalive``: connections, requests, mean_requests_per_connection,
  p50_requests_per_connection, connections_with_pod, mean_distinct_pods,
  single_pod_share, evicted.
- ``latency``: ``overall`` and ``failed`` stats. Stats are count, mean, p50, p90, p95, p99,
  max in ms (bucket midpoints: within 0.78 %), ``null`` when empty.
- ``timeline``: ``nodes`` (node -> rows) and ``overall`` (rows); a row is t (seconds from
  start), requests, failures, availability, p50, p95 (coarse: within 3.1 %).
- ``faults``: each fault (t, kind, name, action, until) with its impact: requests, failures,
  fail_ratio from its second until it was undone or the run ended, before_fail_ratio,
  via_node_share (failures that entered through the faulty node).
- ``markers``: t (seconds from start), label. ``findings``: see `build_findings`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats as scipy_stats

from harness.errors import HarnessError
from harness.recorder import (
    OTHER_POD,
    SERIES_SHIFT,
    UNKNOWN_POD,
    bucket_range_us,
    bucket_value_ms,
    check_spread,
    hist_items,
    percentiles,
)

SUMMARY_SCHEMA = "nodeport-harness/summary/v1"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "max": 1.0}
SEVERITIES = ("critical", "warning", "info", "ok")
MIN_SAMPLES = 30  # below this a percentile difference is noise, not a cost
FAULT_ACTIONS = {"down": "went down", "kill": "was killed", "killed": "was killed",
                 "delete": "was deleted"}
UNDO_ACTIONS = ("up",)

Row = dict[str, Any]


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
    totals["fail_ratio"] = _ratio(totals["failures"], totals["requests"])
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
        **_pods(spread, endpoints, pod_nodes),
        "cross_node": _cross_node(spread),
        "failures": _failures(spread, totals),
        "keepalive": _keepalive(spread),
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
    summary["findings"] = build_findings(summary)
    return summary


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


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
            "share": _ratio(part.get("requests", 0), total),
            "availability": _ratio(part.get("successes", 0), part.get("requests", 0)),
            "failure_kinds": dict(part.get("failure_kinds", {})),
            "http_status": dict(part.get("http_status", {})),
            "first_failure_s": failing[0] if failing else None,
            "last_failure_s": failing[-1] if failing else None,
            "latency": latency_stats(part.get("latency")),
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
        share = _ratio(count, total)
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
        "fairness": {
            "pods": len(names),
            "jain": jain_index(counts),
            "cv": coefficient_of_variation(counts),
            "max_min_ratio": max_min_ratio(counts),
            "chi2": chi2,
            "chi2_p": chi2_p,
        },
    }


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
        "share": _ratio(cross["count"], cross["count"] + local["count"]),
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
    conns = spread.get("connections", {})
    tracked = conns.get("tracked", 0)
    distinct = {int(k): v for k, v in conns.get("distinct_pods", {}).items()}
    with_pod = sum(v for k, v in distinct.items() if k >= 1)
    return {
        "connections": tracked,
        "requests": conns.get("requests", 0),
        "mean_requests_per_connection": _ratio(conns.get("requests", 0), tracked),
        "p50_requests_per_connection": _count_quantile(
            conns.get("requests_per_connection"), 0.5
        ),
        "connections_with_pod": with_pod,
        "mean_distinct_pods": _ratio(sum(k * v for k, v in distinct.items()), with_pod),
        "single_pod_share": _ratio(distinct.get(1, 0), with_pod),
        "evicted": conns.get("evicted", 0),
    }


def _timeline(spread: Mapping[str, Any], start: float | None) -> dict[str, Any]:
    base = math.floor(start) if start is not None else 0
    nodes: dict[str, list[Row]] = {}
    overall: dict[int, list[Any]] = {}
    for name, rows in spread.get("series", {}).items():
        out = []
        for row in rows:
            t = row["t"] - base
            out.append(_second(t, row["requests"], row["failures"], row.get("latency")))
            total = overall.setdefault(t, [0, 0, {}])
            total[0] += row["requests"]
            total[1] += row["failures"]
            for index, count in hist_items(row.get("latency")):
                total[2][index] = total[2].get(index, 0) + count
        nodes[name] = out
    return {
        "nodes": nodes,
        "overall": [_second(t, *overall[t]) for t in sorted(overall)],
    }


def _second(t: int, requests: int, failures: int, hist: Any) -> Row:
    p50, p95 = percentiles(hist, (0.5, 0.95), SERIES_SHIFT)
    return {
        "t": t, "requests": requests, "failures": failures,
        "availability": _ratio(requests - failures, requests), "p50": p50, "p95": p95,
    }


_MARKER = re.compile(r"^(?:(node|pod)[\s:/]+)?(\S+)\s+(down|up|kill|killed|delete)$", re.I)


def _faults(
    spread: Mapping[str, Any], target: Mapping[str, Any], run: Mapping[str, Any],
    start: float | None, markers: list[Row],
) -> list[Row]:
    node_names = {n["name"] for n in target.get("nodes", ())}
    faults = [dict(f) for f in run.get("faults", ())]
    if not faults:  # fall back on markers such as "node-2 down"
        for marker in markers:
            match = _MARKER.match(marker["label"].strip())
            if match:
                kind, name, action = match.groups()
                kind = kind or ("node" if name in node_names or not node_names else "pod")
                faults.append({"t": marker["t"], "kind": kind.lower(), "name": name,
                               "action": action.lower()})
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
            "fail_ratio": _ratio(window[1], window[0]),
            "before_fail_ratio": _ratio(before[1], before[0]),
            "via_node_share": _ratio(via_node, window[1]),
            "settle_s": settle,
            "steady_requests": steady[0],
            "steady_fail_ratio": _ratio(steady[1], steady[0]),
            "rps_before": (before_rps_requests / len(before_seconds)
                           if before_seconds else None),
            "rps_steady": steady[0] / len(steady_seconds) if steady_seconds else None,
        })
    return faults


# -- findings --------------------------------------------------------------------------------

def build_findings(summary: Mapping[str, Any]) -> list[Row]:
    """Plain-sentence findings, most severe first; the LoadBalancer one closes the list."""
    findings: list[Row] = []
    for check in (_f_failures, _f_ingress, _f_faults, _f_node_availability, _f_local_policy,
                  _f_fairness, _f_zero_pods, _f_unknown_pods, _f_keepalive, _f_cross_node,
                  _f_snat, _f_latency):
        findings.extend(check(summary))
    findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))
    findings.extend(_f_loadbalancer(summary, findings))
    return findings


def _finding(id_: str, severity: str, text: str, **metric: Any) -> Row:
    return {"id": id_, "severity": severity, "text": text, "metric": metric}


def _f_failures(s: Mapping[str, Any]) -> list[Row]:
    total, failures = s["totals"]["requests"], s["failures"]
    if not total:
        return [_finding("no_traffic", "critical", "No request was recorded.", requests=0)]
    ratio = failures["ratio"] or 0.0
    if not failures["total"]:
        return [_finding("failures", "ok", f"No request failed (0 of {_n(total)}).",
                         failures=0, requests=total, fail_ratio=0.0)]
    kinds = ", ".join(f"{k} {_n(v)}" for k, v in failures["by_kind"].items())
    by_node = sorted(((sum(k.values()), n) for n, k in failures["by_node"].items()), reverse=True)
    worst_count, worst = by_node[0]
    text = (f"{_pct(ratio)} of requests failed ({_n(failures['total'])} of {_n(total)}): "
            f"{kinds}")
    if len(by_node) > 1:
        text += f"; {_pct(worst_count / failures['total'])} of them entered through {worst}"
    severity = "critical" if ratio >= 0.05 else "warning" if ratio >= 0.001 else "info"
    return [_finding("failures", severity, text + ".", failures=failures["total"],
                     requests=total, fail_ratio=ratio, by_kind=failures["by_kind"],
                     worst_node=worst)]


def _f_ingress(s: Mapping[str, Any]) -> list[Row]:
    nodes = [n for n in s["nodes"] if n["is_node"]]
    entered = [n for n in nodes if n["requests"]]
    total = sum(n["requests"] for n in entered)
    if s["run"]["entry_strategy"] == "lb" or not total:
        return []
    targeted = [n for n in nodes if n["targeted"]] or nodes
    pods_total = sum(n["pods"] for n in nodes)
    top = max(entered, key=lambda n: n["requests"])
    share = top["requests"] / total
    metric = {"node": top["name"], "share": share, "nodes": len(targeted),
              "entry_nodes": len(entered)}
    if len(targeted) <= 1:
        return [_finding("ingress_concentration", "info",
                         f"The cluster has one node ({top['name']}): it is a single point of "
                         "failure whatever the Service type.", **metric)]
    if len(entered) == 1:
        elsewhere = pods_total - top["pods"]
        tail = (f", though {elsewhere} of {pods_total} pods run elsewhere" if elsewhere
                else f" (it also runs all {pods_total} pods)" if pods_total else "")
        return [_finding(
            "ingress_concentration", "critical",
            f"All ingress entered through {top['name']} ({_pct(share)}): if {top['name']} "
            f"fails, every client fails{tail}.", pods_elsewhere=elsewhere, **metric)]
    even = 1.0 / len(targeted)
    unused = [n["name"] for n in targeted if not n["requests"]]
    if share > max(1.5 * even, 0.5) or unused:
        text = (f"Ingress was uneven: {top['name']} took {_pct(share)} of requests against "
                f"{_pct(even)} for an even spread over {len(targeted)} nodes; if it fails, "
                f"{_pct(share)} of clients fail")
        if unused:
            text += f" ({', '.join(unused)} got nothing)"
        return [_finding("ingress_concentration", "warning", text + ".", unused=unused,
                         **metric)]
    low = min(n["requests"] for n in entered) / total
    each = _pct(share) if _pct(low) == _pct(share) else f"{_pct(low)} to {_pct(share)}"
    return [_finding(
        "ingress_concentration", "ok",
        f"Ingress was spread over {len(entered)} nodes ({each} each): losing one costs about "
        f"{_pct(share)} of clients, not all.", low=low, **metric)]


def _f_faults(s: Mapping[str, Any]) -> list[Row]:
    out = []
    for fault in s["faults"]:
        verb = FAULT_ACTIONS.get(fault["action"])
        if verb is None or "requests" not in fault:
            continue
        name, kind = fault["name"], fault.get("kind", "node")
        when = f"{name} {verb} at {_secs(fault['t'])}"
        until = ("until the end" if fault["until"] is None
                 else f"until it came back at {_secs(fault['until'])}")
        metric = {k: fault.get(k) for k in (
            "t", "until", "requests", "failures", "fail_ratio", "before_fail_ratio",
            "via_node_share", "steady_fail_ratio", "rps_before", "rps_steady")}
        if not fault["requests"]:
            out.append(_finding(f"fault:{name}", "info",
                                f"{when}; no requests were recorded afterwards.", **metric))
            continue
        ratio = fault["fail_ratio"] or 0.0
        before = fault["before_fail_ratio"]
        steady = fault.get("steady_fail_ratio")
        if steady is not None:
            # Closed-loop users stuck on time-outs send few requests: the share of requests
            # that failed over the whole window would hide the outage behind the fast
            # successes of the seconds before it took hold.
            ratio = max(ratio, steady)
            text = (f"{when}: from {_secs(fault['settle_s'])} later {until}, "
                    f"{_pct(steady)} of requests failed"
                    + (f" ({_pct(before)} before)" if before is not None else ""))
            if fault.get("rps_before") and fault.get("rps_steady") is not None:
                text += (f", and throughput fell from {fault['rps_before']:.0f} to "
                         f"{fault['rps_steady']:.0f} req/s as users waited on time-outs")
        else:
            text = (f"{when}: {_pct(ratio)} of requests failed from then {until} "
                    f"({_n(fault['failures'])} of {_n(fault['requests'])}"
                    + (f"; {_pct(before)} before" if before is not None else "") + ")")
        # A health check only helps with failures that entered through the dead node; the
        # rest came through live nodes whose kube-proxy still routed to its pods.
        lb_would_help = (kind == "node" and ratio >= 0.001
                         and (fault.get("via_node_share") or 0) >= 0.5)
        if lb_would_help:
            text += "; a LoadBalancer health check would have removed it"
        elif ratio >= 0.001:
            pods = f"{name}'s pods" if kind == "node" else "the pod"
            text += (f"; they entered through other nodes, whose kube-proxy kept routing to "
                     f"{pods} until the endpoints were removed")
        severity = "critical" if ratio >= 0.05 else "warning" if ratio >= 0.001 else "ok"
        out.append(_finding(f"fault:{name}", severity, text + ".", kind=kind,
                            lb_would_help=lb_would_help, **metric))
    return out


def _f_node_availability(s: Mapping[str, Any]) -> list[Row]:
    covered = {f["name"] for f in s["faults"]}
    # A node whose failures began only after a declared fault is that fault's victim: the
    # fault finding already tells the story.
    fault_times = [f["t"] for f in s["faults"] if f["action"] in FAULT_ACTIONS]
    covered |= {n["name"] for n in s["nodes"] if n["first_failure_s"] is not None
                and any(t <= n["first_failure_s"] + 1 for t in fault_times)}
    service = s["service"] or {}
    if service.get("external_traffic_policy") == "Local":
        covered |= {n["name"] for n in s["nodes"] if not n["pods"]}
    out = []
    for node in s["nodes"]:
        availability = node["availability"]
        if availability is None or availability >= 0.99 or node["name"] in covered:
            continue
        others = [n for n in s["nodes"] if n is not node and n["requests"]]
        other_requests = sum(n["requests"] for n in others)
        other = _ratio(sum(n["successes"] for n in others), other_requests)
        kinds = ", ".join(f"{k} {_n(v)}" for k, v in node["failure_kinds"].items())
        text = (f"{node['name']} answered only {_pct(availability)} of the "
                f"{_n(node['requests'])} requests that entered through it ({kinds})")
        if other is not None:
            text += f"; the other nodes answered {_pct(other)}"
        out.append(_finding(f"node_availability:{node['name']}",
                            "critical" if availability < 0.9 else "warning", text + ".",
                            node=node["name"], availability=availability, others=other))
    return out


def _f_local_policy(s: Mapping[str, Any]) -> list[Row]:
    service = s["service"] or {}
    if service.get("external_traffic_policy") != "Local":
        return []
    out = []
    check = service.get("health_check_node_port")
    lb = (f"a LoadBalancer health-checks port {check} and would skip it" if check
          else "a LoadBalancer's health check would skip it")
    nodes = [n for n in s["nodes"] if n["is_node"] and n["targeted"]]
    for node in nodes:
        if node["pods"]:
            continue
        name = node["name"]
        if node["requests"]:
            ratio = node["failures"] / node["requests"]
            kinds = ", ".join(f"{k} {_n(v)}" for k, v in node["failure_kinds"].items())
            text = (f"externalTrafficPolicy is Local and {name} runs no pod: {_pct(ratio)} of "
                    f"the {_n(node['requests'])} requests sent to it failed"
                    + (f" ({kinds})" if kinds else "") + f"; {lb}.")
            severity = "critical" if ratio >= 0.5 else "warning"
        else:
            ratio = None
            text = (f"externalTrafficPolicy is Local and {name} runs no pod: any client sent "
                    f"to it fails; this run sent it nothing; {lb}.")
            severity = "warning"
        out.append(_finding(f"local_policy_no_pod:{name}", severity, text, node=name,
                            requests=node["requests"], fail_ratio=ratio))
    with_pods = [n for n in nodes if n["pods"]]
    if len(with_pods) > 1:
        most = max(with_pods, key=lambda n: n["pods"])
        least = min(with_pods, key=lambda n: n["pods"])
        if most["pods"] != least["pods"]:
            factor = most["pods"] / least["pods"]
            out.append(_finding(
                "local_policy_imbalance", "info",
                f"externalTrafficPolicy Local spreads per node, not per pod: {most['name']} "
                f"runs {most['pods']} pods and {least['name']} runs {least['pods']}, so with "
                f"even ingress each pod on {least['name']} takes {_x(factor)} the load of one "
                f"on {most['name']}.", most=most["name"], least=least["name"], factor=factor))
    return out


def _f_fairness(s: Mapping[str, Any]) -> list[Row]:
    fairness = s["fairness"]
    pods = fairness["pods"]
    served = [p for p in s["pods"] if p["successes"]]
    if not served:
        return []
    if pods == 1:
        return [_finding("pod_fairness", "info", f"One pod ({served[0]['name']}) served "
                         "everything: there is no spread to measure.", **fairness)]
    jain, ratio, p = fairness["jain"], fairness["max_min_ratio"], fairness["chi2_p"]
    busiest = max(s["pods"], key=lambda r: r["successes"])
    spread = (f"Jain's index {jain:.3f} over {pods} pods (1 = even), max/min "
              f"{_x(ratio) if ratio else 'infinite (a pod got nothing)'}, "
              f"chi-square against uniform {_p(p)}")
    if jain < 0.9 or ratio is None or ratio > 2:
        text = (f"Pods were not served evenly: {busiest['name']} got "
                f"{_pct(busiest['share'])} against {_pct(busiest['expected_share'])} expected; "
                f"{spread}.")
        keepalive = s["keepalive"]
        if (keepalive["single_pod_share"] or 0) >= 0.95 and (
                keepalive["mean_requests_per_connection"] or 0) >= 2:
            text += " Keep-alive pinning (each connection stays on one pod) explains it."
        severity = "critical" if jain < 0.5 else "warning"
    elif p is not None and p < 0.001:
        text = (f"Pods were served slightly unevenly: {spread}; the deviation is small but "
                "real at this sample size.")
        severity = "info"
    else:
        text = f"Pods shared the load evenly: {spread}."
        severity = "ok"
    return [_finding("pod_fairness", severity, text, busiest=busiest["name"],
                     busiest_share=busiest["share"], **fairness)]


def _f_zero_pods(s: Mapping[str, Any]) -> list[Row]:
    existing = [p for p in s["pods"] if p["in_endpoints"]]
    zero = [p for p in existing if not p["successes"]]
    out = []
    if existing and not zero:
        out.append(_finding("pods_without_traffic", "ok",
                            f"All {len(existing)} pods served requests.", zero=[]))
    elif zero and s["totals"]["successes"]:
        names = ", ".join(f"{p['name']} (on {p['node']})" if p["node"] else p["name"]
                          for p in zero)
        text = f"{len(zero)} of {len(existing)} pods received nothing: {names}"
        service = s["service"] or {}
        quiet = {n["name"] for n in s["nodes"] if not n["requests"]}
        keepalive = s["keepalive"]
        if service.get("external_traffic_policy") == "Local" and all(
                p["node"] in quiet for p in zero):
            text += ("; with externalTrafficPolicy Local a pod only gets traffic that enters "
                     "its own node, and no traffic entered theirs")
        elif keepalive["connections"] and keepalive["connections"] < len(existing):
            text += (f"; only {_n(keepalive['connections'])} connections were opened and each "
                     "stays on one pod")
        out.append(_finding("pods_without_traffic",
                            "critical" if len(zero) == len(existing) else "warning",
                            text + ".", zero=[p["name"] for p in zero], pods=len(existing)))
    stray = [p["name"] for p in s["pods"] if not p["in_endpoints"]]
    if stray and existing:
        out.append(_finding(
            "pods_not_in_endpoints", "info",
            f"{len(stray)} pods served traffic but were not in the discovered endpoints "
            f"({', '.join(stray[:5])}{', ...' if len(stray) > 5 else ''}): pods were replaced "
            "during the run or the target is stale.", pods=stray))
    return out


def _f_unknown_pods(s: Mapping[str, Any]) -> list[Row]:
    unknown, successes = s["unknown_successes"], s["totals"]["successes"]
    share = _ratio(unknown, successes)
    if not share or share < 0.01:
        return []
    return [_finding(
        "unknown_pod", "critical" if share >= 0.5 else "warning",
        f"{_pct(share)} of successful replies did not name a pod ({_n(unknown)} of "
        f"{_n(successes)}): per-pod figures are incomplete; check --pod-from.",
        unknown=unknown, successes=successes, share=share)]


def _f_keepalive(s: Mapping[str, Any]) -> list[Row]:
    k = s["keepalive"]
    if not k["connections"]:
        return []
    per_connection = k["mean_requests_per_connection"] or 0.0
    metric = dict(k)
    caveat = (f" (connection tracking hit its limit and finalised {_n(k['evicted'])} early: "
              "figures are approximate)" if k["evicted"] else "")
    if s["run"]["connection_mode"] == "close":
        # The mode is the truth: a caller that reuses connection keys across closed
        # connections would otherwise read as per-request balancing.
        return [_finding(
            "keepalive_pinning", "info",
            "Every request opened a new connection (connection mode close): kube-proxy chose "
            "a pod for each one, so keep-alive pinning did not apply.", **metric)]
    if per_connection < 1.5:
        return [_finding(
            "keepalive_pinning", "info",
            f"Each connection carried {per_connection:.1f} requests on average: kube-proxy "
            f"chose a pod for almost every request{caveat}.", **metric)]
    mean_pods = k["mean_distinct_pods"]
    if mean_pods is None:
        return []
    single = k["single_pod_share"] or 0.0
    pods = max(s["fairness"]["pods"], 1)
    if single >= 0.95:
        severity = "warning" if k["connections"] < 10 * pods else "info"
        text = (f"With keep-alive each connection stayed on one pod: {_n(k['connections'])} "
                f"connections saw {mean_pods:.1f} pods each on average ({_pct(single)} saw "
                f"exactly one) and carried {per_connection:.0f} requests each; kube-proxy "
                "balances connections, not requests, so the spread over "
                f"{pods} pods is only as fine as the connections{caveat}.")
        return [_finding("keepalive_pinning", severity, text, **metric)]
    return [_finding(
        "keepalive_pinning", "ok",
        f"Connections were not pinned: {_n(k['connections'])} connections saw "
        f"{mean_pods:.1f} pods each on average ({_pct(single)} saw only one), so something "
        f"balances per request (an L7 proxy or session handling){caveat}.", **metric)]


def _f_cross_node(s: Mapping[str, Any]) -> list[Row]:
    cross = s["cross_node"]
    share = cross["share"]
    if share is None:
        return []
    metric = {"share": share, "cost_ms": cross["cost_ms"],
              "local": cross["local"]["count"], "cross_node": cross["cross_node"]["count"]}
    if share == 0:
        return [_finding("cross_node", "ok", "No request crossed nodes: every pod that "
                         "answered ran on the node the request entered.", **metric)]
    p50, p95 = cross["cost_ms"]["p50"], cross["cost_ms"]["p95"]
    severity = "info"
    if not cross["enough_samples"] or p50 is None:
        text = (f"{_pct(share)} of requests crossed nodes (too few local or cross-node "
                "samples to price the hop)")
    elif p50 > 0:
        text = (f"{_pct(share)} of requests crossed nodes, adding {_ms(p50)} at p50 "
                f"({_ms(p95)} at p95)")
        if p50 >= 1.0 and share >= 0.25:
            severity = "warning"
    else:
        text = (f"{_pct(share)} of requests crossed nodes with no measurable latency cost "
                f"(p50 local {_ms(cross['local']['p50'])}, cross-node "
                f"{_ms(cross['cross_node']['p50'])})")
    if (s["service"] or {}).get("external_traffic_policy") == "Cluster":
        text += ("; externalTrafficPolicy Local avoids the hop but drops traffic on nodes "
                 "without a pod")
    return [_finding("cross_node", severity, text + ".", **metric)]


def _f_snat(s: Mapping[str, Any]) -> list[Row]:
    policy = (s["service"] or {}).get("external_traffic_policy")
    if policy == "Cluster":
        return [_finding(
            "source_ip_snat", "info",
            "externalTrafficPolicy is Cluster: kube-proxy source-NATs NodePort traffic, so "
            "pods see a node's address instead of the client's; use Local, or a "
            "LoadBalancer that preserves it, if the app needs client IPs.", policy=policy)]
    if policy == "Local":
        return [_finding("source_ip_snat", "ok", "externalTrafficPolicy is Local: pods see "
                         "the client's own address (no source NAT).", policy=policy)]
    return []


def _f_latency(s: Mapping[str, Any]) -> list[Row]:
    overall = s["latency"]["overall"]
    if not overall["count"]:
        return []
    model = s["run"]["load_model"]
    text = (f"Successful requests took {_ms(overall['p50'])} at p50, {_ms(overall['p95'])} "
            f"at p95 and {_ms(overall['p99'])} at p99 (max {_ms(overall['max'])}) over "
            f"{_n(overall['count'])} requests, measured {model}")
    if model == "closed-loop":
        text += (": each user waits for its reply, so latency under overload is "
                 "under-reported (coordinated omission)")
    return [_finding("latency", "info", text + ".", load_model=model, **overall)]


def _f_loadbalancer(s: Mapping[str, Any], findings: list[Row]) -> list[Row]:
    if s["run"]["entry_strategy"] == "lb":
        return []
    by_id = {f["id"]: f for f in findings}
    reasons = []
    ingress = by_id.get("ingress_concentration")
    if ingress and ingress["severity"] in ("critical", "warning"):
        reasons.append(f"it spreads clients over every healthy node instead of sending "
                       f"{_pct(ingress['metric']['share'])} through {ingress['metric']['node']}")
    for finding in findings:
        if finding["id"].startswith("fault:") and finding["metric"].get("lb_would_help"):
            reasons.append(f"it stops sending to a node that fails its health check, "
                           f"instead of the {_pct(finding['metric']['fail_ratio'])} failures "
                           f"after {finding['id'].split(':', 1)[1]} went down")
        if finding["id"].startswith("local_policy_no_pod:") and finding["severity"] != "ok":
            reasons.append("with externalTrafficPolicy Local it only sends to nodes that run a "
                           "pod (healthCheckNodePort)")
        if finding["id"].startswith("node_availability:"):
            reasons.append(f"its health check would take {finding['metric']['node']} out of "
                           "rotation")
    if not reasons:
        return []
    reasons = list(dict.fromkeys(reasons))
    text = ("What a LoadBalancer changes: " + "; ".join(reasons) + ". It does not change "
            "which pod a connection lands on (kube-proxy still picks) or the cross-node hop")
    lb = (s["service"] or {}).get("lb_ingress")
    if lb:
        text += f". This Service already has one ({lb[0]}): point clients at it"
    return [_finding("loadbalancer", "info", text + ".", reasons=reasons, lb_ingress=lb)]


# -- formatting: one place, so every sentence reads the same ------------------------------------

def _pct(ratio: float | None) -> str:
    if ratio is None:
        return "n/a"
    value = ratio * 100
    if value == 0:
        return "0 %"
    if value < 0.01:
        return "< 0.01 %"
    if value < 1:
        return f"{value:.2f}".rstrip("0").rstrip(".") + " %"
    if 99.95 <= value < 100:
        return "> 99.9 %"
    return f"{value:.1f}".removesuffix(".0") + " %"


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    magnitude = abs(value)
    digits = 2 if magnitude < 10 else 1 if magnitude < 100 else 0
    return f"{value:.{digits}f} ms"


def _n(count: float) -> str:
    return f"{count:,}"


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}".removesuffix(".0") + " s"


def _x(factor: float) -> str:
    return f"{factor:.2f}".rstrip("0").rstrip(".") + "×"


def _p(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


# -- thresholds ------------------------------------------------------------------------------

THRESHOLDS = {
    # name: what it limits, as the result's text names it
    "max_fail_ratio": "failure ratio",
    "max_p95_ms": "p95 latency",
    "max_p99_ms": "p99 latency",
    "min_fairness": "Jain's fairness index",
    "require_all_pods": "pods without traffic",
    "max_node_share": "largest entry-node share",
}


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
        value, passed, shown, bound = _threshold(summary, name, limit)
        what = THRESHOLDS[name]
        if value is None:
            text = f"{what}: no data, so the {bound} limit cannot be met"
        else:
            text = f"{what} {shown} (limit {bound}): {'passed' if passed else 'BREACHED'}"
        results.append({"name": name, "limit": limit, "value": value, "passed": passed,
                        "text": text})
    return results


def _threshold(s: Mapping[str, Any], name: str, limit: Any) -> tuple[Any, bool, str, str]:
    if name == "max_fail_ratio":
        value = s["totals"]["fail_ratio"]
        return value, value is not None and value <= limit, _pct(value), f"≤ {_pct(limit)}"
    if name in ("max_p95_ms", "max_p99_ms"):
        value = s["latency"]["overall"][name[4:7]]
        return value, value is not None and value <= limit, _ms(value), f"≤ {_ms(limit)}"
    if name == "min_fairness":
        value = s["fairness"]["jain"]
        shown = "n/a" if value is None else f"{value:.3f}"
        return value, value is not None and value >= limit, shown, f"≥ {limit}"
    if name == "require_all_pods":
        zero = s["zero_pods"]
        existing = sum(1 for p in s["pods"] if p["in_endpoints"])
        value = len(zero) if existing else None
        shown = f"{value} of {existing}" + (f" ({', '.join(zero)})" if zero else "")
        return value, value == 0, shown, "0"
    shares = [n["share"] for n in s["nodes"] if n["share"] is not None and n["requests"]]
    value = max(shares) if shares else None
    return value, value is not None and value <= limit, _pct(value), f"≤ {_pct(limit)}"


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
        row["fail_ratio"] = _ratio(row.get("failures", 0), row.get("requests", 0)) or 0.0
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
    slo = f"p95 ≤ {_ms(slo_p95_ms)} and failures ≤ {_pct(max_fail_ratio)}"
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
            f"Even the first step ({_load(first)}, {_rate(first['rps'])}) broke the SLO "
            f"({_why(first, slo_p95_ms, max_fail_ratio)}): capacity is below it; start the "
            "steps lower.")
        return result
    parts = [f"The highest step meeting the SLO ({slo}) ran {_load(knee)} at "
             f"{_rate(knee['rps'])} with p95 {_ms(knee.get('p95'))}"]
    breach = result["breach_index"]
    if breach is not None:
        parts[-1] += (f"; the next ({_load(steps_out[breach])}) broke it "
                      f"({_why(steps_out[breach], slo_p95_ms, max_fail_ratio)})")
    else:
        parts[-1] += "; no step broke it, so the true limit is higher than measured"
    parts.append(f"With {pods} pods that is {_rate(per_pod)} per pod"
                 + (f" ({_rate(per_node)} per node over {nodes} nodes)" if nodes else ""))
    plateau = result["plateau_index"]
    if plateau is not None:
        gain = steps_out[plateau]["gain"]
        parts.append(f"Throughput stopped growing at {_load(steps_out[plateau])} "
                     f"({'+' if gain >= 0 else ''}{gain * 100:.1f} % over the previous step)")
    if target_rps is not None and per_pod:
        usable = per_pod * (1 - headroom)
        needed = math.ceil(target_rps / usable - 1e-9)
        result["pods_needed"] = needed
        text = (f"For {_rate(target_rps)} with {_pct(headroom)} headroom each pod may take "
                f"{_rate(usable)}: {_n(round(target_rps))} / {usable:.1f} = "
                f"{target_rps / usable:.1f}, so {needed} pods")
        if nodes:
            per_node_pods = pods / nodes
            result["nodes_needed"] = math.ceil(needed / per_node_pods - 1e-9)
            text += (f" ({result['nodes_needed']} nodes at today's {per_node_pods:.1f} pods "
                     "per node)")
        parts.append(text)
    parts.append("This assumes the pods, not the load generator, were the limit")
    result["reasoning"] = ". ".join(parts) + "."
    return result


def _load(step: Mapping[str, Any]) -> str:
    if step.get("users") is not None:
        return f"{_n(step['users'])} users"
    if step.get("rate") is not None:
        return f"{_rate(step['rate'])} offered"
    return "this step"


def _rate(rps: float | None) -> str:
    return "n/a" if rps is None else f"{rps:,.1f}".removesuffix(".0") + " req/s"


def _why(step: Mapping[str, Any], slo_p95_ms: float, max_fail_ratio: float) -> str:
    reasons = []
    if step.get("p95") is None or step["p95"] > slo_p95_ms:
        reasons.append(f"p95 {_ms(step.get('p95'))} > {_ms(slo_p95_ms)}")
    if step["fail_ratio"] > max_fail_ratio:
        reasons.append(f"failures {_pct(step['fail_ratio'])} > {_pct(max_fail_ratio)}")
    return " and ".join(reasons)


__all__ = [
    "SUMMARY_SCHEMA", "build_findings", "chi_square_uniform", "coefficient_of_variation",
    "evaluate_thresholds", "expected_band", "find_knee", "jain_index", "latency_stats",
    "max_min_ratio", "plan_capacity", "summarize",
]
