"""NodePortUser and classify_failure (harness.plugin.users) over real HTTP, and the entry plans
they follow (harness.core.entry).

The users run in a subprocess (importing Locust patches the process with gevent), each one
inside a Locust Environment as the plugin builds it, sending real requests: to the session's
labs, and to small servers on loopback addresses that refuse, reset, stall, answer garbage
or 503.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lab_runs import delta, http_requests, pod_successes

from harness.core.entry import entry_plan
from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.runinfo import ENTRY_STRATEGIES
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]

USERS = """
import json, sys
from locust.argument_parser import get_parser
from locust.env import Environment
import harness.plugin.listeners  # noqa: F401  (our options on Locust's parser)
from harness.core.extract import make_extractor
from harness.core.model import Target
from harness.core.recorder import SpreadRecorder
from harness.plugin.context import HarnessRun
from harness.plugin.users import NodePortUser

target = Target.from_dict(json.loads(sys.argv[1]))
users, rounds = int(sys.argv[2]), int(sys.argv[3])
options = get_parser().parse_args(sys.argv[4:])
env = Environment(user_classes=[NodePortUser], parsed_options=options)
run = HarnessRun(env, target=target, extractor=make_extractor(options.pod_from))
run.recorder = SpreadRecorder(target.pod_nodes(), nodes=[n.name for n in target.nodes])
env.nodeport_run = run
fleet = [NodePortUser(env) for _ in range(users)]
for _ in range(rounds):
    for user in fleet:
        user.send()
run.recorder.close()
print(json.dumps({"spread": run.recorder.to_dict(), "plans": [u.plan for u in fleet]}))
"""


def send(target: Target, *options: str, users: int = 1, rounds: int = 6) -> dict:
    """`users` NodePortUsers, each sending `rounds` requests, in a Locust Environment."""
    proc = subprocess.run(
        [sys.executable, "-c", USERS, json.dumps(target.to_dict()), str(users), str(rounds),
         "--timeout", "2", *options],
        capture_output=True, text=True, timeout=90, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def lab_target(lab) -> Target:
    from harness.discovery import DiscoveryOptions, discover

    return discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))


def entry_counts(spread: dict) -> dict[str, int]:
    return {name: entry["requests"] for name, entry in spread["entry_nodes"].items()}


# -- the users against the labs ----------------------------------------------------------------

@pytest.fixture(scope="module")
def target(lab) -> Target:
    return lab_target(lab)


def test_all_round_robins_every_user_over_every_node(lab, target):
    before = lab.stats()
    out = send(target, "--entry", "all", users=3, rounds=6)
    spread = out["spread"]
    assert entry_counts(spread) == {"node-1": 6, "node-2": 6, "node-3": 6}
    assert spread["totals"]["failures"] == 0
    # Each user starts at its own node: the fleet is balanced from the first request.
    assert len({plan[0][0] for plan in out["plans"]}) == 3
    # Every reply named the pod that served it, as the lab's pods counted themselves.
    assert pod_successes(spread) == delta(before, lab.stats())


@pytest.mark.parametrize(("options", "expected"), [
    (("--entry", "single"), {"node-1": 12}),
    (("--entry", "single", "--node", "node-3"), {"node-3": 12}),
    (("--entry", "sticky"), {"node-1": 4, "node-2": 4, "node-3": 4}),
])
def test_single_and_sticky_stay_on_their_node(lab, target, options, expected):
    out = send(target, *options, users=3, rounds=4)
    assert entry_counts(out["spread"]) == expected
    assert all(len(plan) == 1 for plan in out["plans"])
    assert out["spread"]["totals"]["failures"] == 0


def test_random_reaches_every_node(lab, target):
    out = send(target, "--entry", "random", users=2, rounds=30)
    counts = entry_counts(out["spread"])
    assert set(counts) == {"node-1", "node-2", "node-3"} and sum(counts.values()) == 60
    assert max(counts.values()) < 60 * 0.7  # ~20 each: (2/3)^60 to miss a node


def test_lb_goes_through_the_load_balancer_only(lb_lab):
    before = lb_lab.stats()
    target = lab_target(lb_lab)
    out = send(target, "--entry", "lb", users=2, rounds=5)
    spread = out["spread"]
    assert entry_counts(spread) == {"lb": 10} and spread["totals"]["failures"] == 0
    assert lb_lab.lb_address in target.lb_url()
    assert out["plans"] == [[["lb", target.lb_url()]]] * 2
    assert pod_successes(spread) == delta(before, lb_lab.stats())


# -- the users against loopback servers ------------------------------------------------------

class Server:
    """A TCP server on one loopback address that answers every request in one `mode`:
    ok (200 naming a pod), 503, reset (RST after the request), silent (never answers),
    garbage (not HTTP). Counts connections and keeps what each request said."""

    def __init__(self, host: str, port: int, mode: str):
        self.mode = mode
        self.listener = socket.create_server((host, port))
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            for line, body in http_requests(conn):
                method, path, _ = line.split(" ", 2)
                self.requests.append((method, path, body))
                if self.mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if self.mode == "silent":
                    while conn.recv(65536):
                        pass
                    return
                if self.mode == "garbage":
                    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")
                    return
                status, reply = ((b"200 OK", b'{"host": "pod-ok"}') if self.mode == "ok"
                                 else (b"503 Service Unavailable", b"busy"))
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n"
                             + reply)

    def close(self) -> None:
        self.listener.close()
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.close()


def free_port(hosts: list[str]) -> int:
    """A port free on every one of these loopback addresses (a NodePort is one port on
    every node)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError("no common free port")


