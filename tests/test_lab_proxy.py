"""The lab's kube-proxy emulation end to end over loopback: spread, policies, affinity, faults."""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator

import pytest
from lab_runs import MESSAGE, post
from scipy.stats import chisquare

from harness.lab.cluster import LabCluster


def times_out(ip: str, port: int, timeout: float = 0.3) -> bool:
    """True if the request is accepted but never answered (a black hole), within `timeout`."""
    try:
        post(ip, port, timeout=timeout)
    except TimeoutError:
        return True
    return False


def spread(ip: str, port: int, count: int, field: str = "host") -> collections.Counter:
    return collections.Counter(post(ip, port)[field] for _ in range(count))


RAW_REQUEST = (b"POST /api/messages HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(MESSAGE), MESSAGE))


def raw_post(ip: str, port: int, timeout: float = 3.0) -> dict:
    """post() on a bare socket: a new connection, read to EOF (cheap for bulk tests)."""
    assert ip.startswith("127.")
    with socket.create_connection((ip, port), timeout=timeout) as sock:
        sock.sendall(RAW_REQUEST)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def bulk_spread(ip: str, port: int, count: int, workers: int = 4) -> collections.Counter:
    """`count` new connections from a few threads at once; pods that answered, counted."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        answers = pool.map(lambda _: raw_post(ip, port)["host"], range(count), timeout=60)
        return collections.Counter(answers)


def lab_fixture(**options):
    @pytest.fixture(scope="module")
    def fixture() -> Iterator[LabCluster]:
        with LabCluster(**options) as lab:
            yield lab
    return fixture


cluster_lab = lab_fixture(nodes=3, placement=[3, 2, 1], seed=7)
ipvs_lab = lab_fixture(nodes=3, placement=[3, 2, 1], proxy_mode="ipvs", seed=8)
local_lab = lab_fixture(nodes=3, placement=[2, 1, 0], policy="Local", seed=9)
affinity_lab = lab_fixture(nodes=3, placement=[2, 2, 2], affinity="ClientIP", seed=10)
timeout_lab = lab_fixture(nodes=1, pods=3, affinity="ClientIP", proxy_mode="ipvs", seed=14)
hop_lab = lab_fixture(nodes=2, placement=[0, 1], hop_ms=40, seed=11)
lb_lab = lab_fixture(nodes=3, placement=[2, 1, 0], service_type="LoadBalancer",
                     policy="Local", lb_check_s=0.6, seed=12)
pipe_lab = lab_fixture(nodes=3, placement=[1, 1, 1], data_plane="pipe", seed=13)


def node_ip(lab: LabCluster, index: int, kind: str = "external_ip") -> str:
    return lab.nodes[index][kind]


# -- endpoint choice ---------------------------------------------------------------------


def test_iptables_mode_is_uniform_random_per_connection(cluster_lab: LabCluster) -> None:
    counts = bulk_spread(node_ip(cluster_lab, 0), cluster_lab.node_port, 3000)
    pods = [p["name"] for p in cluster_lab.pods]
    assert set(counts) == set(pods)  # every pod, on every node, gets traffic (Cluster)
    observed = [counts[p] for p in pods]
    assert chisquare(observed).pvalue > 0.001, observed
    # Not round-robin either: exact equality would be astronomically unlikely at random.
    assert len(set(observed)) > 1


def test_keepalive_pins_a_connection_to_one_pod(cluster_lab: LabCluster) -> None:
    conn = http.client.HTTPConnection(node_ip(cluster_lab, 1), cluster_lab.node_port, timeout=3)
    hosts = {_keepalive_post(conn)["host"] for _ in range(30)}
    conn.close()
    assert len(hosts) == 1


def _keepalive_post(conn: http.client.HTTPConnection) -> dict:
    conn.request("POST", "/api/messages", body=MESSAGE)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200
    return json.loads(body)


def test_ipvs_mode_is_exact_round_robin(ipvs_lab: LabCluster) -> None:
    sequence = [post(node_ip(ipvs_lab, 1), ipvs_lab.node_port)["host"] for _ in range(600)]
    counts = collections.Counter(sequence)
    assert sorted(counts) == sorted(p["name"] for p in ipvs_lab.pods)
    assert set(counts.values()) == {100}
    period = sequence[:6]
    assert len(set(period)) == 6
    assert all(sequence[i] == period[i % 6] for i in range(600))


# -- externalTrafficPolicy and source NAT ------------------------------------------------


def test_cluster_policy_snats_to_the_entry_nodes_internal_ip(cluster_lab: LabCluster) -> None:
    port = cluster_lab.node_port
    for index in range(3):
        for kind in ("external_ip", "internal_ip"):
            answers = [post(node_ip(cluster_lab, index, kind), port) for _ in range(30)]
            clients = {a["client"].rsplit(":", 1)[0] for a in answers}
            assert clients == {cluster_lab.nodes[index]["internal_ip"]}
            # Cluster crosses nodes: pods on other nodes answer too.
            assert {a["node"] for a in answers} - {cluster_lab.nodes[index]["name"]}


def test_local_policy_never_crosses_nodes_and_keeps_client_ip(local_lab: LabCluster) -> None:
    port = local_lab.node_port
    for index in (0, 1):
        answers = [post(node_ip(local_lab, index), port) for _ in range(60)]
        assert {a["node"] for a in answers} == {local_lab.nodes[index]["name"]}
        assert {a["client"].rsplit(":", 1)[0] for a in answers} == {"127.0.0.1"}
    local_pods = {p["name"] for p in local_lab.pods if p["node"] == "node-1"}
    assert {post(node_ip(local_lab, 0), port)["host"] for _ in range(60)} == local_pods


def test_local_policy_drops_on_a_node_without_pods(local_lab: LabCluster) -> None:
    for kind in ("external_ip", "internal_ip"):
        started = time.monotonic()
        assert times_out(node_ip(local_lab, 2, kind), local_lab.node_port, timeout=0.3)
        assert time.monotonic() - started < 2
    assert post(node_ip(local_lab, 0), local_lab.node_port)["node"] == "node-1"


def test_cross_node_hop_adds_latency(hop_lab: LabCluster) -> None:
    def fastest(index: int) -> float:
        best = 10.0
        for _ in range(5):
            started = time.monotonic()
            post(node_ip(hop_lab, index), hop_lab.node_port)
            best = min(best, time.monotonic() - started)
        return best

    assert fastest(0) >= 0.04  # node-1 has no pod: every request crosses to node-2
    assert fastest(1) < 0.04


# -- session affinity --------------------------------------------------------------------


def test_client_ip_affinity_always_same_pod(affinity_lab: LabCluster) -> None:
    port = affinity_lab.node_port
    for index in range(3):
        hosts = {post(node_ip(affinity_lab, index), port)["host"] for _ in range(40)}
        assert len(hosts) == 1
    # Both addresses of a node are the same node: the same pin.
    external = post(node_ip(affinity_lab, 0), port)["host"]
    assert post(node_ip(affinity_lab, 0, "internal_ip"), port)["host"] == external


def test_affinity_moves_when_the_pinned_pod_dies(affinity_lab: LabCluster) -> None:
    ip, port = node_ip(affinity_lab, 1), affinity_lab.node_port
    pinned = post(ip, port)["host"]
    affinity_lab.kill_pod(pinned)
    hosts = {post(ip, port)["host"] for _ in range(20)}
    assert len(hosts) == 1 and pinned not in hosts


def test_affinity_expires_after_timeout_seconds(timeout_lab: LabCluster) -> None:
    # Set sessionAffinityConfig through the lab's Kubernetes API, as kubectl patch would.
    patch = {"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 1}}}}
    request = urllib.request.Request(
        f"{timeout_lab.api_url}/api/v1/namespaces/default/services/helloworld",
        data=json.dumps(patch).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {timeout_lab.token}",
                 "Content-Type": "application/merge-patch+json"})
    context = ssl.create_default_context(cafile=timeout_lab.info()["ca"])
    with urllib.request.urlopen(request, context=context, timeout=10) as resp:
        assert resp.status == 200
    ip, port = node_ip(timeout_lab, 0), timeout_lab.node_port
    pinned = post(ip, port)["host"]
    for _ in range(5):  # round-robin would move on: the pin holds
        time.sleep(0.1)
        assert post(ip, port)["host"] == pinned
    time.sleep(1.3)  # idle longer than timeoutSeconds: the pin is gone, round-robin resumes
    assert post(ip, port)["host"] != pinned


# -- faults --------------------------------------------------------------------------------


def test_node_down_times_out_then_serves_again(cluster_lab: LabCluster) -> None:
    ip, port = node_ip(cluster_lab, 1), cluster_lab.node_port
    conn = http.client.HTTPConnection(ip, port, timeout=0.3)
    _keepalive_post(conn)
    cluster_lab.node_down("node-2")
    try:
        for kind in ("external_ip", "internal_ip"):
            assert times_out(node_ip(cluster_lab, 1, kind), port)
        with pytest.raises(TimeoutError):  # an open connection stalls too
            _keepalive_post(conn)
        assert post(node_ip(cluster_lab, 0), port)  # the other nodes still serve
    finally:
        conn.close()
        cluster_lab.node_up("node-2")
    answers = [post(ip, port) for _ in range(20)]
    assert {a["client"].rsplit(":", 1)[0] for a in answers} == {
        cluster_lab.nodes[1]["internal_ip"]}


def test_killed_pod_never_serves_again(cluster_lab: LabCluster) -> None:
    ip, port = node_ip(cluster_lab, 0), cluster_lab.node_port
    conn = http.client.HTTPConnection(ip, port, timeout=2)
    victim = _keepalive_post(conn)["host"]
    served_before = cluster_lab.stats()[victim]
    cluster_lab.kill_pod(victim)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _keepalive_post(conn)  # its open connections are reset
    conn.close()
    hosts = collections.Counter(post(ip, port)["host"] for _ in range(300))
    assert victim not in hosts
    assert len(hosts) == len(cluster_lab.pods) - 1
    assert cluster_lab.stats()[victim] == served_before


# -- LoadBalancer ------------------------------------------------------------------------


def test_lb_spreads_over_healthy_nodes_and_skips_a_down_one(lb_lab: LabCluster) -> None:
    lb = (lb_lab.lb_address, 8080)
    check_s = lb_lab.info()["lb_check_s"]
    # Local: the health check passes only nodes with a local pod (node-1, node-2); the LB
    # round-robins over them, and each answer comes from the entry node itself.
    nodes = collections.Counter(post(*lb)["node"] for _ in range(100))
    assert nodes == {"node-1": 50, "node-2": 50}
    lb_lab.node_down("node-2")
    try:
        # The LB notices only after its health checks fail: meanwhile, every other new
        # connection still goes to node-2, and times out.
        lag = [times_out(*lb, timeout=0.15) for _ in range(2)]
        assert sorted(lag) == [False, True]
        time.sleep(2 * check_s + 0.3)
        nodes = collections.Counter(post(*lb, timeout=1)["node"] for _ in range(60))
        assert nodes == {"node-1": 60}
    finally:
        lb_lab.node_up("node-2")
    time.sleep(2 * check_s + 0.3)
    assert set(collections.Counter(post(*lb)["node"] for _ in range(10))) == {"node-1",
                                                                              "node-2"}


def test_lb_address_is_only_the_lb(lb_lab: LabCluster) -> None:
    # The NodePort still works on every node with a local pod.
    assert post(node_ip(lb_lab, 0), lb_lab.node_port)["node"] == "node-1"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((lb_lab.lb_address, lb_lab.node_port), timeout=1)


# -- the TCP pipe data plane (pods outside the proxy's reach) ----------------------------


def test_pipe_data_plane_snat_keepalive_and_faults(pipe_lab: LabCluster) -> None:
    port = pipe_lab.node_port
    answers = [post(node_ip(pipe_lab, 0), port) for _ in range(60)]
    # The pod really sees a TCP peer bound to the node's InternalIP.
    assert {a["client"].rsplit(":", 1)[0] for a in answers} == {
        pipe_lab.nodes[0]["internal_ip"]}
    assert {a["host"] for a in answers} == {p["name"] for p in pipe_lab.pods}
    conn = http.client.HTTPConnection(node_ip(pipe_lab, 0), port, timeout=2)
    hosts = {_keepalive_post(conn)["host"] for _ in range(20)}
    assert len(hosts) == 1
    victim = hosts.pop()
    pipe_lab.kill_pod(victim)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _keepalive_post(conn)
    conn.close()
    assert victim not in {post(node_ip(pipe_lab, 1), port)["host"] for _ in range(60)}
    pipe_lab.node_down("node-3")
    try:
        assert times_out(node_ip(pipe_lab, 2), port)
    finally:
        pipe_lab.node_up("node-3")
    assert post(node_ip(pipe_lab, 2), port)
