"""The live Spread tab and the start form in a real Locust web UI, looked at by real headless
Chromium at 1400 px.

Locust runs as users run it (`python -m locust -f locustfile.py ...`, its own process) against
the lab, against an inventory of 20 pods on 4 nodes (a loopback app answers as those pods),
or against an inventory whose pod and node names are HTML/script injections; the page is
driven over the DevTools protocol (the form filled and submitted, the tabs and the Reset
button clicked) so JavaScript exceptions and console errors are collected, and screenshots
land in the test's tmp folder.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="chromium is not installed (apt-get install chromium)"
)
websocket = pytest.importorskip("websocket", reason="websocket-client drives Chromium")

# What the page shows, read from the DOM the way a user sees it (text, never HTML).
READ_TABLE = """(() => {
  const table = document.querySelector('table');
  if (!table) return null;
  const head = [...table.querySelectorAll('thead th')].map(c => c.textContent);
  const rows = [...table.querySelectorAll('tbody tr')].map(
      r => [...r.querySelectorAll('td')].map(c => c.textContent));
  return {head, rows};
})()"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


# -- Locust and Chromium as subprocesses -----------------------------------------------------

class LocustUI:
    """`python -m locust` with its web UI on a free loopback port; killed on exit."""

    def __init__(self, tmp_path: Path, *target_args: str, users: int = 4,
                 autostart: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "locust.log"
        self.reports = tmp_path / "reports"
        start = ["--autostart", "-u", str(users), "-r", str(users), "-t", "30s"] if (
            autostart) else []
        cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", *target_args,
               "--web-host", "127.0.0.1", "--web-port", str(self.port), *start,
               "--report-dir", str(self.reports)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:  # up once its page answers
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                break
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, (
                    self.log.read_text()[-3000:])
                time.sleep(0.2)

    def post(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        body = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)

    def live(self) -> dict[str, Any]:
        return get_json(self.url + "/nodeport/live.json")

    def spread_rows(self) -> list[dict[str, str]]:
        data = get_json(self.url + "/stats/requests")
        return next(e["data"] for e in data.get("extended_stats", []) if e["key"] == "spread")

    def wait_for_requests(self, minimum: int = 50, timeout: float = 30) -> list[dict[str, str]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                rows = self.spread_rows()
                if int(rows[-1]["requests"].replace(",", "")) >= minimum:
                    return rows
            except (OSError, StopIteration, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise AssertionError("no requests flowed:\n" + self.log.read_text()[-3000:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, evaluate, screenshot, errors."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", "--window-size=1600,1000",
             "about:blank"],
            # Its own process group: closing it ends the renderer and helper processes too.
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise AssertionError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in get_json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=20,
                                              suppress_origin=True)
        self.next_id = 0
        self.errors: list[str] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append("exception: " + json.dumps(
                details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + json.dumps(
                [a.get("value", a.get("description")) for a in params.get("args", [])]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"log ({params['entry'].get('source')}): "
                               f"{params['entry'].get('text')} {params['entry'].get('url', '')}")

    def viewport(self, width: int, height: int = 1000) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def click(self, selector: str, text: str) -> None:
        """Click the element matching ``selector`` whose text is ``text`` (any case)."""
        found = self.evaluate(
            f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})]"
            f".find(e => e.textContent.trim().toLowerCase() === {json.dumps(text.lower())});"
            " if (!e) return false; e.click(); return true; })()")
        assert found, f"no {selector} {text!r} on the page"

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"evaluate {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}; last value {value!r}; "
                             f"page text: {self.evaluate('document.body.innerText')[:1500]!r}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started
        self.proc.wait(timeout=10)


WIDTH = 1400  # the width the pages must fit, without clipping or a horizontal scrollbar


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="nodeport-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        started = Browser(Path(profile))
        try:
            yield started
        finally:
            started.close()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """The module's Chromium, at WIDTH px, with this test's errors only."""
    chromium.open("about:blank")  # (the last test's page polled a Locust now gone)
    chromium.evaluate("1")  # (its events come in first)
    chromium.errors.clear()
    chromium.viewport(WIDTH)
    yield chromium
    chromium.open("about:blank")


def table_where(browser: Browser, heading: str, texts: list[str]) -> dict[str, Any]:
    """Wait until the tab's table (with a ``heading`` column) has rows (they come with the
    UI's first poll) and shows every text; return its header and cells."""
    wanted = json.dumps(texts)
    browser.wait_for(
        f"(() => {{ const t = {READ_TABLE}; if (!t || !t.head.includes({json.dumps(heading)})"
        f" || !t.rows.length) return false;"
        f" const all = t.head.join('\\n') + t.rows.flat().join('\\n');"
        f" return {wanted}.every(x => all.includes(x)); }})()")
    return browser.evaluate(READ_TABLE)


def count(cell: str) -> int:
    return int(cell.split(" ")[0].replace(",", ""))


# -- what the Spread panel drew, and whether it fits -----------------------------------------

# The panel's plotly charts as drawn (plotly keeps each chart's data on its div).
READ_PANEL = """(() => {
  const chart = (name) => document.querySelector('.np-spread .' + name);
  const heat = chart('np-heatmap'), rate = chart('np-pod-rate'), fail = chart('np-node-failures');
  if (!heat || !heat.data || !rate || !rate.data || !fail || !fail.data) return null;
  const trace = heat.data[0];
  return {
    x: [...trace.x], y: [...trace.y], z: trace.z,
    names: trace.customdata[0].map(c => c[0]), counts: trace.customdata.map(r => r.map(c => c[3])),
    ticks: [...heat.querySelectorAll('.xtick text')].map(t => t.textContent),
    rate: rate.data.map(t => ({name: t.name, y: Array.from(t.y)})),
    failures: fail.data.map(t => ({name: t.name, y: Array.from(t.y)})),
    badges: [...document.querySelectorAll('.np-spread .np-badge')].map(
      b => [b.textContent, getComputedStyle(b).backgroundColor]),
    findings: [...document.querySelectorAll('.np-spread .np-text')].map(e => e.textContent),
    meta: document.querySelector('.np-spread .np-meta').textContent,
  };
})()"""

# Everything of the tab inside the viewport, nothing scrolled or cut inside its box, the
# heatmap's pod labels all drawn and apart.
READ_LAYOUT = """(() => {
  const width = document.documentElement.clientWidth;
  const out = {page: document.documentElement.scrollWidth, width, window: innerWidth, bad: []};
  const boxes = '.np-spread, .np-spread .np-card, .np-spread .np-chart, .np-findings, ' +
                'main .MuiTableContainer-root, main table';
  for (const e of document.querySelectorAll(boxes)) {
    const r = e.getBoundingClientRect();
    const name = e.tagName + '.' + String(e.className).split(' ')[0];
    if (r.left < -0.5 || r.right > width + 0.5) out.bad.push(['outside', name, r.left, r.right]);
    if (e.scrollWidth > e.clientWidth + 1) out.bad.push(['cut', name, e.scrollWidth,
                                                         e.clientWidth]);
  }
  for (const svg of document.querySelectorAll('.np-spread .main-svg')) {
    const card = svg.closest('.np-card').getBoundingClientRect();
    const r = svg.getBoundingClientRect();
    if (r.left < card.left - 0.5 || r.right > card.right + 0.5) {
      out.bad.push(['chart wider than its card', r.left, r.right, card.left, card.right]);
    }
  }
  const ticks = [...document.querySelectorAll('.np-heatmap .xtick text')]
    .map(t => t.getBoundingClientRect()).sort((a, b) => a.left - b.left);
  for (let i = 1; i < ticks.length; i++) {
    if (ticks[i].left < ticks[i - 1].right - 0.5) out.bad.push(['pod labels overlap', i]);
  }
  out.header_lines = Math.max(...[...document.querySelectorAll('main table th')].map((c) => {
    const style = getComputedStyle(c);
    const text = c.getBoundingClientRect().height - parseFloat(style.paddingTop) -
                 parseFloat(style.paddingBottom);
    return Math.round(text / parseFloat(style.lineHeight));
  }));
  return out;
})()"""


def panel(browser: Browser, pods: int, timeout: float = 20) -> dict[str, Any]:
    """Wait until the panel has drawn ``pods`` pod columns and some requests per second."""
    return browser.wait_for(
        f"(() => {{ const p = {READ_PANEL}; return p && p.x.length === {pods} &&"
        " p.rate.some(t => t.y.some(v => v > 0)) && p.badges.length ? p : null; })()",
        timeout=timeout)


def assert_fits(browser: Browser) -> None:
    layout = browser.evaluate(READ_LAYOUT)
    assert layout["window"] == WIDTH and layout["page"] <= layout["width"], layout  # no scrollbar
    assert layout["bad"] == [], layout
    assert layout["header_lines"] <= 2, layout  # headers read on a line or two, not four


def severity_colours(found: dict[str, Any]) -> dict[str, str]:
    return {text.lower(): colour for text, colour in found["badges"]}


# -- the lab, as a user would watch it --------------------------------------------------------

def test_spread_tab_shows_the_lab_live(lab, tmp_path, browser):
    # `lab`: the session's NodePort lab (conftest.py); this test only sends it traffic.
    pods = [p["name"] for p in lab.pods]
    nodes = [n["name"] for n in lab.nodes]
    locust = LocustUI(tmp_path, "--kubeconfig", str(lab.kubeconfig))
    try:
        locust.wait_for_requests()
        browser.open(locust.url + "/?tab=spread")
        table = table_where(browser, "Entry node", [*nodes, "All entry points"])
        # "Req/s now" counts completed seconds only: on a slow machine the first poll can
        # come inside the run's first second. Watch the live table until one has passed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                float(dict(zip(table["head"], row, strict=True))["Req/s now"]
                      .replace(",", "")) > 0
                for row in table["rows"] if row[0] in nodes):
            time.sleep(1)
            table = browser.evaluate(READ_TABLE)
        rows = {row[0]: dict(zip(table["head"], row, strict=True)) for row in table["rows"]}
        for node in nodes:
            assert count(rows[node]["Requests"]) > 0, rows[node]
            assert float(rows[node]["Req/s now"].replace(",", "")) > 0, rows[node]
            assert rows[node]["p95 run (ms)"] != "–"
        placed = {n: sum(1 for p in lab.pods if p["node"] == n) for n in nodes}
        assert {n: int(rows[n]["Pods"]) for n in nodes} == placed

        # The heatmap: a row per node, a column per pod (short name; the full one in the
        # hover), every request of the lab served by a pod (it has no failures).
        drawn = panel(browser, len(pods))
        assert drawn["y"] == nodes and sorted(drawn["names"]) == sorted(pods)
        assert all(len(x) < len(name) and name.endswith(x)
                   for x, name in zip(drawn["x"], drawn["names"], strict=True))
        assert drawn["ticks"] == drawn["x"]
        assert sum(count(c) for row in drawn["counts"] for c in row) > 0
        assert {t["name"] for t in drawn["rate"]} == set(drawn["x"])
        assert [t["name"] for t in drawn["failures"]] == nodes
        assert all(set(t["y"]) == {0} for t in drawn["failures"])
        # Findings as coloured badges: the lab's Service is externalTrafficPolicy Cluster.
        assert any("externalTrafficPolicy" in text for text in drawn["findings"]), drawn
        colours = severity_colours(drawn)
        assert colours and all(c not in ("rgba(0, 0, 0, 0)", "transparent")
                               for c in colours.values()), colours
        assert len(set(colours.values())) == len(colours)  # a colour per severity
        assert_fits(browser)
        browser.screenshot(tmp_path / "spread-tab.png")
        # The panel follows the run (it polls every 2 s, like Locust's own tables).
        before = sum(count(c) for row in drawn["counts"] for c in row)
        browser.wait_for(
            f"(() => {{ const p = {READ_PANEL}; return p.counts.flat().reduce("
            f"(a, c) => a + parseInt(c.replace(/,/g, '')), 0) > {before}; }})()", timeout=10)

        browser.open(locust.url + "/?tab=reports")
        links = browser.wait_for(
            "(() => { const a = [...document.querySelectorAll('a')]"
            ".filter(a => a.href.includes('/nodeport/')).map(a => a.href);"
            " return a.length ? a : null; })()")
        assert locust.url + "/nodeport/report" in links
        assert locust.url + "/nodeport/spread.json" in links
        # Another tab: the panel is gone from the page (it belongs to the Spread tab).
        assert browser.evaluate("document.querySelector('.np-spread') === null")
        assert browser.errors == [], browser.errors
    finally:
        locust.close()
    print(f"screenshot: {tmp_path / 'spread-tab.png'}")


