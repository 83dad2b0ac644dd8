"""Which node an IP address belongs to: the peer a pod saw, mapped back to a node.

Behind a LoadBalancer with ``externalTrafficPolicy: Cluster``, kube-proxy on the node the LB
chose source-NATs each connection (MASQUERADE), so the pod sees that node as its peer: one
of the node's own addresses (its InternalIP, or ExternalIP) when the packet leaves through
the node's interface, or an address of the node's pod network (the CNI bridge or overlay
tunnel, inside the node's ``spec.podCIDRs``) when it stays on the node or crosses an
overlay. With ``Local`` the client's address is kept, and says nothing about the node.

``NodeLocator(nodes)`` answers ``node_of("10.244.1.1") -> "node-2"``: an exact node address
first, else the most specific podCIDR holding the address; None when no node (or more than
one, equally) claims it. ``node_of_peer`` takes a peer as servers write it (``IP``,
``IP:PORT``, ``[IPv6]:PORT``; helloworld's reply field ``client``, agnhost's ``/clientip``)
and caches its answer per address, so a LoadBalancer run pays a dict lookup per reply.
Pure: stdlib only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from harness.core.model import Node

MAX_CACHE = 4096  # distinct peer addresses remembered (the cache starts over when full)
_AMBIGUOUS = object()


def peer_host(peer: object) -> str | None:
    """The address part of a peer: ``"10.0.0.1:5555"`` -> ``"10.0.0.1"``,
    ``"[fd00::1]:80"`` -> ``"fd00::1"``, ``"10.0.0.1"`` -> itself; None for no string."""
    if not isinstance(peer, str):
        return None
    peer = peer.strip()
    if peer.startswith("["):
        end = peer.find("]")
        return (peer[1:end] or None) if end > 0 else None
    if peer.count(":") == 1:
        return peer.partition(":")[0] or None
    return peer or None  # IPv4 without a port, or a bare IPv6 address


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except (ValueError, AttributeError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


class NodeLocator:
    """Node addresses and pod CIDRs -> node names (see the module docstring)."""

    def __init__(self, nodes: Iterable[Node]):
        exact: dict[object, object] = {}
        # (IP version, prefix length) -> {network number (address >> host bits): node}: a
        # lookup costs one dict access per prefix length in use, whatever the node count.
        networks: dict[tuple[int, int], dict[int, object]] = {}
        for node in nodes:
            texts = {*node.ips, *node.addresses.values(), node.address or ""}
            for address in filter(None, map(_ip, filter(None, texts))):
                owner = exact.get(address)
                exact[address] = node.name if owner in (None, node.name) else _AMBIGUOUS
            for cidr in node.pod_cidrs:
                try:
                    network = ipaddress.ip_network(str(cidr).strip(), strict=False)
                except ValueError:
                    continue  # a malformed CIDR claims nothing
                table = networks.setdefault((network.version, network.prefixlen), {})
                number = int(network.network_address) >> (network.max_prefixlen
                                                          - network.prefixlen)
                owner = table.get(number)
                table[number] = node.name if owner in (None, node.name) else _AMBIGUOUS
        self._exact = exact
        # Most specific first: the first network holding an address is its answer.
        self._networks = sorted(networks.items(), key=lambda item: -item[0][1])
        self._cache: dict[str, str | None] = {}

    def node_of(self, address: object) -> str | None:
        """The node owning ``address`` (an IP as text), or None."""
        ip = _ip(address) if isinstance(address, str) else None
        if ip is None:
            return None
        owner = self._exact.get(ip)
        if owner is not None:
            return None if owner is _AMBIGUOUS else owner  # type: ignore[return-value]
        bits = ip.max_prefixlen
        for (version, length), table in self._networks:
            if version == ip.version:
                owner = table.get(int(ip) >> (bits - length))
                if owner is not None:  # two nodes claiming the same range: neither
                    return None if owner is _AMBIGUOUS else owner  # type: ignore[return-value]
        return None

    def node_of_peer(self, peer: object) -> str | None:
        """The node a peer (``IP``, ``IP:PORT``, ``[IPv6]:PORT``) is, cached per address."""
        host = peer_host(peer)
        if host is None:
            return None
        cache = self._cache
        try:
            return cache[host]
        except KeyError:
            pass
        node = self.node_of(host)
        if node is None and host.count(":") > 1 and host.rpartition(":")[2].isdigit():
            # An IPv6 peer written without brackets around it, a port after it.
            node = self.node_of(host.rpartition(":")[0])
        if len(cache) >= MAX_CACHE:
            cache.clear()
        cache[host] = node
        return node
