"""The spread verdict on real runs: for each of iptables/ipvs x Cluster/Local x sessionAffinity
None/ClientIP x keep-alive/close, a short real run on the lab (its kube-proxy emulation
choosing per connection) is judged to match what kube-proxy's rules predict: no false alarm.
The model's behaviour over many seeds is in tests/test_spread_model.py."""

from __future__ import annotations

import itertools

import pytest
from lab_runs import harness_cmd, load, run

COMBOS = list(itertools.product(("iptables", "ipvs"), ("Cluster", "Local"),
                                ("None", "ClientIP")))


@pytest.fixture(scope="module")
def labs(make_module_lab):
    started = {}

    def lab_for(proxy_mode, policy, affinity):
        key = (proxy_mode, policy, affinity)
        if key not in started:
            started[key] = make_module_lab(nodes=3, placement=[3, 2, 1], policy=policy,
                                           affinity=affinity, proxy_mode=proxy_mode, seed=7)
        return started[key]

    return lab_for


@pytest.mark.parametrize("connection", ["keepalive", "close"])
@pytest.mark.parametrize("proxy_mode, policy, affinity", COMBOS)
def test_a_real_spread_matches_the_model(labs, tmp_path, proxy_mode, policy, affinity,
                                         connection):
    lab = labs(proxy_mode, policy, affinity)
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", "r", "--plotlyjs", "cdn", "--entry",
                           "all", "--connection", connection, "-u", "6", "-t", "3s"),
               timeout=90)
    assert proc.returncode == 0, proc.stderr
    summary = load(tmp_path / "r", "summary.json")
    model = summary["fairness"]["model"]
    assert model["verdict"] == "matches", (model, [
        (p["name"], p["successes"], p["expected_share"]) for p in summary["pods"]])
    assert model["policy"] == policy and model["affinity"] == affinity
    finding = next(f for f in summary["findings"] if f["id"] == "pod_fairness")
    assert "matches what kube-proxy" in finding["text"]
    if policy == "Local":
        # Entering every node evenly, the pod alone on node-3 is expected to take a third.
        alone = [p for p in summary["pods"] if p["node"] == "node-3"]
        assert len(alone) == 1 and alone[0]["expected_share"] == pytest.approx(1 / 3, abs=0.02)


def test_a_pod_that_left_mid_run_is_judged_apart_and_its_incident_tells_it(make_lab, tmp_path):
    lab = make_lab(nodes=3, placement=[2, 2, 2], seed=11)
    victim = lab.pods[0]["name"]
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", "r", "--plotlyjs", "cdn", "--entry",
                           "all", "--connection", "close", "-u", "6", "-t", "5s",
                           "--lab-fault", f"2:pod:{victim}:kill"), timeout=90)
    assert proc.returncode in (0, 1), proc.stderr
    summary = load(tmp_path / "r", "summary.json")
    model = summary["fairness"]["model"]
    # kube-proxy chose among the endpoints there were: the other five match its rules...
    assert model["excluded"] == [victim] and model["verdict"] == "matches", model
    finding = next(f for f in summary["findings"] if f["id"] == "pod_fairness")
    assert f"{victim} joined or left during the run and are judged apart" in finding["text"]
    # ...and the pod that went is an incident of its own, from the data.
    assert [i["name"] for i in summary["incidents"] if i["scope"] == "pod"] == [victim]


def test_a_slow_pod_is_flagged_with_its_cause(make_lab, tmp_path):
    # Keep-alive clients pinned to a slow pod send less: kube-proxy chose evenly, the
    # requests did not follow.
    lab = make_lab(nodes=3, placement=[2, 2, 2], seed=5, slow_pod_ms=25.0)
    slow = lab.pods[0]["name"]
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", "r", "--plotlyjs", "cdn", "--entry",
                           "all", "-u", "12", "-t", "4s"), timeout=90)
    assert proc.returncode == 0, proc.stderr
    summary = load(tmp_path / "r", "summary.json")
    finding = next(f for f in summary["findings"] if f["id"] == f"slow_pod:{slow}")
    assert finding["severity"] == "warning"
    assert f"Pod {slow} is slow (p50 " in finding["text"]
    assert finding["metric"]["p50_ms"] > 20 > 4 * finding["metric"]["typical_p50_ms"]
    assert finding["metric"]["share"] < 0.5 * finding["metric"]["expected_share"]
    # Its p50 is its cause: no other pod is called slow.
    assert [f["id"] for f in summary["findings"] if f["id"].startswith("slow_pod:")] == [
        f"slow_pod:{slow}"]
