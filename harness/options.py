"""The harness's run options, defined once for Locust's parser and for `nodeport-harness run`.

Importing this module imports neither Locust nor kubernetes. On Locust's parser the options
become web-UI custom parameters, `locust.conf` keys and `LOCUST_*` environment variables.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from harness.core.runinfo import CONNECTION_MODES, ENTRY_STRATEGIES, PLOTLYJS_MODES
from harness.errors import HarnessError
from harness.targets import add_target_arguments

# What one Locust process can hold (each user is a greenlet with its own connections and
# buffers): beyond it memory grows and the process stops keeping time. More users: more
# processes (--processes N) or machines (--master / --worker).
MAX_USERS_PER_PROCESS = 5_000
# A run id names a folder inside --report-dir: a name, never a path.
RUN_ID_MAX = 100
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def add_harness_options(parser, *, locust: bool = False) -> None:
    """Add every harness option to `parser` (argparse or Locust's configargparse parser)."""

    add = _adder(parser, locust)

    # Discovery runs once, at start-up: the target options (paths among them: --kubeconfig,
    # --inventory) are not web-UI parameters, as a form value could not change the target.
    add_target_arguments(parser, add=lambda *names, **kwargs: add(*names, ui=False, **kwargs))
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
        help="time limit of each whole request (connect, send, reply), seconds "
             "(default %(default)s)")

    def positive_count(text: str) -> int:
        """A whole number >= 1, with an optional k/M/G (x1024) or KiB/MiB/GiB suffix."""
        value = str(text).strip()
        units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
                 "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
        scale = next((n for u, n in units.items() if value.lower().endswith(u)), 1)
        digits = value.rstrip("BbIiKkMmGg") if scale > 1 else value
        if not digits.isdigit() or int(digits) * scale < 1:
            raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
        return int(digits) * scale

    add("--max-body", type=positive_count, default=1024 * 1024,
        help="largest reply body read (after decoding), bytes; k/M suffixes (default 1MiB); "
             "a larger reply fails as too_large")
    add("--max-pods", type=positive_count, default=1000,
        help="distinct pod names recorded; beyond it replies count as pod (other) "
             "(default %(default)s)")
    add("--report-dir", default="reports", ui=False,
        help="folder for run folders (default %(default)s)")
    add("--run-id", default="", help="name of the run folder inside --report-dir: letters, "
        f"digits, '.', '_', '-', at most {RUN_ID_MAX} (default: run-<time>)")
    add("--raw", default="", ui=False, help="also write every request to this .csv.gz file")
    add("--lab-fault", action="append", default=[], ui=False,
        help="lab only, repeatable: AT:node:NAME:down|up or AT:pod:NAME:kill|restart (AT: "
             "seconds after the start)")
    add("--plotlyjs", default="inline", choices=PLOTLYJS_MODES,
        help="plotly.js in the HTML report: inline (offline), directory, cdn")
    add("--progress", action="store_true", default=False, ui=False,
        help="print the run's progress: elapsed of total, req/s and p95 now, failures, each "
             "entry node's share; one line rewritten on a terminal, a line every 10 s in a "
             "pipe (`run`: on by default on a terminal)")
    # Locust's tables are printed by its process, not by a form's run: not in the web UI.
    add("--locust-stats", action="store_true", default=False, ui=False,
        help="also print Locust's own request and percentile tables at the end")
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


def web_ui_dests() -> list[str]:
    """The options add_harness_options and add_capacity_options show in Locust's web UI."""
    shown: list[str] = []

    class _Collect:
        def add_argument(self, *names, **kwargs):
            if kwargs.get("include_in_web_ui", True):
                shown.append(kwargs.get("dest") or names[-1].lstrip("-").replace("-", "_"))

        def add_argument_group(self, *_args, **_kwargs):
            return self

    add_harness_options(_Collect(), locust=True)
    add_capacity_options(_Collect(), locust=True)
    return shown


# Locust's web form: the options it shows, in this order, each with its label (Locust would
# make one of the option's name and raw help: "Max P9 5Ms (threshold: p95 latency, ms)").
# Options not listed here come after these, labelled from their flag.
WEB_FORM_LABELS = {
    "entry": "Entry: all (round-robin), random, single, sticky (a node per user) or lb",
    "connection": "Connection: keepalive (reuse) or close (a new TCP connection per request)",
    "node": "Node for Entry single (empty: the first node)",
    "path": "Request path",
    "method": "HTTP method",
    "body": "Request body ({user} becomes the user id)",
    "pod_from": "Pod from the reply: auto, json:FIELD, header:NAME, body or regex:PATTERN",
    "timeout": "Timeout of each request (seconds)",
    "run_id": "Run id: the run's folder name (empty: run-<time>)",
    "max_fail_ratio": "Threshold: largest failed share (0-1)",
    "max_p95_ms": "Threshold: largest p95 latency (ms)",
    "max_p99_ms": "Threshold: largest p99 latency (ms)",
    "min_fairness": "Threshold: smallest fairness over pods (Jain's index, 0-1)",
    "max_node_share": "Threshold: largest share entering one node (0-1)",
    "require_all_pods": "Threshold: every pod serves at least one request",
    "max_body": "Largest reply body read (bytes; k or M suffix)",
    "max_pods": "Distinct pod names recorded (more count as \"(other)\")",
    "plotlyjs": "Plotly.js in the HTML report: inline (offline), directory or cdn",
    # (the capacity locustfile's)
    "step_users": "Users added per step (closed loop)",
    "start_users": "Users in the first step (empty: the step)",
    "max_users": "Users in the last step",
    "step_rps": "Requests/s added per step (open loop)",
    "start_rps": "Requests/s of the first step (empty: the step)",
    "max_rps": "Requests/s of the last step",
    "step_time": "Length of each step (e.g. 10s, 1m)",
    "settle_s": "Seconds left out at each step's start",
    "pacing_s": "Seconds between one user's requests (open loop)",
    "slo_p95_ms": "SLO: p95 latency (ms)",
    "slo_fail_ratio": "SLO: largest failed share (0-1)",
    "target_rps": "Requests/s to plan pods for",
    "headroom": "Share of each pod's capacity kept spare (0-1)",
}


