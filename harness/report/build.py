"""Build every report of a run folder from its saved target.json, spread.json and run.json.

Writes, each atomically: ``summary.json`` (the analysis summary, schema
``nodeport-harness/summary/v1``, plus ``run_id``, ``generated``, ``harness_version`` and
``thresholds``: the results of the limits the run was started with), ``nodes.csv``,
``pods.csv``, ``timeseries.csv`` (per second per entry node), ``junit.xml``, ``summary.md``
and ``index.html``. Capacity runs (run.json has ``capacity``) also get ``capacity.json``,
``steps.csv`` and ``capacity.html`` (see report/capacity.py), linked from summary.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import __version__
from harness.core.analysis import evaluate_thresholds, summarize
from harness.core.findings import (
    incident_sentence,
    incident_severity,
    incident_what,
    worst_incident,
)
from harness.core.runinfo import analysis_run, threshold_settings
from harness.core.text import ms, number, pct, rate, redact_command, secs, when
from harness.errors import ReportError
from harness.report import charts
from harness.report import csvs as tables
from harness.report.files import finite, write_text_atomic
from harness.report.html import SEVERITIES, figures_json, plotly_loader, render
from harness.report.junit import junit_xml
from harness.report.markdown import summary_markdown
from harness.report.rundir import RunData, load_run

OUTPUTS = ("index.html", "summary.json", "summary.md", "junit.xml", "nodes.csv", "pods.csv",
           "timeseries.csv")


def build_report(run_dir: Path | str, plotlyjs: str = "inline") -> dict[str, Any]:
    """Analyse a run folder and write its reports; returns summary, thresholds and files."""
    data = load_run(run_dir)
    summary = analyse(data)
    thresholds = evaluate_thresholds(summary, threshold_settings(data.run))
    node_rows = tables.node_rows(summary, data.spread, data.target)
    pod_rows = tables.pod_rows(summary, data.spread)
    series = tables.series_rows(summary)
    view = page_context(data, summary, thresholds, node_rows, pod_rows)
    out = data.run_dir
    files: dict[str, str] = {}

    def write(name: str, text: str) -> None:
        files[name] = str(write_text_atomic(out / name, text))

    write("nodes.csv", tables.to_csv(node_rows, tables.NODE_FIELDS))
    write("pods.csv", tables.to_csv(pod_rows, tables.POD_FIELDS))
    write("timeseries.csv", tables.to_csv(
        (row for rows in series.values() for row in rows), tables.SERIES_FIELDS))
    write("junit.xml", junit_xml(summary, thresholds, data.run, data.run_id))
    markdown = summary_markdown(view)
    # -- capacity runs (`nodeport-harness capacity`): their own page, linked from summary.md
    capacity = None
    if data.run.get("capacity"):
        from harness.report.capacity_page import build_capacity

        capacity = build_capacity(data, plotlyjs=plotlyjs)
        files.update(capacity["files"])
        markdown += capacity["markdown"]
    # -- end of the capacity block
    write("summary.md", markdown)
    document = {**summary, "run_id": data.run_id, "generated": view["generated"],
                "harness_version": __version__, "thresholds": thresholds}
    # Compact: a long run's timeline makes it megabytes, and json's C encoder only runs
    # without indent (five times faster).
    write("summary.json", json.dumps(finite(document), separators=(",", ":")) + "\n")
    loader = plotly_loader(plotlyjs, out)
    if loader["mode"] == "directory":
        files["plotly.min.js"] = str(out.resolve().parent / "plotly.min.js")
    figures = report_figures(summary, data, series, view["matrix"])
    write("index.html", render("report.html.j2", {
        **view, "plotly": loader, "figures": figures_json(figures), "charts": set(figures),
    }))
    result = {"summary": summary, "thresholds": thresholds, "files": files}
    if capacity:
        result["capacity"] = capacity["result"]
    return result


def analyse(data: RunData) -> dict[str, Any]:
    try:
        return summarize(data.spread, data.target or None, analysis_run(data.run))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        # Hand-edited or truncated files: one line for the user, the cause kept for --debug.
        raise ReportError(
            f"{data.run_dir} holds malformed run data ({type(err).__name__}: {err}): "
            "pass a folder written by nodeport-harness run"
        ) from err


# -- the page's content (shared with summary.md) ---------------------------------------------

def page_context(data: RunData, summary: Mapping[str, Any], thresholds: list[dict[str, Any]],
                 node_rows: list[dict[str, Any]], pod_rows: list[dict[str, Any]]
                 ) -> dict[str, Any]:
    entries, pods, counts = tables.matrix(summary, data.spread)
    run = data.run
    return {
        "title": title(summary, data),
        "subtitle": subtitle(summary, data),
        "verdict": verdict(summary["findings"]),
        "headline": headline(summary),
        "findings": summary["findings"],
        "partial": run.get("partial"),
        "service_facts": service_facts(summary, data.target),
        "run_facts": run_facts(summary, data),
        "facts": [*service_facts(summary, data.target), *run_facts(summary, data)],
        "load_model": run.get("load_model") or summary["run"]["load_model"],
        "in_flight": run.get("in_flight"),
        "warnings": list(data.target.get("warnings", ())),
        "target_nodes": target_nodes(data.target, summary),
        "node_rows": node_rows,
        "pod_rows": pod_rows,
        "matrix": {"entries": entries, "pods": pods, "counts": counts,
                   "pod_nodes": tables.pod_nodes(data.spread, data.target)},
        "faults": fault_rows(summary),
        "lb": lb_view(summary),
        "incidents": incident_rows(summary),
        "whatifs": summary.get("whatifs") or [],  # predictions (core/whatif.py)
        "thresholds": thresholds,
        "command": redact_command(run.get("command") or "") or "(not recorded)",
        "files": OUTPUTS,
        "run_dir_name": data.run_dir.name,
        "generated": time.time(),
        "version": __version__,
    }


def title(summary: Mapping[str, Any], data: RunData) -> str:
    service = summary.get("service")
    name = f"{service['namespace']}/{service['name']}" if service else "unknown Service"
    return f"{name} ({data.run_id})"


def subtitle(summary: Mapping[str, Any], data: RunData) -> str:
    run = data.run
    parts = [
        f"started {when(run.get('started') or summary['run']['start'])}",
        secs(summary["run"]["duration_s"]),
        f"entry {run.get('entry') or '?'}",
        f"connection {run.get('connection') or '?'}",
    ]
    if run.get("users"):
        parts.append(f"{number(run['users'])} users")
    return " · ".join(parts)


def verdict(findings: list[Mapping[str, Any]]) -> str:
    ranks = [SEVERITIES.index(f["severity"]) for f in findings if f["severity"] in SEVERITIES]
    return SEVERITIES[min(ranks)] if ranks else "ok"


def headline(summary: Mapping[str, Any]) -> str:
    totals = summary["totals"]
    if not totals["requests"]:
        return "No request was recorded."
    nodes = [n for n in summary["nodes"] if n["is_node"]]
    entered = [n for n in nodes if n["requests"]]
    pods = summary["pods"]
    served = [p for p in pods if p["successes"]]
    p95 = summary["latency"]["overall"]["p95"]
    text = f"{number(totals['requests'])} requests in {secs(summary['run']['duration_s'])}"
    if totals.get("rps"):
        text += f" ({rate(totals['rps'])})"
    through_lb = lb_entered(summary)
    if through_lb:
        text += through_lb
    elif nodes:
        text += f" entered through {number(len(entered))} of {number(len(nodes))} nodes"
    else:
        text += " entered through " + ", ".join(n["name"] for n in summary["nodes"])
    if pods:
        text += f" and reached {number(len(served))} of {number(len(pods))} pods"
    text += f"; {pct(totals['fail_ratio'])} failed; p95 {ms(p95)}."
    # The worst thing that happened comes first: a whole-run average hides an outage.
    worst = worst_incident(summary)
    if worst is not None:
        text = f"{incident_sentence(worst)}. Whole run: {text}"
    return text


def lb_entered(summary: Mapping[str, Any]) -> str | None:
    """The headline's "entered through ..." for a run through a LoadBalancer (None for any
    other): the LB, and over how many nodes it spread requests when the replies showed it."""
    lb = summary.get("lb")
    if not lb:
        return None
    text = " entered through the LoadBalancer" + (f" {lb['address']}" if lb["address"] else "")
    if lb["seen"]:
        return text + (f", which passed them to {number(lb['nodes_used'])} of "
                       f"{number(lb['nodes'])} nodes")
    return text + " (which nodes it chose could not be seen)"


def lb_view(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The page's "Through the LoadBalancer" part: per node, the successes the LB passed
    through it (None for a run that did not enter through one)."""
    lb = summary.get("lb")
    if not lb:
        return None
    pods = {n["name"]: n["pods"] for n in summary["nodes"] if n["is_node"]}
    rows = [{"node": name, "pods": pods.get(name, 0), "successes": count,
             "share": lb["shares"].get(name)} for name, count in lb["via_nodes"].items()]
    finding = next((f for f in summary["findings"] if f["id"] == "lb_spread"), None)
    return {**lb, "rows": rows, "text": finding["text"] if finding else "",
            "unknown_share": (lb["unknown"] / lb["successes"]) if lb["successes"] else None}


