"""The locustfile `nodeport-harness capacity` runs: NodePortUser under a step-load shape.

Also usable directly: ``locust -f harness/plugin/capacity_shape.py --headless --lab
--step-users 5 --max-users 50 --slo-p95-ms 50``. Each step's start and end (epoch), load
and per-pod successes go into ``run.extra["steps"]`` (so into run.json); the report builder
turns them, with spread.json's per-second series, into capacity.json, steps.csv and
capacity.html.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from typing import Any

import gevent
from locust import LoadTestShape, events
from locust.runners import (
    STATE_INIT,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
    WorkerRunner,
)

# The module, not the class: Locust runs every User class a locustfile's namespace holds,
# and NodePortUser itself must not run beside CapacityUser.
import harness.plugin.listeners  # noqa: F401  (registers the plugin on Locust's events)
from harness.core.capacity import StepPlan, capacity_settings, make_plan
from harness.errors import HarnessError
from harness.options import add_capacity_options
from harness.plugin import users as traffic

ALIGN_SLACK_S = 0.05  # a tick this close to a step boundary counts as on it
PACING_MSG = "nodeport_capacity_pacing"


class CapacityUser(traffic.NodePortUser):
    """NodePortUser without think time (closed loop) or paced by the current step (open)."""

    def on_start(self) -> None:
        # Locust starts a step's new users in one batch per second: paced users that all
        # began together would send in bursts and queue behind each other. A random phase
        # spreads them evenly over their interval, as independent clients are.
        interval = getattr(self.environment, "capacity_interval_s", None)
        if interval:
            gevent.sleep(random.uniform(0.0, interval))
            self._paced_from = time.perf_counter()

    def wait_time(self) -> float:
        interval = getattr(self.environment, "capacity_interval_s", None)
        if not interval:
            return 0.0
        # constant_throughput with a live interval: the next request is due one interval
        # after the previous one started, however long its reply took (never negative).
        now = time.perf_counter()
        last = getattr(self, "_paced_from", None)
        elapsed = now - last if last is not None else 0.0
        wait = max(0.0, interval - elapsed)
        self._paced_from = now + wait
        return wait


class StepLoadShape(LoadTestShape):
    """Users (or a paced rate) rising in steps; each step's window recorded for the report."""

    # -u/-r/-t are read, not ignored: -t caps the run should the plan be longer.
    use_common_options = True

    def __init__(self) -> None:
        self.plan: StepPlan | None = None
        self.steps: list[dict[str, Any]] = []
        self.interval_s: float | None = None
        self._index = -1
        self._origin: float | None = None  # epoch second the first step started
        self._tick: tuple[int, float] | None = None
        self._pods_before: dict[str, int] | None = None
        super().__init__()

    def reset_time(self) -> None:
        # Locust calls this as a shape test starts: a second run (web UI) starts afresh.
        super().reset_time()
        self.steps = []
        self.interval_s, self._index, self._origin = None, -1, None
        self._tick, self._pods_before = None, None

    def tick(self) -> tuple[int, float] | None:
        plan = self.plan
        if plan is None:
            return None
        now = time.time()
        if self._origin is None:
            # Steps start on whole epoch seconds: spread.json counts per whole second, so an
            # aligned step loses no second at either end of its window.
            self._origin = float(math.ceil(now))
            gevent.sleep(self._origin - now)
            now = time.time()
        index = int((now - self._origin + ALIGN_SLACK_S) // plan.step_time_s)
        boundary = self._origin + (index + 1) * plan.step_time_s
        if boundary - now < 1.0 - ALIGN_SLACK_S:
            # The next tick would come after the boundary: wait for it here instead.
            gevent.sleep(max(0.0, boundary - now))
            if self.runner.state not in (STATE_INIT, STATE_SPAWNING, STATE_RUNNING):
                return self._tick
            now, index = time.time(), index + 1
        limit = getattr(self.runner.environment.parsed_options, "run_time", None)
        if index >= len(plan.loads) or (limit and now - self._origin >= limit):
            self.finish(now)
            return None
        current = self.steps[-1] if self.steps else None
        if current is not None and current["pods_from"] is None and (
                now - current["start"] >= plan.settle_s - ALIGN_SLACK_S):
            current["pods_from"], self._pods_before = now, pod_successes(self.runner)
        if index != self._index:
            self.finish(now)
            self._index = index
            self.interval_s = plan.interval_s(index)
            # Where the users read it (on this process, and on workers through a message).
            self.runner.environment.capacity_interval_s = self.interval_s
            if isinstance(self.runner, MasterRunner):
                # Workers pace their users too: tell them the step's interval.
                self.runner.send_message(PACING_MSG, self.interval_s)
            users = plan.users(index)
            self.steps.append({
                "step": index + 1, "users": users,
                "rate": plan.loads[index] if plan.mode == "open" else None,
                "interval_s": self.interval_s, "start": now, "end": None,
                "pods_from": None, "pods_to": None, "pod_successes": None,
            })
            if plan.settle_s == 0:
                self.steps[-1]["pods_from"] = now
                self._pods_before = pod_successes(self.runner)
            # New users start over the settle time (left out of the figures): an open loop's
            # users then send out of phase instead of in one burst.
            added = users - (self.runner.user_count if self.runner else 0)
            spawn_rate = (max(1.0, added / plan.settle_s) if plan.settle_s
                          else float(max(added, 1)) * 10)
            self._tick = (users, spawn_rate)
        return self._tick

    def finish(self, now: float) -> None:
        """Close the open step: its end time and its pods' successes since it settled."""
        if not self.steps or self.steps[-1]["end"] is not None:
            return
        step = self.steps[-1]
        step["end"] = now
        before, self._pods_before = self._pods_before, None
        after = pod_successes(self.runner)
        if step["pods_from"] is not None and before is not None and after is not None:
            step["pods_to"] = now
            step["pod_successes"] = {pod: count - before.get(pod, 0)
                                     for pod, count in after.items()
                                     if count - before.get(pod, 0)}


def pod_successes(runner) -> dict[str, int] | None:
    """Successes per pod recorded so far in this process (on a master: merged so far);
    empty before the run's recorder exists (nothing recorded yet), None without a run."""
    run = getattr(runner.environment, "nodeport_run", None) if runner else None
    if run is None:
        return None
    if run.recorder is None:
        return {}
    return {pod: data["successes"] for pod, data in run.recorder.to_dict()["pods"].items()}


class _QuietFastSpawn(logging.Filter):
    """Locust warns above 100 users/s; an open-loop step starts hundreds within its settle
    time on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    add_capacity_options(parser, locust=True)


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    options = environment.parsed_options
    shape = environment.shape_class
    if options is None or not isinstance(shape, StepLoadShape):
        return
    try:
        shape.plan = make_plan(options)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("locust.runners").addFilter(_QuietFastSpawn())
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(PACING_MSG, _on_pacing)


def _on_pacing(environment, msg, **_kwargs) -> None:
    environment.capacity_interval_s = msg.data


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    # After the plugin's own test_start (it resets run.extra): the live list of steps goes
    # into run.json whenever the plugin writes it.
    run = getattr(environment, "nodeport_run", None)
    shape = environment.shape_class
    if run is None or not isinstance(shape, StepLoadShape) or shape.plan is None:
        return
    if run.role == "worker":
        return
    run.extra["steps"] = shape.steps
    run.extra["capacity"] = capacity_settings(environment.parsed_options, shape.plan)
    run.extra["load_model"] = shape.plan.load_model()


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kwargs) -> None:
    shape = environment.shape_class
    if isinstance(shape, StepLoadShape):
        shape.finish(time.time())


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    # After the plugin wrote the reports (capacity.json among them): not even the first step
    # meeting the SLO fails the run, like a breached threshold.
    run = getattr(environment, "nodeport_run", None)
    if run is None or run.run_dir is None or run.role == "worker":
        return
    path = run.run_dir / "capacity.json"
    if not path.is_file():
        return
    import json

    from harness.core.capacity import exit_code_for

    result = json.loads(path.read_text())
    if exit_code_for(result) and not environment.process_exit_code:
        environment.process_exit_code = 1
        print("capacity: not even the first step met the SLO", file=sys.stderr)


__all__ = ["CapacityUser", "StepLoadShape"]
