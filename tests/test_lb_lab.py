"""LoadBalancer runs accounted, through the real path on loopback: the address a lab pod sees
(kube-proxy's source NAT: the forwarding node with externalTrafficPolicy Cluster, the client
with Local), through a node's NodePort and through the lab's LoadBalancer, on both data
planes; then real `nodeport-harness run --entry lb` runs whose spread.json and summary.json
say which node the LB passed each success to, and odd replies that never crash a user.
"""

from __future__ import annotations

import collections
import http.client
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lab_runs import MESSAGE, load

from harness.core.nodeaddr import NodeLocator
from harness.discovery import DiscoveryOptions, discover

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "127.0.0.1"  # the source address these tests send from


def peer_seen(ip: str, port: int) -> tuple[str, dict, int]:
    """On one new connection from CLIENT: GET /clientip, then POST /api/messages; the
    /clientip text, the message reply and the local port the connection had."""
    assert ip.startswith("127.")
    conn = http.client.HTTPConnection(ip, port, timeout=3, source_address=(CLIENT, 0))
    try:
        conn.connect()
        local_port = conn.sock.getsockname()[1]
        conn.request("GET", "/clientip")
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status == 200, text
        conn.request("POST", "/api/messages", body=MESSAGE,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        reply = json.loads(response.read())
        assert response.status == 200, reply
        return text, reply, local_port
    finally:
        conn.close()


def internal_ips(lab) -> dict[str, str]:
    return {n["internal_ip"]: n["name"] for n in lab.nodes}


@pytest.fixture(scope="module")
def local_lb_lab(make_module_lab):
    """A LoadBalancer with externalTrafficPolicy Local: the pods see the client."""
    return make_module_lab(nodes=3, placement=[2, 1, 1], service_type="LoadBalancer",
                           policy="Local", lb_check_s=0.3)


@pytest.fixture(scope="module")
def pipe_lb_lab(make_module_lab):
    """The pipe data plane (a real upstream TCP connection), behind a LoadBalancer."""
    return make_module_lab(nodes=2, placement=[1, 1], service_type="LoadBalancer",
                           data_plane="pipe", lb_check_s=0.3)


# -- the address the pod sees --------------------------------------------------------------

def test_cluster_nodeport_pods_see_the_entry_nodes_address(lb_lab):
    for node in lb_lab.nodes:
        for kind in ("external_ip", "internal_ip"):
            text, reply, local_port = peer_seen(node[kind], lb_lab.node_port)
            # MASQUERADE to the node's InternalIP, the client's port kept.
            assert text == reply["client"] == f"{node['internal_ip']}:{local_port}"


def test_cluster_lb_pods_see_the_node_the_lb_chose(lb_lab):
    nodes = internal_ips(lb_lab)
    chosen = collections.Counter()
    for _ in range(6):
        text, reply, local_port = peer_seen(lb_lab.lb_address, lb_lab.info()["service_port"])
        host, _, port = text.rpartition(":")
        assert host in nodes and int(port) == local_port and reply["client"] == text
        chosen[nodes[host]] += 1
    # The LB round-robins new connections over the healthy nodes: each one, twice.
    assert chosen == {"node-1": 2, "node-2": 2, "node-3": 2}


def test_local_pods_see_the_client_through_a_nodeport_and_the_lb(local_lb_lab):
    for ip, port in ((local_lb_lab.nodes[0]["external_ip"], local_lb_lab.node_port),
                     (local_lb_lab.nodes[1]["internal_ip"], local_lb_lab.node_port),
                     (local_lb_lab.lb_address, local_lb_lab.info()["service_port"])):
        for _ in range(3):
            text, reply, local_port = peer_seen(ip, port)
            assert text == reply["client"] == f"{CLIENT}:{local_port}"


def test_the_pipe_data_plane_binds_the_same_sources(pipe_lb_lab):
    nodes = internal_ips(pipe_lb_lab)
    seen = set()
    for _ in range(4):
        text, reply, _ = peer_seen(pipe_lb_lab.lb_address, pipe_lb_lab.info()["service_port"])
        host = text.rpartition(":")[0]
        assert host in nodes and reply["client"].rpartition(":")[0] == host
        seen.add(nodes[host])
    assert seen == {"node-1", "node-2"}
    text, _, _ = peer_seen(pipe_lb_lab.nodes[1]["external_ip"], pipe_lb_lab.node_port)
    assert text.rpartition(":")[0] == pipe_lb_lab.nodes[1]["internal_ip"]


def test_discovery_reads_the_labs_addresses_and_pod_cidrs_and_maps_its_peers(lb_lab):
    target = discover(DiscoveryOptions(kubeconfig=str(lb_lab.kubeconfig)))
    for node, lab_node in zip(target.nodes, lb_lab.nodes, strict=True):
        assert set(node.ips) == {lab_node["internal_ip"], lab_node["external_ip"]}
        assert len(node.pod_cidrs) == 1 and node.pod_cidrs[0].endswith(".0/24")
    locate = NodeLocator(target.nodes)
    for node in lb_lab.nodes:
        text, _, _ = peer_seen(node["external_ip"], lb_lab.node_port)
        assert locate.node_of_peer(text) == node["name"]
    assert locate.node_of_peer(f"{CLIENT}:1234") is None
    pod_net = target.nodes[2].pod_cidrs[0].replace(".0/24", ".1")  # its CNI bridge address
    assert locate.node_of_peer(f"{pod_net}:40000") == target.nodes[2].name


# -- real runs: `nodeport-harness run --entry lb` -------------------------------------------

def harness_run(tmp_path: Path, run_id: str, *args: str, users: int = 4,
                seconds: int = 3) -> tuple[subprocess.CompletedProcess, Path]:
    cmd = [sys.executable, "-m", "harness.cli", "run", "--report-dir", str(tmp_path),
           "--run-id", run_id, "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
           "--entry", "lb", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    return proc, tmp_path / run_id


@pytest.mark.parametrize("connection", ["keepalive", "close"])
def test_an_lb_run_accounts_every_success_to_the_node_the_lb_chose(lb_lab, tmp_path,
                                                                   connection):
    proc, run_dir = harness_run(tmp_path, f"lb-{connection}", "--kubeconfig",
                                str(lb_lab.kubeconfig), "--connection", connection)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    entry = spread["entry_nodes"]["lb"]
    via = entry["via_nodes"]
    names = {n["name"] for n in lb_lab.nodes}
    assert set(via) <= names and "unknown" not in via, via
    assert sum(via.values()) == entry["successes"] == spread["totals"]["successes"] > 50
    assert len(via) >= (3 if connection == "close" else 2)
    summary = load(run_dir, "summary.json")
    lb = summary["lb"]
    assert lb["seen"] is True and lb["address"] == lb_lab.lb_address
    assert {k: v for k, v in lb["via_nodes"].items() if v} == via
    assert sum(lb["via_nodes"].values()) == summary["totals"]["successes"]
    assert lb["nodes"] == 3 and lb["nodes_used"] == len(via)
    markdown = (run_dir / "summary.md").read_text()
    headline = markdown.split("**", 2)[1]
    assert f"entered through the LoadBalancer {lb_lab.lb_address}, which passed them to " \
           f"{len(via)} of 3 nodes" in headline
    assert "0 of 3 nodes" not in headline
    assert "### Through the LoadBalancer" in markdown
    page = (run_dir / "index.html").read_text()
    assert 'id="chart-lb_nodes"' in page and "0 of 3 nodes" not in page
    if connection == "close":  # a node per request, round-robin: close to even
        assert max(lb["shares"].values()) < 0.5, lb["shares"]


def test_a_local_lb_run_says_the_lbs_choice_could_not_be_seen(local_lb_lab, tmp_path):
    proc, run_dir = harness_run(tmp_path, "lb-local", "--kubeconfig",
                                str(local_lb_lab.kubeconfig), users=2, seconds=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spread = load(run_dir, "spread.json")
    entry = spread["entry_nodes"]["lb"]
    assert entry["via_nodes"] == {"unknown": entry["successes"]} and entry["successes"] > 20
    summary = load(run_dir, "summary.json")
    assert summary["lb"]["seen"] is False
    assert summary["lb"]["unseen_reason"] == "local_policy"
    headline = (run_dir / "summary.md").read_text().split("**", 2)[1]
    assert "entered through the LoadBalancer" in headline
    assert "could not be seen" in headline and "of 3 nodes" not in headline


class OddReplies(BaseHTTPRequestHandler):
    """200s whose `client` is, in turn: a node's address, missing, not a string, not JSON,
    escaped, an address of no node, behind 70 KiB of padding, and a node's pod network."""

    counter = 0
    lock = threading.Lock()
    BODIES = (
        b'{"host": "pod-a", "client": "10.0.0.11:41000"}',
        b'{"host": "pod-a"}',
        b'{"host": "pod-a", "client": 5}',
        b"<html>oops</html>",
        b'{"host": "pod-a", "client": "10.0.0.\\u0031:1"}',
        b'{"host": "pod-a", "client": "192.0.2.1:1"}',
        b'{"pad": "' + b"x" * 70_000 + b'", "client": "10.0.0.11:1", "host": "pod-a"}',
        b'{"host": "pod-a", "client": "[::ffff:10.244.2.1]:8"}',
    )

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            OddReplies.counter += 1
            body = self.BODIES[OddReplies.counter % len(self.BODIES)]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_odd_replies_through_an_lb_are_unknown_nodes_never_a_crash(tmp_path):
    server = ThreadingHTTPServer((CLIENT, 0), OddReplies)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        f"service: {{nodePort: 30080, port: {server.server_address[1]}, "
        f"loadBalancer: {CLIENT}}}\n"
        "nodes:\n"
        "  - {name: n1, address: 203.0.113.11, internalIPs: [10.0.0.11]}\n"
        "  - {name: n2, address: 203.0.113.12, podCIDRs: [10.244.2.0/24]}\n")
    try:
        proc, run_dir = harness_run(tmp_path, "odd", "--inventory", str(inventory),
                                    users=2, seconds=2)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    entry = load(run_dir, "spread.json")["entry_nodes"]["lb"]
    via = entry["via_nodes"]
    assert set(via) == {"n1", "n2", "unknown"}, via
    assert sum(via.values()) == entry["successes"] > 16
    # Of each 8 replies: 1 names n1 and 1 n2 (the padded one is past the 64 KiB scanned).
    assert via["unknown"] > 2 * max(via["n1"], via["n2"])
    assert load(run_dir, "summary.json")["lb"]["seen"] is True
