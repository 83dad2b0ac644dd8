"""Reports from synthetic run folders: every output exists, parses, adds up and escapes."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from report_runs import HOSTILE_PODS, make_run

from harness.cli import main
from harness.core.analysis import SUMMARY_SCHEMA
from harness.core.text import redact_command
from harness.errors import ReportError
from harness.report import csvs as tables
from harness.report.build import OUTPUTS, build_report
from harness.report.compare import build_compare
from harness.report.html import script_json
from harness.report.junit import xml_text
from harness.report.markdown import md

ROOT = Path(__file__).resolve().parents[1]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def parse_junit(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # noqa: S314 - the file this test just wrote


def figures_of(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="figures">(.*?)</script>', page,
                      re.S)
    assert match, "the figures JSON is missing"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = make_run(tmp_path_factory.mktemp("reports"), options={
        "max_p95_ms": 5.0, "max_fail_ratio": 0.5, "require_all_pods": True,
    })
    return run_dir, build_report(run_dir, plotlyjs="cdn")


def test_every_output_is_written_and_returned(built):
    run_dir, result = built
    assert set(result) == {"summary", "thresholds", "files"}
    assert set(result["files"]) == set(OUTPUTS)
    for name, path in result["files"].items():
        assert Path(path) == run_dir / name and Path(path).stat().st_size > 0


def test_summary_json_is_versioned_with_thresholds(built):
    run_dir, result = built
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schema"] == SUMMARY_SCHEMA
    assert summary["run_id"] == "run-test"
    assert summary["thresholds"] == result["thresholds"]
    assert {t["name"] for t in summary["thresholds"]} == {
        "max_p95_ms", "max_fail_ratio", "require_all_pods"}
    assert summary["findings"] and all({"id", "severity", "text", "metric"} <= set(f)
                                       for f in summary["findings"])


def test_csv_files_add_up_to_the_spread_totals(built):
    run_dir, _ = built
    spread = json.loads((run_dir / "spread.json").read_text())
    totals = spread["totals"]

    header, nodes = read_csv(run_dir / "nodes.csv")
    assert header == list(tables.NODE_FIELDS)
    assert sum(int(r["requests"]) for r in nodes) == totals["requests"]
    assert sum(int(r["failures"]) for r in nodes) == totals["failures"]
    assert {r["entry_node"] for r in nodes} == {"node-1", "node-2", "node-3"}

    header, pods = read_csv(run_dir / "pods.csv")
    assert header == list(tables.POD_FIELDS)
    assert sum(int(r["successes"]) for r in pods) == totals["successes"]

    header, seconds = read_csv(run_dir / "timeseries.csv")
    assert header == list(tables.SERIES_FIELDS)
    assert sum(int(r["requests"]) for r in seconds) == totals["requests"]
    assert sum(int(r["failures"]) for r in seconds) == totals["failures"]
    for name, entry in spread["entry_nodes"].items():
        rows = [r for r in seconds if r["entry_node"] == name]
        assert len(rows) == 30  # one row per second, per node
        assert sum(int(r["requests"]) for r in rows) == entry["requests"]
    down = [r for r in seconds if r["entry_node"] == "node-3" and 10 <= int(r["elapsed_s"]) < 20]
    assert all(r["p95_ms"] == "" and int(r["failures"]) == int(r["requests"]) for r in down)


def test_junit_has_a_case_per_threshold_and_fails_the_breached_one(built):
    run_dir, result = built
    root = parse_junit(run_dir / "junit.xml")
    cases = root.findall(".//testcase")
    assert sorted(c.get("name") for c in cases) == sorted(t["name"] for t in result["thresholds"])
    failed = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failed) == {"max_p95_ms"}  # synthetic p95 is ~7 ms, the limit 5 ms
    assert "p95" in failed["max_p95_ms"].get("message")
    assert root.get("failures") == "1" and root.get("tests") == "3"


@pytest.mark.parametrize(("partial", "fails"), [(None, False), ("worker-2 sent no final", True)])
def test_junit_without_thresholds_has_one_run_completed_case(tmp_path, partial, fails):
    run_dir = make_run(tmp_path, seconds=5, down=None, partial=partial)
    build_report(run_dir, plotlyjs="cdn")
    cases = parse_junit(run_dir / "junit.xml").findall(".//testcase")
    assert [c.get("name") for c in cases] == ["run completed"]
    assert (cases[0].find("failure") is not None) is fails


def test_summary_md_has_headline_findings_table_and_thresholds(built):
    run_dir, result = built
    text = (run_dir / "summary.md").read_text()
    for finding in result["summary"]["findings"]:
        assert md(finding["text"]) in text
    assert "| pod | node | node-1 | node-2 | node-3 | total | share |" in text
    assert "### Thresholds" in text and "breached" in text
    assert "hunter2" not in text  # the --web-auth value in run.json's command


def test_index_html_has_every_section_and_chart(built):
    run_dir, _ = built
    page = (run_dir / "index.html").read_text()
    figures = figures_of(page)
    assert set(figures) == {"heatmap", "pod_shares", "latency_nodes", "latency_cdf",
                            "locality", "rps", "p95", "failures"}
    for chart in figures:
        assert f'id="chart-{chart}"' in page
    # Findings come first, before the target and the charts.
    assert page.index('id="findings"') < page.index('id="target"') < page.index('id="spread"')
    for text in ("demo/helloworld", "30080", "10.0.0.11", "coordinated omission",
                 "How to reproduce", "node-3 down"):
        assert text in page
    assert "hunter2" not in page and "/tmp/lab/kubeconfig" not in page
    assert "--web-auth REDACTED" in page


def test_no_temporary_files_are_left(built):
    run_dir, _ = built
    leftovers = [p.name for p in run_dir.parent.rglob("*")
                 if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_rebuilding_replaces_the_files(built):
    run_dir, _ = built
    before = (run_dir / "summary.json").stat().st_ino
    build_report(run_dir, plotlyjs="cdn")
    assert (run_dir / "summary.json").stat().st_ino != before  # replaced, not rewritten in place


def test_hostile_pod_names_never_appear_unescaped(tmp_path):
    run_dir = make_run(tmp_path, pods=[*HOSTILE_PODS, "=HYPERLINK(\"http://x\")"], seconds=5,
                       options={"require_all_pods": True})
    build_report(run_dir, plotlyjs="cdn")
    page = (run_dir / "index.html").read_text()
    assert "<script>window.__xss" not in page
    assert "<script>document.body" not in page
    assert "<img src=x" not in page
    assert page.count("<script") == 4  # error capture, figures JSON, plotly.js, rendering
    # Shown as text, escaped: in the tables ...
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "&#34;quoted&#39;" in page
    assert "p" * 300 in page
    assert "pöd-ünïcødé-日本" in page
    # ... and in the charts' JSON, which stays valid and holds no raw < > & or U+2028.
    match = re.search(r'id="figures">(.*?)</script>', page, re.S)
    raw = match.group(1)
    assert not set("<>&\u2028\u2029") & set(raw)
    labels = json.dumps(figures_of(page), ensure_ascii=False)
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=1" in labels
    # Markdown and CSV: no raw HTML, no spreadsheet formula.
    summary_md = (run_dir / "summary.md").read_text()
    assert "<script>" not in summary_md and "<img" not in summary_md
    _, pods = read_csv(run_dir / "pods.csv")
    assert "'=HYPERLINK(\"http://x\")" in {r["pod"] for r in pods}
    assert HOSTILE_PODS[0] in {r["pod"] for r in pods}  # CSV keeps the name as it is
    parse_junit(run_dir / "junit.xml")


def test_control_characters_cannot_break_junit(tmp_path):
    run_dir = make_run(tmp_path, seconds=5, down=None, options={"require_all_pods": True})
    target = json.loads((run_dir / "target.json").read_text())
    target["endpoints"].append({"pod": "idle\x07pod\x00", "node": "node-1", "ip": "10.244.0.99",
                                "ready": True, "zone": None})
    (run_dir / "target.json").write_text(json.dumps(target))
    result = build_report(run_dir, plotlyjs="cdn")
    assert [t["passed"] for t in result["thresholds"]] == [False]
    failure = parse_junit(run_dir / "junit.xml").find(".//failure")
    assert "idle\ufffdpod" in failure.get("message")


def test_plotlyjs_inline_directory_and_cdn(tmp_path):
    run_a = make_run(tmp_path, "run-a", seconds=5, down=None)
    run_b = make_run(tmp_path, "run-b", seconds=5, down=None)

    build_report(run_a, plotlyjs="inline")
    inline = (run_a / "index.html").read_text()
    assert len(inline) > 3_000_000 and "../plotly.min.js" not in inline
    assert "<script src=" not in inline

    result = build_report(run_a, plotlyjs="directory")
    shared = tmp_path / "plotly.min.js"
    assert result["files"]["plotly.min.js"] == str(shared) and shared.stat().st_size > 3_000_000
    assert 'src="../plotly.min.js"' in (run_a / "index.html").read_text()
    first = shared.stat().st_ino
    build_report(run_b, plotlyjs="directory")
    assert shared.stat().st_ino == first  # shared, not rewritten for every run

    build_report(run_b, plotlyjs="cdn")
    cdn = (run_b / "index.html").read_text()
    assert re.search(r'src="https://cdn\.plot\.ly/plotly-[\d.]+\.min\.js"', cdn)
    assert 'integrity="sha384-' in cdn and len(cdn) < 400_000


def test_only_spread_json_still_renders(tmp_path):
    run_dir = make_run(tmp_path, seconds=5, down=None)
    (run_dir / "target.json").unlink()
    (run_dir / "run.json").unlink()
    result = build_report(run_dir, plotlyjs="cdn")
    assert result["thresholds"] == []
    assert "unknown Service" in (run_dir / "index.html").read_text()


@pytest.mark.parametrize(("content", "message"), [
    ("{", "spread.json is not valid JSON"),
    ("[]", "does not hold a JSON object"),
    ('{"schema": "other/v9"}', "expected 'nodeport-harness/spread/v1'"),
])
def test_malformed_spread_json_is_one_clear_error(tmp_path, content, message):
    run_dir = tmp_path / "run-x"
    run_dir.mkdir()
    (run_dir / "spread.json").write_text(content)
    with pytest.raises(ReportError, match=re.escape(message)):
        build_report(run_dir)


def test_malformed_run_data_is_one_clear_error(tmp_path):
    run_dir = make_run(tmp_path, seconds=5, down=None)
    spread = json.loads((run_dir / "spread.json").read_text())
    spread["entry_nodes"]["node-1"] = 5
    (run_dir / "spread.json").write_text(json.dumps(spread))
    with pytest.raises(ReportError, match="entry_nodes/node-1 should be an object, not an "
                                          "integer"):
        build_report(run_dir)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_report_cli_on_a_folder_that_is_not_a_run(tmp_path):
    done = cli("report", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path} is not a run folder (no spread.json): "
        "pass a folder written by nodeport-harness run"]


def test_report_cli_prints_paths_and_exits_1_on_a_breach(tmp_path, capsys):
    run_dir = make_run(tmp_path, seconds=5, down=None, options={"max_p95_ms": 1.0})
    assert main(["report", str(run_dir), "--plotlyjs", "cdn"]) == 1
    out, err = capsys.readouterr()
    assert sorted(Path(line).name for line in out.splitlines()) == sorted(OUTPUTS)
    assert "threshold breached: p95 latency" in err


def test_compare_writes_one_page_naming_each_run(tmp_path):
    runs = [make_run(tmp_path, f"run-{entry}", seconds=5, down=None, entry=entry)
            for entry in ("single", "all", "lb")]
    build_report(runs[0], plotlyjs="cdn")  # rendered runs get a link
    out = tmp_path / "side-by-side"
    assert main(["compare", *map(str, runs), "-o", str(out), "--plotlyjs", "cdn"]) == 0
    page = (out / "index.html").read_text()
    for entry in ("single", "all", "lb"):
        assert f"run-{entry} · entry {entry} · keepalive" in page
    assert 'href="../run-single/index.html"' in page
    assert "All ingress entered through node-1" in page  # single node's key finding
    figures = figures_of(page)
    assert {"latency", "nodes-0", "pods-0", "nodes-2", "pods-2"} <= set(figures)
    data = json.loads((out / "compare.json").read_text())
    assert [r["entry"] for r in data["runs"]] == ["single", "all", "lb"]
    assert data["runs"][0]["node_shares"][0] == ["node-1", 1.0]


def test_compare_needs_two_runs(tmp_path):
    run_dir = make_run(tmp_path, seconds=5, down=None)
    with pytest.raises(ReportError, match="at least two run folders"):
        build_compare([run_dir])


def test_redact_command_hides_secret_values():
    command = "locust --web-auth admin:pw --api-token=abc --users 5 --kubeconfig /k/config"
    assert redact_command(command) == (
        "locust --web-auth REDACTED --api-token=REDACTED --users 5 --kubeconfig /k/config")
    assert "could not be parsed" in redact_command("locust --x 'unbalanced")


def test_script_json_and_markdown_escaping():
    text = json.dumps({"pod": "</script><!--\u2028&"}, ensure_ascii=False)
    safe = str(script_json(text))
    assert not set("<>&\u2028") & set(safe) and json.loads(safe) == json.loads(text)
    assert md("a|b <i>*x*</i>") == r"a\|b &lt;i&gt;\*x\*&lt;/i&gt;"
    assert xml_text("ok\x00\x1f") == "ok\ufffd\ufffd"
