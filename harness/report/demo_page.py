"""The demo's page: the verdict first, one chart per question, then every scenario.

``nodeport-harness demo`` (harness/commands/demo.py) measures the scenarios and words the
verdict; this module only draws them: ``write_demo_page`` writes ``index.html`` from the
demo's data (as in demo.json) with three plotly charts, each answering one question:

1. ``ingress``: which node the requests entered through, with one node's address, every
   node's, and the LoadBalancer's;
2. ``failures``: the failed share second by second around node-1 going down, for the same
   three clients;
3. ``connections``: how many pods one connection reaches, keep-alive against a new
   connection per request, told by the share of requests each pod served.

A chart is drawn only when its scenarios ran (``demo --only``). Every figure is written by
the one formatter set (harness.core.text); every name from the cluster is escaped, in the
HTML by jinja2 and in the charts' labels by ``label``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from harness import __version__
from harness.core.text import number, pct, printable, rate, secs
from harness.report.files import write_text_atomic
from harness.report.html import SHARED_PLOTLYJS, figures_json, plotly_loader, render

# Who enters where: the three clients of the story, in the order it tells them.
CLIENTS = (
    ("single", "one node's address", "#B00020"),
    ("all", "every node's address", "#C25E00"),
    ("lb", "the LoadBalancer", "#1B7A1B"),
)
INGRESS_SCENARIOS = {"single": "naive", "all": "all-keepalive", "lb": "fail-lb"}
FAILURE_SCENARIOS = {"single": "fail-single", "all": "fail-all", "lb": "fail-lb"}
KEEPALIVE_COLOR, CLOSE_COLOR, EVEN_COLOR = "#C25E00", "#1F5FA8", "#7F7F7F"
CHART_IDS = ("ingress", "failures", "connections")


def label(text: object) -> str:
    """A string plotly displays literally (it reads a small HTML subset in labels)."""
    return html.escape(str(text), quote=False)


def short_pod_names(names: Sequence[str]) -> dict[str, str]:
    """Pod name -> its last dash-separated part ("helloworld-5d8f-65kmr" -> "65kmr"), or the
    whole name when the parts would not tell the pods apart."""
    suffixes = {name: name.rsplit("-", 1)[-1] for name in names}
    if len(set(suffixes.values())) == len(suffixes) and all(suffixes.values()):
        return suffixes
    return {name: name for name in names}


# -- the page ---------------------------------------------------------------------------------

def write_demo_page(demo_dir: Path, data: Mapping[str, Any],
                    verdict: Sequence[tuple[str, str, Sequence[Mapping[str, Any]]]],
                    plotlyjs: str = "directory") -> Path:
    """Write ``demo_dir/index.html``. ``verdict``: (heading, severity, claims) groups, each
    claim as in demo.json (``text`` and the ``scenario`` it rests on)."""
    loader = plotly_loader(plotlyjs, demo_dir / "page")
    if plotlyjs == "directory":
        # The runs' shared plotly.min.js sits in the demo folder, beside this page.
        loader = {**loader, "src": SHARED_PLOTLYJS}
    return write_text_atomic(demo_dir / "index.html", render_demo_page(data, verdict, loader))


def render_demo_page(data: Mapping[str, Any],
                     verdict: Sequence[tuple[str, str, Sequence[Mapping[str, Any]]]],
                     plotly: Mapping[str, Any]) -> str:
    figures = demo_figures(data)
    scenarios = list(data.get("scenarios") or [])
    return render("demo.html.j2", {
        "title": "Why a NodePort Service needs a LoadBalancer",
        "subtitle": subtitle(data),
        "verdict": [(heading, severity, list(claims)) for heading, severity, claims in verdict
                    if claims],
        "charts": [chart for chart in chart_blocks(data) if chart["id"] in figures],
        "figures": figures_json(figures),
        "plotly": plotly,
        "overview": [overview_row(s) for s in scenarios],
        "cards": [card(s) for s in scenarios],
        "timing": timing_text(data),
        "version": __version__,
        "generated": time.time(),
    })


def subtitle(data: Mapping[str, Any]) -> str:
    placement = "/".join(number(n) for n in data.get("placement") or [])
    nodes = len(data.get("placement") or [])
    truth = data.get("ground_truth") or {}
    lab = "the embedded lab"
    if truth.get("control_plane") == "real":
        lab = (f"the real lab (Kubernetes {printable(truth.get('kubernetes_version') or '?')}: "
               "its own API server, controllers, scheduler and kube-proxy)")
    elif truth.get("datapath") == "kernel":
        lab = "the embedded lab on the kernel datapath"
    return (f"Measured on {lab}: {number(nodes)} nodes with pods placed {placement} "
            f"and a LoadBalancer address in front; {number(data.get('users'))} users per "
            f"scenario, {secs(data.get('seconds_per_scenario'))} of load each. Every figure "
            "below comes from these runs.")


def timing_text(data: Mapping[str, Any]) -> str:
    """Where the demo's time went, from what was measured."""
    scenarios = [s for s in data.get("scenarios") or [] if s.get("ran_s") is not None]
    total = data.get("duration_s")
    if not scenarios:
        return f"The demo took {secs(total)}."
    ran = [s["ran_s"] for s in scenarios]
    runs = (f"{secs(min(ran))}" if round(min(ran), 2) == round(max(ran), 2)
            else f"{secs(min(ran))} to {secs(max(ran))}")
    walls = [s["wall_s"] - s["ran_s"] for s in scenarios if s.get("wall_s") is not None]
    overhead = (f", plus {secs(sum(walls) / len(walls))} per run on average to start Locust "
                "and write its report" if walls else "")
    lab = (f"{secs(data['lab_start_s'])} to start the lab, then "
           if data.get("lab_start_s") is not None else "")
    return (f"The demo took {secs(total)}: {lab}{number(len(scenarios))} runs of "
            f"{secs(data.get('seconds_per_scenario'))} (-t) that lasted {runs} (a run stops "
            f"by waiting up to its time-out for the requests in flight){overhead}.")


