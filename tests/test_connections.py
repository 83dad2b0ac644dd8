"""Connections are TCP connections (issue 13, item 5): what the recorder counts as
connections is what the server accepted, in close mode (one per request) and with
keep-alive (one per socket the client opened: after an error dropped the last, or after the
server closed it and geventhttpclient reconnected on its own), and the summary, its
finding and the reports say so.

NodePortUser runs as in tests/test_users.py (a subprocess with a Locust Environment), and
`nodeport-harness run` for real, against small loopback servers that count the connections
they accept.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lab_runs import http_requests
from report_runs import T0, make_target
from test_users import free_port, hand_target, send

from harness.core.analysis import summarize
from harness.core.recorder import SpreadRecorder

ROOT = Path(__file__).resolve().parents[1]


class CountingServer:
    """HTTP/1.1 on one loopback address: counts the TCP connections it accepts and the
    requests each one carried. Replies 200 naming ``pod`` (or ``status``); after
    ``close_after`` requests on a connection it closes it, saying so (``Connection: close``)
    or, with ``silent``, not; ``reset`` resets every connection after its first request."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, pod: str = "pod-a",
                 close_after: int = 0, silent: bool = False, status: int = 200,
                 reset: bool = False):
        self.pod, self.close_after, self.silent = pod, close_after, silent
        self.status, self.reset = status, reset
        self.listener = socket.create_server((host, port))
        self.per_connection: list[int] = []  # requests each accepted connection carried
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @property
    def accepted(self) -> int:
        return len(self.per_connection)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                index = len(self.per_connection)
                self.per_connection.append(0)
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        with contextlib.suppress(OSError), conn:
            for _request in http_requests(conn):
                with self.lock:
                    self.per_connection[index] += 1
                    served = self.per_connection[index]
                if self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                last = bool(self.close_after) and served >= self.close_after
                body = json.dumps({"host": self.pod}).encode()
                reason = b"OK" if self.status == 200 else b"Service Unavailable"
                conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n%s\r\n"
                             % (self.status, reason, len(body),
                                b"Connection: close\r\n" if last and not self.silent else b"")
                             + body)
                if last:
                    conn.shutdown(socket.SHUT_WR)  # the FIN right after the reply
                    return

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.close()


