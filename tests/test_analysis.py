"""Analysis: hand-computed figures, findings for crafted runs, thresholds and the capacity knee."""

from __future__ import annotations

import json
import math

import pytest

from harness.core.analysis import (
    SUMMARY_SCHEMA,
    chi_square_uniform,
    coefficient_of_variation,
    evaluate_thresholds,
    expected_band,
    jain_index,
    max_min_ratio,
    summarize,
)
from harness.core.capacity import find_knee, plan_capacity
from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.recorder import SpreadRecorder
from harness.core.text import pct
from harness.errors import HarnessError

START = 1_700_000_000.0
NODES = ("node-1", "node-2", "node-3")


def make_target(policy: str = "Cluster", placement=(0, 0, 1, 1, 2, 2)) -> dict:
    """Three nodes; pod-i runs on node-(placement[i] + 1)."""
    nodes = tuple(
        Node(name, {"ExternalIP": f"10.0.0.{i + 1}"}, f"10.0.0.{i + 1}", "ExternalIP")
        for i, name in enumerate(NODES)
    )
    endpoints = tuple(
        Endpoint(f"pod-{i}", NODES[node], f"10.1.0.{i + 1}") for i, node in enumerate(placement)
    )
    service = ServiceInfo(
        "hello", "default", "NodePort", ServicePort("http", 80, 8080, 30080),
        external_traffic_policy=policy,
        health_check_node_port=31999 if policy == "Local" else None,
    )
    return Target(nodes, service, endpoints).to_dict()


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


def record(target: dict, rows) -> dict:
    """spread.json of rows (seconds from start, entry node, pod, latency ms, failure, conn)."""
    clock = Clock()
    recorder = SpreadRecorder(Target.from_dict(target).pod_nodes(), clock)
    for offset, entry_node, pod, latency_ms, failure, connection in rows:
        clock.t = START + offset
        recorder.record(entry_node, pod, latency_ms, failure, connection)
    return json.loads(json.dumps(recorder.to_dict()))


def latency_for(target: dict, entry_node: str, pod: str) -> float:
    """1 ms when the pod runs on the entry node, 1.5 ms across nodes."""
    pod_node = {e["pod"]: e["node"] for e in target["endpoints"]}[pod]
    return 1.0 if pod_node == entry_node else 1.5


