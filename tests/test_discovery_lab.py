"""Discovery through the real kubernetes client against the lab's API server, and the CLI."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from harness.discovery import DiscoveryOptions, KubeApi, discover
from harness.errors import DiscoveryError


@pytest.fixture(scope="module")
def lab(lb_lab):
    """The session's LoadBalancer lab (conftest.py): these tests only read it; the one that
    adds a Service starts its own."""
    return lb_lab


def cli(*args, env=None, check_code=None):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})},
    )
    if check_code is not None:
        assert proc.returncode == check_code, proc.stderr
    return proc


def test_discover_lab_through_real_client(lab):
    target = discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
    assert [n.name for n in target.targeted_nodes] == ["node-1", "node-2", "node-3"]
    for node, info in zip(target.nodes, lab.nodes, strict=True):
        assert node.address == info["external_ip"] and node.address_type == "ExternalIP"
        assert node.addresses["InternalIP"] == info["internal_ip"]
        assert node.ready and node.zone
    svc = target.service
    assert svc.node_port == lab.node_port and svc.type == "LoadBalancer"
    assert svc.external_traffic_policy == "Cluster" and svc.session_affinity == "None"
    assert svc.lb_ingress == (lab.lb_address,)
    # Which pod runs where, from EndpointSlices.
    placed = {p["name"]: p["node"] for p in lab.pods}
    assert {e.pod: e.node for e in target.endpoints} == placed
    assert sorted(list(placed.values()).count(n) for n in set(placed.values())) == [1, 2, 3]
    assert target.server == lab.api_url and target.source == "kubeconfig"


def test_pagination_small_pages(lab):
    opts = DiscoveryOptions(kubeconfig=str(lab.kubeconfig))
    api = KubeApi.connect(opts)
    calls = []
    real = api.request

    def counting(method, path, query=None, **kw):
        calls.append(dict(query or []))
        return real(method, path, query, **kw)

    api.request = counting
    try:
        nodes = list(api.list_all("/api/v1/nodes", page_size=1, what="list nodes"))
    finally:
        api.close()
    assert [n["metadata"]["name"] for n in nodes] == ["node-1", "node-2", "node-3"]
    assert len(calls) == 3 and "continue" in calls[1] and calls[0]["limit"] == 1


def test_restricted_token_gets_403_with_rbac_hint(lab):
    assert lab.restricted_kubeconfig
    with pytest.raises(DiscoveryError) as err:
        discover(DiscoveryOptions(kubeconfig=str(lab.restricted_kubeconfig)))
    text = str(err.value)
    assert "cannot list nodes at cluster scope" in text and "ClusterRole" in text
    assert "--inventory" in text
    assert lab.token not in text


def test_missing_service_lists_existing(lab):
    with pytest.raises(DiscoveryError) as err:
        discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig), service="nope"))
    assert "'nope' not found in namespace default" in str(err.value)
    assert "helloworld" in str(err.value)


def test_missing_namespace(lab):
    with pytest.raises(DiscoveryError) as err:
        discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig), namespace="ghost"))
    assert "ghost" in str(err.value)


def test_multi_port_service_selection(make_lab):
    lab = make_lab()  # its own: this test adds a Service
    api = KubeApi.connect(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
    try:
        api.request("POST", "/api/v1/namespaces/default/services", body={
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "multi", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "helloworld"}, "ports": [
                {"name": "http", "port": 8080, "targetPort": "http-server"},
                {"name": "admin", "port": 9000, "targetPort": 8080},
            ]},
        }, content_type="application/json", what="create services")
    finally:
        api.close()
    with pytest.raises(DiscoveryError) as err:
        discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig), service="multi"))
    assert "2 ports" in str(err.value) and "http 8080" in str(err.value)
    t = discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig), service="multi",
                                  port_name="admin"))
    assert t.service.port.port == 9000 and 30000 <= t.service.node_port <= 32767


def test_cli_table_and_json(lab):
    proc = cli("discover", "--kubeconfig", str(lab.kubeconfig), check_code=0)
    assert "nodePort " + str(lab.node_port) in proc.stdout
    assert "node-1" in proc.stdout and lab.nodes[0]["external_ip"] in proc.stdout
    proc = cli("discover", "--kubeconfig", str(lab.kubeconfig), "-o", "json", check_code=0)
    data = json.loads(proc.stdout)
    assert data["schema"] == "nodeport-harness/target/v1"
    assert data["service"]["port"]["node_port"] == lab.node_port
    assert lab.token not in proc.stdout + proc.stderr


def test_cli_errors_are_one_line_exit_2(lab, tmp_path):
    home = {"HOME": str(tmp_path), "KUBECONFIG": ""}
    # Nothing configured at all: say so and suggest --lab.
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",
                                                            "KUBERNETES_SERVICE_HOST")}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "discover"],
                          capture_output=True, text=True, timeout=60,
                          env={**env, "HOME": str(tmp_path)})
    assert proc.returncode == 2 and "--lab" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    # Unknown context lists the contexts.
    proc = cli("discover", "--kubeconfig", str(lab.kubeconfig), "--context", "nope", env=home)
    assert proc.returncode == 2 and "contexts: lab" in proc.stderr
    # Malformed kubeconfig.
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nclusters: [\n")
    proc = cli("discover", "--kubeconfig", str(bad))
    assert proc.returncode == 2 and "cannot read kubeconfig" in proc.stderr
    assert proc.stderr.count("\n") == 1
    # API unreachable: name the server.
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    dead = tmp_path / "dead.yaml"
    dead.write_text(yaml.safe_dump(config))
    proc = cli("discover", "--kubeconfig", str(dead))
    assert proc.returncode == 2 and "cannot reach the Kubernetes API at https://127.0.0.1:9" \
        in proc.stderr
    assert lab.token not in proc.stderr
    # Wrong token: 401.
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "wrong-token"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(config))
    proc = cli("discover", "--kubeconfig", str(wrong))
    assert proc.returncode == 2 and "401" in proc.stderr and "wrong-token" not in proc.stderr
    # --debug shows the traceback.
    proc = cli("--debug", "discover", "--kubeconfig", str(wrong))
    assert "Traceback" in proc.stderr


def test_no_external_ip_lab_falls_back_with_warning(make_lab):
    lab = make_lab(nodes=2, pods=2, external_ip=False)
    target = discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
    assert [n.address_type for n in target.nodes] == ["InternalIP", "InternalIP"]
    assert len(target.warnings) == 1 and "node-1, node-2" in target.warnings[0]
    with pytest.raises(DiscoveryError, match="--address-type InternalIP"):
        discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig), address_type="ExternalIP"))
    proc = cli("discover", "--kubeconfig", str(lab.kubeconfig))
    assert proc.returncode == 0 and "warning: no ExternalIP on node-1, node-2" in proc.stderr


def test_clusterip_service_and_expose_fixes_it(make_lab):
    lab = make_lab(nodes=2, pods=2, service_type="ClusterIP")
    proc = cli("discover", "--kubeconfig", str(lab.kubeconfig))
    assert proc.returncode == 2 and "type ClusterIP" in proc.stderr
    assert "kubectl patch svc helloworld -n default" in proc.stderr
    proc = cli("expose", "helloworld", "--kubeconfig", str(lab.kubeconfig), check_code=0)
    assert "is now NodePort" in proc.stdout
    target = discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
    assert 30000 <= target.service.node_port <= 32767
    proc = cli("expose", "helloworld", "--type", "LoadBalancer",
               "--kubeconfig", str(lab.kubeconfig), check_code=0)
    assert "LoadBalancer ingress" in proc.stdout
    # The nodePort survives the type change, as on a real API server.
    assert discover(DiscoveryOptions(kubeconfig=str(lab.kubeconfig))).service.node_port \
        == target.service.node_port


def test_discover_with_lab_flag():
    proc = cli("discover", "--lab", "-o", "json", check_code=0)
    data = json.loads(proc.stdout)
    assert data["source"] == "kubeconfig" and len(data["nodes"]) == 3
    assert data["service"]["name"] == "helloworld"
