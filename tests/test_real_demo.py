"""`demo --control-plane real`: the demo on the real lab (etcd, kube-apiserver, the
controllers, kube-scheduler and kube-proxy from `nodeport-harness lab build`, the lab's
kubelet, the kernel datapath), and what its findings claim still holds.

The same checks as the kernel datapath's demo (test_kernel_commands.py, which draws on
test_demo.py), against this module's demo. Needs what the real lab needs
(test_real_lab.py) and skips naming it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_demo import (  # noqa: F401  (collected here, against this module's fixture)
    claim,
    run_of,
    spread_of,
    test_every_request_reconciles_with_the_pods,
    test_keepalive_pins_connections_close_spreads,
    test_local_policy_no_hops_and_empty_node_drops,
    test_naive_scenario_all_ingress_on_node_1,
    test_page_and_every_scenario,
)
from test_kernel_commands import (  # noqa: F401
    test_node_failure_fails_after_the_fault_and_by_time_outs,
    test_the_lb_claim_quotes_the_run,
    test_the_restart_claim_names_the_lab_s_replacements,
)
from test_kernel_datapath import MISSING
from test_real_lab import _binaries

# The first test may build the binaries (minutes on a fresh machine, without .ci/run's build).
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"kernel datapath: {MISSING}"),
              pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    _binaries()
    out = tmp_path_factory.mktemp("real-demo")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "demo", "--quick", "--control-plane", "real",
         "--report-dir", str(out)],
        capture_output=True, text=True, timeout=400, cwd=ROOT, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    (demo_dir,) = out.glob("demo-*")
    data = json.loads((demo_dir / "demo.json").read_text())
    return {"dir": demo_dir, "data": data, "elapsed": elapsed, "stdout": proc.stdout}


def test_the_demo_ran_on_the_real_control_plane(demo):
    from harness.lab.binaries import KUBERNETES_VERSION

    assert demo["elapsed"] < 300, demo["elapsed"]
    truth = demo["data"]["ground_truth"]
    assert (truth["control_plane"], truth["datapath"]) == ("real", "kernel")
    assert truth["kubernetes_version"] == KUBERNETES_VERSION
    page = (demo["dir"] / "index.html").read_text()
    assert f"Measured on the real lab (Kubernetes {KUBERNETES_VERSION}" in page
    pods = demo["data"]["ground_truth"]["pods"]
    assert len(pods) == 6 and all(p["ip"].startswith("198.19.") for p in pods)
    # The local scenario's node-3 was cordoned and drained the way one does it for real.
    local = json.loads((demo["dir"] / "local" / "target.json").read_text())
    assert not [e for e in local["endpoints"] if e["node"] == "node-3"], local["endpoints"]
