"""The seed lab's commands, verbatim, with kubectl, jq and curl against the embedded lab: the
block `nodeport-harness lab` prints (and the README shows), and the seed's other steps."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness.commands.lab import seed_commands
from harness.lab.cluster import LabCluster

pytestmark = pytest.mark.skipif(
    not (shutil.which("kubectl") and shutil.which("jq") and shutil.which("bash")),
    reason="kubectl, jq and bash are needed for the seed commands",
)

# The lab's block: export KUBECONFIG=...; NODE_IP=$(...); PORT=$(...); curl ... $NODE_IP:$PORT
_EXPORT, _NODE_IP, _PORT, CURL = seed_commands("kubeconfig")
EXTERNAL_IP = _NODE_IP.removeprefix("NODE_IP=$(").removesuffix(")")
NODE_PORT = _PORT.removeprefix("PORT=$(").removesuffix(")")
REPLY = "Hello world1 (direct)"  # the seed's helloworld, word for word

SERVICE_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: helloworld
  labels:
    app: helloworld
spec:
  type: NodePort
  selector:
    app: helloworld
  ports:
    - name: http
      protocol: TCP
      port: 8080
      targetPort: http-server
"""
UNKNOWN_FIELD_YAML = SERVICE_YAML.replace("  type: NodePort\n", "  type: NodePort\n  foo: bar\n")


def sh(lab: LabCluster, home: Path, command: str,
       timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command line as typed in a terminal, with the lab's kubeconfig and a clean HOME."""
    env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "HOME": str(home)}
    env.pop("KUBECACHEDIR", None)
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(lab: LabCluster, home: Path, command: str) -> str:
    proc = sh(lab, home, command)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def post_message(lab: LabCluster, home: Path, ip: str, port: str, wait_s: float = 5.0) -> dict:
    """The seed's curl; retried briefly, since a just-patched port opens asynchronously."""
    if not shutil.which("curl"):
        pytest.skip("curl is needed for the data-plane step")
    deadline = time.monotonic() + wait_s
    while True:
        proc = sh(lab, home, f"NODE_IP={ip}; PORT={port}; {CURL}")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            if time.monotonic() > deadline:
                pytest.fail(f"curl to {ip}:{port} got no JSON: rc={proc.returncode} "
                            f"{proc.stdout!r} {proc.stderr!r}")
            time.sleep(0.1)


# `lab`: the session's NodePort lab (conftest.py), for the commands that only read it and
# curl it; the tests that patch or apply a Service start their own (`make_lab`).


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    # kubectl caches discovery under $HOME/.kube/cache: keep it away from the real HOME.
    return tmp_path_factory.mktemp("home")


def test_the_labs_block_runs_as_printed_on_any_address_block(lab, home):
    """The block as `lab` prints it, pasted into bash: the session lab is on a block of its
    own (not the 127.0.x.y the README's lab has), and the block still finds its node."""
    assert not lab.nodes[0]["external_ip"].startswith("127.0.")
    block = "\n".join(seed_commands(lab.kubeconfig))
    proc = sh(lab, home, f"set -euo pipefail\n{block}\necho; echo \"$NODE_IP:$PORT\"")
    assert proc.returncode == 0, proc.stderr
    reply, where = proc.stdout.strip().splitlines()
    assert where == f"{lab.nodes[0]['external_ip']}:{lab.node_port}"
    answer = json.loads(reply)
    assert answer["message"] == REPLY and answer["sender"] == "world1"
    assert answer["host"] in {p["name"] for p in lab.pods}


