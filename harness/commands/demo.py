"""`nodeport-harness demo`: why you need a LoadBalancer, told with numbers measured on the lab.

It starts a lab (3 nodes, pods placed 3/2/1, a NodePort Service with a LoadBalancer
address), runs each scenario as a real headless Locust run (the same `run` command users
have), then writes `reports/demo-<time>/index.html` (harness/report/demo_page.py): a
verdict whose every claim quotes a figure from these runs, one chart per question, and every
scenario's figures with a link to its full report. `claims()` is pure: it turns the
scenarios' summaries into those sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.findings import worst_incident
from harness.core.runinfo import PLOTLYJS_MODES
from harness.core.text import fair_index, ms, number, pct, rate, secs
from harness.errors import HarnessError
from harness.lab.config import CONTROL_PLANES, DATAPATHS

DEMO_SCHEMA = "nodeport-harness/demo/v1"
PLACEMENT = [3, 2, 1]
SECONDS, QUICK_SECONDS = 12, 5  # of load per scenario (-t), whole seconds as Locust takes them
USERS, QUICK_USERS = 8, 6


@dataclass
class Scenario:
    id: str
    title: str
    story: str
    args: list[str]
    fault_at: float | None = None  # fraction of the run time when node-1 goes down
    restart_at: float | None = None  # fraction of the run time when node-3's pod restarts
    local_policy: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    wall_s: float | None = None  # the scenario's whole time: Locust's start, run and report


def scenarios() -> list[Scenario]:
    return [
        Scenario("naive", "1. The naive client: one node's ExternalIP",
                 "Like the lab's curl: every request goes to the first worker's ExternalIP.",
                 ["--entry", "single"]),
        Scenario("all-keepalive", "2. All nodes, keep-alive connections",
                 "Requests rotate over every node's address; each client keeps its "
                 "connections open, as HTTP clients do.", ["--entry", "all"]),
        Scenario("all-close", "3. All nodes, a new connection per request",
                 "The same, but every request opens a new TCP connection.",
                 ["--entry", "all", "--connection", "close"]),
        Scenario("fail-single", "4a. Node failure, naive client",
                 "node-1 goes down part-way through; the client only knows node-1.",
                 ["--entry", "single"], fault_at=0.3),
        Scenario("fail-all", "4b. Node failure, client rotating over all nodes",
                 "node-1 goes down part-way through; the client keeps rotating over all "
                 "nodes, the dead one included.", ["--entry", "all"], fault_at=0.3),
        Scenario("fail-lb", "4c. Node failure behind the LoadBalancer",
                 "node-1 goes down part-way through; clients use the LoadBalancer address, "
                 "whose health check stops sending to the dead node.",
                 ["--entry", "lb", "--connection", "close"], fault_at=0.3),
        Scenario("restart-keepalive", "5a. Pod restart, keep-alive connections",
                 "node-3's pod is restarted part-way through: killed, and replaced (as its "
                 "ReplicaSet does) by a pod with a new name that joins the endpoints a second "
                 "later. The clients keep their connections open.",
                 ["--entry", "all"], restart_at=0.3),
        Scenario("restart-close", "5b. Pod restart, a new connection per request",
                 "The same restart (of the replacement), but every request opens a new TCP "
                 "connection.", ["--entry", "all", "--connection", "close"], restart_at=0.3),
        Scenario("local", "6. externalTrafficPolicy: Local",
                 "The Service keeps client source IPs and never hops between nodes; node-3's "
                 "only pod is gone, so node-3 has none. A new connection per request, so "
                 "each request shows where kube-proxy may send it.",
                 ["--entry", "all", "--connection", "close"], local_policy=True),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"short scenarios: {QUICK_SECONDS} s each, {QUICK_USERS} users "
                             "(the whole demo in about a minute on 2 idle cores)")
    parser.add_argument("--seconds", type=int, default=None,
                        help=f"whole seconds of load per scenario (default {SECONDS}, "
                             f"--quick {QUICK_SECONDS})")
    parser.add_argument("-u", "--users", type=int, default=None,
                        help=f"users per scenario (default {USERS}, --quick {QUICK_USERS})")
    parser.add_argument("--report-dir", default="reports",
                        help="where the demo folder goes (default %(default)s)")
    parser.add_argument("--only", default="",
                        help="comma-separated scenario ids to run (default: all)")
    parser.add_argument("--plotlyjs", default="directory", choices=PLOTLYJS_MODES,
                        help="plotly.js in the pages: directory (default: one shared "
                             "plotly.min.js in the demo folder, offline), inline, cdn")
    parser.add_argument("--datapath", default=DATAPATHS[0], choices=DATAPATHS,
                        help="the lab's datapath: userspace (default) or kernel (nodes and pods "
                             "in network namespaces, kube-proxy's iptables rules; needs root)")
    parser.add_argument("--control-plane", default=CONTROL_PLANES[0], choices=CONTROL_PLANES,
                        help="the lab's control plane: emulated (default) or real (etcd, "
                             "kube-apiserver, controllers, scheduler, kube-proxy from "
                             "'nodeport-harness lab build'; the kernel datapath; needs root)")


def run(args) -> int:
    from harness.lab.cluster import LabCluster

    seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    users = args.users or (QUICK_USERS if args.quick else USERS)
    plotlyjs = getattr(args, "plotlyjs", None) or "directory"
    if seconds < 2 or users < 1:
        raise HarnessError("--seconds must be at least 2 and --users at least 1")
    chosen = scenarios()
    if args.only:
        wanted = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = wanted - {s.id for s in chosen}
        if unknown:
            raise HarnessError(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(s.id for s in chosen)}")
        chosen = [s for s in chosen if s.id in wanted]
    demo_dir = Path(args.report_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    from harness.report.files import write_text_atomic

    write_text_atomic(demo_dir / ".started", time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    started = time.time()
    with LabCluster(nodes=3, placement=PLACEMENT, service_type="LoadBalancer",
                    lb_check_s=0.5, datapath=getattr(args, "datapath", None) or DATAPATHS[0],
                    control_plane=getattr(args, "control_plane", None) or CONTROL_PLANES[0]
                    ) as lab:
        lab_start_s = time.time() - started
        progress = _progress(len(chosen))
        for scenario in chosen:
            progress.step(scenario.title)
            began = time.time()
            _run_scenario(lab, scenario, demo_dir, seconds, users, quick=args.quick,
                          plotlyjs=plotlyjs)
            scenario.wall_s = time.time() - began
            progress.done(scenario)
        progress.close()
        ground_truth = {"pods": lab.pods, "nodes": lab.nodes, "stats": lab.stats(),
                        "faults": lab.fault_log(), "datapath": lab.info().get("datapath"),
                        "control_plane": lab.info().get("control_plane", "emulated"),
                        "kubernetes_version": lab.info().get("kubernetes_version")}
    facts = claims({s.id: s.summary for s in chosen if s.summary})
    data = {
        "schema": DEMO_SCHEMA,
        "seconds_per_scenario": seconds,
        "users": users,
        "duration_s": round(time.time() - started, 1),
        "lab_start_s": round(lab_start_s, 2),
        "placement": PLACEMENT,
        "scenarios": [{"id": s.id, "title": s.title, "story": s.story, "args": s.args,
                       "exit_code": s.exit_code, "summary": s.summary,
                       "wall_s": round(s.wall_s, 2) if s.wall_s is not None else None,
                       "ran_s": (s.summary.get("run") or {}).get("duration_s"),
                       "headline": _headline(s.summary),
                       "worst": [i for i in [worst_incident(s.summary or {})] if i]}
                      for s in chosen],
        "claims": facts,
        "ground_truth": ground_truth,
    }
    from harness.report.files import write_json_atomic

    write_json_atomic(demo_dir / "demo.json", data)
    page = write_page(demo_dir, data, plotlyjs)
    (demo_dir / ".started").unlink(missing_ok=True)
    print(f"\ndemo report: {page}  ({secs(data['duration_s'])})")
    for claim in facts:
        print(f"- {claim['text']}")
    return 0


def _run_scenario(lab, scenario: Scenario, demo_dir: Path, seconds: int, users: int,
                  quick: bool, plotlyjs: str = "directory") -> None:
    from harness.commands import run as run_cmd
    from harness.discovery import DiscoveryOptions, KubeApi

    real = lab.info().get("control_plane") == "real"
    if scenario.local_policy:
        # Node-3's only pod goes away, then the Service switches to Local.
        api = KubeApi.connect(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
        try:
            gone = [p for p in lab.current_pods() if p["node"] == "node-3"]
            for pod in gone:
                if real:  # as one would: the ReplicaSet removes the cheapest pods first
                    api.request("PATCH", f"/api/v1/namespaces/default/pods/{pod['name']}",
                                body={"metadata": {"annotations": {
                                    "controller.kubernetes.io/pod-deletion-cost": "-1000"}}},
                                content_type="application/merge-patch+json",
                                what="patch pods")
                else:
                    lab.kill_pod(pod["name"])
            if real:  # scaled down by node-3's pods: they go, and are not replaced
                api.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/helloworld"
                            "/scale", body={"spec": {"replicas": sum(PLACEMENT) - len(gone)}},
                            content_type="application/merge-patch+json",
                            what="scale deployments")
                _settle(lab, api, sum(PLACEMENT) - len(gone), empty="node-3")
            svc = api.request("PATCH", "/api/v1/namespaces/default/services/helloworld",
                              body={"spec": {"externalTrafficPolicy": "Local"}},
                              content_type="application/merge-patch+json",
                              what="patch services")
            if real:
                _wait_local_policy(lab, svc)
        finally:
            api.close()
    timeout = 1.0 if quick else 2.0
    argv = ["--kubeconfig", str(lab.kubeconfig), "--report-dir", str(demo_dir),
            "--run-id", scenario.id, "-u", str(users), "-t", f"{seconds}s",
            "--timeout", str(timeout), "--plotlyjs", plotlyjs, *scenario.args]
    if scenario.fault_at is not None:
        argv += ["--lab-fault", f"{seconds * scenario.fault_at:.1f}:node:node-1:down"]
    if scenario.restart_at is not None:
        pods = lab.current_pods()  # node-3's pod (a real lab's replacement may be elsewhere)
        victim = next((p["name"] for p in pods if p["node"] == "node-3"), pods[-1]["name"])
        argv += ["--lab-fault", f"{seconds * scenario.restart_at:.1f}:pod:{victim}:restart"]
    # Each scenario's report says how to rerun it alone (against the same lab).
    os.environ["NODEPORT_HARNESS_COMMAND"] = shlex.join(["nodeport-harness", "run", *argv])
    parser = argparse.ArgumentParser()
    run_cmd.add_arguments(parser)
    options = parser.parse_args(argv)
    options.progress = False
    scenario.exit_code = run_cmd.run(options, quiet=True)
    if scenario.fault_at is not None:
        lab.node_up("node-1")
    if real:
        api = KubeApi.connect(DiscoveryOptions(kubeconfig=str(lab.kubeconfig)))
        try:
            replicas = api.request("GET", "/apis/apps/v1/namespaces/default/deployments/"
                                   "helloworld", what="get deployments")["spec"]["replicas"]
            _settle(lab, api, replicas)
        finally:
            api.close()
    scenario.summary = _summary_of(demo_dir / scenario.id)


def _wait_local_policy(lab, svc: dict, timeout: float = 30.0) -> None:
    """On a real lab, until every node's kube-proxy applies the Local policy: its answer on
    the Service's healthCheckNodePort says whether the node has a ready local endpoint (200)
    or none (503), as a cloud load balancer sees it."""
    import http.client

    port = (svc.get("spec") or {}).get("healthCheckNodePort")
    with_pods = {p["node"] for p in lab.current_pods()}
    deadline = time.monotonic() + timeout
    while port and time.monotonic() < deadline:
        answers = {}
        for node in lab.nodes:
            conn = http.client.HTTPConnection(node["internal_ip"], int(port), timeout=1)
            try:
                conn.request("GET", "/healthz")
                answers[node["name"]] = conn.getresponse().status
            except (OSError, http.client.HTTPException):
                answers[node["name"]] = None
            finally:
                conn.close()
        # kube-proxy tells its health check server after iptables-restore succeeded
        # (pkg/proxy/iptables/proxier.go), so these answers mean the rules are in.
        if all(answers[n] == (200 if n in with_pods else 503) for n in answers):
            return
        time.sleep(0.25)
    raise HarnessError(f"the real lab's kube-proxies did not apply externalTrafficPolicy "
                       f"Local within {timeout:.0f} s; see {lab.info()['state_dir']}/logs")


def _settle(lab, api, replicas: int, empty: str | None = None, timeout: float = 60.0) -> None:
    """On a real lab, until the Deployment is whole again (its ``replicas`` ready, none
    terminating; none left on ``empty``) before the next scenario starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = api.request("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3D"
                           "helloworld", what="list pods").get("items") or []
        ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or ())]
        if (len(ready) == len(pods) == replicas
                and not any(p["spec"].get("nodeName") == empty for p in pods)):
            return
        time.sleep(0.25)
    raise HarnessError(f"the real lab's Deployment did not settle within {timeout:.0f} s "
                       f"between scenarios; see {lab.info()['state_dir']}/logs")


