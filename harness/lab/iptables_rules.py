"""kube-proxy's iptables-mode rules for one node, as ``iptables-restore`` text; pure.

The kernel datapath (``kernel.py``) loads this text into each node's network namespace, so
NodePort traffic goes through the same chains a real node's kernel runs: ``KUBE-SERVICES``
tail-calls ``KUBE-NODEPORTS``, which jumps to the Service's ``KUBE-EXT-*`` chain (mark for
masquerade under ``externalTrafficPolicy: Cluster``; short-circuit rules and ``KUBE-SVL-*``
under ``Local``), ``KUBE-SVC-*``/``KUBE-SVL-*`` pick an endpoint with ``statistic --mode random
--probability 1/(n-i)`` (``recent`` first for ``sessionAffinity: ClientIP``), ``KUBE-SEP-*``
DNATs, and ``KUBE-POSTROUTING`` masquerades what was marked. A node without local endpoints
under ``Local`` drops new connections in the filter table's ``KUBE-EXTERNAL-SERVICES``
(kube-proxy before 1.24 called these chains ``KUBE-XLB-*``). A Service without endpoints is
rejected there instead.

Written after pkg/proxy/iptables/proxier.go (``syncProxyRules``, ``writeServiceToEndpointRules``,
``iptablesJumpChains``; kube-proxy 1.28-1.31): chain names hashed as kube-proxy hashes them
(sha256, base32, 16 characters), rules in its order, probabilities as ``%0.10f``, endpoints
sorted by ``IP:port`` text. The settings are kube-proxy's defaults with ``--cluster-cidr`` set
(local-traffic detection by the pod network) and ``--iptables-localhost-nodeports=false``
(the lab's node namespaces have no use for 127.0.0.1 NodePorts, and need no
``route_localnet``); the masquerade bit is 14, written ``0x4000`` as in kube-proxy's own tests.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

MASQ_MARK = "0x4000"
DEFAULT_AFFINITY_TIMEOUT = 10800  # the API server's default sessionAffinityConfig timeout
LB_CHAIN = "LAB-LB"  # the lab's LoadBalancer chain (not kube-proxy's: a cloud LB's job)

# Chains kube-proxy declares on every sync, in its order.
FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL")
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")

# kube-proxy's iptablesJumpChains: (table, its chain, built-in chain, comment, extra match).
# It installs them with "iptables -I" (prepend) one by one, outside iptables-restore.
_NEW = "-m conntrack --ctstate NEW"
JUMP_CHAINS = (
    ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT",
     "kubernetes externally-visible service portals", _NEW),
    ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD",
     "kubernetes externally-visible service portals", _NEW),
    ("filter", "KUBE-NODEPORTS", "INPUT", "kubernetes health check service ports", ""),
    ("filter", "KUBE-SERVICES", "FORWARD", "kubernetes service portals", _NEW),
    ("filter", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", _NEW),
    ("filter", "KUBE-FORWARD", "FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "KUBE-PROXY-FIREWALL", "INPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "OUTPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "FORWARD", "kubernetes load balancer firewall", _NEW),
    ("nat", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", ""),
    ("nat", "KUBE-SERVICES", "PREROUTING", "kubernetes service portals", ""),
    ("nat", "KUBE-POSTROUTING", "POSTROUTING", "kubernetes postrouting rules", ""),
)
BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
           "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


@dataclass(frozen=True)
class Endpoint:
    """A ready endpoint: the pod's address and target port, and the node it runs on."""

    ip: str
    port: int
    node: str

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service as kube-proxy sees it, with its ready endpoints."""

    namespace: str
    name: str
    port: int
    port_name: str = ""
    protocol: str = "TCP"
    cluster_ip: str | None = None
    node_port: int | None = None
    external_policy: str = "Cluster"
    internal_policy: str = "Cluster"
    affinity_timeout: int | None = None  # seconds of ClientIP affinity; None: no affinity
    lb_ips: tuple[str, ...] = ()
    health_check_node_port: int | None = None
    endpoints: tuple[Endpoint, ...] = field(default=())

    @property
    def name_string(self) -> str:
        """ServicePortName.String(): namespace/name, plus :port-name when the port has one."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.lb_ips)

    @property
    def external_local(self) -> bool:
        return self.externally_accessible and self.external_policy == "Local"

    def sorted_endpoints(self) -> list[Endpoint]:
        # kube-proxy's EndpointsMap keeps each service port's endpoints sorted by their text.
        return sorted(set(self.endpoints), key=str)


