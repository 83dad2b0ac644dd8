"""A capacity run's own outputs: capacity.json, steps.csv, capacity.html and a summary.md block.

``build_report`` calls ``build_capacity`` for run folders whose run.json carries
``capacity`` settings (written by ``nodeport-harness capacity``), so re-rendering a folder
with ``nodeport-harness report`` rebuilds these too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from harness import __version__
from harness.core.capacity import GENERATOR_BOUND, analyse_capacity, capacity_headline
from harness.core.text import ms, number, pct, rate, secs, when
from harness.errors import HarnessError, ReportError
from harness.report.charts import label
from harness.report.csvs import to_csv
from harness.report.files import finite, write_text_atomic
from harness.report.html import figures_json, plotly_loader, render
from harness.report.markdown import md
from harness.report.rundir import RunData

STEP_FIELDS = (
    "step", "users", "offered_rps", "paced_users", "start", "end", "window_s", "requests",
    "successes", "failures", "fail_ratio", "rps", "goodput_rps", "rps_min", "rps_max",
    "p50_ms", "p95_ms", "p99_ms", "meets_slo", "gain", "held", "pods_served", "jain",
    "max_pod_share", "min_pod_share", "pod_shares", "generator_cpu", "generator_process",
    "generator_busy", "generator_machine_idle", "generator_starved", "generator_bound",
    "generator_cpu_by_process",
)
OUTPUTS = ("capacity.html", "capacity.json", "steps.csv")
KNEE_COLOR, BREACH_COLOR, TRUTH_COLOR = "#1B7A1B", "#B00020", "#7F7F7F"


def build_capacity(data: RunData, plotlyjs: str = "inline") -> dict[str, Any]:
    """Write the capacity outputs of a run folder; returns result, files and markdown."""
    try:
        result = analyse_capacity(data.spread, data.run, data.target)
    except HarnessError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ReportError(f"{data.run_dir} holds malformed capacity data ({type(err).__name__}: "
                          f"{err}): pass a folder written by nodeport-harness capacity") from err
    out = data.run_dir
    files: dict[str, str] = {}

    def write(name: str, text: str) -> None:
        files[name] = str(write_text_atomic(out / name, text))

    write("capacity.json", json.dumps(finite(result), indent=2) + "\n")
    write("steps.csv", to_csv(step_rows(result), STEP_FIELDS))
    loader = plotly_loader(plotlyjs, out)
    figures = capacity_figures(result)
    write("capacity.html", render("capacity.html.j2", {
        **page_context(result, data), "plotly": loader, "figures": figures_json(figures),
        "charts": set(figures),
    }))
    return {"result": result, "files": files, "markdown": summary_block(result)}


def step_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per step, as in steps.csv and the page's table."""
    rows = []
    for step in result["steps"]:
        shares = {p: s for p, s in (step.get("pod_shares") or {}).items() if s is not None}
        rows.append({
            **{key: step.get(key) for key in STEP_FIELDS},
            "users": step.get("users"),
            "fail_ratio": _round(step.get("fail_ratio")),
            "rps": _round(step.get("rps"), 3), "goodput_rps": _round(step.get("goodput_rps"), 3),
            "p50_ms": _round(step.get("p50"), 3), "p95_ms": _round(step.get("p95"), 3),
            "p99_ms": _round(step.get("p99"), 3), "gain": _round(step.get("gain")),
            "jain": _round(step.get("jain")),
            "max_pod_share": _round(max(shares.values())) if shares else None,
            "min_pod_share": _round(min(shares.values())) if shares else None,
            "pod_shares": " ".join(f"{pod}={share:.4f}" for pod, share in shares.items()),
            "generator_cpu": _round(step.get("generator_cpu"), 4),
            "generator_busy": _round(step.get("generator_busy"), 4),
            "generator_machine_idle": _round(step.get("generator_machine_idle"), 4),
            "generator_cpu_by_process": " ".join(
                f"{name}={share:.4f}"
                for name, share in (step.get("generator_cpu_by_process") or {}).items()),
        })
    return rows


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


# -- the page -----------------------------------------------------------------------------------

