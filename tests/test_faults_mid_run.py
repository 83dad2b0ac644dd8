"""Faults during a run: a node black-holed and back, a pod killed, a worker killed, Ctrl-C and
SIGTERM, the API going away after discovery, users stuck on a dead node at stop time.

Every run is real (Locust in a subprocess) against a lab on loopback, a few seconds long.
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import subprocess
import threading
import time

import psutil
import pytest
import yaml
from conftest import stop_process
from lab_runs import (
    delta,
    harness_cmd,
    load,
    locust_cmd,
    pod_successes,
    run,
    start,
    wait_for_traffic,
)


@pytest.fixture(scope="module")
def lab(make_module_lab):
    """This module's own lab: its tests take nodes down and kill a pod."""
    return make_module_lab(nodes=3, placement=[2, 2, 2])


def harness_run(lab, tmp_path, run_id, *args, users=3, seconds=3, timeout=90):
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", run_id, "-u", str(users), "-t",
                           f"{seconds}s", "--plotlyjs", "cdn", *args), timeout=timeout)
    return proc, tmp_path / run_id


def test_node_down_and_back_is_a_timeout_on_that_node_at_that_time(lab, tmp_path):
    before = lab.stats()
    # sticky: two users per node, so the other nodes' users never wait on node-2.
    proc, run_dir = harness_run(
        lab, tmp_path, "down", "--entry", "sticky", "--timeout", "1",
        "--lab-fault", "1.5:node:node-2:down", "--lab-fault", "3.5:node:node-2:up",
        users=6, seconds=6)
    assert proc.returncode == 1, proc.stderr[-3000:]  # failures: Locust's exit code 1
    assert "Traceback" not in proc.stderr
    spread, info = load(run_dir, "spread.json"), load(run_dir, "run.json")
    entries = spread["entry_nodes"]
    assert entries["node-2"]["failure_kinds"] == {"timeout": entries["node-2"]["failures"]}
    assert entries["node-2"]["failures"] > 0
    assert entries["node-1"]["failures"] == entries["node-3"]["failures"] == 0
    down, up = (f["time"] for f in info["faults"])
    assert [f["action"] for f in info["faults"]] == ["down", "up"]

    # The timeline: node-2's failures fall between its fault and its return (plus one
    # timeout); it serves again afterwards; the other nodes serve every second throughout.
    series = {name: {row["t"]: row for row in rows} for name, rows in spread["series"].items()}
    failing = [t for t, row in series["node-2"].items() if row["failures"]]
    assert failing and min(failing) >= math.floor(down) and max(failing) <= up + 1 + 1
    assert any(row["requests"] > row["failures"] for t, row in series["node-2"].items()
               if t > up + 1)
    for name in ("node-1", "node-3"):
        for second in range(math.floor(down), math.floor(up) + 1):
            assert series[name][second]["requests"] > 0, (name, second)
    summary = load(run_dir, "summary.json")
    fault = next(f for f in summary["faults"] if f["action"] == "down")
    assert fault["name"] == "node-2" and fault["failures"] > 0
    assert fault["via_node_share"] == 1.0
    timeline = summary["timeline"]["nodes"]["node-2"]
    assert any(row["failures"] for row in timeline)
    assert any(f["id"] == "fault:node-2" for f in summary["findings"])
    # Successful requests still reconcile with what the pods served.
    assert pod_successes(spread) == delta(before, lab.stats())


def test_stuck_users_cannot_stall_the_stop(lab, tmp_path):
    """A black-holed node: each request ends at --timeout, and stop waits for no longer."""
    lab.node_down("node-3")
    try:
        started = time.monotonic()
        proc, run_dir = harness_run(lab, tmp_path, "stuck", "--entry", "single", "--node",
                                    "node-3", "--timeout", "1.5", users=2, seconds=2)
        elapsed = time.monotonic() - started
        assert proc.returncode == 1, proc.stderr[-3000:]
        # ~1.5 s start-up, 2 s run, at most one 1.5 s timeout in flight, reports.
        assert elapsed < 2 + 1.5 + 6, elapsed
        spread, info = load(run_dir, "spread.json"), load(run_dir, "run.json")
        assert set(spread["entry_nodes"]["node-3"]["failure_kinds"]) == {"timeout"}
        assert spread["totals"]["successes"] == 0
        assert info["stop_timeout_s"] == 1.5 + 2 and not info["partial"]
        # The default timeout is short enough for a demo and long enough for a busy pod.
        assert load(run_dir, "run.json")["options"]["timeout"] == 1.5
        default = run(harness_cmd("run", "--help")).stdout
        assert "(default 5.0)" in " ".join(default.split())

        # SIGTERM while every user waits on the dead node: out within a timeout or so.
        proc = start(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                                 str(tmp_path), "--run-id", "stuck-term", "-u", "2", "-t",
                                 "60s", "--entry", "single", "--node", "node-3",
                                 "--timeout", "1.5", "--plotlyjs", "cdn"))
        try:
            time.sleep(3)
            signalled = time.monotonic()
            proc.terminate()
            proc.communicate(timeout=30)
            assert time.monotonic() - signalled < 1.5 + 2 + 3
            assert proc.returncode == 143
        finally:
            stop_process(proc)
        info = load(tmp_path / "stuck-term", "run.json")
        assert info["partial"].startswith("terminated (SIGTERM)")
    finally:
        lab.node_up("node-3")


