"""The live Spread tab in a real Locust web UI, looked at by real headless Chromium.

Locust runs as users run it (`python -m locust -f locustfile.py ...`, its own process) against
the lab, or against an inventory whose pod and node names are HTML/script injections; the
page is driven over the DevTools protocol so JavaScript exceptions and console errors are
collected, and a screenshot of each tab lands in the test's tmp folder.
"""

from __future__ import annotations

import base64
import contextlib
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

    def __init__(self, tmp_path: Path, *target_args: str, users: int = 4):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "locust.log"
        cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", *target_args,
               "--web-host", "127.0.0.1", "--web-port", str(self.port), "--autostart",
               "-u", str(users), "-r", str(users), "-t", "30s",
               "--report-dir", str(tmp_path / "reports")]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

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


@pytest.fixture
def browser() -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="nodeport-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        chromium = Browser(Path(profile))
        try:
            yield chromium
        finally:
            chromium.close()


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


# -- the lab, as a user would watch it --------------------------------------------------------

def test_spread_tab_shows_the_lab_live(lab, tmp_path, browser):
    # `lab`: the session's NodePort lab (conftest.py); this test only sends it traffic.
    pods = [p["name"] for p in lab.pods]
    nodes = [n["name"] for n in lab.nodes]
    locust = LocustUI(tmp_path, "--kubeconfig", str(lab.kubeconfig))
    try:
        locust.wait_for_requests()
        browser.open(locust.url + "/?tab=spread")
        table = table_where(browser, "Entry node", [*pods, *nodes, "All entry points"])
        # "Req/s now" counts completed seconds only: on a slow machine the first poll can
        # come inside the run's first second. Watch the live table until one has passed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                float(dict(zip(table["head"], row, strict=True))["Req/s now"]
                      .replace(",", "")) > 0
                for row in table["rows"] if row[0] in nodes):
            time.sleep(1)
            table = browser.evaluate(READ_TABLE)
        head = table["head"]
        # Every endpoint pod has a column, with the node it runs on, served or not.
        for pod in lab.pods:
            assert f"{pod['name']} on {pod['node']}" in head
        rows = {row[0]: dict(zip(head, row, strict=True)) for row in table["rows"]}
        for node in nodes:
            assert count(rows[node]["Requests"]) > 0, rows[node]
            assert float(rows[node]["Req/s now"].replace(",", "")) > 0, rows[node]
            assert rows[node]["p95 run (ms)"] != "–"
        placed = {n: sum(1 for p in lab.pods if p["node"] == n) for n in nodes}
        assert {n: int(rows[n]["Pods"]) for n in nodes} == placed
        total = rows["All entry points"]
        assert sum(count(total[f"{p['name']} on {p['node']}"]) for p in lab.pods) == (
            count(total["Requests"]))  # no failures in the lab: every request has a pod
        browser.screenshot(tmp_path / "spread-tab.png")
        # The table follows the run: Locust's own 2 s poll brings our rows along.
        before = count(total["Requests"])
        browser.wait_for(
            f"(() => {{ const t = {READ_TABLE}; const last = t.rows[t.rows.length - 1];"
            f" return parseInt(last[2].replace(/,/g, '')) > {before}; }})()", timeout=10)

        browser.open(locust.url + "/?tab=spread-findings")
        findings = table_where(browser, "Finding", ["externalTrafficPolicy"])
        texts = " ".join(r[1] for r in findings["rows"])
        assert "kube-proxy" in texts, findings
        browser.screenshot(tmp_path / "spread-findings-tab.png")

        browser.open(locust.url + "/?tab=reports")
        links = browser.wait_for(
            "(() => { const a = [...document.querySelectorAll('a')]"
            ".filter(a => a.href.includes('/nodeport/')).map(a => a.href);"
            " return a.length ? a : null; })()")
        assert locust.url + "/nodeport/report" in links
        assert locust.url + "/nodeport/spread.json" in links
        browser.screenshot(tmp_path / "download-data-tab.png")
        assert browser.errors == [], browser.errors
    finally:
        locust.close()
    print(f"screenshots: {tmp_path / 'spread-tab.png'} {tmp_path / 'spread-findings-tab.png'}")


# -- hostile names from an inventory and from the replies ------------------------------------

HOSTILE_PODS = [
    "</script><script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=2>",
]
HOSTILE_NODE = "<svg onload=window.__xss=3>"


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
        for tab, heading in (("spread", "Entry node"), ("spread-findings", "Finding"),
                             ("stats", "Type")):
            browser.open(f"{locust.url}/?tab={tab}")
            texts = HOSTILE_PODS + [HOSTILE_NODE] if tab == "spread" else []
            table_where(browser, heading, texts)
            time.sleep(2.5)  # let at least one live refresh render too
            assert browser.evaluate("window.__xss === undefined"), f"script ran on {tab}"
            assert browser.evaluate("document.querySelector('img[src=\"x\"]') === null")
            assert browser.evaluate("document.querySelectorAll('script').length") <= 2
        browser.open(f"{locust.url}/?tab=spread")
        table = table_where(browser, "Entry node", HOSTILE_PODS)
        head = table["head"]
        for pod, node in zip(HOSTILE_PODS, (HOSTILE_NODE, "node-2"), strict=True):
            assert f"{pod} on {node}" in head
        rows = {row[0]: row for row in table["rows"]}
        assert HOSTILE_NODE in rows, table
        assert count(rows[HOSTILE_NODE][2]) > 0, table
        browser.screenshot(tmp_path / "hostile-spread-tab.png")
        assert browser.errors == [], browser.errors
    finally:
        locust.close()
        server.shutdown()
