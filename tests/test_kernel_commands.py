"""`demo --datapath kernel` and `capacity --lab --lab-datapath kernel`: the commands that
start their own lab run it on the kernel datapath, and what they claim still holds.

Needs what ``test_kernel_datapath.py`` needs and skips with its reason. Every address is in
198.18.0.0/15; every subprocess has a timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The demo's own checks, run here against the kernel demo (the `demo` fixture below). Those
# left out measure what the kernel datapath does differently on purpose: with node-1 down,
# the other nodes' connections to node-1's pods time out too (its endpoints stay until the
# control plane notices), so "fail-all" fails more than node-1's third and "fail-lb" keeps
# failing after the LB's health check (checked below for what they must still say); and a
# restart's API call returns once the replacement's process listens, which under the demo's
# load can take longer than test_demo's 1 s between the lab's log and the run's marker.
#
# Only the scenarios whose claims the kernel datapath changes run here (the suite's time):
# the naive, keep-alive and Local claims on the kernel datapath are checked by
# test_real_demo.py, whose real lab runs on it too.
from test_demo import (  # noqa: F401  (collected here, against this module's fixture)
    claim,
    run_of,
    spread_of,
    test_every_request_reconciles_with_the_pods,
)
from test_kernel_datapath import MISSING

pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"kernel datapath: {MISSING}")
ROOT = Path(__file__).resolve().parents[1]
KERNEL_SCENARIOS = ("fail-single", "fail-all", "fail-lb", "restart-keepalive", "restart-close")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel-demo")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "demo", "--quick", "--datapath", "kernel",
         "--only", ",".join(KERNEL_SCENARIOS), "--report-dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    (demo_dir,) = out.glob("demo-*")
    data = json.loads((demo_dir / "demo.json").read_text())
    return {"dir": demo_dir, "data": data, "elapsed": elapsed, "stdout": proc.stdout}


def test_the_demo_ran_on_the_kernel_datapath(demo):
    assert demo["elapsed"] < 240, demo["elapsed"]
    for node in demo["data"]["ground_truth"]["nodes"]:
        assert node["external_ip"].startswith("198.18."), node
    assert all(p["ip"].startswith("198.19.") for p in demo["data"]["ground_truth"]["pods"])
    assert [s["id"] for s in demo["data"]["scenarios"]] == list(KERNEL_SCENARIOS)
    assert demo["data"]["ground_truth"]["datapath"] == "kernel"


@pytest.mark.parametrize("scenario", ["fail-single", "fail-all"])
def test_node_failure_fails_after_the_fault_and_by_time_outs(demo, scenario):
    spread = spread_of(demo, scenario)
    (fault,) = [f for f in run_of(demo, scenario)["faults"] if f["action"] == "down"]
    assert fault["name"] == "node-1"
    rows = [row for rows in spread["series"].values() for row in rows]
    before = [row for row in rows if row["t"] < int(fault["time"])]
    assert any(row["failures"] for row in rows if row["t"] >= int(fault["time"]))
    # Before the fault, next to none: on the kernel datapath a new connection can lose its
    # SYN to a pod's TIME-WAIT socket (kube-proxy's MASQUERADE --random-fully picks a port
    # an earlier scenario's closed connection used: PAWS), and a short --timeout can expire
    # on the 1 s retransmit. That is the kernel's doing, not the fault's.
    # At most each user's first connection, in the run's first seconds (seen: 6 of 6 users
    # timing out at 1.0 s after a scenario that left the pods full of TIME-WAIT sockets).
    run = run_of(demo, scenario)
    early = [row for row in before if row["failures"]]
    assert sum(row["failures"] for row in early) <= run["users"], early
    assert all(row["t"] <= run["started"] + 2 and set(row.get("kinds", {})) <= {"timeout"}
               for row in early), early
    for entry in spread["entry_nodes"].values():
        assert set(entry["failure_kinds"]) <= {"timeout"}, entry["failure_kinds"]
    c = claim(demo, f"{scenario}-impact")
    if scenario == "fail-single":
        assert c["figures"]["fail_ratio"] > 0.9, c
    else:
        # node-1's third, and more: connections the others send to node-1's pods time out.
        assert 1 / 3 - 0.1 < c["figures"]["fail_ratio"] < 1.0, c


def test_the_lb_claim_quotes_the_run(demo):
    spread = spread_of(demo, "fail-lb")
    c = claim(demo, "lb-failover")
    assert c["figures"]["run_fail_ratio"] == pytest.approx(
        spread["totals"]["failures"] / spread["totals"]["requests"], abs=0.001)
    assert c["figures"]["run_fail_ratio"] < 0.2  # the LB left the dead node, mostly
    assert f"{spread['totals']['failures']:,}" in c["text"]


def test_the_restart_claim_names_the_lab_s_replacements(demo):
    c = claim(demo, "pod-restart")
    f = c["figures"]
    restarts = [x for x in demo["data"]["ground_truth"]["faults"] if x["action"] == "restart"]
    assert [(x["name"], x["replacement"]) for x in restarts] == [
        (f["restarted_pod"], f["keepalive_pod"]), (f["keepalive_pod"], f["close_pod"])]
    assert f["keepalive_starved"] and f["keepalive_share"] < f["keepalive_expected_share"] / 4
    assert f["close_share"] > f["close_expected_share"] / 2 and f["close_successes_after"] > 0


def test_capacity_runs_on_a_kernel_lab(tmp_path):
    """A very short capacity run (two 3 s steps) on a kernel lab."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "capacity", "--lab", "--lab-datapath", "kernel",
         "--lab-nodes", "2", "--lab-pods", "2", "--lab-pod-service-ms", "20",
         "--step-users", "2", "--max-users", "4", "--step-time", "3s", "--slo-p95-ms", "500",
         "--report-dir", str(tmp_path), "--run-id", "k", "--plotlyjs", "cdn"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    run_dir = tmp_path / "k"
    target = json.loads((run_dir / "target.json").read_text())
    assert '"198.18.' in json.dumps(target)  # the kernel lab's node addresses
    result = json.loads((run_dir / "capacity.json").read_text())
    assert len(result["steps"]) == 2 and result["lab"]["pods"] == 2
    spread = json.loads((run_dir / "spread.json").read_text())
    assert spread["totals"]["requests"] > 0
