"""The live "Spread" tab in Locust's web UI: node x pod heatmap, rates and failures over time,
findings, the per-node table, the downloads; and the start form's checks.

Built on Locust's extension points: ``template_args["extended_tabs"]`` /
``["extended_tables"]`` declare the "Spread" tab and its per-node table, which Locust's own
React table renders (every cell as text) from the rows an ``after_request`` hook adds as
``extended_stats`` to the ``/stats/requests`` reply the UI polls every 2 s. Above that table
a script of ours (``static/spread.js``, linked from Locust's page) draws the heatmap, the
time charts and the findings with plotly.js, from ``/nodeport/live.json``
(``webui_live``); plotly.js is served from the installed plotly package, so the tab works
offline. ``extended_csv_files`` links the downloads (``nodeport/report``: the HTML report
of the run so far; ``nodeport/spread.json``: the recorder snapshot) from "Download Data".
Every route sits behind Locust's login when it has one.

The start form (``webui_form``): readable labels, Entry and Connection first, the target
read-only, and a POST /swarm with a value the command line would refuse is answered with
one message before any user starts. Locust's "Reset stats" resets the recorder too
(``listeners``); the tab forgets what it cached.

Nothing here runs per recorded request: a snapshot is taken when the UI asks, at most once
per ``REFRESH_S`` (findings: ``FINDINGS_S``) whatever the number of open browsers. On a
master, ``run.recorder`` holds the aggregates merged from the workers' reports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.histogram import SERIES_BUCKETS, SERIES_SHIFT, add_hist, percentiles
from harness.core.model import Target
from harness.core.recorder import OTHER_POD, UNKNOWN_POD, SpreadRecorder
from harness.core.text import number, pct
from harness.plugin.webui_form import (
    FIXED,
    Field,
    FormCheck,
    check_form,
    extra_options,
    form_fields,
)
from harness.plugin.webui_live import live_data

if TYPE_CHECKING:
    from harness.plugin.context import HarnessRun

log = logging.getLogger("nodeport-harness")

TAB_KEY = "spread"
TAB_TITLE = "Spread"
REPORT_PATH = "/nodeport/report"
SNAPSHOT_PATH = "/nodeport/spread.json"
LIVE_PATH = "/nodeport/live.json"
STATIC = Path(__file__).with_name("static")  # spread.js, spread.css
REFRESH_S = 1.5  # Locust's UI polls every 2 s: one snapshot serves every open browser
FINDINGS_S = 5.0  # findings move slowly and cost more than the table
RATE_WINDOW_S = 10  # like Locust's "current RPS"
# Seconds still filling: the local runner's current one; on a master, also what workers
# have not reported yet (they report every 3 s).
LAG_LOCAL_S, LAG_MASTER_S = 1, 4
MAX_POD_COLUMNS = 40  # the heatmap's pods; more add up in one column
MAX_NAME = 80
NOT_PODS = (UNKNOWN_POD, OTHER_POD)
# Row keys: Locust camel-cases every key of the polled JSON (snake_case -> camelCase), so
# ours have no underscores, and names from the cluster are values, never keys.
# Locust's table sorts rows by their "name" until a header is clicked: "name" holds the order
# we want (nodes as discovered, the total last) and is not shown.
NODE_COLUMNS = (
    ("entry", "Entry node"),
    ("pods", "Pods"),
    ("requests", "Requests"),
    ("share", "Share"),
    ("rps", "Req/s now"),
    ("p95now", "p95 now (ms)"),
    ("p95", "p95 run (ms)"),
    ("failures", "Failures"),
    ("kinds", "Failure kinds"),
    ("crossnode", "Cross-node"),
)


# -- the view: pure functions of a spread snapshot and the target -----------------------------

def short(text: object, limit: int = MAX_NAME) -> str:
    """A name as shown: one line, at most ``limit`` characters."""
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def pod_columns(
    spread: Mapping[str, Any], target: Target | None, keys: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The pods the matrix shows: the target's endpoints (those that got nothing too), grouped
    by node, then pods only the replies named, then "unknown" / "(other)" when they served.

    ``keys`` (pod -> column key) is kept by the caller across calls: a pod keeps its column
    key for the whole session, so a page loaded before a new pod appeared still labels every
    column right (it just lacks the new one).
    """
    keys = {} if keys is None else keys
    node_order = {n.name: i for i, n in enumerate(target.nodes)} if target else {}
    where: dict[str, str | None] = {}
    for pod, node in spread.get("pod_nodes", {}).items():
        where[pod] = node
    endpoints = list(target.endpoints) if target else []
    for endpoint in endpoints:
        where[endpoint.pod] = endpoint.node or where.get(endpoint.pod)
    listed = [e.pod for e in sorted(
        endpoints, key=lambda e: (node_order.get(e.node or "", len(node_order)), e.pod))]
    served = spread.get("pods", {})
    extra = sorted(p for p, d in served.items()
                   if p not in NOT_PODS and d.get("successes") and p not in where)
    extra += [p for p in served if p in where and p not in listed and p not in NOT_PODS
              and served[p].get("successes")]
    names = list(dict.fromkeys(listed + extra))
    rest = names[MAX_POD_COLUMNS:]
    names = names[:MAX_POD_COLUMNS]
    columns = []
    for pod in names:
        node = where.get(pod) or served.get(pod, {}).get("node")
        title = f"{short(pod)} on {short(node)}" if node else f"{short(pod)} (node unknown)"
        key = keys.setdefault(pod, f"pod{len(keys)}")
        columns.append({"key": key, "pods": [pod], "title": title, "node": node})
    if rest:
        columns.append({"key": "podrest", "pods": rest,
                        "title": f"other pods (beyond {MAX_POD_COLUMNS} columns)"})
    for pod, title in ((UNKNOWN_POD, "reply named no pod"), (OTHER_POD, "pods beyond the cap")):
        if served.get(pod, {}).get("successes"):
            columns.append({"key": "podunknown" if pod == UNKNOWN_POD else "podother",
                            "pods": [pod], "title": title})
    return columns


