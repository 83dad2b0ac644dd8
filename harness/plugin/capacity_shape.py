"""The locustfile `nodeport-harness capacity` runs: NodePortUser under a step-load shape.

Also usable directly: ``locust -f harness/plugin/capacity_shape.py --headless --lab
--step-users 5 --max-users 50 --slo-p95-ms 50``. Each step's start and end (epoch), load,
per-pod successes and the CPU every Locust process used over its measured window (``cpu``)
go into ``run.extra["steps"]`` (so into run.json); the report builder turns them, with
spread.json's per-second series, into capacity.json, steps.csv and capacity.html.

The load generator's CPU: every process samples its own CPU time (and, on Linux, how long
its event-loop thread ran or waited for a CPU) twice a second. Workers send their samples
to the master with each report (``report_to_master``) and the rest as they stop; the master
(or the local runner) adds its own and, once every step has ended, works out each step's
figures with ``harness.core.capacity.cpu_over``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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
from harness.core.capacity import (
    StepPlan,
    capacity_settings,
    cpu_over,
    make_plan,
    measured_window,
)
from harness.errors import HarnessError
from harness.options import add_capacity_options
from harness.plugin import users as traffic
from harness.plugin.context import this_process

ALIGN_SLACK_S = 0.05  # a tick this close to a step boundary counts as on it
PACING_MSG = "nodeport_capacity_pacing"
CPU_MSG = "nodeport_capacity_cpu"  # a worker's last CPU samples, sent as it stops
CPU_SAMPLE_S = 0.5  # finer than the shortest measured window (2 s): interpolation is close
CPU_REPORT_KEY = "nodeport_cpu"  # a worker's CPU samples in its report to the master
_CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0  # /proc/stat


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
        # Workers' CPU samples (on the master): process name -> cpu_sample() rows.
        self.worker_cpu: dict[str, list[list[float | None]]] = {}
        super().__init__()

    def reset_time(self) -> None:
        # Locust calls this as a shape test starts: a second run (web UI) starts afresh. A
        # master calls it again after test_start, which handed this list to run.extra: clear
        # it in place, or run.json would keep a stale first step and miss the rest.
        super().reset_time()
        self.steps.clear()
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

    def record_cpu(self, processes: dict[str, list[list[float | None]]]) -> None:
        """Each ended step's ``cpu``: what every process used over the step's measured window
        (the seconds capacity.json counts), from the processes' samples."""
        if self.plan is None:
            return
        for step in self.steps:
            first, last = measured_window(step["start"], step["end"], self.plan.settle_s)
            if last <= first:
                continue
            used = {name: cpu_over(samples, first, last) for name, samples in processes.items()}
            step["cpu"] = {name: {key: None if value is None else round(value, 4)
                                  for key, value in figures.items()}
                           for name, figures in sorted(used.items()) if figures}


class CpuSampler:
    """This process's CPU over time: a ``cpu_sample()`` every ``CPU_SAMPLE_S`` while a test
    runs (from a greenlet, so on the event loop's thread, whose run-queue time it reads)."""

    def __init__(self) -> None:
        self.samples: list[list[float | None]] = []
        self._sent = 0
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self.stop()
        self.samples, self._sent = [], 0
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.sample()
            gevent.sleep(CPU_SAMPLE_S)

    def sample(self) -> None:
        self.samples.append(cpu_sample())

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
            self.sample()  # the end of the last window is covered

    def unsent(self) -> list[list[float | None]]:
        """Samples not yet handed to the master (a worker's)."""
        new, self._sent = self.samples[self._sent:], len(self.samples)
        return new


def cpu_sample() -> list[float | None]:
    """[epoch, CPU seconds this process used (every thread), seconds this thread ran or
    waited on a run queue, CPU seconds the machine left idle (all CPUs), the machine's CPUs]
    (run-queue and idle time from Linux's /proc; None elsewhere). Waiting on a machine with
    no idle CPU shows a process others starve: never idle, yet below 90 % of a core."""
    busy = idle = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/thread-self/schedstat") as schedstat:
            running_ns, waiting_ns = schedstat.read().split()[:2]
        busy = (int(running_ns) + int(waiting_ns)) / 1e9
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat") as stat:
            fields = stat.readline().split()  # cpu user nice system idle iowait ...
        idle = (int(fields[4]) + int(fields[5])) / _CLOCK_TICKS
    return [time.time(), time.process_time(), busy, idle, float(os.cpu_count() or 1)]


sampler = CpuSampler()  # one per process: workers are processes of their own


def _worker_name(runner, client_id: str) -> str:
    index = None
    with contextlib.suppress(Exception):
        index = runner.get_worker_index(client_id)
    return f"worker-{index}" if index is not None else f"worker-{client_id}"


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
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(CPU_MSG, _on_worker_cpu)


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
    sampler.start()
    if run.role == "worker":
        return
    shape.worker_cpu = {}
    run.extra["steps"] = shape.steps
    run.extra["capacity"] = capacity_settings(environment.parsed_options, shape.plan)
    run.extra["load_model"] = shape.plan.load_model()


@events.report_to_master.add_listener
def _on_report_to_master(client_id, data, **_kwargs) -> None:
    # A worker's CPU samples ride on its regular report (every few seconds).
    samples = sampler.unsent()
    if samples:
        data[CPU_REPORT_KEY] = samples


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_kwargs) -> None:
    run = this_process.run
    if run is not None and data.get(CPU_REPORT_KEY):
        _add_worker_cpu(run.environment, client_id, data[CPU_REPORT_KEY])


def _on_worker_cpu(environment, msg, **_kwargs) -> None:
    _add_worker_cpu(environment, msg.node_id, (msg.data or {}).get("samples") or [])


def _add_worker_cpu(environment, client_id: str, samples: list) -> None:
    shape = environment.shape_class
    if isinstance(shape, StepLoadShape) and samples:
        name = _worker_name(environment.runner, client_id)
        shape.worker_cpu.setdefault(name, []).extend(samples)


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kwargs) -> None:
    shape = environment.shape_class
    if not isinstance(shape, StepLoadShape):
        return
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        # The samples since the last report, before the final delta the master waits for
        # (the plugin's nodeport_final follows on the same connection, so this arrives first).
        sampler.sample()
        with contextlib.suppress(Exception):
            runner.send_message(CPU_MSG, {"samples": sampler.unsent()})
        return
    shape.finish(time.time())
    # On a master this runs after the plugin's own test_stopping, which waited for every
    # worker's final delta: all their CPU samples are in.
    sampler.sample()
    own = "master" if isinstance(runner, MasterRunner) else "local"
    shape.record_cpu({own: sampler.samples, **shape.worker_cpu})


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    # After the plugin wrote the reports (capacity.json among them): not even the first step
    # meeting the SLO fails the run, like a breached threshold.
    sampler.stop()
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
        why = ("the load generator was the limit from the first step"
               if result.get("limited_by") == "load_generator" else
               "not even the first step met the SLO")
        print(f"capacity: {why}", file=sys.stderr)


__all__ = ["CapacityUser", "StepLoadShape"]
