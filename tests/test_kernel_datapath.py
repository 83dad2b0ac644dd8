"""The lab's kernel datapath end to end: nodes and pods in network namespaces, NodePort
through kube-proxy's rules in the kernel, faults, tear-down, and a real run that reconciles.

Needs root, iproute2, iptables (and the kernel's netns, veth, bridge, nat, statistic and
recent support): each test skips with a reason naming what is missing; CI runs as root with
iptables installed. Every address is in 198.18.0.0/15 and every request loop is bounded.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_runs import delta, load, pod_successes, post

from harness.errors import LabError
from harness.lab import netns
from harness.lab.cluster import LabCluster

ROOT = Path(__file__).resolve().parents[1]
# What kube-proxy's rules need from the kernel, each tried in a throw-away namespace.
FEATURES = {
    "the statistic match (xt_statistic)":
        "-A PREROUTING -m statistic --mode random --probability 0.5 -j RETURN",
    "the recent match (xt_recent)": "-A PREROUTING -m recent --name probe --rcheck --seconds 5 "
                                    "--reap -j RETURN",
    "DNAT": "-A PREROUTING -p tcp -j DNAT --to-destination 198.18.255.1:80",
    "MASQUERADE --random-fully": "-A POSTROUTING -j MASQUERADE --random-fully",
    "the addrtype match": "-A PREROUTING -m addrtype --dst-type LOCAL -j RETURN",
}


def _missing() -> str | None:
    try:
        netns.preflight()
    except LabError as err:
        return str(err)
    probe = f"{netns.PREFIX}-feature-{os.getpid()}"
    netns.run(["ip", "netns", "add", probe])
    try:
        for feature, rule in FEATURES.items():
            text = f"*nat\n{rule}\nCOMMIT\n"
            proc = netns.run(["iptables-restore", "--test"], text, check=False, netns=probe)
            if proc.returncode != 0:
                return f"the kernel lacks {feature}: {proc.stderr.strip()[:200]}"
        link = netns.run(["ip", "-n", probe, "link", "add", "b0", "type", "bridge"],
                         check=False)
        if link.returncode != 0:
            return f"the kernel lacks bridges: {link.stderr.strip()}"
    finally:
        netns.run(["ip", "netns", "del", probe], check=False)
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"kernel datapath: {MISSING}")


def times_out(ip: str, port: int, timeout: float = 0.5) -> bool:
    try:
        post(ip, port, timeout=timeout)
    except TimeoutError:
        return True
    return False


def iptables_save(lab: LabCluster, node: str) -> str:
    return netns.iptables_save(netns.Layout(lab.info()["block"]).node_ns(node))


def leftovers(block: int) -> list[str]:
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    lay = netns.Layout(block)
    stale = [line for line in routes.splitlines()
             if any(net in line for net in (lay.node_net, lay.client_net, lay.pod_net))]
    return (netns.lab_namespaces(block) + netns.lab_links(block)
            + netns.lab_etc_folders(block) + stale)


@pytest.fixture(scope="module")
def kernel_lab(make_module_lab):
    """A kernel lab shared by this module's read-only tests: NodePort, 3 nodes, 3-2-1 pods."""
    return make_module_lab(datapath="kernel", nodes=3, placement=[3, 2, 1], seed=21)


# -- the seed's steps and the rules -----------------------------------------------------------


def test_nodes_and_pods_have_benchmarking_range_addresses(kernel_lab):
    info = kernel_lab.info()
    assert info["datapath"] == "kernel"
    lay = netns.Layout(info["block"])
    assert [n["internal_ip"] for n in kernel_lab.nodes] == [lay.internal_ip(i) for i in (1, 2, 3)]
    assert [n["external_ip"] for n in kernel_lab.nodes] == [lay.external_ip(i) for i in (1, 2, 3)]
    assert all(p["ip"].startswith(f"198.19.{2 * info['block']}.") for p in kernel_lab.pods)
    pods = kernel_lab.current_pods()
    assert {p["ip"] for p in pods} == {p["ip"] for p in kernel_lab.pods}
    # Each pod is a real process in its own namespace, answering on its own address.
    for pod in kernel_lab.pods:
        answer = post(pod["ip"], pod["port"])
        assert (answer["host"], answer["node"]) == (pod["name"], pod["node"])


def test_the_seed_curl_through_a_node_port_reaches_a_pod(kernel_lab):
    node = kernel_lab.nodes[0]
    proc = subprocess.run(
        ["curl", "-s", "-m", "5", "-X", "POST",
         f"http://{node['external_ip']}:{kernel_lab.node_port}/api/messages",
         "-H", "Content-Type: application/json", "-d", '{ "sender": "world1" }'],
        capture_output=True, text=True, timeout=10)
    if proc.returncode == 127:
        pytest.skip("curl is needed for the seed's step")
    answer = json.loads(proc.stdout)
    assert answer["sender"] == "world1"
    assert answer["host"] in {p["name"] for p in kernel_lab.pods}
    # Cluster policy: the pod sees the entry node (kube-proxy's MASQUERADE), by its InternalIP.
    assert answer["client"].split(":")[0] == node["internal_ip"]


