"""Findings: the plain sentences (with their numbers and a severity) a summary reads as.

Pure: from `analysis.summarize`'s dict; no I/O. Every number goes through `harness.core.text`,
so a sentence here reads its figures as the tables and the other outputs do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.core.faults import verb as fault_verb
from harness.core.text import (
    fair_index,
    ms,
    name_list,
    number,
    p_value,
    pct,
    rate,
    secs,
    times,
)

SEVERITIES = ("critical", "warning", "info", "ok")

Row = dict[str, Any]


def fraction(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def build_findings(summary: Mapping[str, Any]) -> list[Row]:
    """Plain-sentence findings, most severe first; the LoadBalancer one closes the list."""
    findings: list[Row] = []
    for check in (_f_incidents, _f_failures, _f_ingress, _f_faults, _f_node_availability,
                  _f_local_policy, _f_fairness, _f_slow_pods, _f_zero_pods, _f_unknown_pods,
                  _f_keepalive, _f_pod_arrivals, _f_cross_node, _f_snat, _f_lb_spread,
                  _f_latency):
        findings.extend(check(summary))
    findings = _without_contradictions(findings)
    findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))
    findings.extend(_f_loadbalancer(summary, findings))
    return findings


def _finding(id_: str, severity: str, text: str, **metric: Any) -> Row:
    return {"id": id_, "severity": severity, "text": text, "metric": metric}


# Findings whose OK reads "it held up", and the critical ones that show it did not.
_RESILIENCE_CLAIMS = ("ingress", "fault:")
_OUTAGES = ("incident:", "fault:", "failures", "node_availability:")


def _without_contradictions(findings: list[Row]) -> list[Row]:
    """No OK finding may contradict a critical one: when an outage was critical, an OK claim
    that the run held up (ingress spread "losing one costs X %", a fault with "0 % failed")
    is dropped; the critical finding tells what happened instead."""
    if not any(f["severity"] == "critical" and f["id"].startswith(_OUTAGES)
               for f in findings):
        return findings
    return [f for f in findings
            if not (f["severity"] == "ok" and f["id"].startswith(_RESILIENCE_CLAIMS))]


def incident_what(incident: Mapping[str, Any]) -> str:
    """What failed, in words: "requests through node-2", "the LoadBalancer", "pod web-1"."""
    if incident["scope"] == "lb":
        return f"requests through the LoadBalancer ({incident['name']})"
    if incident["scope"] == "pod":
        return f"pod {incident['name']}"
    return f"requests through {incident['name']}"


def incident_sentence(incident: Mapping[str, Any]) -> str:
    """One incident, as the headline and its finding tell it."""
    until = ("to the end of the run" if incident["end_s"] is None
             else f"until {secs(incident['end_s'])}")
    kinds = ", ".join(f"{k} {number(v)}" for k, v in incident["kinds"].items())
    if incident["scope"] == "pod":
        text = (f"Pod {incident['name']} stopped being served at {secs(incident['start_s'])} "
                f"({until}; it had served {pct(incident.get('share_before'))} of replies "
                "before)")
        if kinds:
            text += f"; clients saw {kinds} as it went"
    else:
        text = (f"{incident_what(incident)[0].upper()}{incident_what(incident)[1:]} failed "
                f"from {secs(incident['start_s'])} {until}: "
                f"{pct(incident['scope_failed_share'])} of them failed"
                + (f" ({kinds})" if kinds else ""))
    text += f"; {pct(incident['failed_share'])} of all requests failed meanwhile"
    before, during = incident.get("rps_before"), incident.get("rps_during")
    if before and during is not None:
        if during < 0.9 * before:
            text += f", and throughput fell from {number(before)} to {rate(during)}"
        else:
            text += f", at {rate(during)} ({number(before)} before)"
    if incident.get("caused_by"):
        text += "; near its start: " + "; ".join(incident["caused_by"][:3])
    return text


def incident_severity(incident: Mapping[str, Any]) -> str:
    share = incident.get("failed_share") or 0.0
    before, during = incident.get("rps_before"), incident.get("rps_during")
    fell = bool(before and during is not None and during < 0.5 * before)
    if share >= 0.05 or fell:
        return "critical"
    return "warning"


def _f_incidents(s: Mapping[str, Any]) -> list[Row]:
    """Each incident the per-second data shows, announced or not."""
    return [_finding(f"incident:{i['scope']}:{i['name']}:{i['start_s']:g}",
                     incident_severity(i), incident_sentence(i) + ".",
                     **{k: i.get(k) for k in ("scope", "name", "start_s", "end_s", "kinds",
                                              "failed_share", "rps_before", "rps_during",
                                              "caused_by")})
            for i in s.get("incidents") or ()]


def worst_incident(summary: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The incident a headline names: the most requests failed, then the deepest fall."""
    incidents = summary.get("incidents") or ()

    def weight(i: Mapping[str, Any]) -> tuple[float, float]:
        before, during = i.get("rps_before") or 0.0, i.get("rps_during") or 0.0
        return (i.get("failed_share") or 0.0, (before - during) / before if before else 0.0)

    return max(incidents, key=weight, default=None)


