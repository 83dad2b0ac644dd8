"""Locust wiring: our options, discovery once on the master, recording, worker merge, outputs.

Everything hangs off Locust's events; one `HarnessRun` per environment carries the run.
Distributed runs: workers send recorder deltas with `report_to_master`, and at stop the
master asks every worker to stop its users gracefully and send a final delta
(`nodeport_stop` / `nodeport_final`) before it writes anything: Locust's own `quit()` only
waits 0.5 s for workers' last stats, which loses requests still in flight. A worker that
went missing (killed) is not waited for: run.json's `partial` and `workers` say whose data
ends when, with an estimate of the requests lost with it, and the run exits 1. Ctrl-C /
SIGTERM mid-run stop the users gracefully, write the reports marked partial and exit 130 /
143; every later signal only hastens that stop (requests in flight are no longer waited
for), never cuts the writing of the reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time

import gevent
from gevent.event import Event
from locust import events
from locust.runners import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    STATE_MISSING,
    MasterRunner,
    WorkerRunner,
)

from harness.core.entry import entry_plan
from harness.core.extract import make_extractor
from harness.core.faults import parse_specs
from harness.core.model import Target
from harness.core.recorder import SpreadRecorder
from harness.errors import HarnessError
from harness.options import add_harness_options, retype, run_folder
from harness.plugin.context import (
    POD_NODES_MSG,
    HarnessRun,
    check_run_options,
    raise_exit_code,
    raise_usage,
    this_process,
)
from harness.plugin.outputs import quiet_locust_tables, show_summary, write_outputs
from harness.plugin.schedule import (
    collect_lab_faults,
    schedule_faults,
    start_progress,
    stop_progress,
    stop_watch,
    watch_changes,
)
from harness.targets import lab_faulter, lab_info, open_target

log = logging.getLogger("nodeport-harness")
STOP_MSG, FINAL_MSG = "nodeport_stop", "nodeport_final"
HURRY_MSG = "nodeport_hurry"  # a later signal on the master: workers stop their users now
HURRY_WAIT_S = 5.0  # after a later signal, how long the master still waits for finals
# Locust's "Reset stats": the master tells its workers, each answers once it has emptied its
# recorder; until then its reports carry data from before the reset and are dropped.
RESET_MSG, RESET_DONE_MSG = "nodeport_reset", "nodeport_reset_done"
_resetting: set[str] = set()  # (master) workers whose reset is not confirmed yet


# -- options --------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    add_harness_options(parser, locust=True)


# -- life cycle ---------------------------------------------------------------------------


@events.init.add_listener
def on_init(environment, **_kwargs) -> None:
    run = this_process.run = HarnessRun(environment)
    environment.nodeport_run = run
    options = environment.parsed_options
    if options is None:  # Environment built by hand (library use): nothing to wire.
        return
    _validate(options)
    _ctrl_c_in_main_greenlet(environment)
    # Where the files go is fixed now: the web UI's form must not move it (POST /swarm).
    run.fixed = {"report_dir": options.report_dir, "raw": options.raw}
    # Quitting listeners fire last-registered first: added now, after the runner's own (a
    # master's stops the run and a worker's says goodbye), this one still sees the run going.
    environment.events.quitting.add_listener(_before_runner_quits)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(STOP_MSG, _worker_stop, concurrent=True)
        runner.register_message(HURRY_MSG, _worker_hurry)
        runner.register_message(POD_NODES_MSG, _worker_pod_nodes)
        runner.register_message(RESET_MSG, _worker_reset)
        return
    if isinstance(runner, MasterRunner):
        runner.register_message(FINAL_MSG, _master_final)
        runner.register_message(RESET_DONE_MSG, _master_reset_done)
    quiet_locust_tables(environment)
    _check_report_dir(options.report_dir)
    _discover(run, options)
    if environment.web_ui is not None:
        from harness.plugin import webui

        webui.install(environment, run)
    if not environment.stop_timeout:
        # Let users finish the request in flight: recorded == served, exactly.
        environment.stop_timeout = float(options.timeout) + 2.0
    # Discovery may have kept the CPU for seconds (10 000 nodes): the event loop's clock
    # stood still meanwhile, and Locust's --run-time timer, started next, would count from
    # that stale time and end the run early.
    gevent.get_hub().loop.update_now()


def _ctrl_c_in_main_greenlet(environment) -> None:
    """Deliver the first Ctrl-C as Locust expects it (KeyboardInterrupt in its main greenlet,
    which then shuts down and fires `quitting`) and nowhere else; a later one, once a stop is
    under way, only hastens it (`_hurry`).

    Python raises KeyboardInterrupt in whatever code runs when SIGINT lands: often a user
    greenlet in the middle of a request, which dies with a traceback and its request
    unrecorded. Through the hub the signal waits for the running greenlet to yield. A second
    KeyboardInterrupt would break into the stop itself (the reports never written).
    """
    hub = gevent.get_hub()

    def interrupt() -> None:
        run: HarnessRun | None = getattr(environment, "nodeport_run", None)
        if run is not None and run.recorder is not None and (
                run.signalled or run.quitting or run.stop_began or run.interrupted):
            _hurry(environment, run, "Ctrl-C")
            return
        if run is not None:
            run.signalled = True  # (the KeyboardInterrupt is on its way)
        hub.loop.run_callback(hub.parent.throw, KeyboardInterrupt)

    with contextlib.suppress(ValueError, AttributeError):  # not the main thread: leave it
        gevent.signal_handler(signal.SIGINT, interrupt)


def _validate(options) -> None:
    if getattr(options, "worker", False):
        processes = None  # a worker's users are the master's to count
    else:
        # A master's users go to its workers: as many processes as it expects.
        processes = max(1, getattr(options, "expect_workers", 1) or 1) if getattr(
            options, "master", False) else 1
    try:
        check_run_options(options, processes)
    except HarnessError as err:
        raise_usage(str(err))


def _check_report_dir(report_dir: str) -> None:
    """Fail before the run, not after it, when the reports could not be written."""
    from harness.report.files import check_writable

    try:
        check_writable(report_dir)
    except HarnessError as err:
        raise_usage(str(err))


def _discover(run: HarnessRun, options) -> None:
    try:
        context = open_target(options)
        target, run.lab = context.__enter__()  # closed by _close_lab when Locust quits
        run.lab_context = context
        _check_entry(target, options)
        run.inject_fault = _check_faults(target, options, run.lab)
    except HarnessError as err:
        _close_lab(run)
        raise_usage(str(err))
        return
    run.target = target
    for warning in target.warnings:
        log.warning(warning)
    env = run.environment
    # Locust wants a host; the first entry URL is the honest one to show.
    nodes = target.targeted_nodes
    env.host = target.lb_url() if options.entry == "lb" and target.lb_url() else (
        target.node_url(nodes[0]) if nodes else env.host)
    options.host = env.host
    options.nodeport_target = json.dumps(target.to_dict())
    log.info("target: %s/%s nodePort %s on %d node(s), %d endpoint(s)",
             target.service.namespace, target.service.name, target.service.node_port,
             len(nodes), len(target.endpoints))


def _check_entry(target: Target, options) -> None:
    """--entry lb without a LoadBalancer, --node NAME that is not a node: say so now, not as
    a traceback in Locust's spawner for every user."""
    entry_plan(target, options.entry, 0, options.node or None)


