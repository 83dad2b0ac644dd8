"""What-ifs: what the spread model predicts for the run's own load under another topology.

``build_whatifs(target, summary, run)`` picks the three or four changes that matter for a
run and predicts, for each, from `harness.core.spread_model` on a modified target.json and
the run's measured entry requests, connections and per-pod throughput and latency:

- a LoadBalancer in front (``{"lb": true}``), when the run did not go through one;
- every node entered evenly (``{"entry": "all"}``), when one node took most of the ingress;
- the other externalTrafficPolicy (``{"external_traffic_policy": "Local"}`` or back);
- more pods where the model gives a pod well over an even share (``{"add_pods":
  {"node-3": 2}}``, under Local when that is where the overload is);
- a new connection per request (``{"connection": "close"}``), when keep-alive pinned a
  coarse spread.

Each what-if: ``id``, ``title``, ``prediction`` (always true: nothing here was measured),
``change`` (what differs from the run), ``topology`` (the run's with the change: what a
re-run must have for ``compare`` to check it), ``pods`` (name, node, new, expected_share,
band_low, band_high, measured_share in this run, predicted_rps at this run's rate,
load_factor against what the pod served here), ``busiest``, ``dropped_share``,
``cross_node_share``, ``node_failure`` (per node under the what-if's entry and with a
LoadBalancer in front: ``entering``, ``routed``, ``lost_after``, ``spof``), ``model``,
``assumptions``, ``sentences`` (each starting "Predicted:") and ``rerun`` (the commands that
run it for real: on the lab and on a cluster).

``run_topology`` reads a run's own topology from its target.json and run.json, and
``check_rerun`` tests a re-run's measured successes against a what-if's prediction with
`spread_model.compare`. Pure: every figure in a sentence goes through `harness.core.text`.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.spread_model import BAND_Z, compare, predict
from harness.core.text import ms, number, p_value, pct, rate, times

Row = dict[str, Any]

MAX_WHATIFS = 4
OVERLOADED = 1.5  # a pod the model gives this many times an even share (or more)
SPOF = 0.999  # a node whose failure loses (almost) every request
PINNED_SINGLE_POD = 0.95  # keep-alive connections that stayed on one pod
COARSE_CONNECTIONS = 10  # fewer connections per pod than this: a lumpy spread
SAME_SHARE = 0.005  # pod shares this close read as "unchanged"
LAB_KUBECONFIG = ".lab/kubeconfig"
PREDICTED = "Predicted: "


# -- a run's topology ------------------------------------------------------------------------

def run_topology(target: Mapping[str, Any], run: Mapping[str, Any]) -> Row | None:
    """What a run ran against and how: externalTrafficPolicy, sessionAffinity, LoadBalancer
    (entered through one), entry strategy (with ``--entry single``, the node: run.json's
    ``--node``, else the first targeted one), connection mode and ready pods per targeted
    node (from target.json and run.json's ``entry``/``connection``). None without a
    target."""
    if not target or not target.get("service"):
        return None
    service = target["service"]
    entry = run.get("entry") or run.get("entry_strategy") or "all"
    nodes = _nodes(target)
    single = ((run.get("options") or {}).get("node") or (nodes[0] if nodes else None)
              if entry == "single" else None)
    return _topology(
        service.get("external_traffic_policy") or "Cluster",
        service.get("session_affinity") or "None",
        entry, run.get("connection") or run.get("connection_mode") or "keepalive",
        {node: len(pods) for node, pods in _pods_on(target).items()}, single)


def _topology(policy: str, affinity: str, entry: str, connection: str,
              pods_per_node: Mapping[str, int], entry_node: str | None = None) -> Row:
    return {"external_traffic_policy": policy, "session_affinity": affinity,
            "lb": entry == "lb", "entry": entry,
            "entry_node": entry_node if entry == "single" else None,
            "connection": connection, "pods_per_node": dict(pods_per_node)}


def _nodes(target: Mapping[str, Any]) -> list[str]:
    return [n["name"] for n in target.get("nodes", ()) if n.get("targeted", True)]


def _pods_on(target: Mapping[str, Any]) -> dict[str, list[str]]:
    """Targeted node -> its ready endpoint pods (every targeted node listed, even empty)."""
    pods_on: dict[str, list[str]] = {name: [] for name in _nodes(target)}
    for endpoint in target.get("endpoints", ()):
        node = endpoint.get("node")
        if endpoint.get("ready", True) and endpoint.get("pod") and node in pods_on:
            pods_on[node].append(endpoint["pod"])
    return pods_on


# -- the run the what-ifs start from ---------------------------------------------------------

class _Run:
    """The run's facts the what-ifs need, read once from target.json and the summary."""

    def __init__(self, target: Mapping[str, Any], summary: Mapping[str, Any],
                 run: Mapping[str, Any]) -> None:
        service = target.get("service") or {}
        self.target = target
        self.service = service
        self.nodes = _nodes(target)
        self.pods_on = _pods_on(target)
        self.pod_node = {pod: node for node, pods in self.pods_on.items() for pod in pods}
        self.entries = {n["name"]: n["requests"] for n in summary["nodes"] if n["requests"]}
        self.requests = sum(self.entries.values())
        self.entry = (summary["run"].get("entry_strategy") or run.get("entry_strategy")
                      or self._entry_from_data())
        self.connection = summary["run"].get("connection_mode") or "keepalive"
        self.connections = summary["keepalive"]["connections"] or None
        self.keepalive = summary["keepalive"]
        self.duration = summary["run"].get("duration_s")
        self.users = run.get("users")
        successes = summary["totals"]["successes"]
        self.success_rate = successes / self.duration if self.duration else None
        self.pods = {p["name"]: p for p in summary["pods"]}
        self.cross_node = summary["cross_node"]
        entered = [n for n in self.nodes if self.entries.get(n)]
        self.topology = _topology(service.get("external_traffic_policy") or "Cluster",
                                  service.get("session_affinity") or "None", self.entry,
                                  self.connection,
                                  {n: len(p) for n, p in self.pods_on.items()},
                                  entered[0] if len(entered) == 1 else None)
        self.on_lab = target.get("source") == "lab" or target.get("context") == "lab"
        # What the model predicts for the run as it was: the what-ifs are told against it.
        self.own = predict(target, self.entries, self.connections, target.get("proxy_mode"))

    def _entry_from_data(self) -> str:
        if any(name not in self.nodes for name in self.entries):
            return "lb"
        return "single" if len(self.entries) == 1 else "all"

    @property
    def policy(self) -> str:
        return self.topology["external_traffic_policy"]

    def concentrated(self) -> bool:
        """One node took most of the ingress, or a targeted node none (the ingress finding's
        test), for a run that entered through nodes."""
        if self.entry == "lb" or not self.requests or len(self.nodes) < 2:
            return False
        shares = [self.entries.get(n, 0) / self.requests for n in self.nodes]
        return max(shares) > max(OVERLOADED / len(self.nodes), 0.5) or min(shares) == 0

    def pinned(self) -> bool:
        """Keep-alive kept each connection on one pod, and there were few of them."""
        k = self.keepalive
        pods = max(1, sum(len(p) for p in self.pods_on.values()))
        return (self.connection != "close" and bool(k["connections_with_pod"])
                and (k["single_pod_share"] or 0) >= PINNED_SINGLE_POD
                and (k["mean_requests_per_connection"] or 0) >= 2
                and k["connections_with_pod"] < COARSE_CONNECTIONS * pods)


# -- the what-ifs ----------------------------------------------------------------------------

def build_whatifs(target: Mapping[str, Any] | None, summary: Mapping[str, Any],
                  run: Mapping[str, Any] | None = None) -> list[Row]:
    """The what-ifs that matter for this run (at most four), most telling first; empty
    without a target's endpoints or without traffic."""
    target = target or {}
    if not any(e.get("pod") for e in target.get("endpoints", ())) or not target.get("service"):
        return []
    base = _Run(target, summary, run or {})
    if not base.requests or not base.nodes:
        return []
    several = len(base.nodes) >= 2
    candidates: list[Row | None] = []
    if several and base.entry != "lb":
        candidates.append(_scenario(base, "lb", {"lb": True}))
    if several and base.concentrated():
        candidates.append(_scenario(base, "entry_all", {"entry": "all"}))
    if several:
        other = "Local" if base.policy != "Local" else "Cluster"
        candidates.append(_scenario(base, f"policy_{other.lower()}",
                                    {"external_traffic_policy": other}))
    candidates.append(_more_pods(base))
    if base.pinned() and base.topology["session_affinity"] != "ClientIP":
        # (Under ClientIP affinity a client address makes one choice per node however many
        # connections it opens: closing them would change nothing.)
        candidates.append(_scenario(base, "connection_close", {"connection": "close"}))
    return [w for w in candidates if w is not None][:MAX_WHATIFS]


def _more_pods(base: _Run) -> Row | None:
    """More pods on the nodes whose pods the model gives well over an even share: as many
    as the busiest node runs. Under the run's policy, else under Local (Cluster never
    overloads one pod); entering every node when one took most of the ingress."""
    if base.topology["session_affinity"] == "ClientIP":
        return None  # one choice per node: more pods would not spread it
    start: Row = {"entry": "all"} if base.concentrated() else {}
    for policy in dict.fromkeys((base.policy, "Local")):
        change = dict(start)
        if policy != base.policy:
            change["external_traffic_policy"] = policy
        topology, target, entries, connections = _apply(base, change)
        prediction = predict(target, entries, connections, target.get("proxy_mode"))
        pods = prediction["pods"]
        even = 1.0 / len(pods) if pods else 0.0
        counts = topology["pods_per_node"]
        most = max(counts.values(), default=0)
        busy = {base.pod_node.get(p) for p, row in pods.items()
                if row["expected_share"] >= OVERLOADED * even > 0}
        add = {node: most - counts[node] for node in base.nodes
               if node in busy and counts.get(node, 0) < most}
        if add:
            return _scenario(base, "more_pods", {**change, "add_pods": add})
    return None


def _apply(base: _Run, change: Mapping[str, Any]) -> tuple[Row, Row, dict[str, float], Any]:
    """The run's topology, target.json, entry requests and connections with ``change``."""
    topo = json.loads(json.dumps(base.topology))
    target = json.loads(json.dumps(base.target))
    if "external_traffic_policy" in change:
        topo["external_traffic_policy"] = change["external_traffic_policy"]
        target["service"]["external_traffic_policy"] = change["external_traffic_policy"]
    if change.get("lb"):
        topo["lb"], topo["entry"] = True, "lb"
    if "entry" in change:
        topo["entry"] = change["entry"]
        topo["lb"] = change["entry"] == "lb"
    if topo["entry"] != "single":
        topo["entry_node"] = None
    if "connection" in change:
        topo["connection"] = change["connection"]
    for node, count in (change.get("add_pods") or {}).items():
        topo["pods_per_node"][node] = topo["pods_per_node"].get(node, 0) + count
        for i in range(count):
            target["endpoints"].append({"pod": new_pod_name(node, i), "node": node,
                                        "ready": True})
    if topo["lb"]:
        entries: dict[str, float] = {"lb": float(base.requests)}
    elif topo["entry"] != base.entry and topo["entry"] == "all":
        entries = {node: base.requests / len(base.nodes) for node in base.nodes}
    else:
        entries = {name: float(count) for name, count in base.entries.items()}
    # Keep-alive: each user keeps one connection per entry point it uses, so the run's
    # connections per entry point carry over; a connection per request: one per request.
    if topo["connection"] == "close":
        connections = base.requests
    elif base.connections:
        used = [e for e, count in entries.items() if count]
        connections = max(1, round(base.connections / max(1, len(base.entries)) * len(used)))
    else:
        connections = None
    return topo, target, entries, connections


def new_pod_name(node: str, index: int) -> str:
    """The name a predicted pod goes by (it does not exist yet)."""
    return f"new pod {index + 1} on {node}"


def _scenario(base: _Run, id_: str, change: Mapping[str, Any]) -> Row:
    topology, target, entries, connections = _apply(base, change)
    prediction = predict(target, entries, connections, target.get("proxy_mode"))
    own = base.own
    pods_on = _pods_on(target)
    node_of = {pod: node for node, names in pods_on.items() for pod in names}
    policy = topology["external_traffic_policy"]
    weights = _weights(entries)
    pods = []
    for pod, row in prediction["pods"].items():
        measured = base.pods.get(pod)
        measured_rps = (measured["successes"] / base.duration
                        if measured and base.duration else None)
        predicted_rps = (row["expected_share"] * base.success_rate
                         if base.success_rate is not None else None)
        pods.append({
            "name": pod, "node": node_of.get(pod),
            "new": pod not in base.pod_node, **row,
            "measured_share": measured["share"] if measured else None,
            "model_share": own["pods"].get(pod, {}).get("expected_share"),
            "predicted_rps": predicted_rps,
            "load_factor": (predicted_rps / measured_rps
                            if predicted_rps is not None and measured_rps else None),
            "measured_p95_ms": (measured or {}).get("latency", {}).get("p95"),
        })
    even = 1.0 / len(pods) if pods else None
    busiest = max(pods, key=lambda p: p["expected_share"], default=None)
    whatif = {
        "id": id_,
        "title": _title(base, change),
        "prediction": True,
        "change": dict(change),
        "topology": topology,
        "pods": pods,
        "busiest": None if busiest is None else {
            "name": busiest["name"], "node": busiest["node"],
            "expected_share": busiest["expected_share"],
            "vs_even": busiest["expected_share"] / even if even else None},
        "dropped_share": prediction["dropped_share"],
        "cross_node_share": _cross_node(base.nodes, pods_on, policy, weights, topology["lb"]),
        "node_failure": {
            "entry": _node_failure(base.nodes, pods_on, policy, weights, topology["lb"]),
            "with_lb": _node_failure(base.nodes, pods_on, policy, {"lb": 1.0}, True),
        },
        "run_node_failure": _node_failure(base.nodes, base.pods_on, base.policy,
                                          _weights(base.entries), base.entry == "lb"),
        "model": {k: prediction[k] for k in ("proxy_mode", "policy", "affinity", "choices",
                                             "requests_per_choice")},
        "assumptions": [
            "the same clients, requests and total rate as this run",
            "keep-alive: one connection per user and entry point, as in this run"
            if topology["connection"] != "close" else "a new connection per request",
            *prediction["assumptions"],
        ],
    }
    whatif["sentences"] = _sentences(base, whatif)
    whatif["rerun"] = _rerun(base, topology, change)
    return whatif


def _weights(entries: Mapping[str, float]) -> dict[str, float]:
    total = sum(entries.values())
    return {e: c / total for e, c in entries.items() if c} if total else {}


def _title(base: _Run, change: Mapping[str, Any]) -> str:
    parts = [f"{number(count)} more pod{'s' if count != 1 else ''} on {node}"
             for node, count in (change.get("add_pods") or {}).items()]
    if "external_traffic_policy" in change:
        parts.append(f"externalTrafficPolicy {change['external_traffic_policy']}")
    if change.get("lb"):
        parts.append("a LoadBalancer in front")
    if change.get("entry") == "all":
        parts.append("every node entered evenly")
    if change.get("connection") == "close":
        parts.append("a new connection per request")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return "With " + listed


# -- node failures and cross-node traffic ----------------------------------------------------

def _node_failure(nodes: Sequence[str], pods_on: Mapping[str, Sequence[str]], policy: str,
                  weights: Mapping[str, float], lb: bool) -> list[Row]:
    """Per node, the share of all requests lost when it fails: ``entering`` (requests that
    enter through it: lost for as long as clients keep sending there; behind a
    LoadBalancer, until its health check takes the node out), ``routed`` (requests other
    nodes' kube-proxy sends to its pods: lost until its endpoints are removed),
    ``lost_after`` (still lost once the health check and the endpoints caught up: the
    entering share for clients that enter nodes directly, none behind a LoadBalancer) and
    ``spof`` (its failure loses every request after that).

    In closed form, so a cluster of thousands of nodes costs no more than a pass over them:
    under Cluster every node sends a pod on node x a share k_x / K of what it forwards,
    under Local only x's own traffic reaches x's pods."""
    total = sum(len(p) for p in pods_on.values())
    passing = [n for n in nodes if policy != "Local" or pods_on.get(n)]
    rows = []
    for node in nodes:
        share_of_pods = len(pods_on.get(node, ())) / total if total else 0.0
        if lb:
            entering = 1.0 / len(passing) if node in passing else 0.0
            # Once the health check took it out, the LB sends everything to the others.
            others = any(n != node for n in passing)
            routed = share_of_pods if policy != "Local" and others else 0.0
            lost_after = 0.0
        else:
            entering = weights.get(node, 0.0)
            routed = (sum(w for e, w in weights.items() if e != node) * share_of_pods
                      if policy != "Local" else 0.0)
            lost_after = entering
        rows.append({"node": node, "pods": len(pods_on.get(node, ())), "entering": entering,
                     "routed": routed, "lost_after": lost_after, "spof": lost_after >= SPOF})
    return rows


def _cross_node(nodes: Sequence[str], pods_on: Mapping[str, Sequence[str]], policy: str,
                weights: Mapping[str, float], lb: bool) -> float | None:
    """The share of served requests kube-proxy would send to a pod on another node: none
    under Local, 1 - k_e / K for what enters node e under Cluster."""
    total = sum(len(p) for p in pods_on.values())
    if lb:
        passing = [n for n in nodes if policy != "Local" or pods_on.get(n)]
        weights = {n: 1.0 / len(passing) for n in passing} if passing else {}
    served = {e: w for e, w in weights.items()
              if (pods_on.get(e) if policy == "Local" else total)}
    if not served:
        return None
    if policy == "Local":
        return 0.0
    return sum(w * (1.0 - len(pods_on.get(e, ())) / total)
               for e, w in served.items()) / sum(served.values())


# -- sentences -------------------------------------------------------------------------------

def _sentences(base: _Run, w: Mapping[str, Any]) -> list[str]:
    change = w["change"]
    own = base.own
    out: list[str] = []
    lead = "w" + w["title"][1:]
    if change.get("lb") or change.get("entry") == "all":
        out.append(_failure_sentence(w, lead))
    if change.get("add_pods"):
        spread, unchanged = _added_sentence(base, w, lead), False
    else:
        spread, unchanged = _spread_sentence(w, own, lead)
    out.append(spread)
    if w["dropped_share"]:
        empty = [row["node"] for row in w["node_failure"]["entry"]
                 if not row["pods"] and row["entering"]]
        out.append(f"{pct(w['dropped_share'])} of requests would be dropped: "
                   f"{', '.join(empty) or 'nodes without a pod'} run"
                   f"{'s' if len(empty) == 1 else ''} no pod and Local drops what enters "
                   "there (a LoadBalancer's health check would skip them).")
    elif own["dropped_share"]:
        out.append(f"nothing would be dropped ({pct(own['dropped_share'])} is predicted for "
                   "this run: traffic entering nodes without a pod under Local).")
    if "external_traffic_policy" in change:
        out.append(_hop_sentence(base, w))
    if change.get("connection") == "close":
        out.append(_band_sentence(base, w))
    load = None if unchanged else _load_sentence(base, w)
    if load:
        out.append(load)
    return [PREDICTED + s for s in out]


def _failure_sentence(w: Mapping[str, Any], lead: str) -> str:
    before = max(w["run_node_failure"], key=lambda r: r["lost_after"])
    was = (f"in this run losing {before['node']} loses {pct(before['lost_after'])} of requests "
           "for as long as clients keep entering it")
    if w["topology"]["lb"]:
        return (f"{lead}, no node is a single point of failure: if one fails, the "
                f"LoadBalancer's health check takes it out and nothing is lost after that "
                f"({was}).")
    after = max(w["node_failure"]["entry"], key=lambda r: r["lost_after"])
    return (f"{lead}, losing one node loses at most {pct(after['lost_after'])} of requests "
            f"({after['node']}) for as long as clients keep entering it, where {was}; only a "
            "LoadBalancer's health check takes a failed node out.")


def _spread_sentence(w: Mapping[str, Any], own: Mapping[str, Any],
                     lead: str) -> tuple[str, bool]:
    """The predicted pod spread in words, and whether it is the run's own prediction."""
    pods = w["pods"]
    busiest = w["busiest"]
    if busiest is None or not busiest["expected_share"]:
        return f"{lead}, no pod would serve anything.", False
    before = {p: row["expected_share"] for p, row in own["pods"].items()}
    unchanged = (set(before) == {p["name"] for p in pods} and all(
        abs(before[p["name"]] - p["expected_share"]) < SAME_SHARE for p in pods))
    shares = sorted({round(p["expected_share"], 6) for p in pods if p["expected_share"]})
    if unchanged:
        each = (f"{pct(shares[0])} each" if len(shares) == 1
                else f"{pct(shares[0])} to {pct(shares[-1])} per pod")
        return f"{lead}, the pod spread is unchanged ({each}).", True
    pod = next(p for p in pods if p["name"] == busiest["name"])
    if len(shares) == 1:
        served = [p for p in pods if p["expected_share"]]
        text = f"{lead}, every pod would take {pct(shares[0])} of successful requests"
        where = list(dict.fromkeys(p["node"] for p in served))
        if len(served) < len(pods) and len(where) == 1 and where[0] is not None:
            text = (f"{lead}, only {where[0]}'s {number(len(served))} pods would serve "
                    f"({pct(shares[0])} each; the {number(len(pods) - len(served))} on other "
                    "nodes nothing)")
        elif len(served) < len(pods):
            text = (f"{lead}, {number(len(served))} of {number(len(pods))} pods would take "
                    f"{pct(shares[0])} each and the rest nothing")
        return text + ".", False
    text = (f"{lead}, {_pod_words(pod, pods)} would take {pct(busiest['expected_share'])} of "
            f"successful requests, {times(busiest['vs_even'])} an even share")
    text += _was(pod, pods)
    least = min((p for p in pods if p["expected_share"]), key=lambda p: p["expected_share"])
    text += f"; {_pod_words(least, pods)} {pct(least['expected_share'])}"
    nothing = [p for p in pods if not p["expected_share"]]
    if nothing:
        text += f"; {number(len(nothing))} pods nothing"
    return text + ".", False


def _added_sentence(base: _Run, w: Mapping[str, Any], lead: str) -> str:
    """More pods: what each node given pods would carry per pod, against the same change
    without them; then the busiest pods."""
    without = {k: v for k, v in w["change"].items() if k != "add_pods"}
    topology, target, entries, connections = _apply(base, without)
    before = predict(target, entries, connections, target.get("proxy_mode"))["pods"]
    parts = []
    for node in w["change"]["add_pods"]:
        mine = [p for p in w["pods"] if p["node"] == node]
        old = [before[p]["expected_share"] for p in base.pods_on.get(node, ()) if p in before]
        text = (f"{node}'s {number(len(mine))} pods would take "
                f"{pct(max(p['expected_share'] for p in mine))} of successful requests each")
        if old:
            one = len(old) == 1
            text += (f", against {pct(max(old))} for {'its one pod' if one else 'each of its '}"
                     f"{'' if one else number(len(old)) + ' pods'} without them")
        parts.append(text)
    pods = w["pods"]
    busiest = next(p for p in pods if p["name"] == w["busiest"]["name"])
    text = f"{lead}, " + "; ".join(parts)
    text += (f"; the busiest would be {_pod_words(busiest, pods)} at "
             f"{pct(busiest['expected_share'])} ({times(w['busiest']['vs_even'])} an even "
             "share)")
    return text + "."


def _pod_words(pod: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> str:
    """"node-3's only pod (web-3)", "each of node-1's 3 pods", "pod web-1"."""
    node = pod["node"]
    on_node = [p for p in pods if p["node"] == node]
    if node is None:
        return f"pod {pod['name']}"
    if len(on_node) == 1:
        return f"{node}'s only pod ({pod['name']})"
    if len({round(p["expected_share"], 9) for p in on_node}) == 1:
        return f"each of {node}'s {number(len(on_node))} pods"
    return f"pod {pod['name']} on {node}"


def _was(pod: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> str:
    """What the pod (or the pods on its node it stands for) served in this run."""
    if pod["new"]:
        old = [p for p in pods if p["node"] == pod["node"] and not p["new"]
               and p["measured_share"] is not None]
        if old:
            return (f" (counting new pods; {_listed(old)} on {pod['node']} served "
                    f"{_listed_shares(old)} in this run)")
        return " (counting new pods)"
    alike = [p for p in pods if p["node"] == pod["node"] and not p["new"]
             and round(p["expected_share"], 9) == round(pod["expected_share"], 9)
             and p["measured_share"] is not None]
    if len(alike) > 1 and pod["node"] is not None:
        return f" (they served {_listed_shares(alike)} in this run)"
    if pod["measured_share"] is None:
        return ""
    return f" (it served {pct(pod['measured_share'])} in this run)"


def _listed(pods: Sequence[Mapping[str, Any]]) -> str:
    return (pods[0]["name"] if len(pods) == 1 else f"its {number(len(pods))} pods")


def _listed_shares(pods: Sequence[Mapping[str, Any]], most: int = 4) -> str:
    shares = [pct(p["measured_share"]) for p in pods[:most]]
    if len(pods) > most:
        shares.append("...")
    return shares[0] if len(shares) == 1 else ", ".join(shares[:-1]) + " and " + shares[-1]


def _hop_sentence(base: _Run, w: Mapping[str, Any]) -> str:
    share = w["cross_node_share"]
    measured = base.cross_node.get("share")
    cost = (base.cross_node.get("cost_ms") or {}).get("p50")
    here = f"{pct(measured)} in this run" if measured is not None else "not measured here"
    if cost is not None and measured and base.cross_node.get("enough_samples"):
        here += f", at {ms(cost)} extra at p50"
    if w["topology"]["external_traffic_policy"] == "Local":
        return (f"no request would cross nodes ({here}) and pods would see the client's own "
                "address (no source NAT).")
    return (f"{pct(share)} of requests would cross to a pod on another node ({here}) and "
            "pods would see a node's address instead of the client's (source NAT).")


def _band_sentence(base: _Run, w: Mapping[str, Any]) -> str:
    own = base.own
    # The upper side: the lower one stops at 0 when a pod could get nothing.
    before = max(r["band_high"] - r["expected_share"] for r in own["pods"].values())
    after = max(p["band_high"] - p["expected_share"] for p in w["pods"])
    return (f"the expected shares stay as they are, but kube-proxy would choose a pod for "
            f"each of the {number(base.requests)} requests instead of once per connection "
            f"({number(round(own['choices']))} choices): each pod's share would land within "
            f"±{pct(after)} of its expectation (95 %), against ±{pct(before)} with this run's "
            "connections.")


def _load_sentence(base: _Run, w: Mapping[str, Any]) -> str | None:
    """The busiest pod's predicted rate at this run's total, against what it served here."""
    busiest = w["busiest"]
    pod = next((p for p in w["pods"] if busiest and p["name"] == busiest["name"]), None)
    if pod is None or pod["predicted_rps"] is None or base.success_rate is None:
        return None
    text = (f"at this run's rate ({rate(base.success_rate)} successful) the busiest pod "
            f"would serve about {rate(pod['predicted_rps'])}")
    if pod["load_factor"] is not None and not math.isclose(pod["load_factor"], 1.0,
                                                           rel_tol=0.05):
        text += f", {times(pod['load_factor'])} what it served in this run"
        if pod["measured_p95_ms"] is not None:
            text += (f" (at p95 {ms(pod['measured_p95_ms'])}; more load may queue: run "
                     "nodeport-harness capacity for its limit)")
    return text + "."


# -- re-running it for real ------------------------------------------------------------------

def _rerun(base: _Run, topology: Mapping[str, Any], change: Mapping[str, Any]) -> list[Row]:
    """The commands that run the what-if for real: a lab of the same shape, and on the
    cluster itself; the run's own side first."""
    run_flags = ["--entry", topology["entry"]]
    if topology.get("entry_node"):
        run_flags += ["--node", topology["entry_node"]]
    if topology["connection"] != "keepalive":
        run_flags += ["--connection", topology["connection"]]
    if base.users:
        run_flags += ["-u", str(base.users)]
    if base.duration:
        run_flags += ["-t", f"{max(1, round(base.duration))}s"]
    counts = [topology["pods_per_node"].get(n, 0) for n in base.nodes]
    lab = ["nodeport-harness", "lab", "--nodes", str(len(base.nodes)),
           "--placement", ",".join(map(str, counts))]
    if topology["external_traffic_policy"] != "Cluster":
        lab += ["--policy", topology["external_traffic_policy"]]
    if topology["lb"] or base.service.get("type") == "LoadBalancer":
        lab += ["--service-type", "LoadBalancer"]
    if topology["session_affinity"] != "None":
        lab += ["--affinity", topology["session_affinity"]]
    on_lab = {"where": "lab", "commands": [
        "nodeport-harness lab stop   # the lab running from .lab/, if any",
        shlex.join(lab) + "   # leave it running in another terminal",
        shlex.join(["nodeport-harness", "run", "--kubeconfig", LAB_KUBECONFIG, *run_flags]),
    ]}
    name = base.service.get("name") or "SERVICE"
    namespace = base.service.get("namespace") or "default"
    steps = []
    if "external_traffic_policy" in change:
        patch = json.dumps({"spec": {"externalTrafficPolicy":
                                     change["external_traffic_policy"]}},
                           separators=(",", ":"))
        steps.append(shlex.join(["kubectl", "-n", namespace, "patch", "svc", name, "-p",
                                 patch]))
    if topology["lb"] and base.service.get("type") != "LoadBalancer":
        steps.append(shlex.join(["nodeport-harness", "expose", name, "-n", namespace,
                                 "--type", "LoadBalancer"]))
    for node, count in (change.get("add_pods") or {}).items():
        replicas = sum(topology["pods_per_node"].values())
        steps.append(shlex.join(["kubectl", "-n", namespace, "scale", f"deployment/{name}",
                                 f"--replicas={replicas}"])
                     + f"   # the Deployment behind the Service; the {number(count)} new "
                       f"pod(s) must land on {node} (nodeSelector or affinity)")
    steps.append(shlex.join(["nodeport-harness", "run", "--service", name, "-n", namespace,
                             *run_flags]))
    on_cluster = {"where": "cluster", "commands": steps}
    return [on_lab, on_cluster] if base.on_lab else [on_cluster, on_lab]


# -- a re-run, measured, against the prediction ----------------------------------------------

def matching_whatif(whatifs: Sequence[Mapping[str, Any]],
                    topology: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The what-if whose changed topology is ``topology`` (a later run's), if any."""
    if topology is None:
        return None
    return next((w for w in whatifs if w.get("topology") == topology), None)


def check_rerun(whatif: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
                requests_per_choice: float | None) -> Row:
    """The re-run's measured successes (``pods``: summary rows: name, node, successes,
    share) against the what-if's predicted shares, with `spread_model.compare` at the
    re-run's own requests per connection. Predicted pods are matched by name, else by node
    (pods on one node are alike in the model: new pods have no name yet)."""
    predicted = {p["name"]: p for p in whatif["pods"]}
    measured = {p["name"]: p for p in pods}
    mapping: dict[str, Mapping[str, Any]] = {}
    for name, row in predicted.items():
        if name in measured:
            mapping[name] = row
    left = [p for p in predicted.values() if p["name"] not in mapping]
    for node in dict.fromkeys(p["node"] for p in left):
        theirs = sorted(p["name"] for p in pods if p.get("node") == node
                        and p["name"] not in mapping)
        ours = [p for p in left if p["node"] == node]
        for name, row in zip(theirs, ours, strict=False):
            mapping[name] = row
    successes = {p["name"]: int(p.get("successes") or 0) for p in pods}
    total = sum(successes.values())
    bands = {name: _band(row, total) for name, row in mapping.items()}
    prediction = {
        "pods": {name: {"expected_share": row["expected_share"], "band_low": bands[name][0],
                        "band_high": bands[name][1]} for name, row in mapping.items()},
        "requests_per_choice": requests_per_choice or 1.0,
    }
    result = compare(prediction, successes)
    rows = []
    for name, row in mapping.items():
        share = successes.get(name, 0) / total if total else None
        low, high = bands[name]
        rows.append({
            "pod": name, "node": row["node"], "predicted_as": row["name"],
            "expected_share": row["expected_share"], "band_low": low, "band_high": high,
            "successes": successes.get(name, 0), "measured_share": share,
            "within_band": None if share is None else low - 1e-9 <= share <= high + 1e-9,
        })
    for name in result["unexpected_pods"]:
        if name not in mapping:
            rows.append({"pod": name, "node": measured.get(name, {}).get("node"),
                         "predicted_as": None, "expected_share": 0.0, "band_low": 0.0,
                         "band_high": 0.0, "successes": successes.get(name, 0),
                         "measured_share": successes.get(name, 0) / total if total else None,
                         "within_band": False})
    return {**result, "rows": rows, "sentence": _check_sentence(result, rows),
            "matched": result["verdict"] == "matches"}


def _band(row: Mapping[str, Any], total: int) -> tuple[float, float]:
    """The what-if's band, at least as wide as a share measured over the re-run's ``total``
    successes can be told (binomial): a pod whose share only its entry point decides (the
    one pod on a node under Local) has no band of its own, and the re-run's entry split
    differs from the run's by a request or two."""
    share = row["expected_share"]
    if not total or share <= 0:
        return row["band_low"], row["band_high"]
    half = BAND_Z * math.sqrt(share * (1 - share) / total)
    return max(0.0, min(row["band_low"], share - half)), min(1.0, max(row["band_high"],
                                                                      share + half))


def _check_sentence(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    outside = [r for r in rows if r["within_band"] is False]
    p = p_value(result["p"])
    if result["verdict"] == "matches":
        where = ("every pod within its predicted band" if not outside else
                 f"{number(len(outside))} of {number(len(rows))} pods outside their band, "
                 "as chance allows")
        return f"Measured: the re-run matched the prediction ({p}): {where}."
    if result["verdict"] == "n/a":
        return "Measured: the re-run cannot be tested against the prediction (too few pods " \
               "served or nothing predicted to vary)."
    text = f"Measured: the re-run deviated from the prediction ({p})"
    if result.get("unexpected_pods"):
        text += (f": {', '.join(result['unexpected_pods'][:3])} served although the "
                 "prediction gives it nothing")
    elif result.get("outliers"):
        worst = result["outliers"][0]
        text += (f": pod {worst['pod']} got {pct(worst['share'])} against "
                 f"{pct(worst['expected_share'])} predicted")
    return text + "."