def service_facts(summary: Mapping[str, Any], target: Mapping[str, Any]) -> list[tuple]:
    service = target.get("service")
    if not service:
        return [("Service", "unknown (no target.json)")]
    port = service.get("port") or {}
    affinity = service.get("session_affinity") or "None"
    if service.get("session_affinity_timeout") and affinity != "None":
        affinity += f" ({secs(service['session_affinity_timeout'])})"
    facts = [
        ("Service", f"{service.get('namespace')}/{service.get('name')}"),
        ("type", service.get("type")),
        ("port → nodePort", f"{port.get('port')} → {port.get('node_port')}"),
        ("externalTrafficPolicy", service.get("external_traffic_policy")),
        ("sessionAffinity", affinity),
        ("LoadBalancer", ", ".join(service.get("lb_ingress") or ()) or "none"),
        ("ready endpoints",
         number(sum(1 for e in target.get("endpoints", ()) if e.get("ready", True)))),
        ("discovered from", target.get("source", "?")
         + (f" (context {target['context']})" if target.get("context") else "")),
    ]
    if service.get("health_check_node_port"):
        facts.insert(6, ("healthCheckNodePort", service["health_check_node_port"]))
    return facts


def run_facts(summary: Mapping[str, Any], data: RunData) -> list[tuple]:
    run, options = data.run, data.run.get("options") or {}
    entry = run.get("entry") or "?"
    if entry == "single" and options.get("node"):
        entry += f" ({options['node']})"
    facts = [
        ("run", data.run_id),
        ("started", when(run.get("started") or summary["run"]["start"])),
        ("duration", secs(summary["run"]["duration_s"])),
        ("users", number(run["users"]) if run.get("users") is not None else "?"),
        ("entry strategy", entry),
        ("connection", run.get("connection") or "?"),
        ("TCP connections", connection_fact(summary["keepalive"])),
        ("request", f"{options.get('method', '?')} {options.get('path', '?')}"),
        ("pod from", options.get("pod_from", "?")),
        ("timeout", secs(options["timeout"]) if options.get("timeout") else "?"),
        ("load generator", f"{run.get('role', '?')}"
         + (f" with {number(len(run['workers']))} workers" if run.get("workers") else "")),
        ("versions", f"nodeport-harness {run.get('harness_version', '?')}, "
                     f"Locust {run.get('locust_version', '?')}"),
    ]
    if run.get("spawn_rate"):
        facts.insert(4, ("spawn rate", f"{number(run['spawn_rate'])} users/s"))
    return facts


