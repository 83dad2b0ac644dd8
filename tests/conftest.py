"""What the tests share: the labs they run against, and stopping the processes they start.

Labs (every one on loopback, each in its own process, stopped when its scope ends):

- ``lab``: the default lab, NodePort, three nodes running 3, 2 and 1 pods; ``lb_lab``: the
  same with a LoadBalancer (and a restricted token). Both are started once per session, for
  tests that only read them and send traffic: no faults, no change to a node, pod or Service.
  Counting what the pods served still works (``lab.stats()`` before and after): tests run
  one at a time.
- ``make_lab(**options)`` (one test) and ``make_module_lab(**options)`` (one module) start a
  lab of the test's own, for tests that inject faults or change the lab. A module whose tests
  share such a lab overrides ``lab`` with one of them.

Processes: ``stop_process(proc)`` (``from conftest import stop_process``) stops a process
the test started, and only that one.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process this test started: SIGTERM, up to `timeout` seconds to exit (a harness
    run forwards it to its Locust child, which writes its reports), then SIGKILL. A process
    that already ended is only reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=10)


@contextlib.contextmanager
def _lab_starter(folder: Callable[[], Path]) -> Iterator[Callable[..., Any]]:
    """``start(**LabCluster options)`` -> a running lab; every one is stopped on exit."""
    from harness.lab.cluster import LabCluster

    with contextlib.ExitStack() as labs:
        def start(**options: Any) -> LabCluster:
            options.setdefault("state_dir", folder())
            return labs.enter_context(LabCluster(**options))

        yield start


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The default lab, shared by the session: read it, send it traffic, change nothing."""
    with _lab_starter(lambda: tmp_path_factory.mktemp("lab")) as start:
        yield start(nodes=3, placement=[3, 2, 1])


@pytest.fixture(scope="session")
def lb_lab(tmp_path_factory):
    """The default lab behind a LoadBalancer, with a restricted (read-nothing) kubeconfig
    too; shared by the session like ``lab``."""
    with _lab_starter(lambda: tmp_path_factory.mktemp("lb-lab")) as start:
        yield start(nodes=3, placement=[3, 2, 1], service_type="LoadBalancer",
                    restricted_token=True)


@pytest.fixture
def make_lab(tmp_path):
    """Start labs of this test's own (``make_lab(nodes=2, policy="Local")``)."""
    numbers = itertools.count(1)
    with _lab_starter(lambda: tmp_path / f"lab-{next(numbers)}") as start:
        yield start


@pytest.fixture(scope="module")
def make_module_lab(tmp_path_factory):
    """Start labs shared by this module's tests, stopped after its last test."""
    with _lab_starter(lambda: tmp_path_factory.mktemp("lab")) as start:
        yield start
