"""The lab as a whole: reconciliation, labs side by side, clean stop, and the `lab` command."""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lab_runs import MESSAGE, post

from harness.errors import LabError
from harness.lab.cluster import LabCluster, block_is_free, pid_alive


def listening(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def lab_addresses(lab: LabCluster) -> list[tuple[str, int]]:
    """Every address:port the lab listens on (nodes, pods, API)."""
    out = [(p["ip"], p["port"]) for p in lab.pods]
    for node in lab.nodes:
        out += [(node["external_ip"], lab.node_port), (node["internal_ip"], lab.node_port)]
    api = lab.api_url.rsplit(":", 1)
    out.append((api[0].split("//")[1], int(api[1])))
    return out


@pytest.fixture(scope="module")
def lab():
    with LabCluster(nodes=3, placement=[3, 2, 1], seed=21) as running:
        yield running


def test_reconciliation_pods_count_what_clients_received(lab: LabCluster) -> None:
    before = lab.stats()
    assert set(before) == {p["name"] for p in lab.pods}
    received: collections.Counter = collections.Counter()
    total = 0
    for index, node in enumerate(lab.nodes):
        for _ in range(60):  # a new connection each
            received[post(node["external_ip"], lab.node_port)["host"]] += 1
            total += 1
        conn = http.client.HTTPConnection(node["internal_ip"], lab.node_port, timeout=3)
        for _ in range(40 + index):  # and keep-alive
            received[_keepalive(conn)["host"]] += 1
            total += 1
        conn.close()
    for pod in lab.pods[:2]:  # direct to pods too
        for _ in range(25):
            received[post(pod["ip"], pod["port"])["host"]] += 1
            total += 1
    after = lab.stats()
    served = {pod: after[pod] - before[pod] for pod in after}
    assert sum(served.values()) == total == 3 * 60 + (40 + 41 + 42) + 2 * 25
    assert served == {pod: received.get(pod, 0) for pod in served}


def _keepalive(conn: http.client.HTTPConnection) -> dict:
    conn.request("POST", "/api/messages", body=MESSAGE)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200
    return json.loads(body)


def test_info_and_files(lab: LabCluster) -> None:
    info = lab.info()
    assert info["pid"] == lab.process.pid
    assert lab.kubeconfig.is_file() and lab.kubeconfig.stat().st_mode & 0o077 == 0
    assert (Path(info["state_dir"]) / "lab.json").stat().st_mode & 0o077 == 0
    config = yaml.safe_load(lab.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == lab.api_url
    assert lab.api_url.startswith("https://127.")
    assert [n["name"] for n in lab.nodes] == ["node-1", "node-2", "node-3"]
    assert all(a.startswith("127.") for a, _ in lab_addresses(lab))
    assert lab.restricted_kubeconfig is None
    assert 30000 <= lab.node_port <= 32767
    assert [p["node"] for p in lab.pods] == ["node-1"] * 3 + ["node-2"] * 2 + ["node-3"]


def test_control_api_refuses_bad_faults(lab: LabCluster) -> None:
    with pytest.raises(LabError, match="not found"):
        lab.node_down("node-9")
    with pytest.raises(LabError, match="not found"):
        lab.kill_pod("no-such-pod")
    with pytest.raises(LabError):
        lab.fault("node", "node-1", "explode")


def test_two_labs_at_once_and_stop_frees_everything(tmp_path: Path) -> None:
    first = LabCluster(nodes=2, pods=2, seed=1, restricted_token=True)
    second = LabCluster(nodes=2, pods=2, seed=1, state_dir=tmp_path / "second")
    with first, second:
        assert first.info()["block"] != second.info()["block"]
        assert first.node_port == second.node_port  # same seed, different addresses
        for running in (first, second):
            answer = post(running.nodes[0]["external_ip"], running.node_port)
            assert answer["host"] in {p["name"] for p in running.pods}
        assert first.restricted_kubeconfig and first.restricted_kubeconfig.is_file()
        addresses = lab_addresses(first) + lab_addresses(second)
        assert all(listening(*address) for address in addresses)
        pids = [first.process.pid, second.process.pid]
        first_dir = first.state_dir
        # A block in use is refused with one clear line.
        with pytest.raises(LabError, match="in use"):
            LabCluster(nodes=1, pods=1, block=first.info()["block"]).start()
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(listening(*address) for address in addresses)
    assert not first_dir.exists()  # a temporary state dir is removed
    assert not (tmp_path / "second" / "lab.json").exists()  # a given one is kept, lab.json gone


def test_start_errors_are_one_line_lab_errors(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="--nodes"):
        LabCluster(nodes=0)
    with pytest.raises(LabError, match="--placement"):
        LabCluster(nodes=2, placement=[1])
    with pytest.raises(LabError, match="--policy"):
        LabCluster(policy="Global")
    # The lab process itself fails (its nodePort is taken on a node address): its last
    # stderr line comes back as the error.
    block = next(b for b in range(250, 1, -1) if block_is_free(b))
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind((f"127.{block}.0.11", 31999))
    busy.listen(1)
    try:
        with pytest.raises(LabError) as err:
            LabCluster(nodes=1, pods=1, node_port=31999, block=block,
                       state_dir=tmp_path).start()
    finally:
        busy.close()
    assert "31999" in str(err.value) and "\n" not in str(err.value)


def test_killing_the_caller_takes_the_lab_down(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from harness.lab.cluster import LabCluster\n"
        f"lab = LabCluster(nodes=1, pods=1, state_dir={str(tmp_path)!r}).start()\n"
        "print(lab.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        lab_pid = int(caller.stdout.readline())
        assert pid_alive(lab_pid)
        caller.kill()  # SIGKILL: no cleanup runs in the caller
        caller.wait(timeout=10)
        deadline = time.monotonic() + 10
        while pid_alive(lab_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(lab_pid)
    finally:
        caller.kill()
        caller.wait()


# -- the `nodeport-harness lab` command ---------------------------------------------------


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "lab", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_lab_command_foreground_stats_fault_and_sigterm(tmp_path: Path) -> None:
    state_dir = tmp_path / "lab-state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "lab", "--state-dir", str(state_dir),
         "--block", "auto", "--nodes", "2", "--placement", "2,1", "--seed", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        banner = "".join(lines)
        assert f"export KUBECONFIG={state_dir / 'kubeconfig'}" in banner, banner
        assert "kubectl get svc helloworld" in banner and "curl -X POST" in banner
        info = json.loads((state_dir / "lab.json").read_text())
        node = info["nodes"][0]
        assert post(node["external_ip"], info["node_port"])

        out = cli("stats", "--state-dir", str(state_dir))
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout)
        assert sum(stats.values()) == 1 and len(stats) == 3

        out = cli("fault", "node", "node-2", "down", "--state-dir", str(state_dir))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["name"] == "node-2"
        with pytest.raises(TimeoutError):
            post(info["nodes"][1]["external_ip"], info["node_port"], timeout=0.3)
        assert cli("fault", "node", "node-2", "up", "--state-dir", str(state_dir)).returncode == 0
        pod = info["pods"][0]["name"]
        out = cli("fault", "pod", pod, "kill", "--state-dir", str(state_dir))
        assert out.returncode == 0, out.stderr

        for bad in (["fault", "node", "node-9", "down"], ["fault", "pod", pod, "kill"],
                    ["fault", "node", "node-1", "sideways"], ["dance"]):
            out = cli(*bad, "--state-dir", str(state_dir))
            assert out.returncode == 2, (bad, out)
            assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
            assert "Traceback" not in out.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not pid_alive(info["pid"])
        assert not listening(node["external_ip"], info["node_port"])
        assert not (state_dir / "lab.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lab_pid = json.loads((state_dir / "lab.json").read_text())["pid"] if (
            state_dir / "lab.json").exists() else None
        if lab_pid and pid_alive(lab_pid):
            os.kill(lab_pid, signal.SIGKILL)
    out = cli("stats", "--state-dir", str(state_dir))
    assert out.returncode == 2 and "no running lab" in out.stderr


def test_lab_command_bad_values_are_one_line() -> None:
    for args in (["--nodes", "0"], ["--placement", "a,b"], ["--block", "999"],
                 ["--node-port", "80"]):
        out = cli(*args, "--state-dir", "/nonexistent-dir-for-lab-test/x")
        assert out.returncode == 2, (args, out)
        assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr


def test_lab_stop_action_ends_the_foreground_lab(tmp_path: Path) -> None:
    state_dir = tmp_path / "lab-state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "lab", "--state-dir", str(state_dir),
         "--block", "auto", "--nodes", "1", "--pods", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "lab.json").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        lab_pid = json.loads((state_dir / "lab.json").read_text())["pid"]
        out = cli("stop", "--state-dir", str(state_dir))
        assert out.returncode == 0 and "stopped" in out.stdout, out.stderr
        assert proc.wait(timeout=15) == 0
        assert not pid_alive(lab_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