# -- 20 pods on 4 nodes at 1400 px: the form, the panel, Reset stats -------------------------

TWENTY = [f"helloworld-7d9f8b6c5d-{s}" for s in (
    "x2k9p", "ab3cd", "q8wer", "zz1mn", "k3l4p", "mn7bv", "pp0qa", "rt5yu", "wq2ed", "hj6kl",
    "cv8bn", "as4df", "ty7ui", "op9lk", "gh2jk", "er3ty", "ui5op", "df6gh", "bn1mq", "xs0wq")]
FOUR = [f"worker-node-{i}" for i in range(1, 5)]


class _TwentyPods(BaseHTTPRequestHandler):
    """Answers as the 20 pods in turn (keep-alive); one request in 40 fails with a 503."""

    protocol_version = "HTTP/1.1"
    served = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _TwentyPods.served += 1
        turn = _TwentyPods.served
        body = b"" if turn % 40 == 0 else json.dumps({"pod": TWENTY[turn % 20]}).encode()
        self.send_response(503 if turn % 40 == 0 else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


# The form's fields, found by what their labels start with (the labels hold word joiners).
SET_FIELD = """((start, value) => {
  const field = [...document.querySelectorAll('[name]')].find(e => e.name.startsWith(start));
  if (!field) return false;
  // as typing does: through the element's own value setter, so React sees it too
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(field), 'value').set.call(field, value);
  field.dispatchEvent(new Event('input', {bubbles: true}));
  field.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
})"""
READ_FORM = """(() => {
  const box = [...document.querySelectorAll('.MuiAccordion-root')].find(
    a => a.textContent.startsWith('Custom parameters'));
  const fixed = [...document.querySelectorAll('select[name$="(set at start-up)"]')];
  return {labels: [...box.querySelectorAll('label')].map(l => l.textContent.trim()),
          fixed: fixed.map(s => [s.name, s.value, s.disabled, s.options.length]),
          host: document.querySelector('input[name="host"]').readOnly,
          alert: document.querySelector('[role="alert"]')?.textContent || null};
})()"""


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # Locust killed at the end resets its kept-alive connections


def twenty_pods(tmp_path: Path) -> tuple[ThreadingHTTPServer, Path]:
    """The 20-pod app on loopback, and an inventory naming it (4 nodes)."""
    server = _QuietServer(("127.0.0.1", 0), _TwentyPods)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({
        "service": {"name": "helloworld", "namespace": "demo",
                    "nodePort": server.server_address[1]},
        "nodes": [{"name": n, "address": "127.0.0.1"} for n in FOUR],
        "endpoints": [{"pod": p, "node": FOUR[i % 4]} for i, p in enumerate(TWENTY)],
    }))
    return server, inventory


