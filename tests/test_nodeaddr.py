"""The peer a pod saw -> the node it is (harness.core.nodeaddr): node addresses, every one of
them, then the most specific podCIDR; never a guess when two nodes claim an address."""

from __future__ import annotations

import pytest

from harness.core import nodeaddr
from harness.core.model import Node
from harness.core.nodeaddr import NodeLocator, peer_host


def node(name: str, *ips: str, cidrs: tuple[str, ...] = (), external: str | None = None,
         address: str | None = None) -> Node:
    addresses = {"InternalIP": ips[0]} if ips else {}
    if external:
        addresses["ExternalIP"] = external
    return Node(name=name, addresses=addresses, address=address or external or
                (ips[0] if ips else None), address_type="InternalIP",
                ips=tuple(ips) + ((external,) if external else ()), pod_cidrs=cidrs)


NODES = [
    node("node-1", "10.0.0.11", "fd00::11", external="203.0.113.11",
         cidrs=("10.244.0.0/24", "fd00:244::/64")),
    node("node-2", "10.0.0.12", cidrs=("10.244.1.0/24",)),
    node("node-3", "10.0.0.13", cidrs=("10.244.2.0/24",)),
]


@pytest.mark.parametrize(("peer", "host"), [
    ("10.0.0.11:41234", "10.0.0.11"),
    ("10.0.0.11", "10.0.0.11"),
    ("[fd00::11]:41234", "fd00::11"),
    ("fd00::11", "fd00::11"),
    (" 10.0.0.12:80 ", "10.0.0.12"),
    ("", None), ("[", None), ("[]:80", None), (None, None), (12, None), (b"10.0.0.1", None),
])
def test_peer_host_reads_every_way_a_server_writes_its_peer(peer, host):
    assert peer_host(peer) == host


@pytest.mark.parametrize(("peer", "expected"), [
    ("10.0.0.11:5555", "node-1"),          # InternalIP (the SNAT source in the lab)
    ("203.0.113.11:5555", "node-1"),       # ExternalIP
    ("[fd00::11]:5555", "node-1"),         # the second family's InternalIP
    ("10.0.0.13", "node-3"),
    ("10.244.1.1:5555", "node-2"),         # the CNI bridge: inside node-2's podCIDR
    ("10.244.2.0:5555", "node-3"),         # flannel.1's address: the network address
    ("[fd00:244::1]:443", "node-1"),       # an IPv6 pod CIDR
    ("[::ffff:10.0.0.12]:5555", "node-2"),  # an IPv4 peer seen by a dual-stack socket
    ("fd00::11:5555", "node-1"),           # IPv6 without brackets, a port after it
    ("127.0.0.1:5555", None),              # the client itself (Local): no node
    ("10.244.9.1:5555", None),             # in no node's podCIDR
    ("garbage", None), ("", None), (None, None), ({"ip": "10.0.0.11"}, None),
])
def test_a_peer_maps_to_its_node_or_to_none(peer, expected):
    assert NodeLocator(NODES).node_of_peer(peer) == expected


def test_exact_addresses_beat_pod_cidrs_and_the_most_specific_cidr_wins():
    nodes = [node("wide", "10.9.0.1", cidrs=("10.244.0.0/16",)),
             node("narrow", "10.9.0.2", cidrs=("10.244.3.0/24",)),
             node("owner", "10.244.3.7")]
    locate = NodeLocator(nodes)
    assert locate.node_of("10.244.3.7") == "owner"
    assert locate.node_of("10.244.3.8") == "narrow"
    assert locate.node_of("10.244.4.1") == "wide"


def test_an_address_two_nodes_claim_names_neither():
    nodes = [node("a", "10.0.0.1", cidrs=("10.244.0.0/24",)),
             node("b", "10.0.0.1", cidrs=("10.244.0.0/24",)),
             node("c", "10.0.0.3", cidrs=("10.245.0.0/16",))]
    locate = NodeLocator(nodes)
    assert locate.node_of("10.0.0.1") is None
    assert locate.node_of("10.244.0.9") is None
    assert locate.node_of("10.245.1.1") == "c"


def test_bad_input_claims_nothing_and_never_raises():
    nodes = [Node(name="x", addresses={"Hostname": "x", "InternalIP": "not-an-ip"},
                  address="x.example", address_type="InternalIP", ips=("", "999.1.1.1"),
                  pod_cidrs=("10.244.0.0/33", "", "bogus", "10.250.0.0/24")),
             Node(name="inv", addresses={"inventory": "node.example"}, address="node.example",
                  address_type="inventory")]
    locate = NodeLocator(nodes)
    assert locate.node_of_peer("10.250.0.4:1") == "x"  # the one good CIDR still counts
    assert locate.node_of_peer("999.1.1.1:1") is None
    assert NodeLocator([]).node_of_peer("10.0.0.1:1") is None


def test_answers_are_cached_per_address_and_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(nodeaddr, "MAX_CACHE", 8)
    locate = NodeLocator(NODES)
    for port in range(100):  # one address, many ports: one cache entry
        assert locate.node_of_peer(f"10.0.0.12:{port}") == "node-2"
    assert locate._cache == {"10.0.0.12": "node-2"}
    for i in range(100):
        locate.node_of_peer(f"10.244.1.{i}:1")
    assert len(locate._cache) <= 8
    assert locate.node_of_peer("10.244.1.200:9") == "node-2"