def overview_row(scenario: Mapping[str, Any]) -> dict[str, Any]:
    summary = scenario.get("summary") or {}
    totals = summary.get("totals") or {}
    keep = summary.get("keepalive") or {}
    run = summary.get("run") or {}
    return {
        "id": scenario["id"], "title": scenario["title"],
        "entry": run.get("entry_strategy"), "connection": run.get("connection_mode"),
        "requests": number(totals.get("requests")), "failed": pct(totals.get("fail_ratio")),
        "bad": bool(totals.get("fail_ratio")),
        "rps": number(totals.get("rps")),
        "p95": number(((summary.get("latency") or {}).get("overall") or {}).get("p95")),
        "cross": pct((summary.get("cross_node") or {}).get("share")),
        "connections": number(keep.get("connections")),
        "per_connection": number(keep.get("mean_requests_per_connection")),
        "pods_per_connection": number(keep.get("mean_distinct_pods")),
        "ran": secs(scenario.get("ran_s")),
        "exit_code": scenario.get("exit_code"),
    }


def card(scenario: Mapping[str, Any]) -> dict[str, Any]:
    summary = scenario.get("summary") or {}
    worst = list(scenario.get("worst") or [])
    rows = []
    for node in summary.get("nodes") or []:
        if not node.get("requests"):
            continue
        cells = [pct(node.get("share")), pct(node.get("availability"))]
        for incident in worst:
            seen = (incident.get("availability") or {}).get(node.get("name")) or {}
            cells += [pct(seen.get("before")), pct(seen.get("during"))]
        rows.append({"name": node.get("name"), "cells": cells,
                     "bad": (node.get("availability") or 1) < 1})
    return {
        "id": scenario["id"], "title": scenario["title"], "story": scenario.get("story"),
        "headline": scenario.get("headline"), "command": " ".join(
            ["nodeport-harness", "run", *scenario.get("args", [])]),
        "incidents": [i.get("name") for i in worst], "rows": rows,
        "findings": [{"severity": f.get("severity"), "text": f.get("text")}
                     for f in (summary.get("findings") or [])[:4]],
        "exit_code": scenario.get("exit_code"),
    }


