"""The harness's run options, defined once for Locust's parser and for `nodeport-harness run`.

Importing this module imports neither Locust nor kubernetes. On Locust's parser the options
become web-UI custom parameters, `locust.conf` keys and `LOCUST_*` environment variables.
"""

from __future__ import annotations

import argparse

from harness.core.runinfo import CONNECTION_MODES, ENTRY_STRATEGIES, PLOTLYJS_MODES
from harness.targets import add_target_arguments


def add_harness_options(parser, *, locust: bool = False) -> None:
    """Add every harness option to `parser` (argparse or Locust's configargparse parser)."""

    add = _adder(parser, locust)

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
        help="lab only, repeatable: AT:node:NAME:down|up or AT:pod:NAME:kill|restart (AT: "
             "seconds after the start)")
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


# dest -> environment variable Locust reads it from (set by the command for its child).
CAPACITY_OPTIONS = (
    "step_users", "start_users", "max_users", "step_rps", "start_rps", "max_rps", "step_time",
    "settle_s", "pacing_s", "slo_p95_ms", "slo_fail_ratio", "target_rps", "headroom",
    "capacity_lab",
)


def add_capacity_options(parser, *, locust: bool = False) -> None:
    """The step-load and SLO options, on argparse or on Locust's parser (env LOCUST_*)."""

    add = _adder(parser, locust)

    add("--step-users", type=int, default=None,
        help="closed loop: users added per step (give this or --step-rps)")
    add("--start-users", type=int, default=None, help="users in the first step "
        "(default: --step-users)")
    add("--max-users", type=int, default=None, help="users in the last step")
    add("--step-rps", type=float, default=None,
        help="open loop: requests/s added per step, offered by paced users")
    add("--start-rps", type=float, default=None,
        help="rate of the first step (default: --step-rps)")
    add("--max-rps", type=float, default=None, help="rate of the last step")
    add("--step-time", default="10s", help="how long each step lasts, e.g. 10s, 1m "
        "(default %(default)s)")
    add("--settle-s", type=float, default=1.0,
        help="seconds at each step's start left out of its figures (default %(default)s)")
    add("--pacing-s", type=float, default=None,
        help="open loop: seconds between one user's requests (default: 10 x the p95 SLO, "
             "0.2-2 s)")
    add("--slo-p95-ms", type=float, default=None, help="SLO: p95 latency in ms (required)")
    add("--slo-fail-ratio", type=float, default=0.01,
        help="SLO: largest failed share of requests (default %(default)s)")
    add("--target-rps", type=float, default=None,
        help="requests/s to plan pods for (at the SLO, with --headroom spare)")
    add("--headroom", type=float, default=0.3,
        help="share of each pod's measured capacity kept spare (default %(default)s)")
    # The lab's ground truth, when the command started it (JSON; not for users).
    add("--capacity-lab", default="", ui=False, help=argparse.SUPPRESS)


def _adder(parser, locust: bool):
    """``add(*names, ui=True, **kwargs)`` for argparse, or for Locust's parser with the
    web-UI flag and the LOCUST_* variable Locust reads the option from."""

    def add(*names, ui: bool = True, **kwargs):
        if locust:
            kwargs["include_in_web_ui"] = ui
            # Locust maps only explicit env_var names: --pod-from <- LOCUST_POD_FROM.
            kwargs["env_var"] = "LOCUST_" + names[-1].lstrip("-").replace("-", "_").upper()
        parser.add_argument(*names, **kwargs)

    return add


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
