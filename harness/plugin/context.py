"""The run context: one `HarnessRun` per Locust environment carries everything of the run.

The users, the listeners, the web tab and the capacity shape read it; none of them reads
another's module for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust.runners import MasterRunner, WorkerRunner

from harness.core.extract import make_extractor
from harness.core.faults import parse_specs
from harness.core.model import Target
from harness.core.recorder import SpreadRecorder
from harness.errors import HarnessError
from harness.options import (
    check_numbers,
    check_request,
    check_run_id,
    check_run_time,
    check_users,
)


@dataclass
class HarnessRun:
    environment: Any
    target: Target | None = None
    recorder: SpreadRecorder | None = None
    extractor: Any = None
    lab: Any = None
    lab_context: Any = None
    inject_fault: Any = None  # --lab-fault's injector: Fault -> the lab's answer
    lab_info: dict[str, Any] | None = None  # lab.json of the lab the target is (else None)
    run_id: str | None = None
    run_dir: Path | None = None
    started: float | None = None
    stopped: float | None = None
    partial: str | None = None
    faults: list[dict] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)  # what the cluster reported changing
    watch: dict[str, Any] | None = None  # how the changes were watched (run.json "watch")
    watcher: Any = None  # the greenlet polling the cluster
    ticker: Any = None  # the greenlet writing the --progress line
    terminal: Any = None  # a headless run's end-of-run view, shown when Locust has quit
    workers: dict[str, dict] = field(default_factory=dict)  # client id -> what it sent
    finals: set[str] = field(default_factory=set)
    outputs: dict[str, str] = field(default_factory=dict)
    stopping: float | None = None  # when the master began collecting the workers' finals
    lost_workers: bool = False  # some worker's data ends early (run.partial says which)
    final_sent: bool = False  # (worker) its final delta went to the master
    interrupted: str | None = None  # "interrupted (Ctrl-C)" / "terminated (SIGTERM)"
    stop_began: bool = False  # the run's stop is under way (its time was up, or a signal)
    quitting: bool = False  # Locust's shutdown began (a later one only hastens the first)
    signalled: bool = False  # a first Ctrl-C is on its way to Locust's main greenlet
    hurried: str | None = None  # what cut the graceful stop short (a later signal)
    hurried_at: float | None = None
    loop_at: float | None = None  # when the event loop first ran after the test start
    written: Any = None  # gevent Event: set once the run's outputs are written (or failed)
    fixed: dict[str, Any] = field(default_factory=dict)  # options fixed at start-up
    extra: dict[str, Any] = field(default_factory=dict)  # merged into run.json (e.g. steps)

    @property
    def role(self) -> str:
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            return "master"
        if isinstance(runner, WorkerRunner):
            return "worker"
        return "local"


# The master tells its workers about pods that joined during the run (pod -> node).
POD_NODES_MSG = "nodeport_pod_nodes"


class _ThisProcess:
    """report_to_master/worker_report carry no environment: the one run of this process."""

    run: HarnessRun | None = None


this_process = _ThisProcess()


def current_run(environment) -> HarnessRun:
    run = getattr(environment, "nodeport_run", None)
    if run is None or run.target is None:
        raise HarnessError("nodeport-harness: no target yet (discovery has not run)")
    return run


def check_run_options(options, processes: int | None) -> None:
    """The run options, as the command line or the web UI's form gave them: HarnessError
    with the one line to show. `processes`: the Locust processes the users go to (None:
    not counted here, a worker's)."""
    check_numbers(options)
    if getattr(options, "run_id", None):
        check_run_id(options.run_id)
    # Locust itself accepts these and fails later with a traceback in its spawner.
    users = getattr(options, "num_users", None)
    if users is not None and users < 0:
        raise HarnessError(f"-u/--users must not be negative, got {users}")
    if processes is not None:
        check_users(users, processes)
    rate = getattr(options, "spawn_rate", None)
    if rate is not None and rate <= 0:
        raise HarnessError(f"-r/--spawn-rate must be positive, got {rate}")
    if options.timeout <= 0:
        raise HarnessError(f"--timeout must be positive, got {options.timeout}")
    for name in ("max_fail_ratio", "min_fairness", "max_node_share"):
        value = getattr(options, name)
        if value is not None and not 0 <= value <= 1:
            raise HarnessError(f"--{name.replace('_', '-')} must be between 0 and 1, got "
                               f"{value}")
    for name in ("max_p95_ms", "max_p99_ms"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise HarnessError(f"--{name.replace('_', '-')} must be positive, got {value}")
    check_run_time(getattr(options, "run_time", None))
    check_request(options)
    make_extractor(options.pod_from)
    parse_specs(options.lab_fault)


def raise_usage(message: str) -> None:
    """A usage error found inside Locust: the one line, exit 2 (Locust has no other way)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def raise_exit_code(environment, code: int) -> None:
    if (environment.process_exit_code or 0) < code:
        environment.process_exit_code = code
