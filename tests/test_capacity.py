"""Capacity planning: the step plan, per-step figures from a synthetic spread, the report
outputs, usage errors, and real step-load runs whose estimate is checked against the lab's
known capacity (pods x concurrency / service time)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_runs import HOSTILE_PODS, make_target

from harness import cli
from harness.core.capacity import (
    CLOSED_MODEL,
    analyse_capacity,
    cpu_over,
    default_pacing,
    exit_code_for,
    generator_figures,
    make_plan,
    measure_steps,
    plan_capacity,
    step_loads,
    users_for_rate,
)
from harness.core.recorder import SpreadRecorder
from harness.core.text import number
from harness.core.text import rate as rate_text
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
            "load_model": CLOSED_MODEL, "steps": steps, "capacity": capacity}


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
    # Measured, not a lower bound: step 4 broke the SLO.
    assert result["capacity_is_lower_bound"] is False and result["limited_by"] == "slo"
    assert result["pods_needed_is_upper_bound"] is False
    assert result["headline"] == ("Capacity at the SLO: 300 req/s (100 req/s per pod); 15 pods "
                                  "for 1,000 req/s with 30 % headroom.")
    # The load model (and its coordinated omission) is said once, in load_model, not again
    # among the notes.
    assert not any("omission" in note for note in result["notes"])
    assert result["generator_bound_index"] is None  # no CPU recorded in this folder
    assert "CPU was not recorded" in result["reasoning"]


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


# -- the load generator's CPU, lower bounds and the account (pure, hand-made steps) -----------

def hand_steps(rows, users_step: int = 10) -> list[dict]:
    """Steps from (req/s, p95 ms, busiest generator process's share of a core) rows."""
    return [{"users": users_step * (i + 1), "duration_s": 10, "requests": int(rps * 10),
             "failures": 0, "rps": rps, "p50": p95 / 2, "p95": p95, "p99": p95 * 2,
             **generator_figures({"local": {"cpu_s": cpu * 10, "busy_s": None, "wall_s": 10}}
                                 if cpu is not None else None)}
            for i, (rps, p95, cpu) in enumerate(rows)]


def test_cpu_over_interpolates_between_samples_and_clips_to_them():
    # [epoch, cpu_s, busy_s, idle_s (machine), cpus]
    samples = [[100.0, 0.0, 0.0, 10.0, 2.0], [101.0, 0.5, 0.9, 11.0, 2.0],
               [102.0, 1.5, 1.9, 11.2, 2.0], [103.0, 2.5, 2.95, 11.4, 2.0]]
    used = cpu_over(list(reversed(samples)), 100.5, 102.5)  # any order
    assert used["cpu_s"] == pytest.approx(1.75) and used["busy_s"] == pytest.approx(1.975)
    assert used["idle_s"] == pytest.approx(0.8) and used["cpus"] == 2
    assert used["wall_s"] == pytest.approx(2.0)
    clipped = cpu_over(samples, 102.0, 110.0)  # the samples end at 103
    assert clipped["wall_s"] == pytest.approx(1.0) and clipped["cpu_s"] == pytest.approx(1.0)
    assert cpu_over(samples, 102.8, 110.0) is None  # 0.2 s covered says nothing
    assert cpu_over([], 100, 103) is None
    bare = cpu_over([s[:2] + [None] for s in samples], 100, 103)  # no /proc: CPU time only
    assert bare["busy_s"] is None and bare["idle_s"] is None and bare["cpus"] is None
    assert bare["cpu_s"] == pytest.approx(2.5)


def test_generator_figures_name_the_busiest_process_and_the_bound():
    figures = generator_figures({
        "master": {"cpu_s": 0.3, "busy_s": 0.6, "wall_s": 3},
        "worker-0": {"cpu_s": 2.82, "busy_s": 2.9, "wall_s": 3},
        "worker-1": {"cpu_s": 1.5, "busy_s": 1.6, "wall_s": 3}})
    assert figures["generator_cpu"] == pytest.approx(0.94)
    assert figures["generator_cpu_by_process"] == pytest.approx(
        {"master": 0.1, "worker-0": 0.94, "worker-1": 0.5})
    assert figures["generator_process"] == "worker-0" and figures["generator_bound"] is True
    assert figures["generator_busy"] == pytest.approx(2.9 / 3)
    # Starved, not busy: 60 % of a core, never idle, on a machine with no CPU to spare.
    starved = generator_figures({"local": {"cpu_s": 1.8, "busy_s": 2.91, "idle_s": 0.12,
                                           "cpus": 2, "wall_s": 3}})
    assert starved["generator_cpu"] == pytest.approx(0.6)
    assert starved["generator_machine_idle"] == pytest.approx(0.02)
    assert starved["generator_starved"] is True and starved["generator_bound"] is True
    # Some CPU idle, but not half a CPU: starved still.
    busy_machine = generator_figures({"local": {"cpu_s": 1.77, "busy_s": 2.82, "idle_s": 1.4,
                                                "cpus": 2, "wall_s": 3}})
    assert busy_machine["generator_starved"] is True
    # Taking turns with a server on an otherwise idle machine: waiting, not short of CPU.
    turns = generator_figures({"local": {"cpu_s": 1.5, "busy_s": 2.91, "idle_s": 3.0,
                                         "cpus": 2, "wall_s": 3}})
    assert turns["generator_starved"] is False and turns["generator_bound"] is False
    idle = generator_figures({"local": {"cpu_s": 0.6, "busy_s": 1.2, "wall_s": 3}})
    assert idle["generator_bound"] is False
    assert generator_figures(None)["generator_bound"] is None
    assert generator_figures({})["generator_cpu"] is None


def test_a_generator_bound_step_cannot_be_the_knee():
    # Steps 4 and 5 meet the SLO, but the load generator was the limit from step 4: the knee
    # is step 3, and it is a lower bound (nothing the pods limited broke the SLO).
    steps = hand_steps([(100, 20, 0.2), (200, 25, 0.45), (300, 30, 0.7), (330, 35, 0.96),
                        (331, 45, 0.99)])
    plan = plan_capacity(steps, pods=3, nodes=3, slo_p95_ms=50, target_rps=1000,
                         headroom=0.3, mode="closed")
    assert plan["generator_bound_index"] == 3 and plan["knee_index"] == 2
    assert plan["breach_index"] is None and plan["capacity_rps"] == 300
    assert plan["capacity_is_lower_bound"] is True and plan["limited_by"] == "load_generator"
    assert plan["pods_needed"] == 15 and plan["pods_needed_is_upper_bound"] is True
    reasoning = plan["reasoning"]
    assert reasoning.startswith(
        "The load generator, not the pods, was the limit from step 4 (40 users: its busiest "
        "process (local) used 96 % of a core), so the steps from there measured the client. "
        "No step before it broke the SLO")
    assert "capacity is at least 300 req/s" in reasoning and "--processes" in reasoning
    assert "at least 100 req/s per pod" in reasoning and "so at most 15 pods" in reasoning
    # Throughput grew to the last step that counts: no plateau from generator-bound steps.
    assert plan["plateau_index"] is None
    assert "Throughput was still growing at step 3 (+50 % over step 2)" in reasoning
    # A generator-bound step that breaks the SLO is no breach either.
    steps[4]["p95"] = 500
    assert plan_capacity(steps, pods=3, slo_p95_ms=50)["breach_index"] is None


def test_a_starved_load_generator_is_named_as_such():
    steps = hand_steps([(100, 20, 0.3), (150, 25, None)])
    steps[1].update(generator_cpu=0.55, generator_busy=0.97, generator_machine_idle=0.03,
                    generator_starved=True, generator_process="worker-1",
                    generator_bound=None)
    plan = plan_capacity(steps, pods=3, slo_p95_ms=50, mode="closed")
    assert plan["generator_bound_index"] == 1 and plan["knee_index"] == 0
    assert ("from step 2 (20 users: its busiest process (worker-1) was running or waiting for "
            "a CPU 97 % of the time, using 55 % of a core, while its machine had 3 % of its CPU "
            "idle)") in plan["reasoning"]


def test_generator_bound_from_the_first_step_measures_nothing():
    steps = hand_steps([(100, 20, 0.97), (110, 30, 0.99)])
    plan = plan_capacity(steps, pods=3, slo_p95_ms=50, target_rps=1000)
    assert plan["knee_index"] is None and plan["generator_bound_index"] == 0
    assert plan["breach_index"] is None and plan["limited_by"] == "load_generator"
    assert plan["pods_needed"] is None and plan["capacity_is_lower_bound"] is False
    assert plan["reasoning"].startswith("The load generator, not the pods, was the limit from "
                                        "step 1 (its busiest process (local) used 97 % of a "
                                        "core): no step measured the pods")


def test_a_breach_before_the_generator_limit_is_a_measurement():
    steps = hand_steps([(100, 20, 0.3), (200, 40, 0.5), (250, 80, 0.7), (260, 90, 0.95)])
    plan = plan_capacity(steps, pods=2, slo_p95_ms=50, mode="closed")
    assert plan["knee_index"] == 1 and plan["breach_index"] == 2
    assert plan["generator_bound_index"] == 3 and plan["limited_by"] == "slo"
    assert plan["capacity_is_lower_bound"] is False
    assert "the next (30 users) broke it (p95 80 ms > 50 ms)" in plan["reasoning"]
    assert ("From step 4 on the load generator, not the pods, was the limit (its busiest "
            "process (local) used 95 % of a core)") in plan["reasoning"]
    assert "at least" not in plan["reasoning"]


def test_no_breach_is_a_lower_bound_that_says_what_to_raise():
    steps = hand_steps([(100, 20, 0.1), (200, 25, 0.2), (290, 30, 0.3)])
    for mode, option in (("closed", "--max-users"), ("open", "--max-rps")):
        plan = plan_capacity(steps, pods=2, nodes=2, slo_p95_ms=50, target_rps=2000,
                             headroom=0.3, mode=mode)
        assert plan["knee_index"] == 2 and plan["breach_index"] is None
        assert plan["capacity_is_lower_bound"] is True and plan["limited_by"] == "max_load"
        assert plan["pods_needed_is_upper_bound"] is True
        reasoning = plan["reasoning"]
        assert reasoning.startswith(
            "No step broke the SLO (p95 ≤ 50 ms and failures ≤ 1 %): capacity is at least "
            f"290 req/s, what the highest step (30 users) delivered with p95 30 ms; raise "
            f"{option} to find the limit.")
        # 2000 / (145 x 0.7) = 19.7: at most 20 pods (the pods may well take more)
        assert "so at most 20 pods (at most 20 nodes" in reasoning
        assert ("The load generator was not the limit: its busiest process peaked at 30 % of "
                "a core (step 3), below 90 %") in reasoning


def test_plateau_sentence_agrees_with_the_knee():
    # A dip at step 3 that recovers is not where throughput stopped growing: step 4 is the
    # knee and the level; the first step 4 adds nothing to is step 5, which breaks the SLO.
    steps = hand_steps([(100, 10, None), (200, 12, None), (177, 14, None), (240, 20, None),
                        (245, 80, None)], users_step=5)
    plan = plan_capacity(steps, pods=3, slo_p95_ms=50, mode="closed")
    assert plan["knee_index"] == 3 and plan["plateau_index"] == 4
    reasoning = plan["reasoning"]
    assert ("Throughput stopped growing at 240 req/s (step 4): no step from step 5 on "
            "delivered 5 % more than that; that step is the knee") in reasoning
    assert "-11.5 %" not in reasoning and "15 users" not in reasoning
    # Levelled off before the knee (a loose SLO): capacity is that level, said as such.
    # Noise (a dip, then +5.8 % over it but not over the best) is no new growth either.
    flat = hand_steps([(100, 10, None), (150, 20, None), (138, 30, None), (146, 40, None),
                       (150, 90, None)])
    plan = plan_capacity(flat, pods=3, slo_p95_ms=50, mode="closed")
    assert plan["knee_index"] == 3 and plan["plateau_index"] == 2
    assert ("Throughput stopped growing at 150 req/s (step 2): no step from step 3 on "
            "delivered 5 % more than that; p95 stayed within the SLO up to step 4, so the "
            "capacity is that throughput level") in plan["reasoning"]
    # Still growing when the SLO broke: latency set the limit.
    rising = hand_steps([(100, 10, None), (200, 20, None), (300, 90, None), (310, 95, None)])
    plan = plan_capacity(rising, pods=3, slo_p95_ms=50, mode="closed")
    assert plan["knee_index"] == 1 and plan["plateau_index"] == 3
    assert "the SLO broke first, at step 3: latency, not throughput, set the capacity" in (
        plan["reasoning"])


def test_every_figure_in_the_account_reads_by_one_rule():
    # 167.94 ms is "167.9 ms" wherever it appears, never "168 ms"; every figure in the
    # headline and the reasoning is a fixed point of the house formatter.
    target, spread, steps = synthetic_run()
    run = capacity_run_json(steps, slo_p95_ms=5000.0, target_rps=2000.0)
    result = analyse_capacity(spread, run, target.to_dict())
    tampered = [dict(r, p95=167.94, rps=415.55) if r["step"] == 4 else r
                for r in result["steps"]]
    plan = plan_capacity(tampered, pods=3, nodes=3, slo_p95_ms=5000.0, target_rps=2000.0,
                         mode="closed")
    for text in (plan["reasoning"], result["reasoning"], result["headline"]):
        for figure in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", text):
            assert number(float(figure.replace(",", ""))) == figure, (figure, text)
    assert "p95 167.9 ms" in plan["reasoning"] and "168 ms" not in plan["reasoning"]
    assert "ran 40 users at 415.6 req/s with p95 167.9 ms" in plan["reasoning"]


def test_analyse_capacity_reads_the_steps_cpu():
    target, spread, steps = synthetic_run()
    for step, cpu in zip(steps, (0.2, 0.4, 0.6, 0.93, 0.97), strict=True):
        step["cpu"] = {"master": {"cpu_s": 0.1, "busy_s": 0.2, "wall_s": STEP_S - 1},
                       "worker-0": {"cpu_s": cpu * (STEP_S - 1), "busy_s": None,
                                    "wall_s": STEP_S - 1}}
    result = analyse_capacity(spread, capacity_run_json(steps, slo_p95_ms=500.0),
                              target.to_dict())
    rows = result["steps"]
    assert [r["generator_bound"] for r in rows] == [False, False, False, True, True]
    assert rows[0]["generator_cpu_by_process"] == pytest.approx(
        {"master": 0.025, "worker-0": 0.2})
    assert rows[3]["generator_process"] == "worker-0"
    assert result["generator_bound_index"] == 3 and result["knee_index"] == 2
    assert result["generator_cpu_max"] == pytest.approx(0.97)
    assert result["capacity_is_lower_bound"] is True
    assert result["headline"].startswith(
        "Capacity at the SLO: at least 300 req/s (at least 100 req/s per pod); the load "
        "generator, not the pods, was the limit from step 4: add load-generator processes")
    assert result["headline"].endswith("At most 15 pods for 1,000 req/s with 30 % headroom.")
    # The most delivered (step 4) was the generator's limit, and says so.
    assert re.search(r"\(step 4, p95 [\d.]+ ms, with the load generator as the limit\)",
                     result["reasoning"])
    assert exit_code_for(result) == 0


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


def test_the_closed_loop_caveat_is_said_once(tmp_path):
    # capacity.html: in its load model line only; summary.md: in the run's latency finding
    # only (the capacity block's notes do not repeat it).
    run_dir = tmp_path / "cap"
    write_folder(run_dir)
    build_report(run_dir, plotlyjs="cdn")
    for name in ("capacity.html", "summary.md"):
        text = (run_dir / name).read_text()
        assert text.count("coordinated omission") == 1, name


def test_a_lower_bound_reads_as_one_everywhere(tmp_path):
    # Loose SLO: no step breaks it, so 305 req/s is what the steps reached, not the limit.
    run_dir = tmp_path / "lower"
    write_folder(run_dir, slo_p95_ms=5000.0, slo_fail_ratio=0.5)
    build_report(run_dir, plotlyjs="cdn")
    data = json.loads((run_dir / "capacity.json").read_text())
    assert data["capacity_is_lower_bound"] is True and data["limited_by"] == "max_load"
    assert data["pods_needed"] == 15 and data["pods_needed_is_upper_bound"] is True
    assert exit_code_for(data) == 0
    headline = ("Capacity at the SLO: at least 305 req/s (at least 101.7 req/s per pod); no "
                "step broke the SLO: raise --max-users. At most 15 pods for 1,000 req/s with "
                "30 % headroom.")
    assert data["headline"] == headline
    page = (run_dir / "capacity.html").read_text()
    assert headline in page and ">lower bound</span>" in page
    assert "<dd>at least 305 req/s</dd>" in page and "<dd>at most 15</dd>" in page
    assert "Capacity at the SLO: 305 req/s" not in page
    summary = (run_dir / "summary.md").read_text()
    assert f"**{headline}**" in summary and "so at most 15 pods" in summary
    rows = list(csv.DictReader(io.StringIO((run_dir / "steps.csv").read_text())))
    assert {"generator_cpu", "generator_process", "generator_busy", "generator_machine_idle",
            "generator_starved", "generator_bound", "generator_cpu_by_process"} <= set(rows[0])
    assert rows[0]["generator_cpu"] == ""  # not recorded in this folder


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
      "--lab-pod-service-ms", "-1"], "--lab-pod-service-ms"),
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
    # With --processes, Locust's master listens on loopback only, on a port of its own (its
    # default, *:5557, collides with any other distributed run on this machine).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "LOCUST_MASTER_BIND_HOST": "127.0.0.1",
           "LOCUST_MASTER_BIND_PORT": port, "LOCUST_MASTER_NODE_PORT": port}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "capacity", "--lab", "--report-dir",
         str(tmp_path), "--run-id", run_id, "--plotlyjs", "cdn", *args],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
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
    # Under capacity, a step is held. "Capacity" is what this run measured (within 15 % of the
    # lab's truth, checked above): on a busy machine the lab's pods deliver less than their
    # nominal 320 req/s, and a step at 240 is then no longer far under it. Steps the run
    # itself marks as generator-bound (the load generator, not the pods, was the limit) say
    # nothing about the pods and are left out; most steps under capacity must remain.
    measured = result["saturation_rps"]
    under = [s for s in result["steps"] if s["offered_rps"] <= 0.8 * min(320.0, measured)]
    below = [s for s in under if not s.get("generator_bound")]
    steps = "; ".join(f"step {s['step']}: offered {s['offered_rps']}, {s['rps']:.0f} req/s, "
                      f"held {s['held']}, p95 {s['p95']}, generator_bound "
                      f"{s.get('generator_bound')}" for s in result["steps"])
    assert len(below) >= max(1, len(under) - 1), steps
    assert all(s["held"] and s["meets_slo"] for s in below), steps  # under capacity: held
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



