"""Capacity planning: the step plan, per-step figures from a synthetic spread, the report
outputs, usage errors, and real step-load runs whose estimate is checked against the lab's
known capacity (pods x concurrency / service time)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_runs import HOSTILE_PODS, make_target

from harness import cli
from harness.core.capacity import (
    analyse_capacity,
    default_pacing,
    exit_code_for,
    make_plan,
    measure_steps,
    step_loads,
    users_for_rate,
)
from harness.core.recorder import SpreadRecorder
from harness.errors import HarnessError
from harness.options import add_capacity_options
from harness.report.build import build_report
from harness.report.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
STEP_S = 5
# (requests per second, latency ms, failures per second) of each synthetic step
STEPS = [(100, 10.0, 0), (200, 12.0, 0), (300, 20.0, 0), (310, 80.0, 0), (305, 200.0, 20)]


def options(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_capacity_options(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


# -- the plan ------------------------------------------------------------------------------

def test_step_loads_end_on_the_maximum():
    assert step_loads(5, 5, 20) == [5, 10, 15, 20]
    assert step_loads(5, 5, 12) == [5, 10, 12]
    assert step_loads(10, 5, 10) == [10]
    assert step_loads(0.1, 0.1, 0.3) == pytest.approx([0.1, 0.2, 0.3])


def test_closed_plan_from_options():
    plan = make_plan(options(step_users=5, max_users=20, slo_p95_ms=50, step_time="10s"))
    assert plan.mode == "closed" and plan.loads == (5, 10, 15, 20)
    assert [plan.users(i) for i in range(4)] == [5, 10, 15, 20]
    assert plan.interval_s(0) is None and plan.duration_s == 40
    assert plan.load_model().startswith("closed loop")
    plan = make_plan(options(step_users=5, start_users=2, max_users=12, slo_p95_ms=50))
    assert plan.loads == (2, 7, 12)


def test_open_plan_paces_users_to_the_exact_rate():
    plan = make_plan(options(step_rps=100, max_rps=250, slo_p95_ms=50, step_time="5s"))
    assert plan.mode == "open" and plan.loads == (100, 200, 250)
    assert plan.pacing_s == default_pacing(50) == 0.5
    for index, rate in enumerate(plan.loads):
        users = plan.users(index)
        assert users == users_for_rate(rate, 0.5)
        assert users / plan.interval_s(index) == pytest.approx(rate)
    assert plan.load_model().startswith("open loop")
    assert default_pacing(1) == 0.2 and default_pacing(5000) == 2.0
    assert users_for_rate(0.5, 1.0) == 1 and users_for_rate(301, 1.0) == 301


@pytest.mark.parametrize("overrides, message", [
    ({}, "--step-users N (closed loop) or --step-rps R"),
    ({"step_users": 5, "step_rps": 10.0, "max_users": 9}, "not both"),
    ({"step_users": 5, "slo_p95_ms": None}, "--slo-p95-ms"),
    ({"step_users": 5}, "--step-users needs --max-users"),
    ({"step_users": 5, "max_users": 3}, "below the first step"),
    ({"step_users": 0, "max_users": 3}, "--step-users must be positive"),
    ({"step_users": 5, "max_users": 50, "step_time": "2s"}, "leaves under 2 s"),
    ({"step_users": 5, "max_users": 50, "step_time": "soon"}, "not a duration"),
    ({"step_users": 1, "max_users": 5000}, "more than 200"),
    ({"step_users": 5, "max_users": 50, "headroom": 1.0}, "--headroom"),
    ({"step_users": 5, "max_users": 50, "pacing_s": 1.0}, "open loop"),
    ({"step_rps": 5.0, "max_rps": 50.0, "pacing_s": 0.0}, "--pacing-s must be positive"),
    ({"step_users": 5, "max_users": 50, "slo_fail_ratio": 2.0}, "--slo-fail-ratio"),
])
def test_bad_plans_say_what_to_fix(overrides, message):
    values = {"slo_p95_ms": 50.0, **overrides}
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_plan(options(**values))


# -- per-step figures from a synthetic spread ----------------------------------------------

def synthetic_run(pods: list[str] | None = None):
    """A recorder fed step by step (fake clock) and the steps the shape would record.

    Each step's first (settle) second is poison: 50 x the traffic at 5 s latency, all
    failed on node-1, so any leak of it into a step's figures shows."""
    target = make_target(nodes=3, pods=pods or [f"pod-{i}" for i in range(3)])
    names = [e.pod for e in target.endpoints]
    now = [T0]
    recorder = SpreadRecorder(target.pod_nodes(), clock=lambda: now[0],
                              nodes=[n.name for n in target.nodes])
    steps = []
    for index, (rate, latency, failures) in enumerate(STEPS):
        start = T0 + index * STEP_S
        shares = {pod: 0 for pod in names}
        for second in range(STEP_S):
            if second == 0:
                for i in range(50 * rate // 10):
                    now[0] = start + i / (5 * rate)
                    recorder.record("node-1", None, 5000.0, "timeout")
                continue
            for i in range(rate):
                now[0] = start + second + i / rate
                entry = f"node-{i % 3 + 1}"
                if i < failures:
                    recorder.record(entry, None, latency, "http_503")
                    continue
                # Pod 0 takes half the traffic from the third step on.
                pod = names[0] if index >= 2 and i % 2 else names[i % len(names)]
                shares[pod] += 1
                recorder.record(entry, pod, latency, None)
        steps.append({"step": index + 1, "users": (index + 1) * 10, "rate": None,
                      "start": start + 0.003, "end": start + STEP_S + 0.002,
                      "pods_from": start + 1, "pods_to": start + STEP_S,
                      "pod_successes": shares})
    return target, recorder.to_dict(), steps


def test_measure_steps_skips_the_settle_second_and_counts_whole_seconds():
    _target, spread, steps = synthetic_run()
    rows = measure_steps(spread, steps, settle_s=1.0)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for row, (rate, latency, failures) in zip(rows, STEPS, strict=True):
        assert row["window_s"] == STEP_S - 1
        assert row["window_start"] == T0 + (row["step"] - 1) * STEP_S + 1
        assert row["requests"] == rate * (STEP_S - 1)
        assert row["failures"] == failures * (STEP_S - 1)
        assert row["rps"] == pytest.approx(rate) and row["rps_min"] == row["rps_max"] == rate
        assert row["goodput_rps"] == pytest.approx(rate - failures)
        for quantile in ("p50", "p95", "p99"):
            assert row[quantile] == pytest.approx(latency, rel=0.032)
        assert row["users"] == row["step"] * 10 and row["offered_rps"] is None
        assert row["duration_s"] == STEP_S - 1


def test_measure_steps_per_pod_shares():
    _target, spread, steps = synthetic_run()
    rows = measure_steps(spread, steps)
    first, third = rows[0], rows[2]
    assert set(first["pod_shares"]) == {"pod-0", "pod-1", "pod-2"}
    assert all(share == pytest.approx(1 / 3, abs=0.01) for share in first["pod_shares"].values())
    assert first["jain"] == pytest.approx(1.0, abs=0.001) and first["pods_served"] == 3
    assert third["pod_shares"]["pod-0"] == pytest.approx(2 / 3, abs=0.01)
    assert third["jain"] < 0.8


def test_measure_steps_open_loop_rows_and_empty_windows():
    _target, spread, steps = synthetic_run()
    open_steps = [{**s, "users": 20 * s["step"], "rate": 100.0 * s["step"]} for s in steps]
    rows = measure_steps(spread, open_steps)
    assert "users" not in rows[0]  # find_knee keys the load on users when present
    assert rows[0]["offered_rps"] == 100.0 and rows[0]["paced_users"] == 20
    assert rows[0]["held"] is True and rows[4]["held"] is False  # 305 of 500 offered
    unfinished = measure_steps(spread, [{"start": T0, "end": None, "users": 1}])
    assert unfinished[0]["window_s"] == 0 and unfinished[0]["rps"] == 0.0
    assert unfinished[0]["p95"] is None


def capacity_run_json(steps, **settings) -> dict:
    capacity = {"mode": "closed", "loads": [s["users"] for s in steps], "step_time_s": STEP_S,
                "settle_s": 1.0, "pacing_s": None, "slo_p95_ms": 50.0, "slo_fail_ratio": 0.01,
                "target_rps": 1000.0, "headroom": 0.3, "lab": None, **settings}
    return {"run_id": "cap", "entry": "all", "connection": "close", "started": T0,
            "load_model": "closed loop: test", "steps": steps, "capacity": capacity}


def test_analyse_capacity_finds_knee_plateau_and_pods_needed():
    target, spread, steps = synthetic_run()
    result = analyse_capacity(spread, capacity_run_json(steps), target.to_dict())
    assert result["knee_index"] == 2 and result["breach_index"] == 3  # p95 80 ms > 50 ms
    assert result["capacity_rps"] == pytest.approx(300)
    assert result["plateau_index"] == 3  # 310 over 300: +3.3 %
    assert result["saturation_index"] == 3 and result["saturation_rps"] == pytest.approx(310)
    assert result["pods"] == 3 and result["nodes"] == 3
    assert result["capacity_per_pod"] == pytest.approx(100)
    # 1000 req/s at 70 % of 100 req/s per pod: 14.3 -> 15 pods
    assert result["pods_needed"] == 15
    assert "so 15 pods" in result["reasoning"] and "closed loop" in result["reasoning"]
    assert exit_code_for(result) == 0
    assert any("coordinated omission" in note for note in result["notes"])


def test_analyse_capacity_with_lab_truth_and_a_first_step_breach():
    target, spread, steps = synthetic_run()
    lab = {"pods": 3, "nodes": 3, "pod_service_ms": 10.0, "pod_concurrency": 1}
    result = analyse_capacity(spread, capacity_run_json(steps, slo_p95_ms=5.0, lab=lab),
                              target.to_dict())
    assert result["knee_index"] is None and result["capacity_rps"] is None
    assert result["pods_needed"] is None and exit_code_for(result) == 1
    assert "Even the first step" in result["reasoning"]
    assert result["lab"]["true_capacity_rps"] == pytest.approx(300)
    assert result["lab"]["saturation_vs_truth"] == pytest.approx(310 / 300)


def test_analyse_capacity_needs_capacity_settings():
    target, spread, _steps = synthetic_run()
    with pytest.raises(HarnessError, match="nodeport-harness capacity"):
        analyse_capacity(spread, {"run_id": "plain"}, target.to_dict())


def write_folder(run_dir: Path, pods: list[str] | None = None, **settings) -> None:
    target, spread, steps = synthetic_run(pods)
    write_json_atomic(run_dir / "spread.json", spread)
    write_json_atomic(run_dir / "target.json", target.to_dict())
    write_json_atomic(run_dir / "run.json", capacity_run_json(steps, **settings))


def test_report_writes_capacity_outputs_and_links_them(tmp_path):
    run_dir = tmp_path / "cap"
    write_folder(run_dir)
    result = build_report(run_dir, plotlyjs="cdn")
    assert result["capacity"]["knee_index"] == 2
    for name in ("capacity.html", "capacity.json", "steps.csv", "index.html", "summary.md",
                 "summary.json", "junit.xml"):
        assert (run_dir / name).is_file(), name
    data = json.loads((run_dir / "capacity.json").read_text())
    assert data["schema"] == "nodeport-harness/capacity/v1" and len(data["steps"]) == 5
    rows = list(csv.DictReader(io.StringIO((run_dir / "steps.csv").read_text())))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert float(rows[2]["rps"]) == pytest.approx(300) and rows[3]["meets_slo"] == "False"
    summary = (run_dir / "summary.md").read_text()
    assert "### Capacity (step load)" in summary and "(capacity.html)" in summary
    assert "| 3 (knee) |" in summary
    page = (run_dir / "capacity.html").read_text()
    assert "Throughput vs load" in page and "chart-throughput" in page
    assert "Capacity at the SLO: 300 req/s" in page


def test_capacity_page_escapes_pod_names(tmp_path):
    run_dir = tmp_path / "hostile"
    write_folder(run_dir, pods=list(HOSTILE_PODS[:3]))
    build_report(run_dir, plotlyjs="cdn")
    page = (run_dir / "capacity.html").read_text()
    assert "<script>window.__xss" not in page and "<img src=x" not in page
    assert "&lt;img src=x" in page
    summary = (run_dir / "summary.md").read_text()
    assert "<img" not in summary


# -- the command's usage errors -----------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["capacity", "--step-users", "5", "--max-users", "10"], "--slo-p95-ms"),
    (["capacity", "--slo-p95-ms", "50"], "--step-users N"),
    (["capacity", "--slo-p95-ms", "50", "--step-users", "5", "--max-users", "9",
      "--step-rps", "10"], "not both"),
    (["capacity", "--slo-p95-ms", "50", "--step-users", "5"], "--max-users"),
    (["capacity", "--slo-p95-ms", "50", "--step-users", "5", "--max-users", "9", "--lab",
      "--lab-pod-service-ms", "0"], "--lab-pod-service-ms"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    code = cli.main([*argv, "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_a_malformed_number_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["capacity", "--step-users", "five", "--slo-p95-ms", "50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--step-users" in err[0], err


# -- real step-load runs against the lab ----------------------------------------------------

def capacity_cli(tmp_path: Path, run_id: str, *args: str) -> tuple[subprocess.CompletedProcess,
                                                                  Path, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "capacity", "--lab", "--report-dir",
         str(tmp_path), "--run-id", run_id, "--plotlyjs", "cdn", *args],
        capture_output=True, text=True, timeout=180, cwd=ROOT)
    return proc, tmp_path / run_id, time.monotonic() - started


def check_estimate(proc, run_dir: Path, truth: float, seconds: float) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "capacity.json").read_text())
    estimate = result["saturation_rps"]
    print(f"{run_dir.name}: estimate {estimate:.1f} req/s vs lab truth {truth:.1f} "
          f"({estimate / truth:.1%}), knee {result['capacity_rps']}, {seconds:.1f} s")
    assert result["lab"]["true_capacity_rps"] == pytest.approx(truth)
    assert abs(estimate - truth) <= 0.15 * truth, result["reasoning"]
    assert result["knee_index"] is not None
    assert result["capacity_rps"] <= estimate
    assert result["plateau_index"] is not None  # the last steps ran past the pods' capacity
    run = json.loads((run_dir / "run.json").read_text())
    assert [s["step"] for s in run["steps"]] == list(range(1, len(result["steps"]) + 1))
    for step in run["steps"]:
        assert step["end"] > step["start"] and step["pod_successes"]
    assert all(r["window_s"] >= 3 for r in result["steps"])
    for name in ("capacity.html", "steps.csv", "index.html", "summary.md", "junit.xml"):
        assert (run_dir / name).is_file(), name
    assert "capacity.html" in (run_dir / "summary.md").read_text()
    assert "capacity: " in proc.stderr and "capacity report:" in proc.stderr
    return result


def test_closed_loop_estimate_matches_the_lab(tmp_path):
    # 3 pods x 2 at a time / 40 ms = 150 req/s. Up to 8 users per slot, each request on a
    # new connection, so kube-proxy's random choice cannot leave a pod short of work.
    proc, run_dir, seconds = capacity_cli(
        tmp_path, "closed", "--lab-pods", "3", "--lab-pod-concurrency", "2",
        "--lab-pod-service-ms", "40", "--step-users", "12", "--max-users", "48",
        "--step-time", "4s", "--slo-p95-ms", "300")
    result = check_estimate(proc, run_dir, 150.0, seconds)
    assert result["mode"] == "closed" and result["connection"] == "close"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["load_model"].startswith("closed loop")


def test_open_loop_estimate_matches_the_lab(tmp_path):
    # 2 pods x 4 at a time / 25 ms = 320 req/s, offered 80 ... 400 req/s by paced users.
    proc, run_dir, seconds = capacity_cli(
        tmp_path, "open", "--lab-nodes", "2", "--lab-pods", "2", "--lab-pod-concurrency", "4",
        "--lab-pod-service-ms", "25", "--step-rps", "80", "--max-rps", "400",
        "--step-time", "4s", "--slo-p95-ms", "100", "--target-rps", "1000")
    result = check_estimate(proc, run_dir, 320.0, seconds)
    assert result["mode"] == "open"
    below = [s for s in result["steps"] if s["offered_rps"] <= 0.8 * 320]
    assert below and all(s["held"] and s["meets_slo"] for s in below)  # under capacity: held
    assert result["steps"][-1]["held"] is False  # 400 offered, about 300 achieved
    assert result["pods_needed"] is not None and "pods" in result["reasoning"]


def test_first_step_over_the_slo_exits_1(tmp_path):
    proc, run_dir, _seconds = capacity_cli(
        tmp_path, "breach", "--lab-nodes", "1", "--lab-pods", "1", "--lab-pod-service-ms",
        "20", "--step-users", "2", "--max-users", "2", "--step-time", "3s",
        "--slo-p95-ms", "5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    result = json.loads((run_dir / "capacity.json").read_text())
    assert result["knee_index"] is None and len(result["steps"]) == 1
    assert "not even the first step met the SLO" in proc.stderr