@pytest.mark.parametrize(("how", "sig", "code", "text"), [
    ("nodeport-harness run", "SIGTERM", 143, "terminated (SIGTERM)"),
    ("nodeport-harness run", "SIGINT", 130, "interrupted (Ctrl-C)"),
    ("nodeport-harness run --processes 2", "SIGTERM", 143, "terminated (SIGTERM)"),
    ("locust --headless", "SIGINT", 130, "interrupted (Ctrl-C)"),
])
def test_signal_writes_partial_reports_and_exits_non_zero(lab, tmp_path, how, sig, code, text):
    before = lab.stats()
    if how == "locust --headless":
        cmd = locust_cmd("--headless", "-u", "3", "-r", "3", "-t", "60s", "--only-summary",
                         "--kubeconfig", str(lab.kubeconfig), "--report-dir", str(tmp_path),
                         "--run-id", "sig", "--plotlyjs", "cdn")
    else:
        cmd = harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                          str(tmp_path), "--run-id", "sig", "-u", "4", "-t", "60s",
                          "--plotlyjs", "cdn", *how.split()[2:])
    proc = start(cmd)
    family: list[psutil.Process] = []
    try:
        wait_for_traffic(lab, before, proc)
        time.sleep(1.0)
        family = psutil.Process(proc.pid).children(recursive=True)  # Locust, its workers
        signalled = time.monotonic()
        proc.send_signal(getattr(signal, sig))  # to this process only
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - signalled < 8, "the stop was not prompt"
        _, alive = psutil.wait_procs(family, timeout=5)
        assert not alive, f"left running: {alive}"
    finally:
        stop_process(proc)
        for member in family:  # started by this test: never leave one behind
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    run_dir = tmp_path / "sig"
    info = load(run_dir, "run.json")
    assert info["partial"].startswith(text) and "of 60 s" in info["partial"]
    assert "This run is partial" in (run_dir / "index.html").read_text()
    assert "partial" in (run_dir / "summary.md").read_text()
    assert f"{text}: reports are partial" in err
    # Users finished their requests in flight before the reports: nothing lost.
    spread = load(run_dir, "spread.json")
    assert spread["totals"]["requests"] > 0
    assert pod_successes(spread) == delta(before, lab.stats())


def test_worker_killed_mid_run_the_master_keeps_what_it_got_and_says_so(lab, tmp_path):
    before = lab.stats()
    with socket.socket() as probe:  # a free port on loopback for the master
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    master = start(locust_cmd(
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
        "--headless", "--expect-workers", "2", "-u", "4", "-r", "4", "-t", "8s",
        "--only-summary", "--report-dir", str(tmp_path), "--run-id", "dist",
        "--plotlyjs", "cdn"), env={"LOCUST_KUBECONFIG": str(lab.kubeconfig)})
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [subprocess.Popen(
        locust_cmd("--worker", "--master-host", "127.0.0.1", "--master-port", port),
        stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL)
        for log in logs]
    try:
        began = wait_for_traffic(lab, before, master)
        time.sleep(3.8)  # past the workers' first report (every 3 s)
        workers[0].kill()
        killed = time.time()
        _, err = master.communicate(timeout=60)
        ended = time.time()
    finally:
        for process in (master, *workers):
            stop_process(process)
    assert master.returncode == 1, err[-3000:]  # partial data fails a CI run
    assert "Traceback" not in err
    assert ended - began < 8 + 10, "the master waited too long for the dead worker"
    run_dir = tmp_path / "dist"
    info, spread = load(run_dir, "run.json"), load(run_dir, "spread.json")
    states = sorted(w["state"] for w in info["workers"].values())
    assert states == ["complete", "missing"], (info["workers"], err[-2000:],
                                               [log.read_text()[-2000:] for log in logs])
    dead_id, dead = next((k, w) for k, w in info["workers"].items() if w["state"] == "missing")
    assert dead["reports"] >= 1
    assert 0 < dead["data_until_s"] <= killed - info["started"] + 0.5
    assert dead_id in info["partial"] and f"ends at {dead['data_until_s']} s" in info["partial"]
    assert f"warning: partial run: {info['partial']}" in err
    html = (run_dir / "index.html").read_text()
    assert "This run is partial" in html and dead_id in html
    assert dead_id in (run_dir / "summary.md").read_text().replace("\\_", "_")
    # The other worker's traffic runs to the end; nothing is counted twice.
    last_second = max(row["t"] for rows in spread["series"].values() for row in rows)
    assert last_second >= math.floor(info["started"]) + 7
    served = delta(before, lab.stats())
    recorded = pod_successes(spread)
    assert all(recorded.get(p, 0) <= n for p, n in served.items())
    assert set(recorded) <= set(served)
    assert sum(recorded.values()) < sum(served.values())  # the dead worker's last seconds
    # How many went with it: its last rate over the seconds it ran on after its last report.
    lost = sum(served.values()) - sum(recorded.values())
    estimate = dead["lost_estimate"]
    assert estimate > 0 and lost / 3 <= estimate <= lost * 3, (estimate, lost, dead)
    assert f"about {estimate:,} requests lost with it" in info["partial"]
    assert f"about {estimate:,} requests lost with it" in html
    assert f"about {estimate:,} requests lost with it" in (run_dir / "summary.md").read_text()


