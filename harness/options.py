"""The harness's run options, defined once for Locust's parser and for `nodeport-harness run`.

Importing this module imports neither Locust nor kubernetes. On Locust's parser the options
become web-UI custom parameters, `locust.conf` keys and `LOCUST_*` environment variables.
"""

from __future__ import annotations

import argparse

from harness.commands.discover import add_target_arguments

ENTRY_STRATEGIES = ("all", "random", "single", "sticky", "lb")
CONNECTION_MODES = ("keepalive", "close")
PLOTLYJS_MODES = ("inline", "directory", "cdn")


def add_harness_options(parser, *, locust: bool = False) -> None:
    """Add every harness option to `parser` (argparse or Locust's configargparse parser)."""

    def add(*names, ui: bool = True, **kwargs):
        if locust:
            kwargs["include_in_web_ui"] = ui
            # Locust maps only explicit env_var names: --pod-from <- LOCUST_POD_FROM.
            kwargs["env_var"] = "LOCUST_" + names[-1].lstrip("-").replace("-", "_").upper()
        parser.add_argument(*names, **kwargs)

    add_target_arguments(parser, add=add)
    add("--entry", default="all", choices=ENTRY_STRATEGIES,
        help="which node each request enters through: all (round-robin), random, single, "
             "sticky (one node per user) or lb (default: %(default)s)")
    add("--node", default="", help="with --entry single: the node to use (default: the first)")
    add("--connection", default="keepalive", choices=CONNECTION_MODES,
        help="keepalive (reuse connections) or close (new TCP connection per request)")
    add("--pod-from", default="auto",
        help="how to read the serving pod: auto, json:FIELD, header:NAME, body, regex:PATTERN")
    add("--path", default="/api/messages", help="request path (default %(default)s)")
    add("--method", default="POST", help="HTTP method (default %(default)s)")
    add("--body", default='{"sender": "{user}"}',
        help="request body; {user} becomes the user id (default %(default)s)")
    add("--timeout", type=float, default=5.0,
        help="connect and read timeout, seconds (default %(default)s)")
    add("--report-dir", default="reports", help="folder for run folders (default %(default)s)")
    add("--run-id", default="", help="name of the run folder (default: run-<time>)")
    add("--raw", default="", ui=False, help="also write every request to this .csv.gz file")
    add("--lab-fault", action="append", default=[], ui=False,
        help="lab only, repeatable: AT:node:NAME:down|up or AT:pod:NAME:kill (AT: seconds "
             "after the start)")
    add("--plotlyjs", default="inline", choices=PLOTLYJS_MODES,
        help="plotly.js in the HTML report: inline (offline), directory, cdn")
    add("--progress", action="store_true", default=False, ui=False,
        help="print a one-line progress every second")
    add("--max-fail-ratio", type=float, default=None, help="threshold: failed share (0-1)")
    add("--max-p95-ms", type=float, default=None, help="threshold: p95 latency, ms")
    add("--max-p99-ms", type=float, default=None, help="threshold: p99 latency, ms")
    add("--min-fairness", type=float, default=None,
        help="threshold: Jain's fairness index over pods (0-1)")
    add("--require-all-pods", action="store_true", default=False,
        help="threshold: every pod must serve at least one request")
    add("--max-node-share", type=float, default=None,
        help="threshold: largest share of requests entering one node (0-1)")
    # Set by the master for its workers; it travels in Locust's spawn message.
    add("--nodeport-target", default="", ui=False, help=argparse.SUPPRESS)


def harness_dests() -> list[argparse.Action]:
    """The actions add_harness_options defines (to turn parsed args back into argv)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_harness_options(parser)
    return [a for a in parser._actions if a.dest != "nodeport_target"]


def to_argv(args) -> list[str]:
    """Our options from a parsed `run` namespace, as Locust command-line arguments."""
    argv: list[str] = []
    for action in harness_dests():
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv
