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
import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import __version__
from harness.core.analysis import evaluate_thresholds, summarize
from harness.core.findings import (
    incident_sentence,
    incident_severity,
    incident_what,
    worst_incident,
)
from harness.core.runinfo import analysis_run, threshold_settings
from harness.core.text import ms, number, pct, printable, rate, redact_command, secs, when
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
        "time_notes": time_notes(summary, data, series, figures),
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
    repro = reproduce(data)
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
        "command": repro["command"],
        "reproduce": repro,
        "files": OUTPUTS,
        "run_dir_name": data.run_dir.name,
        "run_dir": os.path.abspath(data.run_dir),
        "run_dir_arg": shlex.quote(os.path.abspath(data.run_dir)),  # pasted into a shell
        "generated": time.time(),
        "version": __version__,
    }


# -- how to reproduce ---------------------------------------------------------------------------

# Options whose value is a path: made absolute, so the command works pasted in any folder.
PATH_FLAGS = ("--kubeconfig", "--inventory", "--report-dir", "--raw", "-f", "--locustfile")
# Left out: a re-run with this run's id would write over this run's folder.
DROPPED_FLAGS = ("--run-id",)


def reproduce(data: RunData) -> dict[str, Any]:
    """The page's "How to reproduce": the run's command with its target spelled out and its
    paths absolute (``command``), the command as typed when that differs (``typed``, in
    ``cwd``), the target in words (``target``) and the command re-rendering this page."""
    run, options = data.run, data.run.get("options") or {}
    typed = redact_command(run.get("command") or "")
    cwd = run.get("cwd") or inferred_cwd(data.run_dir, options)
    command = reproduce_command(typed, options, data.target, cwd, run.get("kubeconfig"))
    lab = bool(options.get("lab")) or " --lab " in f" {typed} "
    rerender = shlex.join(["nodeport-harness", "report", os.path.abspath(data.run_dir)])
    return {
        "command": command or "(not recorded)",
        "args": command_words(command or "(not recorded)"),
        "rerender_args": command_words(rerender),
        "typed": typed if typed and typed != command else None,
        "cwd": cwd,
        "target": target_sentence(data.target, {**options, "inventory": _absolute(
            options["inventory"], cwd)} if isinstance(options.get("inventory"), str)
            else options, run.get("kubeconfig"), lab),
        "rerender": rerender,
    }


def command_words(command: str) -> list[str]:
    """A shell command's words, each quoted as the shell reads it: a page shows each one
    unbroken (a line never breaks inside "--namespace"), and copies as the command."""
    try:
        return [shlex.quote(word) for word in shlex.split(command)] or [command]
    except ValueError:
        return [command]


def inferred_cwd(run_dir: Path, options: Mapping[str, Any]) -> str | None:
    """The folder a run started in, for a run.json that does not say (older runs): the run
    folder is RUN_ID inside --report-dir, so a relative --report-dir leads back to it."""
    report_dir = options.get("report_dir")
    if not isinstance(report_dir, str) or not report_dir or report_dir.startswith("~"):
        return None
    relative = Path(os.path.normpath(report_dir))
    if relative.is_absolute():
        return None
    base = Path(os.path.abspath(run_dir)).parent
    for part in reversed(relative.parts):
        if part == ".":
            continue
        if part == ".." or base.name != part:
            return None
        base = base.parent
    return str(base)


def _absolute(value: str, cwd: str | None) -> str:
    path = os.path.expanduser(value)
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(cwd, path)) if cwd else value