@pytest.fixture
def servers():
    made: list[CountingServer] = []

    def make(*args, **kwargs) -> CountingServer:
        made.append(CountingServer(*args, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def one_node(server: CountingServer):
    return hand_target({"node-1": "127.0.0.1"}, server.port, {server.pod: "node-1"})


# -- NodePortUser: the recorder's connections are the server's -------------------------------

def test_close_mode_records_one_connection_per_request(servers):
    server = servers()
    spread = send(one_node(server), "--connection", "close", rounds=6)["spread"]
    assert spread["totals"]["requests"] == 6 and spread["totals"]["failures"] == 0
    conns = spread["connections"]
    assert server.accepted == 6 == conns["tracked"] == conns["requests"]
    assert conns["requests_per_connection"] == [[1, 6]]  # exact below 128
    assert conns["distinct_pods"] == {"1": 6}


@pytest.mark.parametrize("silent", [False, True], ids=["connection-close", "silent-close"])
def test_keepalive_counts_a_new_connection_each_time_the_server_closed_one(servers, silent):
    # The server closes every connection after 3 requests; geventhttpclient reconnects
    # without telling anyone. 10 requests: connections of 3, 3, 3 and 1 requests.
    server = servers(close_after=3, silent=silent)
    spread = send(one_node(server), "--method", "get", rounds=10)["spread"]
    assert spread["totals"]["requests"] == 10
    conns = spread["connections"]
    assert server.per_connection == [3, 3, 3, 1]
    assert conns["tracked"] == server.accepted == 4 and conns["requests"] == 10
    assert conns["requests_per_connection"] == [[1, 1], [3, 3]]
    assert conns["distinct_pods"] == {"1": 4}


def test_keepalive_over_two_entry_nodes_counts_each_nodes_connections(servers):
    hosts = ["127.0.0.21", "127.0.0.22"]
    port = free_port(hosts)
    one, two = (servers(host, port, pod=f"pod-{i}", close_after=2)
                for i, host in enumerate(hosts, 1))
    target = hand_target({"node-1": hosts[0], "node-2": hosts[1]}, port,
                         {"pod-1": "node-1", "pod-2": "node-2"})
    spread = send(target, "--entry", "all", users=2, rounds=9)["spread"]
    assert spread["totals"] == {"requests": 18, "successes": 18, "failures": 0}
    conns = spread["connections"]
    assert conns["tracked"] == one.accepted + two.accepted and conns["requests"] == 18
    assert sorted(one.per_connection + two.per_connection) == sorted(
        n for index, count in conns["requests_per_connection"] for n in [index] * count)


def test_keepalive_http_errors_keep_their_connection(servers):
    # A 503 on a kept-alive connection does not close it: one connection, five requests.
    server = servers(status=503)
    spread = send(one_node(server), rounds=5)["spread"]
    assert spread["totals"]["failures"] == 5
    assert server.accepted == 1
    assert spread["connections"]["tracked"] == 1 and spread["connections"]["requests"] == 5


def test_keepalive_dropped_connections_are_reopened_and_counted(servers):
    server = servers(reset=True)
    spread = send(one_node(server), rounds=5)["spread"]
    assert spread["totals"]["failures"] == 5
    assert server.accepted == 5 == spread["connections"]["tracked"]


def test_keepalive_failed_connects_are_attempts_with_their_one_request():
    # Nothing listens: each request tried a connection of its own and reached no pod.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = hand_target({"node-1": "127.0.0.1"}, port, {"pod-a": "node-1"})
    spread = send(target, rounds=4)["spread"]
    assert spread["entry_nodes"]["node-1"]["failure_kinds"] == {"refused": 4}
    assert spread["connections"]["tracked"] == 4
    assert spread["connections"]["distinct_pods"] == {"0": 4}


# -- a real run: summary.json, the finding and the reports -----------------------------------

def real_run(tmp_path: Path, server: CountingServer, *options: str) -> tuple[Path, dict]:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        f"service: {{name: web, nodePort: {server.port}}}\n"
        "nodes: [{name: node-1, address: 127.0.0.1}]\n"
        f"endpoints: [{{pod: {server.pod}, node: node-1}}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--inventory", str(inventory),
         "--report-dir", str(tmp_path), "--run-id", "conn", "-u", "2", "-t", "2s",
         "--timeout", "2", "--plotlyjs", "cdn", *options],
        capture_output=True, text=True, timeout=90, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "conn"
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_a_close_run_reports_a_connection_per_request(tmp_path, servers):
    server = servers()
    run_dir, summary = real_run(tmp_path, server, "--connection", "close")
    requests = summary["totals"]["requests"]
    k = summary["keepalive"]
    assert requests > 20
    assert k["connections"] == k["requests"] == requests == server.accepted
    assert k["mean_requests_per_connection"] == 1.0 and k["p50_requests_per_connection"] == 1
    assert k["mean_distinct_pods"] == 1.0
    text = next(f["text"] for f in summary["findings"] if f["id"] == "keepalive_pinning")
    shown = f"{requests:,}"
    assert text.startswith("Every request opened a new connection (connection mode close): "
                           f"the client opened {shown} TCP connections for {shown} requests, "
                           "one each;")
    assert text in (run_dir / "summary.md").read_text()
    page = (run_dir / "index.html").read_text()
    assert f"{shown} opened for {shown} requests; per connection on average 1 request and " \
           "1 pod" in page


def test_a_keepalive_run_counts_the_connections_the_server_accepted(tmp_path, servers):
    server = servers(close_after=40)
    run_dir, summary = real_run(tmp_path, server)
    k = summary["keepalive"]
    assert summary["totals"]["failures"] == 0
    assert k["connections"] == server.accepted > 2  # one per user, then every 40 requests
    assert k["requests"] == summary["totals"]["requests"] == sum(server.per_connection)
    assert isinstance(k["p50_requests_per_connection"], int)
    assert k["p50_requests_per_connection"] == 40  # all but each user's last are full
    assert k["single_pod_share"] == 1.0
    finding = next(f for f in summary["findings"] if f["id"] == "keepalive_pinning")
    assert (f"the client opened {k['connections']:,} TCP connections for "
            f"{k['requests']:,} requests") in finding["text"]
    assert "each connection stayed on one pod" in finding["text"]
    assert finding["text"] in (run_dir / "summary.md").read_text()


# -- the summary and the finding, from recorded connections (pure) ---------------------------

def summary_for(rows, mode: str) -> dict:
    """rows: (pod or None, failure or None, connection) per request, a millisecond apart."""
    target = make_target()
    now = [T0]
    recorder = SpreadRecorder(target.pod_nodes(), clock=lambda: now[0],
                              nodes=[n.name for n in target.nodes])
    for i, (pod, failure, connection) in enumerate(rows):
        now[0] = T0 + i / 1000
        recorder.record("node-1", pod, 2.0, failure, connection)
    recorder.close()
    return summarize(recorder.to_dict(), target.to_dict(),
                     {"entry_strategy": "single", "connection_mode": mode, "start": T0})


def pinning(summary: dict) -> dict:
    return next(f for f in summary["findings"] if f["id"] == "keepalive_pinning")


def test_counts_of_requests_per_connection_are_whole_numbers():
    # Connections of 226, 300 and 1,000 requests: past 128 the histogram has ranges, and the
    # median was a range's midpoint (226.5 requests); a count of requests is whole.
    pods = [e.pod for e in make_target().endpoints]
    rows = [(pods[c], None, c + 1) for c, n in enumerate((226, 300, 1000)) for _ in range(n)]
    k = summary_for(rows, "keepalive")["keepalive"]
    assert k["connections"] == 3 and k["requests"] == 1526
    assert isinstance(k["p50_requests_per_connection"], int)
    assert abs(k["p50_requests_per_connection"] - 300) <= 300 / 128
    text = pinning(summary_for(rows, "keepalive"))["text"]
    assert "opened 3 TCP connections for 1,526 requests" in text


def test_close_mode_connections_are_the_requests():
    pods = [e.pod for e in make_target().endpoints]
    summary = summary_for([(pods[i % 6], None, 0) for i in range(60)], "close")
    k = summary["keepalive"]
    assert (k["connections"], k["requests"], k["mean_requests_per_connection"],
            k["p50_requests_per_connection"], k["mean_distinct_pods"]) == (60, 60, 1.0, 1, 1.0)
    assert pinning(summary)["text"] == (
        "Every request opened a new connection (connection mode close): the client opened 60 "
        "TCP connections for 60 requests, one each; kube-proxy chose a pod for each one, so "
        "keep-alive pinning did not apply.")


def test_close_mode_data_from_client_sessions_is_not_told_as_connections():
    # A run folder from before: one "connection" per user and entry, many requests each.
    pods = [e.pod for e in make_target().endpoints]
    summary = summary_for([(pods[i % 6], None, 1 + i % 2) for i in range(60)], "close")
    text = pinning(summary)["text"]
    assert text == ("Every request opened a new connection (connection mode close); "
                    "kube-proxy chose a pod for each one, so keep-alive pinning did not apply.")


def test_keepalive_connections_that_reached_no_pod_are_named():
    pods = [e.pod for e in make_target().endpoints]
    rows = [(pods[c], None, c + 1) for c in range(2) for _ in range(50)]
    rows += [(None, "refused", 100 + i) for i in range(4)]  # four failed connects
    summary = summary_for(rows, "keepalive")
    k = summary["keepalive"]
    assert k["connections"] == 6 and k["connections_with_pod"] == 2
    text = pinning(summary)["text"]
    assert "the client opened 6 TCP connections for 104 requests" in text
    assert "4 of them reached no named pod" in text
    assert "of the 2 that reached a pod saw exactly one" in text


def test_keepalive_without_any_pod_says_pinning_cannot_be_told():
    summary = summary_for([(None, "refused", 1 + i) for i in range(5)], "keepalive")
    assert pinning(summary)["text"] == (
        "No connection reached a pod a reply named (the client opened 5 TCP connections for "
        "5 requests): keep-alive pinning cannot be told.")