def _check_faults(target: Target, options, lab):
    """--lab-fault: the names it gives must be the target's, and the target a lab; say so
    before the run, not as an error log when the fault is due. Returns the injector."""
    faults = parse_specs(options.lab_fault)
    if not faults:
        return None
    known = {"node": [n.name for n in target.nodes], "pod": [e.pod for e in target.endpoints]}
    for fault in faults:
        names = known.get(fault.kind, [])
        if fault.name not in names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise HarnessError(f"--lab-fault {fault.kind} {fault.name}: the target has no such "
                               f"{fault.kind} ({fault.kind}s: {shown or 'none'})")
    return lab_faulter(options, lab, target)


def _close_lab(run: HarnessRun) -> None:
    if run.lab_context is not None:
        ctx, run.lab_context = run.lab_context, None
        try:
            ctx.__exit__(None, None, None)
        except Exception as err:  # never mask the run's outcome
            log.warning("stopping the lab failed: %s", err)


@events.test_start.add_listener
def on_test_start(environment, **_kwargs) -> None:
    run: HarnessRun = environment.nodeport_run
    options = environment.parsed_options
    if options is None:
        return
    if run.target is None or run.role == "worker":
        if not options.nodeport_target:
            raise_usage("worker got no target from the master: run the same locustfile there")
        run.target = Target.from_dict(json.loads(options.nodeport_target))
    run.extractor = make_extractor(options.pod_from)
    raw = None
    if options.raw and run.role != "master":
        from harness.plugin.rawfile import RawWriter

        # One file per process: workers must not interleave gzip streams.
        raw = RawWriter(options.raw if run.role == "local" else f"{options.raw}.{os.getpid()}")
    run.recorder = SpreadRecorder(
        run.target.pod_nodes(), nodes=[n.name for n in run.target.nodes], raw=raw,
        max_pods=getattr(options, "max_pods", None) or 1000,
    )
    gevent.get_hub().loop.update_now()  # (the event loop's clock, after a busy start)
    run.started, run.stopped, run.partial = time.time(), None, None
    run.finals, run.workers, run.outputs = set(), {}, {}
    run.stopping, run.lost_workers, run.final_sent = None, False, False
    run.interrupted, run.stop_began, run.quitting, run.hurried = None, False, False, None
    run.signalled = False
    run.written = Event()
    _resetting.clear()
    # The web UI's form may have posted values for the start-up options: they do not count.
    for name, value in run.fixed.items():
        setattr(options, name, value)
    retype(options)  # (the form's values arrive as text)
    run.run_id = options.run_id or time.strftime("run-%Y%m%d-%H%M%S")
    try:
        run.run_dir = run_folder(options.report_dir, run.run_id)
    except HarnessError as err:  # (the web UI refuses these before the start)
        log.error("%s: the run is written as its default name instead", err)
        run.run_id = time.strftime("run-%Y%m%d-%H%M%S")
        run.run_dir = run_folder(options.report_dir, run.run_id)
    run.faults = []
    run.extra = {}
    if run.role == "master":
        # Known from the start: a worker that dies before its first report is still named.
        for client in environment.runner.clients.all:
            _worker_info(run, client.id)
        gevent.spawn(_watch_workers, run, run.started)
    if run.role != "worker":
        try:
            run.lab_info = lab_info(options, run.lab, run.target)
        except HarnessError:
            run.lab_info = None  # not a lab: no fault log to read at the end
        schedule_faults(run, options)
        watch_changes(run, options)
        if options.progress:
            start_progress(run)
        run.loop_at = None
        gevent.spawn(_loop_free, run, run.started)


