"""`nodeport-harness run`: a headless Locust run with the harness, as users would start it.

It validates the options, then runs `python -m locust -f harness/plugin/locustfile.py --headless`
in a child process (Locust patches its process with gevent; this one stays plain) and
passes its exit code through: 0 ok, 1 failures, a breached threshold or a lost worker, 2 usage
error (or reports that could not be written where asked), 130 interrupted (Ctrl-C), 143
terminated (SIGTERM); an interrupted run still writes its reports, marked partial.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.core.text import parse_duration
from harness.errors import HarnessError
from harness.options import (
    add_harness_options,
    check_numbers,
    check_request,
    check_run_id,
    check_run_time,
    check_users,
    run_folder,
    to_argv,
)

LOCUSTFILE = Path(__file__).parent.parent / "plugin" / "locustfile.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_harness_options(parser)
    load = parser.add_argument_group("load")
    load.add_argument("-u", "--users", type=int, default=10, help="users (default %(default)s)")
    load.add_argument("-r", "--spawn-rate", type=float, default=None,
                      help="users started per second (default: all at once)")
    load.add_argument("-t", "--run-time", default="30s",
                      help="duration, e.g. 30s, 2m, 1h30m (default %(default)s)")
    load.add_argument("--processes", type=int, default=None,
                      help="Locust worker processes on this machine (-1: one per core)")
    load.add_argument("--stop-timeout", type=float, default=None,
                      help="seconds users get to finish their request at the end "
                           "(default: --timeout + 2)")
    load.add_argument("-f", "--locustfile", default=None,
                      help="your own locustfile with a NodePortUser subclass")
    load.add_argument("--loglevel", default="WARNING", help="Locust log level")


def validate(args) -> None:
    check_numbers(args)
    if args.users < 1:
        raise HarnessError(f"-u/--users must be at least 1, got {args.users}")
    if args.spawn_rate is not None and args.spawn_rate <= 0:
        raise HarnessError(f"-r/--spawn-rate must be positive, got {args.spawn_rate}")
    seconds = parse_duration(args.run_time)
    if seconds <= 0:
        raise HarnessError(f"-t/--run-time must be positive, got {args.run_time}")
    check_run_time(seconds)
    check_request(args)
    if args.processes is not None and args.processes == 0 or (
        args.processes is not None and args.processes < -1
    ):
        raise HarnessError("--processes must be a positive number or -1")
    check_users(args.users, args.processes)
    if args.timeout <= 0:
        raise HarnessError(f"--timeout must be positive, got {args.timeout}")
    if args.stop_timeout is not None and args.stop_timeout < 0:
        raise HarnessError(f"--stop-timeout must not be negative, got {args.stop_timeout}")
    if args.run_id:
        check_run_id(args.run_id)
    if args.locustfile and not Path(args.locustfile).is_file():
        raise HarnessError(f"--locustfile {args.locustfile} does not exist")
    from harness.report.files import check_writable

    check_writable(args.report_dir)


def locust_argv(args) -> list[str]:
    # --only-summary: no periodic stats table (the --progress line instead); Locust's final
    # tables only with --locust-stats (the plugin quiets them otherwise: outputs.py).
    argv = [
        sys.executable, "-m", "locust", "-f", args.locustfile or str(LOCUSTFILE),
        "--headless", "--only-summary", "--loglevel", args.loglevel,
        "-u", str(args.users), "-r", str(args.spawn_rate or args.users),
        "-t", args.run_time,
    ]
    if args.processes:
        argv += ["--processes", str(args.processes)]
    if args.stop_timeout is not None:
        # Locust reads whole seconds only ("1.0" is refused): round up, never cut short.
        argv += ["--stop-timeout", str(math.ceil(args.stop_timeout))]
    return argv + to_argv(args)


def run(args, quiet: bool = False) -> int:
    """Run Locust; `quiet` keeps its output in RUN_DIR/locust.log (the demo's many runs)."""
    validate(args)
    if not args.run_id:
        args.run_id = time.strftime("run-%Y%m%d-%H%M%S")
    run_dir = run_folder(args.report_dir, args.run_id)
    args.progress = not quiet and (args.progress or sys.stderr.isatty())
    argv = locust_argv(args)
    out = None
    if quiet:
        run_dir.mkdir(parents=True, exist_ok=True)
        out = open(run_dir / "locust.log", "w")  # noqa: SIM115 - closed below
    typed = os.environ.get("NODEPORT_HARNESS_COMMAND") or shlex.join(
        ["nodeport-harness", *sys.argv[1:]])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NODEPORT_HARNESS_COMMAND": typed}
    # Its own process group, so a Ctrl-C reaches Locust exactly once, from us: a second
    # SIGINT straight from the terminal would break into the writing of its reports. Its
    # stdin is not the terminal (a background group touching it would be stopped).
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                             stdout=out, stderr=subprocess.STDOUT if out else None)

    def forward(signum, _frame):
        # SIGHUP (terminal closed) becomes SIGTERM: Locust writes its reports and exits.
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    interrupted = False
    try:
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                # Locust stops its users, writes reports marked partial and exits 130.
                interrupted = True
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if out is not None:
            out.close()
    if quiet:
        if interrupted:
            raise KeyboardInterrupt  # a caller running many (the demo) stops too
        if code not in (0, 1):
            tail = (run_dir / "locust.log").read_text(errors="replace").strip().splitlines()
            print(f"run {args.run_id} exited {code}: {tail[-1] if tail else ''}",
                  file=sys.stderr)
        return code
    # The run printed its `report:` line last (plugin/outputs.py); when it could not build
    # the reports it said why, and the folder with the run's data is still worth naming.
    if not (run_dir / "index.html").exists() and (run_dir / "spread.json").exists():
        print(f"run folder: {run_dir}", file=sys.stderr)
    return code
