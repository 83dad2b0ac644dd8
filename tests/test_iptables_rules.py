"""kube-proxy's iptables-mode rules as the kernel lab writes them, checked by hand.

The expectations follow kube-proxy's own test fixture (pkg/proxy/iptables/proxier_test.go:
Service ns1/svc1 port p80, cluster IP 172.30.0.41, endpoints 10.180.0.1:80 on another node
and 10.180.2.1:80 on this one, cluster CIDR 10.0.0.0/8), whose chain names are known:
KUBE-SVC-XPGD46QRK7WJZT7O, KUBE-SEP-SXIVWICOYRO3J4NJ (10.180.0.1:80) and
KUBE-SEP-ZX7GRIZKSNUQ3LAJ (10.180.2.1:80). The lab's settings differ from that fixture in two
places, on purpose: MASQUERADE --random-fully and no NodePorts on 127.0.0.0/8.
"""

from __future__ import annotations

import textwrap

from harness.lab import iptables_rules as rules
from harness.lab.iptables_rules import Endpoint, ServicePort

REMOTE = Endpoint("10.180.0.1", 80, "node-a")
LOCAL = Endpoint("10.180.2.1", 80, "node-b")
SVC = "KUBE-SVC-XPGD46QRK7WJZT7O"
SVL = "KUBE-SVL-XPGD46QRK7WJZT7O"
EXT = "KUBE-EXT-XPGD46QRK7WJZT7O"
SEP_REMOTE = "KUBE-SEP-SXIVWICOYRO3J4NJ"
SEP_LOCAL = "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"
CIDR = "10.0.0.0/8"


def service(**changes) -> ServicePort:
    base = {"namespace": "ns1", "name": "svc1", "port": 80, "port_name": "p80",
            "cluster_ip": "172.30.0.41", "node_port": 3001, "endpoints": (LOCAL, REMOTE)}
    return ServicePort(**{**base, **changes})


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


COMMON_NAT_HEAD = """\
    -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
    -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
    -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
    -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
"""  # noqa: E501
NODEPORTS_LAST = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                  'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                  '! -d 127.0.0.0/8 -j KUBE-NODEPORTS')
FORWARD = [
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark '
    "0x4000/0x4000 -j ACCEPT",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
    "--ctstate RELATED,ESTABLISHED -j ACCEPT",
]


def test_chain_names_are_hashed_as_kube_proxy_hashes_them():
    sp = service()
    assert rules.svc_chain(sp) == SVC
    assert rules.svl_chain(sp) == SVL
    assert rules.ext_chain(sp) == EXT
    assert rules.sep_chain(sp, REMOTE) == SEP_REMOTE
    assert rules.sep_chain(sp, LOCAL) == SEP_LOCAL
    # Another of kube-proxy's fixtures: ns2/svc2:p80 and its endpoint 10.180.0.2:80.
    other = service(namespace="ns2", name="svc2")
    assert rules.svc_chain(other) == "KUBE-SVC-GNZBNJ2PO5MGZ6GT"
    assert rules.sep_chain(other, Endpoint("10.180.0.2", 80, "x")) == "KUBE-SEP-RS4RBKLTHTF2IUXJ"
    # An unnamed port hashes namespace/name alone.
    assert service(port_name="").name_string == "ns1/svc1"


def test_probabilities_are_one_over_the_endpoints_left():
    assert [rules.probability(n) for n in (4, 3, 2)] == ["0.2500000000", "0.3333333333",
                                                         "0.5000000000"]
    four = tuple(Endpoint(f"10.180.0.{i}", 80, "node-a") for i in (4, 1, 3, 2))
    text = rules.sync_payload("node-b", [service(endpoints=four)], CIDR)
    ladder = [line for line in lines(text) if line.startswith(f"-A {SVC} -m comment")
              and "->" in line]
    # Sorted by IP:port text, each rule taking 1/(n-i) of what the ones before it left.
    assert [line.split('"')[1].split("-> ")[1] for line in ladder] == [
        "10.180.0.1:80", "10.180.0.2:80", "10.180.0.3:80", "10.180.0.4:80"]
    assert ["--probability 0.2500000000" in ladder[0], "--probability 0.3333333333" in ladder[1],
            "--probability 0.5000000000" in ladder[2], "statistic" not in ladder[3]] == [True] * 4


