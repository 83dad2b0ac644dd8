"""Runs through a LoadBalancer, accounted: which node the LB passed each success to (the
recorder's ``via_nodes``) in summary.json's ``lb``, the findings, the headline, the page, the
Markdown, compare and --max-node-share; and the node addresses and pod CIDRs discovery
reads to tell a node by a pod's peer. Synthetic runs (tests/report_runs.py) and plain API
objects; the real path is in tests/test_lb_lab.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from report_runs import T0, make_run, make_target

from harness.core.analysis import evaluate_thresholds, summarize
from harness.core.model import Target
from harness.core.recorder import SpreadRecorder
from harness.discovery import build_target, load_inventory, parse_node
from harness.errors import DiscoveryError
from harness.report.build import build_report, headline
from harness.report.compare import build_compare


def lb_summary(via: list[str | None], policy: str = "Cluster", ingress: str = "192.0.2.80",
               extra_entries: dict[str, int] | None = None) -> dict:
    """summarize() of an --entry lb run whose successes came through `via` (None: the
    reply did not show a node), one request a connection."""
    target = make_target(policy=policy)
    target = dataclasses.replace(target, service=dataclasses.replace(
        target.service, type="LoadBalancer", lb_ingress=(ingress,) if ingress else ()))
    now = [T0]
    recorder = SpreadRecorder(target.pod_nodes(), clock=lambda: now[0],
                              nodes=[n.name for n in target.nodes])
    pods = [e.pod for e in target.endpoints]
    for i, node in enumerate(via):
        now[0] = T0 + i / 100
        recorder.note_via("lb", node)
        recorder.record("lb", pods[i % len(pods)], 3.0, None, 0)
    for entry, count in (extra_entries or {}).items():
        for _ in range(count):
            recorder.record(entry, pods[0], 3.0, None, 0)
    recorder.close()
    return summarize(recorder.to_dict(), target.to_dict(),
                     {"entry_strategy": "lb", "connection_mode": "close", "start": T0,
                      "duration_s": 10.0})


def by_id(summary: dict) -> dict[str, dict]:
    return {f["id"]: f for f in summary["findings"]}


# -- summary.json's lb ---------------------------------------------------------------------

def test_lb_section_counts_successes_per_node_the_lb_chose():
    summary = lb_summary(["node-1"] * 50 + ["node-2"] * 30 + ["node-3"] * 20)
    lb = summary["lb"]
    assert lb["seen"] is True and lb["unseen_reason"] is None
    assert lb["via_nodes"] == {"node-1": 50, "node-2": 30, "node-3": 20}
    assert sum(lb["via_nodes"].values()) == lb["successes"] == 100 and lb["unknown"] == 0
    assert lb["shares"] == {"node-1": 0.5, "node-2": 0.3, "node-3": 0.2}
    assert (lb["nodes"], lb["nodes_used"], lb["address"]) == (3, 3, "192.0.2.80")
    json.dumps(summary)  # summary.json material


def test_a_node_the_lb_never_used_is_listed_with_zero_and_unknowns_apart():
    lb = lb_summary(["node-1"] * 60 + [None] * 40)["lb"]
    assert lb["seen"] and lb["via_nodes"] == {"node-1": 60, "node-2": 0, "node-3": 0}
    assert lb["unknown"] == 40 and lb["nodes_used"] == 1
    assert lb["shares"]["node-1"] == 0.6


@pytest.mark.parametrize(("via", "policy", "reason"), [
    (["node-1", "node-2"] * 10, "Local", "local_policy"),  # the peer was the client
    ([None] * 20, "Cluster", "no_node_address"),  # no reply named a node
])
def test_the_lbs_choice_unseen_says_why(via, policy, reason):
    summary = lb_summary(via, policy=policy)
    lb = summary["lb"]
    assert lb["seen"] is False and lb["unseen_reason"] == reason
    assert lb["via_nodes"] == {} and lb["shares"] == {} and lb["unknown"] == 20
    text = headline(summary)
    assert "entered through the LoadBalancer 192.0.2.80" in text
    assert "could not be seen" in text and "of 3 nodes" not in text
    finding = by_id(summary)["lb_spread"]
    assert finding["severity"] == "info" and "could not be seen" in finding["text"]
    assert ("Local" in finding["text"]) == (policy == "Local")


def test_runs_not_through_an_lb_have_no_lb_section():
    target = make_target()
    recorder = SpreadRecorder(target.pod_nodes(), nodes=[n.name for n in target.nodes])
    recorder.record("node-1", target.endpoints[0].pod, 3.0)
    summary = summarize(recorder.to_dict(), target.to_dict(), {"entry_strategy": "all"})
    assert summary["lb"] is None and "lb_spread" not in by_id(summary)
    assert "entered through 1 of 3 nodes" in headline(summary)


# -- findings and headline -----------------------------------------------------------------

def test_an_even_lb_spread_is_ok_and_the_headline_names_the_lb():
    summary = lb_summary(["node-1", "node-2", "node-3"] * 40)
    finding = by_id(summary)["lb_spread"]
    assert finding["severity"] == "ok"
    assert "spread requests over 3 of 3 nodes" in finding["text"]
    assert "The LoadBalancer (192.0.2.80)" in finding["text"]
    text = headline(summary)
    assert text.startswith("120 requests in 10 s")
    assert "entered through the LoadBalancer 192.0.2.80, which passed them to 3 of 3 " \
           "nodes and reached 6 of 6 pods" in text
    assert "0 of 3 nodes" not in text
    assert "ingress_concentration" not in by_id(summary)


def test_all_through_one_node_is_a_warning_and_uneven_is_said():
    finding = by_id(lb_summary(["node-2"] * 30))["lb_spread"]
    assert finding["severity"] == "warning" and "every request through node-2" in finding["text"]
    finding = by_id(lb_summary(["node-1"] * 80 + ["node-2"] * 20))["lb_spread"]
    assert finding["severity"] == "info" and "unevenly" in finding["text"]
    assert "node-3 got nothing" in finding["text"]


def test_unknown_replies_are_counted_in_the_finding():
    finding = by_id(lb_summary(["node-1", "node-2", "node-3"] * 30 + [None] * 10))["lb_spread"]
    assert "10 replies (10 %) did not show a node" in finding["text"]


# -- thresholds: --max-node-share reads the LB's node shares -------------------------------

def test_max_node_share_on_an_lb_run_is_the_largest_node_the_lb_chose():
    summary = lb_summary(["node-1"] * 40 + ["node-2"] * 30 + ["node-3"] * 30)
    (result,) = evaluate_thresholds(summary, {"max_node_share": 0.5})
    assert result["value"] == 0.4 and result["passed"]
    (result,) = evaluate_thresholds(lb_summary([None] * 10), {"max_node_share": 0.5})
    assert result["value"] is None and not result["passed"] and "no data" in result["text"]


# -- the run folder's outputs and compare --------------------------------------------------

def test_report_page_and_markdown_show_the_lb_spread(tmp_path):
    run_dir = make_run(tmp_path, "run-lb", seconds=5, down=None, entry="lb")
    result = build_report(run_dir, plotlyjs="cdn")
    summary = json.loads((run_dir / "summary.json").read_text())
    lb = summary["lb"]
    assert lb["seen"] and set(lb["via_nodes"]) == {"node-1", "node-2", "node-3"}
    assert sum(lb["via_nodes"].values()) == lb["successes"] == summary["totals"]["successes"]
    page = (run_dir / "index.html").read_text()
    assert "Through the LoadBalancer" in page and 'id="chart-lb_nodes"' in page
    assert "through the LB</th>" in page  # the Nodes table's column
    assert "0 of 3 nodes" not in page
    markdown = (run_dir / "summary.md").read_text()
    assert "### Through the LoadBalancer" in markdown
    assert "entered through the LoadBalancer, which passed them to 3 of 3 nodes" in markdown
    for node, count in lb["via_nodes"].items():
        assert f"| {node} | 2 | {count:,} |" in markdown
    assert result["summary"]["lb"] == lb


def test_local_lb_page_says_the_choice_could_not_be_seen(tmp_path):
    run_dir = make_run(tmp_path, "run-lb-local", seconds=5, down=None, entry="lb",
                       policy="Local")
    build_report(run_dir, plotlyjs="cdn")
    page = (run_dir / "index.html").read_text()
    assert "could not be seen" in page and 'id="chart-lb_nodes"' not in page
    assert "0 of 3 nodes" not in page
    assert "could not be seen" in (run_dir / "summary.md").read_text()


def test_compare_shows_the_lbs_node_shares_not_100_percent(tmp_path):
    runs = [make_run(tmp_path, "run-all", seconds=5, down=None, entry="all"),
            make_run(tmp_path, "run-lb", seconds=5, down=None, entry="lb"),
            make_run(tmp_path, "run-lb-local", seconds=5, down=None, entry="lb",
                     policy="Local")]
    result = build_compare(runs, tmp_path / "cmp", plotlyjs="cdn")
    rows = {r["run_id"]: r for r in result["runs"]}
    lb = rows["run-lb"]
    assert {name for name, _ in lb["node_shares"]} == {"node-1", "node-2", "node-3"}
    assert lb["largest_node_share"] < 0.5 and lb["expected_node_share"] == 1 / 3
    assert rows["run-lb-local"]["largest_node_share"] is None
    assert rows["run-lb-local"]["node_shares"] == []
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "nodes the LoadBalancer chose" in page
    assert "its node choice was not seen" in page
    for run_id in ("run-lb", "run-lb-local"):  # the side-by-side table: a row per run
        row = page.split(f"<strong>{run_id}</strong>", 1)[1].split("</tr>", 1)[0]
        busiest = row.split('<td class="wrap">', 1)[1].split("</td>", 1)[0]
        assert "100 %" not in busiest and ("LoadBalancer" in busiest)


# -- discovery: every node address and the pod CIDRs ---------------------------------------

def api_node(name: str, spec: dict, addresses: list[tuple[str, str]]) -> dict:
    return {"metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""}},
            "spec": spec,
            "status": {"addresses": [{"type": t, "address": a} for t, a in addresses],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def test_discovery_reads_pod_cidrs_and_every_node_ip():
    dual = parse_node(api_node(
        "w1", {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
        [("InternalIP", "10.0.0.11"), ("InternalIP", "fd00::11"), ("ExternalIP", "203.0.113.11"),
         ("Hostname", "w1")]))
    assert dual.pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    assert dual.ips == ("10.0.0.11", "fd00::11", "203.0.113.11")
    assert dual.addresses["InternalIP"] == "10.0.0.11"  # the first of each type, as before
    old = parse_node(api_node("w2", {"podCIDR": "10.244.2.0/24"}, [("InternalIP", "10.0.0.12")]))
    assert old.pod_cidrs == ("10.244.2.0/24",) and old.ips == ("10.0.0.12",)
    none = parse_node(api_node("w3", {}, [("Hostname", "w3")]))
    assert none.pod_cidrs == () and none.ips == ()
    odd = parse_node(api_node("w4", {"podCIDRs": "10.244.4.0/24"}, []))  # not a list
    assert odd.pod_cidrs == ()


def test_target_json_keeps_them_and_old_files_still_load():
    svc = {"metadata": {"name": "helloworld", "namespace": "default"},
           "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}
    target = build_target([api_node("w1", {"podCIDRs": ["10.244.1.0/24"]},
                                    [("InternalIP", "10.0.0.11")])], svc)
    data = json.loads(json.dumps(target.to_dict()))
    assert data["nodes"][0]["pod_cidrs"] == ["10.244.1.0/24"]
    assert Target.from_dict(data) == target
    for node in data["nodes"]:
        del node["pod_cidrs"], node["ips"]  # target.json from before these fields
    assert Target.from_dict(data).nodes[0].pod_cidrs == ()


def test_inventory_may_give_internal_ips_and_pod_cidrs(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_text(
        "service: {nodePort: 30080, loadBalancer: 203.0.113.7}\n"
        "nodes:\n"
        "  - {name: n1, address: 203.0.113.11, internalIPs: [10.0.0.11],"
        " podCIDRs: [10.244.1.0/24]}\n"
        "  - {name: n2, address: n2.example.test, podCIDR: 10.244.2.0/24}\n"
        "  - {name: n3, address: 203.0.113.13}\n")
    n1, n2, n3 = load_inventory(str(path)).nodes
    assert n1.ips == ("203.0.113.11", "10.0.0.11") and n1.pod_cidrs == ("10.244.1.0/24",)
    assert n2.ips == () and n2.pod_cidrs == ("10.244.2.0/24",)
    assert n3.ips == ("203.0.113.13",) and n3.pod_cidrs == ()


@pytest.mark.parametrize(("extra", "fragment"), [
    ("podCIDRs: [10.244.1.0/33]", "nodes[0].podCIDRs must be a list of CIDRs"),
    ("podCIDR: nonsense", "nodes[0].podCIDR must be a list of CIDRs"),
    ("podCIDRs: 10.244.1.0/24", "nodes[0].podCIDRs must be a list of CIDRs"),
    ("internalIPs: [node-1.example]", "nodes[0].internalIPs must be a list of IP addresses"),
])
def test_inventory_rejects_bad_pod_cidrs_and_internal_ips(tmp_path, extra, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text("service: {nodePort: 30080}\n"
                    f"nodes: [{{name: a, address: 127.0.0.1, {extra}}}]\n")
    with pytest.raises(DiscoveryError) as err:
        load_inventory(str(path))
    assert fragment in str(err.value) and "\n" not in str(err.value)
