"""Cluster changes during a run that nobody announced to it (GitHub issue 13, item 2).

Every run is real (Locust in a subprocess) against a lab on loopback, a few seconds long:
the master polls the Nodes and the Service's EndpointSlices about once a second (run.json
``changes``, timeline markers), and reads the lab's fault log at the end (run.json
``faults`` with ``source`` "lab"), so `nodeport-harness lab fault ...` typed in another
terminal shows in the reports; ``--lab-fault`` finds the lab through $KUBECONFIG or
~/.kube/config; credentials that may not list nodes cost one warning, not the run.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sys
import textwrap
import threading
import time

import pytest
import yaml
from conftest import stop_process
from lab_runs import harness_cmd, load, run, start, wait_for_traffic

SLACK_S = 2.5  # a poll every second, plus the poll itself, on a busy machine


@pytest.fixture(scope="module")
def lab(make_module_lab):
    """This module's own lab: its tests take nodes down (and back) and kill a pod."""
    return make_module_lab(nodes=3, placement=[2, 2, 2], restricted_token=True)


def lab_cli(lab, *words: str) -> tuple[float, float]:
    """`nodeport-harness lab fault ...` as typed in another terminal: (before, after) it."""
    before = time.time()
    proc = run(harness_cmd("lab", "fault", *words, "--state-dir", str(lab.state_dir)),
               timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return before, time.time()


def by_key(entries: list[dict], *keys: str) -> dict[tuple, dict]:
    return {tuple(e[k] for k in keys): e for e in entries}


def test_faults_typed_in_another_terminal_are_faults_changes_and_markers(lab, tmp_path):
    victim = next(p["name"] for p in lab.pods if p["node"] == "node-3")
    env = {"KUBECONFIG": str(lab.kubeconfig)}  # as in the issue: no --kubeconfig
    proc = start(harness_cmd("run", "--report-dir", str(tmp_path), "--run-id", "cli", "-u",
                             "6", "-t", "8s", "--entry", "sticky", "--timeout", "1",
                             "--plotlyjs", "cdn"), env=env)
    try:
        wait_for_traffic(lab, lab.stats(), proc)
        time.sleep(random.uniform(0.2, 1.5))  # a random moment of the run
        down = lab_cli(lab, "node", "node-2", "down")
        time.sleep(1.5)
        up = lab_cli(lab, "node", "node-2", "up")
        time.sleep(0.3)
        kill = lab_cli(lab, "pod", victim, "kill")
        _, err = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
        lab.node_up("node-2")
    assert proc.returncode in (0, 1), err[-3000:]  # 1: requests on node-2 timed out
    assert "Traceback" not in err and "cannot watch" not in err
    run_dir = tmp_path / "cli"
    info = load(run_dir, "run.json")
    started = info["started"]

    # The lab's fault log: every fault given during the run, once, in --lab-fault's shape.
    faults = by_key(info["faults"], "kind", "name", "action")
    assert set(faults) == {("node", "node-2", "down"), ("node", "node-2", "up"),
                           ("pod", victim, "kill")}, info["faults"]
    for key, (before, after) in (
            (("node", "node-2", "down"), down), (("node", "node-2", "up"), up),
            (("pod", victim, "kill"), kill)):
        fault = faults[key]
        assert fault["source"] == "lab"
        assert before <= fault["time"] <= after, (fault, before, after)
        assert fault["t"] == pytest.approx(fault["time"] - started, abs=0.002)
    assert [f["time"] for f in info["faults"]] == sorted(f["time"] for f in info["faults"])

    # What the watch saw: node-2 NotReady and Ready again, the pod gone from the endpoints.
    changes = by_key(info["changes"], "kind", "name", "change")
    node_down = changes[("node", "node-2", "not_ready")]
    node_up = changes[("node", "node-2", "ready")]
    removed = changes[("endpoint", victim, "removed")]
    assert removed["node"] == "node-3"
    for change, fault in ((node_down, faults[("node", "node-2", "down")]),
                          (node_up, faults[("node", "node-2", "up")]),
                          (removed, faults[("pod", victim, "kill")])):
        assert fault["time"] <= change["time"] <= fault["time"] + SLACK_S, (change, fault)
        assert change["t"] == pytest.approx(change["time"] - started, abs=0.002)
        assert change["text"].endswith(" s") and change["name"] in change["text"]
    assert node_down["text"].startswith("node-2 NotReady at ")
    assert removed["text"].startswith(f"pod {victim} removed from the endpoints at ")
    assert not [c for c in info["changes"] if c["name"] not in ("node-2", victim)]
    watch = info["watch"]
    assert watch["nodes"] and watch["endpoints"] and watch["errors"] == 0
    assert watch["polls"] >= 5 and watch["warning"] is None and watch["dropped"] == 0

    # Both on the timeline, at their moments.
    markers = {m["label"]: m["t"] for m in load(run_dir, "spread.json")["markers"]}
    expected = {"node-2 down": faults[("node", "node-2", "down")]["time"],
                "node-2 up": faults[("node", "node-2", "up")]["time"],
                f"{victim} kill": faults[("pod", victim, "kill")]["time"],
                "node-2 NotReady": node_down["time"], "node-2 Ready again": node_up["time"],
                f"pod {victim} removed from the endpoints": removed["time"]}
    assert markers == pytest.approx(expected, abs=0.002)
    # The analysis reads them as faults: node-2's goes into the findings.
    summary = load(run_dir, "summary.json")
    assert any(f["name"] == "node-2" and f["action"] == "down" for f in summary["faults"])


@pytest.mark.parametrize("where", ["KUBECONFIG", "~/.kube/config"])
def test_lab_fault_finds_the_lab_as_discovery_finds_the_kubeconfig(lab, tmp_path, where):
    env = {"KUBECONFIG": str(lab.kubeconfig)}
    if where == "~/.kube/config":  # no $KUBECONFIG: the default file, a link to the lab's
        home = tmp_path / "home"
        (home / ".kube").mkdir(parents=True)
        (home / ".kube" / "config").symlink_to(lab.kubeconfig)
        env = {"HOME": str(home), "KUBECONFIG": ""}  # empty: unset, as kubectl reads it
    proc = run(harness_cmd("run", "--report-dir", str(tmp_path), "--run-id", "env", "-u", "3",
                           "-t", "4s", "--entry", "sticky", "--timeout", "1", "--plotlyjs", "cdn",
                           "--lab-fault", "1:node:node-3:down", "--lab-fault",
                           "2.5:node:node-3:up"), env=env, timeout=90)
    lab.node_up("node-3")  # whatever happened
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "error:" not in proc.stderr and "Traceback" not in proc.stderr
    info = load(tmp_path / "env", "run.json")
    assert info["options"]["kubeconfig"] is None
    # The run's own faults, once each (the lab's log has them too: not counted twice).
    assert [(f["name"], f["action"], f["source"]) for f in info["faults"]] == [
        ("node-3", "down", "--lab-fault"), ("node-3", "up", "--lab-fault")]
    changes = [(c["name"], c["change"]) for c in info["changes"]]
    assert changes == [("node-3", "not_ready"), ("node-3", "ready")]
    markers = [m["label"] for m in load(tmp_path / "env", "spread.json")["markers"]]
    assert markers == ["node-3 down", "node-3 NotReady", "node-3 up", "node-3 Ready again"]


def test_the_lab_keeps_a_log_of_every_fault_whoever_sent_it(lab):
    since = time.time()
    lab_cli(lab, "node", "node-1", "down")
    lab.node_up("node-1")  # the control API
    refused = run(harness_cmd("lab", "fault", "node", "node-9", "down", "--state-dir",
                              str(lab.state_dir)), timeout=30)
    assert refused.returncode == 2  # not applied: not logged
    log = lab.fault_log(since)
    assert [(e["kind"], e["name"], e["action"]) for e in log] == [
        ("node", "node-1", "down"), ("node", "node-1", "up")]
    assert since <= log[0]["time"] <= log[1]["time"] <= time.time()
    assert log[0]["id"] < log[1]["id"] and log[1]["ready"] is True
    assert lab.fault_log(log[1]["time"]) == log[1:]
    assert lab.fault_log()[-2:] == log  # the whole log, oldest first
    # POST answers as it always did (no log fields in it).
    assert set(lab.node_up("node-1")) == {"kind", "name", "action", "ready"}
    # The log is the control API's: the restricted token may not read it.
    from harness.errors import LabError
    from harness.lab.cluster import control_call

    restricted = yaml.safe_load(lab.restricted_kubeconfig.read_text())["users"][0]["user"]
    with pytest.raises(LabError, match="cannot use the lab control API"):
        control_call({**lab.info(), "token": restricted["token"]}, "GET", "/lab/v1/faults")
    with pytest.raises(LabError, match="since: epoch seconds expected"):
        lab.control("GET", "/lab/v1/faults?since=yesterday")


def test_a_watch_that_may_not_list_nodes_costs_one_warning_not_the_run(lab, tmp_path):
    """Discovery needs nodes, which the lab's restricted role may not list: the credentials
    narrow after discovery, as an exec plugin's can (EKS, GKE). The first token the plugin
    hands out is the lab's admin token (discovery), every later one the restricted token
    (the watch, which connects once at the start): the watch keeps the EndpointSlices."""
    admin = lab.token
    restricted = yaml.safe_load(lab.restricted_kubeconfig.read_text())["users"][0]["user"]["token"]
    plugin = tmp_path / "token-plugin.py"
    plugin.write_text(textwrap.dedent(f"""
        import json, pathlib
        count = pathlib.Path({str(tmp_path / "calls")!r})
        calls = int(count.read_text()) if count.exists() else 0
        count.write_text(str(calls + 1))
        print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1",
                          "kind": "ExecCredential",
                          "status": {{"token": {admin!r} if calls == 0 else {restricted!r}}}}}))
    """))
    plugin.chmod(0o600)
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin)], "interactiveMode": "Never"}}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    proc = run(harness_cmd("run", "--kubeconfig", str(kubeconfig), "--report-dir",
                           str(tmp_path), "--run-id", "narrow", "-u", "3", "-t", "3s",
                           "--plotlyjs", "cdn"), timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the run passes
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr
    assert (tmp_path / "calls").read_text() == "2"  # discovery, then the watch
    warnings = [line for line in proc.stderr.splitlines() if "cannot watch" in line]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "WARNING" in warnings[0] and "forbidden to list nodes (403)" in warnings[0]
    assert admin not in proc.stderr and restricted not in proc.stderr
    info = load(tmp_path / "narrow", "run.json")
    watch = info["watch"]
    assert watch["nodes"] is False and watch["endpoints"] is True
    assert watch["errors"] == 1 and watch["polls"] >= 2  # nodes not asked for again
    assert watch["warning"] in warnings[0]
    assert info["changes"] == []
    assert restricted not in json.dumps(info) and admin not in json.dumps(info)


def test_the_watch_itself_with_the_restricted_kubeconfig(lab):
    """The poll without Locust: nodes forbidden (once, then not asked), slices read."""
    from harness.core.model import Target
    from harness.discovery import DiscoveryOptions, discover
    from harness.targets import cluster_watch

    target = discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
    options = type("Args", (), {
        "service": "helloworld", "namespace": None, "port_name": None, "port": None,
        "address_type": "auto", "include_control_plane": False, "include_not_ready": False,
        "kubeconfig": str(lab.restricted_kubeconfig), "context": None, "inventory": None,
        "lab": False})()
    watch = cluster_watch(options, target)
    try:
        snap, errors = watch.poll()
        assert snap.nodes is None and errors == {"nodes": "forbidden to list nodes (403)"}
        assert set(snap.endpoints) == {e.pod for e in target.endpoints}
        snap, errors = watch.poll()
        assert errors == {} and snap.nodes is None and snap.endpoints
    finally:
        watch.close()
    inventory = Target(nodes=target.nodes, service=target.service, source="inventory")
    assert cluster_watch(options, inventory) is None


class SilentRelay:
    """A TCP relay to the lab's API that can go silent: connections stay open and nothing
    comes back (a black-holed API: every poll waits for its time-out)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.silent.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(self.target, timeout=5)
            self.sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.silent.is_set():
                    sink.sendall(data)  # silent: swallowed
        except OSError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_a_silent_api_slows_neither_the_users_nor_the_stop(lab, tmp_path):
    host, port = lab.api_url.removeprefix("https://").split(":")
    relay = SilentRelay((host, int(port)))
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    proc = start(harness_cmd("run", "--kubeconfig", str(kubeconfig), "--report-dir",
                             str(tmp_path), "--run-id", "silent", "-u", "3", "-t", "8s",
                             "--plotlyjs", "cdn"))
    try:
        wait_for_traffic(lab, lab.stats(), proc)
        time.sleep(2.0)  # a second or two of the users' pace before
        relay.silent.set()
        silent = time.time()
        _, err = proc.communicate(timeout=60)
        ended = time.time()
    finally:
        stop_process(proc)
        relay.close()
    assert proc.returncode == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if "cannot watch the cluster" in line]
    assert len(warnings) == 1 and "cannot reach the Kubernetes API" in warnings[0], err[-3000:]
    info = load(tmp_path / "silent", "run.json")
    # The stop does not wait for a poll hanging on the API (3 s time-out, then the next).
    assert ended - info["stopped"] < 5, (ended, info["stopped"])
    assert info["duration_s"] < 8 + 2
    # The users went on at their pace while every poll hung.
    spread = load(tmp_path / "silent", "spread.json")
    per_second: dict[int, int] = {}
    for rows in spread["series"].values():
        for row in rows:
            per_second[row["t"]] = per_second.get(row["t"], 0) + row["requests"]
    seconds = sorted(per_second)[1:-1]  # the first and last are partial
    before = [per_second[t] for t in seconds if t + 1 <= silent]
    after = [per_second[t] for t in seconds if t >= silent + 1]
    assert before and len(after) >= 2, per_second
    assert min(after) >= 0.5 * sorted(before)[len(before) // 2], per_second