def _f_failures(s: Mapping[str, Any]) -> list[Row]:
    total, failures = s["totals"]["requests"], s["failures"]
    if not total:
        return [_finding("no_traffic", "critical", "No request was recorded.", requests=0)]
    ratio = failures["ratio"] or 0.0
    if not failures["total"]:
        return [_finding("failures", "ok", f"No request failed (0 of {number(total)}).",
                         failures=0, requests=total, fail_ratio=0.0)]
    kinds = ", ".join(f"{k} {number(v)}" for k, v in failures["by_kind"].items())
    by_node = sorted(((sum(k.values()), n) for n, k in failures["by_node"].items()), reverse=True)
    worst_count, worst = by_node[0]
    text = (f"{pct(ratio)} of requests failed ({number(failures['total'])} of {number(total)}): "
            f"{kinds}")
    if len(by_node) > 1:
        text += f"; {pct(worst_count / failures['total'])} of them entered through {worst}"
    severity = "critical" if ratio >= 0.05 else "warning" if ratio >= 0.001 else "info"
    return [_finding("failures", severity, text + ".", failures=failures["total"],
                     requests=total, fail_ratio=ratio, by_kind=failures["by_kind"],
                     worst_node=worst)]


def _f_ingress(s: Mapping[str, Any]) -> list[Row]:
    nodes = [n for n in s["nodes"] if n["is_node"]]
    entered = [n for n in nodes if n["requests"]]
    total = sum(n["requests"] for n in entered)
    if s["run"]["entry_strategy"] == "lb" or not total:
        return []
    targeted = [n for n in nodes if n["targeted"]] or nodes
    pods_total = sum(n["pods"] for n in nodes)
    top = max(entered, key=lambda n: n["requests"])
    share = top["requests"] / total
    metric = {"node": top["name"], "share": share, "nodes": len(targeted),
              "entry_nodes": len(entered)}
    if len(targeted) <= 1:
        return [_finding("ingress_concentration", "info",
                         f"The cluster has one node ({top['name']}): it is a single point of "
                         "failure whatever the Service type.", **metric)]
    if len(entered) == 1:
        elsewhere = pods_total - top["pods"]
        tail = (f", though {number(elsewhere)} of {number(pods_total)} pods run elsewhere"
                if elsewhere else
                f" (it also runs all {number(pods_total)} pods)" if pods_total else "")
        return [_finding(
            "ingress_concentration", "critical",
            f"All ingress entered through {top['name']} ({pct(share)}): if {top['name']} "
            f"fails, every client fails{tail}.", pods_elsewhere=elsewhere, **metric)]
    even = 1.0 / len(targeted)
    unused = [n["name"] for n in targeted if not n["requests"]]
    if share > max(1.5 * even, 0.5) or unused:
        text = (f"Ingress was uneven: {top['name']} took {pct(share)} of requests against "
                f"{pct(even)} for an even spread over {number(len(targeted))} nodes; if it fails, "
                f"{pct(share)} of clients fail")
        if unused:
            text += f" ({name_list(unused)} got nothing)"
        return [_finding("ingress_concentration", "warning", text + ".", unused=unused,
                         **metric)]
    low = min(n["requests"] for n in entered) / total
    each = pct(share) if pct(low) == pct(share) else f"{pct(low)} to {pct(share)}"
    return [_finding(
        "ingress_concentration", "ok",
        f"Ingress was spread over {number(len(entered))} nodes ({each} each): losing one costs "
        f"about {pct(share)} of clients, not all.", low=low, **metric)]