class Forwarder:
    """A TCP relay to the lab's API that can be cut: the API 'goes away' for its clients."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def test_api_going_away_after_discovery_does_not_stop_the_run(lab, tmp_path):
    host, port = lab.api_url.removeprefix("https://").split(":")
    relay = Forwarder((host, int(port)))
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    before = lab.stats()
    proc = start(harness_cmd("run", "--kubeconfig", str(kubeconfig), "--report-dir",
                             str(tmp_path), "--run-id", "noapi", "-u", "3", "-t", "4s",
                             "--plotlyjs", "cdn"))
    try:
        wait_for_traffic(lab, before, proc)
        relay.cut()
        cut = time.time()
        _, err = proc.communicate(timeout=60)
    finally:
        relay.cut()
        stop_process(proc)
    assert proc.returncode == 0, err[-3000:]
    # The watch on the cluster loses the API too: one warning line, whatever it retries.
    warnings = [line for line in err.splitlines() if "cannot watch the cluster" in line]
    assert len(warnings) == 1 and "cannot reach the Kubernetes API" in warnings[0], err[-3000:]
    assert "Traceback" not in err and "ERROR" not in err
    info = load(tmp_path / "noapi", "run.json")
    assert info["watch"]["errors"] >= 1 and info["watch"]["warning"] in warnings[0]
    spread = load(tmp_path / "noapi", "spread.json")
    assert spread["totals"]["failures"] == 0
    assert spread["end"] > cut + 2  # traffic went on for seconds after the API went
    assert pod_successes(spread) == delta(before, lab.stats())
    gone = run(harness_cmd("discover", "--kubeconfig", str(kubeconfig)))
    assert gone.returncode == 2 and "cannot reach the Kubernetes API" in gone.stderr


def test_pod_killed_mid_run_gets_no_more_traffic(lab, tmp_path):
    """Last in this module: the lab has one pod fewer afterwards."""
    import csv
    import gzip

    from harness.discovery import DiscoveryOptions, discover

    victim = lab.pods[0]["name"]
    before = lab.stats()
    raw = tmp_path / "requests.csv.gz"
    proc, run_dir = harness_run(lab, tmp_path, "kill", "--connection", "close", "--raw",
                                str(raw), "--lab-fault", f"1.5:pod:{victim}:kill",
                                users=3, seconds=4)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # resets at the kill may fail some
    assert "Traceback" not in proc.stderr
    info = load(run_dir, "run.json")
    killed_at = info["faults"][0]["time"]
    with gzip.open(raw, "rt") as handle:
        rows = list(csv.DictReader(handle))
    served_by_victim = [float(r["time"]) for r in rows if r["pod"] == victim and not r["failure"]]
    assert served_by_victim and max(served_by_victim) < killed_at + 0.2
    after = [r for r in rows if float(r["time"]) > killed_at + 0.5]
    assert after and all(r["pod"] != victim for r in after)
    assert sum(1 for r in after if not r["failure"]) > 100  # the run went on
    assert pod_successes(load(run_dir, "spread.json")) == delta(before, lab.stats())
    # Endpoints were updated: discovery no longer lists the pod.
    target = discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
    assert victim not in {e.pod for e in target.endpoints} and len(target.endpoints) == 5
