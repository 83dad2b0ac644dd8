"""harness.options: the run options, defined once for `nodeport-harness run` (argparse) and for
Locust's own parser (``LOCUST_*`` variables, locust.conf keys, web-UI parameters).

What Locust's parser reads is checked in a subprocess: importing Locust patches the process
with gevent, and this one stays plain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands import capacity as capacity_command
from harness.commands import report as report_command
from harness.commands import run as run_command
from harness.core.runinfo import CONNECTION_MODES, ENTRY_STRATEGIES, PLOTLYJS_MODES
from harness.options import (
    CAPACITY_OPTIONS,
    add_capacity_options,
    add_harness_options,
    harness_dests,
    to_argv,
)
from harness.targets import LAB_SHAPE, lab_flag

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ["1:node:node-1:down", "2.5:node:node-1:up"]
# Hidden options the harness sets for itself (never typed by a user, never in the web UI).
INTERNAL = {"nodeport_target", "capacity_lab"}
# Kept out of Locust's web-UI form: files and schedules that belong to the command line.
# Fixed at start-up: where files go, and the target (discovery runs once, at start-up).
TARGET = {"lab", "kubeconfig", "context", "namespace", "service", "port_name",
          "port", "address_type", "inventory", "include_control_plane", "include_not_ready",
          *(lab_flag(name)[2:].replace("-", "_") for name in LAB_SHAPE)}
NOT_IN_WEB_UI = {"raw", "lab_fault", "progress", "locust_stats", "report_dir", *TARGET,
                 *INTERNAL}


def harness_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_harness_options(parser)
    return parser


def capacity_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_capacity_options(parser)
    return parser


def visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def other_value(action: argparse.Action) -> tuple[list[str], str]:
    """A value unlike the default: (command-line words, LOCUST_* variable text)."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction):
        return [flag], "true"
    if isinstance(action, argparse._AppendAction):
        return [w for fault in FAULTS for w in (flag, fault)], "[" + ", ".join(FAULTS) + "]"
    if action.choices:
        text = next(str(c) for c in reversed(list(action.choices)) if c != action.default)
    elif action.type is float:
        text = "0.25"
    elif action.type is int or getattr(action.type, "__name__", "") == "positive_count":
        text = "7"
    elif action.dest == "capacity_lab":
        text = '{"true_capacity_rps": 150.0}'
    else:
        text = f"value-of-{action.dest}"
    return [flag, text], text


def test_every_harness_option_round_trips_through_to_argv():
    parser = harness_parser()
    actions = harness_dests()
    assert len(actions) >= 25 and "nodeport_target" not in {a.dest for a in actions}
    words = [w for action in actions for w in other_value(action)[0]]
    typed = parser.parse_args(words)
    for action in actions:  # each option really is away from its default
        assert getattr(typed, action.dest) != action.default, action.dest
    argv = to_argv(typed)
    assert parser.parse_args(argv) == typed
    for action in actions:  # flag=value: a value may start with "-" (--lab-fault=-1:...)
        flag = action.option_strings[-1]
        assert any(w == flag or w.startswith(flag + "=") for w in argv), action.dest


def test_defaults_give_no_arguments_and_the_hidden_target_never_travels():
    parser = harness_parser()
    args = parser.parse_args([])
    assert to_argv(args) == []
    args.nodeport_target = '{"nodes": []}'  # set by the master for its workers only
    args.entry = "sticky"
    assert to_argv(args) == ["--entry=sticky"]


def test_the_run_command_hands_its_options_to_locust():
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    args = parser.parse_args(["-u", "3", "-t", "2s", "--entry", "single", "--node", "node-2",
                              "--max-p95-ms", "50", "--require-all-pods",
                              "--lab-fault", FAULTS[0]])
    argv = run_command.locust_argv(args)
    assert argv[:3] == [sys.executable, "-m", "locust"]
    tail = argv[argv.index("-t") + 2:]
    assert tail == ["--entry=single", "--node=node-2", f"--lab-fault={FAULTS[0]}",
                    "--max-p95-ms=50.0", "--require-all-pods"]


def test_the_vocabulary_comes_from_runinfo():
    by_dest = {a.dest: a for a in harness_parser()._actions}
    assert tuple(by_dest["entry"].choices) == ENTRY_STRATEGIES
    assert tuple(by_dest["connection"].choices) == CONNECTION_MODES
    assert tuple(by_dest["plotlyjs"].choices) == PLOTLYJS_MODES
    assert by_dest["entry"].default in ENTRY_STRATEGIES
    assert by_dest["connection"].default in CONNECTION_MODES
    for add in (report_command.add_report_arguments, report_command.add_compare_arguments):
        parser = argparse.ArgumentParser()
        add(parser)
        plotlyjs = next(a for a in parser._actions if a.dest == "plotlyjs")
        assert tuple(plotlyjs.choices) == PLOTLYJS_MODES


