"""Pod restarts (GitHub issue 14, item 3; kubernetes/kubernetes#126378): the lab's
``pod NAME restart`` fault (killed, and replaced as a Deployment's ReplicaSet does: a new
name on the same node, ready a moment later), and the finding that a pod which appeared
mid-run got far less than kube-proxy's rules give it because keep-alive connections never
move to it.

The finding's logic on synthetic runs fed through a real SpreadRecorder; the lab's restart
through its state, its API, the kube-proxy emulation and the CLI; and real short Locust runs
with ``--lab-fault AT:pod:NAME:restart``, keep-alive against a new connection per request.
Everything on loopback, bounded.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from lab_runs import harness_cmd, load, post, run

from harness.core.analysis import summarize
from harness.core.arrivals import pod_arrivals
from harness.core.faults import Fault, parse_spec
from harness.core.recorder import SpreadRecorder
from harness.core.runinfo import analysis_run
from harness.core.text import pct, secs
from harness.errors import LabError
from harness.lab.config import LabConfig
from harness.lab.state import ApiError, LabState

# -- the finding, on synthetic runs ----------------------------------------------------------

T0 = 1_700_000_000.25  # a run starts a quarter into a second
NODES = ["node-1", "node-2", "node-3"]
POD_NODES = {f"web-{i}": NODES[i % 3] for i in range(6)}
VICTIM, NEW = "web-2", "web-new"  # web-2 runs on node-3, as its replacement does
ADVICE = ("existing keep-alive connections never move; recycle connections (max requests "
          "or max age per connection) or balance per request")


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def simulate(mode: str, seconds: int = 12, rate: int = 20, restart_at: float = 4.0,
             join_at: float = 5.0, seed: int = 1, connections: int = 18) -> dict:
    """A closed-loop fleet: ``connections`` connections round-robin over the nodes, each
    sending ``rate`` requests a second. At ``restart_at`` VICTIM dies (its connections reset
    once and reconnect among the pods left); NEW joins at ``join_at``. Keep-alive: a pod is
    chosen when a connection opens; close: for every request, among the ready pods."""
    rng = random.Random(seed)
    clock = Clock()
    recorder = SpreadRecorder({**POD_NODES, NEW: "node-3"}, clock, nodes=NODES)
    pods = list(POD_NODES)
    pinned = [rng.choice(pods) for _ in range(connections)]
    for second in range(seconds):
        for c in range(connections):
            entry = NODES[c % 3]
            for i in range(rate):
                t = second + (i + 0.5 + c / connections) / rate
                clock.t = T0 + t
                ready = [p for p in pods if not (p == VICTIM and t >= restart_at)]
                if t >= join_at:
                    ready.append(NEW)
                if mode == "close":
                    recorder.record(entry, rng.choice(ready), rng.uniform(1.0, 3.0))
                    continue
                if pinned[c] == VICTIM and t >= restart_at:
                    recorder.record(entry, None, 0.5, "reset")  # the pod died under it
                    pinned[c] = rng.choice(ready)
                    continue
                recorder.record(entry, pinned[c], rng.uniform(1.0, 3.0))
    return recorder.to_dict()


def target(affinity: str = "None") -> dict:
    return {
        "nodes": [{"name": n, "address": f"127.0.0.{11 + i}", "targeted": True, "ready": True}
                  for i, n in enumerate(NODES)],
        "endpoints": [{"pod": p, "node": n, "ready": True} for p, n in POD_NODES.items()],
        "service": {"name": "web", "namespace": "default", "type": "NodePort",
                    "external_traffic_policy": "Cluster", "session_affinity": affinity,
                    "port": {"node_port": 30080}},
    }


def run_json(mode: str, restart_at: float = 4.0, join_at: float = 5.0,
             watched: bool = True) -> dict:
    """run.json as a run on a cluster writes it: the restart fault and, when the watch read
    the EndpointSlices, the changes it saw (a poll after each)."""
    changes = [
        {"t": restart_at + 0.4, "kind": "endpoint", "name": VICTIM, "change": "removed",
         "node": "node-3"},
        {"t": restart_at + 0.4, "kind": "endpoint", "name": NEW, "change": "added",
         "node": "node-3"},
        {"t": join_at + 0.4, "kind": "endpoint", "name": NEW, "change": "joined",
         "node": "node-3"},
    ] if watched else []
    return {"started": T0, "entry": "all", "connection": mode, "load_model": "closed-loop",
            "faults": [{"t": restart_at, "kind": "pod", "name": VICTIM, "action": "restart",
                        "source": "--lab-fault"}],
            "changes": changes}


def summary_of(mode: str, affinity: str = "None", watched: bool = True, **kwargs) -> dict:
    return summarize(simulate(mode, **{k: v for k, v in kwargs.items()
                                       if k in ("seconds", "rate", "seed", "connections")}),
                     target(affinity), analysis_run(run_json(mode, watched=watched)))


def arrival_findings(summary: dict) -> list[dict]:
    return [f for f in summary["findings"] if f["id"].startswith("pod_arrival:")]


def test_keepalive_new_pod_starves_and_the_finding_says_why():
    summary = summary_of("keepalive")
    (row,) = summary["pod_arrivals"]
    assert row["pod"] == NEW and row["node"] == "node-3" and row["source"] == "joined"
    # The seconds from the first whole one after it (T0 + 5.65 -> 6) to the last (12).
    assert row["joined_s"] == 5.4 and row["seconds"] == 7
    assert row["successes"] == 0 and row["share"] == 0.0
    # Six ready pods after the join, Cluster policy: 1/6 of what every entry point served.
    assert row["expected_share"] == pytest.approx(1 / 6)
    assert row["expected"] == pytest.approx(row["total"] / 6)
    (finding,) = arrival_findings(summary)
    assert finding["id"] == f"pod_arrival:{NEW}" and finding["severity"] == "warning"
    assert finding["text"] == (
        f"{NEW} joined at {secs(5.4)} and served 0 % of requests after, against "
        f"{pct(row['expected_share'])} expected: {ADVICE}.")
    assert finding["metric"]["expected_share"] == row["expected_share"]


def test_close_new_pod_gets_its_share_and_no_finding():
    summary = summary_of("close")
    (row,) = summary["pod_arrivals"]
    assert row["pod"] == NEW and row["successes"] > 0
    assert abs(row["share"] - 1 / 6) < 0.03, row
    assert arrival_findings(summary) == []


def test_without_the_watch_the_pod_appears_when_it_first_served():
    # No EndpointSlices read: a pod that was not among the discovered endpoints appeared
    # when it first served; with a new connection per request, that is right after it joined.
    summary = summary_of("close", watched=False)
    (row,) = summary["pod_arrivals"]
    assert row["source"] == "served" and row["joined_s"] == pytest.approx(4.75, abs=0.5)
    assert abs(row["share"] - 1 / 6) < 0.03 and arrival_findings(summary) == []


def test_session_affinity_is_named_instead_of_keepalive():
    summary = summary_of("keepalive", affinity="ClientIP")
    (finding,) = arrival_findings(summary)
    assert "sessionAffinity ClientIP keeps each client address on the pod it had" in (
        finding["text"])
    assert ADVICE not in finding["text"]


def test_too_little_traffic_after_it_joined_judges_nothing():
    # 1 request a second on 3 connections: the rules give the new pod ~3 requests after it
    # joined, too few to call a shortfall.
    summary = summary_of("keepalive", rate=1, connections=3)
    (row,) = summary["pod_arrivals"]
    assert row["expected"] < 20 and arrival_findings(summary) == []


def test_a_pod_serving_from_the_start_did_not_appear():
    # A stale target (a pod it does not list) is not an arrival when the pod served from the
    # first second on; nor is anything without endpoints, changes or a start.
    spread = simulate("close")
    listed = target()
    listed["endpoints"] = [e for e in listed["endpoints"] if e["pod"] != "web-0"]
    run = analysis_run(run_json("close", watched=False))
    assert [r["pod"] for r in pod_arrivals(spread, listed, T0, run["faults"])] == [NEW]
    assert pod_arrivals(spread, {}, T0) == []
    assert pod_arrivals(spread, target(), None) == []


# -- the vocabulary and the lab's state ------------------------------------------------------

def test_restart_is_in_the_vocabulary():
    assert parse_spec("2.5:pod:web-1:restart") == Fault("pod", "web-1", "restart", 2.5)


def test_state_restart_replaces_the_pod_like_a_replicaset():
    state = LabState(LabConfig(nodes=3, placement=(2, 2, 2), seed=4))
    pending = []
    state.later = lambda delay, callback: pending.append((delay, callback))
    victim = state.pods[2]
    names_before = {p.name for p in state.pods}
    version = state.resource_version
    result = state.apply_fault("pod", victim.name, "restart")
    new = next(p for p in state.pods if p.name == result["replacement"])
    assert result == {"kind": "pod", "name": victim.name, "action": "restart",
                      "node": victim.node, "replacement": new.name, "ready_after_s": 1.0}
    assert victim.name not in {p.name for p in state.pods} and len(state.pods) == 6
    # The ReplicaSet's name with a new suffix, the same node, a new pod address.
    assert new.name not in names_before
    assert new.name.rsplit("-", 1)[0] == victim.name.rsplit("-", 1)[0]
    assert new.node == victim.node and new.port == victim.port
    assert new.ip not in {p.ip for p in state.pods if p is not new} and new.ip != victim.ip
    assert not new.ready and state.resource_version > version
    assert state.ready_endpoints(state.service("default", "helloworld")) == [
        p for p in state.pods if p is not new]
    ((delay, callback),) = pending
    assert delay == 1.0
    callback()  # its readiness probe passed
    assert new.ready and new in state.ready_endpoints(state.service("default", "helloworld"))
    assert [e["reason"] for e in state.events] == ["Killing", "SuccessfulCreate", "Scheduled",
                                                   "Started"]
    (logged,) = state.faults_since()
    assert {k: logged[k] for k in result} == result
    with pytest.raises(ApiError) as err:
        state.apply_fault("pod", victim.name, "restart")  # gone: a 404, as for kill
    assert err.value.code == 404
    # Kill stays a kill: no replacement.
    state.apply_fault("pod", new.name, "kill")
    assert len(state.pods) == 5


def test_a_replacement_killed_before_it_is_ready_never_joins():
    state = LabState(LabConfig(nodes=1, pods=2, seed=2))
    pending = []
    state.later = lambda delay, callback: pending.append(callback)
    new = state.apply_fault("pod", state.pods[0].name, "restart")["replacement"]
    state.apply_fault("pod", new, "kill")
    pending[0]()
    assert [p.name for p in state.pods] == [state.pods[0].name] and len(state.pods) == 1


def test_restart_delay_is_a_lab_setting():
    assert LabConfig().restart_delay_s == 1.0
    assert LabConfig(restart_delay_s=0).restart_delay_s == 0
    for bad in (-1, 301, float("nan"), "1"):
        with pytest.raises(LabError, match="--restart-delay-s"):
            LabConfig(restart_delay_s=bad)
    # Without a scheduler (or with no delay) the replacement is ready at once.
    state = LabState(LabConfig(nodes=1, pods=1, seed=2))
    new = state.apply_fault("pod", state.pods[0].name, "restart")["replacement"]
    assert [(p.name, p.ready) for p in state.pods] == [(new, True)]


# -- the real lab ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(make_module_lab):
    """This module's own lab: its tests restart pods."""
    return make_module_lab(nodes=3, placement=[2, 2, 2], restart_delay_s=1.0)


