"""The `nodeport-harness` command: one sub-command per job, errors as one line + exit 2.

Each sub-command lives in the module that owns the concept and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them, so
``--help`` stays fast (no kubernetes, no locust import until a command runs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback

from harness import __version__
from harness.errors import HarnessError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "lab": ("harness.commands.lab", "run the embedded lab cluster on loopback (and its faults)"),
    "discover": ("harness.commands.discover", "show the nodes, NodePort and pods of a Service"),
    "expose": ("harness.commands.discover", "patch a Service to type NodePort or LoadBalancer"),
    "run": ("harness.commands.run", "run a headless load test and write a report folder"),
    "report": ("harness.commands.report", "re-render a run folder's reports from saved data"),
    "compare": ("harness.commands.report", "one page comparing several run folders"),
    "demo": ("harness.commands.demo", "the 'why you need a LoadBalancer' demo on the lab"),
    "capacity": ("harness.commands.capacity", "step-load capacity planning"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage of `run` alone is 30 lines)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nodeport-harness",
        description="Load-test a Kubernetes NodePort Service and see where the traffic goes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # Import only the module of the command being run: keeps --help and `lab` light.
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
        if name == wanted:
            mod = _load(module)
            if mod is not None:
                adder = getattr(mod, f"add_{name}_arguments", None) or mod.add_arguments
                adder(sp)
                sp.set_defaults(_runner=getattr(mod, f"run_{name}", None) or mod.run)
    return parser


def _load(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            return None  # command not built yet
        raise


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    runner = getattr(args, "_runner", None)
    if runner is None:
        if args.command:
            print(f"error: '{args.command}' is not available in this build", file=sys.stderr)
            return 2
        parser.print_help()
        return 2
    try:
        code = int(runner(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        # `... | head` stopped reading: what was asked was done; say nothing more, as a
        # process killed by SIGPIPE would (exit 128 + 13), and keep the exit flush quiet.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except HarnessError as err:
        if debug:  # the traceback, and still the exit code a script keys on
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