def _worker_info(run: HarnessRun, client_id: str) -> dict:
    runner = run.environment.runner
    info = run.workers.get(client_id)
    if info is None:
        info = run.workers[client_id] = {"reports": 0}
        index = getattr(runner, "get_worker_index", None)
        with contextlib.suppress(Exception):
            info["index"] = index(client_id) if index else None
    return info


@events.report_to_master.add_listener
def on_report_to_master(client_id, data, **_kwargs) -> None:
    run = this_process.run
    if run is not None and run.recorder is not None:
        data["nodeport_spread"] = run.recorder.drain()


@events.worker_report.add_listener
def on_worker_report(client_id, data, **_kwargs) -> None:
    spread = data.get("nodeport_spread")
    run = this_process.run
    if spread is None or run is None or run.recorder is None:
        return
    if client_id not in _resetting:  # (else: recorded before the stats were reset)
        run.recorder.merge(spread)
    info = _worker_info(run, client_id)
    now = time.time()
    # Its rate over the last report interval: what a lost worker's last seconds cost.
    since = info.get("last_report") or run.started or now
    requests = (spread.get("totals") or {}).get("requests") or 0
    if now - since > 0.2:
        info["rate"] = round(requests / (now - since), 1)
    info["reports"] += 1
    info["last_report"] = now


def _watch_workers(run: HarnessRun, started: float) -> None:
    """(master) When each worker was last heard of: Locust resets a worker's heartbeat count
    to HEARTBEAT_LIVENESS on each of its heartbeats (every HEARTBEAT_INTERVAL) and counts it
    down once an interval, so a full count means it was heard within the last interval. A
    killed worker's load ended about then."""
    runner = run.environment.runner
    while run.stopped is None and run.started == started:
        now = time.time()
        for client in list(runner.clients.all):
            if client.state != STATE_MISSING and getattr(
                    client, "heartbeat", None) == HEARTBEAT_LIVENESS:
                run.workers.get(client.id, {})["alive_at"] = now
        gevent.sleep(HEARTBEAT_INTERVAL / 4)