def _f_faults(s: Mapping[str, Any]) -> list[Row]:
    out = []
    for fault in s["faults"]:
        verb = fault_verb(fault["action"])
        if verb is None or "requests" not in fault:
            continue
        name, kind = fault["name"], fault.get("kind", "node")
        when = f"{name} {verb} at {secs(fault['t'])}"
        until = ("until the end" if fault["until"] is None
                 else f"until it came back at {secs(fault['until'])}")
        metric = {k: fault.get(k) for k in (
            "t", "until", "requests", "failures", "fail_ratio", "before_fail_ratio",
            "via_node_share", "steady_fail_ratio", "rps_before", "rps_steady")}
        if not fault["requests"]:
            out.append(_finding(f"fault:{name}", "info",
                                f"{when}; no requests were recorded afterwards.", **metric))
            continue
        ratio = fault["fail_ratio"] or 0.0
        before = fault["before_fail_ratio"]
        steady = fault.get("steady_fail_ratio")
        if steady is not None:
            # Closed-loop users stuck on time-outs send few requests: the share of requests
            # that failed over the whole window would hide the outage behind the fast
            # successes of the seconds before it took hold.
            ratio = max(ratio, steady)
            text = (f"{when}: from {secs(fault['settle_s'])} later {until}, "
                    f"{pct(steady)} of requests failed"
                    + (f" ({pct(before)} before)" if before is not None else ""))
            rps_before, rps_steady = fault.get("rps_before"), fault.get("rps_steady")
            # Only a real fall is news (fast failures such as refused connections keep the
            # rate); closed-loop users waiting on time-outs are what makes it fall.
            if rps_before and rps_steady is not None and rps_steady < 0.9 * rps_before:
                text += (f", and throughput fell from {number(rps_before)} to "
                         f"{rate(rps_steady)} as users waited on failing requests")
        else:
            text = (f"{when}: {pct(ratio)} of requests failed from then {until} "
                    f"({number(fault['failures'])} of {number(fault['requests'])}"
                    + (f"; {pct(before)} before" if before is not None else "") + ")")
        # A health check only helps with failures that entered through the dead node; the
        # rest came through live nodes whose kube-proxy still routed to its pods.
        lb_would_help = (kind == "node" and ratio >= 0.001
                         and (fault.get("via_node_share") or 0) >= 0.5)
        if lb_would_help:
            text += "; a LoadBalancer health check would have removed it"
        elif ratio >= 0.001:
            pods = f"{name}'s pods" if kind == "node" else "the pod"
            text += (f"; they entered through other nodes, whose kube-proxy kept routing to "
                     f"{pods} until the endpoints were removed")
        severity = "critical" if ratio >= 0.05 else "warning" if ratio >= 0.001 else "ok"
        out.append(_finding(f"fault:{name}", severity, text + ".", kind=kind,
                            lb_would_help=lb_would_help, **metric))
    return out


def _f_node_availability(s: Mapping[str, Any]) -> list[Row]:
    covered = {f["name"] for f in s["faults"]}
    # An incident already tells a failing entry point's story, before and during.
    covered |= {i["name"] for i in s.get("incidents") or () if i["scope"] != "pod"}
    # A node whose failures began only after a declared fault is that fault's victim: the
    # fault finding already tells the story.
    fault_times = [f["t"] for f in s["faults"] if fault_verb(f["action"])]
    covered |= {n["name"] for n in s["nodes"] if n["first_failure_s"] is not None
                and any(t <= n["first_failure_s"] + 1 for t in fault_times)}
    service = s["service"] or {}
    if service.get("external_traffic_policy") == "Local":
        covered |= {n["name"] for n in s["nodes"] if not n["pods"]}
    out = []
    for node in s["nodes"]:
        availability = node["availability"]
        if availability is None or availability >= 0.99 or node["name"] in covered:
            continue
        others = [n for n in s["nodes"] if n is not node and n["requests"]]
        other_requests = sum(n["requests"] for n in others)
        other = fraction(sum(n["successes"] for n in others), other_requests)
        kinds = ", ".join(f"{k} {number(v)}" for k, v in node["failure_kinds"].items())
        text = (f"{node['name']} answered only {pct(availability)} of the "
                f"{number(node['requests'])} requests that entered through it ({kinds})")
        if other is not None:
            text += f"; the other nodes answered {pct(other)}"
        out.append(_finding(f"node_availability:{node['name']}",
                            "critical" if availability < 0.9 else "warning", text + ".",
                            node=node["name"], availability=availability, others=other))
    return out


def _f_local_policy(s: Mapping[str, Any]) -> list[Row]:
    service = s["service"] or {}
    if service.get("external_traffic_policy") != "Local":
        return []
    out = []
    check = service.get("health_check_node_port")
    lb = (f"a LoadBalancer health-checks port {check} and would skip it" if check
          else "a LoadBalancer's health check would skip it")
    nodes = [n for n in s["nodes"] if n["is_node"] and n["targeted"]]
    for node in nodes:
        if node["pods"]:
            continue
        name = node["name"]
        if node["requests"]:
            ratio = node["failures"] / node["requests"]
            kinds = ", ".join(f"{k} {number(v)}" for k, v in node["failure_kinds"].items())
            text = (f"externalTrafficPolicy is Local and {name} runs no pod: {pct(ratio)} of "
                    f"the {number(node['requests'])} requests sent to it failed"
                    + (f" ({kinds})" if kinds else "") + f"; {lb}.")
            severity = "critical" if ratio >= 0.5 else "warning"
        else:
            ratio = None
            text = (f"externalTrafficPolicy is Local and {name} runs no pod: any client sent "
                    f"to it fails; this run sent it nothing; {lb}.")
            severity = "warning"
        out.append(_finding(f"local_policy_no_pod:{name}", severity, text, node=name,
                            requests=node["requests"], fail_ratio=ratio))
    with_pods = [n for n in nodes if n["pods"]]
    if len(with_pods) > 1:
        most = max(with_pods, key=lambda n: n["pods"])
        least = min(with_pods, key=lambda n: n["pods"])
        if most["pods"] != least["pods"]:
            factor = most["pods"] / least["pods"]
            out.append(_finding(
                "local_policy_imbalance", "info",
                f"externalTrafficPolicy Local spreads per node, not per pod: {most['name']} "
                f"runs {number(most['pods'])} pods and {least['name']} runs "
                f"{number(least['pods'])}, so with even ingress each pod on {least['name']} "
                f"takes {times(factor)} the load of one on {most['name']}.",
                most=most["name"], least=least["name"], factor=factor))
    return out


