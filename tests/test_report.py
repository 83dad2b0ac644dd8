"""Reports from synthetic run folders: every output exists, parses, adds up and escapes."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from report_runs import HOSTILE_PODS, T0, make_run

from harness.cli import main
from harness.core.analysis import SUMMARY_SCHEMA
from harness.core.text import redact_command
from harness.errors import ReportError
from harness.report import charts
from harness.report import csvs as tables
from harness.report.build import (
    OUTPUTS,
    build_report,
    inferred_cwd,
    reproduce_command,
    target_sentence,
)
from harness.report.compare import build_compare, conclusion, new_folder
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


# -- run and compare pages (issue 17): partial seconds, log ticks, short names, footers -------

def values(array) -> list[float]:
    """A plotly JSON array: a list, or a typed array ({"dtype", "bdata"})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_whole_seconds_leave_out_the_partial_first_and_last_second():
    t0 = 1_700_000_000
    rows = [{"t": t0 + s, "elapsed_s": s, "requests": 3000} for s in range(11)]
    start, end = t0 + 0.765, t0 + 10.797  # the run's own start and stop (run.json)
    kept = charts.whole_seconds(rows, start, end)
    assert [r["elapsed_s"] for r in kept] == list(range(1, 10))
    dropped = charts.partial_seconds({"node-1": rows}, start, end)
    assert [t for t, _ in dropped] == [0, 10]
    assert [round(part, 3) for _, part in dropped] == [0.235, 0.797]
    # Whole seconds at both ends (or a few ms short of it) stay; unknown bounds keep all.
    assert len(charts.whole_seconds(rows, t0 + 0.01, t0 + 11)) == 11
    assert len(charts.whole_seconds(rows, None, None)) == 11
    # A request completing after the stop (in flight at the end) is no whole second either.
    assert charts.partial_seconds({"n": rows}, t0, t0 + 9.0) == [(9, 0.0), (10, 0.0)]


def test_rate_charts_do_not_draw_partial_seconds_as_a_crash(tmp_path):
    run_dir = make_run(tmp_path, seconds=6, down=None)
    edit_json(run_dir / "run.json", started=T0 + 0.6, stopped=T0 + 5.3)
    build_report(run_dir, plotlyjs="cdn")
    page = (run_dir / "index.html").read_text()
    figures = figures_of(page)
    for trace in figures["rps"]["data"]:
        # Seconds 1..4 only: 0 and 5 ran for 0.4 s and 0.3 s.
        assert trace["x0"] == 1 and len(values(trace["y"])) == 4
        assert min(values(trace["y"])) == 20  # 60 requests/s over 3 nodes, no dip
    assert all(len(values(t["y"])) == 6 for t in figures["p95"]["data"]
               if not t["name"].endswith("(failed)"))  # latency keeps every second
    assert figures["rps"]["layout"]["xaxis"]["range"] == [0, 5]  # aligned with p95's
    assert "Partial seconds are not drawn: 0 s (0.4 s of it), 5 s (0.3 s of it)." in page


def test_no_failures_chart_when_nothing_failed(tmp_path):
    run_dir = make_run(tmp_path, seconds=3, per_second=30, down=None)  # under 97: no 503
    build_report(run_dir, plotlyjs="cdn")
    page = (run_dir / "index.html").read_text()
    assert "failures" not in figures_of(page) and 'id="chart-failures"' not in page
    assert '<p class="note" id="no-failures">Failures per second: No request failed.</p>' in page


def test_log_ticks_read_as_numbers_in_order():
    ticks, texts, span = charts.log_ticks(0.8, 37)
    assert texts == ["0.5", "1", "2", "5", "10", "20", "50"]
    assert span == pytest.approx([math.log10(0.5), math.log10(50)])
    ticks, texts, _ = charts.log_ticks(0.004, 30_000)  # 8 decades: one tick per decade
    assert texts == ["0.001", "0.01", "0.1", "1", "10", "100", "1,000", "10,000", "100,000"]
    assert [float(t.replace(",", "")) for t in texts] == ticks == sorted(ticks)
    for low, high in ((0.123, 0.124), (3, 3), (1, 1000), (7.5, 12_345.6)):
        ticks, texts, span = charts.log_ticks(low, high)
        assert 10 ** span[0] <= low and 10 ** span[1] >= high and len(ticks) >= 2
        assert ticks == sorted(set(ticks))
    with pytest.raises(ValueError):
        charts.log_ticks(0, 5)