def test_twenty_pods_form_panel_and_reset_at_1400_px(tmp_path, browser):
    server, inventory = twenty_pods(tmp_path)
    locust = LocustUI(tmp_path, "--inventory", str(inventory), autostart=False)
    stats = locust.url + "/stats/requests"
    try:
        # The start form: readable labels, Entry and Connection first, the target read-only.
        browser.open(locust.url + "/")
        browser.wait_for("document.querySelectorAll('.MuiAccordionSummary-root').length >= 2")
        browser.click(".MuiAccordionSummary-root", "Custom parameters")
        form = browser.wait_for(f"(() => {{ const f = {READ_FORM}; return f.fixed.length &&"
                                " document.querySelector('.MuiCollapse-entered select') ? f"
                                " : null; })()")
        labels = [label.replace("\u2060", "") for label in form["labels"]]
        assert labels[0].startswith("Entry:") and labels[1].startswith("Connection:"), labels
        assert "Threshold: largest p95 latency (ms)" in labels
        assert not [t for t in labels if "%(" in t or "P9 5" in t or "Ms (" in t], labels
        fixed = {name.split(" (")[0]: (value, disabled, choices)
                 for name, value, disabled, choices in form["fixed"]}
        assert fixed["Inventory"] == (str(inventory), True, 1)
        assert fixed["Target"][0].startswith("demo/helloworld, nodePort")
        assert form["host"] is True  # Host follows Entry
        browser.screenshot(tmp_path / "start-form.png")

        # A node that is not the target's: one message on the page, no user starts.
        assert browser.evaluate(f"{SET_FIELD}('Entry:', 'single')")
        assert browser.evaluate(f"{SET_FIELD}('Node for Entry', 'no-such-node')")
        browser.click("button", "Start")
        alert = browser.wait_for(f"{READ_FORM}.alert")
        assert alert.startswith("--node no-such-node: the target has no such node"), alert
        # The same by hand: another Host (as if the LB's), a Service, an unknown --entry.
        for form_fields, message in (
                ({"host": "http://198.18.0.1:80"}, "Host cannot be changed from the web UI"),
                ({"service": "doesnotexist"}, "--service cannot be set from the web UI"),
                ({"entry": "bogus"}, "--entry 'bogus': choose one of")):
            answer = locust.post("/swarm", {"user_count": "3", "spawn_rate": "3",
                                            **form_fields})
            assert answer["success"] is False and message in answer["message"], answer
        status = get_json(stats)
        assert status["state"] == "ready" and status["user_count"] == 0, status
        log = locust.log.read_text()
        assert log.count("nodeport-harness: web UI: ") == 4, log[-3000:]  # one line each
        assert "Traceback" not in log, log[-3000:]

        # A good form, sent with the labels the page posts: it runs with those values.
        for start, value in (("Entry:", "all"), ("Node for Entry", ""),
                             ("Threshold: largest p", "500"), ("Run id", "web-form")):
            assert browser.evaluate(f"{SET_FIELD}({json.dumps(start)}, {json.dumps(value)})")
        assert browser.evaluate(f"{SET_FIELD}('userCount', '6')")
        browser.click("button", "Start")
        browser.wait_for("document.querySelectorAll('[role=\"tab\"]').length > 3")
        browser.click('[role="tab"]', "Spread")

        # The panel at 1400 px with 20 pods: every pod a column, nothing cut.
        drawn = panel(browser, len(TWENTY))
        assert drawn["y"] == FOUR and sorted(drawn["names"]) == sorted(TWENTY)
        assert drawn["x"] == drawn["ticks"] and max(map(len, drawn["x"])) <= 6, drawn["x"]
        browser.wait_for(f"(() => {{ const p = {READ_PANEL}; "
                         "return p.failures.some(t => t.y.some(v => v > 0)); })()")
        assert severity_colours(drawn)
        assert_fits(browser)
        browser.screenshot(tmp_path / "spread-20-pods.png")

        # Locust's "Reset stats" button resets the recorder too: mid-run, the reports then
        # say from when they count (and the timeline marks it)...
        deadline = time.time() + 20
        while count(locust.live()["requests"]) < 300:
            assert time.time() < deadline, "too few requests"
            time.sleep(0.5)
        browser.click("header button", "Reset")
        live = locust.live()
        while not live["markers"]:  # (drawn once its second is over)
            assert time.time() < deadline + 20, live
            time.sleep(0.5)
            live = locust.live()
        assert [m["label"] for m in live["markers"]] == ["stats reset"]
        assert browser.errors == [], browser.errors

        assert locust.post("/stop", {})["success"] is True
        run_json = locust.reports / "web-form" / "run.json"
        deadline = time.time() + 30
        while not run_json.exists():
            assert time.time() < deadline, locust.log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(0.5)  # (written atomically; the other files follow it)
        run = json.loads(run_json.read_text())
        assert run["options"]["max_p95_ms"] == 500.0 and run["users"] == 6
        assert "statistics reset from the web UI" in run["partial"]
        # ... and once stopped, a reset empties the tab: no request left to draw.
        browser.wait_for("document.querySelector('.np-meta').textContent.includes('requests')")
        browser.click("header button", "Reset")
        empty = browser.wait_for(
            f"(() => {{ const p = {READ_PANEL}; return p && p.counts.flat().every(c => c === '0')"
            " && p.rate.every(t => t.y.every(v => v === 0)) ? p : null; })()")
        assert empty["meta"].startswith("0 requests, 0 failed"), empty["meta"]
        assert locust.live()["requests"] == "0"
        browser.screenshot(tmp_path / "spread-after-reset.png")
        assert browser.errors == [], browser.errors
    finally:
        locust.close()
        server.shutdown()
    print(f"screenshots: {tmp_path}/start-form.png spread-20-pods.png spread-after-reset.png")