def even_run(target: dict, count: int = 6000, entries=NODES, connection_per_request=True):
    """Round-robin over ``entries``, pods in turn, one request every 5 ms."""
    pods = [e["pod"] for e in target["endpoints"]]
    rows = []
    for i in range(count):
        entry = entries[i % len(entries)]
        pod = pods[(i // len(entries)) % len(pods)]
        connection = i if connection_per_request else None
        rows.append((i * 0.005, entry, pod, latency_for(target, entry, pod), None, connection))
    return rows


def by_id(summary: dict) -> dict:
    return {f["id"]: f for f in summary["findings"]}


# -- hand-computed statistics ----------------------------------------------------------------

def test_jain_cv_and_max_min_by_hand():
    assert jain_index([1, 1, 1, 1]) == 1.0
    assert jain_index([4, 0, 0, 0]) == 0.25
    assert jain_index([10, 20, 30]) == pytest.approx(3600 / 4200)
    assert jain_index([0, 0]) is None
    assert coefficient_of_variation([1, 1, 1, 1]) == 0.0
    assert coefficient_of_variation([4, 0, 0, 0]) == pytest.approx(math.sqrt(3))
    assert max_min_ratio([2, 1, 1]) == 2.0
    assert max_min_ratio([1, 0]) is None


def test_chi_square_against_uniform_by_hand():
    # Expected 20 each: (100 + 0 + 100) / 20 = 10; with 2 degrees of freedom p = e^(-10/2).
    chi2, p = chi_square_uniform([10, 20, 30])
    assert chi2 == pytest.approx(10.0)
    assert p == pytest.approx(math.exp(-5))
    assert chi_square_uniform([5]) == (None, None)


def test_expected_band_matches_the_normal_approximation():
    low, high = expected_band(600, 6)
    half_width = 1.96 * math.sqrt(600 * (1 / 6) * (5 / 6)) / 600  # 17.9 requests
    assert low == pytest.approx(1 / 6 - half_width, abs=1 / 600)
    assert high == pytest.approx(1 / 6 + half_width, abs=1 / 600)


def test_shares_fairness_and_cross_node_of_a_crafted_run():
    target = make_target(placement=(0, 1, 2))
    rows = [(0.01 * i, "node-1", "pod-0", 1.0, None, None) for i in range(10)]
    rows += [(0.2 + 0.01 * i, "node-1", "pod-1", 1.5, None, None) for i in range(20)]
    rows += [(0.5 + 0.01 * i, "node-1", "pod-2", 1.5, None, None) for i in range(30)]
    rows += [(0.9, "node-2", None, 0.2, "refused", None)] * 4
    summary = summarize(record(target, rows), target)
    nodes = {n["name"]: n for n in summary["nodes"]}
    assert nodes["node-1"]["share"] == pytest.approx(60 / 64)
    assert nodes["node-2"]["share"] == pytest.approx(4 / 64)
    assert nodes["node-2"]["availability"] == 0.0
    assert nodes["node-3"]["requests"] == 0
    pods = {p["name"]: p for p in summary["pods"]}
    assert [pods[f"pod-{i}"]["share"] for i in range(3)] == pytest.approx([1 / 6, 1 / 3, 1 / 2])
    assert pods["pod-0"]["expected_share"] == pytest.approx(1 / 3)
    assert pods["pod-0"]["within_band"] is False  # 10 of 60 is outside [12, 28]
    fairness = summary["fairness"]
    assert fairness["jain"] == pytest.approx(3600 / 4200)
    assert fairness["max_min_ratio"] == 3.0
    assert fairness["chi2_p"] == pytest.approx(math.exp(-5))
    cross = summary["cross_node"]
    assert cross["share"] == pytest.approx(50 / 60)
    assert cross["local"]["count"] == 10 and cross["cross_node"]["count"] == 50
    assert summary["totals"]["fail_ratio"] == pytest.approx(4 / 64)
    assert summary["failures"]["by_node"]["node-2"] == {"refused": 4}
    json.dumps(summary, allow_nan=False)
    assert summary["schema"] == SUMMARY_SCHEMA


def test_cross_node_latency_cost():
    target = make_target()
    summary = summarize(record(target, even_run(target)), target)
    cross = summary["cross_node"]
    assert cross["share"] == pytest.approx(2 / 3, abs=0.01)
    assert cross["enough_samples"]
    assert cross["cost_ms"]["p50"] == pytest.approx(0.5, rel=0.02)
    finding = by_id(summary)["cross_node"]
    assert finding["text"].startswith(f"{pct(cross['share'])} of requests crossed nodes, "
                                      "adding 0.492 ms at p50")


def test_latency_percentiles_overall_per_node_and_per_pod():
    target = make_target()
    summary = summarize(record(target, even_run(target)), target)
    overall = summary["latency"]["overall"]
    assert overall["count"] == 6000
    assert overall["p50"] == pytest.approx(1.5, rel=0.01)
    assert overall["max"] == pytest.approx(1.5, rel=0.01)
    assert summary["nodes"][0]["latency"]["p50"] == pytest.approx(1.5, rel=0.01)
    pod_0 = next(p for p in summary["pods"] if p["name"] == "pod-0")
    assert pod_0["latency"]["p99"] == pytest.approx(1.5, rel=0.01)


def test_summary_of_an_empty_run_says_so():
    target = make_target()
    summary = summarize(SpreadRecorder().to_dict(), target, {"faults": [
        {"t": 3, "kind": "node", "name": "node-2", "action": "down"}]})
    assert summary["findings"][0]["id"] == "no_traffic"
    assert summary["zero_pods"] == [f"pod-{i}" for i in range(6)]
    json.dumps(summary, allow_nan=False)


def test_summary_without_target_uses_what_was_recorded():
    target = make_target()
    summary = summarize(record(target, even_run(target, 600)))
    assert summary["service"] is None
    assert {n["name"] for n in summary["nodes"]} == set(NODES)
    assert summary["fairness"]["pods"] == 6
    json.dumps(summary, allow_nan=False)


# -- findings --------------------------------------------------------------------------------

def test_single_node_ingress_is_a_single_point_of_failure():
    target = make_target()
    summary = summarize(record(target, even_run(target, entries=("node-1",))), target,
                        {"entry_strategy": "single"})
    finding = by_id(summary)["ingress_concentration"]
    assert finding["severity"] == "critical"
    assert finding["text"] == (
        "All ingress entered through node-1 (100 %): if node-1 fails, every client fails, "
        "though 4 of 6 pods run elsewhere.")
    assert "loadbalancer" in by_id(summary)
    assert summary["findings"][-1]["id"] == "loadbalancer"


def test_even_ingress_is_ok_and_needs_no_loadbalancer_sermon():
    target = make_target()
    summary = summarize(record(target, even_run(target)), target, {"entry_strategy": "all"})
    findings = by_id(summary)
    assert findings["ingress_concentration"]["severity"] == "ok"
    assert findings["failures"]["severity"] == "ok"
    assert findings["pod_fairness"]["severity"] == "ok"
    assert findings["pods_without_traffic"]["severity"] == "ok"
    assert "loadbalancer" not in findings
    assert not [f for f in summary["findings"] if f["severity"] in ("critical", "warning")]


def local_policy_run(target: dict) -> list:
    """Even ingress; Local policy: a node's pods only; a node without pods drops (timeout)."""
    local_pods = {n: [e["pod"] for e in target["endpoints"] if e["node"] == n] for n in NODES}
    rows = []
    for i in range(3000):
        entry = NODES[i % 3]
        pods = local_pods[entry]
        if pods:
            rows.append((i * 0.01, entry, pods[i % len(pods)], 1.0, None, i))
        else:
            rows.append((i * 0.01, entry, None, 5000.0, "timeout", i))
    return rows


def test_local_policy_with_an_empty_node_drops_its_traffic():
    target = make_target("Local", placement=(0, 0, 0, 1, 1, 1))
    summary = summarize(record(target, local_policy_run(target)), target)
    findings = by_id(summary)
    finding = findings["local_policy_no_pod:node-3"]
    assert finding["severity"] == "critical"
    assert finding["text"] == (
        "externalTrafficPolicy is Local and node-3 runs no pod: 100 % of the 1,000 requests "
        "sent to it failed (timeout 1,000); a LoadBalancer health-checks port 31999 and would "
        "skip it.")
    assert "node_availability:node-3" not in findings  # the Local finding tells it
    assert findings["source_ip_snat"]["severity"] == "ok"
    assert findings["cross_node"]["severity"] == "ok"  # Local never hops
    assert "healthCheckNodePort" in findings["loadbalancer"]["text"]


def test_cluster_policy_has_no_local_drop_finding_but_names_snat():
    target = make_target("Cluster")
    summary = summarize(record(target, even_run(target, 600)), target)
    findings = by_id(summary)
    assert not [f for f in findings if f.startswith("local_policy")]
    assert findings["source_ip_snat"]["severity"] == "info"
    assert "source-NATs" in findings["source_ip_snat"]["text"]


def node_failure_run(target: dict, failing: bool = True) -> list:
    """Round-robin entry for 30 s; node-2 refuses everything from 12 s on."""
    rows = []
    for row in even_run(target, count=6000, connection_per_request=True):
        offset, entry, pod, latency, _, connection = row
        if failing and entry == "node-2" and offset >= 12.0:
            rows.append((offset, entry, None, 0.3, "refused", connection))
        else:
            rows.append(row)
    return rows


def test_node_failure_at_t_reports_the_failed_share_afterwards():
    target = make_target()
    run = {"entry_strategy": "all",
           "faults": [{"t": 12, "kind": "node", "name": "node-2", "action": "down"}]}
    summary = summarize(record(target, node_failure_run(target)), target, run)
    finding = by_id(summary)["fault:node-2"]
    assert finding["severity"] == "critical"
    ratio = finding["metric"]["fail_ratio"]
    assert ratio == pytest.approx(1 / 3, abs=0.01)
    assert finding["text"].startswith(
        f"node-2 went down at 12 s: from 1 s later until the end, {pct(ratio)} of requests "
        "failed (0 % before)")
    assert finding["text"].endswith("a LoadBalancer health check would have removed it.")
    assert "0 % before" in finding["text"]
    nodes = {n["name"]: n for n in summary["nodes"]}
    assert nodes["node-2"]["first_failure_s"] == 12
    assert nodes["node-2"]["last_failure_s"] == 29
    assert "node_availability:node-2" not in by_id(summary)
    assert "went down" in by_id(summary)["loadbalancer"]["text"]


def test_node_failure_in_a_closed_loop_reports_the_steady_state():
    """Users stuck on 2 s time-outs send few requests: the window ratio would say ~1 %."""
    target = make_target()
    rows = [(i * 0.001, "node-1", f"pod-{i % 6}", 1.0, None, None) for i in range(10000)]
    # the fault at 10 s; time-outs complete from 12 s on, 6 per second, until 20 s
    rows += [(12 + i / 6, "node-1", None, 2000.0, "timeout", None) for i in range(48)]
    run = {"faults": [{"t": 10, "kind": "node", "name": "node-1", "action": "down"}],
           "timeout_s": 2.0}
    fault = summarize(record(target, rows), target, run)["faults"][0]
    assert fault["steady_fail_ratio"] == 1.0 and fault["settle_s"] == 3.0
    assert fault["rps_before"] == pytest.approx(1000, rel=0.01)
    assert fault["rps_steady"] == pytest.approx(6, abs=1)
    finding = by_id(summarize(record(target, rows), target, run))["fault:node-1"]
    assert "from 3 s later until the end, 100 % of requests failed" in finding["text"]
    assert "throughput fell from 1,000 to 6 req/s" in finding["text"]


def test_node_failure_behind_another_entry_node_is_not_blamed_on_ingress():
    target = make_target()
    rows = []
    for i in range(3000):  # everything enters node-1; node-2's pods time out from 12 s
        offset, pod = i * 0.01, f"pod-{i % 6}"
        if offset >= 12 and pod in ("pod-2", "pod-3"):
            rows.append((offset, "node-1", None, 5000.0, "timeout", None))
        else:
            rows.append((offset, "node-1", pod, 1.0, None, None))
    run = {"faults": [{"t": 12, "kind": "node", "name": "node-2", "action": "down"}]}
    finding = by_id(summarize(record(target, rows), target, run))["fault:node-2"]
    assert finding["metric"]["via_node_share"] == 0.0
    assert finding["metric"]["lb_would_help"] is False
    assert "whose kube-proxy kept routing to node-2's pods" in finding["text"]


def test_node_failure_found_from_a_marker_and_ok_when_nothing_failed():
    target = make_target()
    clock = Clock()
    recorder = SpreadRecorder(Target.from_dict(target).pod_nodes(), clock)
    for offset, entry, pod, latency, failure, connection in node_failure_run(target, False):
        clock.t = START + offset
        recorder.record(entry, pod, latency, failure, connection)
    recorder.mark(START + 12, "node-2 down")
    summary = summarize(recorder.to_dict(), target)
    finding = by_id(summary)["fault:node-2"]
    assert finding["severity"] == "ok"
    assert finding["metric"]["t"] == 12
    assert "0 % of requests failed" in finding["text"]


def test_keepalive_pinning_is_reported_with_its_numbers():
    target = make_target()
    rows = []
    for connection in range(1, 13):  # 12 keep-alive connections, 50 requests each, one pod
        pod = f"pod-{connection % 6}"
        rows += [(connection + 0.01 * i, "node-1", pod, 1.0, None, connection)
                 for i in range(50)]
    summary = summarize(record(target, rows), target, {"connection_mode": "keepalive"})
    keepalive = summary["keepalive"]
    assert keepalive["connections"] == 12
    assert keepalive["mean_distinct_pods"] == 1.0
    assert keepalive["single_pod_share"] == 1.0
    assert keepalive["mean_requests_per_connection"] == 50.0
    assert keepalive["p50_requests_per_connection"] == 50
    finding = by_id(summary)["keepalive_pinning"]
    assert finding["severity"] == "warning"  # 12 connections over 6 pods
    assert ("the client opened 12 TCP connections for 600 requests, 50 requests each on "
            "average; 100 % of the 12 that reached a pod saw exactly one (1 pod per connection "
            "on average)") in finding["text"]


def test_new_connection_per_request_is_not_pinning():
    target = make_target()
    summary = summarize(record(target, even_run(target, 600)), target)
    finding = by_id(summary)["keepalive_pinning"]
    assert finding["severity"] == "info"
    assert finding["text"].startswith("Each connection carried 1 request on average")
    closed = summarize(record(target, even_run(target, 600)), target,
                       {"connection_mode": "close"})
    assert by_id(closed)["keepalive_pinning"]["text"].startswith(
        "Every request opened a new connection (connection mode close): the client opened "
        "600 TCP connections for 600 requests, one each;")


def test_pods_that_received_nothing_are_listed_from_the_endpoints():
    target = make_target()
    rows = [row for row in even_run(target, 600) if row[2] != "pod-5"]
    summary = summarize(record(target, rows), target)
    assert summary["zero_pods"] == ["pod-5"]
    finding = by_id(summary)["pods_without_traffic"]
    assert finding["severity"] == "warning"
    assert finding["text"] == "1 of 6 pods received nothing: pod-5 (on node-3)."
    assert by_id(summary)["pod_fairness"]["severity"] in ("warning", "critical")


def test_uneven_pods_are_flagged_and_even_pods_are_not():
    target = make_target(placement=(0, 1, 2))
    skewed = [(i * 0.01, "node-1", "pod-0" if i % 4 else f"pod-{1 + i % 8 // 4}", 1.0, None, i)
              for i in range(1200)]
    summary = summarize(record(target, skewed), target)
    finding = by_id(summary)["pod_fairness"]
    assert finding["severity"] == "warning"
    # 1,200 connections (one request each) over 3 pods: kube-proxy's random choice cannot
    # give one pod 75 %.
    assert finding["text"].startswith(
        "The pod spread deviates from what kube-proxy's random choice predicts (p < 0.001): "
        "pod pod-0 got 75 % against 33.3 % expected")
    # Shares 3/4, 1/8, 1/8: Jain = 1 / (3 x (9/16 + 2/64)) = 0.5614...
    assert "Jain's index 0.561 over 3 pods" in finding["text"]


# -- thresholds ------------------------------------------------------------------------------

def test_thresholds_pass_and_breach():
    target = make_target()
    summary = summarize(record(target, even_run(target, 600)), target)
    passing = evaluate_thresholds(summary, {
        "max_fail_ratio": 0.01, "max_p95_ms": 10, "max_p99_ms": 10, "min_fairness": 0.95,
        "require_all_pods": True, "max_node_share": 0.5, })
    assert [r["passed"] for r in passing] == [True] * 6
    assert passing[1]["text"] == "p95 latency 1.5 ms (limit ≤ 10 ms): passed"
    breached = evaluate_thresholds(summary, {"max_p95_ms": 1.0, "max_node_share": 0.2,
                                             "max_p99_ms": None})
    assert [(r["name"], r["passed"]) for r in breached] == [
        ("max_p95_ms", False), ("max_node_share", False)]
    assert breached[0]["text"].endswith("BREACHED")


def test_thresholds_on_missing_pods_and_failures():
    target = make_target()
    rows = [row for row in node_failure_run(target) if row[2] != "pod-5"]
    summary = summarize(record(target, rows), target)
    results = {r["name"]: r for r in evaluate_thresholds(
        summary, {"require_all_pods": True, "max_fail_ratio": 0.05})}
    assert results["require_all_pods"]["passed"] is False
    assert results["require_all_pods"]["value"] == 1
    assert "pod-5" in results["require_all_pods"]["text"]
    assert results["max_fail_ratio"]["passed"] is False
    with pytest.raises(HarnessError, match="unknown threshold max_p42_ms"):
        evaluate_thresholds(summary, {"max_p42_ms": 3})


# -- capacity --------------------------------------------------------------------------------

STEPS = [
    {"users": users, "duration_s": 60, "requests": int(rps * 60), "failures": failures,
     "rps": rps, "p50": p95 / 2, "p95": p95, "p99": p95 * 2}
    for users, rps, p95, failures in [
        (10, 100, 50, 0), (20, 200, 50, 0), (30, 300, 55, 0), (40, 400, 60, 0),
        (50, 480, 80, 0), (60, 500, 150, 0), (70, 505, 400, 30), (80, 505, 900, 900),
    ]
]


def test_capacity_knee_plateau_and_pods_needed():
    plan = plan_capacity(STEPS, pods=5, nodes=3, slo_p95_ms=200, target_rps=1000, headroom=0.3)
    assert plan["knee_index"] == 5 and plan["knee"]["users"] == 60
    assert plan["breach_index"] == 6
    assert plan["plateau_index"] == 5  # 500 / 480 = +4.2 %
    assert plan["capacity_rps"] == 500
    assert plan["capacity_per_pod"] == 100
    assert plan["capacity_per_node"] == pytest.approx(500 / 3)
    assert plan["pods_needed"] == 15  # 1000 / (100 x 0.7) = 14.3
    assert plan["nodes_needed"] == 9  # at 5 / 3 pods per node
    reasoning = plan["reasoning"]
    assert "ran 60 users at 500 req/s with p95 150 ms" in reasoning
    assert "the next (70 users) broke it (p95 400 ms > 200 ms)" in reasoning
    assert "100 req/s per pod" in reasoning
    assert "so 15 pods" in reasoning


def test_capacity_fail_ratio_slo_and_rate_steps():
    steps = [{"rate": r, "duration_s": 10, "requests": r * 10, "failures": f, "p95": 20}
             for r, f in [(50, 0), (100, 0), (150, 20)]]
    knee = find_knee(steps, slo_p95_ms=100, max_fail_ratio=0.01)
    assert [s["rps"] for s in knee["steps"]] == [50, 100, 150]
    assert knee["knee_index"] == 1  # 20 / 1500 = 1.3 % failures breaks it
    assert knee["plateau_index"] is None


def test_capacity_when_even_the_first_step_breaks_the_slo():
    plan = plan_capacity(STEPS, pods=5, slo_p95_ms=10, target_rps=1000)
    assert plan["knee"] is None and plan["pods_needed"] is None
    assert plan["reasoning"].startswith("Even the first step (10 users, 100 req/s) broke "
                                        "the SLO (p95 50 ms > 10 ms)")