def slice_endpoints(lab) -> dict[str, bool]:
    """Pod -> ready, as the Service's EndpointSlices show them."""
    slices = lab.control("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                                "?labelSelector=kubernetes.io%2Fservice-name%3Dhelloworld")
    return {e["targetRef"]["name"]: e["conditions"]["ready"]
            for item in slices["items"] for e in item["endpoints"]}


def pods_answering(lab, requests: int) -> dict[str, int]:
    """Pod -> replies, over ``requests`` new connections spread over the nodes."""
    seen: dict[str, int] = {}
    for i in range(requests):
        node = lab.nodes[i % 3]
        reply = post(node["external_ip"], lab.node_port)
        seen[reply["host"]] = seen.get(reply["host"], 0) + 1
    return seen


def test_restart_on_the_lab_api_endpointslices_and_proxy(lab):
    before = {p["name"]: p for p in lab.current_pods()}
    victim = next(p for p in before.values() if p["node"] == "node-2")
    since = time.time()
    result = lab.restart_pod(victim["name"])
    new = result["replacement"]
    assert result["name"] == victim["name"] and result["node"] == "node-2"
    # At once: the old pod is gone from the API and the slices; the new one is there, on
    # the same node at a new address, not ready, and kube-proxy sends it nothing yet.
    now = {p["name"]: p for p in lab.current_pods()}
    assert victim["name"] not in now and new not in before
    assert now[new]["node"] == "node-2" and now[new]["ip"] not in {
        p["ip"] for p in before.values()}
    assert now[new]["ready"] is False
    assert slice_endpoints(lab)[new] is False and victim["name"] not in slice_endpoints(lab)
    assert new not in pods_answering(lab, 12)
    # About restart_delay_s later it is ready, listed ready, and new connections reach it.
    deadline = time.monotonic() + 10
    while not slice_endpoints(lab)[new] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slice_endpoints(lab)[new] is True
    assert time.time() - since >= 0.9
    seen = pods_answering(lab, 120)  # (5/6)^120: never by bad luck
    assert seen.get(new, 0) > 0 and victim["name"] not in seen
    assert lab.stats()[new] >= seen[new]
    # The fault log records it, and the events tell the ReplicaSet's story.
    (logged,) = [f for f in lab.fault_log(since) if f["name"] == victim["name"]]
    assert logged["action"] == "restart" and logged["replacement"] == new
    events = lab.control("GET", "/api/v1/namespaces/default/events")["items"]
    reasons = [(e["involvedObject"]["name"], e["reason"]) for e in events]
    assert (victim["name"], "Killing") in reasons and (new, "Started") in reasons
    assert any(e["reason"] == "SuccessfulCreate" and e["involvedObject"]["kind"] == "ReplicaSet"
               and new in e["message"] for e in events)


def test_restart_from_the_lab_command(lab):
    victim = next(p for p in lab.current_pods() if p["node"] == "node-1")["name"]
    proc = run(harness_cmd("lab", "fault", "pod", victim, "restart", "--state-dir",
                           str(lab.state_dir)), timeout=30)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["action"] == "restart" and answer["name"] == victim
    assert answer["replacement"] in {p["name"] for p in lab.current_pods()}
    bad = run(harness_cmd("lab", "fault", "pod", victim, "reboot", "--state-dir",
                          str(lab.state_dir)), timeout=30)
    assert bad.returncode == 2 and "kill or restart" in bad.stderr


def restart_run(lab, tmp_path, mode: str) -> tuple[dict, dict, str]:
    """A real 5 s run over all nodes, 6 users, restarting a node-3 pod at 1.5 s: (its
    summary, the lab's fault-log entry, the replacement)."""
    victim = next(p for p in lab.current_pods() if p["node"] == "node-3")["name"]
    since = time.time()
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", mode, "-u", "6", "-t", "5s", "--entry",
                           "all", "--connection", mode, "--timeout", "1", "--plotlyjs", "cdn",
                           "--lab-fault", f"1.5:pod:{victim}:restart"), timeout=90)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # resets at the kill may fail some
    assert "Traceback" not in proc.stderr
    (logged,) = [f for f in lab.fault_log(since) if f["name"] == victim]
    info = load(tmp_path / mode, "run.json")
    assert [(f["name"], f["action"]) for f in info["faults"]] == [(victim, "restart")]
    assert any(c["name"] == logged["replacement"] and c["change"] == "joined"
               for c in info["changes"]), info["changes"]
    return load(tmp_path / mode, "summary.json"), logged, logged["replacement"]