def reproduce_command(typed: str, options: Mapping[str, Any], target: Mapping[str, Any],
                      cwd: str | None, kubeconfig: str | None = None) -> str:
    """``typed`` (secrets already redacted) made to work pasted anywhere: path values
    absolute (relative to ``cwd``), --run-id left out, and the target's options the command
    left to defaults added: the lab's shape (``lab_*`` options) with --lab, else the
    kubeconfig and context discovery read; the namespace and the Service."""
    try:
        args = shlex.split(typed)
    except ValueError:
        return typed
    if not args:
        return ""
    out: list[str] = []
    given: set[str] = set()
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        flag, sep, value = arg.partition("=")
        if index and flag.startswith("-"):
            given.add(flag)
        if flag in DROPPED_FLAGS:
            skip = not sep
            continue
        if flag in PATH_FLAGS and index:
            if sep:
                out.append(f"{flag}={_absolute(value, cwd)}")
                continue
            if index + 1 < len(args):
                out += [arg, _absolute(args[index + 1], cwd)]
                skip = True
                continue
        out.append(arg)
    service = target.get("service") or {}
    added: list[str] = []
    # A command that started the lab itself (capacity, demo) hands Locust its kubeconfig:
    # the command as typed still says --lab, and a lab's kubeconfig is gone after it.
    if options.get("lab") or "--lab" in given:
        for key, value in sorted(options.items()):
            flag = "--" + key.replace("_", "-")
            if (key.startswith("lab_") and flag not in given and value not in (None, False, "")
                    and isinstance(value, str | int | float)):
                added += [flag] if value is True else [flag, str(value)]
    elif not options.get("inventory") and target.get("source") == "kubeconfig":
        if kubeconfig and "--kubeconfig" not in given:
            added += ["--kubeconfig", kubeconfig]
        if target.get("context") and "--context" not in given:
            added += ["--context", str(target["context"])]
    if service.get("namespace") and not {"-n", "--namespace"} & given:
        added += ["--namespace", str(service["namespace"])]
    if service.get("name") and "--service" not in given:
        added += ["--service", str(service["name"])]
    return shlex.join([*out, *added])


def target_sentence(target: Mapping[str, Any], options: Mapping[str, Any],
                    kubeconfig: str | None = None, lab: bool = False) -> str:
    """Where the run's target came from and its shape, in one sentence (no credentials:
    paths, context names and the API server's address without any user part)."""
    source = target.get("source")
    lab = lab or bool(options.get("lab"))
    if lab:
        datapath = options.get("lab_datapath")
        where = "the embedded lab, started for this run (--lab" + (
            f", {datapath} datapath)" if datapath else ")")
    elif options.get("inventory") or source == "inventory":
        where = f"the inventory file {options.get('inventory') or '(path not recorded)'}"
    elif source == "in-cluster":
        where = "the in-cluster configuration (a service account)"
    elif source:
        where = f"kubeconfig {kubeconfig or '$KUBECONFIG or ~/.kube/config (path not recorded)'}"
        if target.get("context"):
            where += f", context {target['context']}"
    else:
        return "not recorded (no target.json in this run folder)"
    server = target.get("server")
    if server and source != "inventory" and not lab:  # a throw-away lab's is gone
        parts = urlsplit(str(server))
        where += f" (API server {parts.scheme}://{parts.hostname or ''}" + (
            f":{parts.port})" if parts.port else ")")
    service = target.get("service") or {}
    port = service.get("port") or {}
    what = (f"Service {service.get('namespace')}/{service.get('name')} ({service.get('type')}"
            + (f", nodePort {port['node_port']}" if port.get("node_port") else "")
            + f", externalTrafficPolicy {service.get('external_traffic_policy')})"
            ) if service else "the Service is not recorded"
    nodes = [n.get("name") for n in target.get("nodes", ())]
    pods: dict[str, int] = {}
    for endpoint in target.get("endpoints", ()):
        pods[endpoint.get("node") or "?"] = pods.get(endpoint.get("node") or "?", 0) + 1
    counts = set(pods.get(n, 0) for n in nodes)
    spread = (f"{number(counts.pop())} per node" if len(counts) == 1 and nodes else
              ", ".join(f"{number(c)} on {name}" for name, c in list(pods.items())[:6])
              + (", ..." if len(pods) > 6 else ""))
    shape = (f"{number(len(nodes))} node{'s' if len(nodes) != 1 else ''}, "
             f"{number(sum(pods.values()))} pods ({spread})" if nodes or pods else "")
    return printable(f"{where}: {what}" + (f"; {shape}" if shape else "") + ".")


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


