"""Incidents from the data alone (harness.core.incidents), on synthetic closed-loop runs fed
through a real SpreadRecorder second by second: a node that dies (time-outs reported a
time-out after it went), a node that refuses, a pod that is killed, and healthy runs that
must show nothing. The real-path checks (real Locust runs, faults from the CLI at a random
moment) are in tests/test_incidents_lab.py."""

from __future__ import annotations

import random

import pytest

from harness.core.analysis import summarize
from harness.core.findings import incident_sentence, worst_incident
from harness.core.incidents import detect_incidents
from harness.core.recorder import SpreadRecorder

T0 = 1_700_000_000.25  # a run starts a quarter into a second
NODES = ["node-1", "node-2", "node-3"]
POD_NODES = {f"pod-{i}": NODES[i % 3] for i in range(6)}


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def simulate(seconds: int = 30, rate: int = 60, seed: int = 3, dead_node: str | None = None,
             dead_at: float | None = None, kind: str = "timeout", timeout_s: float = 5.0,
             killed_pod: str | None = None, killed_at: float | None = None,
             entries: list[str] | None = None) -> dict:
    """A closed-loop fleet round-robin over ``entries``: ``rate`` requests a second per entry
    while healthy. After ``dead_at`` (seconds from T0) requests through ``dead_node`` fail:
    as time-outs reported ``timeout_s`` later (and the fleet slows, as closed-loop users wait
    on them), or refused at once. After ``killed_at`` ``killed_pod`` serves nothing (its
    kube-proxy peers pick the other pods; the connections it held reset once)."""
    rng = random.Random(seed)
    clock = Clock()
    recorder = SpreadRecorder(POD_NODES, clock, nodes=NODES)
    entries = entries or NODES
    pods = list(POD_NODES)
    for second in range(seconds):
        now = second + 0.0
        stalled = (dead_node is not None and kind == "timeout" and dead_at is not None
                   and now >= dead_at)
        per_entry = rate // 10 if stalled else rate
        for entry in entries:
            for i in range(per_entry):
                offset = (i + 0.5) / per_entry
                clock.t = T0 + second + offset
                t = second + offset
                alive = [p for p in pods if not (killed_pod == p and killed_at is not None
                                                 and t >= killed_at)]
                if entry == dead_node and dead_at is not None and t >= dead_at:
                    if kind == "timeout":
                        if t >= dead_at + timeout_s:
                            recorder.record(entry, None, timeout_s * 1000.0, "timeout")
                        continue
                    recorder.record(entry, None, 0.3, kind)
                    continue
                if killed_at is not None and killed_at <= t < killed_at + 0.05:
                    recorder.record(entry, None, 0.5, "reset")
                    continue
                recorder.record(entry, rng.choice(alive), rng.uniform(1.0, 3.0))
    return recorder.to_dict()


def incidents_of(spread: dict, **kwargs) -> list[dict]:
    return detect_incidents(spread, T0, NODES, POD_NODES, **kwargs)


def test_a_healthy_run_has_no_incident():
    for seed in range(5):
        assert incidents_of(simulate(seed=seed)) == []


def test_a_healthy_run_with_few_requests_has_no_incident():
    # 3 requests a second per entry: pods go quiet for seconds by chance alone.
    assert incidents_of(simulate(rate=3, seconds=40)) == []


@pytest.mark.parametrize("dead_at", [6.3, 11.8, 17.05])
def test_a_dead_node_is_found_near_its_true_start(dead_at):
    spread = simulate(dead_node="node-2", dead_at=dead_at)
    (incident,) = [i for i in incidents_of(spread) if i["scope"] == "node"]
    assert incident["name"] == "node-2"
    # The time-outs are reported 5 s later: the start is estimated back from their latency.
    assert abs(incident["start_s"] - dead_at) <= 2.0
    assert incident["end_s"] is None
    assert incident["kinds"] == {"timeout": incident["failures"]}
    assert incident["scope_failed_share"] == 1.0
    assert incident["rps_during"] < 0.5 * incident["rps_before"]
    assert incident["availability"]["node-2"]["before"] == 1.0
    assert incident["availability"]["node-2"]["during"] == 0.0
    assert incident["availability"]["node-1"]["during"] == 1.0