def page_context(result: Mapping[str, Any], data: RunData) -> dict[str, Any]:
    service = (data.target or {}).get("service") or {}
    name = f"{service.get('namespace')}/{service.get('name')}" if service else "unknown Service"
    steps = result["steps"]
    mode = "closed loop (users)" if result["mode"] == "closed" else "open loop (offered rate)"
    at_least = "at least " if result.get("capacity_is_lower_bound") else ""
    at_most = "at most " if result.get("pods_needed_is_upper_bound") else ""
    plateau = result["plateau_index"]
    facts = [
        ("capacity at the SLO", at_least + rate(result["capacity_rps"])
         if result["capacity_rps"] is not None else rate(None)),
        ("per pod", f"{at_least}{rate(result['capacity_per_pod'])} over "
                    f"{number(result['pods'])} pods"),
        ("per node", at_least + rate(result["capacity_per_node"]) + (
            f" over {number(result['nodes'])} nodes with pods" if result["nodes"] else "")),
        ("most delivered (any step)", rate(result["saturation_rps"])),
        ("SLO", f"p95 ≤ {ms(result['slo']['p95_ms'])}, failures ≤ "
                f"{pct(result['slo']['fail_ratio'])}"),
        ("knee", _knee_fact(result)),
        ("throughput stopped growing",
         f"after step {steps[plateau - 1]['step']} ({rate(steps[plateau - 1]['rps'])})"
         if plateau is not None else "not within the steps that count"),
        ("load generator", _generator_fact(result)),
    ]
    if result["target_rps"] is not None:
        facts.append(("target", f"{rate(result['target_rps'])} with "
                                f"{pct(result['headroom'])} headroom"))
        facts.append(("pods needed", at_most + number(result["pods_needed"])))
    lab = result.get("lab")
    if lab and lab.get("true_capacity_rps") is not None:
        facts.append(("lab truth", f"{rate(lab['true_capacity_rps'])} "
                                   f"({number(lab['pods'])} pods × "
                                   f"{number(lab['pod_concurrency'])} / "
                                   f"{ms(lab['pod_service_ms'])})"))
    elif lab:
        facts.append(("lab truth", "none: the lab's pods have no service time"))
    run_facts = [
        ("run", data.run_id), ("load model", mode),
        ("steps", f"{number(len(result['steps']))} × {secs(result['step_time_s'])}, first "
                  f"{secs(result['settle_s'])} of each left out"),
        ("entry / connection", f"{result.get('entry') or '?'} / "
                               f"{result.get('connection') or '?'}"),
        ("Service", name),
    ]
    if result["mode"] == "open":
        run_facts.append(("pacing", f"{secs(result['pacing_s'])} between one user's requests"))
    return {
        "headline": headline(result),
        "title": f"Capacity: {name} ({data.run_id})",
        "subtitle": f"started {when(data.run.get('started'))} · {mode} · "
                    f"{number(len(result['steps']))} steps",
        **_verdict(result),
        "reasoning": result["reasoning"],
        "facts": facts,
        "run_facts": run_facts,
        "load_model": result.get("load_model") or mode,
        "notes": result["notes"],
        "steps": table_rows(result),
        "generator_note": (
            f"Load generator CPU: the busiest Locust process's share of one core over the step's "
            f"measured window. A step where it reached {pct(GENERATOR_BOUND)}, or where a "
            f"process was running or waiting for a CPU {pct(GENERATOR_BOUND)} of the time on a "
            "machine with no CPU to spare (starved), measured the client, not the pods: it is "
            "marked and can be neither the knee nor the breach."
            if result.get("generator_cpu_max") is not None else
            "Load generator CPU: not recorded in this run."),
        "partial": result.get("partial"),
        "pods": _pod_names(result),
        "generated": time.time(),
        "version": __version__,
    }


def headline(result: Mapping[str, Any]) -> str:
    """The recommendation in one sentence (the reasoning paragraph follows it)."""
    return result.get("headline") or capacity_headline(result)


def _verdict(result: Mapping[str, Any]) -> dict[str, str]:
    """The badge before the headline: what kind of answer this is."""
    if result["knee_index"] is None:
        if result["steps"] and result.get("limited_by") == "load_generator":
            return {"verdict": "critical", "verdict_text": "load generator was the limit"}
        return {"verdict": "critical", "verdict_text": "below the first step"}
    if result.get("capacity_is_lower_bound"):
        return {"verdict": "warning", "verdict_text": "lower bound"}
    return {"verdict": "ok", "verdict_text": "measured"}


def _knee_fact(result: Mapping[str, Any]) -> str:
    knee, steps = result["knee_index"], result["steps"]
    if knee is None:
        return ("none (the load generator was the limit from the first step)"
                if result.get("limited_by") == "load_generator" else
                "none (the first step broke the SLO)")
    text = f"step {steps[knee]['step']}"
    if result.get("limited_by") == "max_load":
        return text + " (no step broke the SLO: a lower bound)"
    if result.get("limited_by") == "load_generator":
        return text + " (the load generator was the limit next: a lower bound)"
    return text