def _headline(summary: dict[str, Any] | None) -> str:
    """The run's own headline: the worst incident first, then the whole-run figures."""
    if not summary or "totals" not in summary:
        return ""
    from harness.report.build import headline

    return headline(summary)


def _summary_of(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    from harness.core.analysis import summarize

    spread = json.loads((run_dir / "spread.json").read_text())
    target = json.loads((run_dir / "target.json").read_text())
    return summarize(spread, target, json.loads((run_dir / "run.json").read_text()))


# -- the claims: pure, from measured summaries ------------------------------------------------


def claims(summaries: dict[str, dict]) -> list[dict[str, Any]]:
    """The verdict's sentences, each with the figure it rests on (and where it came from)."""
    out: list[dict[str, Any]] = []

    def add(id_: str, scenario: str, text: str, **figures: Any) -> None:
        out.append({"id": id_, "scenario": scenario, "text": text, "figures": figures})

    naive = summaries.get("naive")
    if naive:
        share = _node(naive, "node-1").get("share") or 0.0
        others = sum(1 for p in naive.get("pods", []) if p.get("node") != "node-1")
        add("naive-ingress", "naive",
            f"The naive client sent {pct(share)} of its requests through node-1, though "
            f"{number(others)} of {number(len(naive.get('pods', [])))} pods run on other nodes: "
            "node-1 is a "
            "single point of failure.", node1_share=share, pods_elsewhere=others)
    for sid, label in (("fail-single", "the naive client's requests"),
                       ("fail-all", "the requests of a client rotating over all nodes"),
                       ("fail-lb", "the LoadBalancer")):
        summary = summaries.get(sid)
        fault = _fault(summary)
        if not fault:
            continue
        # The steady state after the fault (analysis leaves out the time-out it takes hold).
        ratio = fault.get("steady_fail_ratio")
        figures = {"fault_t": fault.get("t"), "fail_ratio": ratio,
                   "rps_before": fault.get("rps_before"), "rps_after": fault.get("rps_steady")}
        slowdown = (f"; throughput went from {number(figures['rps_before'])} to "
                    f"{rate(figures['rps_after'])} as clients waited for time-outs"
                    if figures["rps_before"] and figures["rps_after"] is not None else "")
        if sid == "fail-lb":
            recovered = _recovery_s(summary, fault)
            figures["recovered_after_s"] = recovered
            totals = summary.get("totals") or {}
            total = totals.get("fail_ratio") or 0.0
            figures["run_fail_ratio"] = total
            add("lb-failover", sid,
                f"Through {label}, only {number(totals.get('failures', 0))} of "
                f"{number(totals.get('requests', 0))} requests ({pct(total)}) failed although "
                "node-1 went down"
                + (f": the last failure came {secs(recovered)} after the fault, once its "
                   "health check had removed the node and requests already sent there had "
                   "timed out; none after" if recovered else ": none at all")
                + ".", **figures)
        elif ratio is not None:
            add(f"{sid}-impact", sid,
                f"After node-1 went down, {pct(ratio)} of {label} failed"
                + slowdown + ".", **figures)
    keep, close = summaries.get("all-keepalive"), summaries.get("all-close")
    if keep:
        share = [n.get("share") or 0 for n in keep.get("nodes", []) if n.get("is_node", True)]
        add("spread-nodes", "all-keepalive",
            "Rotating over every node spread ingress to "
            + ", ".join(pct(s) for s in share) + " per node.", node_shares=share)
    if keep and close:
        k, c = keep.get("keepalive", {}), close.get("keepalive", {})
        kj, cj = keep.get("fairness", {}).get("jain"), close.get("fairness", {}).get("jain")
        close_served = sum(1 for p in close.get("pods", []) if p.get("successes"))
        add("connections-not-requests", "all-keepalive",
            "kube-proxy balances connections, not requests: with keep-alive the clients "
            f"opened {number(k.get('connections') or 0)} TCP connections, each carried "
            f"{number(k.get('mean_requests_per_connection') or 0)} requests on average and "
            f"stayed on {number(k.get('mean_distinct_pods') or 0)} pod(s) (Jain fairness over "
            f"pods {fair_index(kj)}); with a new connection per request "
            f"({number(c.get('connections') or 0)} connections) kube-proxy chose a pod for "
            f"every request and the same clients reached {number(close_served)} pods "
            f"(fairness {fair_index(cj)}).", keepalive_pods=k.get("mean_distinct_pods"),
            keepalive_connections=k.get("connections"),
            keepalive_requests_per_connection=k.get("mean_requests_per_connection"),
            close_connections=c.get("connections"), close_pods=close_served,
            jain_keepalive=kj, jain_close=cj)
    if close:
        cross = close.get("cross_node", {})
        cost = (cross.get("cost_ms") or {}).get("p50")
        add("cross-node", "all-close",
            f"{pct(cross.get('share'))} of requests were forwarded to a pod on another node "
            "(an extra hop, and the pod sees the node's address, not the client's)"
            + (f", adding {ms(cost)} at p50" if cost is not None else "") + ".",
            cross_share=cross.get("share"), cost_p50_ms=cost)
    restart = _restart_claim(summaries.get("restart-keepalive"),
                             summaries.get("restart-close"))
    if restart:
        add("pod-restart", "restart-keepalive", restart.pop("text"), **restart)
    local = summaries.get("local")
    if local:
        cross = local.get("cross_node", {})
        node3 = _node(local, "node-3")
        shares = [p.get("share") or 0 for p in local.get("pods", []) if p.get("in_endpoints")]
        add("local-policy", "local",
            f"With externalTrafficPolicy Local no request crossed nodes "
            f"({pct(cross.get('share') or 0)}), but node-3, with no pod, failed "
            f"{pct(1 - (node3.get('availability') or 0))} of the requests sent to it, and pod "
            f"shares ranged from {pct(min(shares) if shares else 0)} to "
            f"{pct(max(shares) if shares else 0)}.",
            cross_share=cross.get("share"), node3_availability=node3.get("availability"),
            pod_share_min=min(shares) if shares else None,
            pod_share_max=max(shares) if shares else None)
    return out


def verdict(facts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Group the claims into what NodePort gives, what it costs, what a LoadBalancer changes."""
    by = {c["id"]: c["text"] for c in facts}
    return {
        "NodePort alone gives": [t for k, t in by.items() if k in (
            "spread-nodes", "connections-not-requests")],
        "What it costs": [t for k, t in by.items() if k in (
            "naive-ingress", "fail-single-impact", "fail-all-impact", "cross-node",
            "pod-restart", "local-policy")],
        "What a LoadBalancer changes": [t for k, t in by.items() if k == "lb-failover"],
    }


def _restart_claim(keep: dict | None, close: dict | None) -> dict[str, Any] | None:
    """The pod-restart claim: what the replacement served after it joined, with keep-alive
    connections and with a new connection per request, against what the rules give it."""
    if not keep or not close:
        return None
    rows = {}
    for mode, summary in (("keepalive", keep), ("close", close)):
        fault = next((f for f in summary.get("faults", []) if f.get("action") == "restart"),
                     None)
        joined = next((a for a in summary.get("pod_arrivals") or ()
                       if fault and a.get("joined_s", 0) >= fault.get("t", 0)), None)
        if fault is None or joined is None:
            return None
        rows[mode] = (fault, joined)
    (k_fault, k), (_c_fault, c) = rows["keepalive"], rows["close"]
    # The reason is told when the run's own findings found it.
    starved = any(f.get("id") == f"pod_arrival:{k['pod']}" for f in keep.get("findings", []))
    text = (f"After {k_fault['name']} was restarted at {secs(k_fault.get('t'))}, its "
            f"replacement {k['pod']} joined at {secs(k['joined_s'])} and, with keep-alive "
            f"connections, served {pct(k['share'])} of requests after, against "
            f"{pct(k['expected_share'])} expected"
            + (": the clients' open connections never moved to it" if starved else "")
            + f"; with a new connection per request the next replacement served "
            f"{pct(c['share'])} (against {pct(c['expected_share'])} expected).")
    return {"text": text, "restarted_pod": k_fault["name"], "restart_t": k_fault.get("t"),
            "keepalive_starved": starved,
            "keepalive_pod": k["pod"], "keepalive_joined_s": k["joined_s"],
            "keepalive_share": k["share"], "keepalive_expected_share": k["expected_share"],
            "keepalive_successes_after": k["successes"], "close_pod": c["pod"],
            "close_share": c["share"], "close_expected_share": c["expected_share"],
            "close_successes_after": c["successes"]}


def _node(summary: dict, name: str) -> dict:
    return next((n for n in summary.get("nodes", []) if n.get("name") == name), {})


def _fault(summary: dict | None) -> dict | None:
    if not summary:
        return None
    return next((f for f in summary.get("faults", []) if f.get("action") == "down"), None)


def _recovery_s(summary: dict, fault: dict) -> float | None:
    """Seconds from the fault to the last second with a failure (None: no failures)."""
    rows = summary.get("timeline", {}).get("overall", [])
    failing = [r["t"] for r in rows if r.get("failures") and r["t"] + 1 > fault["t"]]
    if not failing:
        return 0.0
    return max(0.0, max(failing) + 1 - fault["t"])


# -- output -----------------------------------------------------------------------------------


class _progress:
    """A rich progress bar on a terminal; plain lines otherwise (CI logs)."""

    def __init__(self, total: int):
        self.bar = None
        self.count = 0
        self.total = total
        if sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=False)
            self.bar.start()
            self.task = self.bar.add_task("demo", total=total)

    def step(self, title: str) -> None:
        self.count += 1
        if self.bar:
            self.bar.update(self.task, description=title)
        else:
            print(f"[{self.count}/{self.total}] {title} ...", file=sys.stderr, flush=True)

    def done(self, scenario: Scenario) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


VERDICT_SEVERITY = {"NodePort alone gives": "info", "What it costs": "warning",
                    "What a LoadBalancer changes": "ok"}


def verdict_groups(data: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """``verdict()``'s groups for the page: (heading, severity, claims), each claim with the
    title of the scenario it rests on."""
    titles = {s["id"]: s["title"] for s in data["scenarios"]}
    by_text = {c["text"]: c for c in data["claims"]}
    return [(heading, VERDICT_SEVERITY.get(heading, "info"),
             [{**by_text[text], "scenario_title": titles.get(by_text[text]["scenario"], "")}
              for text in texts])
            for heading, texts in verdict(data["claims"]).items()]


def write_page(demo_dir: Path, data: dict[str, Any], plotlyjs: str = "directory") -> Path:
    """The demo's index.html (verdict, charts, scenarios) from its data, as in demo.json."""
    from harness.report.demo_page import write_demo_page

    return write_demo_page(demo_dir, data, verdict_groups(data), plotlyjs)
