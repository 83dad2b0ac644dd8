"""The HTML reports load in a real headless Chromium: charts drawn, names shown, no script run."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_runs import HOSTILE_PODS, T0, make_run

from harness.report.build import build_report
from harness.report.compare import build_compare


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install "
                                                         "chromium)")


def load(page: Path, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (and a screenshot of it when asked)."""
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
        "--window-size=1400,3000", "--dump-dom",
    ]
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    done = subprocess.run([*args, page.as_uri()], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, "no <body> in the dumped DOM"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))


def test_report_renders_in_chromium_without_running_pod_names(tmp_path):
    run_dir = make_run(tmp_path, pods=[*HOSTILE_PODS, "helloworld-a", "helloworld-b"],
                       options={"max_p95_ms": 5.0})
    build_report(run_dir, plotlyjs="inline")
    screenshot = tmp_path / "report.png"
    dom = load(run_dir / "index.html", tmp_path, screenshot)

    body = body_attributes(dom)
    assert "data-js-errors" not in body, body.get("data-js-errors")
    assert body.get("data-rendered") == "ok"
    charts = int(body["data-charts"])
    assert charts == 8
    assert dom.count('class="plot-container plotly"') >= charts
    assert len(re.findall(r'class="main-svg"', dom)) >= charts

    # The names are on the page, as text; none of them ran.
    assert "data-xss" not in dom
    assert "<script>window.__xss" not in dom and "<img src=x" not in dom
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=1&lt;/script&gt;" in dom
    assert "\"quoted'" in dom and "p" * 300 in dom and "pöd-ünïcødé-日本" in dom
    assert "helloworld-a" in dom

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_page_with_shared_plotlyjs_renders(tmp_path):
    runs = [make_run(tmp_path, f"run-{entry}", seconds=10, down=None, entry=entry)
            for entry in ("single", "all")]
    result = build_compare(runs, plotlyjs="directory")
    page = Path(result["files"]["index.html"])
    assert (tmp_path / "plotly.min.js").is_file()  # beside the run folders, loaded as ../

    dom = load(page, tmp_path, tmp_path / "compare.png")

    body = body_attributes(dom)
    assert "data-js-errors" not in body, body.get("data-js-errors")
    assert body.get("data-rendered") == "ok"
    # Latency, nodes and pods per run, and run-all measured against run-single's what-if
    # "every node entered evenly" (the same topology entered every node).
    assert len(re.findall(r'class="main-svg"', dom)) >= int(body["data-charts"]) == 6
    assert "Predicted vs measured" in dom
    assert "run-single · entry single · keepalive" in dom
    assert "run-all · entry all · keepalive" in dom


def test_missing_plotlyjs_is_reported_not_silent(tmp_path):
    run_dir = make_run(tmp_path, seconds=5, down=None)
    build_report(run_dir, plotlyjs="directory")
    (tmp_path / "plotly.min.js").unlink()  # e.g. a run folder copied without its parent

    dom = load(run_dir / "index.html", tmp_path)

    body = body_attributes(dom)
    assert "plotly.js did not load" in body.get("data-js-errors", "")
    assert "data-rendered" not in body
    assert "helloworld-5f7c9d8b6-00000" in dom  # the tables are still there


# -- at 1400 px, driven over the DevTools protocol (issue 17) ---------------------------------

websocket = pytest.importorskip("websocket", reason="websocket-client drives Chromium")
from test_webui_browser import Browser  # noqa: E402 - the web-UI tests' DevTools driver

VIEWPORT = 1400
# Everything that would make a reader scroll sideways or lose a column: elements past the
# viewport, boxes whose content is wider than they are, and where each chart sits.
LAYOUT = """(() => {
  const width = document.documentElement.clientWidth;
  const name = e => e.tagName + (e.id ? '#' + e.id : '') + '.'
      + (e.className.baseVal ?? e.className);
  const wide = [...document.querySelectorAll('body *')].filter(e => {
      if (e.closest('#js-plotly-tester')) return false;  // plotly's off-screen text ruler
      const r = e.getBoundingClientRect();
      return r.width > 0 && (r.right > width + 1 || r.left < -1); }).map(name).slice(0, 10);
  const clipped = [...document.querySelectorAll('.table-wrap, table, pre, section, .run-card')]
      .filter(e => e.scrollWidth > e.clientWidth + 1).map(name);
  const charts = [...document.querySelectorAll('.js-plotly-plot')].map(e => {
      const r = e.getBoundingClientRect(), svg = e.querySelector('svg.main-svg');
      return {id: e.id, left: r.left, right: r.right, width: r.width,
              svg: svg ? svg.getBoundingClientRect().width : -1}; });
  return {width, page: document.documentElement.scrollWidth, wide, clipped, charts};
})()"""


def ticks(chart: str, axis: str = "x") -> str:
    """JavaScript: the tick labels a chart's axis shows, in order."""
    return (f"[...document.querySelectorAll('#chart-{chart} .{axis}tick text')]"
            ".map(t => t.textContent)")


@pytest.fixture
def page_browser(tmp_path):
    browser = Browser(tmp_path / "devtools-profile")
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT, height=1000,
                     deviceScaleFactor=1, mobile=False)
        yield browser
    finally:
        browser.close()