def test_latency_cdf_has_explicit_number_ticks(built):
    run_dir, _ = built
    axis = figures_of((run_dir / "index.html").read_text())["latency_cdf"]["layout"]["xaxis"]
    assert axis["type"] == "log" and axis["tickmode"] == "array"
    assert [float(t.replace(",", "")) for t in axis["ticktext"]] == axis["tickvals"]
    assert set(str(t)[0] for t in axis["ticktext"]) <= {"0", "1", "2", "5"}


def test_short_names_keep_what_tells_pods_apart():
    assert charts.short_names(["helloworld-5f7c9d8b6-x2x7q", "helloworld-5f7c9d8b6-9kq4z"]) \
        == ["x2x7q", "9kq4z"]
    # A suffix two pods share, or one too short to read alone, takes more of the name.
    assert charts.short_names(["a-6d4-x2x7q", "b-6d4-x2x7q", "web-0", "web-1", "unknown"]) \
        == ["a-6d4-x2x7q", "b-6d4-x2x7q", "web-0", "web-1", "unknown"]
    assert charts.short_names(["p" * 300, "q" * 300])[0] == "p" * 31 + "…"
    assert charts.pod_labels(["x-<b>bold</b>"]) == ["&lt;b&gt;bold&lt;/b&gt;"]
    rng = random.Random(17)
    for _ in range(300):
        names = ["-".join(rng.choice(["a", "b", "web", "5f7c", "x2x7q", ""])
                          for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 8))]
        short = charts.short_names(names)
        assert len(set(short)) == len(short), (names, short)
        for name, text in zip(names, short, strict=True):
            assert name.endswith(text.split(" #")[0]) or " #" in text, (name, text)


def test_pod_axes_show_short_names_flat_with_full_names_on_hover(built):
    run_dir, _ = built
    figures = figures_of((run_dir / "index.html").read_text())
    heatmap = figures["heatmap"]
    trace = heatmap["data"][0]
    assert trace["x"] == [f"{i:05d}" for i in range(6)]
    assert heatmap["layout"]["xaxis"]["type"] == "category"  # "00001" stays a name
    assert heatmap["layout"]["xaxis"]["tickangle"] == 0
    assert trace["customdata"][0][0][0] == "helloworld-5f7c9d8b6-00000"
    assert figures["pod_shares"]["layout"]["xaxis"]["tickangle"] == 0


def test_reproduce_command_spells_out_the_target_with_absolute_paths():
    target = {"source": "inventory",
              "service": {"name": "web", "namespace": "shop", "type": "NodePort"}}
    typed = ("nodeport-harness run -u 5 --inventory inv.yaml --run-id r1 --report-dir=out "
             "--raw ~/raw.csv.gz")
    command = reproduce_command(typed, {"inventory": "inv.yaml"}, target, "/home/u/proj")
    assert shlex.split(command) == [
        "nodeport-harness", "run", "-u", "5", "--inventory", "/home/u/proj/inv.yaml",
        "--report-dir=/home/u/proj/out", "--raw", os.path.expanduser("~/raw.csv.gz"),
        "--namespace", "shop", "--service", "web"]
    cluster = {"source": "kubeconfig", "context": "prod",
               "service": {"name": "web", "namespace": "shop"}}
    assert reproduce_command("nodeport-harness run -n shop", {}, cluster, None,
                             "/k/config").endswith(
        "-n shop --kubeconfig /k/config --context prod --service web")
    # --lab: the lab's shape, never a (throw-away) kubeconfig.
    lab = reproduce_command("nodeport-harness run --lab --lab-pods 4", {
        "lab": True, "lab_pods": 4, "lab_nodes": 5, "lab_no_external_ip": True,
        "lab_policy": None}, cluster, None, "/tmp/lab/kubeconfig")
    assert lab == ("nodeport-harness run --lab --lab-pods 4 --lab-no-external-ip "
                   "--lab-nodes 5 --namespace shop --service web")
    assert inferred_cwd(Path("/w/proj/reports/r1"), {"report_dir": "reports"}) == "/w/proj"
    assert inferred_cwd(Path("/w/proj/a/b/r1"), {"report_dir": "./a/b"}) == "/w/proj"
    assert inferred_cwd(Path("/w/proj/x/r1"), {"report_dir": "reports"}) is None
    assert inferred_cwd(Path("/w/r1"), {"report_dir": "/w"}) is None


