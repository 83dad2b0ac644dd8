"""The HTML reports load in a real headless Chromium: charts drawn, names shown, no script run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_runs import HOSTILE_PODS, make_run

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