def hand_target(nodes: dict[str, str], port: int, pods: dict[str, str] | None = None) -> Target:
    return Target(
        nodes=tuple(Node(name=name, addresses={"InternalIP": ip}, address=ip,
                         address_type="InternalIP") for name, ip in nodes.items()),
        service=ServiceInfo(name="web", namespace="test", type="NodePort",
                            port=ServicePort("http", 80, 8080, port)),
        endpoints=tuple(Endpoint(pod=pod, node=node, ip="10.0.0.1")
                        for pod, node in (pods or {}).items()),
        source="inventory",
    )


@pytest.fixture
def servers():
    """mode -> Server, one per loopback address, all on the same port; `refused` is an
    address where nothing listens."""
    modes = ["ok", "http_503", "reset", "silent", "garbage", "refused"]
    hosts = {mode: f"127.0.0.{i + 2}" for i, mode in enumerate(modes)}
    port = free_port(list(hosts.values()))
    running = {mode: Server(hosts[mode], port, mode) for mode in modes if mode != "refused"}
    yield hosts, port, running
    for server in running.values():
        server.close()


def test_classify_failure_names_what_went_wrong(servers):
    hosts, port, running = servers
    target = hand_target(hosts, port, {"pod-ok": "ok"})
    # One user, round-robin over the six "nodes": three requests to each.
    spread = send(target, "--entry", "all", "--timeout", "0.5", rounds=18)["spread"]
    kinds = {name: entry["failure_kinds"] for name, entry in spread["entry_nodes"].items()}
    assert kinds["ok"] == {} and spread["entry_nodes"]["ok"]["pods"] == {"pod-ok": 3}
    assert kinds["refused"] == {"refused": 3}
    # http_503 from classify_failure; the recorder counts the class and the exact status.
    assert kinds["http_503"] == {"http_5xx": 3}
    assert spread["entry_nodes"]["http_503"]["http_status"] == {"503": 3}
    assert kinds["reset"] == {"reset": 3}
    assert kinds["silent"] == {"timeout": 3}
    assert kinds["garbage"] == {"bad_reply": 3}
    assert spread["totals"] == {"requests": 18, "successes": 3, "failures": 15}


@pytest.mark.parametrize(("mode", "connections"), [("keepalive", 1), ("close", 5)])
def test_connection_mode_decides_how_many_tcp_connections(servers, mode, connections):
    hosts, port, running = servers
    target = hand_target({"ok": hosts["ok"]}, port, {"pod-ok": "ok"})
    spread = send(target, "--connection", mode, rounds=5)["spread"]
    assert spread["totals"] == {"requests": 5, "successes": 5, "failures": 0}
    assert running["ok"].connections == connections
    # The recorder's connections are TCP connections: the ones the server accepted.
    assert spread["connections"]["tracked"] == connections