def test_target_sentence_names_the_target_without_credentials():
    target = {"source": "kubeconfig", "context": "prod",
              "server": "https://admin:s3cret@api.example:6443/",
              "service": {"name": "web", "namespace": "shop", "type": "NodePort",
                          "port": {"node_port": 30080}, "external_traffic_policy": "Local"},
              "nodes": [{"name": "n1"}, {"name": "n2"}],
              "endpoints": [{"pod": "a", "node": "n1"}, {"pod": "b", "node": "n1"}]}
    text = target_sentence(target, {}, "/home/u/.kube/config")
    assert text == ("kubeconfig /home/u/.kube/config, context prod (API server "
                    "https://api.example:6443): Service shop/web (NodePort, nodePort 30080, "
                    "externalTrafficPolicy Local); 2 nodes, 2 pods (2 on n1).")
    assert "s3cret" not in text and "admin" not in text
    lab = target_sentence({**target, "endpoints": [{"pod": "a", "node": "n1"},
                                                    {"pod": "b", "node": "n2"}]},
                          {"lab": True, "lab_datapath": "kernel"})
    assert lab.startswith("the embedded lab, started for this run (--lab, kernel datapath): ")
    assert lab.endswith("; 2 nodes, 2 pods (1 per node).") and "API server" not in lab