@events.reset_stats.add_listener
def on_reset_stats(**_kwargs) -> None:
    """Locust's "Reset stats" (web UI): the recorder starts afresh like Locust's statistics
    (on a master, its workers' recorders too), and the reports say from when they count."""
    run = this_process.run
    if run is None or run.recorder is None:
        return
    now = time.time()
    run.recorder.drain(final=True)  # everything so far, live connections included, goes
    runner = run.environment.runner
    if isinstance(runner, MasterRunner):
        for client in runner.clients.all:
            if client.state != STATE_MISSING:
                _resetting.add(client.id)
                runner.send_message(RESET_MSG, None, client_id=client.id)
    if run.started is not None and run.stopped is None:
        run.recorder.mark(now, "stats reset")
        why = (f"statistics reset from the web UI at {now - run.started:.1f} s: the reports "
               "count the requests after that")
        run.partial = f"{run.partial}; {why}" if run.partial else why
    log.info("statistics reset: the recorder starts afresh")


def _worker_reset(environment, msg, **_kwargs) -> None:
    """(worker) The master's stats were reset: empty the recorder, say so."""
    run: HarnessRun = environment.nodeport_run
    if run.recorder is not None:
        run.recorder.drain(final=True)
    environment.runner.send_message(RESET_DONE_MSG, None)


def _master_reset_done(environment, msg, **_kwargs) -> None:
    _resetting.discard(msg.node_id)


def _worker_pod_nodes(environment, msg, **_kwargs) -> None:
    """Pods that joined during the run, as the master's watch saw them (pod -> node)."""
    run: HarnessRun = environment.nodeport_run
    if run.recorder is not None and isinstance(msg.data, dict):
        run.recorder.update_pod_nodes(msg.data)


def _worker_stop(environment, msg, **_kwargs) -> None:
    """Master asked for a graceful stop: finish in-flight requests, send the final delta."""
    _send_final(environment)


def _worker_hurry(environment, msg, **_kwargs) -> None:
    """Master got a later signal: stop the users now (the final delta follows at once)."""
    run: HarnessRun = environment.nodeport_run
    if run.recorder is not None:
        _hurry(environment, run, "the master")


def _send_final(environment) -> None:
    run: HarnessRun = environment.nodeport_run
    runner = environment.runner
    if run.final_sent:
        return
    run.final_sent = run.stop_began = True
    try:
        if runner.user_greenlets:
            runner.stop()
        final = None
        if run.recorder is not None:
            final = run.recorder.drain(final=True)
            run.recorder.close()
        runner.send_message(FINAL_MSG, {"spread": final, "worker": runner.client_id})
    finally:
        if run.written is not None:
            run.written.set()


def _master_final(environment, msg, **_kwargs) -> None:
    run: HarnessRun = environment.nodeport_run
    data = msg.data or {}
    if run.recorder is not None and data.get("spread"):
        run.recorder.merge(data["spread"])
    run.finals.add(msg.node_id)
    _worker_info(run, msg.node_id)["final"] = time.time()


@events.test_stopping.add_listener
def on_test_stopping(environment, **_kwargs) -> None:
    run: HarnessRun | None = getattr(environment, "nodeport_run", None)
    runner = environment.runner
    if run is None or run.recorder is None or run.role == "worker":
        return
    if not run.stop_began:
        run.stop_began = True
        _hold_for_run_time(run, environment)
    if not isinstance(runner, MasterRunner):
        return
    for client in runner.clients.all:
        _worker_info(run, client.id)
        if client.state != STATE_MISSING and client.id not in run.finals:
            runner.send_message(STOP_MSG, None, client_id=client.id)
    # Wait for the workers that are alive; one that went missing (killed, network gone)
    # never answers, and waiting for it would only delay the reports.
    run.stopping = time.time()
    deadline = time.time() + (environment.stop_timeout or 0) + 10
    while time.time() < deadline and _awaited(run, runner):
        if run.hurried:  # a later signal: the workers stop their users at once
            deadline = min(deadline, run.hurried_at + HURRY_WAIT_S)
        gevent.sleep(0.05)
    _note_lost_workers(run, runner)


def _loop_free(run: HarnessRun, started: float) -> None:
    """(spawned at the test start) Runs once the process gets back to its event loop: the
    users could not send anything before."""
    if run.started == started and run.loop_at is None:
        run.loop_at = time.time()


def _hold_for_run_time(run: HarnessRun, environment) -> None:
    """A headless run lasts its --run-time from when its users could first send: when the
    start kept the CPU (spawning, a huge target), the users go on for that long. Later
    signals cut the hold short; a run that still ends short says so (run.json `partial`)."""
    options = environment.parsed_options
    planned = getattr(options, "run_time", None)
    if (not planned or not getattr(options, "headless", False) or run.interrupted
            or environment.shape_class is not None or run.started is None):
        return
    began = max(run.started, run.loop_at or time.time())
    until = began + float(planned)  # (Locust's timer ends it early after a stalled clock)
    while time.time() < until - 0.05 and not (run.interrupted or run.hurried):
        gevent.sleep(min(0.1, max(0.0, until - time.time())))
    ran = time.time() - began
    if run.interrupted or run.hurried or ran >= float(planned) - 0.5:
        return
    why = f"the run lasted {ran:.1f} s from its start, not the {planned} s asked"
    run.partial = f"{run.partial}; {why}" if run.partial else why


