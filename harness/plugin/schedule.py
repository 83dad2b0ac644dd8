"""What runs beside the users on the master (or the local runner): scheduled lab faults
(``--lab-fault``), the watch on the cluster (Nodes and the Service's EndpointSlices polled
about once a second: changes become run.json ``changes`` and timeline markers), the lab's
fault log read at the end (faults given by anyone during the run) and the ``--progress``
line."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque

import gevent

from harness.core.changes import Change, Snapshot, diff, merged, pod_nodes
from harness.core.faults import Fault, check_fault, parse_specs
from harness.errors import HarnessError
from harness.plugin.context import POD_NODES_MSG, HarnessRun, raise_usage
from harness.targets import cluster_watch, lab_fault_log, lab_faulter

log = logging.getLogger("nodeport-harness")
WATCH_INTERVAL_S = 1.0
# A poll may take at most this share of the time (a 5 000-node list is megabytes of JSON).
WATCH_DUTY = 0.2
OWN_FAULT_WINDOW_S = 2.0  # a fault-log entry this close to one of ours is ours
MAX_CHANGES = 2_000  # a flapping cluster: later changes are counted (watch "dropped"), not kept
PROGRESS_TTY_S = 1.0  # --progress on a terminal: the line is rewritten every second
PROGRESS_WINDOW_S = 5.0  # ... with req/s, p95 and the shares of the last 5 s
PROGRESS_PIPED_S = 10.0  # in a pipe or a file: a line every 10 s (of those 10 s)


def schedule_faults(run: HarnessRun, options) -> None:
    """Fire each --lab-fault at its time (checked against the target and the lab at start)."""
    faults = parse_specs(options.lab_fault)
    if not faults:
        return
    inject = run.inject_fault
    if inject is None:  # checked at start; only a library caller gets here without it
        try:
            inject = lab_faulter(options, run.lab, run.target)
        except HarnessError as err:
            raise_usage(str(err))
            return

    def fire(fault: Fault) -> None:
        try:
            inject(fault)
            t = time.time()
            run.faults.append({**fault.to_dict(), "t": round(t - run.started, 3), "time": t,
                               "source": "--lab-fault"})
            run.recorder.mark(t, fault.marker)
        except Exception as err:
            log.error("fault %s failed: %s", fault.to_dict(), err)

    for fault in faults:
        gevent.spawn_later(fault.at, fire, fault)


def watch_changes(run: HarnessRun, options) -> None:
    """Poll the target's Nodes and EndpointSlices beside the users until the run stops
    (``stop_watch``); nothing for a target without an API (an inventory)."""
    run.changes, run.watch, run.watcher = [], None, None
    if run.target is None or run.target.source == "inventory" or getattr(
            options, "inventory", None):
        return
    run.watch = {"interval_s": WATCH_INTERVAL_S, "polls": 0, "errors": 0, "nodes": False,
                 "endpoints": False, "warning": None, "dropped": 0}
    run.watcher = gevent.spawn(_watch, run, options, run.started)


def stop_watch(run: HarnessRun) -> None:
    """End the watch (a poll in flight is abandoned): run.changes is final after this."""
    watcher, run.watcher = run.watcher, None
    if watcher is not None:
        watcher.kill(block=True, timeout=2)


def _watch(run: HarnessRun, options, started: float | None) -> None:
    info = run.watch
    assert info is not None and run.target is not None
    try:
        watch = cluster_watch(options, run.target, run.lab)
    except Exception as err:  # credentials that load for discovery but not now: say so
        _watch_warning(run, {"cluster": _one_line(err)})
        return
    if watch is None:
        return
    previous = None
    try:
        while run.stopped is None and run.started == started:
            began = time.monotonic()
            try:
                snap, errors = watch.poll()
            except Exception as err:  # never let the watch break the run
                snap, errors = Snapshot(), {"cluster": _one_line(err)}
            now = time.time()
            if run.stopped is not None or run.started != started:
                break
            info["polls"] += 1
            info["nodes"] = info["nodes"] or snap.nodes is not None
            info["endpoints"] = info["endpoints"] or snap.endpoints is not None
            if errors:
                info["errors"] += 1
                _watch_warning(run, errors)
            changes = diff(previous, snap)
            for change in changes:
                _record_change(run, change, now)
            if snap.endpoints is not None and (previous is None or previous.endpoints is None
                                               or any(c.kind == "endpoint" for c in changes)):
                _learn_pod_nodes(run, pod_nodes(snap))
            previous = merged(previous, snap)
            spent = time.monotonic() - began
            # A big answer costs the process CPU: keep polls to WATCH_DUTY of the time. A
            # poll that waited on an API not answering cost nothing: just the interval.
            busy = 0.0 if errors else spent * (1 - WATCH_DUTY) / WATCH_DUTY
            gevent.sleep(max(WATCH_INTERVAL_S - spent, busy, 0.05))
    finally:
        watch.close()


def _record_change(run: HarnessRun, change: Change, now: float) -> None:
    if len(run.changes) >= MAX_CHANGES:
        if run.watch is not None:
            run.watch["dropped"] += 1
        return
    entry = change.to_dict(now - (run.started or now), now)
    run.changes.append(entry)
    if run.recorder is not None:
        run.recorder.mark(now, change.marker)
    log.info("cluster change: %s", entry["text"])


def _learn_pod_nodes(run: HarnessRun, mapping: dict[str, str | None]) -> None:
    """Pods that joined (or moved): the recorder's cross-node accounting learns where they
    run, here and, on a master, on every worker."""
    recorder = run.recorder
    if recorder is None:
        return
    new = {pod: node for pod, node in mapping.items()
           if node is not None and recorder.pod_nodes.get(pod) != node}
    if not new:
        return
    recorder.update_pod_nodes(new)
    if run.role == "master":
        try:
            run.environment.runner.send_message(POD_NODES_MSG, new)
        except Exception as err:  # a worker going away must not end the watch
            log.debug("could not send new pods to the workers: %s", err)


def _watch_warning(run: HarnessRun, errors: dict[str, str]) -> None:
    """The first problem of the watch, as one warning line (later ones are only counted)."""
    info = run.watch
    if info is None or info["warning"] is not None:
        return
    by_reason: dict[str, list[str]] = {}
    for part, why in errors.items():
        by_reason.setdefault(why, []).append(part)
    text = "; ".join(f"{' and '.join(parts)}: {why}" for why, parts in by_reason.items())
    info["warning"] = (f"cannot watch the cluster during the run: {text}; changes it cannot "
                       "read are not recorded (the run goes on)")
    log.warning(info["warning"])


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def collect_lab_faults(run: HarnessRun) -> None:
    """The run is on a lab: every fault the lab was given during the run (by `nodeport-harness
    lab fault`, its control API or another run) joins run.json's faults (source "lab") and
    the timeline's markers; this run's own --lab-fault entries are not counted twice."""
    if run.lab_info is None or run.started is None:
        return
    stopped = run.stopped or time.time()
    try:
        entries = lab_fault_log(run.lab_info, since=run.started)
    except HarnessError as err:
        log.warning("could not read the lab's fault log: %s", err)
        return
    own = [f for f in run.faults if f.get("source") == "--lab-fault"]
    matched: set[int] = set()
    added = False
    for entry in entries:
        at = entry.get("time")
        if not isinstance(at, int | float) or not run.started <= at <= stopped:
            continue
        try:
            fault = check_fault(str(entry.get("kind")), str(entry.get("name")),
                                str(entry.get("action")))
        except HarnessError:
            continue
        mine = next((i for i, f in enumerate(own) if i not in matched
                     and (f["kind"], f["name"], f["action"]) == (fault.kind, fault.name,
                                                                 fault.action)
                     and abs(f["time"] - at) <= OWN_FAULT_WINDOW_S), None)
        if mine is not None:
            matched.add(mine)
            continue
        run.faults.append({"t": round(at - run.started, 3), **fault.to_dict(), "time": at,
                           "source": "lab"})
        if run.recorder is not None:
            run.recorder.mark(at, fault.marker)
        added = True
    if added:
        run.faults.sort(key=lambda f: f["time"])


def start_progress(run: HarnessRun) -> None:
    """The --progress line beside the users, until `stop_progress` (or the run's end)."""
    stop_progress(run)
    run.ticker = gevent.spawn(progress, run, sys.stderr)


def stop_progress(run: HarnessRun) -> None:
    """End the --progress line (its last state stays on a terminal, on a line of its own)."""
    ticker, run.ticker = run.ticker, None
    if ticker is not None:
        ticker.kill(block=True, timeout=2)


def progress(run: HarnessRun, stream) -> None:
    """Elapsed of the run's time, req/s and p95 over the last seconds, failures so far and
    each entry node's share of the last seconds: on a terminal one line rewritten in place
    every second (as wide as the terminal), else a line every PROGRESS_PIPED_S (a log)."""
    from harness.core.histogram import percentiles
    from harness.report.terminal import progress_line, terminal_width

    tty = stream.isatty()
    every, window = (PROGRESS_TTY_S, PROGRESS_WINDOW_S) if tty else (PROGRESS_PIPED_S,
                                                                     PROGRESS_PIPED_S)
    started, recorder = run.started, run.recorder
    total = getattr(run.environment.parsed_options, "run_time", None)
    samples: deque[tuple[float, dict]] = deque()
    open_line = False
    try:
        while run.stopped is None and run.started == started and recorder is not None:
            now = time.time()
            counts = recorder.progress_counts()
            if samples and _went_back(samples[-1][1], counts):
                samples.clear()  # the recorder was reset (the web UI's "Reset stats")
            samples.append((now, counts))
            while len(samples) > 2 and samples[1][0] <= now - window:
                samples.popleft()
            if len(samples) > 1:
                old, seconds = samples[0][1], now - samples[0][0]
                entries = {name: [a - b for a, b in zip(
                    now_counts, old["entry_nodes"].get(name, [0, 0]), strict=True)]
                    for name, now_counts in counts["entry_nodes"].items()}
                recent = sum(e[0] + e[1] for e in entries.values())
                latency = [a - b for a, b in zip(counts["latency"], old["latency"],
                                                 strict=True)]
                requests = sum(s + f for s, f in counts["entry_nodes"].values())
                failures = sum(f for _s, f in counts["entry_nodes"].values())
                shares = [(name, (s + f) / recent) for name, (s, f) in entries.items()
                          if recent and s + f]
                line = progress_line(now - (started or now), total,
                                     recent / seconds if seconds > 0 else None,
                                     percentiles(latency, [0.95])[0], requests, failures,
                                     shares, terminal_width(stream), tty=tty)
                stream.write(f"\r{line}\x1b[K" if tty else line + "\n")
                stream.flush()
                open_line = tty
            gevent.sleep(every)
    finally:
        if open_line:
            stream.write("\n")
            stream.flush()


def _went_back(before: dict, after: dict) -> bool:
    return any(after["entry_nodes"].get(name, [0, 0])[0] < counts[0]
               for name, counts in before["entry_nodes"].items())