def rate_series(summary: Mapping[str, Any], data: RunData,
                series: Mapping[str, list[dict[str, Any]]],
                ) -> tuple[Mapping[str, list[Any]], list[tuple[int, float]]]:
    """The per-second rows the rate charts draw (the seconds wholly inside the run, from
    run.json's start to its stop) and the partial seconds they leave out (elapsed second,
    the part of it the run covered). A run without one whole second keeps them all."""
    start = summary["run"]["start"]
    end = data.run.get("stopped") or summary["run"]["end"]
    whole = {name: charts.whole_seconds(rows, start, end) for name, rows in series.items()}
    if not any(whole.values()):
        return series, []
    return whole, charts.partial_seconds(series, start, end)


def partial_note(dropped: list[tuple[int, float]]) -> str | None:
    """The rate charts' caption for the partial seconds they leave out."""
    if not dropped:
        return None
    said = [f"{number(t)} s ({'after the stop' if part <= 0 else secs(part) + ' of it'})"
            for t, part in dropped]
    which = ", ".join(said[:4]) + (f" and {number(len(said) - 4)} more" if len(said) > 4 else "")
    return (f"Partial seconds are not drawn: {which}. The run covered only part of "
            f"{'that second' if len(said) == 1 else 'those seconds'}, so their counts would "
            "read as a ramp or a drop in throughput.")


def time_notes(summary: Mapping[str, Any], data: RunData,
               series: Mapping[str, list[dict[str, Any]]],
               figures: Mapping[str, str]) -> dict[str, str | None]:
    """One line for each per-second chart the page leaves out, and the partial seconds."""
    _, dropped = rate_series(summary, data, series)
    failures = summary["totals"]["failures"]
    notes: dict[str, str | None] = {"partial": partial_note(dropped), "failures": None,
                                    "p95": None}
    if "failures" not in figures and any(series.values()):
        notes["failures"] = ("No request failed." if not failures else
                             f"{number(failures)} requests failed, all in partial seconds "
                             "(see the totals below).")
    if "p95" not in figures and any(series.values()):
        notes["p95"] = "No request succeeded: there is no latency to draw per second."
    return notes


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
        if any(charts.cdf_points(h)[0] for h in hists.values()):
            figures["latency_cdf"] = charts.latency_cdf(hists, node_colors)
    cross = summary["cross_node"]
    if any((cross.get(k) or {}).get("count") for k in ("local", "cross_node", "unknown")):
        figures["locality"] = charts.locality_bars(cross)
    if any(series.values()):
        markers = chart_markers(summary)
        bands = incident_bands(summary)
        counted, _ = rate_series(summary, data, series)
        seconds = [r["elapsed_s"] for rows in series.values() for r in rows]
        x_range = [min(seconds), max(seconds)] if len(set(seconds)) > 1 else None
        for key, field, name, axis, failed, rows in (
            ("rps", "requests", "Requests per second by entry node", "requests/s", None,
             counted),
            ("p95", "p95_ms", "p95 latency per second by entry node (dashed: failed requests)",
             "p95 (ms)", "failed_p95_ms", series),
            ("failures", "failures", "Failures per second by entry node", "failures/s", None,
             counted),
        ):
            fields = (field, failed) if failed else (field,)
            # No empty chart: no failure, or no success's latency, is one line on the page.
            if any(r.get(f) for rows_ in rows.values() for r in rows_ for f in fields):
                figures[key] = charts.over_time(rows, field, name, axis, node_colors,
                                                markers, bands, failed, x_range)
    lb = summary.get("lb")
    if lb and lb["seen"]:  # --entry lb: the node the LoadBalancer passed each success to
        figures["lb_nodes"] = charts.share_bars(
            list(lb["via_nodes"]), [lb["shares"][n] or 0.0 for n in lb["via_nodes"]],
            "Successful requests by the node the LoadBalancer chose", charts.PALETTE[0],
            1.0 / len(lb["via_nodes"]))
    return figures