def _hurry(environment, run: HarnessRun, how: str) -> None:
    """A later signal (or the master's word) while the run stops: stop the users now, without
    waiting for their requests in flight (those are not recorded; everything recorded is
    kept and written). The exit code stays the first signal's."""
    runner = environment.runner
    now = time.time()
    first = run.hurried is None
    if first:
        run.hurried, run.hurried_at = how, now
    cut = 0
    with contextlib.suppress(Exception):
        cut = len(runner.user_greenlets)
        runner.user_greenlets.kill(block=False)
    if isinstance(runner, MasterRunner):
        for client in list(runner.clients.all):
            if client.state != STATE_MISSING and client.id not in run.finals:
                with contextlib.suppress(Exception):
                    runner.send_message(HURRY_MSG, None, client_id=client.id)
                    cut += 1
    if first and cut and run.role != "worker":
        at = now - (run.started or now)
        text = (f"a later signal ({how}) at {at:.1f} s cut the graceful stop short: requests "
                "then in flight were not recorded")
        run.partial = f"{run.partial}; {text}" if run.partial else text
    log.warning("stopping the users now (%s); the reports are still written", how)


def _awaited(run: HarnessRun, runner) -> list[str]:
    return [c.id for c in runner.clients.all
            if c.state != STATE_MISSING and c.id not in run.finals]


def _note_lost_workers(run: HarnessRun, runner) -> None:
    """Say in run.json which worker's data ends early, and when."""
    states = {c.id: c.state for c in runner.clients.all}
    started = run.started or time.time()
    lost = []
    by_index = sorted(run.workers.items(), key=lambda kv: (kv[1].get("index") is None,
                                                            kv[1].get("index") or 0, kv[0]))
    for client_id, info in by_index:
        if client_id in run.finals:
            info["state"] = "complete"
            if info["final"] < (run.stopping or time.time()) - 1:  # stopped on its own (SIGTERM)
                info["left_at_s"] = round(info["final"] - started, 1)
            continue
        state = states.get(client_id)
        info["state"] = "missing" if state in (STATE_MISSING, None) else "no final report"
        last = info.get("last_report")
        info["data_until_s"] = round(last - started, 1) if last else 0.0
        name = f"worker {info['index']} ({client_id})" if info.get("index") is not None \
            else f"worker {client_id}"
        if last:
            lost.append(f"{name} {info['state']}: its data ends at {info['data_until_s']} s "
                        f"(last of {info['reports']} reports){_lost_estimate(run, info)}")
        else:
            info["lost_estimate"] = None
            lost.append(f"{name} {info['state']}: it sent no data (how many requests it "
                        "made is unknown)")
    if lost:
        what = "; ".join(lost)
        run.partial = f"{run.partial}; {what}" if run.partial else what
        run.lost_workers = True


def _lost_estimate(run: HarnessRun, info: dict) -> str:
    """The requests a worker made after its last report, estimated from its last rate over
    the seconds it went on (until its last heartbeat, or until the stop): run.json
    `workers[ID].lost_estimate`, and the words for the note."""
    last = info["last_report"]
    ended = run.stopping or time.time()
    if info.get("alive_at"):
        # Last seen with a full heartbeat count: it died within about an interval of that
        # (the count stays full up to an interval after its last heartbeat).
        ended = min(ended, info["alive_at"])
    seconds = max(0.0, ended - last)
    rate = info.get("rate")
    if rate is None:
        info["lost_estimate"] = None
        return ", how many requests were lost with it is unknown"
    info["lost_estimate"] = estimate = round(rate * seconds)
    info["lost_seconds"] = round(seconds, 1)
    return (f", about {estimate:,} requests lost with it (its last rate, "
            f"{rate:,.1f} req/s, over the {seconds:.1f} s it went on after that report)")


@events.test_stop.add_listener
def on_test_stop(environment, **_kwargs) -> None:
    run: HarnessRun = environment.nodeport_run
    if run.recorder is None or run.role == "worker" or run.stopped is not None:
        return
    run.stopped = time.time()
    try:
        _write(environment, run)
    finally:
        if run.written is not None:
            run.written.set()


