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

from harness.core.model import Target
from harness.core.recorder import SpreadRecorder
from harness.errors import HarnessError


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
    workers: dict[str, dict] = field(default_factory=dict)  # client id -> what it sent
    finals: set[str] = field(default_factory=set)
    outputs: dict[str, str] = field(default_factory=dict)
    stopping: float | None = None  # when the master began collecting the workers' finals
    lost_workers: bool = False  # some worker's data ends early (run.partial says which)
    final_sent: bool = False  # (worker) its final delta went to the master
    interrupted: str | None = None  # "interrupted (Ctrl-C)" / "terminated (SIGTERM)"
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


def raise_usage(message: str) -> None:
    """A usage error found inside Locust: the one line, exit 2 (Locust has no other way)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def raise_exit_code(environment, code: int) -> None:
    if (environment.process_exit_code or 0) < code:
        environment.process_exit_code = code