def _generator_fact(result: Mapping[str, Any]) -> str:
    steps, bound = result["steps"], result.get("generator_bound_index")
    if bound is not None:
        step = steps[bound]
        if step.get("generator_starved") and (step.get("generator_cpu") or 0) < GENERATOR_BOUND:
            return (f"the limit from step {step['step']} (starved: running or waiting for a CPU "
                    f"{pct(step.get('generator_busy'))} of the time, "
                    f"{pct(step.get('generator_cpu'))} of a core)")
        return f"the limit from step {step['step']} ({pct(step.get('generator_cpu'))} of a core)"
    if result.get("generator_cpu_max") is None:
        return "not recorded"
    return (f"not the limit: busiest process peaked at {pct(result['generator_cpu_max'])} of a "
            f"core (limit {pct(GENERATOR_BOUND)})")


def table_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    knee, breach, plateau = (result["knee_index"], result["breach_index"],
                             result["plateau_index"])
    bound = result.get("generator_bound_index")
    rows = []
    for index, step in enumerate(result["steps"]):
        marks = []
        if index == knee:
            marks.append("knee")
        if index == breach:
            marks.append("breach")
        if index == plateau:
            marks.append("plateau")
        if index == result["saturation_index"]:
            marks.append("peak")
        if step.get("generator_bound"):
            marks.append("generator limit" if index == bound else "generator-bound")
        rows.append({**step, "marks": ", ".join(marks),
                     "load_text": _load_text(step),
                     "shares": [(pod, (step.get("pod_shares") or {}).get(pod))
                                for pod in _pod_names(result)]})
    return rows


def _pod_names(result: Mapping[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for step in result["steps"]:
        names.update(dict.fromkeys(step.get("pod_shares") or {}))
    return list(names)


def _load_text(step: Mapping[str, Any]) -> str:
    if step.get("users") is not None:
        return f"{number(step['users'])} users"
    return (f"{rate(step.get('offered_rps'))} offered "
            f"({number(step.get('paced_users'))} users)")


# -- charts -------------------------------------------------------------------------------------

def capacity_figures(result: Mapping[str, Any]) -> dict[str, str]:
    """Chart id -> plotly figure JSON: throughput and latency against the load, knee marked."""
    steps = result["steps"]
    if not steps:
        return {}
    return {"throughput": throughput_chart(result), "latency": latency_chart(result)}


def _x(result: Mapping[str, Any]) -> tuple[list[float], str]:
    steps = result["steps"]
    if result["mode"] == "closed":
        return [s.get("users") for s in steps], "users (closed loop)"
    return [s.get("offered_rps") for s in steps], "offered load, req/s (open loop)"


def _marks(result: Mapping[str, Any], x: Sequence[float]) -> list[dict[str, Any]]:
    """Vertical lines at the knee and the first breach."""
    shapes = []
    for key, color, text in (("knee_index", KNEE_COLOR, "knee"),
                             ("breach_index", BREACH_COLOR, "SLO broken")):
        index = result.get(key)
        if index is not None and x[index] is not None:
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x[index],
                           "x1": x[index], "y0": 0, "y1": 1,
                           "line": {"color": color, "dash": "dot", "width": 2},
                           "label": {"text": text, "textposition": "end",
                                     "font": {"color": color, "size": 11}}})
    return shapes


def _layout(title: str, xtitle: str, ytitle: str, **extra: Any) -> dict[str, Any]:
    axis = {"gridcolor": "#e5e5e5", "zerolinecolor": "#cccccc", "automargin": True}
    return {
        "template": "none", "height": 400, "paper_bgcolor": "white", "plot_bgcolor": "white",
        "title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "legend": {"x": 1.02, "y": 1, "yanchor": "top"},
        "xaxis": {**axis, "title": {"text": xtitle}, "rangemode": "tozero"},
        "yaxis": {**axis, "title": {"text": ytitle}, "rangemode": "tozero"},
        **extra,
    }