def option_types() -> dict[str, tuple[object, object]]:
    """dest -> (type function, default) of every harness and capacity option with a type."""
    parser = argparse.ArgumentParser(add_help=False)
    add_harness_options(parser)
    add_capacity_options(parser)
    return {a.dest: (a.type, a.default) for a in parser._actions if a.type is not None}


def retype(options, values: dict[str, str] | None = None) -> None:
    """Give typed options their type: Locust's web UI stores a form's value as text when the
    option's default is None (a threshold). `values` (dest -> text) are set first; a value
    its type refuses raises HarnessError."""
    types = option_types()
    for dest, text in (values or {}).items():
        setattr(options, dest, text)
    for dest, (kind, default) in types.items():
        value = getattr(options, dest, None)
        if isinstance(value, str) and kind is not str:
            if value.strip() == "":  # an empty form field: not given
                setattr(options, dest, default)
                continue
            try:
                setattr(options, dest, kind(value))  # type: ignore[operator]
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise HarnessError(f"--{dest.replace('_', '-')} {value!r}: {err}") from None


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
            # flag=value: a value starting with "-" (--lab-fault=-1:...) is not a flag
            argv += [f"{flag}={item}" for item in value]
        else:
            argv.append(f"{flag}={value}")
    return argv


# -- checks shared by the commands and the Locust edge -----------------------------------------

def check_run_id(run_id: str) -> str:
    """A run id is a folder name inside --report-dir: letters, digits, '.', '_' and '-',
    starting with a letter or digit (so never '.', '..' or a path), at most RUN_ID_MAX."""
    text = str(run_id)
    if len(text) > RUN_ID_MAX:
        raise HarnessError(f"--run-id is {len(text):,} characters long; use at most "
                           f"{RUN_ID_MAX}")
    if not _RUN_ID.fullmatch(text):
        shown = text.encode("unicode_escape").decode("ascii")
        raise HarnessError(f"--run-id {shown!r} is not a folder name: use letters, digits, "
                           "'.', '_' and '-', starting with a letter or digit")
    return text


def run_folder(report_dir: str | os.PathLike, run_id: str) -> Path:
    """The run's folder: `run_id` (checked) inside `report_dir`, and nowhere else."""
    base = Path(report_dir).resolve()
    folder = (base / check_run_id(run_id)).resolve()
    if folder.parent != base:  # a symlink named like the run cannot lead elsewhere either
        raise HarnessError(f"--run-id {run_id!r}: {folder} is not inside --report-dir {base}")
    return Path(report_dir) / run_id


def check_numbers(options) -> None:
    """Every number option must be finite: NaN passes every comparison check (a --timeout of
    nan never times out, a threshold of nan never breaches) and infinity never ends."""
    for name, value in sorted(vars(options).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise HarnessError(f"--{name.strip('_').replace('_', '-')} must be a finite "
                               f"number, got {value}")


MAX_RUN_TIME_S = 30 * 86400  # a bounded run: -t beyond a month is a typo, not a plan
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token


def check_request(options) -> None:
    """The request every user sends, and where raw rows go: checked before any user starts
    (Locust would otherwise fail once per request, with a traceback each time)."""
    method = str(getattr(options, "method", "POST") or "")
    if not _METHOD.fullmatch(method):
        raise HarnessError(f"--method {method!r} is not an HTTP method; use e.g. GET or POST")
    path = str(getattr(options, "path", "/") or "/")
    if path.startswith("//") or any(c.isspace() or not c.isprintable() for c in path):
        raise HarnessError(f"--path {path!r} is not a request path; use e.g. /api/messages")
    raw = getattr(options, "raw", "") or ""
    if raw:
        folder = Path(raw).expanduser().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise HarnessError(f"--raw {raw}: folder {folder} does not exist or is not "
                               "writable; create it or choose another file")


def check_run_time(seconds: float | int | None, flag: str = "-t/--run-time") -> None:
    if seconds is not None and seconds > MAX_RUN_TIME_S:
        raise HarnessError(f"{flag} is {seconds:g} s, longer than 30 days; give a shorter "
                           "duration (e.g. 2h)")


def users_limit(processes: int | None) -> int:
    """Users the given Locust processes can hold (None or 1: this process alone; -1: one
    per core)."""
    count = (os.cpu_count() or 1) if processes == -1 else max(1, processes or 1)
    return MAX_USERS_PER_PROCESS * count


def check_users(users: int | None, processes: int | None, flag: str = "-u/--users") -> None:
    """More users than the processes can hold: one line saying how to spread them."""
    limit = users_limit(processes)
    if users is not None and users > limit:
        count = limit // MAX_USERS_PER_PROCESS
        where = "one Locust process" if count == 1 else f"{count} Locust processes"
        raise HarnessError(
            f"{flag} {users:,} is more than {where} can hold (at most "
            f"{MAX_USERS_PER_PROCESS:,} users per process): spread them over processes with "
            "--processes N, or over machines with Locust's --master/--worker")
