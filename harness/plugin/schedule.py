"""What runs beside the users on the master (or the local runner): scheduled lab faults
(``--lab-fault``) and the ``--progress`` line."""

from __future__ import annotations

import logging
import sys
import time

import gevent

from harness.core.faults import Fault, parse_specs
from harness.errors import HarnessError
from harness.plugin.context import HarnessRun, raise_usage
from harness.targets import lab_faulter

log = logging.getLogger("nodeport-harness")


def schedule_faults(run: HarnessRun, options) -> None:
    """Fire each --lab-fault at its time (checked against the target and the lab at start)."""
    faults = parse_specs(options.lab_fault)
    if not faults:
        return
    inject = run.inject_fault
    if inject is None:  # checked at start; only a library caller gets here without it
        try:
            inject = lab_faulter(options, run.lab)
        except HarnessError as err:
            raise_usage(str(err))
            return

    def fire(fault: Fault) -> None:
        try:
            inject(fault)
            t = time.time()
            run.faults.append({**fault.to_dict(), "t": round(t - run.started, 3), "time": t})
            run.recorder.mark(t, fault.marker)
        except Exception as err:
            log.error("fault %s failed: %s", fault.to_dict(), err)

    for fault in faults:
        gevent.spawn_later(fault.at, fire, fault)


def progress(run: HarnessRun) -> None:
    started = run.started
    while run.stopped is None and run.started == started:
        gevent.sleep(1.0)
        totals = run.recorder.totals() if run.recorder else {}
        print(f"\r[{time.time() - started:5.0f} s] {totals.get('requests', 0):>8} requests, "
              f"{totals.get('failures', 0):>6} failed", end="", file=sys.stderr, flush=True)