def _f_fairness(s: Mapping[str, Any]) -> list[Row]:
    fairness = s["fairness"]
    pods = fairness["pods"]
    served = [p for p in s["pods"] if p["successes"]]
    if not served:
        return []
    if pods == 1:
        return [_finding("pod_fairness", "info", f"One pod ({served[0]['name']}) served "
                         "everything: there is no spread to measure.", **fairness)]
    jain, ratio = fairness["jain"], fairness["max_min_ratio"]
    busiest = max(s["pods"], key=lambda r: r["successes"])
    even = (f"Jain's index {fair_index(jain)} over {number(pods)} pods (1 = even), max/min "
            f"{times(ratio) if ratio else 'infinite (a pod got nothing)'}")
    model = fairness.get("model")
    if not model or model.get("verdict") == "n/a":
        return [_uniform_fairness(s, fairness, busiest, even)]
    choice = ("round-robin choice" if model["proxy_mode"] == "ipvs"
              else "random choice")
    per = ("one choice per node for a client address (sessionAffinity ClientIP)"
           if model["affinity"] == "ClientIP"
           else f"{number(round(model['choices']))} connections over {number(pods)} pods")
    p = p_value(model["p"])
    metric = {"busiest": busiest["name"], "busiest_share": busiest["share"], **fairness}
    if model["verdict"] == "matches":
        text = (f"The pod spread matches what kube-proxy's per-connection {choice} predicts "
                f"for {per} ({p}); {even}")
        if jain is not None and jain < 0.9:
            text += ": uneven, but as the rules and the number of connections allow"
        severity = "ok" if jain is None or jain >= 0.9 else "info"
    else:
        worst = (model.get("outliers") or [None])[0]
        text = f"The pod spread deviates from what kube-proxy's {choice} predicts ({p})"
        if model.get("unexpected_pods"):
            text += (f": {name_list(model['unexpected_pods'], 3)} served although the rules "
                     "give it nothing")
        elif worst:
            text += (f": pod {worst['pod']} got {pct(worst['share'])} against "
                     f"{pct(worst['expected_share'])} expected")
        text += ": something other than kube-proxy's choice is at work"
        causes = _spread_causes(s, model)
        if causes:
            text += "; " + "; ".join(causes)
        text += f". {even}"
        severity = "critical" if jain is not None and jain < 0.5 else "warning"
    if model.get("excluded"):
        text += (f"; {name_list(model['excluded'], 3)} joined or left during the run and "
                 "are judged apart (their incidents and arrivals tell it)")
    if model.get("assumptions"):
        text += " (" + "; ".join(model["assumptions"]) + ")"
    return [_finding("pod_fairness", severity, text + ".", **metric)]