def connection_fact(keepalive: Mapping[str, Any]) -> str:
    """The run's TCP connections: how many the client opened, and per connection on
    average how many requests they carried and how many pods they saw."""
    if not keepalive["connections"]:
        return "none recorded"
    def count_of(value: float | None, noun: str) -> str:
        shown = number(value)
        return f"{shown} {noun}" if shown == "1" else f"{shown} {noun}s"

    k = keepalive
    return (f"{number(k['connections'])} opened for {number(k['requests'])} requests; per "
            f"connection on average {count_of(k['mean_requests_per_connection'], 'request')}"
            f" and {count_of(k['mean_distinct_pods'], 'pod')}")


def target_nodes(target: Mapping[str, Any], summary: Mapping[str, Any]) -> list[dict]:
    by_name = {n["name"]: n for n in summary["nodes"]}
    lb = summary.get("lb")
    via = lb["via_nodes"] if lb and lb["seen"] else None
    rows = []
    for node in target.get("nodes", ()):
        seen = by_name.get(node.get("name"), {})
        state = "Ready" if node.get("ready", True) else "NotReady"
        if node.get("unschedulable"):
            state += ", unschedulable"
        if not node.get("targeted", True):
            state += f"; not targeted: {node.get('reason') or 'excluded'}"
        rows.append({
            "name": node.get("name"), "address": node.get("address"),
            "address_type": node.get("address_type"),
            "addresses": sorted((node.get("addresses") or {}).items()),
            "state": state, "zone": node.get("zone"),
            "pods": seen.get("pods", 0), "requests": seen.get("requests", 0),
            # --entry lb: successes the LoadBalancer passed through it (None: not seen).
            "via_lb": via.get(node.get("name"), 0) if via is not None else None,
        })
    return rows