def test_cluster_policy_node_port_payload():
    expected = textwrap.dedent(f"""\
    *filter
    :KUBE-SERVICES - [0:0]
    :KUBE-EXTERNAL-SERVICES - [0:0]
    :KUBE-FORWARD - [0:0]
    :KUBE-NODEPORTS - [0:0]
    :KUBE-PROXY-FIREWALL - [0:0]
    {FORWARD[0]}
    {FORWARD[1]}
    {FORWARD[2]}
    COMMIT
    *nat
    :KUBE-SERVICES - [0:0]
    :KUBE-NODEPORTS - [0:0]
    :KUBE-POSTROUTING - [0:0]
    :KUBE-MARK-MASQ - [0:0]
    :{EXT} - [0:0]
    :{SVC} - [0:0]
    :{SEP_REMOTE} - [0:0]
    :{SEP_LOCAL} - [0:0]
    """) + textwrap.dedent(COMMON_NAT_HEAD) + textwrap.dedent(f"""\
    -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j {SVC}
    -A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 3001 -j {EXT}
    -A {SVC} -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
    -A {EXT} -m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ
    -A {EXT} -j {SVC}
    -A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j {SEP_REMOTE}
    -A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j {SEP_LOCAL}
    -A {SEP_REMOTE} -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
    -A {SEP_REMOTE} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
    -A {SEP_LOCAL} -m comment --comment ns1/svc1:p80 -s 10.180.2.1 -j KUBE-MARK-MASQ
    -A {SEP_LOCAL} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.2.1:80
    {NODEPORTS_LAST}
    COMMIT
    """)  # noqa: E501
    assert rules.sync_payload("node-b", [service()], CIDR) == expected
    # Every node gets the same rules under Cluster: the endpoint's node does not matter.
    assert rules.sync_payload("node-a", [service()], CIDR) == expected


def test_local_policy_on_a_node_with_a_local_endpoint():
    got = lines(rules.sync_payload("node-b", [service(external_policy="Local")], CIDR))
    nat = got[got.index("*nat"):]
    assert f":{SVL} - [0:0]" in nat and f":{SVC} - [0:0]" in nat
    ext = [line for line in nat if line.startswith(f"-A {EXT} ")]
    assert ext == [
        f'-A {EXT} -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" '
        f"-s 10.0.0.0/8 -j {SVC}",
        f'-A {EXT} -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external '
        'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        f'-A {EXT} -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external '
        f'destinations" -m addrtype --src-type LOCAL -j {SVC}',
        f"-A {EXT} -j {SVL}",  # external clients keep their address: no masquerade mark
    ]
    assert [line for line in nat if line.startswith(f"-A {SVL} ")] == [
        f'-A {SVL} -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j {SEP_LOCAL}']
    # Nothing dropped here: this node has the endpoint.
    assert not [line for line in got if "DROP" in line and "INVALID" not in line]


def test_local_policy_drops_on_a_node_without_local_endpoints():
    got = lines(rules.sync_payload("node-c", [service(external_policy="Local")], CIDR))
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no local '
            'endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP') in got
    assert not [line for line in got if SVL in line]
    assert f"-A {EXT} -j {SVL}" not in got
    # The short-circuit rules stay: pods and the node itself still reach the Service.
    assert sum(line.startswith(f"-A {EXT} ") for line in got) == 3


def test_a_service_without_endpoints_is_rejected():
    got = lines(rules.sync_payload("node-b", [service(endpoints=())], CIDR))
    assert got[got.index("*nat"):] == [
        "*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]",
        ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
        *lines(textwrap.dedent(COMMON_NAT_HEAD)), NODEPORTS_LAST, "COMMIT"]
    assert ('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp '
            "-p tcp -d 172.30.0.41 --dport 80 -j REJECT") in got
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" '
            "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT") in got


