"""Plotly figures of one run, each returned as its JSON text (``fig.to_json()``).

Cluster-provided strings (pod and node names, fault labels) are HTML-escaped before they
reach plotly: plotly.js reads a small HTML subset in labels, so a pod named ``<b>x`` would
turn bold and ``&lt;`` shows up as ``<``; escaping makes every name display as it is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from harness.core.histogram import bucket_value_ms, hist_items
from harness.core.text import ms, number, p_value, pct

PALETTE = (
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD",
    "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF",
)
LABEL_CHARS = 32  # axis labels: long pod names are cut here, hover shows them whole
QUANTILE_NAMES = ("p50", "p95", "p99")
POD_AXIS = "pod (end of its name; hover for the full name)"


def label(text: object) -> str:
    """A string plotly displays literally (no pseudo-HTML)."""
    return html.escape(str(text), quote=False)


def short_labels(names: Sequence[str]) -> list[str]:
    """Escaped axis labels, cut to LABEL_CHARS and kept distinct (plotly merges equal ones)."""
    out: list[str] = []
    used: set[str] = set()
    for index, name in enumerate(names):
        cut = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        if cut in used:
            cut = f"{cut} #{index + 1}"
        used.add(cut)
        out.append(label(cut))
    return out


def short_names(names: Sequence[str]) -> list[str]:
    """What tells each name apart, unescaped: a pod's generated suffix
    (``helloworld-5f7c9d8b6-x2x7q`` -> ``x2x7q``), more of the name when that suffix is
    shared or too short to read alone (``web-0``), at most LABEL_CHARS; always distinct."""
    texts = [str(name) for name in names]
    parts = [text.split("-") for text in texts]
    tails = [{"-".join(p[-k:]) for k in range(1, len(p))} for p in parts]
    out: list[str] = []
    for i, segments in enumerate(parts):
        short = texts[i]
        for k in range(1, len(segments)):
            tail = "-".join(segments[-k:])
            if len(tail) < 3 or not segments[-k]:  # "0" or "": keep the part before it
                continue
            if not any(tail == texts[j] or tail in tails[j]
                       for j in range(len(texts)) if j != i):
                short = tail
                break
        out.append(short)
    cut = [s if len(s) <= LABEL_CHARS else s[: LABEL_CHARS - 1] + "…" for s in out]
    used: set[str] = set()
    for index, text in enumerate(cut):
        if text in used:  # equal names, or equal after the cut: plotly would merge them
            text = f"{text} #{index + 1}"
            cut[index] = text
        used.add(text)
    return cut


def pod_labels(names: Sequence[str]) -> list[str]:
    """Escaped axis labels of pods: their short names (the full name goes in the hover)."""
    return [label(name) for name in short_names(names)]


def log_ticks(low: float, high: float) -> tuple[list[float], list[str], list[float]]:
    """Ticks of a log axis from ``low`` to ``high`` (both > 0): 1-2-5 in each decade (1 per
    decade over more than four), labelled as numbers ("0.5", "2", "1,000"); and the axis
    range (log10) from the tick at or below ``low`` to the one at or above ``high``."""
    low, high = min(low, high), max(low, high)
    if not (low > 0 and math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"log_ticks needs positive finite bounds, got {low}, {high}")
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1, 2, 5) if last - first <= 4 else (1,)
    values = [float(f"{m}e{e}") for e in range(first, last + 1) for m in steps]
    below = [v for v in values if v <= low * (1 + 1e-9)]
    above = [v for v in values if v >= high * (1 - 1e-9)]
    start, stop = (below[-1] if below else values[0]), (above[0] if above else values[-1])
    if stop <= start:  # one value: widen to the neighbouring ticks
        index = values.index(start)
        start, stop = values[max(index - 1, 0)], values[min(index + 1, len(values) - 1)]
    kept = [v for v in values if start <= v <= stop]
    return kept, [number(v) for v in kept], [math.log10(start), math.log10(stop)]


def whole_seconds(rows: Sequence[Mapping[str, Any]], start: float | None,
                  end: float | None, slack: float = 0.02) -> list[Mapping[str, Any]]:
    """Per-second rows (``t``: the epoch second a row counts) whose whole second lies inside
    the run, ``start`` to ``end`` (epoch seconds): the first and last seconds usually ran for
    part of a second only, and their counts drawn as a rate would read as a ramp or a crash.
    ``slack``: seconds a row may miss and still count as whole. Unknown bounds keep all."""
    return [r for r in rows
            if (start is None or r["t"] >= start - slack)
            and (end is None or r["t"] + 1 <= end + slack)]


def partial_seconds(series: Mapping[str, Sequence[Mapping[str, Any]]], start: float | None,
                    end: float | None) -> list[tuple[int, float]]:
    """The seconds ``whole_seconds`` leaves out: (elapsed second, the part of it the run
    covered, 0-1), in order."""
    out: dict[int, float] = {}
    for rows in series.values():
        whole = {id(r) for r in whole_seconds(rows, start, end)}
        for row in rows:
            if id(row) not in whole:
                t = row["t"]
                covered = min(t + 1, end if end is not None else t + 1) - max(
                    t, start if start is not None else t)
                out[row["elapsed_s"]] = max(0.0, min(1.0, covered))
    return sorted(out.items())


def colors(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _layout(title: str, height: int = 380, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "template": "none",  # no theme JSON in every figure: the page stays small
        "title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "font": {"family": "system-ui, sans-serif", "size": 12},
        # A legend on the right never collides with rotated tick labels or axis titles.
        "legend": {"x": 1.02, "y": 1, "yanchor": "top"},
        "hoverlabel": {"namelength": -1},
    }
    layout.update(extra)
    return layout


def _axis(title: str, **extra: Any) -> dict[str, Any]:
    # Names axes say type "category": plotly would read pods "00001", "00002" as numbers.
    return {"title": {"text": title}, "gridcolor": "#e5e5e5", "zerolinecolor": "#cccccc",
            "automargin": True, **extra}


def heatmap(entries: Sequence[str], pods: Sequence[str], counts: Sequence[Sequence[int]]) -> str:
    total = sum(map(sum, counts)) or 1
    row_totals = [sum(row) or 1 for row in counts]
    shares = [[c / row_totals[i] for c in row] for i, row in enumerate(counts)]
    # Figures in cells and hovers come formatted from Python, so they read as in the tables
    # (escaped like names: "< 0.001 %" would otherwise open a tag in plotly's labels).
    custom = [[[label(pod), label(entry), label(pct(c / row_totals[i])), label(pct(c / total))]
               for pod, c in zip(pods, row, strict=True)]
              for i, (entry, row) in enumerate(zip(entries, counts, strict=True))]
    small = len(pods) * len(entries) <= 240  # numbers in cells only while they stay legible
    # Scaled to twice a fair share (or the largest cell): an even spread shows mid-blue, a
    # pod that takes everything or nothing stands out; a fixed 0-100 % would wash it out.
    top = max([max(row, default=0) for row in shares] + [2 / max(len(pods), 1)])
    trace = go.Heatmap(
        z=shares, x=pod_labels(pods), y=short_labels(entries), customdata=custom,
        text=[[f"{number(c)}<br>{label(pct(s))}" for c, s in zip(row, srow, strict=True)]
              for row, srow in zip(counts, shares, strict=True)],
        texttemplate="%{text}" if small else None,
        colorscale="Blues", zmin=0, zmax=min(1.0, top), colorbar={"title": {"text": "row share"},
                                                     "tickformat": ".0%"},
        hovertemplate="entry %{customdata[1]} → pod %{customdata[0]}<br>%{text}"
                      "<br>%{customdata[2]} of this entry's successes"
                      "<br>%{customdata[3]} of all successes<extra></extra>",
    )
    height = 190 + 60 * len(entries)
    return go.Figure(trace, _layout(
        "Which pod served requests entering each node (successes)", height,
        xaxis=_axis(POD_AXIS, tickangle=0, type="category"),
        yaxis=_axis("entry node", autorange="reversed", type="category"),
    )).to_json()


def pod_shares(pods: Sequence[Mapping[str, Any]], model: Mapping[str, Any] | None = None) -> str:
    """Share of successes per pod (summary rows) against what kube-proxy's rules predict for
    this topology and these connections (``model``: summary fairness.model), each pod with
    its expected share and 95 % band; without a model, against uniform 1/k."""
    pods = [p for p in pods if p["share"] is not None]
    names = pod_labels([p["name"] for p in pods])
    nodes = [p["node"] or "?" for p in pods]
    node_colors = colors(list(dict.fromkeys(nodes)))
    traces = []
    for node, color in node_colors.items():
        index = [i for i, n in enumerate(nodes) if n == node]
        traces.append(go.Bar(
            x=[names[i] for i in index], y=[pods[i]["share"] for i in index],
            name=f"on {label(node)}", marker={
                "color": color,
                # Outside the band: drawn with a red outline, the eye finds them first.
                "line": {"color": ["#B00020" if pods[i]["within_band"] is False else color
                                   for i in index], "width": 2},
            },
            customdata=[[label(pods[i]["name"]), number(pods[i]["successes"]),
                         label(pct(pods[i]["share"])), label(pct(pods[i]["expected_share"]))]
                        for i in index],
            hovertemplate="%{customdata[0]}<br>%{customdata[2]} (%{customdata[1]} successes)"
                          "; expected %{customdata[3]}<extra>%{fullData.name}</extra>",
        ))
    expected = [p["expected_share"] for p in pods]
    traces.append(go.Scatter(
        x=names, y=expected, mode="markers", name="expected (95 % band)",
        marker={"symbol": "line-ew-open", "size": 18, "color": "#1B7A1B",
                "line": {"width": 3}},
        error_y={"type": "data", "symmetric": False, "color": "#2CA02C", "thickness": 2,
                 "array": [p["band_high"] - p["expected_share"] for p in pods],
                 "arrayminus": [p["expected_share"] - p["band_low"] for p in pods]},
        hoverinfo="skip",
    ))
    if model:
        choice = "round-robin" if model.get("proxy_mode") == "ipvs" else "random"
        note = (f"green: what kube-proxy's per-connection {choice} choice predicts for this "
                f"topology ({model.get('policy')}) and {number(round(model.get('choices') or 0))}"
                f" connections; {model.get('verdict')} ({p_value(model.get('p'))})")
    else:
        note = (f"green: uniform 1/{number(len(pods))} and its 95 % range if each request "
                "picked a pod at random") if pods else ""
    layout = _layout(
        "Pod shares of successful requests vs. what kube-proxy predicts", 420,
        xaxis=_axis(POD_AXIS, tickangle=0, type="category", categoryorder="array",
                    categoryarray=names),
        yaxis=_axis("share of successes", tickformat=".0%", rangemode="tozero"),
        barmode="overlay",
    )
    layout["title"]["subtitle"] = {"text": label(note), "font": {"size": 12,
                                                                  "color": "#1B7A1B"}}
    layout["margin"]["t"] = 70
    return go.Figure(traces, layout).to_json()


def latency_bars(groups: Sequence[tuple[str, Sequence[float | None]]], title: str,
                 axis: str) -> str:
    """Grouped p50/p95/p99 bars, one group per (name, [p50, p95, p99]); a fourth value per
    group, when given, is drawn as "p99 with failures" (failed requests at their duration)."""
    names = short_labels([g[0] for g in groups])
    quantiles = list(QUANTILE_NAMES)
    if any(len(g[1]) > 3 and g[1][3] is not None for g in groups):
        quantiles.append("p99 with failures")
    traces = [
        go.Bar(x=names, y=[g[1][q] if q < len(g[1]) else None for g in groups],
               name=quantiles[q],
               customdata=[label(ms(g[1][q] if q < len(g[1]) else None)) for g in groups],
               hovertemplate="%{x}: %{customdata}<extra>" + quantiles[q] + "</extra>")
        for q in range(len(quantiles))
    ]
    return go.Figure(traces, _layout(
        title, 360, barmode="group", colorway=["#9ecae1", "#3182bd", "#08519c", "#B00020"],
        xaxis=_axis(axis, type="category"), yaxis=_axis("latency (ms)", rangemode="tozero"),
    )).to_json()


def cdf_points(hist: Any) -> tuple[list[float], list[float]]:
    items = hist_items(hist)
    total = sum(n for _, n in items)
    xs, ys, seen = [], [], 0
    for index, count in items:
        seen += count
        xs.append(round(bucket_value_ms(index), 4))
        ys.append(seen / total)
    return xs, ys


def log_axis(title: str, values: Sequence[float], **extra: Any) -> dict[str, Any]:
    """A log-scale axis over ``values`` with ticks that read as numbers (see log_ticks)."""
    positive = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not positive:
        return _axis(title, type="log", **extra)
    ticks, texts, span = log_ticks(min(positive), max(positive))
    return _axis(title, type="log", tickmode="array", tickvals=ticks, ticktext=texts,
                 range=span, **extra)


def latency_cdf(hists: Mapping[str, Any], node_colors: Mapping[str, str]) -> str:
    traces = []
    seen: list[float] = []
    for name, hist in hists.items():
        xs, ys = cdf_points(hist)
        seen += xs
        if xs:
            traces.append(go.Scatter(
                x=xs, y=ys, mode="lines", name=label(name), line={"shape": "hv",
                "color": node_colors.get(name)},
                hovertemplate="%{y:.1%} ≤ %{x:.2f} ms<extra>%{fullData.name}</extra>",
            ))
    return go.Figure(traces, _layout(
        "Latency CDF per entry node (successes)", 380,
        xaxis=log_axis("latency (ms, log scale)", seen),
        yaxis=_axis("fraction of requests ≤ x", tickformat=".0%", range=[0, 1.02]),
    )).to_json()


def locality_bars(cross_node: Mapping[str, Any]) -> str:
    """p50/p95/p99 of local, cross-node (and unknown) successes, from the summary."""
    names = {"local": "local", "cross_node": "cross-node", "unknown": "unknown"}
    groups = []
    for key, name in names.items():
        stats = cross_node.get(key) or {}
        if stats.get("count"):
            groups.append((f"{name} (n={number(stats['count'])})",
                           [stats["p50"], stats["p95"], stats["p99"]]))
    return latency_bars(groups, "Local vs. cross-node latency (successes)", "where the pod ran")


def _markers(markers: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
    shapes, notes = [], []
    for i, marker in enumerate(markers):
        x = marker["x"]
        shapes.append({"type": "line", "x0": x, "x1": x, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#B00020", "dash": "dot", "width": 1.5}})
        notes.append({"x": x, "yref": "paper", "y": 1 - 0.09 * (i % 3), "xanchor": "left",
                      "showarrow": False, "text": label(marker["label"]),
                      "font": {"size": 11, "color": "#B00020"}, "bgcolor": "rgba(255,255,255,.8)"})
    return shapes, notes


def over_time(series: Mapping[str, Sequence[Mapping[str, Any]]], field: str, title: str,
              axis: str, node_colors: Mapping[str, str],
              markers: Sequence[Mapping[str, Any]],
              bands: Sequence[Mapping[str, Any]] = (), failed_field: str | None = None,
              x_range: Sequence[float] | None = None) -> str:
    """One line per entry node of a per-second field, fault markers as vertical lines,
    incidents as shaded bands; ``failed_field``: failed requests' own dashed line per node
    (a time-out drawn at its duration, not hidden among the successes); ``x_range``: the
    axis's seconds (the same on every chart of a page, whatever seconds each one draws)."""
    traces = []
    lines = [(name, rows, field, False) for name, rows in series.items()]
    if failed_field:
        lines += [(name, rows, failed_field, True) for name, rows in series.items()
                  if any(r.get(failed_field) is not None for r in rows)]
    for name, rows, field, failed in lines:
        # numpy arrays: plotly validates and serialises them in bulk (as typed arrays), a
        # one-hour run's 3600 points per node would otherwise cost a Python call each.
        seconds = [r["elapsed_s"] for r in rows]
        # Gap-filled seconds are 0, 1, 2...: x0 + dx says it without an array per trace.
        contiguous = bool(seconds) and seconds[-1] - seconds[0] == len(seconds) - 1
        x_axis: dict[str, Any] = ({"x0": seconds[0], "dx": 1} if contiguous
                                  else {"x": np.array(seconds, dtype=np.int32)})
        values = [r[field] for r in rows]
        # Counts as int32, latencies as float32 (NaN: no success that second, a gap): base64
        # of 4-byte values is about as small as the decimal text, 8-byte floats twice that.
        counts = all(isinstance(v, int) for v in values)
        y = np.array([np.nan if v is None else v for v in values],
                     dtype=np.int32 if counts else np.float32)
        traces.append(go.Scatter(
            **x_axis, y=y, mode="lines+markers" if failed else "lines",
            name=label(f"{name} (failed)" if failed else name),
            line={"color": node_colors.get(name), "width": 1.5,
                  **({"dash": "dash"} if failed else {})},
            connectgaps=False,
            hovertemplate="%{x} s: %{y}<extra>%{fullData.name}</extra>",
        ))
    shapes, notes = _markers(markers)
    for band in bands:
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": band["x0"],
                       "x1": band["x1"], "y0": 0, "y1": 1, "layer": "below", "line": {"width": 0},
                       "fillcolor": "rgba(176,0,32,0.10)"})
        notes.append({"x": band["x0"], "yref": "paper", "y": 0.02, "xanchor": "left",
                      "showarrow": False, "text": label(band["label"]),
                      "font": {"size": 10, "color": "#B00020"}})
    return go.Figure(traces, _layout(
        title, 320, xaxis=_axis("seconds since start",
                                **({"range": list(x_range)} if x_range else {})),
        yaxis=_axis(axis, rangemode="tozero"), shapes=shapes, annotations=notes,
        hovermode="x unified",
        # Above the plot, not beside it: the page's time charts keep one width, so their
        # seconds line up one above the other.
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02,
                "yanchor": "bottom"},
    )).to_json()


