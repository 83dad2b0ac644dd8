"""What-ifs (harness.core.whatif): hand-computed predictions for changed topologies, their
place in summary.json, index.html and summary.md (labelled as predictions), and the compare
page setting a what-if's prediction against a re-run that measured it: synthetic runs, and
one real pair of short runs on two labs."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_runs import T0, run_info

from harness.cli import main
from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.recorder import SpreadRecorder
from harness.core.spread_model import entry_choices
from harness.core.whatif import build_whatifs, check_rerun, new_pod_name, run_topology
from harness.report.build import build_report
from harness.report.compare import build_compare
from harness.report.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
NODES = ("node-1", "node-2", "node-3")


# -- pure: hand-computed what-ifs from a crafted summary -------------------------------------

def target(placement=(3, 2, 1), policy="Cluster", service_type="NodePort") -> dict:
    nodes = [f"node-{i + 1}" for i in range(len(placement))]
    return {
        "nodes": [{"name": n, "targeted": True} for n in nodes],
        "endpoints": [{"pod": f"{node}-pod-{j}", "node": node, "ready": True}
                      for node, count in zip(nodes, placement, strict=True)
                      for j in range(count)],
        "service": {"name": "helloworld", "namespace": "default", "type": service_type,
                    "external_traffic_policy": policy, "session_affinity": "None",
                    "lb_ingress": []},
        "source": "lab",
    }


def summary_of(tgt: dict, entries: dict[str, int], *, entry: str, connection="close",
               connections: int | None = None, served: dict[str, int] | None = None,
               single_pod_share=1.0, duration=30.0) -> dict:
    """The parts of a summary the what-ifs read; pods served evenly unless ``served``."""
    requests = sum(entries.values())
    pods = [e["pod"] for e in tgt["endpoints"]]
    served = served or {pod: requests // len(pods) for pod in pods}
    total = sum(served.values())
    connections = requests if connection == "close" else connections
    return {
        "run": {"entry_strategy": entry, "connection_mode": connection, "duration_s": duration},
        "nodes": [{"name": name, "requests": count} for name, count in entries.items()],
        "totals": {"successes": total},
        "pods": [{"name": pod, "successes": served.get(pod, 0),
                  "share": served.get(pod, 0) / total, "latency": {"p95": 4.0}}
                 for pod in pods],
        "keepalive": {"connections": connections, "connections_with_pod": connections,
                      "single_pod_share": single_pod_share,
                      "mean_requests_per_connection": (requests / connections
                                                       if connections else None)},
        "cross_node": {"share": 0.5, "cost_ms": {"p50": 0.4}, "enough_samples": True},
    }


def by_id(whatifs: list[dict]) -> dict[str, dict]:
    return {w["id"]: w for w in whatifs}


def shares(whatif: dict) -> dict[str, float]:
    return {p["name"]: round(p["expected_share"], 6) for p in whatif["pods"]}


def failure(rows: list[dict]) -> dict[str, tuple]:
    return {r["node"]: (round(r["entering"], 6), round(r["routed"], 6), r["spof"])
            for r in rows}


EVEN = {"node-1": 300, "node-2": 300, "node-3": 300}


def test_local_with_3_2_1_gives_node_3s_pod_a_third_entering_every_node_evenly():
    whatifs = by_id(build_whatifs(target(), summary_of(target(), EVEN, entry="all"),
                                  {"users": 4}))
    # Entering every node already, a new connection per request: no entry or close what-if.
    assert list(whatifs) == ["lb", "policy_local", "more_pods"]
    local = whatifs["policy_local"]
    assert local["change"] == {"external_traffic_policy": "Local"}
    # Each node keeps its third: node-3's one pod 1/3, node-2's two 1/6, node-1's three 1/9.
    assert shares(local) == {
        **{f"node-1-pod-{j}": round(1 / 9, 6) for j in range(3)},
        **{f"node-2-pod-{j}": round(1 / 6, 6) for j in range(2)},
        "node-3-pod-0": round(1 / 3, 6)}
    assert local["dropped_share"] == 0 and local["cross_node_share"] == 0
    assert local["busiest"]["vs_even"] == pytest.approx(2.0)
    # A node's failure under Local costs what enters it, nothing routed from elsewhere.
    assert failure(local["node_failure"]["entry"]) == {
        n: (round(1 / 3, 6), 0.0, False) for n in NODES}
    assert local["topology"] == {
        "external_traffic_policy": "Local", "session_affinity": "None", "lb": False,
        "entry": "all", "entry_node": None, "connection": "close",
        "pods_per_node": {"node-1": 3, "node-2": 2, "node-3": 1}}
    # Every sentence is a prediction, with the figures worked out above.
    assert local["prediction"] is True
    assert all(s.startswith("Predicted: ") for s in local["sentences"])
    assert ("Predicted: with externalTrafficPolicy Local, node-3's only pod (node-3-pod-0) "
            "would take 33.3 % of successful requests, 2× an even share (it served 16.7 % in "
            "this run); each of node-1's 3 pods 11.1 %.") in local["sentences"]
    assert any("no request would cross nodes (50 % in this run, at 0.4 ms extra at p50)" in s
               for s in local["sentences"])
    # 900 requests in 30 s: 30 req/s; node-3's pod 10 req/s, twice its 5 req/s here.
    assert any("the busiest pod would serve about 10 req/s, 2× what it served in this run"
               in s for s in local["sentences"])
    lab, cluster = local["rerun"]
    assert lab["where"] == "lab" and (
        "nodeport-harness lab --nodes 3 --placement 3,2,1 --policy Local" in lab["commands"][1])
    assert lab["commands"][2] == ("nodeport-harness run --kubeconfig .lab/kubeconfig "
                                  "--entry all --connection close -u 4 -t 30s")
    assert cluster["commands"][0] == ("kubectl -n default patch svc helloworld -p "
                                      "'{\"spec\":{\"externalTrafficPolicy\":\"Local\"}}'")


def test_more_pods_where_local_overloads_a_pod():
    more = by_id(build_whatifs(target(), summary_of(target(), EVEN, entry="all")))["more_pods"]
    # Under Local node-3's pod is the overloaded one (1/3 = 2x even): 2 more pods, as many as
    # the busiest node runs. node-3's three then take 1/9 each; node-2's two stay at 1/6.
    assert more["change"] == {"external_traffic_policy": "Local", "add_pods": {"node-3": 2}}
    assert more["title"] == "With 2 more pods on node-3 and externalTrafficPolicy Local"
    got = shares(more)
    assert got[new_pod_name("node-3", 0)] == got["node-3-pod-0"] == round(1 / 9, 6)
    assert got["node-2-pod-0"] == round(1 / 6, 6) and got["node-1-pod-0"] == round(1 / 9, 6)
    assert [p["new"] for p in more["pods"]].count(True) == 2
    assert more["topology"]["pods_per_node"] == {"node-1": 3, "node-2": 2, "node-3": 3}
    assert ("node-3's 3 pods would take 11.1 % of successful requests each, against 33.3 % "
            "for its one pod without them") in more["sentences"][0]
    assert "--placement 3,2,3 --policy Local" in more["rerun"][0]["commands"][1]
    assert "--replicas=8" in more["rerun"][1]["commands"][1]


def test_the_naive_single_node_client_gets_all_nodes_and_a_loadbalancer():
    summary = summary_of(target(), {"node-1": 600}, entry="single", connection="keepalive",
                         connections=6)
    whatifs = by_id(build_whatifs(target(), summary))
    assert list(whatifs) == ["lb", "entry_all", "policy_local", "more_pods"]  # four at most
    lb, every = whatifs["lb"], whatifs["entry_all"]
    # This run: node-1 is a single point of failure.
    assert failure(lb["run_node_failure"])["node-1"] == (1.0, 0.0, True)
    # With an LB (Cluster): the health check takes a failed node out; meanwhile the other
    # two nodes send half their traffic to node-1's 3 of 6 pods, until its endpoints go.
    assert failure(lb["node_failure"]["entry"]) == {
        "node-1": (round(1 / 3, 6), 0.5, False), "node-2": (round(1 / 3, 6), round(1 / 3, 6),
                                                            False),
        "node-3": (round(1 / 3, 6), round(1 / 6, 6), False)}
    assert all(r["lost_after"] == 0 for r in lb["node_failure"]["entry"])
    assert lb["topology"]["lb"] and lb["topology"]["entry"] == "lb"
    assert set(shares(lb).values()) == {round(1 / 6, 6)}
    assert ("Predicted: with a LoadBalancer in front, no node is a single point of failure: "
            "if one fails, the LoadBalancer's health check takes it out and nothing is lost "
            "after that (in this run losing node-1 loses 100 % of requests for as long as "
            "clients keep entering it).") in lb["sentences"]
    assert "Predicted: with a LoadBalancer in front, the pod spread is unchanged (16.7 % each)." \
        in lb["sentences"]
    assert "nodeport-harness expose helloworld -n default --type LoadBalancer" in \
        lb["rerun"][1]["commands"]
    # Every node entered evenly: a third each is lost when its node fails, and node-3's one
    # pod takes 1/3 x 1/6 from each of the other two (1/9) until its endpoint goes.
    assert failure(every["node_failure"]["entry"]) == {
        "node-1": (round(1 / 3, 6), round(1 / 3, 6), False),
        "node-2": (round(1 / 3, 6), round(2 / 9, 6), False),
        "node-3": (round(1 / 3, 6), round(1 / 9, 6), False)}
    assert every["model"]["choices"] == 18  # 6 connections per entry point, now 3 of them
    # Local with a single entry: only node-1's pods serve, a third each.
    local = whatifs["policy_local"]
    assert shares(local)["node-1-pod-0"] == round(1 / 3, 6)
    assert shares(local)["node-3-pod-0"] == 0
    assert local["topology"]["entry_node"] == "node-1"
    assert ("Predicted: with externalTrafficPolicy Local, only node-1's 3 pods would serve "
            "(33.3 % each; the 3 on other nodes nothing).") in local["sentences"]
    assert "--entry single --node node-1" in local["rerun"][0]["commands"][2]
    assert whatifs["more_pods"]["change"] == {
        "entry": "all", "external_traffic_policy": "Local", "add_pods": {"node-3": 2}}


def test_local_back_to_cluster_stops_dropping():
    tgt = target(placement=(3, 3, 0), policy="Local")
    served = {e["pod"]: 100 for e in tgt["endpoints"]}
    whatifs = by_id(build_whatifs(tgt, summary_of(tgt, EVEN, entry="all", served=served)))
    assert list(whatifs) == ["lb", "policy_cluster"]  # no pod is overloaded: no more pods
    cluster = whatifs["policy_cluster"]
    assert cluster["dropped_share"] == 0 and set(shares(cluster).values()) == {round(1 / 6, 6)}
    # node-1 and node-2 keep half on their own pods, node-3 sends everything elsewhere.
    assert cluster["cross_node_share"] == pytest.approx(2 / 3)
    assert any(s.startswith("Predicted: nothing would be dropped (33.3 % is predicted for "
                            "this run") for s in cluster["sentences"])
    # An LB's health check skips node-3 (no pod under Local): nothing dropped either.
    assert whatifs["lb"]["dropped_share"] == 0
    assert set(shares(whatifs["lb"]).values()) == {round(1 / 6, 6)}


def test_pinned_keep_alive_gets_a_connection_per_request():
    tgt = target(placement=(2, 2, 2))
    summary = summary_of(tgt, {"node-1": 200, "node-2": 200, "node-3": 200}, entry="all",
                         connection="keepalive", connections=12)
    close = by_id(build_whatifs(tgt, summary))["connection_close"]
    assert close["change"] == {"connection": "close"}
    pod = next(p for p in close["pods"] if p["name"] == "node-1-pod-0")
    # p = 1/6 through each of 3 entries (weight 1/3), 200 choices each: sd^2 = 3 (1/9) p(1-p)/200.
    assert pod["band_high"] - pod["expected_share"] == pytest.approx(
        1.96 * (5 / 36 / 600) ** 0.5)
    assert any("within ±2.98 % of its expectation (95 %), against ±21.1 % with this run's "
               "connections" in s for s in close["sentences"])


def test_no_endpoints_or_no_traffic_no_whatifs():
    assert build_whatifs({}, summary_of(target(), EVEN, entry="all")) == []
    assert build_whatifs(target(), summary_of(target(), {}, entry="all", served={"x": 1})) == []


def test_a_rerun_is_checked_by_node_when_pods_have_new_names():
    more = by_id(build_whatifs(target(), summary_of(target(), EVEN, entry="all")))["more_pods"]
    # The re-run's lab has other pod names: 3/2/3 pods, Local, node-3's three ~1/9 each.
    counts = {"node-1": [100, 100, 100], "node-2": [150, 150], "node-3": [101, 99, 100]}
    pods = [{"name": f"web-{node[-1]}{j}", "node": node, "successes": n}
            for node, ns in counts.items() for j, n in enumerate(ns)]
    result = check_rerun(more, pods, 1.0)
    assert result["verdict"] == "matches" and result["matched"]
    assert {r["pod"]: r["predicted_as"] for r in result["rows"]}["web-31"] == new_pod_name(
        "node-3", 0)
    assert result["sentence"].startswith("Measured: the re-run matched the prediction")
    # Cluster-like spread on a Local topology: node-3's pods short, node-2's over.
    skewed = [{**p, "successes": 300 if p["node"] == "node-2" else 50} for p in pods]
    deviated = check_rerun(more, skewed, 1.0)
    assert deviated["verdict"] == "deviates" and not deviated["matched"]
    assert deviated["sentence"].startswith("Measured: the re-run deviated from the prediction")


def test_run_topology_reads_target_and_run():
    topo = run_topology(target(policy="Local"), {"entry": "lb", "connection": "keepalive"})
    assert topo == {"external_traffic_policy": "Local", "session_affinity": "None",
                    "lb": True, "entry": "lb", "entry_node": None, "connection": "keepalive",
                    "pods_per_node": {"node-1": 3, "node-2": 2, "node-3": 1}}
    # --entry single: the node it entered (run.json's --node, else the first).
    single = {"entry": "single", "connection": "close", "options": {"node": "node-2"}}
    assert run_topology(target(), single)["entry_node"] == "node-2"
    assert run_topology(target(), {**single, "options": {"node": ""}})["entry_node"] == "node-1"
    assert run_topology({}, {}) is None


# -- reports: synthetic run folders ----------------------------------------------------------

def write_run(parent: Path, run_id: str, *, placement=(3, 2, 1), policy="Cluster",
              pods: list[str] | None = None, rule: str | None = None, started=T0,
              seconds=10, per_second=90, seed=3) -> Path:
    """A run entering every node round-robin, a connection per request, each request's pod
    drawn as kube-proxy's ``rule`` (default: the Service's policy) would."""
    names = list(NODES[: len(placement)])
    pods = pods or [f"{node}-pod-{j}" for node, k in zip(names, placement, strict=True)
                    for j in range(k)]
    where = [node for node, k in zip(names, placement, strict=True) for _ in range(k)]
    tgt = Target(
        nodes=tuple(Node(n, {"InternalIP": f"10.0.0.{i + 11}"}, f"10.0.0.{i + 11}",
                         "InternalIP") for i, n in enumerate(names)),
        service=ServiceInfo("helloworld", "demo", "NodePort", ServicePort("http", 80, 8080, 30080),
                            external_traffic_policy=policy),
        endpoints=tuple(Endpoint(p, n, f"10.244.0.{i + 2}")
                        for i, (p, n) in enumerate(zip(pods, where, strict=True))),
        source="lab")
    pods_on: dict[str, list[str]] = {}
    for p, n in zip(pods, where, strict=True):
        pods_on.setdefault(n, []).append(p)
    rng = random.Random(seed)
    now = [started]
    recorder = SpreadRecorder(tgt.pod_nodes(), clock=lambda: now[0], nodes=names)
    for i in range(seconds * per_second):
        now[0] = started + i / per_second
        entry = names[i % len(names)]
        choices = sorted(entry_choices(entry, pods_on, rule or policy).items())
        pod = rng.choices([c[0] for c in choices], [c[1] for c in choices])[0]
        recorder.record(entry, pod, 3.0 + (0.5 if tgt.pod_nodes()[pod] != entry else 0), None,
                        0)
    recorder.close()
    run_dir = parent / run_id
    write_json_atomic(run_dir / "target.json", tgt.to_dict())
    write_json_atomic(run_dir / "spread.json", recorder.to_dict())
    info = run_info(run_id, seconds)
    info.update(connection="close", started=started, stopped=started + seconds)
    write_json_atomic(run_dir / "run.json", info)
    return run_dir


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = write_run(tmp_path_factory.mktemp("whatif"), "run-cluster")
    return run_dir, build_report(run_dir, plotlyjs="cdn")


def test_summary_json_html_and_markdown_show_the_whatifs_as_predictions(original):
    run_dir, result = original
    whatifs = json.loads((run_dir / "summary.json").read_text())["whatifs"]
    assert [w["id"] for w in whatifs] == ["lb", "policy_local", "more_pods"]
    assert whatifs == json.loads(json.dumps(result["summary"]["whatifs"]))
    page = (run_dir / "index.html").read_text()
    section = page[page.index('<section id="whatif">'):]
    section = section[:section.index("</section>")]
    assert "predictions, not measurements" in section
    assert section.count('<span class="prediction">prediction</span>') == 3
    for whatif in whatifs:
        assert f"{whatif['title']}<span class=\"prediction\">prediction</span>" in section
        for sentence in whatif["sentences"]:
            assert sentence.startswith("Predicted: ")
            assert sentence.replace("'", "&#39;") in section
    assert "node-3&#39;s only pod (node-3-pod-0) would take 33.3 %" in section
    assert "nodeport-harness lab --nodes 3 --placement 3,2,1 --policy Local" in section
    # Pasted anywhere, it names this run's folder (absolute, quoted for the shell).
    assert f"nodeport-harness compare {os.path.abspath(run_dir)} NEW_RUN" in section
    # It sits after the spread it predicts from, before the latency.
    assert (page.index('<section id="spread">') < page.index('<section id="whatif">')
            < page.index('<section id="latency">'))
    markdown = (run_dir / "summary.md").read_text()
    assert "### What if (predictions, not measurements)" in markdown
    assert "- **With externalTrafficPolicy Local** (prediction)" in markdown
    assert "  - Predicted: with externalTrafficPolicy Local, node-3's only pod" in markdown


def test_compare_sets_a_rerun_against_the_prediction(original, tmp_path):
    run_dir, _ = original
    local = write_run(tmp_path, "run-local", policy="Local", started=T0 + 3600)
    # A "re-run" that claims Local but spread like Cluster: the prediction catches it.
    wrong = write_run(tmp_path, "run-wrong", policy="Local", rule="Cluster", started=T0 + 7200,
                      seed=4)
    out = tmp_path / "cmp"
    result = build_compare([local, run_dir, wrong], out, plotlyjs="cdn")
    checks = {c["rerun"]: c for c in result["whatif_checks"]}
    assert set(checks) == {"run-local", "run-wrong"}  # each re-ran run-cluster's Local what-if
    good, bad = checks["run-local"], checks["run-wrong"]
    assert good["original"] == "run-cluster" and good["whatif"] == "policy_local"
    assert good["verdict"] == "matches" and bad["verdict"] == "deviates"
    node3 = next(r for r in good["rows"] if r["pod"] == "node-3-pod-0")
    assert node3["expected_share"] == pytest.approx(1 / 3)
    assert node3["measured_share"] == pytest.approx(1 / 3, abs=0.002)  # entry round-robin
    page = (out / "index.html").read_text()
    section = page[page.index('<section id="whatif">'):page.index('<section id="runs">')]
    assert "Predicted vs measured" in section
    assert "run-local re-ran run-cluster's what-if: With externalTrafficPolicy Local" in section
    assert "matches the prediction" in section and "deviates from the prediction" in section
    assert "Measured: the re-run matched the prediction (p" in section
    assert re.search(r"<td>33\.3 %</td><td>[\d.]+ % – [\d.]+ %</td><td>33\.\d* %</td>",
                     section)
    figures = json.loads(re.search(r'id="figures">(.*?)</script>', page, re.S).group(1))
    assert {"whatif-0", "whatif-1"} <= set(figures)
    data = json.loads((out / "compare.json").read_text())
    assert [c["verdict"] for c in data["whatif_checks"]] == ["matches", "deviates"]
    assert "whatifs" not in data["runs"][0] and "_pods" not in data["runs"][0]


def test_compare_command_names_the_rerun_and_its_verdict(original, tmp_path, capsys):
    run_dir, _ = original
    local = write_run(tmp_path, "run-local", policy="Local", started=T0 + 3600)
    assert main(["compare", str(run_dir), str(local), "-o", str(tmp_path / "cmp"),
                 "--plotlyjs", "cdn"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2  # the files, as before
    assert err.startswith("run-local re-ran run-cluster's what-if (With externalTrafficPolicy "
                          "Local): Measured: the re-run matched the prediction (p")


def test_compare_without_a_rerun_has_no_prediction_section(original, tmp_path):
    run_dir, _ = original
    again = write_run(tmp_path, "run-again", started=T0 + 60, seed=9)  # the same topology
    result = build_compare([run_dir, again], tmp_path / "cmp", plotlyjs="cdn")
    assert result["whatif_checks"] == []
    assert '<section id="whatif">' not in (tmp_path / "cmp" / "index.html").read_text()


# -- one real pair of runs on two labs -------------------------------------------------------

def harness_run(tmp_path: Path, lab, run_id: str) -> Path:
    cmd = [sys.executable, "-m", "harness.cli", "run", "--kubeconfig", str(lab.kubeconfig),
           "--report-dir", str(tmp_path), "--run-id", run_id, "-u", "4", "-t", "3s",
           "--entry", "all", "--connection", "close", "--plotlyjs", "cdn"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp_path / run_id


def test_a_lab_rerun_with_local_matches_the_cluster_runs_prediction(lab, make_lab, tmp_path):
    # The session's lab: Cluster, 3/2/1. Its run predicts Local; a Local lab measures it.
    cluster = harness_run(tmp_path, lab, "lab-cluster")
    summary = json.loads((cluster / "summary.json").read_text())
    local = by_id(summary["whatifs"])["policy_local"]
    assert "--placement 3,2,1 --policy Local" in local["rerun"][0]["commands"][1]
    rerun = harness_run(tmp_path, make_lab(nodes=3, placement=[3, 2, 1], policy="Local"),
                        "lab-local")
    out = tmp_path / "cmp"
    result = build_compare([cluster, rerun], out, plotlyjs="cdn")
    [check] = result["whatif_checks"]
    assert (check["original"], check["rerun"], check["whatif"]) == (
        "lab-cluster", "lab-local", "policy_local")
    assert check["verdict"] == "matches", check
    node3 = next(r for r in check["rows"] if r["node"] == "node-3")
    # Its entry's share of the Cluster run's requests (a third, give or take a request).
    assert node3["expected_share"] == pytest.approx(1 / 3, abs=0.01)
    assert node3["within_band"]
    page = (out / "index.html").read_text()
    assert "lab-local re-ran lab-cluster's what-if: With externalTrafficPolicy Local" in page
    assert "matches the prediction" in page