def test_capacity_options_are_all_there():
    dests = [a.dest for a in visible(capacity_parser())]
    assert sorted(dests) == sorted(CAPACITY_OPTIONS)
    # The capacity command has the run options and the step options; new connections.
    parser = argparse.ArgumentParser()
    capacity_command.add_arguments(parser)
    known = {a.dest for a in parser._actions}
    assert set(CAPACITY_OPTIONS) <= known
    assert {a.dest for a in harness_dests()} <= known
    assert parser.parse_args(["--step-users", "2", "--slo-p95-ms", "50"]).connection == "close"
    shown = parser.format_help()
    assert "--step-users" in shown and "--slo-p95-ms" in shown
    assert "--capacity-lab" not in shown and "--nodeport-target" not in shown


# -- Locust's parser ---------------------------------------------------------------------------

LOCUST_PARSER = """
import importlib.util, json, sys
from locust.argument_parser import get_parser
spec = importlib.util.spec_from_file_location("capacity_locustfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # registers the run and the capacity options
parser = get_parser()
args = parser.parse_args([])
print(json.dumps({
    "actions": [{"dest": a.dest, "env_var": getattr(a, "env_var", None),
                 "web_ui": getattr(a, "include_in_web_ui", None),
                 "choices": list(a.choices) if a.choices else None}
                for a in parser._actions],
    "values": {k: v for k, v in vars(args).items()
               if isinstance(v, (str, int, float, bool, list, type(None)))},
}))
"""


def locust_parse(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    proc = subprocess.run(
        [sys.executable, "-c", LOCUST_PARSER, str(capacity_command.LOCUSTFILE)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**clean, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def locust_defaults() -> dict:
    return locust_parse({})


def test_each_option_is_read_from_its_locust_variable():
    """Set every LOCUST_* variable (named by the documented rule: --pod-from <-
    LOCUST_POD_FROM) to a value unlike the default: Locust's parser reads each one into the
    option, typed as on the command line."""
    actions = harness_dests() + visible(capacity_parser())
    env, words = {}, []
    for action in actions:
        option_words, text = other_value(action)
        env["LOCUST_" + action.option_strings[-1][2:].replace("-", "_").upper()] = text
        words += option_words
    for name in ("LOCUST_POD_FROM", "LOCUST_ENTRY", "LOCUST_NAMESPACE", "LOCUST_MAX_P95_MS",
                 "LOCUST_REQUIRE_ALL_PODS", "LOCUST_LAB_FAULT", "LOCUST_STEP_USERS",
                 "LOCUST_SLO_P95_MS"):
        assert name in env  # the names the README and the ConfigMap use
    parser = harness_parser()
    add_capacity_options(parser)
    expected = vars(parser.parse_args(words))
    values = locust_parse(env)["values"]
    for action in actions:
        assert values[action.dest] == expected[action.dest], (action.dest, env)


def test_the_capacity_command_names_the_variables_locust_reads(locust_defaults):
    # `nodeport-harness capacity` passes its step options as LOCUST_<DEST> variables.
    env_of = {a["dest"]: a["env_var"] for a in locust_defaults["actions"]}
    for dest in CAPACITY_OPTIONS:
        assert env_of[dest] == "LOCUST_" + dest.upper(), dest


def test_our_variables_are_ours_alone_and_web_ui_flags_are_set(locust_defaults):
    actions = locust_defaults["actions"]
    ours = {a.dest for a in harness_dests()} | set(CAPACITY_OPTIONS) | {"nodeport_target"}
    env_vars = [a["env_var"] for a in actions if a["env_var"]]
    assert len(env_vars) == len(set(env_vars)), "two options read the same variable"
    for action in actions:
        if action["dest"] in ours:
            assert action["env_var"], action["dest"]
            assert action["web_ui"] is (action["dest"] not in NOT_IN_WEB_UI), action
    by_dest = {a["dest"]: a for a in actions}
    assert tuple(by_dest["entry"]["choices"]) == ENTRY_STRATEGIES
    assert tuple(by_dest["connection"]["choices"]) == CONNECTION_MODES
    assert tuple(by_dest["plotlyjs"]["choices"]) == PLOTLYJS_MODES
    # With nothing set, Locust's defaults are the command's.
    defaults = vars(harness_parser().parse_args([]))
    for dest, value in defaults.items():
        assert locust_defaults["values"][dest] == value, dest