def test_restart_mid_run_keepalive_starves_the_new_pod(lab, tmp_path):
    summary, logged, new = restart_run(lab, tmp_path, "keepalive")
    (row,) = [r for r in summary["pod_arrivals"] if r["pod"] == new]
    assert row["source"] == "joined" and row["node"] == "node-3"
    assert row["expected_share"] == pytest.approx(1 / 6)
    assert row["share"] < row["expected_share"] / 4, row
    (finding,) = [f for f in summary["findings"] if f["id"] == f"pod_arrival:{new}"]
    assert finding["text"].startswith(f"{new} joined at {secs(row['joined_s'])} and served "
                                      f"{pct(row['share'])} of requests after, against "
                                      f"{pct(row['expected_share'])} expected")
    assert ADVICE in finding["text"]
    assert finding["text"] in (tmp_path / "keepalive" / "index.html").read_text().replace(
        "&#39;", "'")


def test_restart_mid_run_close_gives_the_new_pod_its_share(lab, tmp_path):
    summary, logged, new = restart_run(lab, tmp_path, "close")
    (row,) = [r for r in summary["pod_arrivals"] if r["pod"] == new]
    assert row["successes"] > 0 and row["share"] > row["expected_share"] / 2, row
    assert not [f for f in summary["findings"] if f["id"].startswith("pod_arrival:")]
