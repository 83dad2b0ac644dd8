"""What a run leaves behind: run.json, target.json and spread.json (atomically), the reports
built from them, a temporary folder when the report folder went away, the terminal summary."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from harness import __version__
from harness.core.runinfo import CLOSED_LOOP, RUN_SCHEMA, RunInfo
from harness.errors import HarnessError, ReportError
from harness.plugin.context import HarnessRun


def write_outputs(run: HarnessRun) -> None:
    # Imported here: a Locust worker never writes reports (no jinja2/plotly on its start-up).
    from harness.report.build import build_report

    env, options = run.environment, run.environment.parsed_options
    spread = run.recorder.to_dict()
    info = run_info(run)
    try:
        _save_data(run.run_dir, run, spread, info)
    except ReportError as err:
        # The folder went away or filled up during the run: the data must not be lost.
        try:
            fallback = Path(tempfile.mkdtemp(prefix=f"nodeport-harness-{run.run_id}-"))
            _save_data(fallback, run, spread, info)
        except (OSError, ReportError):
            raise ReportError(f"{err}; no temporary folder could be written either: "
                              "the run's data is lost") from None
        run.run_dir = fallback
        run.outputs = {"run_dir": str(fallback)}
        built: dict = {}
        with contextlib.suppress(HarnessError):
            built = build_report(fallback, plotlyjs=options.plotlyjs)
        print_summary(run, spread, built.get("summary"), built.get("thresholds"))
        raise ReportError(f"{err}; the run's data and reports were saved in {fallback} "
                          "instead (move them where you want them)") from None
    run_dir = run.run_dir
    run.outputs = {"run_dir": str(run_dir)}
    built = build_report(run_dir, plotlyjs=options.plotlyjs)
    thresholds = built.get("thresholds") or []
    if thresholds:
        # With thresholds the verdict is theirs alone: a few failures within
        # --max-fail-ratio pass; any breach fails the run. (They are printed as ✓/✗ lines
        # after the tables: print_summary.)
        breached = [t for t in thresholds if not t.get("passed")]
        env.process_exit_code = 1 if breached else 0
    if not spread["totals"]["requests"]:
        # Nothing measured is never a pass (issue 18): say so in one line, exit 1.
        env.process_exit_code = max(env.process_exit_code or 0, 1)
        print("error: nothing was recorded: no request completed during the run "
              "(see --timeout, --max-body and the run's duration)", file=sys.stderr)
    print_summary(run, spread, built.get("summary"), thresholds)


def _save_data(run_dir: Path, run: HarnessRun, spread: dict, info: dict) -> None:
    """The run's data (everything a report is rebuilt from), each file atomically."""
    from harness.report.files import write_json_atomic

    write_json_atomic(run_dir / "target.json", run.target.to_dict())
    write_json_atomic(run_dir / "spread.json", spread, compact=True)
    write_json_atomic(run_dir / "run.json", info)


def run_info(run: HarnessRun) -> RunInfo:
    options = run.environment.parsed_options
    safe = {}
    for key, value in sorted(vars(options).items()):
        if key in ("nodeport_target", "web_login", "web_auth", "tls_key", "tls_cert"):
            continue
        if isinstance(value, str | int | float | bool | type(None) | list):
            safe[key] = value
    return {
        "schema": RUN_SCHEMA,
        "run_id": run.run_id,
        "harness_version": __version__,
        "locust_version": _locust_version(),
        "python": platform.python_version(),
        "started": run.started,
        "stopped": run.stopped,
        "duration_s": round((run.stopped or time.time()) - (run.started or time.time()), 3),
        "role": run.role,
        "entry": options.entry,
        "connection": options.connection,
        "users": getattr(options, "num_users", None),
        "spawn_rate": getattr(options, "spawn_rate", None),
        "stop_timeout_s": run.environment.stop_timeout,
        "in_flight": (
            "users stopped after their request in flight completed (graceful stop, "
            f"--stop-timeout {run.environment.stop_timeout} s); requests still running at that "
            "limit were not recorded"
        ),
        "load_model": CLOSED_LOOP,
        "faults": run.faults,
        "changes": run.changes,
        "watch": run.watch,
        "workers": run.workers,
        "partial": run.partial,
        "command": reproduce_command(),
        "cwd": os.getcwd(),  # where the command's relative paths start
        "kubeconfig": kubeconfig_path(options),
        "options": safe,
        **run.extra,
    }


def kubeconfig_path(options) -> str | None:
    """The kubeconfig file(s) discovery read, absolute (None for the lab, an inventory or
    in-cluster config): --kubeconfig, else $KUBECONFIG, else ~/.kube/config. A path only."""
    if getattr(options, "lab", False) or getattr(options, "inventory", None):
        return None
    given = getattr(options, "kubeconfig", None) or os.environ.get("KUBECONFIG")
    if given:
        return os.pathsep.join(os.path.abspath(os.path.expanduser(one))
                               for one in str(given).split(os.pathsep) if one)
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


def reproduce_command() -> str:
    """What the user typed (`nodeport-harness run` passes it down), secrets redacted."""
    import shlex

    from harness.core.text import redact_command

    command = os.environ.get("NODEPORT_HARNESS_COMMAND")
    if not command:
        argv = [a for a in sys.argv if not a.startswith("--nodeport-target")]
        argv[0] = "locust" if argv and argv[0].endswith(("locust", "__main__.py")) else argv[0]
        command = shlex.join(argv)
    return redact_command(command)


def _locust_version() -> str:
    import locust

    return getattr(locust, "__version__", "?")


def print_summary(run: HarnessRun, spread: dict, summary: dict | None = None,
                  thresholds: list | None = None) -> None:
    """The end-of-run terminal view (report/terminal.py): node x pod matrix, findings,
    thresholds, one ``report:`` line.

    A headless run shows it once Locust has shut down (its `quit` event, `show_summary`):
    after Locust's own shutdown lines and tables (--locust-stats), so the report line ends
    the output. The web UI's runs show it at once, one per run."""
    from harness.report.terminal import print_end_of_run

    run_dir = Path(run.run_dir) if run.run_dir is not None else None
    page = run_dir / "index.html" if run_dir is not None else None
    line = (f"report: {page}" if page is not None and page.exists()
            else f"run folder: {run_dir}")
    target = run.target

    def show() -> None:
        print_end_of_run(sys.stderr, spread, target, summary, thresholds or [], line)

    if getattr(run.environment.parsed_options, "headless", False):
        run.terminal = show
        atexit.register(show_summary, run)  # (Locust's shutdown failed before `quit`)
    else:
        show()


def show_summary(run: HarnessRun) -> None:
    """The end-of-run view print_summary kept for Locust's `quit` event, once."""
    show, run.terminal = run.terminal, None
    if show is not None:
        show()


def quiet_locust_tables(environment) -> None:
    """Locust's own stats tables (its final 170-column tables, and the periodic ones of
    `locust --headless` without --only-summary) only with --locust-stats (or Locust's
    --print-stats): the harness's view replaces them.

    Locust prints them through its `locust.stats_logger` logger at INFO (stats.print_stats,
    print_percentile_stats and print_error_report, called by main.py's shutdown): raising
    that one logger's level is the one switch that needs no patch of Locust and keeps every
    other log line. (--json/--json-file also skip the final tables but print or write JSON;
    --skip-log-setup would drop Locust's logging set-up altogether.)"""
    options = environment.parsed_options
    if options is None or getattr(options, "locust_stats", False) or getattr(
            options, "print_stats", False):
        return
    logging.getLogger("locust.stats_logger").setLevel(logging.WARNING)