def test_reset_stats_empties_the_recorders_of_master_and_workers(tmp_path):
    """A worker reports every 3 s: what it recorded before the reset and not reported yet must
    not reach the master's spread after it (the worker empties its recorder when told; a
    report already on its way is dropped until the worker confirms)."""
    server, inventory = twenty_pods(tmp_path)
    port = str(free_port())
    master = LocustUI(tmp_path, "--inventory", str(inventory), "--master",
                      "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                      autostart=False)
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "locust", "-f", "locustfile.py",
                                   "--worker", "--master-host", "127.0.0.1",
                                   "--master-port", port],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while get_json(master.url + "/stats/requests").get("workers", []) == []:
            assert time.time() < deadline and worker.poll() is None, "no worker"
            time.sleep(0.3)
        assert master.post("/swarm", {"user_count": "4", "spawn_rate": "4"})["success"]
        while count(master.live()["requests"]) < 300:
            assert time.time() < deadline + 30, master.log.read_text()[-3000:]
            time.sleep(0.3)
        time.sleep(1.5)  # the worker holds data it has not reported yet
        with urllib.request.urlopen(urllib.request.Request(
                master.url + "/stats/reset", method="POST"), timeout=10) as reply:
            assert reply.read() == b"ok"
        live = master.live()
        # Reports from the worker after its reset come in: the spread counts again.
        while not (live["markers"] and count(live["requests"]) > 100):
            assert time.time() < deadline + 60, live
            time.sleep(0.5)
            live = master.live()
        reset_second = int(live["markers"][0]["x"])
        before = [sum(column[i] for column in live["pod_rate"])
                  for i in range(reset_second - live["x0"])]
        assert before and set(before) == {0}, before  # nothing from before the reset
        assert sum(sum(column) for column in live["pod_rate"]) > 0
    finally:
        worker.kill()
        worker.wait(timeout=10)
        master.close()
        server.shutdown()