def spread_structure() -> list[dict[str, str]]:
    """The "Spread" table's columns for ``extended_tables`` (one row per entry node; the
    pods are the heatmap's columns above it)."""
    return [{"key": key, "title": title} for key, title in NODE_COLUMNS]


def _share(part: float, whole: float) -> str:
    return pct(part / whole if whole else None)


def _window(rows: Sequence[Mapping[str, Any]], begin: int, end: int) -> tuple[int, list[int]]:
    """Requests and the merged coarse latency histogram of the seconds in [begin, end)."""
    requests, hist = 0, [0] * SERIES_BUCKETS
    for row in reversed(rows):  # ascending: the recent seconds are at the end
        if row["t"] < begin:
            break
        if row["t"] < end:
            requests += row["requests"]
            add_hist(hist, row.get("latency"))
    return requests, hist


def node_rows(
    spread: Mapping[str, Any],
    target: Target | None,
    now: float,
    lag_s: int = LAG_LOCAL_S,
) -> list[dict[str, str]]:
    """One row per node (and other entry point, e.g. ``lb``), then the total row."""
    entries = spread.get("entry_nodes", {})
    series = spread.get("series", {})
    nodes = {n.name: n for n in target.nodes} if target else {}
    endpoints = list(target.endpoints) if target else []
    where = {**spread.get("pod_nodes", {}), **{e.pod: e.node for e in endpoints if e.node}}
    total = spread.get("totals", {}).get("requests", 0)
    # Req/s over the last complete seconds; a young run divides by the seconds it has had.
    end = math.floor(now) - lag_s + 1
    begin = end - RATE_WINDOW_S
    if spread.get("start") is not None:
        begin = max(begin, math.floor(spread["start"]))
    seconds = max(1, end - begin)
    all_recent, all_hist = 0, [0] * SERIES_BUCKETS
    rows = []
    for order, name in enumerate([*nodes, *(e for e in entries if e not in nodes)]):
        part = entries.get(name, {})
        node = nodes.get(name)
        recent, hist = _window(series.get(name, ()), begin, end)
        all_recent += recent
        add_hist(all_hist, hist)
        pods = part.get("pods", {})
        label = short(name)
        if node is not None and not node.targeted:
            label += f" (not targeted: {short(node.reason or 'excluded', 40)})"
        elif node is None:
            label += " (not a node)"
        row = {
            "name": f"{order:05d}",
            "entry": label,
            "pods": number(sum(1 for e in endpoints if e.node == name)) if node else "–",
            **_stats(part, total, recent, seconds, hist),
            "crossnode": _cross(pods, where, name) if node else "–",
        }
        rows.append(row)
    overall = {
        "requests": total,
        "failures": spread.get("totals", {}).get("failures", 0),
        "latency": spread.get("latency", {}).get("buckets"),
        "failure_kinds": _sum_kinds(entries.values()),
    }
    row = {
        "name": "99999",
        "entry": "All entry points",
        "pods": number(len(endpoints)) if target else "–",
        **_stats(overall, total, all_recent, seconds, all_hist),
        "crossnode": _all_cross(entries, where, nodes),
    }
    rows.append(row)
    return rows


