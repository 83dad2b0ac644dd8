"""The lab's one configuration: defaults, validation, JSON for the lab process, flags; and
its faults, checked against the one fault vocabulary (no lab process started here)."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.commands.lab import COMMAND_SETTINGS, USAGE_ACTIONS, add_lab_arguments
from harness.core.faults import ACTIONS, BODY_FORMAT, KINDS, USAGE
from harness.errors import LabError
from harness.lab.apiserver import STANDALONE_SETTINGS
from harness.lab.cluster import LabCluster
from harness.lab.config import LabConfig, add_arguments, from_args
from harness.lab.state import ApiError, LabState


def lab_command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_lab_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_lab_command_defaults_are_the_config_defaults():
    config = from_args(lab_command())
    # Only the block differs: the foreground lab keeps the documented addresses (block 0).
    assert config == LabConfig(block=0)


def test_flags_become_settings():
    args = lab_command("--nodes", "2", "--placement", "2,1", "--no-external-ip", "--block",
                       "auto", "--service-type", "LoadBalancer", "--restricted-token",
                       "--pod-service-ms", "5", "--seed", "4", "--state-dir", "/tmp/lab-x")
    config = from_args(args, state_dir=args.state_dir)
    assert (config.nodes, config.placement, config.pods) == (2, (2, 1), 3)
    assert config.external_ip is False and config.block is None
    assert config.service_type == "LoadBalancer" and config.restricted_token
    assert (config.pod_service_ms, config.seed, config.state_dir) == (5.0, 4, "/tmp/lab-x")


def test_json_round_trip_for_the_lab_process():
    config = LabConfig(nodes=3, placement=[3, 2, 1], policy="Local", block=7, state_dir="/x",
                       data_plane="pipe")
    assert LabConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert LabConfig.from_dict({}) == LabConfig()
    with pytest.raises(LabError, match="unknown lab setting.*nodez"):
        LabConfig.from_dict({"nodez": 3})


@pytest.mark.parametrize("settings, flag", [
    ({"nodes": 0}, "--nodes"), ({"pods": 251}, "--pods"),
    ({"nodes": 2, "placement": [1]}, "--placement"),
    ({"placement": [200, 50, 1]}, "--placement"),
    ({"policy": "Global"}, "--policy"), ({"service_type": "ExternalName"}, "--service-type"),
    ({"node_port": 80}, "--node-port"), ({"block": 251}, "--block"),
    ({"hop_ms": -1}, "--hop-ms"), ({"lb_check_s": 0}, "--lb-check-s"),
    ({"extra_api_nodes": 10001}, "--extra-api-nodes"), ({"nodes": "3"}, "--nodes"),
    ({"pod_service_ms": float("nan")}, "--pod-service-ms"), ({"namespace": "Not_A_Label"},
                                                            "--namespace"),
])
def test_bad_settings_are_one_line_lab_errors_naming_the_flag(settings, flag):
    with pytest.raises(LabError) as err:
        LabConfig(**settings)
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)
    with pytest.raises(LabError):
        LabCluster(**settings)  # the keyword API checks the same way, before starting


@pytest.mark.parametrize("argv, text", [(["--placement", "a,b"], "comma-separated"),
                                        (["--block", "x"], "or 'auto'")])
def test_flags_that_cannot_be_read_say_so(argv, text):
    with pytest.raises(LabError, match=text):
        from_args(lab_command(*argv))


def test_lab_cluster_takes_a_config_and_keywords_on_top(tmp_path):
    base = LabConfig(nodes=2, pods=2, seed=3)
    lab = LabCluster(base, seed=4, state_dir=tmp_path)
    assert lab.config == base.replace(seed=4, state_dir=str(tmp_path))
    assert lab.state_dir == tmp_path and lab.block is None and not lab.running
    assert LabCluster().config == LabConfig()
    with pytest.raises(TypeError):
        LabCluster(nodez=3)


def test_flags_are_offered_only_for_known_settings():
    with pytest.raises(ValueError, match="no flag"):
        add_arguments(argparse.ArgumentParser(), ["state_dir"])
    parser = argparse.ArgumentParser()
    add_arguments(parser, STANDALONE_SETTINGS)
    assert from_args(parser.parse_args(["--namespace", "shop"])).namespace == "shop"
    assert "data_plane" not in COMMAND_SETTINGS  # the `lab` command's flags stay as they were


def test_the_lab_speaks_the_one_fault_vocabulary():
    assert tuple(a for a in USAGE_ACTIONS if a.startswith("fault ")) == tuple(
        f"fault {u}" for u in USAGE)
    assert all(f'"{kind}"' in BODY_FORMAT for kind in KINDS)
    assert all(f'"{a}"' in BODY_FORMAT for actions in ACTIONS.values() for a in actions)


def test_faults_on_the_state_refuse_with_api_statuses():
    state = LabState(LabConfig(nodes=2, pods=2, extra_api_nodes=1, seed=1))
    pod = state.pods[0].name
    for (kind, name, action), code in [(("node", "node-1", "explode"), 422),
                                       (("volcano", "node-1", "down"), 422),
                                       (("node", "node-9", "down"), 404),
                                       (("pod", "nope", "kill"), 404),
                                       (("node", "node-x00001", "down"), 422)]:
        with pytest.raises(ApiError) as err:
            state.apply_fault(kind, name, action)
        assert err.value.code == code, (kind, name, action)
    assert state.apply_fault("node", "node-2", "down") == {
        "kind": "node", "name": "node-2", "action": "down", "ready": False}
    assert not state.node("node-2").up
    assert state.apply_fault("node", "node-2", "up")["ready"] and state.node("node-2").up
    assert state.apply_fault("pod", pod, "kill")["name"] == pod
    assert [e["reason"] for e in state.events] == ["NodeNotReady", "NodeReady", "Killing"]