def test_no_step_breaking_the_slo_is_a_lower_bound(tmp_path):
    # 2 pods x 2 at a time / 20 ms = 200 req/s; 2 and 4 users stay well inside a 1 s SLO, so
    # what they delivered is a lower bound. Two worker processes: each sends its CPU with its
    # reports, the master adds its own.
    proc, run_dir, seconds = capacity_cli(
        tmp_path, "lower", "--lab-nodes", "2", "--lab-pods", "2", "--lab-pod-concurrency", "2",
        "--lab-pod-service-ms", "20", "--step-users", "2", "--max-users", "4",
        "--step-time", "3s", "--slo-p95-ms", "1000", "--target-rps", "1000",
        "--processes", "2")
    assert (run_dir / "capacity.json").is_file(), proc.stderr[-3000:]
    result = json.loads((run_dir / "capacity.json").read_text())
    seen = f"{seconds:.1f} s; " + "; ".join(
        f"step {r['step']}: {r['rps']:.0f} req/s, p95 {r['p95']} ms, failed {r['failures']}, "
        f"cpu {r['generator_cpu_by_process']}, window {r['generator_window_s']}"
        for r in result["steps"])
    print(f"lower bound run: {seen}")
    assert proc.returncode == 0, seen + "\n" + proc.stderr[-3000:]
    assert result["knee_index"] == 1 and result["breach_index"] is None, seen
    assert result["capacity_is_lower_bound"] is True and result["limited_by"] == "max_load"
    assert result["pods_needed_is_upper_bound"] is True
    line = next(x for x in proc.stderr.splitlines() if x.startswith("capacity: Capacity"))
    capacity = rate_text(result["capacity_rps"])
    assert line.startswith(f"capacity: Capacity at the SLO: at least {capacity}")
    assert "no step broke the SLO: raise --max-users." in line and " At most " in line
    assert result["headline"] == line.removeprefix("capacity: ")
    assert "capacity is at least" in result["reasoning"]
    assert result["headline"] in (run_dir / "capacity.html").read_text()
    for step in result["steps"]:
        assert set(step["generator_cpu_by_process"]) == {"master", "worker-0", "worker-1"}, seen
        assert step["generator_window_s"] >= 1.5, seen  # the workers' last samples arrived too
        assert 0 < step["generator_cpu"] < 0.9 and step["generator_bound"] is False, seen
    assert "The load generator was not the limit" in result["reasoning"]