def test_client_ip_affinity_uses_the_recent_match():
    got = lines(rules.sync_payload("node-b", [service(affinity_timeout=10800)], CIDR))
    svc = [line for line in got if line.startswith(f"-A {SVC} -m comment --comment \"ns1")
           and "->" in line]
    assert svc == [
        f'-A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --name '
        f"{SEP_REMOTE} --rcheck --seconds 10800 --reap -j {SEP_REMOTE}",
        f'-A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -m recent --name '
        f"{SEP_LOCAL} --rcheck --seconds 10800 --reap -j {SEP_LOCAL}",
        f'-A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode '
        f"random --probability 0.5000000000 -j {SEP_REMOTE}",
        f'-A {SVC} -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j {SEP_LOCAL}',
    ]
    assert (f"-A {SEP_LOCAL} -m comment --comment ns1/svc1:p80 -m recent --name {SEP_LOCAL} "
            "--set -m tcp -p tcp -j DNAT --to-destination 10.180.2.1:80") in got


def test_load_balancer_ip_and_health_check_port():
    sp = service(lb_ips=("198.18.1.100",), external_policy="Local",
                 health_check_node_port=30000)
    got = lines(rules.sync_payload("node-c", [sp], CIDR))
    assert ('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 loadbalancer IP" -m tcp -p tcp '
            f"-d 198.18.1.100 --dport 80 -j {EXT}") in got
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no local '
            'endpoints" -m tcp -p tcp -d 198.18.1.100 --dport 80 -j DROP') in got
    assert ('-A KUBE-NODEPORTS -m comment --comment "ns1/svc1:p80 health check node port" '
            "-m tcp -p tcp --dport 30000 -j ACCEPT") in got


def test_restore_text_adds_the_built_in_chains_and_kube_proxys_jumps():
    text = rules.restore_text("node-b", [service()], CIDR)
    got = lines(text)
    filter_part = got[:got.index("COMMIT")]
    assert filter_part[:4] == ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                               ":OUTPUT ACCEPT [0:0]"]
    jumps = [line for line in got if line.startswith("-A ") and line.split()[1] in (
        "INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")]
    # kube-proxy prepends each jump, so the last one it ensures comes first in its chain.
    assert jumps == [
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" '
        "-j KUBE-NODEPORTS",
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes '
        'externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service '
        'portals" -j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes '
        'externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer '
        'firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service '
        'portals" -j KUBE-SERVICES',
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
        "-j KUBE-POSTROUTING",
    ]
    # Everything kube-proxy's payload says is there, in its order.
    payload = lines(rules.sync_payload("node-b", [service()], CIDR))
    assert [line for line in got if line in payload] == payload


def test_the_load_balancer_spreads_over_healthy_nodes_and_drops_without_any():
    text = rules.lb_restore_text("198.18.1.100", 8080, [("node-1", "198.18.0.11", 31000),
                                                        ("node-2", "198.18.0.12", 31000)],
                                 "default/helloworld")
    got = lines(text)
    assert '-A PREROUTING -d 198.18.1.100/32 -p tcp -m tcp --dport 8080 -j LAB-LB' in got
    assert ('-A LAB-LB -m comment --comment "default/helloworld -> node-1" -m statistic --mode '
            "random --probability 0.5000000000 -p tcp -j DNAT --to-destination "
            "198.18.0.11:31000") in got
    assert ('-A LAB-LB -m comment --comment "default/helloworld -> node-2" -p tcp -j DNAT '
            "--to-destination 198.18.0.12:31000") in got
    empty = lines(rules.lb_restore_text("198.18.1.100", 8080, [], "default/helloworld"))
    assert not [line for line in empty if "DNAT" in line]
    assert "-A INPUT -d 198.18.1.100/32 -p tcp -m tcp --dport 8080 -j DROP" in empty
