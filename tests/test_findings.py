"""Findings (harness.core.findings.build_findings) from summaries of small synthetic runs: a
real SpreadRecorder on a fake clock, summarised by analysis.summarize, as the reports do.

Sentences are checked by their ids, severities and key words, not by how numbers are written.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

import pytest
from report_runs import T0, make_target

from harness.core.analysis import summarize
from harness.core.findings import SEVERITIES, build_findings
from harness.core.model import Target
from harness.core.recorder import SpreadRecorder

# (second of the run, entry node, pod or None, failure kind or None, connection key)
Request = tuple[float, str, "str | None", "str | None", object]


def summary_of(target: Target, requests: Iterable[Request], **run) -> dict:
    """summarize() over what a recorder made of `requests`; `run` as analysis_run gives it."""
    now = [T0]
    recorder = SpreadRecorder(target.pod_nodes(), clock=lambda: now[0],
                              nodes=[n.name for n in target.nodes])
    for second, entry, pod, failure, connection in requests:
        now[0] = T0 + second
        recorder.record(entry, pod, 3.0 if failure is None else 0.3, failure, connection)
    recorder.close()
    run = {"entry_strategy": "all", "connection_mode": "close", "start": T0, **run}
    return summarize(recorder.to_dict(), target.to_dict(), run)


def spread_run(target: Target, entries: list[str] | None = None, seconds: int = 20,
               per_second: int = 60, pods: list[str] | None = None,
               connections: str = "close") -> list[Request]:
    """Requests round-robin over `entries` (default: every node) and `pods` (default: every
    endpoint); a new connection per request (``close``), or keep-alive connections that each
    stay on one pod (``pinned``: 11 per pod, 66 for the six pods of make_target)."""
    entries = entries or [n.name for n in target.nodes]
    pods = pods or [e.pod for e in target.endpoints]
    out = []
    serial = itertools.count()
    for second in range(seconds):
        for i in range(per_second):
            n = next(serial)
            entry, pod = entries[n % len(entries)], pods[n % len(pods)]
            connection = n if connections == "close" else (pod, n % 11)
            out.append((second + i / per_second, entry, pod, None, connection))
    return out


def by_id(summary: dict) -> dict[str, dict]:
    return {f["id"]: f for f in summary["findings"]}


def with_lb(target: Target, address: str = "192.0.2.10") -> Target:
    return dataclasses.replace(
        target, service=dataclasses.replace(target.service, lb_ingress=(address,),
                                            type="LoadBalancer"))


# -- order ------------------------------------------------------------------------------------

def test_findings_come_most_severe_first_and_the_loadbalancer_one_last():
    target = make_target()
    requests = spread_run(target, entries=["node-1"])
    # node-1's pods refuse for a while, a few 503s: critical, warning, info and ok findings.
    requests += [(21 + i / 50, "node-1", None, "refused", f"r{i}") for i in range(50)]
    summary = summary_of(target, requests, entry_strategy="single")
    findings = summary["findings"]
    severities = [f["severity"] for f in findings]
    assert set(severities) <= set(SEVERITIES)
    assert {"critical", "ok"} <= set(severities)
    assert findings[-1]["id"] == "loadbalancer" and findings[-1]["severity"] == "info"
    ranks = [SEVERITIES.index(s) for s in severities[:-1]]
    assert ranks == sorted(ranks), severities
    assert len({f["id"] for f in findings}) == len(findings)
    for finding in findings:
        assert finding["text"].strip() and "\n" not in finding["text"]
        assert isinstance(finding["metric"], dict)
    # build_findings is what summarize used: the same list from the same summary.
    assert build_findings(summary) == findings


def test_no_traffic_is_one_critical_finding_first():
    target = make_target()
    summary = summary_of(target, [])
    first = summary["findings"][0]
    assert first["id"] == "no_traffic" and first["severity"] == "critical"
    assert "No request" in first["text"]


# -- ingress: where clients enter ------------------------------------------------------------

def test_all_ingress_through_one_node_is_a_critical_single_point_of_failure():
    target = make_target()
    summary = summary_of(target, spread_run(target, entries=["node-2"]),
                         entry_strategy="single")
    finding = by_id(summary)["ingress_concentration"]
    assert finding["severity"] == "critical"
    assert finding["metric"]["node"] == "node-2" and finding["metric"]["share"] == 1.0
    assert finding["metric"]["entry_nodes"] == 1 and finding["metric"]["nodes"] == 3
    assert finding["metric"]["pods_elsewhere"] == 4  # node-2 runs 2 of the 6 pods
    assert "node-2" in finding["text"] and "every client fails" in finding["text"]
    lb = by_id(summary)["loadbalancer"]
    assert any("node-2" in reason for reason in lb["metric"]["reasons"])


def test_a_one_node_cluster_is_a_single_point_of_failure_whatever_the_service():
    target = make_target(nodes=1)
    summary = summary_of(target, spread_run(target))
    finding = by_id(summary)["ingress_concentration"]
    assert finding["severity"] == "info" and "single point of failure" in finding["text"]
    assert "loadbalancer" not in by_id(summary)  # a LoadBalancer would not change that


def test_uneven_ingress_names_the_node_that_got_nothing():
    target = make_target()
    summary = summary_of(target, spread_run(target, entries=["node-1", "node-2"]))
    finding = by_id(summary)["ingress_concentration"]
    assert finding["severity"] == "warning"
    assert finding["metric"]["unused"] == ["node-3"] and "node-3" in finding["text"]
    assert by_id(summary)["loadbalancer"]["severity"] == "info"


def test_even_ingress_is_ok_and_needs_no_loadbalancer():
    target = make_target()
    summary = summary_of(target, spread_run(target))
    finding = by_id(summary)["ingress_concentration"]
    assert finding["severity"] == "ok" and finding["metric"]["entry_nodes"] == 3
    assert "loadbalancer" not in by_id(summary)
    assert summary["findings"][-1]["severity"] == "ok"  # nothing to say after the ok ones


def test_through_the_loadbalancer_there_is_no_ingress_or_loadbalancer_finding():
    target = with_lb(make_target())
    summary = summary_of(target, spread_run(target, entries=["lb"]), entry_strategy="lb")
    assert "ingress_concentration" not in by_id(summary)
    assert "loadbalancer" not in by_id(summary)


def test_the_loadbalancer_finding_points_at_the_services_own_ingress():
    target = with_lb(make_target(), "192.0.2.77")
    summary = summary_of(target, spread_run(target, entries=["node-1"]),
                         entry_strategy="single")
    finding = summary["findings"][-1]
    assert finding["id"] == "loadbalancer"
    assert finding["metric"]["lb_ingress"] == ["192.0.2.77"] or \
        tuple(finding["metric"]["lb_ingress"]) == ("192.0.2.77",)
    assert "192.0.2.77" in finding["text"]
    assert "does not change which pod" in finding["text"]  # what it does not fix, too


# -- faults ------------------------------------------------------------------------------------

def node_down_run(target: Target, failure: str = "timeout") -> list[Request]:
    """node-3's clients fail between seconds 8 and 14 (its node was down); the rest serve."""
    out = []
    for request in spread_run(target, seconds=20):
        second, entry = request[0], request[1]
        if entry == "node-3" and 8 <= second < 14:
            out.append((second, entry, None, failure, request[4]))
        else:
            out.append(request)
    return out


