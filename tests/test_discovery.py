"""Discovery rules on plain API objects (no cluster): nodes, ports, policies, slices, inventory."""

import json

import pytest

from harness.core.model import Target
from harness.discovery import (
    DiscoveryOptions,
    build_target,
    endpoints_from_pods,
    endpoints_from_slices,
    load_inventory,
)
from harness.errors import DiscoveryError


def node(name, *, external=None, internal="10.0.0.1", ready=True, roles=("worker",), zone=None):
    labels = {f"node-role.kubernetes.io/{r}": "" for r in roles}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    addresses = [{"type": "InternalIP", "address": internal}, {"type": "Hostname", "address": name}]
    if external:
        addresses.insert(0, {"type": "ExternalIP", "address": external})
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def service(stype="NodePort", ports=None, policy="Cluster", ingress=None, affinity="None"):
    ports = ports or [{"port": 8080, "targetPort": "http-server", "nodePort": 30080,
                       "protocol": "TCP"}]
    svc = {
        "metadata": {"name": "helloworld", "namespace": "default"},
        "spec": {"type": stype, "ports": ports, "selector": {"app": "helloworld"},
                 "externalTrafficPolicy": policy, "sessionAffinity": affinity},
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
    }
    if affinity == "ClientIP":
        svc["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 600}}
    return svc


def slice_(*endpoints):
    return {"endpoints": [
        {"addresses": [ip], "nodeName": n, "targetRef": {"kind": "Pod", "name": pod},
         "conditions": cond}
        for pod, n, ip, cond in endpoints
    ]}


NODES = [node("cp", external="1.1.1.1", roles=("control-plane",)),
         node("w1", external="1.1.1.2", zone="a"), node("w2", external="1.1.1.3", zone="b"),
         node("w3", external="1.1.1.4", ready=False)]


def test_workers_only_and_not_ready_marked():
    target = build_target(NODES, service())
    by = {n.name: n for n in target.nodes}
    assert [n.name for n in target.targeted_nodes] == ["w1", "w2"]
    assert by["cp"].reason == "control plane" and not by["cp"].targeted
    assert by["w3"].reason == "NotReady" and not by["w3"].ready
    assert by["w1"].address == "1.1.1.2" and by["w1"].address_type == "ExternalIP"
    assert by["w1"].zone == "a" and by["w1"].roles == ("worker",)
    assert target.node_url(by["w1"]) == "http://1.1.1.2:30080"


def test_include_flags():
    opts = DiscoveryOptions(include_control_plane=True, include_not_ready=True)
    target = build_target(NODES, service(), opts=opts)
    assert [n.name for n in target.targeted_nodes] == ["cp", "w1", "w2", "w3"]


def test_auto_falls_back_to_internal_ip_with_one_warning():
    nodes = [node("w1", external="1.1.1.2"), node("w2", internal="10.0.0.2")]
    target = build_target(nodes, service())
    assert target.nodes[1].address == "10.0.0.2" and target.nodes[1].address_type == "InternalIP"
    assert len(target.warnings) == 1 and "w2" in target.warnings[0]
    assert "w1" not in target.warnings[0]


def test_external_ip_required_names_the_nodes():
    nodes = [node("w1", external="1.1.1.2"), node("w2"), node("w3")]
    with pytest.raises(DiscoveryError) as err:
        build_target(nodes, service(), opts=DiscoveryOptions(address_type="ExternalIP"))
    text = str(err.value)
    assert "w2, w3" in text and "--address-type InternalIP" in text


def test_internal_ip_chosen_on_request():
    target = build_target([node("w1", external="1.1.1.2", internal="10.9.9.9")], service(),
                          opts=DiscoveryOptions(address_type="InternalIP"))
    assert target.nodes[0].address == "10.9.9.9" and not target.warnings


def test_no_ready_worker_is_an_error():
    with pytest.raises(DiscoveryError, match="no Ready worker node"):
        build_target([node("w1", ready=False)], service())


def test_clusterip_error_gives_the_exact_fix():
    with pytest.raises(DiscoveryError) as err:
        build_target([node("w1")], service(stype="ClusterIP"))
    text = str(err.value)
    fix = "kubectl patch svc helloworld -n default -p '{\"spec\": {\"type\": \"NodePort\"}}'"
    assert fix in text
    assert "nodeport-harness expose helloworld" in text


MULTI = [
    {"name": "http", "port": 8080, "nodePort": 30080, "protocol": "TCP"},
    {"name": "metrics", "port": 9090, "nodePort": 30090, "protocol": "TCP"},
]


def test_multi_port_needs_a_choice_and_lists_ports():
    with pytest.raises(DiscoveryError) as err:
        build_target([node("w1")], service(ports=MULTI))
    assert "http 8080->nodePort 30080" in str(err.value) and "--port-name" in str(err.value)
    t = build_target([node("w1")], service(ports=MULTI), opts=DiscoveryOptions(port_name="metrics"))
    assert t.service.node_port == 30090 and len(t.service.ports) == 2
    t = build_target([node("w1")], service(ports=MULTI), opts=DiscoveryOptions(port=8080))
    assert t.service.node_port == 30080
    with pytest.raises(DiscoveryError, match="no port named 'grpc'"):
        build_target([node("w1")], service(ports=MULTI), opts=DiscoveryOptions(port_name="grpc"))


def test_policy_affinity_and_lb_ingress():
    svc = service(stype="LoadBalancer", policy="Local", affinity="ClientIP",
                  ingress=[{"ip": "9.9.9.9"}, {"hostname": "lb.example"}])
    svc["spec"]["healthCheckNodePort"] = 31999
    slices = [slice_(("p1", "w1", "10.1.0.1", {"ready": True}))]
    t = build_target([node("w1", external="1.1.1.2"), node("w2", external="1.1.1.3")], svc,
                     slices=slices)
    s = t.service
    assert s.type == "LoadBalancer" and s.external_traffic_policy == "Local"
    assert s.session_affinity == "ClientIP" and s.session_affinity_timeout == 600
    assert s.lb_ingress == ("9.9.9.9", "lb.example") and s.health_check_node_port == 31999
    assert t.lb_url() == "http://9.9.9.9:8080"
    assert any("w2" in w and "dropped" in w for w in t.warnings)


def test_endpoints_merged_across_slices():
    slices = [
        slice_(("p1", "w1", "10.1.0.1", {"ready": True}), ("p2", "w2", "10.1.0.2", {})),
        slice_(("p1", "w1", "10.1.0.1", {"ready": False}), ("p3", "w2", "10.1.0.3",
                                                              {"ready": False})),
    ]
    eps = {e.pod: e for e in endpoints_from_slices(slices)}
    assert set(eps) == {"p1", "p2", "p3"}
    assert eps["p1"].ready and eps["p2"].ready  # nil ready means ready
    assert not eps["p3"].ready and eps["p3"].node == "w2"


def test_endpoints_from_pods_fallback():
    pods = [
        {"metadata": {"name": "a"}, "spec": {"nodeName": "w1"},
         "status": {"phase": "Running", "podIP": "10.1.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "b", "deletionTimestamp": "x"}, "spec": {"nodeName": "w1"},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "c"}, "spec": {"nodeName": "w2"}, "status": {"phase": "Pending"}},
    ]
    assert [(e.pod, e.node, e.ready) for e in endpoints_from_pods(pods)] == [("a", "w1", True)]


def test_target_json_round_trip():
    t = build_target(NODES, service(ingress=[{"ip": "9.9.9.9"}]),
                     slices=[slice_(("p1", "w1", "10.1.0.1", {}))])
    data = json.loads(json.dumps(t.to_dict()))
    assert data["schema"] == "nodeport-harness/target/v1"
    assert Target.from_dict(data) == t


# -- inventory files ----------------------------------------------------------------------

GOOD = """
service: {name: helloworld, nodePort: 30080, port: 8080, loadBalancer: 127.0.0.100}
nodes:
  - {name: node-1, address: 127.0.0.11}
  - {name: node-2, address: node-2.example.test}
endpoints:
  - {pod: hw-1, node: node-1}
"""


def test_inventory_good(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_text(GOOD)
    t = load_inventory(str(path))
    assert [n.address for n in t.nodes] == ["127.0.0.11", "node-2.example.test"]
    assert t.service.node_port == 30080 and t.service.lb_ingress == ("127.0.0.100",)
    assert t.endpoints[0].node == "node-1" and t.source == "inventory"
    jpath = tmp_path / "inv.json"
    jpath.write_text(json.dumps({"service": {"nodePort": 31000},
                                 "nodes": [{"name": "a", "address": "127.0.0.5"}]}))
    assert load_inventory(str(jpath)).service.node_port == 31000


@pytest.mark.parametrize("text, fragment", [
    ("service: {nodePort: 30080}\n", "'nodes' must be a non-empty list"),
    ("nodes: [{name: a, address: 127.0.0.1}]\n", "'service' must be a mapping"),
    ("service: {}\nnodes: [{name: a, address: 127.0.0.1}]\n", "service.nodePort is missing"),
    ("service: {nodePort: abc}\nnodes: [{name: a, address: 127.0.0.1}]\n", "whole number"),
    ("service: {nodePort: 99999}\nnodes: [{name: a, address: 127.0.0.1}]\n", "not a port"),
    ("service: {nodePort: 30080}\nnodes: [{address: 127.0.0.1}]\n", "nodes[0].name is missing"),
    ("service: {nodePort: 30080}\nnodes: [{name: a, address: 'not an address!'}]\n",
     "nodes[0].address"),
    ("service: {nodePort: 30080}\nnodes: [{name: a, address: 127.0.0.1}, "
     "{name: a, address: 127.0.0.2}]\n", "listed twice"),
    ("service: {nodePort: 30080}\nnodes: [{name: a, address: 127.0.0.1}]\n"
     "endpoints: [{pod: p, node: zz}]\n", "endpoints[0].node 'zz'"),
    ("service: {nodePort: 30080}\nnodes: [{name: a, address: 127.0.0.1}]\nextra: 1\n",
     "unknown key(s) extra"),
    ("service: [\n", "not valid YAML/JSON"),
    ("- just a list\n", "expected a mapping"),
])
def test_inventory_bad(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DiscoveryError) as err:
        load_inventory(str(path))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_inventory_missing_file(tmp_path):
    with pytest.raises(DiscoveryError, match="cannot read inventory"):
        load_inventory(str(tmp_path / "nope.yaml"))