# -- the charts -------------------------------------------------------------------------------

def _by_id(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {s["id"]: s.get("summary") or {} for s in data.get("scenarios") or []
            if s.get("summary")}


def _node_names(data: Mapping[str, Any], summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names = [n["name"] for n in (data.get("ground_truth") or {}).get("nodes") or []]
    for summary in summaries.values():
        names += [n["name"] for n in summary.get("nodes") or [] if n.get("is_node", True)]
    return list(dict.fromkeys(names))


def ingress_shares(data: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """client -> {node: share of the requests that entered through it}."""
    summaries = _by_id(data)
    out: dict[str, dict[str, float]] = {}
    for client, sid in INGRESS_SCENARIOS.items():
        summary = summaries.get(sid)
        if not summary:
            continue
        if client == "lb":
            lb = summary.get("lb") or {}
            if lb.get("seen") and lb.get("shares"):
                out[client] = {n: s or 0.0 for n, s in lb["shares"].items()}
        else:
            shares = {n["name"]: n.get("share") or 0.0 for n in summary.get("nodes") or []
                      if n.get("is_node", True)}
            if any(shares.values()):
                out[client] = shares
    return out


def _fault(summary: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((f for f in summary.get("faults") or [] if f.get("action") == "down"), None)


def failure_steps(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """client -> the failed share in each second of its node-failure run, in seconds from
    the fault: {fault, x (bin edges), y, text}."""
    summaries = _by_id(data)
    out: dict[str, dict[str, Any]] = {}
    for client, sid in FAILURE_SCENARIOS.items():
        summary = summaries.get(sid) or {}
        fault = _fault(summary)
        rows = [r for r in (summary.get("timeline") or {}).get("overall") or []
                if r.get("requests")]
        if not fault or not rows or fault.get("t") is None:
            continue
        x, y, text = [], [], []
        for row in rows:
            start, end = row["t"] - fault["t"], row["t"] + 1 - fault["t"]
            share = row["failures"] / row["requests"]
            x.append(start)
            y.append(share)
            text.append(label(f"{secs(start)} to {secs(end)}: {number(row['failures'])} of "
                              f"{number(row['requests'])} requests failed ({pct(share)})"))
        # The last second's step ends where it ends.
        x.append(rows[-1]["t"] + 1 - fault["t"])
        y.append(y[-1])
        text.append(text[-1])
        out[client] = {"fault": fault, "x": x, "y": y, "text": text}
    return out


def pod_shares(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keep-alive against a new connection per request: each pod's share, and the
    connections behind it."""
    summaries = _by_id(data)
    keep, close = summaries.get("all-keepalive"), summaries.get("all-close")
    if not keep or not close:
        return None
    order = [p["name"] for p in (data.get("ground_truth") or {}).get("pods") or []]
    order += [p["name"] for s in (keep, close) for p in s.get("pods") or []]
    pods = [p for p in dict.fromkeys(order)
            if any(q["name"] == p and q.get("successes") for s in (keep, close)
                   for q in s.get("pods") or [])]
    if not pods:
        return None

    def shares(summary: Mapping[str, Any]) -> list[float]:
        by = {p["name"]: p.get("share") or 0.0 for p in summary.get("pods") or []}
        return [by.get(p, 0.0) for p in pods]

    expected = [p.get("expected_share") for p in close.get("pods") or []
                if p.get("expected_share")]
    return {"pods": pods, "keepalive": shares(keep), "close": shares(close),
            "keepalive_stats": keep.get("keepalive") or {},
            "close_stats": close.get("keepalive") or {},
            "even": expected[0] if expected and len(set(expected)) == 1 else 1 / len(pods)}


def demo_figures(data: Mapping[str, Any]) -> dict[str, str]:
    """Chart id -> plotly figure JSON, for the questions whose scenarios ran."""
    figures: dict[str, str] = {}
    ingress = ingress_shares(data)
    if ingress:
        figures["ingress"] = ingress_chart(ingress, _node_names(data, _by_id(data)))
    steps = failure_steps(data)
    if steps:
        figures["failures"] = failures_chart(steps)
    pods = pod_shares(data)
    if pods:
        figures["connections"] = connections_chart(pods)
    return figures


def _layout(ytitle: str, xtitle: str, **extra: Any) -> dict[str, Any]:
    axis = {"gridcolor": "#e5e5e5", "zerolinecolor": "#cccccc", "automargin": True}
    return {
        "template": "none", "height": 400, "paper_bgcolor": "white", "plot_bgcolor": "white",
        "margin": {"l": 56, "r": 12, "t": 30, "b": 110},
        "font": {"family": "system-ui, sans-serif", "size": 12},
        # At the foot of the figure, across: the plot keeps its width in a third of the page
        # and the legend never meets the axis title.
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "yref": "container",
                   "y": 0, "yanchor": "bottom"},
        "showlegend": True,  # with one trace too: the legend names the client
        "hoverlabel": {"namelength": -1},
        "xaxis": {**axis, "title": {"text": xtitle}},
        "yaxis": {**axis, "title": {"text": ytitle}, "tickformat": ".0%",
                  "rangemode": "tozero"},
        **extra,
    }


def _even_line(share: float) -> dict[str, Any]:
    """A dashed line at an even share (the captions say so; a label would meet the bars)."""
    return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": share, "y1": share,
            "line": {"color": EVEN_COLOR, "dash": "dash", "width": 1.5}}


def ingress_chart(shares: Mapping[str, Mapping[str, float]], nodes: Sequence[str]) -> str:
    nodes = [n for n in nodes if any(n in s for s in shares.values())]
    traces = []
    for client, name, color in CLIENTS:
        if client not in shares:
            continue
        values = [shares[client].get(n, 0.0) for n in nodes]
        traces.append(go.Bar(
            x=[label(n) for n in nodes], y=values, name=label(name), marker={"color": color},
            # Inside the bar, along it: shown where it fits, hidden on a bar too short.
            text=[label(pct(v)) if v else "" for v in values], textposition="inside",
            textangle=-90, insidetextanchor="end", textfont={"color": "white", "size": 11},
            customdata=[label(pct(v)) for v in values],
            hovertemplate=f"{label(name)}: %{{customdata}} entered through %{{x}}"
                          "<extra></extra>"))
    even = 1 / len(nodes) if nodes else None
    layout = _layout("share of requests entering", "entry node", barmode="group",
                     shapes=[_even_line(even)] if even else [],
                     uniformtext={"minsize": 10, "mode": "hide"})
    layout["yaxis"]["range"] = [0, 1.02]
    return go.Figure(traces, layout).to_json()


def failures_chart(steps: Mapping[str, Mapping[str, Any]]) -> str:
    traces = []
    for client, name, color in CLIENTS:
        if client not in steps:
            continue
        step = steps[client]
        traces.append(go.Scatter(
            x=step["x"], y=step["y"], name=label(name), mode="lines",
            line={"color": color, "width": 3, "shape": "hv"}, customdata=step["text"],
            hovertemplate=f"{label(name)}<br>%{{customdata}}<extra></extra>"))
    fault_name = label(next(iter(steps.values()))["fault"].get("name") or "the node")
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": 0, "x1": 0, "y0": 0,
               "y1": 1, "line": {"color": "#1D2330", "dash": "dot", "width": 2}}]
    # Beside the line, before the fault where nothing fails yet (clear of the tool bar).
    note = {"x": 0, "xref": "x", "y": 0.5, "yref": "paper", "text": f"{fault_name} down",
            "showarrow": False, "xanchor": "right", "yanchor": "middle", "xshift": -4,
            "bgcolor": "white", "font": {"size": 11, "color": "#1D2330"}}
    layout = _layout("requests failed in the second", f"seconds from {fault_name} going down",
                     shapes=shapes, annotations=[note])
    layout["yaxis"]["range"] = [0, 1.08]
    return go.Figure(traces, layout).to_json()


def connections_chart(pods: Mapping[str, Any]) -> str:
    short = short_pod_names(pods["pods"])
    x = [label(short[p]) for p in pods["pods"]]
    full = [label(p) for p in pods["pods"]]
    traces = []
    for key, name, color in (("keepalive", "keep-alive", KEEPALIVE_COLOR),
                             ("close", "new connection per request", CLOSE_COLOR)):
        stats = pods[f"{key}_stats"]
        detail = label(f"{number(stats.get('connections'))} connections, "
                       f"{number(stats.get('mean_distinct_pods'))} pod per connection")
        traces.append(go.Bar(
            x=x, y=pods[key], name=label(name), marker={"color": color},
            customdata=[[f, label(pct(v))] for f, v in zip(full, pods[key], strict=True)],
            hovertemplate=f"{label(name)} ({detail})<br>%{{customdata[0]}}: "
                          "%{customdata[1]} of requests<extra></extra>"))
    layout = _layout("share of requests served", "pod (name suffix)", barmode="group",
                     shapes=[_even_line(pods["even"])])
    return go.Figure(traces, layout).to_json()


def chart_blocks(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each chart's question and the caption that reads its figures out."""
    return [
        {"id": "ingress", "question": "1. Where does the traffic enter?",
         "caption": _ingress_caption(data)},
        {"id": "failures", "question": "2. What fails when a node goes down?",
         "caption": _failures_caption(data)},
        {"id": "connections", "question": "3. How many pods per connection?",
         "caption": _connections_caption(data)},
    ]


def _ingress_caption(data: Mapping[str, Any]) -> str:
    shares = ingress_shares(data)
    parts = []
    if "single" in shares:
        node, top = max(shares["single"].items(), key=lambda kv: kv[1])
        parts.append(f"The naive client (scenario 1) entered {pct(top)} through {node}.")
    if "all" in shares:
        parts.append("Rotating over every node's address (2): "
                     + ", ".join(pct(s) for s in shares["all"].values()) + ".")
    if "lb" in shares:
        fault = _fault(_by_id(data).get("fail-lb") or {}) or {}
        parts.append("The LoadBalancer (4c) passed requests to "
                     + ", ".join(f"{n} {pct(s)}" for n, s in shares["lb"].items())
                     + (f"; {fault.get('name')} went down after {secs(fault.get('t'))}, "
                        "so its share stops there" if fault else "") + ".")
    return " ".join(parts) + " Dashed: an even share per node."


def _failures_caption(data: Mapping[str, Any]) -> str:
    steps = failure_steps(data)
    parts = []
    for client, name, _color in CLIENTS:
        if client not in steps:
            continue
        fault = steps[client]["fault"]
        after = fault.get("steady_fail_ratio")
        rps = fault.get("rps_steady")
        if after is None:
            parts.append(f"through {name}, the run ended before the fault took hold")
            continue
        parts.append(f"through {name}, {pct(after)} failed once it took hold"
                     + (f", at {rate(rps)}" if rps is not None else ""))
    if not parts:
        return ""
    text = ("Share of requests failing in each second, from the node going down (0 s). "
            "After the fault, " + "; ".join(parts) + ".")
    if "single" in steps or "all" in steps:
        text += (" Clients still sending to the dead node wait a time-out for each of those "
                 "requests, so they send few, and those fail.")
    return text


def _connections_caption(data: Mapping[str, Any]) -> str:
    pods = pod_shares(data)
    if not pods:
        return ""
    k, c = pods["keepalive_stats"], pods["close_stats"]
    keep, close = pods["keepalive"], pods["close"]
    return (f"Share of requests each pod served (scenarios 2 and 3). With keep-alive the "
            f"clients opened {number(k.get('connections'))} connections; each stayed on "
            f"{number(k.get('mean_distinct_pods'))} pod for "
            f"{number(k.get('mean_requests_per_connection'))} requests on average, so pods got "
            f"{pct(min(keep))} to {pct(max(keep))}. With a new connection per request, "
            f"{number(c.get('connections'))} connections of one request each: "
            f"{pct(min(close))} to {pct(max(close))}. Dashed: an even share.")