def test_the_request_is_the_one_configured(servers):
    hosts, port, running = servers
    target = hand_target({"ok": hosts["ok"]}, port)
    send(target, "--method", "put", "--path", "api/things", "--body", '{"who": "{user}"}',
         "--pod-from", "json:host", rounds=2)
    requests = running["ok"].requests
    assert [(m, p) for m, p, _ in requests] == [("PUT", "/api/things")] * 2
    body = json.loads(requests[0][2])
    assert body["who"].startswith("user-")  # {user} became the user's id


# -- entry plans (pure) ------------------------------------------------------------------------

def plan_target(lb: tuple[str, ...] = (), nodes: int = 3) -> Target:
    node_list = [Node(name=f"node-{i}", addresses={}, address=f"10.0.0.{i}",
                      address_type="ExternalIP") for i in range(1, nodes + 1)]
    node_list.append(Node(name="cp", addresses={}, address="10.0.0.9", address_type="ExternalIP",
                          targeted=False, reason="control plane"))
    node_list.append(Node(name="no-address", addresses={}, address=None, address_type=None))
    return Target(nodes=tuple(node_list), service=ServiceInfo(
        name="helloworld", namespace="default", type="LoadBalancer" if lb else "NodePort",
        port=ServicePort("http", 8080, 8080, 30080), lb_ingress=lb))


def labels(plan) -> list[str]:
    return [label for label, _ in plan]


def test_all_starts_each_user_at_its_own_node():
    target = plan_target()
    assert labels(entry_plan(target, "all", 0)) == ["node-1", "node-2", "node-3"]
    assert labels(entry_plan(target, "all", 1)) == ["node-2", "node-3", "node-1"]
    assert labels(entry_plan(target, "all", 5)) == ["node-3", "node-1", "node-2"]
    assert entry_plan(target, "all", 0)[0] == ("node-1", "http://10.0.0.1:30080")


def test_random_single_and_sticky():
    target = plan_target()
    assert labels(entry_plan(target, "random", 4)) == ["node-1", "node-2", "node-3"]
    assert entry_plan(target, "single", 7) == [("node-1", "http://10.0.0.1:30080")]
    assert labels(entry_plan(target, "single", 0, "node-2")) == ["node-2"]
    # --node may name a node left out of "all" (here the control plane), if it has an address.
    assert labels(entry_plan(target, "single", 0, "cp")) == ["cp"]
    assert [labels(entry_plan(target, "sticky", i)) for i in range(4)] == [
        ["node-1"], ["node-2"], ["node-3"], ["node-1"]]


def test_untargeted_nodes_and_nodes_without_an_address_get_nothing():
    for strategy in ("all", "random"):
        assert "cp" not in labels(entry_plan(plan_target(), strategy, 0))
        assert "no-address" not in labels(entry_plan(plan_target(), strategy, 0))


def test_an_unknown_node_lists_the_nodes():
    with pytest.raises(HarnessError) as err:
        entry_plan(plan_target(), "single", 0, "node-9")
    assert str(err.value) == ("--node node-9: no such node with an address; nodes: node-1, "
                              "node-2, node-3")
    with pytest.raises(HarnessError, match="--node no-address: no such node"):
        entry_plan(plan_target(), "single", 0, "no-address")


def test_lb_uses_the_ingress_or_says_how_to_get_one():
    assert entry_plan(plan_target(lb=("203.0.113.5",)), "lb", 3) == [
        ("lb", "http://203.0.113.5:8080")]
    assert entry_plan(plan_target(lb=("2001:db8::5",)), "lb", 0) == [
        ("lb", "http://[2001:db8::5]:8080")]
    with pytest.raises(HarnessError) as err:
        entry_plan(plan_target(), "lb", 0)
    message = str(err.value)
    assert message.startswith("--entry lb: service helloworld has no LoadBalancer ingress")
    assert "--entry all" in message
    assert "nodeport-harness expose helloworld --type LoadBalancer" in message


def test_no_node_to_send_to_and_an_unknown_strategy():
    empty = dataclasses.replace(plan_target(), nodes=())
    with pytest.raises(HarnessError, match="no node to send traffic to"):
        entry_plan(empty, "all", 0)
    with pytest.raises(HarnessError) as err:
        entry_plan(plan_target(), "roundrobin", 0)
    assert all(strategy in str(err.value) for strategy in ENTRY_STRATEGIES)