def fault_rows(summary: Mapping[str, Any]) -> list[dict]:
    rows = []
    for fault in summary.get("faults", ()):
        until = fault.get("until")
        rows.append({
            "t": fault.get("t"), "kind": fault.get("kind", ""), "name": fault.get("name", ""),
            "action": fault.get("action", ""),
            "until": "—" if fault.get("action") == "up" else (
                "end of run" if until is None else secs(until)),
            "requests": fault.get("requests"), "fail_ratio": fault.get("fail_ratio"),
            "before_fail_ratio": fault.get("before_fail_ratio"),
        })
    return rows


def incident_rows(summary: Mapping[str, Any]) -> list[dict]:
    """Incidents for the page: what, when, how bad, availability per entry point before and
    during it, and what happened near its start."""
    rows = []
    for incident in summary.get("incidents") or ():
        windows = [f"{entry} {pct(a['before'])} → {pct(a['during'])}"
                   for entry, a in incident["availability"].items()
                   if a["before"] is not None or a["during"] is not None]
        rows.append({
            "start_s": incident["start_s"],
            "until": "end of run" if incident["end_s"] is None else secs(incident["end_s"]),
            "what": incident_what(incident),
            "kinds": ", ".join(f"{k} {number(v)}" for k, v in incident["kinds"].items()),
            "failed_share": incident["failed_share"],
            "rps": f"{number(incident['rps_before'])} → {rate(incident['rps_during'])}",
            "availability": "; ".join(windows),
            "caused_by": "; ".join(incident.get("caused_by") or ()) or "nothing recorded",
            "severity": incident_severity(incident),
        })
    return rows


# -- charts ----------------------------------------------------------------------------------