def test_the_block_reads_the_internal_ip_when_nodes_have_no_external_ip(make_lab, tmp_path):
    lab = make_lab(nodes=2, pods=2, external_ip=False, seed=14)
    home = tmp_path / "home"
    home.mkdir()
    block = "\n".join(seed_commands(lab.kubeconfig, "InternalIP"))
    proc = sh(lab, home, f"set -euo pipefail\n{block}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["message"] == REPLY


def test_external_ip_of_the_first_node(lab, home):
    assert ok(lab, home, EXTERNAL_IP).strip() == lab.nodes[0]["external_ip"]


def test_node_port_of_the_service(lab, home):
    port = ok(lab, home, NODE_PORT).strip()
    assert port == str(lab.node_port) and 30000 <= int(port) <= 32767


def test_curl_through_the_node_port_reaches_a_listed_pod(lab, home):
    ip = ok(lab, home, EXTERNAL_IP).strip()
    port = ok(lab, home, NODE_PORT).strip()
    answer = post_message(lab, home, ip, port)
    listed = ok(lab, home, "kubectl get pods -l app=helloworld")
    assert answer["sender"] == "world1"
    assert answer["host"] in {p["name"] for p in lab.pods}
    assert answer["host"] in listed


def test_get_pods_by_label_prints_a_table(lab, home):
    out = ok(lab, home, "kubectl get pods -l app=helloworld").splitlines()
    assert out[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in out[1:]}
    assert set(rows) == {p["name"] for p in lab.pods}
    assert all(cells == ["1/1", "Running", "0"] for cells in rows.values())


def test_describe_service_shows_type_node_port_and_endpoints(lab, home):
    out = ok(lab, home, "kubectl describe svc helloworld")
    assert re.search(r"^Type:\s+NodePort$", out, re.M)
    assert re.search(rf"^NodePort:\s+<unset>\s+{lab.node_port}/TCP$", out, re.M)
    assert re.search(r"^TargetPort:\s+http-server/TCP$", out, re.M)
    endpoints = re.search(r"^Endpoints:\s+(\S+)", out, re.M)
    assert endpoints, out
    pod_ips = {p["ip"] for p in lab.pods}
    shown = {e.split(":")[0] for e in endpoints.group(1).split(",")}
    assert shown and shown <= pod_ips


def test_patch_cluster_ip_service_to_node_port_then_it_serves(make_lab, tmp_path):
    lab = make_lab(nodes=3, pods=6, service_type="ClusterIP", seed=12)
    home = tmp_path / "home"
    home.mkdir()
    assert ok(lab, home, NODE_PORT).strip() == "null"
    out = ok(lab, home, """kubectl patch svc helloworld -p '{"spec": {"type": "NodePort"}}'""")
    assert out.strip() == "service/helloworld patched"
    port = ok(lab, home, NODE_PORT).strip()
    assert 30000 <= int(port) <= 32767
    answer = post_message(lab, home, ok(lab, home, EXTERNAL_IP).strip(), port)
    assert answer["host"] in {p["name"] for p in lab.pods}


def test_apply_existing_and_new_service_and_reject_unknown_fields(make_lab, tmp_path):
    good, bad = tmp_path / "helloworld-svc.yaml", tmp_path / "helloworld-svc-bad.yaml"
    good.write_text(SERVICE_YAML)
    bad.write_text(UNKNOWN_FIELD_YAML)
    lab = make_lab(nodes=3, pods=6, seed=13)
    home = tmp_path / "home"
    home.mkdir()
    # Existing Service: kubectl reads it, then sends a strategic-merge PATCH.
    proc = sh(lab, home, f"kubectl apply -f {good} -v=6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "service/helloworld configured"
    assert re.search(r"GET https://\S+/services/helloworld 200", proc.stderr)
    assert re.search(r"PATCH https://\S+/services/helloworld\?\S*fieldValidation=Strict",
                     proc.stderr)
    svc = json.loads(ok(lab, home, "kubectl get svc helloworld -o json"))
    assert svc["spec"]["ports"][0]["name"] == "http"
    assert svc["spec"]["ports"][0]["nodePort"] == lab.node_port  # merged, not reallocated
    assert "kubectl.kubernetes.io/last-applied-configuration" in svc["metadata"]["annotations"]
    assert ok(lab, home, f"kubectl apply -f {good}").strip() == "service/helloworld unchanged"

    proc = sh(lab, home, f"kubectl apply -f {bad}")
    assert proc.returncode != 0
    assert 'unknown field "spec.foo"' in proc.stderr

    # A new Service: GET answers 404, kubectl POSTs it.
    ok(lab, home, "kubectl delete svc helloworld")
    proc = sh(lab, home, f"kubectl apply -f {bad}")
    assert proc.returncode != 0 and 'unknown field "spec.foo"' in proc.stderr
    assert sh(lab, home, "kubectl get svc helloworld").returncode != 0  # nothing created
    proc = sh(lab, home, f"kubectl apply -f {good} -v=6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "service/helloworld created"
    assert re.search(r"POST https://\S+/namespaces/default/services\?\S* 201", proc.stderr)
    port = ok(lab, home, NODE_PORT).strip()
    assert 30000 <= int(port) <= 32767
    answer = post_message(lab, home, ok(lab, home, EXTERNAL_IP).strip(), port)
    assert answer["host"] in {p["name"] for p in lab.pods}