def test_a_node_fault_felt_through_that_node_calls_for_a_health_check():
    target = make_target()
    faults = [{"t": 8.0, "kind": "node", "name": "node-3", "action": "down"},
              {"t": 14.0, "kind": "node", "name": "node-3", "action": "up"}]
    summary = summary_of(target, node_down_run(target), faults=faults, timeout_s=1.0)
    found = by_id(summary)
    finding = found["fault:node-3"]
    assert finding["severity"] == "critical" and finding["metric"]["lb_would_help"]
    assert "node-3" in finding["text"] and "went down" in finding["text"]
    assert "health check" in finding["text"]
    assert "node_availability:node-3" not in found  # the fault finding tells that story
    lb = summary["findings"][-1]
    assert lb["id"] == "loadbalancer" and any(
        "health check" in reason and "node-3" in reason for reason in lb["metric"]["reasons"])


def test_a_fault_finding_says_throughput_fell_only_when_it_did():
    # Refused connections fail at once: users do not wait on time-outs and the rate holds.
    target = make_target()
    faults = [{"t": 8.0, "kind": "node", "name": "node-3", "action": "down"},
              {"t": 14.0, "kind": "node", "name": "node-3", "action": "up"}]
    summary = summary_of(target, node_down_run(target, "refused"), faults=faults,
                         timeout_s=1.0)
    fault = next(f for f in summary["faults"] if f["action"] == "down")
    assert fault["rps_steady"] >= fault["rps_before"]  # the synthetic run kept its rate
    text = by_id(summary)["fault:node-3"]["text"]
    assert "fell" not in text, text


