"""One page comparing run folders side by side (e.g. single node vs. all nodes vs. LB)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness import __version__
from harness.core.text import name_list, printable
from harness.core.whatif import check_rerun, matching_whatif, run_topology
from harness.errors import ReportError
from harness.report import charts
from harness.report.build import analyse, verdict
from harness.report.files import finite, write_json_atomic, write_text_atomic
from harness.report.html import figures_json, plotly_loader, render
from harness.report.rundir import load_run

COMPARE_SCHEMA = "nodeport-harness/compare/v1"
PAGE_ONLY = ("link", "whatifs")  # left out of compare.json (the whatifs are in summary.json)
KEY_FINDINGS = 4


def build_compare(run_dirs: Sequence[Path | str], out_dir: Path | str | None = None,
                  plotlyjs: str = "inline") -> dict[str, Any]:
    """Write ``index.html`` and ``compare.json`` into ``out_dir`` (default: a ``compare``
    folder beside the first run); returns the per-run rows and the files."""
    if len(run_dirs) < 2:
        raise ReportError("compare needs at least two run folders: "
                          "nodeport-harness compare RUN_A RUN_B [...]")
    out = Path(out_dir) if out_dir is not None else (
        Path(run_dirs[0]).resolve().parent / "compare")
    runs = [run_row(Path(d), out, i) for i, d in enumerate(run_dirs)]
    checks = whatif_checks(runs)
    warnings = service_warnings(runs)
    files = {"compare.json": str(write_json_atomic(out / "compare.json", finite({
        "schema": COMPARE_SCHEMA, "generated": time.time(),
        "runs": [{k: v for k, v in r.items() if k not in PAGE_ONLY and not k.startswith("_")}
                 for r in runs],
        "whatif_checks": checks,
        "warnings": warnings,
    })))}
    loader = plotly_loader(plotlyjs, out)
    if loader["mode"] == "directory":
        files["plotly.min.js"] = str(out.resolve().parent / "plotly.min.js")
    figures = compare_figures(runs)
    for check in checks:
        figures[f"whatif-{check['index']}"] = charts.predicted_vs_measured(
            check["rows"], f"{check['title']}: predicted from {check['original']}, "
                           f"measured in {check['rerun']}")
    files["index.html"] = str(write_text_atomic(out / "index.html", render(
        "compare.html.j2", {"runs": runs, "checks": checks, "plotly": loader,
                            "warnings": warnings,
                            "figures": figures_json(figures),
                            "charts": set(figures), "generated": time.time(),
                            "version": __version__})))
    return {"runs": runs, "whatif_checks": checks, "warnings": warnings, "files": files}


def service_warnings(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A sentence when the runs measured different Services (runs whose Service is unknown,
    a folder holding only spread.json, are left out): their figures are not like for like."""
    named: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        service = run.get("service")
        if service and service.get("name"):
            key = (str(service.get("namespace") or ""), str(service["name"]))
            named.setdefault(key, []).append(str(run["run_id"]))
    if len(named) < 2:
        return []
    which = "; ".join(f"{printable(ns)}/{printable(name)} ({name_list(ids, 3)})"
                      for (ns, name), ids in list(named.items())[:5])
    more = f"; ... and {len(named) - 5} more" if len(named) > 5 else ""
    return [f"the runs measured {len(named)} different Services: {which}{more}; "
            "their figures do not compare like for like"]


def run_row(run_dir: Path, out: Path, index: int) -> dict[str, Any]:
    """The figures one run contributes to the comparison."""
    data = load_run(run_dir)
    summary = analyse(data)
    run = data.run
    entry, connection = run.get("entry") or "?", run.get("connection") or "?"
    overall = summary["latency"]["overall"]
    keepalive = summary["keepalive"]
    findings = [f for f in summary["findings"] if f["severity"] in ("critical", "warning")]
    findings = findings or [f for f in summary["findings"] if f["severity"] == "ok"]
    page = run_dir / "index.html"
    return {
        "index": index,
        "run_id": data.run_id,
        "label": f"{data.run_id} · entry {entry} · {connection}",
        "entry": entry,
        "connection": connection,
        "service": summary.get("service"),
        "verdict": verdict(summary["findings"]),
        "requests": summary["totals"]["requests"],
        "rps": summary["totals"]["rps"],
        "fail_ratio": summary["totals"]["fail_ratio"],
        "p50": overall["p50"], "p95": overall["p95"], "p99": overall["p99"],
        "cross_node_share": summary["cross_node"]["share"],
        "jain": summary["fairness"]["jain"],
        "connections": keepalive["connections"],
        "requests_per_connection": keepalive["mean_requests_per_connection"],
        "pods_per_connection": keepalive["mean_distinct_pods"],
        "single_pod_share": keepalive["single_pod_share"],
        **_node_shares(summary, entry),
        "pod_shares": [(p["name"], p["share"] or 0.0) for p in summary["pods"]],
        "expected_pod_share": summary["pods"][0]["expected_share"] if summary["pods"] else None,
        "findings": findings[:KEY_FINDINGS],
        "link": _link(page, out) if page.is_file() else None,
        # What-ifs: this run's predictions, and its own topology (a re-run of another's).
        "topology": run_topology(data.target, run),
        "started": run.get("started") or summary["run"]["start"],
        "whatifs": summary.get("whatifs") or [],
        "_pods": [{k: p[k] for k in ("name", "node", "successes", "share")}
                  for p in summary["pods"]],
        "_requests_per_choice": (summary["fairness"].get("model") or {}).get(
            "requests_per_choice"),
    }