# -- chain names ---------------------------------------------------------------------------


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(sp: ServicePort) -> str:
    return "KUBE-SVC-" + _hash(sp.name_string + sp.proto)


def svl_chain(sp: ServicePort) -> str:
    return "KUBE-SVL-" + _hash(sp.name_string + sp.proto)


def ext_chain(sp: ServicePort) -> str:
    return "KUBE-EXT-" + _hash(sp.name_string + sp.proto)


def sep_chain(sp: ServicePort, endpoint: Endpoint) -> str:
    return "KUBE-SEP-" + _hash(sp.name_string + sp.proto + str(endpoint))


def probability(n: int) -> str:
    """The chance of the i-th of n endpoints' rule, given the ones before it missed: 1/(n-i)."""
    return f"{1.0 / n:0.10f}"


def _q(text: str) -> str:
    """A comment as kube-proxy writes it: quoted when it says more than a name."""
    return f'"{text}"'


# -- one node's rules ----------------------------------------------------------------------


class _Buffers:
    def __init__(self) -> None:
        self.filter_chains = [f":{c} - [0:0]" for c in FILTER_CHAINS]
        self.filter_rules: list[str] = []
        self.nat_chains = [f":{c} - [0:0]" for c in NAT_CHAINS]
        self.nat_rules: list[str] = []