def throughput_chart(result: Mapping[str, Any]) -> str:
    steps = result["steps"]
    x, xtitle = _x(result)
    text = [label(f"step {s['step']}: {_load_text(s)}") for s in steps]
    traces = [go.Scatter(
        x=x, y=[s["rps"] for s in steps], name="achieved", mode="lines+markers",
        marker={"size": 9, "color": ["#1F77B4" if s["meets_slo"] else BREACH_COLOR
                                     for s in steps]},
        line={"color": "#1F77B4"}, text=text, customdata=[label(rate(s["rps"])) for s in steps],
        # Hover figures come formatted from Python: they read as in the table below.
        hovertemplate="%{text}<br>%{customdata}<extra>achieved</extra>",
    )]
    if result["mode"] == "open":
        traces.append(go.Scatter(x=x, y=x, name="offered", mode="lines",
                                 line={"color": "#FF7F0E", "dash": "dash"}))
    shapes = _marks(result, x)
    lab = result.get("lab")
    if lab and lab.get("true_capacity_rps") is None:
        lab = None  # pods without a service time: no known capacity to draw
    if lab:
        truth = lab["true_capacity_rps"]
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": truth,
                       "y1": truth, "line": {"color": TRUTH_COLOR, "dash": "dash", "width": 1},
                       "label": {"text": label(f"lab capacity {rate(truth)}"),
                                 "textposition": "end", "font": {"size": 11}}})
    knee = result["knee_index"]
    if knee is not None:
        traces.append(go.Scatter(
            x=[x[knee]], y=[steps[knee]["rps"]], name="knee (highest step meeting the SLO)",
            mode="markers", marker={"symbol": "star", "size": 16, "color": KNEE_COLOR},
            hovertemplate=f"knee: {label(rate(steps[knee]['rps']))}<extra></extra>"))
    layout = _layout("Throughput vs load", xtitle, "requests/s (completed)", shapes=shapes)
    if lab:
        # Autorange ignores shapes: keep the lab's capacity line (and its label) in view.
        top = max([lab["true_capacity_rps"], *(s["rps"] for s in steps)]) * 1.12
        layout["yaxis"]["range"] = [0, top]
    return go.Figure(traces, layout).to_json()


def latency_chart(result: Mapping[str, Any]) -> str:
    steps = result["steps"]
    x, xtitle = _x(result)
    colors = {"p50": "#2CA02C", "p95": "#1F77B4", "p99": "#9467BD"}
    traces = [go.Scatter(x=x, y=[s.get(q) for s in steps], name=q, mode="lines+markers",
                         line={"color": color}, customdata=[label(ms(s.get(q))) for s in steps],
                         hovertemplate=f"{q} %{{customdata}}<extra></extra>")
              for q, color in colors.items()]
    slo = result["slo"]["p95_ms"]
    shapes = [*_marks(result, x), {
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": slo, "y1": slo,
        "line": {"color": BREACH_COLOR, "dash": "dash", "width": 1},
        "label": {"text": label(f"SLO p95 {ms(slo)}"), "textposition": "end",
                  "font": {"size": 11}}}]
    knee = result["knee_index"]
    if knee is not None and steps[knee].get("p95") is not None:
        traces.append(go.Scatter(x=[x[knee]], y=[steps[knee]["p95"]], name="knee", mode="markers",
                                 marker={"symbol": "star", "size": 16, "color": KNEE_COLOR},
                                 hovertemplate=f"knee: p95 {label(ms(steps[knee]['p95']))}"
                                               "<extra></extra>"))
    return go.Figure(traces, _layout("Latency vs load (successful requests)", xtitle,
                                     "ms", shapes=shapes)).to_json()


# -- summary.md ---------------------------------------------------------------------------------

def summary_block(result: Mapping[str, Any]) -> str:
    """The capacity section appended to summary.md: recommendation, steps, links."""
    lines = ["", "### Capacity (step load)", "", f"**{md(headline(result))}**", "",
             md(result["reasoning"]), "",
             "| step | load | achieved req/s | p50 | p95 | p99 | failed | SLO | "
             "load generator CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for index, step in enumerate(result["steps"]):
        mark = " (knee)" if index == result["knee_index"] else ""
        if step.get("generator_bound"):
            mark += " (load generator limit)"
        lines.append(
            f"| {step['step']}{mark} | {md(_load_text(step))} | {number(step['rps'])} | "
            f"{ms(step.get('p50'))} | {ms(step.get('p95'))} | "
            f"{ms(step.get('p99'))} | {pct(step.get('fail_ratio'))} | "
            f"{'✅' if step['meets_slo'] else '❌'} | {pct(step.get('generator_cpu'))} |")
    # No load-model line: the run's latency finding above already states the model and the
    # closed loop's coordinated omission, and the reasoning says which loop measured.
    lines += ["", *(f"- {md(note)}" for note in result["notes"]), "",
              "Capacity page: [capacity.html](capacity.html) · steps: "
              "[steps.csv](steps.csv) · data: [capacity.json](capacity.json)", ""]
    return "\n".join(lines)
