"""The userspace datapath spreads connections as the kernel one does (GitHub issue 15).

On the same topology, a userspace lab (``proxy.py``) and a kernel lab (kube-proxy's own
iptables rules in network namespaces) are each sent the same many new connections through
every node's NodePort; what each pod served is counted by (entry node, pod's node, pod's
index on its node), since pod names differ between labs, and a chi-square test of
homogeneity between the two labs' counts must not reject (p > 0.01).

Needs what ``test_kernel_datapath.py`` needs (root, iproute2, iptables and the kernel's
netns, veth, bridge, nat, statistic and recent support) and skips with its reason. Every
address is loopback (userspace) or in 198.18.0.0/15 (kernel); every loop is bounded.
"""

from __future__ import annotations

import collections
import http.client
import json
import socket
import time

import pytest
from scipy.stats import chi2_contingency
from test_kernel_datapath import MISSING

pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"kernel datapath: {MISSING}")

CONNECTIONS = 600  # per lab; a few hundred per entry node
P_MIN = 0.01
MESSAGE = json.dumps({"sender": "fidelity"}).encode()

# id -> (LabCluster options, entry nodes by index)
TOPOLOGIES = {
    "cluster-321": ({"nodes": 3, "placement": [3, 2, 1]}, [0, 1, 2]),
    "local-321": ({"nodes": 3, "placement": [3, 2, 1], "policy": "Local"}, [0, 1, 2]),
    "cluster-41": ({"nodes": 2, "placement": [4, 1]}, [0, 1]),
}


def post_new_connection(ip: str, port: int, timeout: float = 3.0) -> dict:
    """One POST /api/messages on a new connection, to the lab's own addresses only."""
    assert ip.startswith(("127.", "198.18.", "198.19.")), ip
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("POST", "/api/messages", body=MESSAGE,
                     headers={"Content-Type": "application/json", "Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return json.loads(body)
    finally:
        conn.close()


def pod_slots(lab) -> dict[str, tuple[str, int]]:
    """Pod name -> (its node, its index among that node's pods): the same in both labs."""
    seen: collections.Counter = collections.Counter()
    out = {}
    for pod in lab.pods:
        out[pod["name"]] = (pod["node"], seen[pod["node"]])
        seen[pod["node"]] += 1
    return out


def spread(lab, entries: list[int], connections: int = CONNECTIONS) -> collections.Counter:
    """(entry node, pod's node, pod's index) -> connections served, entering the nodes in
    turn; checked against what the pods themselves counted."""
    slots = pod_slots(lab)
    before = lab.stats()
    counts: collections.Counter = collections.Counter()
    for i in range(connections):
        node = lab.nodes[entries[i % len(entries)]]
        answer = post_new_connection(node["external_ip"], lab.node_port)
        counts[(node["name"], *slots[answer["host"]])] += 1
    after = lab.stats()
    served = {p: after[p] - before.get(p, 0) for p in after}
    by_pod = collections.Counter()
    for (_, pod_node, index), n in counts.items():
        by_pod[(pod_node, index)] += n
    assert {slots[p]: n for p, n in served.items() if n} == dict(by_pod)
    return counts


def homogeneity(a: collections.Counter, b: collections.Counter) -> float:
    """The p-value of a chi-square test that two labs' counts come from one distribution."""
    cells = sorted(set(a) | set(b))
    _, p, _, _ = chi2_contingency([[a[c] for c in cells], [b[c] for c in cells]])
    return float(p)


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_the_userspace_spread_matches_the_kernels(make_lab, topology):
    options, entries = TOPOLOGIES[topology]
    user = make_lab(datapath="userspace", seed=41, **options)
    kernel = make_lab(datapath="kernel", seed=41, **options)
    assert sorted(pod_slots(user).values()) == sorted(pod_slots(kernel).values())
    counts = {lab.info()["datapath"]: spread(lab, entries) for lab in (user, kernel)}
    p = homogeneity(counts["userspace"], counts["kernel"])
    assert p > P_MIN, (p, counts)
    if options.get("policy") == "Local":
        # Local: only the entry node's own pods, in both labs.
        for lab_counts in counts.values():
            assert all(entry == pod_node for entry, pod_node, _ in lab_counts)
    # Every pod a connection could reach got some, in both labs.
    assert set(counts["userspace"]) == set(counts["kernel"])


def test_client_ip_affinity_pins_like_the_kernels(make_lab):
    """ClientIP: one client's new connections through a node all reach one pod, in both
    labs (each node has its own affinity table, as each kernel has its own ``recent``
    list). One client address cannot say more: its distribution is one pod per node."""
    options = {"nodes": 3, "placement": [3, 2, 1], "affinity": "ClientIP"}
    for datapath in ("userspace", "kernel"):
        lab = make_lab(datapath=datapath, seed=43, **options)
        counts = spread(lab, [0, 1, 2], connections=90)
        per_entry = collections.defaultdict(set)
        for entry, pod_node, index in counts:
            per_entry[entry].add((pod_node, index))
        assert sorted(per_entry) == ["node-1", "node-2", "node-3"], (datapath, counts)
        assert all(len(pods) == 1 for pods in per_entry.values()), (datapath, counts)


# -- a killed pod resets its connections, in both datapaths ------------------------------------


def _open_connection(lab, request: bool) -> tuple[socket.socket, str]:
    """A connection through node-1's NodePort: one keep-alive request answered (the pod
    it reached), then, with ``request``, a second request sent and left in service."""
    ip = lab.nodes[0]["external_ip"]
    assert ip.startswith(("127.", "198.18.")), ip
    sock = socket.create_connection((ip, lab.node_port), timeout=5)
    head = (f"POST /api/messages HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(MESSAGE)}\r\n\r\n").encode() + MESSAGE
    sock.sendall(head)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, reply
        reply += chunk
    pod = json.loads(reply.split(b"\r\n\r\n", 1)[1])["host"]
    if request:
        sock.sendall(head)
    return sock, pod


@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "in-flight"])
@pytest.mark.parametrize("datapath", ["userspace", "kernel"])
def test_a_killed_pod_resets_its_open_connections(make_lab, datapath, in_flight):
    """The issue's "pod kill = the process dies (RST)": a client holding a connection to the
    pod, idle between keep-alive requests or waiting for a reply, sees a reset (not an
    orderly close), whichever datapath the lab runs."""
    # With a service time, the second request is still in service when the pod dies.
    lab = make_lab(datapath=datapath, nodes=1, pods=1, seed=44,
                   pod_service_ms=1500 if in_flight else 0)
    sock, pod = _open_connection(lab, request=in_flight)
    try:
        if in_flight:
            time.sleep(0.3)
        lab.kill_pod(pod)
        with pytest.raises(ConnectionResetError):
            data = sock.recv(65536)
            pytest.fail(f"the connection ended without a reset: {data!r}")
    finally:
        sock.close()
