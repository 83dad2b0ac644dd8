"""What a run leaves behind: run.json, target.json and spread.json (atomically), the reports
built from them, a temporary folder when the report folder went away, the terminal summary."""

from __future__ import annotations

import contextlib
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
        with contextlib.suppress(HarnessError):
            build_report(fallback, plotlyjs=options.plotlyjs)
        print_summary(run, spread)
        raise ReportError(f"{err}; the run's data and reports were saved in {fallback} "
                          "instead (move them where you want them)") from None
    run_dir = run.run_dir
    run.outputs = {"run_dir": str(run_dir)}
    thresholds = build_report(run_dir, plotlyjs=options.plotlyjs).get("thresholds") or []
    if thresholds:
        # With thresholds the verdict is theirs alone: a few failures within
        # --max-fail-ratio pass; any breach fails the run.
        breached = [t for t in thresholds if not t.get("passed")]
        env.process_exit_code = 1 if breached else 0
        for t in thresholds:
            mark = "ok      " if t.get("passed") else "BREACHED"
            print(f"threshold {mark} {t['text']}", file=sys.stderr)
    if not spread["totals"]["requests"]:
        # Nothing measured is never a pass (issue 18): say so in one line, exit 1.
        env.process_exit_code = max(env.process_exit_code or 0, 1)
        print("error: nothing was recorded: no request completed during the run "
              "(see --timeout, --max-body and the run's duration)", file=sys.stderr)
    print_summary(run, spread)


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
        "options": safe,
        **run.extra,
    }


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


def print_summary(run: HarnessRun, spread: dict) -> None:
    from harness.report.terminal import node_pod_table

    print("", file=sys.stderr)
    print(node_pod_table(spread, run.target), file=sys.stderr)
    print(f"reports: {run.run_dir}", file=sys.stderr)

