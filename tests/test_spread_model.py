"""The spread model's maths (harness.core.spread_model) with hand-computed expectations, and
its verdicts on simulated kube-proxy choices: no false alarm at the 1 % level over repeated
seeds, and a real skew flagged."""

from __future__ import annotations

import random

import pytest

from harness.core.spread_model import compare, entry_choices, predict


def target(placement=(3, 2, 1), policy="Cluster", affinity="None", lb=False):
    nodes = [f"node-{i + 1}" for i in range(len(placement))]
    endpoints = [{"pod": f"{node}-pod-{j}", "node": node, "ready": True}
                 for node, count in zip(nodes, placement, strict=True) for j in range(count)]
    return {
        "nodes": [{"name": n, "targeted": True} for n in nodes],
        "endpoints": endpoints,
        "service": {"external_traffic_policy": policy, "session_affinity": affinity,
                    "lb_ingress": ["127.0.0.100"] if lb else []},
    }


def shares(prediction):
    return {pod: round(row["expected_share"], 6) for pod, row in prediction["pods"].items()}


def test_cluster_policy_is_uniform_over_every_endpoint():
    model = predict(target(), {"node-1": 100, "node-2": 100, "node-3": 100}, 300)
    assert set(shares(model).values()) == {round(1 / 6, 6)}
    assert model["dropped_share"] == 0
    assert model["assumptions"] == ["kube-proxy's mode is not known: assumed iptables (a random "
                                    "choice per connection)"]


def test_local_policy_with_3_2_1_placement_entering_every_node():
    # Each node keeps its traffic: a third per node, split among its own pods.
    model = predict(target(policy="Local"), {"node-1": 100, "node-2": 100, "node-3": 100}, 300)
    got = shares(model)
    assert got["node-1-pod-0"] == round(1 / 9, 6)
    assert got["node-2-pod-0"] == round(1 / 6, 6)
    assert got["node-3-pod-0"] == round(1 / 3, 6)


def test_local_policy_single_entry_reaches_only_that_nodes_pods():
    model = predict(target(policy="Local"), {"node-3": 500}, 500)
    got = shares(model)
    assert got["node-3-pod-0"] == 1.0
    assert sum(v for pod, v in got.items() if not pod.startswith("node-3")) == 0


def test_local_policy_drops_traffic_on_a_node_without_pods():
    model = predict(target(placement=(3, 3, 0), policy="Local"),
                    {"node-1": 100, "node-2": 100, "node-3": 100}, 300)
    assert model["dropped_share"] == pytest.approx(1 / 3)
    # The successes split over the two nodes that have pods: 1/2 x 1/3 each.
    assert set(shares(model).values()) == {round(1 / 6, 6)}