def _stats(part: Mapping[str, Any], total: int, recent: int, seconds: int,
           recent_hist: list[int]) -> dict[str, str]:
    requests = part.get("requests", 0)
    failures = part.get("failures", 0)
    kinds = part.get("failure_kinds", {})
    return {
        # Units are in the column titles; figures read as in the reports (harness.core.text).
        "requests": number(requests),
        "share": _share(requests, total),
        "rps": number(recent / seconds),
        "p95now": number(percentiles(recent_hist, (0.95,), SERIES_SHIFT)[0]),
        "p95": number(percentiles(part.get("latency"), (0.95,))[0]),
        "failures": f"{number(failures)} ({_share(failures, requests)})" if failures else "0",
        "kinds": ", ".join(f"{short(k, 30)} {number(v)}" for k, v in sorted(kinds.items()) if v)
        or "–",
    }


def _sum_kinds(parts: Any) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for part in parts:
        for kind, count in part.get("failure_kinds", {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
    return kinds


def _cross(pods: Mapping[str, int], where: Mapping[str, str | None], entry: str) -> str:
    local = cross = 0
    for pod, count in pods.items():
        node = where.get(pod)
        if node is None:
            continue  # unknown pod or pod's node: neither local nor cross-node
        if node == entry:
            local += count
        else:
            cross += count
    return _share(cross, local + cross)


def _all_cross(entries: Mapping[str, Any], where: Mapping[str, str | None],
               nodes: Mapping[str, Any]) -> str:
    local = cross = 0
    for name, part in entries.items():
        if name not in nodes:
            continue
        for pod, count in part.get("pods", {}).items():
            node = where.get(pod)
            if node is not None:
                local, cross = (local + count, cross) if node == name else (local, cross + count)
    return _share(cross, local + cross)


def finding_rows(spread: Mapping[str, Any], target: Target | None,
                 run_info: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The analysis' findings as table rows (a row saying why when there are none)."""
    if not spread.get("totals", {}).get("requests"):
        return [{"name": "00000", "severity": "info", "finding": "No request recorded yet."}]
    try:
        from harness.core.analysis import summarize
    except ImportError as err:  # the analysis is optional for the live tab
        return [{"name": "00000", "severity": "info", "finding": f"Findings unavailable: {err}"}]
    try:
        summary = summarize(spread, target.to_dict() if target else None, run_info)
    except Exception as err:  # a live view must keep working whatever the data
        log.debug("live findings failed", exc_info=True)
        return [{"name": "00000", "severity": "info", "finding": f"Findings unavailable: {err}"}]
    return [{"name": f"{order:05d}", "severity": str(f.get("severity", "")),
             "finding": str(f.get("text", ""))}
            for order, f in enumerate(summary.get("findings", ()))]


def live_view(
    spread: Mapping[str, Any],
    target: Target | None,
    now: float,
    *,
    lag_s: int = LAG_LOCAL_S,
) -> dict[str, Any]:
    """The tab's table, as ``extended_stats`` entries (keyed by the tab's key)."""
    return {TAB_KEY: node_rows(spread, target, now, lag_s)}


def analysis_run_info(run: HarnessRun, now: float) -> dict[str, Any]:
    """What ``analysis.summarize`` reads about the run, so far: the run.json the run would
    write now, in the report's own mapping (one mapping, so live and final findings agree)."""
    from harness.core.runinfo import analysis_run
    from harness.plugin.outputs import run_info

    info = analysis_run(run_info(run))
    if run.started is not None and run.stopped is None:
        info["duration_s"] = now - run.started
    return info


# -- Locust wiring ---------------------------------------------------------------------------

class SpreadTab:
    """The tab of one web UI: builds its table and live data when the UI polls, and caches
    them.

    A snapshot costs time in proportion to the run's length (its per-second series: ~0.3 s
    after an hour with three nodes) and the findings several times that, so each is rebuilt
    at most every ``REFRESH_S`` / ``FINDINGS_S`` and never more often than a fixed multiple
    of what it last cost: an open browser takes a bounded share of the master's CPU. The
    findings run in gevent's thread pool, so Locust's hub keeps serving workers meanwhile.
    """

    def __init__(self, environment: Any, run: HarnessRun):
        self.environment = environment
        self.run = run
        self._keys: dict[str, str] = {}  # pod -> its column key, stable for the session
        self._forget()

    def _forget(self) -> None:
        self._recorder: Any = None
        self._spread: dict[str, Any] | None = None
        self._rows: list[dict[str, str]] = []
        self._live: dict[str, Any] | None = None
        self._snap_at = self._snap_cost = 0.0
        self._findings: list[dict[str, str]] = []
        self._findings_at = self._findings_cost = 0.0
        self._findings_busy = False

    def reset(self, **_kwargs: Any) -> None:
        """Locust's "Reset stats" (the recorder is emptied by the listeners): forget what the
        tab cached, so the next poll shows the empty recorder."""
        self._forget()

    def snapshot(self) -> dict[str, Any]:
        """The recorder's aggregates now (an empty run before the first test starts)."""
        recorder = self.run.recorder
        if recorder is None:
            target = self.run.target
            return SpreadRecorder(target.pod_nodes() if target else {}).to_dict()
        return recorder.to_dict()

    def lag_s(self) -> int:
        return LAG_MASTER_S if self.run.role == "master" else LAG_LOCAL_S

    def _fresh_spread(self, now: float) -> dict[str, Any]:
        if self.run.recorder is not self._recorder:  # a new test: forget the last one
            self._recorder, self._spread = self.run.recorder, None
            self._findings_at = 0.0
        stopped = self.run.stopped
        if self._spread is not None and (
            now - self._snap_at < max(REFRESH_S, 4 * self._snap_cost)
            or (stopped is not None and self._snap_at > stopped)  # nothing changes any more
        ):
            return self._spread
        began = time.perf_counter()
        self._spread = self.snapshot()
        self._rows = node_rows(self._spread, self.run.target, now, self.lag_s())
        self._live = None
        self._snap_at, self._snap_cost = now, time.perf_counter() - began
        return self._spread

    def findings(self, now: float) -> list[dict[str, str]]:
        spread = self._fresh_spread(now)
        due = now - self._findings_at >= max(FINDINGS_S, 10 * self._findings_cost)
        if (due or not self._findings) and not self._findings_busy:
            self._findings_busy = True
            began = time.perf_counter()
            try:
                self._findings = _in_thread(finding_rows, spread, self.run.target,
                                            analysis_run_info(self.run, now))
            finally:
                self._findings_busy = False
            self._findings_at, self._findings_cost = now, time.perf_counter() - began
            self._live = None
        return self._findings or [
            {"name": "00000", "severity": "info", "finding": "Computing findings…"}]

    def view(self) -> dict[str, Any]:
        self._fresh_spread(time.time())
        return {TAB_KEY: self._rows}

    def live(self) -> dict[str, Any]:
        """``/nodeport/live.json``: what the panel above the table draws."""
        now = time.time()
        findings = self.findings(now)
        spread = self._fresh_spread(now)
        if self._live is None:
            run = self.run
            columns = pod_columns(spread, run.target, self._keys)
            options = self.environment.parsed_options
            about = {"entry": getattr(options, "entry", None),
                     "connection": getattr(options, "connection", None),
                     "run_id": run.run_id if run.recorder is not None else None}
            self._live = live_data(spread, run.target, columns, now=self._snap_at,
                                   started=run.started, stopped=run.stopped,
                                   lag_s=self.lag_s(), findings=findings, run=about)
        return self._live

    def extended_stats(self) -> list[dict[str, Any]]:
        return [{"key": key, "data": rows} for key, rows in self.view().items()]


def _extend(args: dict[str, Any], name: str, items: list[dict[str, Any]], by: str = "key"
            ) -> None:
    """Add ``items`` to a template-args list, replacing ours (same ``by`` field) and keeping
    other plugins'. The UI camel-cases keys: ``extended_tabs`` is ``extendedTabs``."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    key = camel if camel in args and name not in args else name
    ours = {item[by] for item in items}
    args[key] = [i for i in args.get(key) or [] if i.get(by) not in ours] + items


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:100] or "run"


def install(environment: Any, run: HarnessRun) -> SpreadTab | None:
    """Add the Spread tab, its data, the form's checks and the download routes to
    ``environment.web_ui``.

    A failure here is logged and leaves Locust's UI as it is: the load test must still run.
    """
    try:
        return _install(environment, run)
    except Exception:
        log.exception("nodeport-harness: the Spread tab is unavailable")
        return None


class StartForm:
    """The start form's fields (``webui_form``) for one web UI, and the check of a POST."""

    def __init__(self, environment: Any, run: HarnessRun):
        from locust.argument_parser import default_args_dict, get_parser

        self.environment = environment
        self.run = run
        locust_own = default_args_dict()
        # Our options and other plugins' (Locust's own are its form's fields, or not shown).
        self.actions = {dest: action for dest, action in
                        get_parser().args_included_in_web_ui.items()
                        if dest not in locust_own and action.help != argparse.SUPPRESS
                        and action.default != argparse.SUPPRESS}

    def fields(self) -> list[Field]:
        return form_fields(self.actions, self.environment.parsed_options, self.run.target)

    def extra_options(self) -> dict[str, dict[str, Any]]:
        return extra_options(self.fields(), self.actions, self.environment.parsed_options)

    def check(self, form: Any) -> FormCheck:
        environment = self.environment
        runner = environment.runner
        processes = getattr(runner, "worker_count", None) if self.run.role == "master" else 1
        return check_form(form, fields=self.fields(), actions=self.actions,
                          options=environment.parsed_options, target=self.run.target,
                          host=environment.host, processes=max(1, processes or 1))


def _page_links(base: str) -> str:
    """What Locust's page gets before ``</head>``: our script (it links its stylesheet)."""
    from html import escape

    return (f'<script defer src="{escape(base)}nodeport/spread.js" '
            f'data-tab="{escape(TAB_TITLE)}" data-fixed="({escape(FIXED)})"></script>')


def _install(environment: Any, run: HarnessRun) -> SpreadTab:
    from flask import Blueprint, Response, jsonify, request, send_file
    from werkzeug.datastructures import ImmutableMultiDict

    web_ui = environment.web_ui
    existing = getattr(web_ui, "nodeport_tab", None)
    if existing is not None:
        return existing
    tab = SpreadTab(environment, run)
    web_ui.nodeport_tab = tab
    environment.events.reset_stats.add_listener(tab.reset)
    form = StartForm(environment, run)
    # The form's fields in our order: the page's tojson would sort them (Jinja's default).
    web_ui.app.jinja_env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    locust_update = web_ui.update_template_args

    def update_template_args() -> None:
        locust_update()
        try:
            web_ui.template_args["extra_options"] = form.extra_options()
        except Exception:  # Locust's own form fields then
            log.exception("nodeport-harness: the start form's fields failed")

    web_ui.update_template_args = update_template_args
    args = web_ui.template_args
    _extend(args, "extended_tabs", [{"title": TAB_TITLE, "key": TAB_KEY}])
    _extend(args, "extended_tables", [{"key": TAB_KEY, "structure": spread_structure()}])
    _extend(args, "extended_csv_files", [
        {"href": "." + REPORT_PATH, "title": "Download NodePort report of the run so far (HTML)"},
        {"href": "." + SNAPSHOT_PATH, "title": "Download NodePort spread snapshot (JSON)"},
    ], by="href")

    options = environment.parsed_options
    base = getattr(options, "web_base_path", None) or None
    blueprint = Blueprint("nodeport", __name__, url_prefix=base)

    @web_ui.app.before_request
    def _check_swarm() -> Any:
        if request.endpoint != "locust.swarm" or request.method != "POST":
            return None
        try:
            check = form.check(request.form.items(multi=True))
        except Exception:  # never break Locust's own form for our check
            log.exception("nodeport-harness: checking the form failed")
            return None
        if check.error is not None:
            log.error("web UI: %s", check.error)
            # Locust's own answer to a bad form: its page shows the message.
            return jsonify({"success": False, "message": check.error, "host": environment.host})
        for dest, value in (check.values or {}).items():
            setattr(environment.parsed_options, dest, value)  # typed, as the command line's
        request.form = ImmutableMultiDict(check.form or [])
        return None

    @web_ui.app.after_request
    def _extend_pages(response: Response) -> Response:
        endpoint = request.endpoint
        if response.status_code != 200:
            return response
        if endpoint == "locust.index" and response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            if "</head>" in page:
                response.set_data(page.replace("</head>", _page_links("./") + "</head>", 1))
            return response
        # Locust's own route (already behind its login) answers the UI's 2 s poll: our rows
        # ride along, so the table refreshes with Locust's tables and no extra request.
        if endpoint != "locust.request_stats":
            return response
        data = response.get_json(silent=True)
        if not isinstance(data, dict):
            return response
        try:
            ours = tab.extended_stats()
        except Exception:  # never break Locust's own stats for our tab
            log.exception("nodeport-harness: live spread view failed")
            return response
        keys = {entry["key"] for entry in ours}
        others = [e for e in data.get("extended_stats") or [] if e.get("key") not in keys]
        data["extended_stats"] = others + ours
        response.set_data(json.dumps(data))
        return response

    @blueprint.route(LIVE_PATH)
    @web_ui.auth_required_if_enabled
    def nodeport_live() -> Response:
        body = json.dumps(tab.live(), separators=(",", ":"), allow_nan=False)
        return Response(body, mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @blueprint.route("/nodeport/<any('spread.js', 'spread.css'):name>")
    @web_ui.auth_required_if_enabled
    def nodeport_static(name: str) -> Response:
        return send_file(STATIC / name, max_age=60)

    @blueprint.route("/nodeport/plotly.min.js")
    @web_ui.auth_required_if_enabled
    def nodeport_plotlyjs() -> Response:
        path = plotlyjs_path()
        if path is None:
            return _text("plotly is not installed: pip install plotly", 404)
        return send_file(path, mimetype="text/javascript", max_age=86400)

    @blueprint.route(SNAPSHOT_PATH)
    @web_ui.auth_required_if_enabled
    def nodeport_snapshot() -> Response:
        if run.recorder is None:
            return _text("no test has started yet: start one, then download", 409)
        body = json.dumps(run.recorder.to_dict(), indent=1)
        return _download(body.encode(), "application/json",
                         f"{_safe_filename(run.run_id or 'run')}-spread.json")

    @blueprint.route(REPORT_PATH)
    @web_ui.auth_required_if_enabled
    def nodeport_report() -> Response:
        if run.recorder is None or run.target is None:
            return _text("no test has started yet: start one, then download its report", 409)
        spread = run.recorder.to_dict()  # here, in the hub: the recorder is not thread-safe
        info = _run_json(run)
        name = _safe_filename(run.run_id or "run")
        try:
            from harness.report.build import build_report
        except ImportError:
            return _download(json.dumps(spread, indent=1).encode(), "application/json",
                             f"{name}-spread.json")
        try:
            html = _in_thread(_build_html, build_report, spread, run.target.to_dict(), info)
        except Exception as err:  # HarnessError carries the one line to show
            log.error("nodeport-harness: live report failed: %s", err)
            return _text(f"report failed: {err}", 500)
        suffix = "-so-far" if run.stopped is None else ""
        return _download(html, "text/html", f"{name}{suffix}.html")

    web_ui.app.register_blueprint(blueprint)
    return tab


def plotlyjs_path() -> Path | None:
    """plotly.min.js of the installed plotly package (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _run_json(run: HarnessRun) -> dict[str, Any]:
    """run.json for a report of the run so far (marked partial while it still runs)."""
    from harness.plugin.outputs import run_info

    info = run_info(run)
    if run.stopped is None:
        info["partial"] = info.get("partial") or (
            "snapshot taken while the run was still going (downloaded from the web UI)")
    return info


def _build_html(build_report: Any, spread: dict, target: dict, info: dict) -> bytes:
    from harness.report.files import write_json_atomic

    with tempfile.TemporaryDirectory(prefix="nodeport-live-") as folder:
        run_dir = Path(folder) / _safe_filename(str(info.get("run_id") or "run"))
        write_json_atomic(run_dir / "target.json", target)
        write_json_atomic(run_dir / "spread.json", spread)
        write_json_atomic(run_dir / "run.json", info)
        # inline: the page must stand alone once the temporary folder is gone.
        build_report(run_dir, plotlyjs="inline")
        return (run_dir / "index.html").read_bytes()


def _in_thread(func: Any, *args: Any) -> Any:
    # Building a report takes a while: a thread keeps Locust's hub (heartbeats, users) going.
    import gevent

    return gevent.get_hub().threadpool.apply(func, args)


def _text(message: str, status: int) -> Any:
    from flask import Response

    return Response(message + "\n", status=status, mimetype="text/plain")


def _download(body: bytes, mimetype: str, filename: str) -> Any:
    from flask import Response

    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    })
