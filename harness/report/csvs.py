"""Plain rows for the CSV files and the page's tables: per entry node, per pod, per second."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.core.text import printable

NODE_FIELDS = (
    "entry_node", "is_node", "targeted", "ready", "address", "address_type", "pods",
    "requests", "successes", "failures", "fail_ratio", "share", "distinct_pods", "local",
    "cross_node", "cross_node_share", "p50_ms", "p95_ms", "p99_ms", "p99_all_ms",
    "failure_kinds",
)
POD_FIELDS = (
    "pod", "node", "in_endpoints", "successes", "failures", "share", "expected_share",
    "band_low", "band_high", "within_band", "entry_nodes", "p50_ms", "p95_ms", "p99_ms",
)
SERIES_FIELDS = ("t", "elapsed_s", "entry_node", "requests", "failures", "p50_ms", "p95_ms",
                 "failed_p95_ms")
NOT_PODS = ("unknown", "(other)")  # reply named no pod / names beyond the recorder's cap
MAX_FILL_SECONDS = 14 * 86400  # beyond this, gaps stay gaps instead of millions of zero rows


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def pod_nodes(spread: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, str | None]:
    """Pod -> node from the endpoints, completed by what the recorder learnt."""
    known: dict[str, str | None] = {
        e["pod"]: e.get("node") for e in target.get("endpoints", ()) if e.get("pod")
    }
    for pod, node in spread.get("pod_nodes", {}).items():
        if node or pod not in known:
            known[pod] = node
    return known


def locality_counts(
    entry: str, pods: Mapping[str, int], where: Mapping[str, str | None], is_node: bool
) -> tuple[int, int]:
    """(local, cross-node) successes entering ``entry``; unknown pods count in neither."""
    local = cross = 0
    for pod, count in pods.items():
        node = where.get(pod)
        if node is None or not is_node:
            continue
        if node == entry:
            local += count
        else:
            cross += count
    return local, cross


def node_rows(summary: Mapping[str, Any], spread: Mapping[str, Any],
              target: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = spread.get("entry_nodes", {})
    nodes = {n["name"]: n for n in target.get("nodes", ()) if n.get("name")}
    where = pod_nodes(spread, target)
    rows = []
    for node in summary["nodes"]:
        name = node["name"]
        pods = entries.get(name, {}).get("pods", {})
        local, cross = locality_counts(name, pods, where, node["is_node"])
        info = nodes.get(name, {})
        latency = node["latency"]
        availability = node["availability"]
        rows.append({
            "entry_node": name, "is_node": node["is_node"], "targeted": node["targeted"],
            "ready": node["ready"], "address": info.get("address") or "",
            "address_type": info.get("address_type") or "", "pods": node["pods"],
            "requests": node["requests"], "successes": node["successes"],
            "failures": node["failures"],
            "fail_ratio": None if availability is None else _round(1 - availability),
            "share": _round(node["share"]),
            "distinct_pods": sum(1 for p, c in pods.items() if c and p not in NOT_PODS),
            "local": local, "cross_node": cross,
            "cross_node_share": _round(cross / (local + cross)) if local + cross else None,
            "p50_ms": _round(latency["p50"], 3), "p95_ms": _round(latency["p95"], 3),
            "p99_ms": _round(latency["p99"], 3),
            # Failed requests counted at their duration: what a client through it waited.
            "p99_all_ms": _round((node.get("latency_all") or {}).get("p99"), 3),
            "failure_kinds": ";".join(
                f"{k}={v}" for k, v in sorted(node["failure_kinds"].items()) if v),
        })
    return rows


def pod_rows(summary: Mapping[str, Any], spread: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's pods, then "unknown" / "(other)" when they served: rows add up."""
    entries = spread.get("entry_nodes", {})
    rows = []
    for pod in summary["pods"]:
        latency = pod["latency"]
        rows.append({
            "pod": pod["name"], "node": pod["node"] or "", "in_endpoints": pod["in_endpoints"],
            "successes": pod["successes"], "failures": pod["failures"],
            "share": _round(pod["share"]), "expected_share": _round(pod["expected_share"]),
            "band_low": _round(pod["band_low"]), "band_high": _round(pod["band_high"]),
            "within_band": pod["within_band"],
            "entry_nodes": sum(1 for e in entries.values() if e.get("pods", {}).get(pod["name"])),
            "p50_ms": _round(latency["p50"], 3), "p95_ms": _round(latency["p95"], 3),
            "p99_ms": _round(latency["p99"], 3),
        })
    listed = {r["pod"] for r in rows}
    for name, pod in spread.get("pods", {}).items():
        if name in listed or not (pod.get("successes") or pod.get("failures")):
            continue
        rows.append({
            **dict.fromkeys(POD_FIELDS),
            "pod": name, "node": pod.get("node") or "", "in_endpoints": False,
            "successes": pod.get("successes", 0), "failures": pod.get("failures", 0),
            "entry_nodes": sum(1 for e in entries.values() if e.get("pods", {}).get(name)),
        })
    return rows


def matrix(summary: Mapping[str, Any], spread: Mapping[str, Any]) -> tuple[
    list[str], list[str], list[list[int]]
]:
    """(entry points that saw traffic, pods, successes[entry][pod])."""
    data = spread.get("entry_nodes", {})
    entries = [n["name"] for n in summary["nodes"] if n["requests"]]
    pods = [p["name"] for p in summary["pods"]]
    pods += [p for p in NOT_PODS if spread.get("pods", {}).get(p, {}).get("successes")]
    counts = [[data.get(e, {}).get("pods", {}).get(p, 0) for p in pods] for e in entries]
    return entries, pods, counts


def series_base(summary: Mapping[str, Any]) -> int:
    """The epoch second the summary's timeline counts from."""
    start = summary["run"]["start"]
    return math.floor(start) if start is not None else 0


def series_rows(summary: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per entry node, one row per second of the run: gaps (no request entered) are zero
    rows, so a node that went quiet shows as a drop, not as a line drawn across the hole."""
    timeline = summary["timeline"]["nodes"]
    seconds = [r["t"] for rows in timeline.values() for r in rows]
    if not seconds:
        return {name: [] for name in timeline}
    first, last = min(seconds), max(seconds)
    fill = last - first <= MAX_FILL_SECONDS
    base = series_base(summary)
    out = {}
    for name, rows in timeline.items():
        by_t = {r["t"]: r for r in rows}
        span: Iterable[int] = range(first, last + 1) if fill else sorted(by_t)
        out[name] = [_second_row(name, t, base, by_t.get(t)) for t in span]
    return out


def _second_row(name: str, t: int, base: int, row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"t": base + t, "elapsed_s": t, "entry_node": name, "requests": 0,
                "failures": 0, "p50_ms": None, "p95_ms": None, "failed_p95_ms": None}
    return {"t": base + t, "elapsed_s": t, "entry_node": name, "requests": row["requests"],
            "failures": row["failures"], "p50_ms": _round(row["p50"], 3),
            "p95_ms": _round(row["p95"], 3),
            "failed_p95_ms": _round(row.get("failed_p95"), 3)}


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    # Pod names come from servers' replies: one starting with "=" would run as a formula
    # when the CSV is opened in a spreadsheet (CSV injection), so it is kept as text.
    if isinstance(value, str):
        value = printable(value)  # no control characters: an escape or a stray CR
        if value.startswith(_FORMULA_START):
            return "'" + value
    return "" if value is None else value


def to_csv(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows([_cell(row.get(f)) for f in fields] for row in rows)
    return out.getvalue()