def test_a_loadbalancer_picks_a_node_then_a_pod():
    # Cluster: any node, then any pod; Local: only nodes with pods pass the health check.
    assert entry_choices("lb", {"node-1": ["a", "b"], "node-2": ["c"], "node-3": []},
                         "Cluster", ["node-1", "node-2", "node-3"]) == pytest.approx(
        {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert entry_choices("lb", {"node-1": ["a", "b"], "node-2": ["c"], "node-3": []},
                         "Local", ["node-1", "node-2", "node-3"]) == pytest.approx(
        {"a": 1 / 4, "b": 1 / 4, "c": 1 / 2})
    model = predict(target(placement=(2, 1, 0), policy="Local", lb=True), {"lb": 400}, 40)
    assert model["dropped_share"] == 0
    assert shares(model)["node-2-pod-0"] == 0.5


def test_the_band_narrows_with_connections():
    # One entry, 6 pods, p = 1/6: sd of a share over n choices = sqrt(p(1-p)/n).
    few = predict(target(), {"node-1": 600}, 12)["pods"]["node-1-pod-0"]
    many = predict(target(), {"node-1": 600}, 600)["pods"]["node-1-pod-0"]
    assert few["band_high"] - 1 / 6 == pytest.approx(1.96 * (5 / 36 / 12) ** 0.5)
    assert few["band_low"] == 0.0  # clamped: 12 connections can leave a pod with none
    assert many["band_high"] - many["band_low"] == pytest.approx(
        2 * 1.96 * (5 / 36 / 600) ** 0.5)


def simulate(model_target, entries, connections, requests_per, seed, skew=None):
    """Successes per pod when each connection picks like kube-proxy's iptables rules."""
    rng = random.Random(seed)
    policy = model_target["service"]["external_traffic_policy"]
    pods_on = {}
    for e in model_target["endpoints"]:
        pods_on.setdefault(e["node"], []).append(e["pod"])
    counts = {}
    for i in range(connections):
        entry = entries[i % len(entries)]
        choices = entry_choices(entry, pods_on, policy)
        if not choices:
            continue
        pods, weights = zip(*sorted(choices.items()), strict=True)
        if skew:
            weights = [w * skew.get(p, 1.0) for p, w in zip(pods, weights, strict=True)]
        pod = rng.choices(pods, weights)[0]
        counts[pod] = counts.get(pod, 0) + requests_per
    return counts


@pytest.mark.parametrize("policy", ["Cluster", "Local"])
@pytest.mark.parametrize("connections, requests_per", [(18, 50), (300, 1)])
def test_no_false_alarm_at_the_one_percent_level(policy, connections, requests_per):
    model_target = target(policy=policy)
    entries = ["node-1", "node-2", "node-3"]
    alarms = 0
    for seed in range(200):
        counts = simulate(model_target, entries, connections, requests_per, seed)
        per_entry = {e: connections // 3 * requests_per for e in entries}
        verdict = compare(predict(model_target, per_entry, connections), counts)["verdict"]
        alarms += verdict == "deviates"
    assert alarms <= 6  # 1 % of 200, with room for chance: a design-effect test keeps it


def test_a_skewed_pod_is_flagged():
    model_target = target()
    counts = simulate(model_target, ["node-1"], 600, 1, seed=1, skew={"node-1-pod-0": 0.2})
    result = compare(predict(model_target, {"node-1": 600}, 600), counts)
    assert result["verdict"] == "deviates" and result["p"] < 0.001
    assert result["outliers"][0]["pod"] == "node-1-pod-0"


def test_a_pod_the_rules_give_nothing_is_a_deviation():
    model_target = target(policy="Local")
    result = compare(predict(model_target, {"node-3": 100}, 100),
                     {"node-3-pod-0": 90, "node-1-pod-0": 10})
    assert result["verdict"] == "deviates" and result["unexpected_pods"] == ["node-1-pod-0"]


def test_pods_that_changed_are_judged_apart():
    model_target = target()
    counts = simulate(model_target, ["node-1"], 600, 1, seed=2)
    gone = "node-1-pod-0"
    counts[gone] = 5  # it left early on: far below its sixth
    prediction = predict(model_target, {"node-1": 600}, 600)
    assert compare(prediction, counts)["verdict"] == "deviates"
    result = compare(prediction, counts, exclude={gone, "never-seen"})
    assert result["verdict"] == "matches" and result["excluded"] == [gone]


def test_a_slow_pod_is_named_as_the_cause():
    from harness.core.analysis import summarize
    from harness.core.recorder import SpreadRecorder

    model_target = target(placement=(2, 2, 2))
    pods = [e["pod"] for e in model_target["endpoints"]]
    rng = random.Random(5)
    recorder = SpreadRecorder({e["pod"]: e["node"] for e in model_target["endpoints"]},
                              lambda: 1_700_000_000.0)
    for _ in range(1200):
        # Closed-loop clients stuck on the slow pod send less: it gets a third of its share.
        pod = rng.choices(pods, [0.34 if p == pods[0] else 1.0 for p in pods])[0]
        recorder.record("node-1", pod, 40.0 if pod == pods[0] else 2.0, None, 0)
    summary = summarize(recorder.to_dict(), model_target)
    finding = next(f for f in summary["findings"] if f["id"] == "pod_fairness")
    assert summary["fairness"]["model"]["verdict"] == "deviates"
    assert f"pod {pods[0]} got" in finding["text"]
    assert f"{pods[0]} is slow (p50 40" in finding["text"]
