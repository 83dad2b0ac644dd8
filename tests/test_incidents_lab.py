"""Incidents on real runs: healthy runs of every entry strategy show none, and a node taken
down (or a pod killed) from the CLI at a random moment, announced to nobody, is found within
2 s of when it happened, in one process and with --processes 2. Real Locust runs through
`nodeport-harness run` against labs on loopback; short and bounded."""

from __future__ import annotations

import random
import threading
import time

import pytest
from lab_runs import harness_cmd, load, run

SECONDS = 9  # each faulty run
TIMEOUT = "1.5"  # --timeout: time-outs are reported soon enough to be seen in the run


def harness_run(kubeconfig, tmp_path, run_id, *args, timeout=90):
    proc = run(harness_cmd("run", "--kubeconfig", str(kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", run_id, "--plotlyjs", "cdn", *args),
               timeout=timeout)
    assert proc.returncode in (0, 1), proc.stderr
    return tmp_path / run_id


@pytest.mark.parametrize("entry, extra", [
    ("all", ()), ("random", ()), ("single", ()), ("sticky", ()),
    ("all", ("--connection", "close")),
])
def test_healthy_runs_show_no_incident(lab, tmp_path, entry, extra):
    run_dir = harness_run(lab.kubeconfig, tmp_path, f"healthy-{entry}", "--entry", entry,
                          "-u", "6", "-t", "4s", *extra)
    summary = load(run_dir, "summary.json")
    assert summary["totals"]["requests"] > 200 and summary["totals"]["failures"] == 0
    assert summary["incidents"] == []
    assert "failed from" not in (run_dir / "index.html").read_text()


def test_a_healthy_lb_run_shows_no_incident(lb_lab, tmp_path):
    run_dir = harness_run(lb_lab.kubeconfig, tmp_path, "healthy-lb", "--entry", "lb",
                          "-u", "6", "-t", "4s")
    assert load(run_dir, "summary.json")["incidents"] == []


@pytest.fixture(scope="module")
def fault_lab(make_module_lab):
    return make_module_lab(nodes=3, placement=[2, 2, 2])


def fault_later(lab, at: float, *words: str) -> tuple[threading.Thread, list[float]]:
    """Run `nodeport-harness lab fault WORDS` `at` seconds from now (in a thread); the list
    gets the moment it took effect (the middle of the command's own run)."""
    when: list[float] = []

    def fire() -> None:
        time.sleep(at)
        before = time.time()
        proc = run(harness_cmd("lab", "--state-dir", str(lab.kubeconfig.parent), "fault",
                               *words), timeout=30)
        assert proc.returncode == 0, proc.stderr
        when.append((before + time.time()) / 2)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread, when


@pytest.mark.parametrize("processes", [None, 2])
def test_a_node_down_from_the_cli_is_found_near_its_start(fault_lab, tmp_path, processes):
    at = random.uniform(2.5, 4.5)
    extra = ("--processes", str(processes)) if processes else ()
    thread, when = fault_later(fault_lab, at + 2.0, "node", "node-2", "down")  # + start-up
    try:
        run_dir = harness_run(fault_lab.kubeconfig, tmp_path, f"down-{processes}",
                              "--entry", "all", "-u", "6", "-t", f"{SECONDS}s",
                              "--timeout", TIMEOUT, *extra)
    finally:
        thread.join(30)
        fault_lab.node_up("node-2")
    started = load(run_dir, "run.json")["started"]
    true_start = when[0] - started
    summary = load(run_dir, "summary.json")
    nodes = [i for i in summary["incidents"] if i["scope"] == "node"]
    assert [i["name"] for i in nodes] == ["node-2"], summary["incidents"]
    assert abs(nodes[0]["start_s"] - true_start) <= 2.0, (nodes[0], true_start)
    assert nodes[0]["kinds"].get("timeout")
    # Matched to what was seen near its start: the lab's fault log and the node's NotReady.
    causes = " ".join(nodes[0]["caused_by"])
    assert "node node-2 down" in causes and "(lab fault)" in causes, nodes[0]
    assert "node-2 NotReady" in causes, nodes[0]
    # The headline names it, not a whole-run average.
    assert "Requests through node-2 failed from" in load(run_dir, "summary.json")["findings"][0][
        "text"]
    page = (run_dir / "index.html").read_text()
    assert "Incidents found in the data" in page and "Requests through node-2 failed" in page


def test_a_pod_killed_from_the_cli_is_found(fault_lab, tmp_path):
    victim = fault_lab.pods[0]["name"]
    at = random.uniform(2.5, 4.0)
    thread, when = fault_later(fault_lab, at + 2.0, "pod", victim, "kill")
    try:
        run_dir = harness_run(fault_lab.kubeconfig, tmp_path, "kill", "--entry", "all",
                              "--connection", "close", "-u", "6", "-t", f"{SECONDS}s")
    finally:
        thread.join(30)
    started = load(run_dir, "run.json")["started"]
    summary = load(run_dir, "summary.json")
    pods = [i for i in summary["incidents"] if i["scope"] == "pod"]
    assert [i["name"] for i in pods] == [victim], summary["incidents"]
    assert abs(pods[0]["start_s"] - (when[0] - started)) <= 2.0
    assert not [i for i in summary["incidents"] if i["scope"] != "pod"]