def test_a_refusing_node_is_found_at_once_and_its_end_too():
    spread = simulate(dead_node="node-3", dead_at=8.5, kind="refused")
    (incident,) = incidents_of(spread)
    assert incident["scope"] == "node" and incident["name"] == "node-3"
    assert abs(incident["start_s"] - 8.5) <= 1.0
    assert incident["kinds"] == {"refused": incident["failures"]}
    assert 0.3 < incident["failed_share"] < 0.4  # one entry of three
    # Refused connections fail fast: the fleet's rate holds.
    assert incident["rps_during"] > 0.8 * incident["rps_before"]


def test_a_killed_pod_is_found_and_matched_to_its_change():
    changes = [{"t": 9.9, "kind": "endpoint", "name": "pod-4", "change": "left",
                "text": "pod pod-4 left the endpoints (not ready) at 9.9 s"}]
    spread = simulate(killed_pod="pod-4", killed_at=10.0)
    (incident,) = incidents_of(spread, changes=changes)
    assert incident["scope"] == "pod" and incident["name"] == "pod-4"
    assert abs(incident["start_s"] - 10.0) <= 1.0
    assert incident["kinds"].get("reset")
    assert 0.1 < incident["share_before"] < 0.25
    assert incident["caused_by"] == ["pod pod-4 left the endpoints (not ready) at 9.9 s"]


def test_faults_and_changes_elsewhere_are_not_causes():
    faults = [{"t": 2.0, "kind": "node", "name": "node-2", "action": "down"},
              {"t": 6.0, "kind": "node", "name": "node-1", "action": "down"}]
    spread = simulate(dead_node="node-2", dead_at=6.3, kind="refused")
    (incident,) = incidents_of(spread, faults=faults)
    assert incident["caused_by"] == []  # node-2's was 4 s early; node-1 is another node
    faults[0]["t"] = 6.1
    (incident,) = incidents_of(spread, faults=faults)
    assert incident["caused_by"] == ["node node-2 down at 6.1 s"]


def test_an_lb_entry_is_its_own_scope():
    spread = simulate(entries=["lb"], dead_node="lb", dead_at=12.0, kind="refused")
    (incident,) = incidents_of(spread)
    assert incident["scope"] == "lb" and incident["name"] == "lb"


def test_the_summary_headline_and_findings_state_the_worst():
    spread = simulate(dead_node="node-2", dead_at=9.0)
    summary = summarize(spread, None, {"start": T0, "timeout_s": 5.0})
    (incident,) = [i for i in summary["incidents"] if i["scope"] == "node"]
    assert worst_incident(summary) is incident
    text = incident_sentence(incident)
    assert text.startswith("Requests through node-2 failed from ")
    assert "to the end of the run" in text and "throughput fell from" in text
    finding = next(f for f in summary["findings"] if f["id"].startswith("incident:node:"))
    assert finding["severity"] == "critical"
    # No OK finding says the run held up beside it.
    assert not [f for f in summary["findings"] if f["severity"] == "ok"
                and f["id"].startswith(("ingress", "fault:"))]
    # The node's p99 with failures is the time-out; without them, a healthy few ms.
    node = next(n for n in summary["nodes"] if n["name"] == "node-2")
    assert node["latency"]["p99"] < 10 and node["latency_all"]["p99"] > 4500
    failed = [r["failed_p95"] for r in summary["timeline"]["nodes"]["node-2"]
              if r["failed_p95"] is not None]
    assert failed and min(failed) > 4500


def test_an_entry_failing_from_the_start_starts_at_zero():
    # Local policy, a node with no pod: its time-outs reach back before the run began.
    spread = simulate(dead_node="node-3", dead_at=0.0)
    (incident,) = [i for i in incidents_of(spread) if i["scope"] == "node"]
    assert 0.0 <= incident["start_s"] < 0.5