# -- pods and connections --------------------------------------------------------------------

def test_pods_without_traffic_are_named():
    target = make_target()
    pods = [e.pod for e in target.endpoints]
    summary = summary_of(target, spread_run(target, pods=pods[:4]))
    finding = by_id(summary)["pods_without_traffic"]
    assert finding["severity"] == "warning"
    assert finding["metric"]["zero"] == pods[4:] and finding["metric"]["pods"] == 6
    assert all(pod in finding["text"] for pod in pods[4:])


def test_all_pods_served_is_ok():
    target = make_target()
    finding = by_id(summary_of(target, spread_run(target)))["pods_without_traffic"]
    assert finding["severity"] == "ok" and finding["metric"]["zero"] == []


def test_no_listed_pod_served_is_critical():
    # Every reply named a pod discovery did not list (replaced pods): none of the six served.
    target = make_target()
    summary = summary_of(target, spread_run(target, pods=["stranger-1", "stranger-2"]))
    found = by_id(summary)
    assert found["pods_without_traffic"]["severity"] == "critical"
    assert len(found["pods_without_traffic"]["metric"]["zero"]) == 6
    assert found["pods_not_in_endpoints"]["severity"] == "info"
    assert set(found["pods_not_in_endpoints"]["metric"]["pods"]) == {"stranger-1", "stranger-2"}


def test_few_keepalive_connections_explain_the_pods_left_out():
    target = make_target()
    pods = [e.pod for e in target.endpoints]
    # Two keep-alive connections, each pinned to its first pod for the whole run.
    requests = [(i / 50, "node-1", pods[i % 2], None, f"conn-{i % 2}") for i in range(1000)]
    summary = summary_of(target, requests, entry_strategy="single",
                         connection_mode="keepalive")
    found = by_id(summary)
    zero = found["pods_without_traffic"]
    assert zero["severity"] == "warning" and "connections" in zero["text"]
    pinning = found["keepalive_pinning"]
    assert pinning["severity"] == "warning"  # 2 connections for 6 pods
    assert pinning["metric"]["single_pod_share"] == 1.0
    assert "one pod" in pinning["text"] and "kube-proxy balances connections" in pinning["text"]
    # Uneven, but exactly what two per-connection choices allow: no false alarm.
    fairness = found["pod_fairness"]
    assert fairness["severity"] == "info"
    assert ("matches what kube-proxy's per-connection random choice predicts for 2 "
            "connections over 6 pods") in fairness["text"]


def test_many_pinned_connections_are_only_informative():
    target = make_target()
    summary = summary_of(target, spread_run(target, connections="pinned"),
                         connection_mode="keepalive")
    pinning = by_id(summary)["keepalive_pinning"]
    assert pinning["severity"] == "info"  # 66 connections for 6 pods: a fine enough spread
    assert pinning["metric"]["connections"] == 66
    assert "kube-proxy balances connections" in pinning["text"]
    assert pinning["metric"]["single_pod_share"] == 1.0


@pytest.mark.parametrize(("mode", "words"), [
    ("close", "connection mode close"),
    ("keepalive", "kube-proxy chose a pod for almost every request"),
])
def test_a_new_connection_per_request_is_not_pinning(mode, words):
    target = make_target()
    summary = summary_of(target, spread_run(target, connections="close"),
                         connection_mode=mode)
    pinning = by_id(summary)["keepalive_pinning"]
    assert pinning["severity"] == "info" and words in pinning["text"]
