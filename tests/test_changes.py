"""harness.core.changes: two hand-made snapshots of a cluster -> the change records run.json's
``changes`` holds and the markers the timeline shows. Pure: no lab, no Locust."""

from __future__ import annotations

import pytest

from harness.core.changes import (
    CHANGES,
    KINDS,
    Change,
    Snapshot,
    diff,
    merged,
    pod_nodes,
    snapshot,
)
from harness.core.faults import parse_marker
from harness.core.model import Endpoint, Node
from harness.core.runinfo import analysis_run

BASE = Snapshot(
    nodes={"node-1": True, "node-2": True, "node-3": False},
    endpoints={"web-a": (True, "node-1"), "web-b": (True, "node-2"), "web-c": (False, "node-3")},
)


def changed(before: Snapshot | None, after: Snapshot) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.change) for c in diff(before, after)]


def test_nothing_changed_and_the_first_poll_are_no_changes():
    assert diff(BASE, BASE) == []
    assert diff(None, BASE) == []  # the first poll is the baseline
    assert diff(BASE, Snapshot(nodes=dict(BASE.nodes), endpoints=dict(BASE.endpoints))) == []


def test_node_ready_not_ready_added_removed():
    after = Snapshot(nodes={"node-1": True, "node-2": False, "node-3": True, "node-4": True},
                     endpoints=BASE.endpoints)
    assert changed(BASE, after) == [
        ("node", "node-2", "not_ready"), ("node", "node-3", "ready"), ("node", "node-4", "added")]
    gone = Snapshot(nodes={"node-2": True, "node-3": False}, endpoints=BASE.endpoints)
    assert changed(BASE, gone) == [("node", "node-1", "removed")]


def test_endpoint_left_joined_added_removed_with_their_nodes():
    after = Snapshot(nodes=BASE.nodes, endpoints={
        "web-a": (False, "node-1"),  # ready -> not ready: left
        "web-c": (True, "node-3"),  # not ready -> ready: joined
        "web-d": (True, "node-2"),  # new and ready: joined
        "web-e": (False, "node-1"),  # new, not ready: added
    })  # web-b gone: removed
    records = diff(BASE, after)
    assert [(c.name, c.change, c.node) for c in records] == [
        ("web-a", "left", "node-1"), ("web-b", "removed", "node-2"),
        ("web-c", "joined", "node-3"), ("web-d", "joined", "node-2"),
        ("web-e", "added", "node-1")]
    assert {c.kind for c in records} == {"endpoint"}


def test_nodes_come_before_endpoints_and_every_change_is_in_the_vocabulary():
    after = Snapshot(nodes={"node-1": False, "node-2": True, "node-3": False},
                     endpoints={"web-b": (True, "node-2"), "web-c": (False, "node-3")})
    records = diff(BASE, after)
    assert [c.kind for c in records] == ["node", "endpoint"]
    assert all(c.kind in KINDS and c.change in CHANGES for c in records)


def test_a_part_not_read_changes_nothing_and_the_last_known_stands():
    no_nodes = Snapshot(nodes=None, endpoints={"web-a": (True, "node-1")})
    # Nodes unread (403, API away): no node "removed"; endpoints still compared.
    assert changed(BASE, no_nodes) == [("endpoint", "web-b", "removed"),
                                       ("endpoint", "web-c", "removed")]
    known = merged(BASE, no_nodes)
    assert known.nodes == BASE.nodes and known.endpoints == no_nodes.endpoints
    # The API comes back: a node that went NotReady meanwhile is a change then.
    back = Snapshot(nodes={"node-1": True, "node-2": False, "node-3": False},
                    endpoints=no_nodes.endpoints)
    assert changed(known, back) == [("node", "node-2", "not_ready")]
    assert diff(Snapshot(), BASE) == [] and diff(BASE, Snapshot()) == []
    assert merged(None, no_nodes) is no_nodes


def test_snapshot_from_discovered_nodes_and_endpoints():
    nodes = [Node("node-1", {}, "127.0.0.11", "ExternalIP", ready=True),
             Node("node-2", {}, "127.0.0.12", "ExternalIP", ready=False)]
    endpoints = [Endpoint("web-a", "node-1", "127.0.1.1"),
                 Endpoint("web-b", None, "127.0.1.2", ready=False)]
    snap = snapshot(nodes, endpoints)
    assert snap.nodes == {"node-1": True, "node-2": False}
    assert snap.endpoints == {"web-a": (True, "node-1"), "web-b": (False, None)}
    assert snapshot(None, endpoints).nodes is None and snapshot(nodes).endpoints is None
    assert pod_nodes(snap) == {"web-a": "node-1", "web-b": None}
    assert pod_nodes(Snapshot()) == {}


@pytest.mark.parametrize(("change", "marker"), [
    (Change("endpoint", "web-a", "left", "node-1"), "pod web-a left the endpoints (not ready)"),
    (Change("endpoint", "web-d", "joined", "node-2"), "pod web-d joined the endpoints on node-2"),
    (Change("endpoint", "web-d", "joined"), "pod web-d joined the endpoints"),
    (Change("endpoint", "web-e", "added", "node-1"),
     "pod web-e added to the endpoints on node-1 (not ready)"),
    (Change("endpoint", "web-b", "removed", "node-2"), "pod web-b removed from the endpoints"),
    (Change("node", "node-2", "not_ready"), "node-2 NotReady"),
    (Change("node", "node-2", "ready"), "node-2 Ready again"),
    (Change("node", "node-4", "added"), "node node-4 added"),
    (Change("node", "node-1", "removed"), "node node-1 removed"),
])
def test_markers_read_as_changes_never_as_faults(change, marker):
    assert change.marker == marker
    # The analysis reads "<name> down|up|kill" markers as faults: a change must not be one.
    assert parse_marker(marker, 1.0, {"node-1", "node-2", "node-4"}) is None


def test_run_json_form_and_the_analysis_reads_it():
    record = Change("endpoint", "web-a", "left", "node-1").to_dict(12.3456, 1_700_000_012.3456)
    assert record == {"t": 12.346, "time": 1_700_000_012.3456, "kind": "endpoint",
                      "name": "web-a", "change": "left", "node": "node-1",
                      "text": "pod web-a left the endpoints (not ready) at 12.3 s"}
    node = Change("node", "node-2", "not_ready").to_dict(40.1, 1_700_000_040.1)
    assert "node" not in node and node["text"] == "node-2 NotReady at 40.1 s"
    run = {"started": 1_700_000_000.0, "changes": [record, node]}
    assert analysis_run(run)["changes"] == [record, node]
    assert analysis_run({})["changes"] == []