# -- hostile names from an inventory and from the replies ------------------------------------

HOSTILE_PODS = [
    "</script><script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=2>",
]
HOSTILE_NODE = "<svg onload=window.__xss=3>"
# The only scripts the page may hold: Locust's bundle and its template args, ours, plotly.js.
SCRIPTS = """[...document.querySelectorAll('script')].map(
  s => s.src ? new URL(s.src).pathname : 'inline:' + s.textContent.trim().slice(0, 22))"""


class _HostileApp(BaseHTTPRequestHandler):
    served = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _HostileApp.served += 1
        body = json.dumps({"pod": HOSTILE_PODS[_HostileApp.served % 2]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_hostile_pod_and_node_names_are_shown_as_text(tmp_path, browser):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({
        "service": {"name": "helloworld", "nodePort": server.server_address[1]},
        "nodes": [{"name": HOSTILE_NODE, "address": "127.0.0.1"},
                  {"name": "node-2", "address": "127.0.0.1"}],
        "endpoints": [{"pod": HOSTILE_PODS[0], "node": HOSTILE_NODE},
                      {"pod": HOSTILE_PODS[1], "node": "node-2"}],
    }))
    locust = LocustUI(tmp_path, "--inventory", str(inventory), users=2)
    try:
        locust.wait_for_requests(minimum=20)
        for tab, heading in (("spread", "Entry node"), ("stats", "Type")):
            browser.open(f"{locust.url}/?tab={tab}")
            table_where(browser, heading, [HOSTILE_NODE] if tab == "spread" else [])
            if tab == "spread":
                drawn = panel(browser, 2)
                # plotly got them escaped, and draws them as the text they are
                assert sorted(drawn["names"]) == sorted(
                    html.escape(p, quote=False) for p in HOSTILE_PODS)
                assert browser.evaluate(
                    "[...document.querySelectorAll('.np-heatmap .ytick text')]"
                    f".map(t => t.textContent).includes({json.dumps(HOSTILE_NODE)})")
            time.sleep(2.5)  # let at least one live refresh render too
            assert browser.evaluate("window.__xss === undefined"), f"script ran on {tab}"
            assert browser.evaluate("document.querySelector('img[src=\"x\"]') === null")
            assert browser.evaluate("document.querySelector('main svg[onload]') === null")
            scripts = browser.evaluate(SCRIPTS)
            assert all(s.startswith(("/assets/src-", "inline:window.templateArgs"))
                       or s in ("/nodeport/spread.js", "/nodeport/plotly.min.js")
                       for s in scripts), scripts
        browser.open(f"{locust.url}/?tab=spread")
        table = table_where(browser, "Entry node", [HOSTILE_NODE])
        rows = {row[0]: row for row in table["rows"]}
        assert count(rows[HOSTILE_NODE][2]) > 0, table
        panel(browser, 2)
        browser.screenshot(tmp_path / "hostile-spread-tab.png")
        assert browser.errors == [], browser.errors
    finally:
        locust.close()
        server.shutdown()