def whatif_checks(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each later run that re-ran an earlier run's what-if for real (the same Service, and
    its topology the what-if's: policy, LoadBalancer, pods per node, entry, connection),
    with the prediction tested against what it measured (whatif.check_rerun)."""
    order = sorted(runs, key=lambda r: (r["started"] is None, r["started"] or 0, r["index"]))
    checks: list[dict[str, Any]] = []
    for i, original in enumerate(order):
        for rerun in order[i + 1:]:
            if not _same_service(original["service"], rerun["service"]):
                continue
            whatif = matching_whatif(original["whatifs"], rerun["topology"])
            if whatif is None:
                continue
            result = check_rerun(whatif, rerun["_pods"], rerun["_requests_per_choice"])
            checks.append({
                "index": len(checks), "original": original["run_id"],
                "rerun": rerun["run_id"], "whatif": whatif["id"], "title": whatif["title"],
                "change": whatif["change"], "predicted": whatif["sentences"],
                "predicted_dropped_share": whatif["dropped_share"],
                "measured_fail_ratio": rerun["fail_ratio"], **result,
            })
    return checks


def _same_service(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return bool(a and b) and (a["namespace"], a["name"]) == (b["namespace"], b["name"])


def _node_shares(summary: Mapping[str, Any], entry: str) -> dict[str, Any]:
    """The run's spread over nodes: where requests entered, or, through a LoadBalancer, the
    node it passed each success to (the LB address itself is one entry, always 100 %)."""
    lb = summary.get("lb")
    if lb is not None:
        shares = [(name, share or 0.0) for name, share in lb["shares"].items()]
        return {
            "node_shares": shares,
            "expected_node_share": 1 / len(shares) if shares else None,
            "largest_node_share": max((s for _, s in shares), default=None),
            "node_share_note": ("nodes the LoadBalancer chose" if lb["seen"]
                                else "through the LoadBalancer: its node choice was not seen"),
            "node_caption": ("Successful requests by the node the LoadBalancer chose"
                             if lb["seen"] else "Through the LoadBalancer: which node it "
                             "chose for each request was not seen"),
        }
    shares = [(n["name"], n["share"] or 0.0) for n in summary["nodes"]
              if n["requests"] or n["is_node"]]
    targeted = [n for n in summary["nodes"] if n["is_node"] and n["targeted"]]
    return {
        "node_shares": shares,
        "expected_node_share": 1 / len(targeted) if targeted and entry != "lb" else None,
        "largest_node_share": max((s for _, s in shares), default=None),
        "node_share_note": None,
        "node_caption": "Requests by entry node",
    }


def _link(page: Path, out: Path) -> str:
    relative = os.path.relpath(page.resolve(), out.resolve())
    return "/".join(quote(part) for part in Path(relative).parts)


def compare_figures(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    figures: dict[str, str] = {}
    palette = charts.PALETTE
    for run in runs:
        color = palette[run["index"] % len(palette)]
        i = run["index"]
        if run["node_shares"]:
            names, shares = zip(*run["node_shares"], strict=True)
            figures[f"nodes-{i}"] = charts.share_bars(
                names, shares, "", color, run["expected_node_share"])
        if run["pod_shares"]:
            names, shares = zip(*run["pod_shares"], strict=True)
            figures[f"pods-{i}"] = charts.share_bars(
                names, shares, "", color, run["expected_pod_share"])
    groups = [(run["run_id"], [run["p50"], run["p95"], run["p99"]]) for run in runs]
    figures["latency"] = charts.latency_bars(groups, "Latency percentiles per run", "run")
    return figures
