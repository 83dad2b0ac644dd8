"""What the live Spread tab draws, from a recorder snapshot: the node x pod heatmap, requests
per second per pod and failures per second per entry node over the last ``WINDOW_S``
seconds, and the findings. Pure (no Locust, no Flask): ``webui`` serves it as
``/nodeport/live.json`` and the tab's script (``static/spread.js``) draws it with plotly.js.

Figures shown as text (heatmap cells, hovers) are formatted here with the one formatter set
(``harness.core.text``); the time series are whole counts per second. Names are sent as they
are: the script escapes them for plotly and sets them as text in the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.model import Target
from harness.core.recorder import OTHER_POD, UNKNOWN_POD
from harness.core.text import number, pct

WINDOW_S = 300  # the time charts show the last five minutes (bounded, whatever the run's length)
SLACK_S = 0.02  # a second the run covered all but this much of still counts as whole
SPECIAL = {UNKNOWN_POD: "(no pod named)", OTHER_POD: "(beyond the pod cap)"}


def entry_names(spread: Mapping[str, Any], target: Target | None) -> list[str]:
    """The heatmap's rows: the target's nodes as discovered, then other entry points (lb)."""
    nodes = [n.name for n in target.nodes] if target else []
    return nodes + [e for e in spread.get("entry_nodes", {}) if e not in nodes]


def pod_labels(columns: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each column's short label (what tells its pod apart: the generated suffix), full name
    and node, for the axis and the hover."""
    from harness.report.charts import short_names

    singles = [c["pods"][0] for c in columns
               if len(c["pods"]) == 1 and c["pods"][0] not in SPECIAL]
    shorts = dict(zip(singles, short_names(singles), strict=True))
    out = []
    for column in columns:
        pods = column["pods"]
        if len(pods) == 1 and pods[0] in SPECIAL:
            name = short = SPECIAL[pods[0]]
        elif len(pods) == 1:
            name, short = pods[0], shorts[pods[0]]
        else:
            name, short = f"{number(len(pods))} more pods", f"+{number(len(pods))} more"
        out.append({"name": name, "short": short, "node": column.get("node"),
                    "pods": len(pods)})
    return out


def window(started: float | None, stopped: float | None, now: float, lag_s: int,
           spread_start: float | None) -> tuple[int, int, int]:
    """(base, first, last): the epoch second elapsed time counts from, and the whole seconds
    the time charts show (first > last: none yet). A second is whole once it has ended
    (``lag_s``: and its data has come in) and when the run covered all of it."""
    begin = started if started is not None else spread_start
    if begin is None:
        return 0, 1, 0
    base = math.floor(begin)
    end = math.floor(stopped + SLACK_S) if stopped is not None else math.floor(now) - lag_s + 1
    last = end - 1
    first = max(math.ceil(begin - SLACK_S), last - WINDOW_S + 1)
    return base, first, last


def live_data(
    spread: Mapping[str, Any],
    target: Target | None,
    columns: Sequence[Mapping[str, Any]],
    *,
    now: float,
    started: float | None = None,
    stopped: float | None = None,
    lag_s: int = 1,
    findings: Sequence[Mapping[str, str]] = (),
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The tab's data (JSON-able); ``columns``: webui.pod_columns (the heatmap's pods);
    ``run``: what the header says of the run (entry, connection, run_id)."""
    entries = entry_names(spread, target)
    parts = spread.get("entry_nodes", {})
    column_of = {pod: i for i, c in enumerate(columns) for pod in c["pods"]}
    counts = [[sum(parts.get(e, {}).get("pods", {}).get(p, 0) for p in c["pods"])
               for c in columns] for e in entries]
    successes = sum(map(sum, counts))
    rows = [sum(row) for row in counts]
    # Per cell: the count, its share of the row (the entry's successes), of all successes.
    cells = [[[number(c), pct(c / rows[i] if rows[i] else None),
               pct(c / successes if successes else None)] for c in row]
             for i, row in enumerate(counts)]
    # (an entry no request went through is a row of zeros: drawn, and hovered as "n/a")
    shares = [[c / rows[i] if rows[i] else 0.0 for c in row] for i, row in enumerate(counts)]

    base, first, last = window(started, stopped, now, lag_s, spread.get("start"))
    length = max(0, last - first + 1)
    pod_rate = [[0] * length for _ in columns]
    node_failures = {e: [0] * length for e in entries}
    for entry, series in spread.get("series", {}).items():
        failures = node_failures.setdefault(entry, [0] * length)
        for row in reversed(series):  # ascending: the window is at the end
            t = row["t"]
            if t < first:
                break
            if t > last:
                continue
            failures[t - first] += row.get("failures", 0)
            for pod, count in (row.get("pods") or {}).items():
                index = column_of.get(pod)
                if index is not None:
                    pod_rate[index][t - first] += count
    markers = [{"x": round(m["t"] - base, 3), "label": str(m.get("label", ""))}
               for m in spread.get("markers", ()) if first <= m["t"] < last + 1]
    totals = spread.get("totals", {})
    return {
        "now": now,
        "target": _target(target),
        "run": dict(run or {}),
        "requests": number(totals.get("requests", 0)),
        "failures": number(totals.get("failures", 0)),
        "entries": entries,
        "pods": pod_labels(columns),
        "counts": counts,
        "shares": shares,
        "cells": cells,
        "fair_share": 1 / len(columns) if columns else None,
        "x0": first - base,
        "pod_rate": pod_rate,
        "node_failures": [node_failures[e] for e in entries],
        "markers": markers,
        "window_s": WINDOW_S,
        "findings": [{"severity": f.get("severity", "info"), "text": f.get("finding", "")}
                     for f in findings],
    }


def _target(target: Target | None) -> dict[str, Any] | None:
    if target is None:
        return None
    service = target.service
    return {"service": f"{service.namespace}/{service.name}",
            "node_port": service.node_port,
            "nodes": number(len(target.targeted_nodes)),
            "pods": number(len(target.endpoints)),
            "source": target.source}