def test_the_seed_commands_verbatim(kernel_lab, tmp_path):
    """kubectl, jq and curl exactly as the seed lab types them, against the kernel lab."""
    from harness.commands.lab import seed_commands

    if not all(shutil.which(tool) for tool in ("kubectl", "jq", "curl", "bash")):
        pytest.skip("kubectl, jq, curl and bash are needed for the seed commands")
    env = {**os.environ, "HOME": str(tmp_path)}
    # The block the lab prints (and the README shows), line for line.
    script = "\n".join(["set -euo pipefail", *seed_commands(kernel_lab.kubeconfig)])
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    answer = json.loads(proc.stdout)
    assert answer["sender"] == "world1"
    assert answer["host"] in {p["name"] for p in kernel_lab.pods}


def test_each_node_namespace_holds_kube_proxys_chains(kernel_lab):
    for node in kernel_lab.nodes:
        saved = iptables_save(kernel_lab, node["name"])
        assert ":KUBE-NODEPORTS - " in saved and ":KUBE-POSTROUTING - " in saved
        assert saved.count(":KUBE-SEP-") == 6 and ":KUBE-SVC-" in saved and ":KUBE-EXT-" in saved
        assert f"--dport {kernel_lab.node_port} -j KUBE-EXT-" in saved
        for pod in kernel_lab.pods:
            assert f"--to-destination {pod['ip']}:8080" in saved
        assert "MASQUERADE --random-fully" in saved


def test_new_connections_spread_over_every_pod_through_one_node(kernel_lab):
    node = kernel_lab.nodes[2]  # one pod of its own; Cluster policy reaches all six
    seen = collections.Counter(post(node["external_ip"], kernel_lab.node_port)["host"]
                               for _ in range(240))
    assert set(seen) == {p["name"] for p in kernel_lab.pods}
    assert min(seen.values()) >= 15, seen  # 40 expected each; 15 is ~5 standard deviations


