"""Headless CI runs against the lab: every output, thresholds and exit codes, raw export."""

import csv
import gzip
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("target.json", "run.json", "spread.json", "summary.json", "index.html", "nodes.csv",
           "pods.csv", "timeseries.csv", "junit.xml", "summary.md")
# `lab`: the session's NodePort lab (conftest.py); these runs only send it traffic.


def run(lab, tmp_path, run_id, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--kubeconfig", str(lab.kubeconfig),
         "--report-dir", str(tmp_path), "--run-id", run_id, "-u", "3", "-t", "2s",
         "--plotlyjs", "cdn", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    return proc, tmp_path / run_id


def test_thresholds_pass_exit_0_with_every_output(lab, tmp_path):
    proc, run_dir = run(lab, tmp_path, "pass", "--max-fail-ratio", "0.5", "--max-p95-ms", "5000",
                        "--require-all-pods", "--connection", "close")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in OUTPUTS:
        assert (run_dir / name).stat().st_size > 0, name
    suite = ET.parse(run_dir / "junit.xml").getroot()
    cases = suite.iter("testcase")
    names = [c.get("name") for c in cases]
    assert len(names) == 3 and not list(suite.iter("failure"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schema"] == "nodeport-harness/summary/v1"
    assert all(t["passed"] for t in summary["thresholds"])
    assert "✓ failure ratio" in proc.stderr and "✗" not in proc.stderr
    assert not list(run_dir.glob(".*.tmp")), "a temp file was left behind"


def test_breach_exits_1_and_is_named_everywhere(lab, tmp_path):
    proc, run_dir = run(lab, tmp_path, "breach", "--max-p95-ms", "0.001",
                        "--max-node-share", "0.5", "--entry", "single")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "✗ p95 latency" in proc.stderr and "✗ largest entry-node share" in proc.stderr
    failures = list(ET.parse(run_dir / "junit.xml").getroot().iter("failure"))
    assert len(failures) == 2
    md = (run_dir / "summary.md").read_text()
    assert "p95" in md and ("breach" in md.lower() or "fail" in md.lower())


def test_usage_errors_exit_2(lab, tmp_path):
    proc, _ = run(lab, tmp_path, "bad", "--max-fail-ratio", "1.5")
    assert proc.returncode == 2 and "--max-fail-ratio" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc, _ = run(lab, tmp_path, "bad2", "--entry", "lb")
    assert proc.returncode == 2 and "LoadBalancer" in proc.stderr


def test_raw_file_has_every_request(lab, tmp_path):
    raw = tmp_path / "requests.csv.gz"
    proc, run_dir = run(lab, tmp_path, "raw", "--raw", str(raw))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with gzip.open(raw, "rt") as handle:
        rows = list(csv.DictReader(handle))
    spread = json.loads((run_dir / "spread.json").read_text())
    assert len(rows) == spread["totals"]["requests"] > 0
    pods = {p["name"] for p in lab.pods}
    assert {r["pod"] for r in rows} <= pods
    assert {r["entry_node"] for r in rows} == {"node-1", "node-2", "node-3"}


def test_report_rerenders_a_run_and_compare_writes_one_page(lab, tmp_path):
    _, a = run(lab, tmp_path, "a", "--entry", "single")
    _, b = run(lab, tmp_path, "b", "--entry", "all")
    (a / "index.html").unlink()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(a)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (a / "index.html").exists()
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(a), str(b),
                           "-o", str(out)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert "single" in page and "all" in page