def open_page(browser: Browser, page: Path) -> dict:
    """Load a report page, wait for its charts; its layout (LAYOUT), checked to fit."""
    browser.open(page.as_uri())
    browser.wait_for("document.body && (document.body.dataset.rendered === 'ok'"
                     " || !!document.body.dataset.jsErrors)", timeout=60)
    assert browser.evaluate("document.body.dataset.jsErrors || ''") == ""
    assert browser.errors == []
    layout = browser.evaluate(LAYOUT)
    assert layout["width"] <= VIEWPORT and layout["page"] <= layout["width"], layout
    assert layout["wide"] == [] and layout["clipped"] == [], layout
    assert layout["charts"], "no chart was drawn"
    for chart in layout["charts"]:
        assert chart["left"] >= 0 and chart["right"] <= layout["width"], chart
        assert 0 < chart["svg"] <= chart["width"] + 1, chart
    return layout


def test_run_page_fits_1400px_and_its_charts_read_well(tmp_path, page_browser):
    rng = random.Random(5)
    suffixes = ["".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
                for _ in range(12)]
    pods = [f"helloworld-5f7c9d8b6-{s}" for s in suffixes]
    # 90 requests: no 503 (every 97th), so nothing failed; the run started 0.6 s into its
    # first second and stopped half-way through its last.
    run_dir = make_run(tmp_path, pods=pods, seconds=5, per_second=18, down=None)
    info = json.loads((run_dir / "run.json").read_text())
    info.update(started=T0 + 0.6, stopped=T0 + 4.5)
    (run_dir / "run.json").write_text(json.dumps(info))
    build_report(run_dir, plotlyjs="directory")

    layout = open_page(page_browser, run_dir / "index.html")
    page_browser.screenshot(tmp_path / "run-1400.png")

    drawn = {c["id"] for c in layout["charts"]}
    assert {"chart-heatmap", "chart-latency_cdf", "chart-rps", "chart-p95"} <= drawn
    # Nothing failed: no failures chart, one line instead.
    assert "chart-failures" not in drawn
    assert page_browser.evaluate("document.getElementById('no-failures').textContent") == \
        "Failures per second: No request failed."
    # Log ticks read as numbers, in order (not "4 5 6 7 8 9 1 2 3").
    cdf = page_browser.evaluate(ticks("latency_cdf"))
    numbers = [float(t.replace(",", "")) for t in cdf]
    assert len(numbers) >= 3 and numbers == sorted(set(numbers)), cdf
    # Pods by their distinguishing suffix, level; the full name in the hover data.
    assert page_browser.evaluate(ticks("heatmap")) == suffixes
    assert not page_browser.evaluate(
        "[...document.querySelectorAll('#chart-heatmap .xtick text, #chart-pod_shares .xtick"
        " text')].some(t => /rotate/.test(t.getAttribute('transform') || ''))")
    assert page_browser.evaluate(
        "document.getElementById('chart-heatmap').data[0].customdata[0][0][0]") == pods[0]
    # Requests per second: seconds 1..3 only; the partial 0 and 4 are not drawn as a dip.
    assert page_browser.evaluate(
        "document.getElementById('chart-rps').calcdata.map(t => t.map(p => [p.x, p.y]))") == \
        [[[1, 6], [2, 6], [3, 6]]] * 3
    assert "Partial seconds are not drawn: 0 s (0.4 s of it), 4 s (0.5 s of it)." in \
        page_browser.evaluate("document.getElementById('time').innerText")


def test_compare_page_of_six_runs_fits_1400px_and_opens_with_a_conclusion(tmp_path,
                                                                           page_browser):
    specs = [("baseline-single-node", "single", None, "Cluster"),
             ("round-robin-all-nodes", "all", None, "Cluster"),
             ("through-the-loadbalancer", "lb", None, "Cluster"),
             ("all-nodes-node3-down", "all", ("node-3", 2, 4), "Cluster"),
             ("single-node1-down", "single", ("node-1", 1, 3), "Cluster"),
             ("all-nodes-policy-local", "all", None, "Local")]
    runs = []
    for run_id, entry, down, policy in specs:
        runs.append(make_run(tmp_path, run_id, seconds=6, down=down, entry=entry,
                             policy=policy))
        build_report(runs[-1], plotlyjs="directory")
    result = build_compare(runs, plotlyjs="directory")
    page = Path(result["files"]["index.html"])

    layout = open_page(page_browser, page)
    page_browser.screenshot(tmp_path / "compare-1400.png")

    first = page_browser.evaluate("document.querySelector('main section').id")
    assert first == "conclusion"
    sentences = page_browser.evaluate(
        "[...document.querySelectorAll('#conclusion li')].map(li => li.textContent)")
    assert sentences == result["conclusion"] and len(sentences) >= 4
    assert any(s.startswith("Failed share of requests: single-node1-down") for s in sentences)
    rows = page_browser.evaluate("document.querySelectorAll('table.compare tbody tr').length")
    assert rows == 6
    cards = [c for c in layout["charts"] if c["id"].startswith(("chart-nodes-", "chart-pods-"))]
    assert len(cards) == 12
