"""Real Locust runs against the lab: strategies go where they say, and nothing is lost.

Reconciliation compares what the client recorded per pod with what each lab pod counted
serving (its own /api/stats), exactly, in one process, with --processes 2, and with a
master plus two workers.
"""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import stop_process
from lab_runs import delta, load, pod_successes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lab(lb_lab):
    """The session's LoadBalancer lab (conftest.py): these runs only send it traffic."""
    return lb_lab


def harness_run(tmp_path, *args, lab=None, run_id="r", users=4, seconds=3):
    cmd = [sys.executable, "-m", "harness.cli", "run", "--report-dir", str(tmp_path),
           "--run-id", run_id, "-u", str(users), "-t", f"{seconds}s", *args]
    if lab is not None:
        cmd += ["--kubeconfig", str(lab.kubeconfig)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    run_dir = tmp_path / run_id
    return proc, run_dir


def test_single_node_like_the_naive_client_reconciles(lab, tmp_path):
    before = lab.stats()
    proc, run_dir = harness_run(tmp_path, "--entry", "single", lab=lab)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    assert set(spread["entry_nodes"]) == {"node-1"}
    assert spread["totals"]["failures"] == 0 and spread["totals"]["requests"] > 100
    assert pod_successes(spread) == delta(before, lab.stats())
    target = load(run_dir, "target.json")
    assert target["service"]["port"]["node_port"] == lab.node_port
    run = load(run_dir, "run.json")
    assert run["entry"] == "single" and run["stop_timeout_s"] > 0 and not run["partial"]
    assert lab.token not in json.dumps(run) + json.dumps(target)


def test_all_nodes_within_one_percent_and_keepalive_pins(lab, tmp_path):
    proc, run_dir = harness_run(tmp_path, "--entry", "all", lab=lab, users=6)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    counts = [spread["entry_nodes"][n]["requests"] for n in ("node-1", "node-2", "node-3")]
    mean = sum(counts) / 3
    assert all(abs(c - mean) <= 0.01 * mean for c in counts), counts
    # keep-alive: every client connection stayed on exactly one pod
    distinct = spread["connections"]["distinct_pods"]
    assert set(distinct) == {"1"}, distinct


def test_close_gives_each_request_its_own_connection_and_pod_choice(lab, tmp_path):
    proc, run_dir = harness_run(tmp_path, "--entry", "single", "--connection", "close",
                                lab=lab, users=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    # A TCP connection per request, each on the one pod kube-proxy chose for it...
    conns, totals = spread["connections"], spread["totals"]
    assert conns["tracked"] == conns["requests"] == totals["requests"] > 100
    assert conns["distinct_pods"] == {"1": totals["successes"]}
    # ...so two clients through one node reached all 6 pods behind it (Cluster policy).
    assert len(pod_successes(spread)) == 6


def test_sticky_random_and_lb(lab, tmp_path):
    proc, run_dir = harness_run(tmp_path, "--entry", "sticky", lab=lab, users=3, run_id="s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(load(run_dir, "spread.json")["entry_nodes"]) == {"node-1", "node-2", "node-3"}
    proc, run_dir = harness_run(tmp_path, "--entry", "random", lab=lab, run_id="rnd")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(load(run_dir, "spread.json")["entry_nodes"]) == {"node-1", "node-2", "node-3"}
    proc, run_dir = harness_run(tmp_path, "--entry", "lb", lab=lab, run_id="lb")
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    assert set(spread["entry_nodes"]) == {"lb"} and spread["totals"]["failures"] == 0


def test_processes_2_reconciles(lab, tmp_path):
    before = lab.stats()
    proc, run_dir = harness_run(tmp_path, "--processes", "2", lab=lab)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    assert spread["totals"]["requests"] > 100
    assert pod_successes(spread) == delta(before, lab.stats())


def test_master_and_two_workers_reconcile(lab, tmp_path):
    before = lab.stats()
    base = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py")]
    env = {**os.environ, "LOCUST_KUBECONFIG": str(lab.kubeconfig)}
    port = str(5557 + (os.getpid() % 1000) + 1000)
    master = subprocess.Popen(
        base + ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                "--headless", "--expect-workers", "2", "-u", "4", "-r", "4", "-t", "4s",
                "--only-summary", "--report-dir", str(tmp_path), "--run-id", "dist"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(
        base + ["--worker", "--master-host", "127.0.0.1", "--master-port", port],
        env={**os.environ}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True) for _ in range(2)]
    try:
        _, err = master.communicate(timeout=90)
        assert master.returncode == 0, err[-3000:]
    finally:
        for w in workers:
            stop_process(w, timeout=20)
    spread = load(tmp_path / "dist", "spread.json")
    assert spread["totals"]["requests"] > 100
    assert pod_successes(spread) == delta(before, lab.stats())
    run = load(tmp_path / "dist", "run.json")
    assert len(run["workers"]) == 2 and not run["partial"]


class BadReplies(BaseHTTPRequestHandler):
    """Answers in turn: no pod named, non-JSON, HTTP 500, and a good reply."""

    counter = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.lock:
            BadReplies.counter += 1
            kind = BadReplies.counter % 4
        status, body = [(200, b'{"message": "no pod here"}'), (200, b"<html>oops</html>"),
                        (500, b"boom"), (200, b'{"host": "pod-ok"}')][kind]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_bad_replies_are_counted_not_crashed(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BadReplies)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        inventory = tmp_path / "inv.yaml"
        inventory.write_text(
            f"service: {{nodePort: {server.server_address[1]}}}\n"
            "nodes: [{name: only, address: 127.0.0.1}]\n")
        proc, run_dir = harness_run(tmp_path, "--inventory", str(inventory), users=2, seconds=2)
    finally:
        server.shutdown()
    assert proc.returncode == 1, proc.stderr[-2000:]  # failures -> Locust's exit code 1
    assert "Traceback" not in proc.stderr
    spread = load(run_dir, "spread.json")
    entry = spread["entry_nodes"]["only"]
    assert entry["failure_kinds"].get("http_500", 0) > 0 or entry["http_status"].get("500", 0) > 0
    pods = entry["pods"]
    assert pods.get("pod-ok", 0) > 0 and pods.get("unknown", 0) > 0
    assert pods["unknown"] >= pods["pod-ok"]  # two unreadable replies per good one