def _f_slow_pods(s: Mapping[str, Any]) -> list[Row]:
    """A slow pod gets fewer requests than kube-proxy's choice gives it, even when the
    connections were spread as predicted: closed-loop clients on its connections wait
    longer and send less. Named with its latency, whatever the spread verdict."""
    rows = [p for p in s["pods"] if p["latency"]["p50"] and p["in_endpoints"]]
    if len(rows) < 2:
        return []
    medians = sorted(p["latency"]["p50"] for p in rows)
    typical = medians[len(medians) // 2]
    out = []
    for pod in rows:
        expected, share = pod.get("expected_share") or 0.0, pod["share"] or 0.0
        if pod["latency"]["p50"] >= 2 * typical and expected and share < 0.5 * expected:
            out.append(_finding(
                f"slow_pod:{pod['name']}", "warning",
                f"Pod {pod['name']} is slow (p50 {ms(pod['latency']['p50'])} against "
                f"{ms(typical)} typical) and served {pct(share)} of requests against "
                f"{pct(expected)} expected: clients waiting on it send less, so the requests "
                "do not follow kube-proxy's choice of connections; find why it is slow, or "
                "balance by load (a LoadBalancer or a proxy with least-requests) rather than "
                "per connection.", pod=pod["name"], share=share, expected_share=expected,
                p50_ms=pod["latency"]["p50"], typical_p50_ms=typical))
    return out


def _uniform_fairness(s: Mapping[str, Any], fairness: Mapping[str, Any],
                      busiest: Mapping[str, Any], even: str) -> Row:
    """No topology to predict from (no target): the spread against uniform."""
    spread = f"{even}, chi-square against uniform {p_value(fairness['chi2_p'])}"
    jain, ratio, p = fairness["jain"], fairness["max_min_ratio"], fairness["chi2_p"]
    if jain < 0.9 or ratio is None or ratio > 2:
        text = (f"Pods were not served evenly: {busiest['name']} got "
                f"{pct(busiest['share'])} against {pct(busiest['expected_share'])} expected; "
                f"{spread}.")
        keepalive = s["keepalive"]
        if (keepalive["single_pod_share"] or 0) >= 0.95 and (
                keepalive["mean_requests_per_connection"] or 0) >= 2:
            text += " Keep-alive pinning (each connection stays on one pod) explains it."
        severity = "critical" if jain < 0.5 else "warning"
    elif p is not None and p < 0.001:
        text = (f"Pods were served slightly unevenly: {spread}; the deviation is small but "
                "real at this sample size.")
        severity = "info"
    else:
        text = f"Pods shared the load evenly: {spread}."
        severity = "ok"
    return _finding("pod_fairness", severity, text, busiest=busiest["name"],
                    busiest_share=busiest["share"], **fairness)


def _spread_causes(s: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """What the data can say about a spread kube-proxy's choice does not explain."""
    causes = []
    rows = {p["name"]: p for p in s["pods"]}
    outliers = [o["pod"] for o in model.get("outliers") or () if o["pod"] in rows]
    # A slow pod: closed-loop clients pinned to it send less (and an LB or client backs off).
    medians = sorted(p["latency"]["p50"] for p in s["pods"] if p["latency"]["p50"])
    if medians:
        typical = medians[len(medians) // 2]
        slow = [name for name in outliers
                if (rows[name]["latency"]["p50"] or 0) >= 2 * typical > 0]
        if slow:
            causes.append(f"{slow[0]} is slow (p50 {ms(rows[slow[0]]['latency']['p50'])} "
                          f"against {ms(typical)} typical): its clients send less")
    joined = {c.get("name") for c in s.get("changes") or ()
              if c.get("change") in ("joined", "added")}
    joined |= {i["name"] for i in s.get("incidents") or () if i["scope"] == "pod"}
    late = [name for name in outliers if name in joined]
    if late:
        causes.append(f"{late[0]} joined or left during the run: connections opened before "
                      "stay where they are")
    if model.get("affinity") == "ClientIP":
        causes.append("sessionAffinity ClientIP pins each client address to one pod")
    pods = max(1, s["fairness"]["pods"])
    if model.get("choices") is not None and model["choices"] < 5 * pods:
        causes.append(f"only {number(round(model['choices']))} connections for "
                      f"{number(pods)} pods: each carries a large share")
    return causes


def _f_zero_pods(s: Mapping[str, Any]) -> list[Row]:
    existing = [p for p in s["pods"] if p["in_endpoints"]]
    zero = [p for p in existing if not p["successes"]]
    out = []
    if existing and not zero:
        out.append(_finding("pods_without_traffic", "ok",
                            f"All {number(len(existing))} pods served requests.", zero=[]))
    elif zero and s["totals"]["successes"]:
        names = name_list(f"{p['name']} (on {p['node']})" if p["node"] else p["name"]
                          for p in zero)
        text = f"{number(len(zero))} of {number(len(existing))} pods received nothing: {names}"
        service = s["service"] or {}
        quiet = {n["name"] for n in s["nodes"] if not n["requests"]}
        keepalive = s["keepalive"]
        if service.get("external_traffic_policy") == "Local" and all(
                p["node"] in quiet for p in zero):
            text += ("; with externalTrafficPolicy Local a pod only gets traffic that enters "
                     "its own node, and no traffic entered theirs")
        elif keepalive["connections"] and keepalive["connections"] < len(existing):
            text += (f"; only {number(keepalive['connections'])} connections were opened and each "
                     "stays on one pod")
        out.append(_finding("pods_without_traffic",
                            "critical" if len(zero) == len(existing) else "warning",
                            text + ".", zero=[p["name"] for p in zero], pods=len(existing)))
    stray = [p["name"] for p in s["pods"] if not p["in_endpoints"]]
    if stray and existing:
        out.append(_finding(
            "pods_not_in_endpoints", "info",
            f"{number(len(stray))} pods served traffic but were not in the discovered endpoints "
            f"({name_list(stray)}): pods were replaced "
            "during the run or the target is stale.", pods=stray))
    return out


def _f_unknown_pods(s: Mapping[str, Any]) -> list[Row]:
    """Replies that named no pod, and apart from them replies whose pod name came beyond
    the recorder's cap (counted as "(other)"): those did name one, --pod-from is fine."""
    successes = s["totals"]["successes"]
    cap = s.get("pod_cap") or {}
    other = cap.get("other_successes") or 0
    unknown = s["unknown_successes"] - other
    rows = []
    share = fraction(unknown, successes)
    if share and share >= 0.01:
        rows.append(_finding(
            "unknown_pod", "critical" if share >= 0.5 else "warning",
            f"{pct(share)} of successful replies did not name a pod ({number(unknown)} of "
            f"{number(successes)}): per-pod figures are incomplete; check --pod-from.",
            unknown=unknown, successes=successes, share=share))
    other_share = fraction(other, successes)
    if other_share:
        limit, over = cap.get("max_pods"), cap.get("names_over_cap") or 0
        seen = f"at least {number((limit or 0) + over)}" if over else "more"
        rows.append(_finding(
            "pod_cap", "critical" if other_share >= 0.5 else "warning",
            f"Replies named {seen} distinct pods, over the {number(limit)} the run records: "
            f"{pct(other_share)} of successful replies ({number(other)} of {number(successes)}) "
            "named a pod beyond the first "
            f"{number(limit)} and are counted together as \"(other)\", so per-pod figures are "
            "incomplete; raise the cap with --max-pods, or check that --pod-from reads a pod "
            "name and not a per-request value.",
            other=other, successes=successes, share=other_share, max_pods=limit,
            names_over_cap=over))
    return rows


def _f_keepalive(s: Mapping[str, Any]) -> list[Row]:
    """How kube-proxy's per-connection choice met the run's TCP connections: the client's
    opened connections (a failed connect counts, with its one request), the requests they
    carried and the pods each saw."""
    k = s["keepalive"]
    connections = k["connections"]
    if not connections:
        return []
    per_connection = k["mean_requests_per_connection"] or 0.0
    metric = dict(k)
    caveat = (f" (connection tracking hit its limit and finalised {number(k['evicted'])} early: "
              "figures are approximate)" if k["evicted"] else "")
    opened = (f"the client opened {number(connections)} TCP connections for "
              f"{number(k['requests'])} requests")
    if s["run"]["connection_mode"] == "close":
        # The mode is the truth; the counts are told when they agree with it (a run folder
        # from before connections were counted as such has one per user and entry node).
        counts = f": {opened}, one each" if k["requests"] == connections else ""
        return [_finding(
            "keepalive_pinning", "info",
            f"Every request opened a new connection (connection mode close){counts}; "
            "kube-proxy chose a pod for each one, so keep-alive pinning did not apply.",
            **metric)]
    with_pod = k["connections_with_pod"]
    mean_pods = k["mean_distinct_pods"]
    if not with_pod or mean_pods is None:
        return [_finding(
            "keepalive_pinning", "info",
            f"No connection reached a pod a reply named ({opened}): keep-alive pinning "
            f"cannot be told{caveat}.", **metric)]
    podless = connections - with_pod
    without = (f"; {number(podless)} of them reached no named pod (a failed connect or "
               "request, or a reply that named none)" if podless else "")
    if per_connection < 1.5:
        return [_finding(
            "keepalive_pinning", "info",
            f"Each connection carried {_count_of(per_connection, 'request')} on average "
            f"({opened}: the server or errors closed them){without}, so kube-proxy chose a "
            f"pod for almost every request{caveat}.", **metric)]
    single = k["single_pod_share"] or 0.0
    pods = max(s["fairness"]["pods"], 1)
    carried = f"{opened}, {_count_of(per_connection, 'request')} each on average{without}"
    if single >= 0.95:
        severity = "warning" if with_pod < 10 * pods else "info"
        text = (f"With keep-alive each connection stayed on one pod: {carried}; "
                f"{pct(single)} of the {number(with_pod)} that reached a pod saw exactly one "
                f"({_count_of(mean_pods, 'pod')} per connection on average). kube-proxy "
                "balances connections, not requests, so the spread over "
                f"{number(pods)} pods is only as fine as the connections{caveat}.")
        return [_finding("keepalive_pinning", severity, text, **metric)]
    return [_finding(
        "keepalive_pinning", "ok",
        f"Connections were not pinned: {carried}; they saw {_count_of(mean_pods, 'pod')} "
        f"per connection on average ({pct(single)} saw only one), so something balances per "
        f"request (an L7 proxy or session handling){caveat}.", **metric)]


ARRIVAL_MIN_EXPECTED = 20.0  # successes the rules give a new pod before its share is judged
ARRIVAL_FAR_LESS = 0.25  # "far less": below this part of its expected share


def _f_pod_arrivals(s: Mapping[str, Any]) -> list[Row]:
    """A pod that appeared during the run (``pod_arrivals``) and served far less after it
    appeared than kube-proxy's rules give it: the clients' connections stayed where they
    were (kubernetes/kubernetes#126378)."""
    out = []
    close = s["run"].get("connection_mode") == "close"
    affinity = (s["service"] or {}).get("session_affinity") == "ClientIP"
    for row in s.get("pod_arrivals") or ():
        expected, share = row.get("expected_share"), row.get("share")
        if (expected is None or share is None or row["expected"] < ARRIVAL_MIN_EXPECTED
                or share >= ARRIVAL_FAR_LESS * expected):
            continue
        when = (f"joined at {secs(row['joined_s'])}" if row["source"] == "joined"
                else f"appeared at {secs(row['joined_s'])} (first seen serving)")
        text = (f"{row['pod']} {when} and served {pct(share)} of requests after, against "
                f"{pct(expected)} expected: ")
        if affinity:
            text += ("sessionAffinity ClientIP keeps each client address on the pod it had, "
                     "so only new clients reach it")
        elif close:
            text += ("every request opened a new connection, so something other than "
                     "kube-proxy's choice kept traffic from it (its readiness, or a proxy in "
                     "front that pools connections)")
        else:
            text += ("existing keep-alive connections never move; recycle connections (max "
                     "requests or max age per connection) or balance per request")
        out.append(_finding(f"pod_arrival:{row['pod']}", "warning", text + ".", **row))
    return out


def _f_cross_node(s: Mapping[str, Any]) -> list[Row]:
    cross = s["cross_node"]
    share = cross["share"]
    if share is None:
        return []
    metric = {"share": share, "cost_ms": cross["cost_ms"],
              "local": cross["local"]["count"], "cross_node": cross["cross_node"]["count"]}
    if share == 0:
        return [_finding("cross_node", "ok", "No request crossed nodes: every pod that "
                         "answered ran on the node the request entered.", **metric)]
    p50, p95 = cross["cost_ms"]["p50"], cross["cost_ms"]["p95"]
    severity = "info"
    if not cross["enough_samples"] or p50 is None:
        text = (f"{pct(share)} of requests crossed nodes (too few local or cross-node "
                "samples to price the hop)")
    elif p50 > 0:
        text = (f"{pct(share)} of requests crossed nodes, adding {ms(p50)} at p50 "
                f"({ms(p95)} at p95)")
        if p50 >= 1.0 and share >= 0.25:
            severity = "warning"
    else:
        text = (f"{pct(share)} of requests crossed nodes with no measurable latency cost "
                f"(p50 local {ms(cross['local']['p50'])}, cross-node "
                f"{ms(cross['cross_node']['p50'])})")
    if (s["service"] or {}).get("external_traffic_policy") == "Cluster":
        text += ("; externalTrafficPolicy Local avoids the hop but drops traffic on nodes "
                 "without a pod")
    return [_finding("cross_node", severity, text + ".", **metric)]


def _f_snat(s: Mapping[str, Any]) -> list[Row]:
    policy = (s["service"] or {}).get("external_traffic_policy")
    if policy == "Cluster":
        return [_finding(
            "source_ip_snat", "info",
            "externalTrafficPolicy is Cluster: kube-proxy source-NATs NodePort traffic, so "
            "pods see a node's address instead of the client's; use Local, or a "
            "LoadBalancer that preserves it, if the app needs client IPs.", policy=policy)]
    if policy == "Local":
        return [_finding("source_ip_snat", "ok", "externalTrafficPolicy is Local: pods see "
                         "the client's own address (no source NAT).", policy=policy)]
    return []


def _f_lb_spread(s: Mapping[str, Any]) -> list[Row]:
    """--entry lb: how the LoadBalancer spread requests over nodes, or why that is unseen."""
    lb = s.get("lb")
    if not lb or not lb["successes"]:
        return []
    where = f"the LoadBalancer ({lb['address']})" if lb.get("address") else "the LoadBalancer"
    metric = {key: lb[key] for key in ("seen", "unseen_reason", "via_nodes", "unknown",
                                       "shares", "nodes", "nodes_used")}
    if not lb["seen"]:
        if lb["unseen_reason"] == "local_policy":
            why = ("externalTrafficPolicy is Local, which keeps the client's address, so the "
                   "pods saw the client, not the node it sent them to (with Local a pod only "
                   "serves requests that entered its own node: the per-pod figures show the "
                   "spread by node)")
        else:
            why = ("no reply named a node's address as the peer its pod saw (helloworld's "
                   "reply field client): the app does not report it, or the address is no "
                   "node's (a proxy in between, or a pod network without podCIDRs on the "
                   "nodes)")
        return [_finding("lb_spread", "info",
                         f"Requests entered through {where}; which node it passed each one "
                         f"to could not be seen: {why}.", **metric)]
    counts, shares = lb["via_nodes"], lb["shares"]
    top = max(counts, key=lambda name: counts[name])
    share = shares[top] or 0.0
    even = 1.0 / len(counts)
    unused = [name for name, count in counts.items() if not count]
    lb_name = "T" + where[1:]  # at the start of the sentence
    if len(counts) > 1 and lb["nodes_used"] == 1:
        severity = "warning"
        text = (f"{lb_name} passed every request through {top}: if it fails, "
                "every client fails until the LB's health check takes it out")
    elif share > max(1.5 * even, 0.5) or unused:
        severity = "info"
        text = (f"{lb_name} spread requests unevenly: {top} took {pct(share)} "
                f"against {pct(even)} for an even spread over {number(len(counts))} nodes"
                + (f" ({name_list(unused)} got nothing)" if unused else ""))
    else:
        severity = "ok"
        low = min(v for v in shares.values() if v is not None)
        each = pct(share) if pct(low) == pct(share) else f"{pct(low)} to {pct(share)}"
        text = (f"{lb_name} spread requests over {number(lb['nodes_used'])} of "
                f"{number(len(counts))} nodes ({each} each)")
    text += ("; seen from the pods, whose peer was the node that forwarded (kube-proxy's "
             "source NAT)")
    connections = s["keepalive"]["connections"]
    if s["run"]["connection_mode"] != "close" and connections and (
            connections < 10 * len(counts)):
        text += (f"; the LB picks a node per connection and this run kept "
                 f"{number(connections)} connections alive, so the spread is coarse")
    if lb["unknown"]:
        replies = "reply" if number(lb["unknown"]) == "1" else "replies"
        text += (f"; {number(lb['unknown'])} {replies} ({pct(lb['unknown'] / lb['successes'])})"
                 " did not show a node")
    return [_finding("lb_spread", severity, text + ".", **metric)]


def _f_latency(s: Mapping[str, Any]) -> list[Row]:
    overall = s["latency"]["overall"]
    if not overall["count"]:
        return []
    model = s["run"]["load_model"]
    text = (f"Successful requests took {ms(overall['p50'])} at p50, {ms(overall['p95'])} "
            f"at p95 and {ms(overall['p99'])} at p99 (max {ms(overall['max'])}) over "
            f"{number(overall['count'])} requests, measured {model}")
    if model == "closed-loop":
        text += (": each user waits for its reply, so latency under overload is "
                 "under-reported (coordinated omission)")
    return [_finding("latency", "info", text + ".", load_model=model, **overall)]


def _f_loadbalancer(s: Mapping[str, Any], findings: list[Row]) -> list[Row]:
    if s["run"]["entry_strategy"] == "lb":
        return []
    by_id = {f["id"]: f for f in findings}
    reasons = []
    ingress = by_id.get("ingress_concentration")
    if ingress and ingress["severity"] in ("critical", "warning"):
        reasons.append(f"it spreads clients over every healthy node instead of sending "
                       f"{pct(ingress['metric']['share'])} through {ingress['metric']['node']}")
    for finding in findings:
        if finding["id"].startswith("fault:") and finding["metric"].get("lb_would_help"):
            reasons.append(f"it stops sending to a node that fails its health check, "
                           f"instead of the {pct(finding['metric']['fail_ratio'])} failures "
                           f"after {finding['id'].split(':', 1)[1]} went down")
        if finding["id"].startswith("local_policy_no_pod:") and finding["severity"] != "ok":
            reasons.append("with externalTrafficPolicy Local it only sends to nodes that run a "
                           "pod (healthCheckNodePort)")
        if finding["id"].startswith("node_availability:"):
            reasons.append(f"its health check would take {finding['metric']['node']} out of "
                           "rotation")
    if not reasons:
        return []
    reasons = list(dict.fromkeys(reasons))
    text = ("What a LoadBalancer changes: " + "; ".join(reasons) + ". It does not change "
            "which pod a connection lands on (kube-proxy still picks) or the cross-node hop")
    lb = (s["service"] or {}).get("lb_ingress")
    if lb:
        text += f". This Service already has one ({lb[0]}): point clients at it"
    return [_finding("loadbalancer", "info", text + ".", reasons=reasons, lb_ingress=lb)]


def _count_of(value: float, noun: str) -> str:
    """The figure and its noun, agreeing as the figure reads: "1 pod", "1.5 pods"."""
    shown = number(value)
    return f"{shown} {noun}" if shown == "1" else f"{shown} {noun}s"
