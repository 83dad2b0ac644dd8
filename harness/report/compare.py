"""One page comparing run folders side by side (e.g. single node vs. all nodes vs. LB)."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness import __version__
from harness.core.text import fair_index, ms, name_list, number, pct, printable, times
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
    """Write ``index.html`` and ``compare.json`` into ``out_dir`` (default: a new
    ``compare-<time>`` folder beside the first run, never an earlier comparison's); returns
    the per-run rows, the conclusion and the files."""
    if len(run_dirs) < 2:
        raise ReportError("compare needs at least two run folders: "
                          "nodeport-harness compare RUN_A RUN_B [...]")
    runs = [run_row(Path(d), index=i) for i, d in enumerate(run_dirs)]  # all read first
    out = Path(out_dir) if out_dir is not None else new_folder(
        Path(run_dirs[0]).resolve().parent, time.strftime("compare-%Y%m%d-%H%M%S"))
    for run in runs:
        page = Path(run["_dir"]) / "index.html"
        run["link"] = _link(page, out) if page.is_file() else None
    checks = whatif_checks(runs)
    warnings = service_warnings(runs)
    sentences = conclusion(runs)
    rerender = shlex.join(["nodeport-harness", "compare",
                           *(os.path.abspath(d) for d in run_dirs),
                           "-o", os.path.abspath(out)])
    files = {"compare.json": str(write_json_atomic(out / "compare.json", finite({
        "schema": COMPARE_SCHEMA, "generated": time.time(),
        "runs": [{k: v for k, v in r.items() if k not in PAGE_ONLY and not k.startswith("_")}
                 for r in runs],
        "whatif_checks": checks,
        "warnings": warnings,
        "conclusion": sentences,
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
                            "warnings": warnings, "conclusion": sentences,
                            "best": best_cells(runs),
                            "rerender": [shlex.quote(w) for w in shlex.split(rerender)],
                            "out_dir": os.path.abspath(out),
                            "figures": figures_json(figures),
                            "charts": set(figures), "generated": time.time(),
                            "version": __version__})))
    return {"runs": runs, "whatif_checks": checks, "warnings": warnings,
            "conclusion": sentences, "out_dir": str(out), "files": files}


def new_folder(parent: Path, name: str) -> Path:
    """``parent/name``, created now: ``name-2``, ``name-3``... when it exists already (two
    comparisons in one second), so no call writes over another's page."""
    for attempt in range(1, 1000):
        folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as err:
            raise ReportError(f"cannot create {folder}: {err.strerror or err}; pass another "
                              "folder with -o OUT_DIR") from None
        return folder
    raise ReportError(f"{parent / name} and 998 numbered folders beside it exist already: "
                      "pass another folder with -o OUT_DIR")


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


def run_row(run_dir: Path, out: Path | None = None, index: int = 0) -> dict[str, Any]:
    """The figures one run contributes to the comparison (``link``: its page, relative to
    ``out``; None without ``out``)."""
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
        "link": _link(page, out) if out is not None and page.is_file() else None,
        "_dir": str(run_dir),
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
            if any(shares):  # no empty chart: a run without a success says so in words
                figures[f"nodes-{i}"] = charts.share_bars(
                    names, shares, "", color, run["expected_node_share"])
        if run["pod_shares"]:
            names, shares = zip(*run["pod_shares"], strict=True)
            if any(shares):
                figures[f"pods-{i}"] = charts.share_bars(
                    names, shares, "", color, run["expected_pod_share"], pods=True)
    groups = [(run["run_id"], [run["p50"], run["p95"], run["p99"]]) for run in runs]
    if any(v is not None for _, values in groups for v in values):
        figures["latency"] = charts.latency_bars(groups, "Latency percentiles per run", "run")
    return figures


# -- the conclusion: what the comparison says, in sentences ---------------------------------

def _and(names: Sequence[object]) -> str:
    """ "a", "a and b", "a, b and c" (at most 6 names, then "and N more")."""
    shown = [printable(n) for n in names]
    if len(shown) > 7:
        shown = [*shown[:6], f"{number(len(shown) - 6)} more"]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _count(value: float | None, noun: str) -> str:
    shown = number(value)
    return f"{shown} {noun}" if shown == "1" else f"{shown} {noun}s"


def _ties(runs: Sequence[Mapping[str, Any]], key: str, value: Any, shown: Any) -> list[Any]:
    """The runs whose ``key`` reads the same as ``value`` once formatted by ``shown``."""
    return [r["run_id"] for r in runs if shown(r[key]) == shown(value)]


def _node_spread(run: Mapping[str, Any]) -> tuple[str, str | None]:
    """How one run's requests spread over the nodes (a predicate for the entry-strategy
    sentence) and, when several nodes took them, the busiest one's share."""
    used = [node for node, share in run["node_shares"] if share]
    if run["entry"] == "lb":
        if not run.get("node_share_note") or "not seen" in run["node_share_note"]:
            return "went through the LoadBalancer, whose choice of node was not seen", None
        if len(used) == 1:
            return f"had the LoadBalancer pass every success to {printable(used[0])}", None
        return (f"had the LoadBalancer spread them over {number(len(used))} nodes",
                run["largest_node_share"])
    if not used:
        return "recorded no request", None
    if len(used) == 1:
        return f"sent every request through {printable(used[0])}", None
    return f"spread them over {number(len(used))} nodes", run["largest_node_share"]


def _node_sentence(runs: Sequence[Mapping[str, Any]]) -> str:
    """The runs grouped by entry strategy and how they spread requests over the nodes."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["entry"], _node_spread(run)[0]), []).append(run)
    clauses = []
    for (entry, predicate), members in groups.items():
        shares = [s for s in (_node_spread(r)[1] for r in members) if s is not None]
        busiest = ""
        if shares:
            low, high = pct(min(shares)), pct(max(shares))
            busiest = f", the busiest taking {low if low == high else f'{low} to {high}'}"
        clauses.append(f"{_and([r['run_id'] for r in members])} ({printable(entry)}) "
                       f"{predicate}{busiest}")
    lead = "By entry strategy" if len({r["entry"] for r in runs}) > 1 else "Over the nodes"
    return f"{lead}: " + "; ".join(clauses) + "."


def conclusion(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the compared runs show, in sentences, from their rows alone (``run_row``):
    which failed, which had critical findings, which spread traffic over the pods most and
    least evenly, how the entry strategies spread it over the nodes, which had the lowest
    and highest p95, and how the connection modes differ."""
    out: list[str] = []
    recorded = [r for r in runs if r["requests"]]
    silent = [r["run_id"] for r in runs if not r["requests"]]
    if silent:
        out.append(f"{_and(silent)} recorded no request.")
    failed = sorted((r for r in recorded if r["fail_ratio"]), key=lambda r: -r["fail_ratio"])
    clean = [r["run_id"] for r in recorded if not r["fail_ratio"]]
    if failed:
        parts = _and([f"{r['run_id']} {pct(r['fail_ratio'])}" for r in failed])
        out.append(f"Failed share of requests: {parts}"
                   + (f"; {_and(clean)} had none." if clean else "."))
    elif recorded:
        out.append("No run had a failed request.")
    critical = [r for r in runs if r["verdict"] == "critical"]
    for run in critical[:3]:
        first = next((f["text"] for f in run["findings"] if f["severity"] == "critical"), None)
        if first:
            out.append(f"{printable(run['run_id'])}: {printable(first).rstrip('.')}.")
    rated = [r for r in recorded if r["jain"] is not None]
    if len(rated) >= 2:
        best = max(rated, key=lambda r: r["jain"])
        worst = min(rated, key=lambda r: r["jain"])
        if best["jain"] - worst["jain"] < 0.01:
            out.append("All runs spread their successes over the pods about equally evenly "
                       f"(Jain's index {fair_index(worst['jain'])} to "
                       f"{fair_index(best['jain'])}, 1 = even).")
        else:
            top = _ties(rated, "jain", best["jain"], fair_index)
            low = _ties(rated, "jain", worst["jain"], fair_index)
            out.append(f"{_and(top)} spread traffic over the pods most evenly (Jain's index "
                       f"{fair_index(best['jain'])}, 1 = even); {_and(low)} least evenly "
                       f"({fair_index(worst['jain'])}).")
    spread = [r for r in runs if r["node_shares"] or r["entry"] == "lb"]
    if spread:
        out.append(_node_sentence(spread))
    timed = [r for r in recorded if r["p95"] is not None]
    if len(timed) >= 2:
        low = min(timed, key=lambda r: r["p95"])
        high = max(timed, key=lambda r: r["p95"])
        if ms(low["p95"]) == ms(high["p95"]):
            out.append(f"All runs had the same p95 latency ({ms(low['p95'])}).")
        elif high["p95"] < 1.1 * low["p95"]:  # within 10 %: noise, not a finding
            out.append(f"All runs had about the same p95 latency ({ms(low['p95'])} to "
                       f"{ms(high['p95'])}).")
        else:
            factor = (f", {times(high['p95'] / low['p95'])} as long" if low["p95"] else "")
            out.append(f"{_and(_ties(timed, 'p95', low['p95'], ms))} had the lowest p95 "
                       f"latency ({ms(low['p95'])}); {_and(_ties(timed, 'p95', high['p95'], ms))}"
                       f" the highest ({ms(high['p95'])}{factor}).")
    modes = {r["connection"] for r in recorded}
    if len(modes) > 1:
        parts = []
        for run in recorded[:8]:
            if run["connections"]:
                parts.append(
                    f"{printable(run['run_id'])} ({printable(run['connection'])}) opened "
                    f"{_count(run['connections'], 'connection')} carrying "
                    f"{_count(run['requests_per_connection'], 'request')} and reaching "
                    f"{_count(run['pods_per_connection'], 'pod')} each on average")
        if parts:
            out.append("Connections: " + "; ".join(parts) + ".")
    return out


def best_cells(runs: Sequence[Mapping[str, Any]]) -> dict[str, set[int]]:
    """Per column of the side-by-side table, the runs to highlight as the best value."""
    def pick(key: str, choose: Any, shown: Any) -> set[int]:
        values = [r for r in runs if r[key] is not None and r["requests"]]
        if len(values) < 2:
            return set()
        target = shown(choose(r[key] for r in values))
        chosen = {r["index"] for r in values if shown(r[key]) == target}
        return set() if len(chosen) == len(values) else chosen  # all equal: nothing stands out

    return {"p50": pick("p50", min, ms),
            "p95": pick("p95", min, ms), "p99": pick("p99", min, ms),
            "jain": pick("jain", max, fair_index)}
