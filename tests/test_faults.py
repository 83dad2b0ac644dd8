"""The fault vocabulary (harness.core.faults): how a fault is written on the command line,
in run.json and the lab's control API, in a timeline marker and in a sentence.

Faults injected into real runs: test_faults_mid_run.py.
"""

from __future__ import annotations

import pytest

from harness.core.faults import (
    ACTIONS,
    KINDS,
    SPEC_FORMAT,
    Fault,
    check_fault,
    parse_marker,
    parse_spec,
    parse_specs,
    verb,
)
from harness.errors import HarnessError


@pytest.mark.parametrize(("spec", "fault"), [
    ("12:node:node-2:down", Fault("node", "node-2", "down", 12.0)),
    ("1.5s:node:node-2:up", Fault("node", "node-2", "up", 1.5)),
    (" 3 :pod:helloworld-abc12:kill", Fault("pod", "helloworld-abc12", "kill", 3.0)),
    ("4:pod:helloworld-abc12:restart", Fault("pod", "helloworld-abc12", "restart", 4.0)),
    ("0:node:n:down", Fault("node", "n", "down", 0.0)),
])
def test_parse_spec_reads_every_valid_form(spec, fault):
    assert parse_spec(spec) == fault


@pytest.mark.parametrize("spec", [
    "nan:node:node-1:down", "inf:node:node-1:down", "-inf:node:node-1:down",
    "1e400:node:node-1:down", "-1:node:node-1:down", "-0.5s:node:node-1:down",
    "soon:node:node-1:down", ":node:node-1:down",
    "node:node-1:down", "1:node:node-1", "1:node:node-1:down:extra", "",
])
def test_parse_spec_refuses_a_malformed_or_non_finite_time(spec):
    with pytest.raises(HarnessError) as err:
        parse_spec(spec)
    assert str(err.value) == f"--lab-fault {spec!r}: expected {SPEC_FORMAT}"


@pytest.mark.parametrize(("spec", "why"), [
    ("1:svc:web:down", "fault kind must be one of node, pod, not 'svc'"),
    ("1:node:node-1:kill", "node fault action must be down or up, not 'kill'"),
    ("1:pod:web-1:down", "pod fault action must be kill or restart, not 'down'"),
    ("1:node:node-1:restart", "node fault action must be down or up, not 'restart'"),
    ("1:node:node-1:DOWN", "node fault action must be down or up, not 'DOWN'"),
    ("1:node::down", "fault: '' is not a node name"),
    ("1:node:a b:down", "fault: 'a b' is not a node name"),
    ("1:pod:web\x07:kill", "is not a pod name"),
    ("1:::", "fault kind must be one of node, pod, not ''"),
])
def test_parse_spec_names_what_is_wrong_in_one_line(spec, why):
    with pytest.raises(HarnessError) as err:
        parse_spec(spec)
    message = str(err.value)
    assert message.startswith(f"--lab-fault {spec!r}: ") and why in message
    assert "\n" not in message


def test_parse_specs_keeps_the_order_and_accepts_none():
    assert parse_specs(None) == parse_specs([]) == []
    faults = parse_specs(["3:node:node-2:up", "1:node:node-2:down"])
    assert [(f.at, f.action) for f in faults] == [(3.0, "up"), (1.0, "down")]
    with pytest.raises(HarnessError, match="'bad'"):
        parse_specs(["1:node:node-2:down", "bad"])


def test_check_fault_accepts_the_vocabulary_and_nothing_else():
    for kind in KINDS:
        for action in ACTIONS[kind]:
            assert check_fault(kind, "x-1", action) == Fault(kind, "x-1", action, None)
    assert check_fault("node", "node-1", "down", at=2.5).at == 2.5
    with pytest.raises(HarnessError, match="fault kind must be one of node, pod, not 'Node'"):
        check_fault("Node", "node-1", "down")
    with pytest.raises(HarnessError,
                       match="pod fault action must be kill or restart, not .up."):
        check_fault("pod", "web-1", "up")
    with pytest.raises(HarnessError, match="is not a node name"):
        check_fault("node", "node\n1", "down")


def test_to_dict_is_run_json_form_and_the_control_api_body_without_a_time():
    assert Fault("node", "node-2", "down", 1.5).to_dict() == {
        "t": 1.5, "kind": "node", "name": "node-2", "action": "down"}
    assert list(Fault("node", "node-2", "down", 1.5).to_dict()) == ["t", "kind", "name", "action"]
    assert Fault("pod", "web-1", "kill").to_dict() == {
        "kind": "pod", "name": "web-1", "action": "kill"}
    assert Fault("node", "node-2", "down", 0.0).to_dict()["t"] == 0.0  # 0 is a time too


def test_marker_round_trips_through_parse_marker():
    for fault in (Fault("node", "node-2", "down", 4.0), Fault("node", "node-2", "up", 9.0),
                  Fault("pod", "helloworld-abc12", "kill", 6.0),
                  Fault("pod", "helloworld-abc12", "restart", 7.0)):
        assert fault.marker == f"{fault.name} {fault.action}"
        nodes = {"node-1", "node-2"}
        assert parse_marker(fault.marker, fault.at, nodes) == fault


def test_parse_marker_with_a_kind():
    assert parse_marker("pod: web-1 killed", 2.0, {"node-1"}) == Fault("pod", "web-1", "killed",
                                                                       2.0)
    assert parse_marker("node/node-9 down", 1.0, {"node-1"}) == Fault("node", "node-9", "down",
                                                                      1.0)
    # Kind and action in any case; the name as written.
    assert parse_marker("  POD web-1 DELETE ", 3.0, set()) == Fault("pod", "web-1", "delete", 3.0)
    assert parse_marker("pod web-1 restarted", 4.0, set()) == Fault("pod", "web-1", "restarted",
                                                                    4.0)


def test_parse_marker_without_a_kind_guesses_from_the_node_names():
    nodes = {"node-1", "node-2"}
    assert parse_marker("node-2 down", 1.0, nodes).kind == "node"
    assert parse_marker("web-1 killed", 1.0, nodes).kind == "pod"  # not a node name
    assert parse_marker("web-1 down", 1.0, set()).kind == "node"  # no node known: a node


@pytest.mark.parametrize("label", ["deploy started", "node-2 went down", "node-2", "",
                                   "node-2 down now"])
def test_parse_marker_leaves_other_markers_alone(label):
    assert parse_marker(label, 1.0, {"node-2"}) is None


def test_undo_and_verbs():
    assert Fault("node", "n", "up").undoes and not Fault("node", "n", "down").undoes
    assert not Fault("pod", "p", "kill").undoes
    assert verb("down") == "went down"
    assert verb("kill") == verb("killed") == "was killed"
    assert verb("delete") == "was deleted"
    assert verb("restart") == verb("restarted") == "was restarted"
    assert verb("up") is None  # an undo is not an event of its own
    assert verb("exploded") is None
    # Every action the lab injects reads as a sentence, except the undo.
    for kind in KINDS:
        for action in ACTIONS[kind]:
            assert (verb(action) is None) == Fault(kind, "x", action).undoes


def test_a_pod_is_killed_or_restarted():
    # restart: killed and replaced (a new name, the same node), as a ReplicaSet does.
    assert ACTIONS == {"node": ("down", "up"), "pod": ("kill", "restart")}
    assert "AT:pod:NAME:kill|restart" in SPEC_FORMAT
    assert not Fault("pod", "p", "restart").undoes