def test_the_load_generator_as_the_limit_is_found(tmp_path):
    # Pods with no service time, offered 20 req/s, then 20,020 req/s by users paced 5 ms
    # apart: the first step leaves the one Locust process mostly asleep; in the second it
    # falls behind and never catches up (on a quiet machine it uses a whole core; on a busy
    # one it waits for a CPU instead), so the lab's pods are not what is measured.
    proc, run_dir, seconds = capacity_cli(
        tmp_path, "client", "--lab-nodes", "1", "--lab-pods", "2",
        "--lab-pod-service-ms", "0", "--connection", "keepalive", "--start-rps", "20",
        "--step-rps", "20000", "--max-rps", "20020", "--pacing-s", "0.005",
        "--step-time", "4s", "--slo-p95-ms", "1000")
    assert (run_dir / "capacity.json").is_file(), proc.stderr[-3000:]
    result = json.loads((run_dir / "capacity.json").read_text())
    rows = result["steps"]
    seen = f"{seconds:.1f} s; " + "; ".join(
        f"step {r['step']}: {r['rps']:.0f} req/s, p95 {r['p95']} ms, cpu {r['generator_cpu']}, "
        f"busy {r['generator_busy']}, machine idle {r['generator_machine_idle']}" for r in rows)
    print(f"generator run: {seen}")
    assert proc.returncode == 0, seen + "\n" + proc.stderr[-3000:]
    assert [r["generator_bound"] for r in rows] == [False, True], seen
    assert result["generator_bound_index"] == 1 and result["knee_index"] == 0
    assert result["limited_by"] == "load_generator" and result["breach_index"] is None
    assert result["capacity_is_lower_bound"] is True
    assert result["capacity_rps"] == rows[0]["rps"]
    assert set(rows[1]["generator_cpu_by_process"]) == {"local"}
    assert rows[1]["held"] is False  # far short of 20,020 req/s
    said = "the load generator, not the pods, was the limit from step 2"
    assert said in result["headline"] and said in proc.stderr
    assert result["reasoning"].startswith(said.capitalize())
    assert any("the load generator was the limit in steps 2" in n for n in result["notes"])
    assert result["lab"]["true_capacity_rps"] is None  # no service time: no known capacity
    page = (run_dir / "capacity.html").read_text()
    assert ">lower bound</span>" in page and "generator limit" in page
