"""The lab's Kubernetes API server, through the official kubernetes client and raw HTTPS."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness.lab.apiobjects import human_duration
from harness.lab.patching import json_patch, strategic_merge
from harness.lab.selectors import labels_match, parse_label_selector

NS = "default"


@dataclass
class ApiLab:
    state_dir: Path
    port: int
    process: subprocess.Popen

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def restricted_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig-restricted"

    def token(self, restricted: bool = False) -> str:
        path = self.restricted_kubeconfig if restricted else self.kubeconfig
        return yaml.safe_load(path.read_text())["users"][0]["user"]["token"]

    def call(self, method: str, path: str, body: object = None, *,
             token: str | None = "admin",  # noqa: S107 - a role name, not a secret
             content_type: str = "application/json", accept: str = "application/json",
             ) -> tuple[int, dict[str, str], object]:
        """One HTTPS request; token "admin"/"restricted" picks a kubeconfig's, None sends none."""
        context = ssl.create_default_context(cafile=str(self.state_dir / "ca.crt"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        headers = {"Accept": accept}
        if token in ("admin", "restricted"):
            headers["Authorization"] = f"Bearer {self.token(token == 'restricted')}"
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
        finally:
            conn.close()


@contextlib.contextmanager
def start_api_lab(state_dir: Path, *args: str):
    """`python -m harness.lab.apiserver` (the API alone) until the block ends."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = open(state_dir / "server.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.lab.apiserver", "--state-dir", str(state_dir), *args],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        port_file = state_dir / "port"
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("lab API server did not start: "
                            + (state_dir / "server.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield ApiLab(state_dir, int(port_file.read_text()), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # 3 live nodes and 7 API-only ones: 10 nodes to page through with small limits.
    with start_api_lab(tmp_path_factory.mktemp("api"), "--extra-api-nodes", "7",
                       "--seed", "7") as running:
        yield running


@pytest.fixture(scope="module")
def core(lab):
    with api_client(lab.kubeconfig) as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def fresh_lab(tmp_path):
    """A lab of its own for tests that change the Service (default type ClusterIP)."""
    with start_api_lab(tmp_path / "lab", "--service-type", "ClusterIP", "--seed", "3") as running:
        yield running


# -- reads through the official client ----------------------------------------------------


def test_nodes_have_addresses_labels_and_conditions(core):
    nodes = core.list_node().items
    assert [n.metadata.name for n in nodes[:3]] == ["node-1", "node-2", "node-3"]
    assert len(nodes) == 10
    node = nodes[0]
    assert isinstance(node, client.V1Node)
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses == {"InternalIP": "127.0.2.11", "ExternalIP": "127.0.0.11",
                         "Hostname": "node-1"}
    labels = node.metadata.labels
    assert labels["kubernetes.io/hostname"] == "node-1"
    assert labels["topology.kubernetes.io/zone"] == "zone-a"
    assert "node-role.kubernetes.io/worker" in labels
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready and ready[0].status == "True"
    assert node.status.node_info.kubelet_version.startswith("v1.")
    assert node.status.capacity["pods"] == "110"
    assert not node.spec.unschedulable
    # API-only nodes have an InternalIP only.
    extra = core.read_node(nodes[-1].metadata.name)
    assert [a.type for a in extra.status.addresses] == ["InternalIP", "Hostname"]


def test_node_pages_with_small_limit_cover_every_node_once(core):
    names, token, remaining = [], None, []
    while True:
        page = core.list_node(limit=3, _continue=token)
        assert len(page.items) <= 3
        names += [n.metadata.name for n in page.items]
        token = page.metadata._continue
        if not token:
            assert page.metadata.remaining_item_count is None
            break
        remaining.append(page.metadata.remaining_item_count)
    assert len(names) == len(set(names)) == 10
    assert remaining == [7, 4, 1]


def test_missing_node_and_bad_continue_are_statuses(lab, core):
    with pytest.raises(ApiException) as err:
        core.read_node("node-99")
    assert err.value.status == 404
    assert json.loads(err.value.body)["reason"] == "NotFound"
    code, _, body = lab.call("GET", "/api/v1/nodes?limit=2&continue=not-a-token")
    assert code == 400 and body["kind"] == "Status"


def test_service_get(core):
    svc = core.read_namespaced_service("helloworld", NS)
    assert isinstance(svc, client.V1Service)
    assert svc.spec.type == "NodePort"
    assert svc.spec.selector == {"app": "helloworld"}
    port = svc.spec.ports[0]
    assert port.port == 8080 and port.target_port == "http-server"
    assert 30000 <= port.node_port <= 32767
    assert svc.spec.cluster_ip.startswith("10.96.")
    listed = core.list_service_for_all_namespaces().items
    assert [s.metadata.name for s in listed] == ["helloworld"]


def test_endpointslices_by_service_label(lab, core):
    with api_client(lab.kubeconfig) as api:
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            NS, label_selector="kubernetes.io/service-name=helloworld").items
    assert len(slices) == 1
    eps = slices[0]
    assert eps.address_type == "IPv4"
    assert eps.ports[0].port == 8080 and eps.ports[0].protocol == "TCP"
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(NS).items}
    assert len(eps.endpoints) == len(pods) == 6
    for endpoint in eps.endpoints:
        pod = pods[endpoint.target_ref.name]
        assert endpoint.target_ref.kind == "Pod"
        assert endpoint.node_name == pod.spec.node_name
        assert endpoint.addresses == [pod.status.pod_ip]
        assert endpoint.conditions.ready and endpoint.zone.startswith("zone-")
    legacy = core.read_namespaced_endpoints("helloworld", NS)
    assert len(legacy.subsets[0].addresses) == 6 and legacy.subsets[0].ports[0].port == 8080


def test_pods_by_label_and_field_selector(core):
    pods = core.list_namespaced_pod(NS, label_selector="app=helloworld").items
    assert len(pods) == 6
    pod = pods[0]
    assert pod.status.phase == "Running"
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    assert set(pod.metadata.labels) == {"app", "pod-template-hash"}
    container = pod.spec.containers[0]
    assert container.ports[0].name == "http-server" and container.ports[0].container_port == 8080
    assert container.readiness_probe.http_get.port == "http-server"
    assert pod.status.container_statuses[0].ready
    node = core.read_node(pod.spec.node_name)
    internal = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert pod.status.host_ip == internal
    counts = {
        "app!=helloworld": 0, "app in (helloworld, other)": 6, "app notin (helloworld)": 0,
        "pod-template-hash": 6, "!app": 0, "app=other": 0,
    }
    for selector, expected in counts.items():
        found = core.list_namespaced_pod(NS, label_selector=selector).items
        assert len(found) == expected, selector
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1").items
    assert {p.spec.node_name for p in on_node} == {"node-1"} and len(on_node) == 2


# -- auth ----------------------------------------------------------------------------------


def test_requests_without_or_with_a_wrong_token_get_401(lab):
    for token in (None, "wrong-token"):
        for path in ("/api/v1/nodes", "/version", "/lab/v1/stats", "/nope"):
            code, _, body = lab.call("GET", path, token=token)
            assert code == 401, path
            assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
            assert lab.token() not in json.dumps(body)


def test_restricted_token_is_forbidden_nodes_but_reads_namespaced_objects(lab):
    with api_client(lab.restricted_kubeconfig) as api:
        v1 = client.CoreV1Api(api)
        with pytest.raises(ApiException) as err:
            v1.list_node()
        assert err.value.status == 403
        assert json.loads(err.value.body)["message"] == (
            'nodes is forbidden: User "system:serviceaccount:default:restricted" cannot list '
            'resource "nodes" in API group "" at the cluster scope')
        with pytest.raises(ApiException) as err:
            v1.list_pod_for_all_namespaces()
        assert err.value.status == 403
        with pytest.raises(ApiException) as err:
            v1.patch_namespaced_service("helloworld", NS, {"spec": {"type": "ClusterIP"}})
        assert err.value.status == 403
        assert v1.read_namespaced_service("helloworld", NS).spec.type == "NodePort"
        assert len(v1.list_namespaced_pod(NS, label_selector="app=helloworld").items) == 6
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(NS)
        assert len(slices.items) == 1
    assert lab.call("GET", "/lab/v1/stats", token="restricted")[0] == 403


# -- writes ---------------------------------------------------------------------------------


def test_patch_clusterip_to_nodeport_then_loadbalancer(fresh_lab):
    with api_client(fresh_lab.kubeconfig) as api:
        v1 = client.CoreV1Api(api)
        assert v1.read_namespaced_service("helloworld", NS).spec.ports[0].node_port is None
        svc = v1.patch_namespaced_service("helloworld", NS, {"spec": {"type": "NodePort"}})
        node_port = svc.spec.ports[0].node_port
        assert svc.spec.type == "NodePort" and 30000 <= node_port <= 32767
        assert v1.read_namespaced_service("helloworld", NS).spec.ports[0].node_port == node_port
        svc = v1.patch_namespaced_service("helloworld", NS, {"spec": {"type": "LoadBalancer"}})
        assert svc.status.load_balancer.ingress[0].ip == "127.0.0.100"
        assert svc.spec.ports[0].node_port == node_port  # kept across the type change


def test_patch_content_types(fresh_lab):
    path = f"/api/v1/namespaces/{NS}/services/helloworld"
    code, _, svc = fresh_lab.call("PATCH", path, {"spec": {"type": "NodePort"}},
                                  content_type="application/merge-patch+json")
    assert code == 200 and svc["spec"]["ports"][0]["nodePort"]
    code, _, svc = fresh_lab.call(
        "PATCH", path, [{"op": "replace", "path": "/spec/sessionAffinity", "value": "ClientIP"}],
        content_type="application/json-patch+json")
    assert code == 200 and svc["spec"]["sessionAffinity"] == "ClientIP"
    # Strategic merge: ports merge by `port`; directives are honoured and never stored.
    patch = {"spec": {"$setElementOrder/ports": [{"port": 9090}, {"port": 8080}],
                      "ports": [{"port": 9090, "name": "metrics", "targetPort": 9090},
                                {"port": 8080, "name": "http"}]}}
    code, _, svc = fresh_lab.call("PATCH", path, patch,
                                  content_type="application/strategic-merge-patch+json")
    assert code == 200, svc
    assert [p["port"] for p in svc["spec"]["ports"]] == [9090, 8080]
    assert svc["spec"]["ports"][1]["targetPort"] == "http-server"  # merged, not replaced
    assert "$setElementOrder/ports" not in svc["spec"]
    code, _, svc = fresh_lab.call(
        "PATCH", path, {"spec": {"ports": [{"port": 9090, "$patch": "delete"}]}},
        content_type="application/strategic-merge-patch+json")
    assert code == 200 and [p["port"] for p in svc["spec"]["ports"]] == [8080]
    code, _, body = fresh_lab.call("PATCH", path, {"spec": {}},
                                   content_type="application/apply-patch+yaml")
    assert code == 415 and body["kind"] == "Status"


def test_strict_field_validation_rejects_unknown_fields(fresh_lab):
    path = f"/api/v1/namespaces/{NS}/services/helloworld"
    code, _, body = fresh_lab.call("PATCH", f"{path}?fieldValidation=Strict",
                                   {"spec": {"foo": "bar"}},
                                   content_type="application/merge-patch+json")
    assert code == 400 and body["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.foo"' in body["message"]
    new = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "other"},
           "spec": {"ports": [{"port": 80, "bogus": 1}], "selector": {"app": "helloworld"}}}
    code, _, body = fresh_lab.call("POST", f"/api/v1/namespaces/{NS}/services"
                                   "?fieldValidation=Strict", new)
    assert code == 400 and 'unknown field "spec.ports[0].bogus"' in body["message"]
    # Warn (the default for API clients): accepted, field dropped, a Warning header.
    code, headers, body = fresh_lab.call("POST", f"/api/v1/namespaces/{NS}/services", new)
    assert code == 201 and "bogus" not in body["spec"]["ports"][0]
    assert 'unknown field \\"spec.ports[0].bogus\\"' in headers.get("Warning", "")


def test_dry_run_does_not_persist(fresh_lab):
    path = f"/api/v1/namespaces/{NS}/services/helloworld"
    code, _, svc = fresh_lab.call("PATCH", f"{path}?dryRun=All", {"spec": {"type": "NodePort"}},
                                  content_type="application/strategic-merge-patch+json")
    assert code == 200 and svc["spec"]["type"] == "NodePort"
    assert fresh_lab.call("GET", path)[2]["spec"]["type"] == "ClusterIP"


def test_create_put_conflict_and_delete(fresh_lab):
    base = f"/api/v1/namespaces/{NS}/services"
    new = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra"},
           "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}],
                    "selector": {"app": "helloworld"}}}
    code, _, svc = fresh_lab.call("POST", base, new)
    assert code == 201 and svc["spec"]["ports"][0]["nodePort"] == 30080
    assert fresh_lab.call("POST", base, new)[0] == 409
    stale = {**svc, "metadata": {**svc["metadata"], "resourceVersion": "1"}}
    assert fresh_lab.call("PUT", f"{base}/extra", stale)[0] == 409
    svc["spec"]["sessionAffinity"] = "ClientIP"
    code, _, put = fresh_lab.call("PUT", f"{base}/extra", svc)
    assert code == 200 and put["spec"]["sessionAffinity"] == "ClientIP"
    code, _, body = fresh_lab.call("POST", base, {**new, "metadata": {"name": "taken"}})
    assert code == 422 and "already allocated" in body["message"]
    assert fresh_lab.call("DELETE", f"{base}/extra")[0] == 200
    assert fresh_lab.call("GET", f"{base}/extra")[0] == 404


def test_bad_requests_are_statuses(lab):
    path = f"/api/v1/namespaces/{NS}/services/helloworld"
    code, _, body = lab.call("PATCH", path, b"{not json",
                             content_type="application/merge-patch+json")
    assert code == 400 and body["kind"] == "Status"
    code, _, body = lab.call("GET", "/api/v1/widgets")
    assert code == 404 and body["kind"] == "Status"
    code, _, body = lab.call("GET", "/apis/apps/v1/deployments")
    assert code == 404
    code, _, body = lab.call("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=app%20in%20(")
    assert code == 400
    # The server is still fine afterwards.
    assert lab.call("GET", path)[0] == 200


# -- discovery, tables, openapi, events, lab control ------------------------------------------


def test_discovery_documents(lab):
    aggregated = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json")
    code, headers, apis = lab.call("GET", "/apis", accept=aggregated)
    # The legacy form with a plain JSON content type: kubectl falls back to it.
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert apis["kind"] == "APIGroupList"
    assert {g["name"] for g in apis["groups"]} >= {"discovery.k8s.io", "events.k8s.io"}
    core_list = lab.call("GET", "/api/v1")[2]
    by_name = {r["name"]: r for r in core_list["resources"]}
    assert by_name["services"]["shortNames"] == ["svc"] and by_name["services"]["namespaced"]
    assert by_name["nodes"]["shortNames"] == ["no"] and not by_name["nodes"]["namespaced"]
    assert "patch" in by_name["services"]["verbs"]
    assert lab.call("GET", "/api")[2]["versions"] == ["v1"]
    assert lab.call("GET", "/version")[2]["major"] == "1"


def test_table_output(lab):
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    code, _, table = lab.call("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dhelloworld",
                              accept=accept)
    assert code == 200 and table["kind"] == "Table"
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert len(table["rows"]) == 6 and table["rows"][0]["cells"][1:4] == ["1/1", "Running", "0"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    nodes = lab.call("GET", "/api/v1/nodes?limit=2", accept=accept)[2]
    assert [c["name"] for c in nodes["columnDefinitions"][:5]] == [
        "Name", "Status", "Roles", "Age", "Version"]
    assert nodes["rows"][0]["cells"][:3] == ["node-1", "Ready", "worker"]
    assert nodes["metadata"]["continue"]


def test_openapi_v3_names_the_service_patch_with_field_validation(lab):
    root = lab.call("GET", "/openapi/v3")[2]
    url = root["paths"]["api/v1"]["serverRelativeURL"]
    doc = lab.call("GET", url)[2]
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Service"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    ports = doc["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "port"


def test_faults_stats_and_events(fresh_lab):
    assert fresh_lab.call("GET", "/lab/v1/stats")[2]["pods"] == 6
    pods = fresh_lab.call("GET", f"/api/v1/namespaces/{NS}/pods")[2]["items"]
    victim = pods[0]["metadata"]["name"]
    code, _, result = fresh_lab.call("POST", "/lab/v1/faults",
                                     {"kind": "pod", "name": victim, "action": "kill"})
    assert code == 200 and result["name"] == victim
    assert len(fresh_lab.call("GET", f"/api/v1/namespaces/{NS}/pods")[2]["items"]) == 5
    selector = f"involvedObject.kind%3DPod%2CinvolvedObject.name%3D{victim}"
    events = fresh_lab.call("GET", f"/api/v1/namespaces/{NS}/events?fieldSelector={selector}")
    assert [e["reason"] for e in events[2]["items"]] == ["Killing"]
    with api_client(fresh_lab.kubeconfig) as api:
        listed = client.CoreV1Api(api).list_namespaced_event(
            NS, field_selector=f"involvedObject.name={victim}").items
        assert listed[0].involved_object.name == victim
    code, _, _ = fresh_lab.call("POST", "/lab/v1/faults",
                                {"kind": "pod", "name": "nope", "action": "kill"})
    assert code == 404
    code, _, _ = fresh_lab.call("POST", "/lab/v1/faults",
                                {"kind": "pod", "name": victim, "action": "explode"})
    assert code == 422  # Invalid, as the full lab answers it: one fault vocabulary
    code, _, _ = fresh_lab.call("POST", "/lab/v1/faults",
                                {"kind": "node", "name": "node-2", "action": "down"})
    node = fresh_lab.call("GET", "/api/v1/nodes/node-2")[2]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert code == 200 and ready["status"] != "True"


def test_files_are_private(lab):
    for name in ("kubeconfig", "kubeconfig-restricted", "apiserver.key", "apiserver.crt"):
        assert os.stat(lab.state_dir / name).st_mode & 0o077 == 0, name


# -- scale -----------------------------------------------------------------------------------


def test_5000_api_only_nodes_page_quickly(tmp_path):
    with start_api_lab(tmp_path / "big", "--extra-api-nodes", "5000") as big:
        # Raw pages: what the server costs (plus TLS and JSON parsing on our side).
        names: list[str] = []
        token, slowest = "", 0.0
        started = time.perf_counter()
        while True:
            query = "limit=500" + (f"&continue={token}" if token else "")
            t0 = time.perf_counter()
            code, _, page = big.call("GET", f"/api/v1/nodes?{query}")
            slowest = max(slowest, time.perf_counter() - t0)
            assert code == 200
            names += [n["metadata"]["name"] for n in page["items"]]
            token = page["metadata"].get("continue")
            if not token:
                break
        raw_total = time.perf_counter() - started
        assert len(names) == len(set(names)) == 5003
        # The official client (pydantic models) paging the same list.
        started = time.perf_counter()
        with api_client(big.kubeconfig) as api:
            v1 = client.CoreV1Api(api)
            seen, cont = 0, None
            while True:
                page = v1.list_node(limit=500, _continue=cont)
                seen += len(page.items)
                cont = page.metadata._continue
                if not cont:
                    break
        client_total = time.perf_counter() - started
        print(f"5003 nodes: raw {raw_total * 1000:.0f} ms (slowest page {slowest * 1000:.0f} ms), "
              f"kubernetes client {client_total * 1000:.0f} ms")
        assert seen == 5003
        assert slowest < 1.0 and raw_total < 5.0
        assert client_total < 20.0


# -- pure helpers -----------------------------------------------------------------------------


def test_strategic_merge_directives():
    original = {"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                "spec": {"ports": [{"port": 1, "name": "one"}, {"port": 2, "name": "two"}],
                         "type": "NodePort", "externalTrafficPolicy": "Local"}}
    patched = strategic_merge(original, {
        "metadata": {"labels": {"b": None, "c": "3"}, "finalizers": ["y"]},
        "spec": {"ports": [{"port": 3, "name": "three"}, {"port": 1, "$patch": "delete"}],
                 "$setElementOrder/ports": [{"port": 3}, {"port": 2}]},
    })
    assert patched["metadata"] == {"labels": {"a": "1", "c": "3"}, "finalizers": ["x", "y"]}
    assert [p["port"] for p in patched["spec"]["ports"]] == [3, 2]
    replaced = strategic_merge(original, {"spec": {"$patch": "replace", "type": "ClusterIP",
                                                   "ports": [{"port": 9}]}})
    assert replaced["spec"] == {"type": "ClusterIP", "ports": [{"port": 9}]}
    retained = strategic_merge(original, {"spec": {"$retainKeys": ["ports", "type"],
                                                   "type": "ClusterIP"}})
    assert set(retained["spec"]) == {"ports", "type"}


def test_json_patch_and_selectors():
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                           {"op": "move", "from": "/b/c", "path": "/d"},
                           {"op": "test", "path": "/d", "value": 1}])
    assert out == {"a": [1, 2, 3], "b": {}, "d": 1} and doc["b"] == {"c": 1}
    reqs = parse_label_selector("app in (a,b),tier!=db,!legacy,env")
    assert labels_match(reqs, {"app": "a", "env": "x"})
    assert not labels_match(reqs, {"app": "a", "env": "x", "legacy": "1"})
    assert not labels_match(reqs, {"app": "c", "env": "x"})
    assert human_duration(59) == "59s" and human_duration(3 * 3600 + 60) == "3h1m"