def test_a_real_run_reconciles_with_what_the_pods_served(kernel_lab, tmp_path):
    before = kernel_lab.stats()
    cmd = [sys.executable, "-m", "harness.cli", "run", "--kubeconfig",
           str(kernel_lab.kubeconfig), "--report-dir", str(tmp_path), "--run-id", "k",
           "-u", "4", "-t", "3s", "--entry", "all"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spread = load(tmp_path / "k", "spread.json")
    assert spread["totals"]["failures"] == 0 and spread["totals"]["requests"] > 100
    assert set(spread["entry_nodes"]) == {"node-1", "node-2", "node-3"}
    # What the client recorded per pod is exactly what each pod process counted serving.
    assert pod_successes(spread) == delta(before, kernel_lab.stats())
    target = json.dumps(load(tmp_path / "k", "target.json"))
    assert all(f'"{n["external_ip"]}"' in target for n in kernel_lab.nodes)


# -- policies and faults (labs of their own) ---------------------------------------------------


def test_local_policy_drops_on_a_node_without_pods_and_keeps_the_client_address(make_lab):
    lab = make_lab(datapath="kernel", nodes=3, placement=[2, 1, 0], policy="Local", seed=22)
    client = netns.Layout(lab.info()["block"]).host_ip
    by_node = {p["name"]: p["node"] for p in lab.pods}
    for node in lab.nodes[:2]:
        for _ in range(10):
            answer = post(node["external_ip"], lab.node_port)
            assert by_node[answer["host"]] == node["name"]  # only its own pods
            assert answer["client"].split(":")[0] == client  # no SNAT under Local
    assert times_out(lab.nodes[2]["external_ip"], lab.node_port)
    saved = iptables_save(lab, "node-3")
    assert '"default/helloworld has no local endpoints"' in saved
    assert f"--dport {lab.node_port} -j DROP" in saved


def test_a_down_node_times_out_and_comes_back(make_lab):
    lab = make_lab(datapath="kernel", nodes=2, placement=[1, 1], seed=23)
    first, second = lab.nodes
    pod_on = {p["node"]: p["name"] for p in lab.pods}
    lab.node_down("node-2")
    assert times_out(second["external_ip"], lab.node_port)
    # Through node-1, connections kube-proxy sends to the pod on the dead node time out too
    # (its endpoint stays until the control plane notices); the rest are served.
    outcomes = collections.Counter()
    for _ in range(16):
        try:
            outcomes[post(first["external_ip"], lab.node_port, timeout=0.4)["host"]] += 1
        except TimeoutError:
            outcomes["timeout"] += 1
    assert outcomes["timeout"] >= 1 and outcomes[pod_on["node-1"]] >= 1, outcomes
    assert pod_on["node-2"] not in outcomes
    lab.node_up("node-2")
    assert post(second["external_ip"], lab.node_port)["host"] in set(pod_on.values())


def test_a_killed_pod_leaves_the_rules_and_keeps_its_count(make_lab):
    lab = make_lab(datapath="kernel", nodes=2, placement=[2, 1], seed=24)
    victim = lab.pods[0]
    for _ in range(5):
        post(victim["ip"], 8080)  # straight to the pod: it counts these too
    lab.kill_pod(victim["name"])
    for node in ("node-1", "node-2"):
        assert f"{victim['ip']}:8080" not in iptables_save(lab, node)
    served = collections.Counter(post(lab.nodes[0]["external_ip"], lab.node_port)["host"]
                                 for _ in range(30))
    assert victim["name"] not in served and len(served) == 2
    stats = lab.stats()
    assert stats[victim["name"]] == 5 and sum(stats.values()) == 35
    assert not netns.lab_namespaces(lab.info()["block"]) or all(
        not name.endswith("-p" + victim["ip"].rsplit(".", 1)[1])
        for name in netns.lab_namespaces(lab.info()["block"]))


def test_a_restarted_pod_comes_back_at_a_new_address_once_ready(make_lab):
    lab = make_lab(datapath="kernel", nodes=1, pods=2, restart_delay_s=0.5, seed=29)
    old = lab.pods[0]
    new = lab.restart_pod(old["name"])["replacement"]
    deadline = time.monotonic() + 10
    while not [p for p in lab.current_pods() if p["name"] == new and p["ready"]]:
        assert time.monotonic() < deadline, "the replacement never became ready"
        time.sleep(0.1)
    ip = next(p["ip"] for p in lab.current_pods() if p["name"] == new)
    assert ip != old["ip"] and f"--to-destination {ip}:8080" in iptables_save(lab, "node-1")
    served = collections.Counter(post(lab.nodes[0]["external_ip"], lab.node_port)["host"]
                                 for _ in range(40))
    assert new in served and old["name"] not in served


def test_the_load_balancer_spreads_over_nodes_and_leaves_a_down_one(make_lab):
    # node-3 runs no pod: once the LB has let it go, nothing reaches the dead node.
    lab = make_lab(datapath="kernel", nodes=3, placement=[2, 1, 0],
                   service_type="LoadBalancer", lb_check_s=0.2, seed=25)
    internal = {n["internal_ip"]: n["name"] for n in lab.nodes}
    via = collections.Counter(internal[post(lab.lb_address, 8080)["client"].split(":")[0]]
                              for _ in range(90))
    assert set(via) == {"node-1", "node-2", "node-3"}, via
    lab.node_down("node-3")
    time.sleep(1.0)  # two failed checks (0.4 s) and then some: the LB has let it go
    gw = netns.Layout(lab.info()["block"]).gateway_ns
    assert "-> node-3" not in netns.iptables_save(gw)
    via = collections.Counter(internal[post(lab.lb_address, 8080, timeout=2)["client"]
                                       .split(":")[0]] for _ in range(30))
    assert set(via) <= {"node-1", "node-2"}, via


# -- start, stop, leftovers -------------------------------------------------------------------


def test_stop_leaves_no_namespace_link_route_or_process(tmp_path):
    lab = LabCluster(datapath="kernel", nodes=2, pods=2, state_dir=tmp_path / "lab", seed=26)
    with lab:
        block = lab.info()["block"]
        names = netns.lab_namespaces(block)
        assert len(names) == 5 and leftovers(block)  # gateway, 2 nodes, 2 pods
        pids = [pid for ns in names for pid in
                netns.run(["ip", "netns", "pids", ns]).stdout.split()]
        assert len(pids) == 2  # the pods
    assert leftovers(block) == []
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_after_sigkill_the_pods_die_and_a_new_start_removes_the_rest(tmp_path):
    crashed = LabCluster(datapath="kernel", nodes=2, pods=2, state_dir=tmp_path / "a",
                         seed=27)
    crashed.start()
    block = crashed.info()["block"]
    pids = [pid for ns in netns.lab_namespaces(block)
            for pid in netns.run(["ip", "netns", "pids", ns]).stdout.split()]
    # The lab process dies hard, and so (we pretend) did its caller: nothing tears down.
    assert crashed._finalizer is not None and crashed.process is not None
    crashed._finalizer.detach()
    os.kill(crashed.process.pid, signal.SIGKILL)
    crashed.process.wait(timeout=10)
    crashed.process = None
    deadline = time.monotonic() + 5
    while [p for p in pids if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]  # the pods went with it
    assert netns.lab_namespaces(block)  # ...but its namespaces are still there
    with LabCluster(datapath="kernel", nodes=1, pods=1, state_dir=tmp_path / "b", seed=28):
        assert leftovers(block) == []
    assert leftovers(block) == []


def test_a_kernel_lab_says_what_it_cannot_do():
    with pytest.raises(LabError, match="iptables mode only"):
        LabCluster(datapath="kernel", proxy_mode="ipvs")
    with pytest.raises(LabError, match="--block 0-127"):
        LabCluster(datapath="kernel", block=200)