def test_footer_commands_work_when_pasted(tmp_path):
    run_dir = make_run(tmp_path / "reports", "r1", seconds=3, down=None,
                       options={"report_dir": "reports"})
    # Typed in tmp_path (run.json of older runs does not say where: the report infers it).
    edit_json(run_dir / "run.json", command="nodeport-harness run --lab -u 12 --report-dir "
                                            "reports --run-id r1 --web-auth admin:hunter2")
    build_report(run_dir, plotlyjs="cdn")
    page = (run_dir / "index.html").read_text()
    rerender = re.search(r'<pre id="rerender-command" class="command">(.*?)</pre>', page).group(1)
    words = [html.unescape(w) for w in re.findall(r"<span>(.*?)</span>", rerender)]
    assert words == ["nodeport-harness", "report", str(run_dir)]
    # Pasted in another folder, it re-renders this run.
    (run_dir / "index.html").unlink()
    done = subprocess.run([sys.executable, "-m", "harness.cli", *words[1:], "--plotlyjs", "cdn"],
                          capture_output=True, text=True, cwd="/", timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert (run_dir / "index.html").is_file()
    command = re.search(r'<pre id="reproduce-command" class="command">(.*?)</pre>', page)
    text = html.unescape(re.sub(r"</?span>", "", command.group(1)))
    assert text == (f"nodeport-harness run --lab -u 12 --report-dir {tmp_path / 'reports'} "
                    "--web-auth REDACTED --namespace demo --service helloworld")
    assert "hunter2" not in page
    assert "Target:</strong> the embedded lab, started for this run (--lab)" in page
    markdown = (run_dir / "summary.md").read_text()
    assert f"nodeport-harness report {run_dir}" in markdown and "Target: the embedded lab" \
        in markdown


def rows_for(**runs) -> list[dict]:
    """compare rows (run_row's fields the conclusion reads) from short specs."""
    out = []
    for index, (run_id, spec) in enumerate(runs.items()):
        row = {"index": index, "run_id": run_id, "entry": "all", "connection": "keepalive",
               "verdict": "ok", "findings": [], "requests": 1000, "fail_ratio": 0.0,
               "p50": 1.0, "p95": 2.0, "p99": 3.0, "jain": 0.99, "connections": 10,
               "requests_per_connection": 100.0, "pods_per_connection": 3.0,
               "node_shares": [("node-1", 0.34), ("node-2", 0.33), ("node-3", 0.33)],
               "largest_node_share": 0.34, "node_share_note": None}
        row.update(spec)
        out.append(row)
    return out


def test_compare_conclusion_in_sentences():
    runs = rows_for(
        single={"entry": "single", "node_shares": [("node-1", 1.0), ("node-2", 0.0)],
                "largest_node_share": 1.0, "jain": 0.71, "p95": 9.0, "verdict": "critical",
                "findings": [{"severity": "critical", "text": "All ingress entered through "
                                                              "node-1 (100 %)"}]},
        spread={"jain": 0.998, "p95": 3.0},
        broken={"fail_ratio": 0.25, "p95": 4.5, "node_shares": [("node-1", 0.5),
                                                                ("node-2", 0.5)],
                "largest_node_share": 0.5},
        lb={"entry": "lb", "node_share_note": "nodes the LoadBalancer chose", "p95": 3.5,
            "connection": "close", "connections": 1000, "requests_per_connection": 1.0,
            "pods_per_connection": 1.0})
    text = conclusion(runs)
    assert text == [
        "Failed share of requests: broken 25 %; single, spread and lb had none.",
        "single: All ingress entered through node-1 (100 %).",
        "spread spread traffic over the pods most evenly (Jain's index 0.998, 1 = even); "
        "single least evenly (0.71).",
        "By entry strategy: single (single) sent every request through node-1; spread (all) "
        "spread them over 3 nodes, the busiest taking 34 %; broken (all) spread them over 2 "
        "nodes, the busiest taking 50 %; lb (lb) had the LoadBalancer spread them over 3 "
        "nodes, the busiest taking 34 %.",
        "spread had the lowest p95 latency (3 ms); single the highest (9 ms, 3× as long).",
        "Connections: single (keepalive) opened 10 connections carrying 100 requests and "
        "reaching 3 pods each on average; spread (keepalive) opened 10 connections carrying "
        "100 requests and reaching 3 pods each on average; broken (keepalive) opened 10 "
        "connections carrying 100 requests and reaching 3 pods each on average; lb (close) "
        "opened 1,000 connections carrying 1 request and reaching 1 pod each on average.",
    ]
    alike = conclusion(rows_for(a={}, b={"p95": 2.1, "jain": 0.995}))
    assert alike == [
        "No run had a failed request.",
        "All runs spread their successes over the pods about equally evenly (Jain's index "
        "0.99 to 0.995, 1 = even).",
        "Over the nodes: a and b (all) spread them over 3 nodes, the busiest taking 34 %.",
        "All runs had about the same p95 latency (2 ms to 2.1 ms).",
    ]
    assert conclusion(rows_for(a={"requests": 0, "jain": None, "p95": None,
                                  "node_shares": []}, b={}))[0] == "a recorded no request."


def test_each_compare_writes_a_new_folder(tmp_path, capsys):
    runs = [make_run(tmp_path, f"run-{e}", seconds=3, down=None, entry=e)
            for e in ("single", "all")]
    pages = []
    for _ in range(3):
        assert main(["compare", *map(str, runs), "--plotlyjs", "cdn"]) == 0
        out = capsys.readouterr().out.splitlines()
        page = Path(next(line for line in out if line.endswith("index.html")))
        assert page.is_absolute() and page.is_file()
        pages.append(page)
    folders = [p.parent for p in pages]
    assert len(set(folders)) == 3 and all(f.parent == tmp_path for f in folders)
    assert all(re.fullmatch(r"compare-\d{8}-\d{6}(-\d+)?", f.name) for f in folders)
    assert new_folder(tmp_path, "x").name == "x" and new_folder(tmp_path, "x").name == "x-2"
    text = pages[0].read_text()
    assert text.index('id="conclusion"') < text.index('id="summary"')
    assert "run-single (single) sent every request through node-1" in text
    rerender = re.search(r'<pre id="rerender-command" class="command">(.*?)</pre>', text)
    assert html.unescape(re.sub(r"</?span>", "", rerender.group(1))) == shlex.join(
        ["nodeport-harness", "compare", *map(str, runs), "-o", str(folders[0])])
    # -o still writes where it is told, again and again.
    for _ in range(2):
        assert main(["compare", *map(str, runs), "-o", str(tmp_path / "fixed"),
                     "--plotlyjs", "cdn"]) == 0
    assert (tmp_path / "fixed" / "index.html").is_file()
    data = json.loads((folders[0] / "compare.json").read_text())
    assert data["conclusion"] and data["conclusion"][0].startswith("Failed share")