def sync_payload(node: str, services: Iterable[ServicePort], cluster_cidr: str) -> str:
    """What kube-proxy's syncProxyRules hands ``iptables-restore --noflush`` on ``node``:
    the filter and nat tables' KUBE-* chains for these Services. ``cluster_cidr`` is the pod
    network (kube-proxy's --cluster-cidr, its way of telling pod traffic from the rest)."""
    out = _Buffers()
    out.nat_rules += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        # Cleared so a packet that goes round the stack again is not masqueraded twice.
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        "-A KUBE-POSTROUTING -m comment --comment "
        f"{_q('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    for sp in sorted(services, key=lambda s: (s.name_string, s.proto)):
        _service(out, node, sp, cluster_cidr)
    out.nat_rules.append(
        "-A KUBE-SERVICES -m comment --comment "
        f"{_q('kubernetes service nodeports; NOTE: this must be the last rule in this chain')}"
        " -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")
    out.filter_rules += [
        # Without nf_conntrack_tcp_be_liberal an out-of-window packet is INVALID; dropping it
        # beats the RST the stack would answer it with.
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f"-A KUBE-FORWARD -m comment --comment {_q('kubernetes forwarding rules')} "
        f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        f"-A KUBE-FORWARD -m comment --comment {_q('kubernetes forwarding conntrack rule')} "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    lines = ["*filter", *out.filter_chains, *out.filter_rules, "COMMIT",
             "*nat", *out.nat_chains, *out.nat_rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def _service(out: _Buffers, node: str, sp: ServicePort, cluster_cidr: str) -> None:
    """One service port's rules: syncProxyRules' loop body, in its order."""
    name, proto = sp.name_string, sp.proto
    endpoints = sp.sorted_endpoints()
    uses_cluster = sp.internal_policy != "Local" or (sp.externally_accessible
                                                     and sp.external_policy != "Local")
    uses_local = sp.internal_policy == "Local" or sp.external_local
    cluster = endpoints if uses_cluster else []
    local = [ep for ep in endpoints if ep.node == node] if uses_local else []
    reachable = [ep for ep in endpoints if ep in cluster or ep in local]
    has_endpoints = bool(endpoints)
    svc, svl, ext = svc_chain(sp), svl_chain(sp), ext_chain(sp)
    has_internal = has_endpoints and (sp.internal_policy != "Local" or bool(local))
    internal_chain = svl if sp.internal_policy == "Local" else svc
    external_policy_chain = svl if sp.external_local else svc
    has_external = has_endpoints and (not sp.external_local or bool(local))
    uses_ext = has_endpoints and sp.externally_accessible
    uses_local_chain = bool(local)
    if not has_endpoints:
        internal_target, internal_comment = "REJECT", f"{name} has no endpoints"
        external_target, external_comment = "REJECT", internal_comment
    else:
        internal_target, internal_comment = "DROP", f"{name} has no local endpoints"
        external_target, external_comment = "DROP", internal_comment
    match = f"-m {proto} -p {proto}"

    if sp.cluster_ip:
        dest = f"{match} -d {sp.cluster_ip} --dport {sp.port}"
        if has_internal:
            out.nat_rules.append(f"-A KUBE-SERVICES -m comment --comment "
                                 f"{_q(name + ' cluster IP')} {dest} -j {internal_chain}")
        else:
            out.filter_rules.append(f"-A KUBE-SERVICES -m comment --comment "
                                    f"{_q(internal_comment)} {dest} -j {internal_target}")
    for lb_ip in sp.lb_ips:
        if has_endpoints:
            out.nat_rules.append(
                f"-A KUBE-SERVICES -m comment --comment {_q(name + ' loadbalancer IP')} "
                f"{match} -d {lb_ip} --dport {sp.port} -j {ext}")
    if not has_external:
        for lb_ip in sp.lb_ips:
            out.filter_rules.append(
                f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {_q(external_comment)} "
                f"{match} -d {lb_ip} --dport {sp.port} -j {external_target}")
    if sp.node_port:
        if has_endpoints:
            out.nat_rules.append(f"-A KUBE-NODEPORTS -m comment --comment {name} {match} "
                                 f"--dport {sp.node_port} -j {ext}")
        if not has_external:
            out.filter_rules.append(
                f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {_q(external_comment)} "
                f"-m addrtype --dst-type LOCAL {match} --dport {sp.node_port} "
                f"-j {external_target}")
    if sp.health_check_node_port:
        out.filter_rules.append(
            f"-A KUBE-NODEPORTS -m comment --comment {_q(name + ' health check node port')} "
            f"-m tcp -p tcp --dport {sp.health_check_node_port} -j ACCEPT")

    if has_internal and sp.cluster_ip:
        # Off-cluster traffic to the cluster IP may bounce to another node: masquerade it.
        out.nat_rules.append(
            f"-A {internal_chain} -m comment --comment {_q(name + ' cluster IP')} {match} "
            f"-d {sp.cluster_ip} --dport {sp.port} ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
    if uses_ext:
        out.nat_chains.append(f":{ext} - [0:0]")
        if not sp.external_local:
            # The endpoint may be on another node: the reply must come back through this one.
            out.nat_rules.append(
                f"-A {ext} -m comment --comment "
                f"{_q(f'masquerade traffic for {name} external destinations')} "
                "-j KUBE-MARK-MASQ")
        else:
            out.nat_rules += [
                f"-A {ext} -m comment --comment "
                f"{_q(f'pod traffic for {name} external destinations')} "
                f"-s {cluster_cidr} -j {svc}",
                f"-A {ext} -m comment --comment "
                f"{_q(f'masquerade LOCAL traffic for {name} external destinations')} "
                "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                f"-A {ext} -m comment --comment "
                f"{_q(f'route LOCAL traffic for {name} external destinations')} "
                f"-m addrtype --src-type LOCAL -j {svc}",
            ]
        if has_external:
            out.nat_rules.append(f"-A {ext} -j {external_policy_chain}")
    if cluster:
        out.nat_chains.append(f":{svc} - [0:0]")
        _to_endpoints(out, sp, svc, cluster)
    if uses_local_chain:
        out.nat_chains.append(f":{svl} - [0:0]")
        _to_endpoints(out, sp, svl, local)
    # Every endpoint this node may send to. (kube-proxy merges the two lists through a Go map,
    # so its order varies from sync to sync; sorted here, as its tests compare them.)
    for ep in reachable:
        sep = sep_chain(sp, ep)
        out.nat_chains.append(f":{sep} - [0:0]")
        head = f"-A {sep} -m comment --comment {name}"
        # A pod reaching itself through the Service: SNAT, or its reply would skip the DNAT.
        out.nat_rules.append(f"{head} -s {ep.ip} -j KUBE-MARK-MASQ")
        sticky = f" -m recent --name {sep} --set" if sp.affinity_timeout else ""
        out.nat_rules.append(f"{head}{sticky} {match} -j DNAT --to-destination {ep}")


def _to_endpoints(out: _Buffers, sp: ServicePort, chain: str,
                  endpoints: list[Endpoint]) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the 1/(n-i) ladder."""
    if sp.affinity_timeout:
        for ep in endpoints:
            sep = sep_chain(sp, ep)
            out.nat_rules.append(
                f"-A {chain} -m comment --comment {_q(f'{sp.name_string} -> {ep}')} "
                f"-m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} --reap "
                f"-j {sep}")
    count = len(endpoints)
    for i, ep in enumerate(endpoints):
        rule = f"-A {chain} -m comment --comment {_q(f'{sp.name_string} -> {ep}')}"
        if i < count - 1:
            rule += f" -m statistic --mode random --probability {probability(count - i)}"
        out.nat_rules.append(f"{rule} -j {sep_chain(sp, ep)}")


def jump_rules() -> dict[str, list[str]]:
    """The jumps from the built-in chains that kube-proxy keeps with ``iptables -I`` (not in
    its restore payload), in the order its prepends leave them: table -> rules."""
    rules: dict[str, list[str]] = {"filter": [], "nat": []}
    for table, chain, builtin, comment, extra in JUMP_CHAINS:
        matches = f"{extra} " if extra else ""
        rules[table].insert(0, f"-A {builtin} {matches}-m comment --comment {_q(comment)} "
                               f"-j {chain}")
    # Each prepend lands at the top of its own built-in chain: group by chain, keep the order.
    return {table: sorted(lines, key=lambda line: BUILTIN[table].index(line.split()[1]))
            for table, lines in rules.items()}


def restore_text(node: str, services: Iterable[ServicePort], cluster_cidr: str) -> str:
    """The whole filter and nat tables of a node namespace the lab owns: the built-in chains,
    kube-proxy's jumps into its chains, and its sync payload. Loaded with a plain
    ``iptables-restore`` (flushing), so every re-sync replaces the tables at once."""
    payload = sync_payload(node, services, cluster_cidr)
    jumps = jump_rules()
    out: list[str] = []
    for block in payload.split("COMMIT\n")[:-1]:
        lines = block.strip("\n").split("\n")
        table = lines[0][1:]
        chains = [line for line in lines[1:] if line.startswith(":")]
        rules = [line for line in lines[1:] if not line.startswith(":")]
        out += [lines[0], *(f":{c} ACCEPT [0:0]" for c in BUILTIN[table]), *chains,
                *jumps[table], *rules, "COMMIT"]
    return "\n".join(out) + "\n"


# -- the lab's LoadBalancer ----------------------------------------------------------------


def lb_restore_text(vip: str, port: int, backends: Iterable[tuple[str, str, int]],
                    comment: str) -> str:
    """The lab LoadBalancer's tables (in its own namespace): each new connection to
    ``vip:port`` goes to one of ``backends`` (node name, node address, nodePort), uniformly at
    random, as kube-proxy spreads over endpoints; with no backend it is dropped (a cloud LB
    with no healthy target answers nothing)."""
    targets = list(backends)
    nat = ["*nat", *(f":{c} ACCEPT [0:0]" for c in BUILTIN["nat"]), f":{LB_CHAIN} - [0:0]",
           f"-A PREROUTING -d {vip}/32 -p tcp -m tcp --dport {port} -j {LB_CHAIN}"]
    for i, (node, address, node_port) in enumerate(targets):
        rule = f"-A {LB_CHAIN} -m comment --comment {_q(f'{comment} -> {node}')}"
        if i < len(targets) - 1:
            rule += f" -m statistic --mode random --probability {probability(len(targets) - i)}"
        nat.append(f"{rule} -p tcp -j DNAT --to-destination {address}:{node_port}")
    filt = ["*filter", *(f":{c} ACCEPT [0:0]" for c in BUILTIN["filter"]),
            f"-A INPUT -d {vip}/32 -p tcp -m tcp --dport {port} -j DROP"]
    return "\n".join([*filt, "COMMIT", *nat, "COMMIT"]) + "\n"


def lb_vote(status: dict[str, list], node: str, passing: bool, threshold: int) -> None:
    """One health check of a LoadBalancer's node: ``status[node]`` is [healthy, checks in a
    row that disagreed]; the node changes state once ``threshold`` checks in a row disagree
    (a failed node keeps getting new connections meanwhile, as behind a cloud LB)."""
    current = status.get(node)
    if current is None:
        status[node] = [passing, 0]
    elif current[0] == passing:
        current[1] = 0
    else:
        current[1] += 1
        if current[1] >= threshold:
            status[node] = [passing, 0]
