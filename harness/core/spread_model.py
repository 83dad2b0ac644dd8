"""What kube-proxy's rules predict for a run's pod spread, and whether the run matched it.

kube-proxy picks an endpoint per *connection*, not per request: iptables mode at random
(``statistic --mode random`` with probability 1/(n-i) per endpoint, i.e. uniformly), IPVS
round-robin. With ``externalTrafficPolicy: Cluster`` every node picks among all ready
endpoints; with ``Local`` only among its own (a node with none drops the traffic). Behind a
LoadBalancer the LB picks a node first (only nodes passing its health check: with Local, the
nodes with endpoints). With ``sessionAffinity: ClientIP`` each node's kube-proxy pins a client
address to one endpoint, so one load generator makes one choice per node, whatever the
number of connections.

``predict`` gives each pod's expected share of the successes, overall and per entry point,
with a band for the number of independent choices (connections) that carried the traffic;
``compare`` tests the measured counts against it with a chi-square corrected for the
requests that share a connection (a design effect: requests on one keep-alive connection
all land on one pod). Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats as scipy_stats

BAND_Z = 1.96  # the band drawn: 95 %
ALPHA = 0.01  # a deviation is called below this p-value (a 1 % false-alarm rate)
PROXY_MODES = ("iptables", "ipvs")

Row = dict[str, Any]


def entry_choices(entry: str, pods_on: Mapping[str, Sequence[str]], policy: str,
                  lb_nodes: Sequence[str] | None = None) -> dict[str, float]:
    """Probability of each pod for one connection entering through ``entry`` (a node name,
    or a LoadBalancer when ``lb_nodes`` lists the nodes it forwards to). Empty when the
    traffic is dropped (Local, no endpoint on that node)."""
    if lb_nodes is not None:
        healthy = [n for n in lb_nodes if policy != "Local" or pods_on.get(n)]
        mixed: dict[str, float] = {}
        for node in healthy:
            for pod, p in entry_choices(node, pods_on, policy).items():
                mixed[pod] = mixed.get(pod, 0.0) + p / len(healthy)
        return mixed
    pods = list(pods_on.get(entry, ())) if policy == "Local" else [
        pod for names in pods_on.values() for pod in names]
    return {pod: 1.0 / len(pods) for pod in pods} if pods else {}


def predict(target: Mapping[str, Any], entry_requests: Mapping[str, int],
            connections: int | None, proxy_mode: str | None = None) -> Row:
    """The expected spread for a run: ``pods`` (pod -> expected_share, band_low,
    band_high), ``entries`` (entry -> pod -> probability), ``dropped_share`` (requests
    expected to find no endpoint), ``choices`` (independent endpoint choices the model
    counts), ``requests_per_choice``, ``proxy_mode`` and ``assumptions`` (sentences)."""
    service = target.get("service") or {}
    policy = service.get("external_traffic_policy") or "Cluster"
    affinity = (service.get("session_affinity") or "None") == "ClientIP"
    node_names = [n["name"] for n in target.get("nodes", ()) if n.get("targeted", True)]
    pods_on: dict[str, list[str]] = {}
    for endpoint in target.get("endpoints", ()):
        if endpoint.get("ready", True) and endpoint.get("pod"):
            pods_on.setdefault(endpoint.get("node") or "?", []).append(endpoint["pod"])
    assumptions = []
    if proxy_mode not in PROXY_MODES:
        assumptions.append("kube-proxy's mode is not known: assumed iptables (a random "
                           "choice per connection)")
        proxy_mode = "iptables"
    total = sum(entry_requests.values())
    entries: dict[str, dict[str, float]] = {}
    weights: dict[str, float] = {}
    for entry, requests in entry_requests.items():
        if not requests:
            continue
        lb = None if entry in node_names or entry in pods_on else node_names
        entries[entry] = entry_choices(entry, pods_on, policy, lb)
        weights[entry] = requests / total
    all_pods = [pod for names in pods_on.values() for pod in names]
    served_weight = sum(w for e, w in weights.items() if entries[e])
    expected = {pod: 0.0 for pod in all_pods}
    for entry, weight in weights.items():
        for pod, p in entries[entry].items():
            expected[pod] += weight * p / served_weight if served_weight else 0.0
    # Independent choices per entry point: its connections, or one per node's kube-proxy
    # under ClientIP affinity (one client address).
    n_total = max(1, int(connections or total or 1))
    choices = {}
    for entry, weight in weights.items():
        if affinity:
            choices[entry] = 1 if entry in node_names else max(1, len(node_names))
        else:
            choices[entry] = max(1.0, n_total * weight)
    if affinity:
        assumptions.append("sessionAffinity ClientIP: one load generator address makes one "
                           "choice per node, whatever the number of connections")
    pods: dict[str, Row] = {}
    for pod in all_pods:
        variance = 0.0
        for entry, weight in weights.items():
            p = entries[entry].get(pod, 0.0)
            w = weight / served_weight if served_weight else 0.0
            if proxy_mode == "ipvs" and not affinity:
                # Round-robin: counts differ by at most one connection per entry point.
                variance += (w / choices[entry]) ** 2 / 4 if p else 0.0
            else:
                variance += w * w * p * (1 - p) / choices[entry]
        sd = math.sqrt(variance)
        share = expected[pod]
        pods[pod] = {"expected_share": share, "band_low": max(0.0, share - BAND_Z * sd),
                     "band_high": min(1.0, share + BAND_Z * sd)}
    n_choices = sum(choices.values())
    return {
        "proxy_mode": proxy_mode,
        "policy": policy,
        "affinity": "ClientIP" if affinity else "None",
        "pods": pods,
        "entries": entries,
        "dropped_share": sum(w for e, w in weights.items() if not entries[e]),
        "choices": round(n_choices, 1),
        "requests_per_choice": total / n_choices if n_choices else None,
        "assumptions": assumptions,
    }


def compare(prediction: Mapping[str, Any], successes: Mapping[str, int],
            exclude: Sequence[str] | set[str] = ()) -> Row:
    """The measured successes per pod against the prediction: ``statistic`` (chi-square
    divided by the requests per choice), ``df``, ``p``, ``verdict`` (matches / deviates /
    n/a), ``outliers`` (pods outside their band, most off first) and ``unexpected_pods``.
    ``exclude``: pods that joined or left during the run, judged apart (``excluded``): the
    rest are tested among themselves, their expectations renormalised."""
    excluded = sorted(set(exclude) & (set(prediction["pods"]) | set(successes)))
    expected = {pod: row["expected_share"] for pod, row in prediction["pods"].items()
                if pod not in excluded}
    stable = sum(expected.values())
    if excluded and stable:
        expected = {pod: share / stable for pod, share in expected.items()}
    successes = {pod: n for pod, n in successes.items() if pod not in excluded}
    observed = {pod: int(successes.get(pod, 0)) for pod in expected}
    total = sum(observed.values())
    # A pod the rules give nothing (Local: on another node) that served anyway is a
    # deviation whatever the statistic says.
    nothing = [p for p in expected if expected[p] == 0 and observed[p]] + [
        pod for pod, n in successes.items() if pod not in expected and n]
    live = [pod for pod, share in expected.items() if share > 0]
    if total == 0 or len(live) < 2 and not nothing:
        return {"statistic": None, "df": None, "p": None, "verdict": "n/a", "outliers": [],
                "unexpected_pods": [], "excluded": excluded}
    design = max(1.0, float(prediction.get("requests_per_choice") or 1.0))
    statistic = sum((observed[p] - total * expected[p]) ** 2 / (total * expected[p])
                    for p in live) / design
    df = max(1, len(live) - 1)
    p_value = float(scipy_stats.chi2.sf(statistic, df)) if len(live) > 1 else 1.0
    outliers = []
    for pod, row in prediction["pods"].items():
        if pod in excluded:
            continue
        share = observed[pod] / total
        if not row["band_low"] <= share <= row["band_high"]:
            outliers.append({"pod": pod, "share": share, "expected_share": row["expected_share"],
                             "off": abs(share - row["expected_share"])})
    outliers.sort(key=lambda o: -o["off"])
    verdict = "deviates" if p_value < ALPHA or nothing else "matches"
    return {"statistic": statistic, "df": df, "p": p_value, "verdict": verdict,
            "outliers": outliers, "unexpected_pods": nothing, "excluded": excluded}