def _write(environment, run: HarnessRun) -> None:
    stop_watch(run)
    stop_progress(run)
    run.recorder.close()  # folds live connections, closes the raw file
    collect_lab_faults(run)  # faults given to the lab during the run, by anyone
    try:
        write_outputs(run)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        environment.process_exit_code = 2
        return
    if run.lost_workers:
        print(f"warning: partial run: {run.partial}", file=sys.stderr, flush=True)
        raise_exit_code(environment, 1)
    if run.interrupted:
        print(f"{run.interrupted}: reports are partial: {run.run_dir}", file=sys.stderr,
              flush=True)


def _before_runner_quits(environment, **_kwargs) -> None:
    """Ctrl-C or SIGTERM while the run is going (Locust fires `quitting` first).

    Locust shuts down once per signal (SIGTERM's handler runs in a greenlet of its own): a
    later shutdown while the first still stops the run only hastens it, then waits for the
    first to write everything and exit, instead of exiting from under it."""
    run: HarnessRun | None = getattr(environment, "nodeport_run", None)
    if run is None or run.recorder is None:
        return
    if run.quitting:
        _hurry(environment, run, "SIGTERM" if gevent.getcurrent().parent is not None
               else "Ctrl-C")
        _wait_for_the_first_stop(run)
        return
    run.quitting = True
    if run.role == "worker":
        # A worker stopped on its own (a pod evicted, a laptop closed): hand the master what
        # it recorded since its last report instead of losing it.
        if getattr(environment.runner, "state", None) not in (None, "stopped", "ready"):
            with contextlib.suppress(Exception):
                _send_final(environment)
    elif run.stopped is None and run.interrupted is None:
        if run.stop_began:
            # Its time was up and its stop under way when the signal came: hasten that
            # stop, and let it write the reports.
            _hurry(environment, run, "SIGTERM" if gevent.getcurrent().parent is not None
                   else "Ctrl-C")
            _wait_for_the_first_stop(run, forever=False)
        else:
            _interrupted(environment, run)


def _wait_for_the_first_stop(run: HarnessRun, forever: bool = True) -> None:
    """Until the reports are written; then (`forever`) let the first shutdown end the
    process: this one returning would exit it while the lab is still being stopped."""
    if run.written is not None:
        run.written.wait()
    if forever:
        gevent.sleep(30)  # (the first shutdown exits long before)


@events.quitting.add_listener
def on_quitting(environment, **_kwargs) -> None:
    run: HarnessRun | None = getattr(environment, "nodeport_run", None)
    if run is None:
        return
    if not run.quitting:
        _before_runner_quits(environment)  # (already done, unless init never ran)
    if run.recorder is not None and run.role != "worker" and run.stopped is None:
        on_test_stop(environment)  # the runner did not stop the run: write what there is
    _close_lab(run)


@events.quit.add_listener
def on_quit(**_kwargs) -> None:
    """Locust has shut down (its own tables printed, with --locust-stats): a headless run's
    end-of-run view comes last, its report line the output's last line."""
    run = this_process.run
    if run is not None:
        show_summary(run)


def _interrupted(environment, run: HarnessRun) -> None:
    """Ctrl-C or SIGTERM mid-run: stop the users (requests in flight finish, bounded by the
    stop timeout), write the reports marked partial, exit non-zero."""
    # Locust calls shutdown() from the main greenlet after Ctrl-C's KeyboardInterrupt and
    # from a signal greenlet for SIGTERM: the only way to tell them apart from an event.
    main = gevent.getcurrent().parent is None
    code, how = (130, "interrupted (Ctrl-C)") if main else (143, "terminated (SIGTERM)")
    elapsed = time.time() - (run.started or time.time())
    planned = getattr(run.environment.parsed_options, "run_time", None)
    text = f"{how} after {elapsed:.1f} s" + (f" of {planned} s" if planned else "")
    run.partial = f"{text}; {run.partial}" if run.partial else text
    run.interrupted = how
    raise_exit_code(environment, code)
    if run.role == "master":
        # The master's own quitting listener comes next: its stop fires test_stopping (the
        # workers' finals) and test_stop (the reports), then it tells the workers to quit.
        # Stopping here instead would unregister the workers and leave them running.
        return
    with contextlib.suppress(Exception):  # the reports matter more than a clean stop
        environment.runner.stop()
    if run.stopped is None:
        on_test_stop(environment)