def chart_markers(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Markers and faults as x positions on the per-second axis (seconds from its base)."""
    start = summary["run"]["start"]
    offset = (start - math.floor(start)) if start is not None else 0.0
    markers = [{"x": m["t"] + offset, "label": m["label"]} for m in summary.get("markers", ())]
    for fault in summary.get("faults", ()):
        label = f"{fault.get('name')} {fault.get('action')}"
        # The plugin records each fault twice (run.json and a marker): draw it once.
        if not any(abs(m["x"] - fault["t"] - offset) < 1 and m["label"] == label
                   for m in markers):
            markers.append({"x": fault["t"] + offset, "label": label})
    return sorted(markers, key=lambda m: m["x"])


def incident_bands(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each incident as a band on the per-second axis (seconds from its base)."""
    start, end = summary["run"]["start"], summary["run"]["end"]
    if start is None:
        return []
    offset = start - math.floor(start)
    last = (end - start) if end is not None else None
    bands = []
    for incident in summary.get("incidents") or ():
        stop = incident["end_s"] if incident["end_s"] is not None else last
        if stop is None:
            continue
        bands.append({"x0": incident["start_s"] + offset, "x1": stop + offset,
                      "label": f"{incident['name']}: incident"})
    return bands


def report_figures(summary: Mapping[str, Any], data: RunData,
                   series: Mapping[str, list[dict[str, Any]]],
                   matrix: Mapping[str, Any]) -> dict[str, str]:
    """Chart id -> plotly figure JSON, for the charts this run has data for."""
    figures: dict[str, str] = {}
    entry_names = [n["name"] for n in summary["nodes"] if n["requests"]]
    node_colors = charts.colors(entry_names)
    if matrix["entries"] and matrix["pods"]:
        figures["heatmap"] = charts.heatmap(matrix["entries"], matrix["pods"], matrix["counts"])
    if any(p["successes"] for p in summary["pods"]):
        figures["pod_shares"] = charts.pod_shares(summary["pods"],
                                                  summary["fairness"].get("model"))
    # Failed requests count in "p99 with failures" only when some node had them: a dead
    # node's clients waited a time-out each, which the successes' percentiles never show.
    failed = any(n.get("failures") for n in summary["nodes"])
    groups = [(n["name"], [n["latency"][q] for q in ("p50", "p95", "p99")]
               + ([(n.get("latency_all") or {}).get("p99")] if failed else []))
              for n in summary["nodes"] if n["latency"]["count"] or n.get("failures")]
    if groups:
        overall = summary["latency"]["overall"]
        groups.append(("all", [overall["p50"], overall["p95"], overall["p99"]]))
        figures["latency_nodes"] = charts.latency_bars(
            groups, "Latency percentiles per entry node", "entry node")
        hists = {name: data.spread["entry_nodes"][name]["latency"] for name in entry_names
                 if name in data.spread.get("entry_nodes", {})}
        figures["latency_cdf"] = charts.latency_cdf(hists, node_colors)
    cross = summary["cross_node"]
    if any((cross.get(k) or {}).get("count") for k in ("local", "cross_node", "unknown")):
        figures["locality"] = charts.locality_bars(cross)
    if any(series.values()):
        markers = chart_markers(summary)
        bands = incident_bands(summary)
        for key, field, name, axis, failed in (
            ("rps", "requests", "Requests per second by entry node", "requests/s", None),
            ("p95", "p95_ms", "p95 latency per second by entry node (dashed: failed requests)",
             "p95 (ms)", "failed_p95_ms"),
            ("failures", "failures", "Failures per second by entry node", "failures/s", None),
        ):
            figures[key] = charts.over_time(series, field, name, axis, node_colors, markers,
                                            bands, failed)
    lb = summary.get("lb")
    if lb and lb["seen"]:  # --entry lb: the node the LoadBalancer passed each success to
        figures["lb_nodes"] = charts.share_bars(
            list(lb["via_nodes"]), [lb["shares"][n] or 0.0 for n in lb["via_nodes"]],
            "Successful requests by the node the LoadBalancer chose", charts.PALETTE[0],
            1.0 / len(lb["via_nodes"]))
    return figures
