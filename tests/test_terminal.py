"""Issue 17, the terminal: what a run prints at 80 columns.

After a run, in this order: the node x pod matrix (short pod names, a legend, the columns
that fit; more pods: the busiest and "others"), the top findings with their severity, the
thresholds as ✓/✗ lines, one `report:` line. Locust's own tables only with --locust-stats.
--progress: one line per 10 s in a pipe. The runs are real (Locust in a subprocess against
the session's lab, `COLUMNS=80`, stderr a pipe); the matrix is also driven with synthetic
spreads of 12 and 25 pods.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lab_runs import harness_cmd, locust_cmd, run

from harness.core.histogram import percentiles
from harness.core.recorder import SpreadRecorder
from harness.core.text import number, pct
from harness.report.terminal import node_pod_table, progress_line, threshold_line

COLUMNS = {"COLUMNS": "80"}
MATRIX = "Requests per entry node (rows) and pod (columns)"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("t")  # short: the report line fits in 80 columns too


def harness_run(lab, reports: Path, run_id: str, *args: str):
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "-u", "2", "-t", "3s",
                           "--report-dir", str(reports), "--run-id", run_id,
                           "--plotlyjs", "cdn", *args), timeout=90, env=COLUMNS)
    return proc, reports / run_id


def lines_of(err: str) -> list[str]:
    return err.splitlines()


def at(lines: list[str], predicate) -> int:
    found = [i for i, line in enumerate(lines) if predicate(line)]
    assert len(found) == 1, (found, "\n".join(lines)[-3000:])
    return found[0]


def matrix_rows(lines: list[str]) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """(pod columns, entry node -> its cells, short name -> full pod name) as printed."""
    start = at(lines, lambda line: line == MATRIX)
    header = lines[start + 1].split()
    assert header[:3] == ["entry", "\\", "pod"] and header[-2:] == ["failed", "share"]
    rows, i = {}, start + 2
    while lines[i].strip():
        cells = lines[i].split()
        rows[cells[0]] = cells[1:]
        i += 1
    legend_head = lines[i + 1].split()
    assert legend_head == ["pod", "full", "name", "node"], lines[i + 1]
    legend = {}
    for line in lines[i + 2:]:
        if not line.strip():
            break
        short, *rest = line.split()
        legend[short] = rest
    return header[3:-2], rows, legend


def test_a_run_ends_with_matrix_findings_thresholds_and_one_report_line(lab, reports):
    proc, run_dir = harness_run(lab, reports, "order", "--max-fail-ratio", "0.5",
                                "--max-p95-ms", "0.001")
    err = proc.stderr
    assert proc.returncode == 1, err[-3000:]  # the p95 limit is breached
    lines = lines_of(err)
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "\x1b" not in err  # a pipe: plain text, no colour

    matrix = at(lines, lambda line: line == MATRIX)
    findings = at(lines, lambda line: line == "Findings")
    thresholds = at(lines, lambda line: line == "Thresholds")
    report = at(lines, lambda line: line.startswith("report"))
    assert matrix < findings < thresholds < report
    assert lines[report] == f"report: {run_dir / 'index.html'}"
    assert report == len(lines) - 1  # the last line
    assert "reports:" not in err and "BREACHED" not in err

    # The thresholds, as k6 writes them, only after the tables.
    passed = at(lines, lambda line: line.startswith("✓"))
    breached = at(lines, lambda line: line.startswith("✗"))
    assert lines[passed] == "✓ failure ratio 0 % <= 50 %"
    assert re.fullmatch(r"✗ p95 latency [\d.,]+ ms > 0\.001 ms", lines[breached])
    assert thresholds < min(passed, breached)

    # The matrix holds what spread.json holds; the legend names each pod and its node.
    spread = json.loads((run_dir / "spread.json").read_text())
    target = json.loads((run_dir / "target.json").read_text())
    columns, rows, legend = matrix_rows(lines)
    assert "others" not in columns  # six pods fit in 80 columns
    nodes = {e["pod"]: e["node"] for e in target["endpoints"]}
    assert sorted(legend) == sorted(columns) and len(columns) == len(nodes)
    for short in columns:
        full, node = legend[short]
        assert full.endswith(short) and nodes[full] == node
    for name, entry in spread["entry_nodes"].items():
        cells = rows[name]
        assert cells[:len(columns)] == [number(entry["pods"].get(legend[s][0], 0))
                                        for s in columns]
        assert cells[len(columns)] == number(entry["failures"])

    # The top findings, most severe first, with their severity.
    summary = json.loads((run_dir / "summary.json").read_text())
    shown = [line for line in lines[findings + 1:thresholds] if line and line[0] != " "]
    expected = summary["findings"][:5]
    assert [line.split()[0] for line in shown] == [f["severity"] for f in expected]
    for line, finding in zip(shown, expected, strict=True):
        assert line.split(None, 1)[1].split()[:3] == finding["text"].split()[:3]

    # Locust's own tables only with --locust-stats.
    assert "Aggregated" not in err and "Response time percentiles" not in err


def test_locust_stats_only_when_asked(lab, reports):
    proc, run_dir = harness_run(lab, reports, "stats", "--locust-stats")
    err = proc.stderr
    assert proc.returncode == 0, err[-3000:]
    lines = lines_of(err)
    assert "Aggregated" in err and "Response time percentiles" in err
    # Locust's tables first, then the view; the report line still ends it, once.
    assert err.index("Response time percentiles") < err.index(MATRIX)
    assert [line for line in lines if line.startswith("report")] == [
        f"report: {run_dir / 'index.html'}"] == lines[-1:]


def test_plain_locust_prints_the_view_and_progress_in_a_pipe(lab, reports):
    """`locust --headless` with the plugin (no --only-summary: Locust's periodic table is
    quiet too), --progress in a pipe: a line per 10 s."""
    proc = run(locust_cmd("--headless", "-u", "2", "-r", "2", "-t", "11s", "--progress",
                          "--kubeconfig", str(lab.kubeconfig), "--report-dir", str(reports),
                          "--run-id", "plain", "--plotlyjs", "cdn"), timeout=90, env=COLUMNS)
    err = proc.stderr
    assert proc.returncode == 0, err[-3000:]
    lines = lines_of(err)
    assert "Aggregated" not in err and "Response time percentiles" not in err
    progress = [line for line in lines if re.match(r"\d+/11 s  ", line)]
    assert len(progress) == 1, err[-3000:]  # at 10 s; the run ends at 11 s
    line = progress[0]
    assert len(line) <= 80 and "\r" not in line
    match = re.fullmatch(r"(\d+)/11 s  ([\d,]+) req/s  p95 [\d.]+ ms  0 failed  (.*)", line)
    assert match, line
    assert 9 <= int(match[1]) <= 11 and int(match[2].replace(",", "")) > 0
    shares = dict(re.findall(r"(node-\d) (\d+) %", match[3]))
    assert sorted(shares) == ["node-1", "node-2", "node-3"], line  # the lab's three nodes
    assert 97 <= sum(int(v) for v in shares.values()) <= 103
    assert lines.index(line) < lines.index(MATRIX)
    assert [x for x in lines if x.startswith("report")] == [
        f"report: {reports / 'plain' / 'index.html'}"] == lines[-1:]


# -- the matrix, from synthetic spreads ------------------------------------------------------

def synthetic(pods: int, nodes: int = 3) -> dict:
    """Pod i serves (i + 1) x 10 requests through each node; the busiest is the last."""
    names = [f"helloworld-5f7c9d8b6-p{i:04d}" for i in range(pods)]
    entries = {}
    for k in range(1, nodes + 1):
        counts = {name: (i + 1) * 10 * k for i, name in enumerate(names)}
        entries[f"node-{k}"] = {"requests": sum(counts.values()) + k, "failures": k,
                                "pods": counts}
    return {"entry_nodes": entries,
            "pod_nodes": {name: f"node-{i % nodes + 1}" for i, name in enumerate(names)}}


@pytest.mark.parametrize("pods", [12, 25])
def test_many_pods_show_the_busiest_and_others_in_80_columns(pods):
    spread = synthetic(pods)
    text = node_pod_table(spread, width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    header = lines[0].split()
    columns = header[3:-3]
    assert header[-3:] == ["others", "failed", "share"], text
    assert 3 <= len(columns) < pods
    # The busiest pods are the shown ones: the last `len(columns)` of the names.
    names = list(spread["pod_nodes"])
    busiest = names[-len(columns):]
    assert columns == [n.rsplit("-", 1)[1] for n in busiest]
    others = names[:-len(columns)]
    row = lines[1].split()
    assert row[0] == "node-1"
    assert row[len(columns) + 1] == number(sum((i + 1) * 10 for i in range(len(others))))
    # The legend: each short name's pod and node; the others counted with their share.
    for name in busiest:
        assert re.search(rf"^{name.rsplit('-', 1)[1]}\s+{name}\s+"
                         rf"{spread['pod_nodes'][name]}$", text, re.M), name
    served = sum(sum(e["pods"].values()) for e in spread["entry_nodes"].values())
    share = sum(sum(e["pods"][n] for e in spread["entry_nodes"].values()) for n in others)
    assert f"others  {number(len(others))} more pods, {pct(share / served)} of the replies" \
        in text


def test_names_cannot_drive_the_terminal_or_rich():
    spread = {"entry_nodes": {"node-\x1b[2J1": {"requests": 3, "failures": 0, "pods": {
        "[bold]pod-\x1b[31mred": 2, "web-\u202eexe": 1}}}, "pod_nodes": {}}
    text = node_pod_table(spread, width=80)
    assert "\x1b" not in text and "\u202e" not in text
    assert "[bold]pod-\\x1b[31mred" in text and "node-\\x1b[2J1" in text


def test_threshold_lines():
    assert threshold_line({"passed": True, "label": "p95 latency", "shown": "3.2 ms",
                           "op": "≤", "limit_shown": "5 ms", "value": 3.2}).plain == (
        "✓ p95 latency 3.2 ms <= 5 ms")
    assert threshold_line({"passed": False, "label": "Jain's fairness index",
                           "shown": "0.5", "op": "≥", "limit_shown": "0.9",
                           "value": 0.5}).plain == "✗ Jain's fairness index 0.5 < 0.9"
    assert threshold_line({"passed": False, "label": "p99 latency", "shown": "n/a",
                           "op": "≤", "limit_shown": "5 ms", "value": None}).plain == (
        "✗ p99 latency: no data (limit <= 5 ms)")


def test_progress_line_fits_with_many_entry_nodes():
    shares = [(f"ip-10-0-{i}-1.ec2.internal", 1 / 40) for i in range(40)]
    line = progress_line(125, 300, 12_345.6, 3.06, 10_000, 5, shares, width=80)
    assert len(line) <= 80 and line.startswith("125/300 s  12,346 req/s  p95 3.1 ms  5 failed")
    assert re.search(r" \+\d+ more$", line), line
    assert len(progress_line(1, None, None, None, 0, 0, shares, width=80, tty=True)) <= 79


def test_progress_counts_are_the_recorders_totals():
    recorder = SpreadRecorder({"web-a": "node-1", "web-b": "node-2"})
    for i in range(1_000):
        recorder.record(f"node-{i % 3 + 1}", "web-a" if i % 2 else "web-b", 0.5 + i % 7,
                        "timeout" if i % 40 == 0 else None)
    counts, full = recorder.progress_counts(), recorder.to_dict()
    assert counts["entry_nodes"] == {name: [e["successes"], e["failures"]]
                                     for name, e in full["entry_nodes"].items()}
    assert sum(counts["latency"]) == full["latency"]["count"] == 975
    assert percentiles(counts["latency"], [0.5, 0.95]) == percentiles(
        full["latency"]["buckets"], [0.5, 0.95])