def share_bars(names: Sequence[str], shares: Sequence[float], title: str, color: str,
               expected: float | None = None, pods: bool = False) -> str:
    """Small horizontal share bars (compare page); ``pods``: the names are pods, labelled by
    their short names (the full name in the hover)."""
    labels = pod_labels(names) if pods else short_labels(names)
    shapes = [] if expected is None else [
        {"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": expected, "x1": expected,
         "line": {"color": "#2CA02C", "dash": "dash"}}]
    trace = go.Bar(y=labels, x=list(shares), orientation="h", marker={"color": color},
                   customdata=[[label(n), label(pct(s))]
                               for n, s in zip(names, shares, strict=True)],
                   hovertemplate="%{customdata[0]}: %{customdata[1]}<extra></extra>")
    return go.Figure(trace, _layout(
        title, max(200, 70 + 22 * len(names)), showlegend=False,
        margin={"l": 10, "r": 10, "t": 40 if title else 24, "b": 30},
        xaxis=_axis("", tickformat=".0%", range=[0, max([*shares, expected or 0, 0.01]) * 1.1]),
        yaxis=_axis("", autorange="reversed", type="category"), shapes=shapes,
    )).to_json()


def predicted_vs_measured(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """A what-if re-run (compare page): each pod's measured share as a bar, the share the
    what-if predicted as a marker with its 95 % band (``rows``: whatif.check_rerun's)."""
    names = pod_labels([r["pod"] for r in rows])
    measured = [r["measured_share"] or 0.0 for r in rows]
    traces = [
        go.Bar(x=names, y=measured, name="measured (re-run)", marker={
            "color": PALETTE[0],
            "line": {"color": ["#B00020" if r["within_band"] is False else PALETTE[0]
                               for r in rows], "width": 2}},
            customdata=[[label(r["pod"]), label(pct(r["measured_share"])),
                         label(pct(r["expected_share"]))] for r in rows],
            hovertemplate="%{customdata[0]}<br>measured %{customdata[1]}; predicted "
                          "%{customdata[2]}<extra></extra>"),
        go.Scatter(x=names, y=[r["expected_share"] for r in rows], mode="markers",
                   name="predicted (95 % band)", hoverinfo="skip",
                   marker={"symbol": "line-ew-open", "size": 18, "color": "#5B2A9E",
                           "line": {"width": 3}},
                   error_y={"type": "data", "symmetric": False, "color": "#7B4BC4",
                            "thickness": 2,
                            "array": [r["band_high"] - r["expected_share"] for r in rows],
                            "arrayminus": [r["expected_share"] - r["band_low"] for r in rows]}),
    ]
    return go.Figure(traces, _layout(
        title, 380,
        xaxis=_axis(POD_AXIS, tickangle=0, type="category", categoryorder="array",
                    categoryarray=names),
        yaxis=_axis("share of successes", tickformat=".0%", rangemode="tozero"),
    )).to_json()
