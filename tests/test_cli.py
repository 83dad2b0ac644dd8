"""The `nodeport-harness` command (harness.cli): its sub-commands are found by name, errors
are one line and exit 2, `--debug` shows the traceback, and `--help` stays light.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness import __version__, cli
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("locust", "kubernetes", "gevent")


def python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)


def sub_parser(name: str):
    parser = cli.build_parser([name])
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices[name]


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_resolves_to_a_module_with_add_and_run(name):
    module_name, help_text = cli.COMMANDS[name]
    assert module_name.startswith("harness.commands.") and help_text
    module = importlib.import_module(module_name)
    add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    run = getattr(module, f"run_{name}", None) or module.run
    assert callable(add) and callable(run)
    # The parser wires exactly these: the command's options, and its runner.
    sub = sub_parser(name)
    assert sub.get_default("_runner") is run
    assert len(sub._actions) > 2  # -h and --debug, plus the command's own
    assert help_text in " ".join(cli.build_parser([]).format_help().split())


def test_only_the_command_being_run_is_wired():
    sub = sub_parser("report")
    others = next(a for a in cli.build_parser(["report"])._actions if a.dest == "command")
    assert sub.get_default("_runner") is not None
    assert others.choices["run"].get_default("_runner") is None  # its module not imported


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--entry", "bogus"], "argument --entry: invalid choice: 'bogus'"),
    (["run", "-u", "x"], "argument -u/--users: invalid int value: 'x'"),
    (["report"], "the following arguments are required: RUN_DIR"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["discover", "--address-type", "Public"], "--address-type"),
])
def test_a_usage_error_is_one_line_and_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert out == "" and err.count("\n") == 1
    assert err.startswith("error: ") and fragment in err
    assert "--help)" in err  # where to read more


def test_a_usage_error_through_the_real_command():
    proc = harness("run", "--connection", "sometimes")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: argument --connection: invalid choice")


def test_no_command_prints_the_commands_and_exit_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_version():
    proc = harness("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"nodeport-harness {__version__}"


def test_harness_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "no-such-run")
    proc = harness("report", missing)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {missing} does not exist")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    for argv in (["--debug", "report", missing], ["report", missing, "--debug"]):
        proc = harness(*argv)
        assert proc.returncode == 2, argv  # the traceback, and still the exit code
        assert "Traceback" in proc.stderr and "ReportError" in proc.stderr, argv
        assert f"{missing} does not exist" in proc.stderr


@pytest.fixture
def fake_command(monkeypatch):
    """A command `fake` whose run does what the test puts in `behaviour`."""
    module = types.ModuleType("fake_harness_command")
    behaviour: list = []

    def add_arguments(parser):
        parser.add_argument("--n", type=int, default=0)

    def run(args):
        return behaviour[0](args)

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fake", (module.__name__, "a command for the test"))
    return behaviour


def test_main_passes_the_exit_code_through(fake_command):
    fake_command.append(lambda args: args.n)
    assert cli.main(["fake", "--n", "3"]) == 3
    assert cli.main(["fake"]) == 0


def test_main_turns_harness_errors_into_one_line(fake_command, capsys):
    class Unreachable(HarnessError):
        exit_code = 4

    def fail(_args):
        raise Unreachable("the API\n  went away;\tcheck the VPN")

    fake_command.append(fail)
    assert cli.main(["fake"]) == 4
    assert capsys.readouterr().err == "error: the API went away; check the VPN\n"
    for argv in (["--debug", "fake"], ["fake", "--debug"]):  # the traceback, the same code
        assert cli.main(argv) == 4
        err = capsys.readouterr().err
        assert "Traceback" in err and err.endswith("error: the API went away; check the VPN\n")


def test_main_says_interrupted_on_ctrl_c(fake_command, capsys):
    def interrupt(_args):
        raise KeyboardInterrupt

    fake_command.append(interrupt)
    assert cli.main(["fake"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_other_exceptions_are_not_hidden(fake_command):
    def bug(_args):
        raise ZeroDivisionError("a bug, not a usage error")

    fake_command.append(bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["fake"])


IMPORTS_AFTER_HELP = """
import json, sys
from harness.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("command", ["", *cli.COMMANDS])
def test_help_imports_neither_locust_nor_kubernetes(command):
    proc = python(IMPORTS_AFTER_HELP, *([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: nodeport-harness" in proc.stdout.split("\n[")[0]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "harness" in loaded  # the check sees the modules it should
    assert not set(HEAVY) & set(loaded), sorted(set(HEAVY) & set(loaded))
