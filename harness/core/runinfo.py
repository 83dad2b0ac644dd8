"""run.json, typed: what a run records about itself, its option vocabulary and thresholds.

The Locust plugin writes run.json (``RunInfo``); the report, the web tab and `compare` read
it back through ``analysis_run`` and ``threshold_settings``. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

RUN_SCHEMA = "nodeport-harness/run/v1"
ENTRY_STRATEGIES = ("all", "random", "single", "sticky", "lb")
CONNECTION_MODES = ("keepalive", "close")
PLOTLYJS_MODES = ("inline", "directory", "cdn")
# Every threshold a run can be held to: option name -> what it limits, as its result says it.
THRESHOLDS = {
    "max_fail_ratio": "failure ratio",
    "max_p95_ms": "p95 latency",
    "max_p99_ms": "p99 latency",
    "min_fairness": "Jain's fairness index",
    "require_all_pods": "pods without traffic",
    "max_node_share": "largest entry-node share",
}
CLOSED_LOOP = "closed loop: each user waits for its reply (coordinated omission applies)"


class RunInfo(TypedDict, total=False):
    """run.json (schema ``nodeport-harness/run/v1``). Times are epoch seconds; ``faults``
    and ``changes`` hold ``t`` in seconds from ``started`` (see ``harness.core.faults`` and
    ``harness.core.changes``)."""

    schema: str
    run_id: str
    harness_version: str
    locust_version: str
    python: str
    started: float | None
    stopped: float | None
    duration_s: float
    role: str  # local | master
    entry: str  # one of ENTRY_STRATEGIES
    connection: str  # one of CONNECTION_MODES
    users: int | None
    spawn_rate: float | None
    stop_timeout_s: float | None
    in_flight: str
    load_model: str
    # Faults injected during the run: t, time, kind, name, action and source ("--lab-fault":
    # this run's own; "lab": any other the lab was given, e.g. `nodeport-harness lab fault`).
    faults: list[dict[str, Any]]
    # What the cluster reported changing during the run (EndpointSlices and Nodes polled
    # about once a second): t, time, kind (endpoint|node), name, change, node?, text.
    changes: list[dict[str, Any]]
    # How the changes were watched: None when they were not (an inventory target); else
    # interval_s, polls, errors (polls with one), nodes / endpoints (read at least once),
    # warning (the first error, in words), dropped (changes past the 2 000 kept).
    watch: dict[str, Any] | None
    workers: dict[str, dict[str, Any]]  # Locust client id -> reports, state, data_until_s ...
    partial: str | None  # why the data is incomplete, in words (None: complete)
    command: str  # the command line, secrets redacted
    cwd: str  # the folder it ran in (its relative paths start there)
    kubeconfig: str | None  # the kubeconfig file(s) discovery read (None: lab, inventory...)
    options: dict[str, Any]  # every parsed option of a plain type (secrets left out)
    # Added by the capacity shape: its settings and each step's start/end and pod counts.
    capacity: dict[str, Any]
    steps: list[dict[str, Any]]


def analysis_run(run: Mapping[str, Any]) -> dict[str, Any]:
    """run.json in the names analysis.summarize reads (absent values left out, so the
    analysis falls back on spread.json's own start)."""
    model = str(run.get("load_model") or "")
    info = {
        "entry_strategy": run.get("entry"),
        "connection_mode": run.get("connection"),
        # run.json says it in a sentence; the analysis keys on the short name.
        "load_model": "closed-loop" if model.startswith("closed") or not model else model,
        "start": run.get("started"),
        "duration_s": run.get("duration_s"),
        "faults": run.get("faults") or [],
        "changes": run.get("changes") or [],
        "timeout_s": (run.get("options") or {}).get("timeout"),
        "users": run.get("users"),  # for the what-ifs' re-run commands
    }
    return {k: v for k, v in info.items() if v is not None}


def threshold_settings(run: Mapping[str, Any]) -> dict[str, Any]:
    """The thresholds a run was started with (from run.json's options), set ones only."""
    options = run.get("options") or {}
    return {name: options.get(name) for name in THRESHOLDS
            if options.get(name) not in (None, False)}
