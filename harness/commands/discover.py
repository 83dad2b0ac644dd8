"""The `discover` and `expose` commands, and the target options every command shares."""

from __future__ import annotations

import argparse
import json
import sys

from harness.core.model import Target
from harness.discovery import DiscoveryOptions, KubeApi
from harness.targets import add_target_arguments, open_target


def add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="table (default) or the versioned JSON saved as target.json")


def run_discover(args) -> int:
    with open_target(args) as (target, _lab):
        pass
    if args.output == "json":
        # One write: json.dump with indent streams ~280 k small pieces for 5 000 nodes.
        sys.stdout.write(json.dumps(target.to_dict(), indent=2) + "\n")
    else:
        print(render_table(target))
    for warning in target.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def render_table(target: Target) -> str:
    svc = target.service
    pods_on: dict[str | None, list[str]] = {}
    for ep in target.endpoints:
        pods_on.setdefault(ep.node, []).append(ep.pod + ("" if ep.ready else " (not ready)"))
    lines = [
        f"Service   {svc.namespace}/{svc.name}  type {svc.type}  port {svc.port.port}"
        f"  nodePort {svc.node_port}",
        f"Policy    externalTrafficPolicy {svc.external_traffic_policy}, "
        f"internalTrafficPolicy {svc.internal_traffic_policy}, sessionAffinity "
        f"{svc.session_affinity}"
        + (f" ({svc.session_affinity_timeout}s)" if svc.session_affinity_timeout else ""),
    ]
    if svc.lb_ingress:
        lines.append(f"LB        ingress {', '.join(svc.lb_ingress)} port {svc.port.port}"
                     + (f", healthCheckNodePort {svc.health_check_node_port}"
                        if svc.health_check_node_port else ""))
    lines.append(f"Source    {target.source}" + (f" ({target.server})" if target.server else ""))
    lines.append("")
    rows = [("NODE", "ADDRESS", "TYPE", "READY", "TARGET", "PODS")]
    for node in target.nodes:
        rows.append((
            node.name, node.address or "-", node.address_type or "-",
            "yes" if node.ready else "NO",
            "yes" if node.targeted else f"no: {node.reason}",
            str(len(pods_on.get(node.name, []))),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    shown = rows if len(rows) <= 51 else rows[:51]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in shown]
    if len(rows) > 51:
        lines.append(f"... and {len(rows) - 51} more nodes (use -o json for all)")
    if target.endpoints:
        lines.append("")
        lines.append("POD" + " " * 40 + "NODE")
        for ep in target.endpoints:
            lines.append(f"{ep.pod:<43}{ep.node or '?'}" + ("" if ep.ready else "  (not ready)"))
    if target.targeted_nodes:
        lines.append("")
        lines.append("Try: curl -X POST " + target.node_url(target.targeted_nodes[0])
                     + "/api/messages -H 'Content-Type: application/json' "
                     + "-d '{\"sender\": \"world1\"}'")
    return "\n".join(lines)


def add_expose_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="Service to patch")
    parser.add_argument("--type", dest="service_type", default="NodePort",
                        choices=("NodePort", "LoadBalancer"), help="new type (default NodePort)")
    parser.add_argument("-n", "--namespace", default=None)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--context", default=None)


def run_expose(args) -> int:
    opts = DiscoveryOptions(service=args.name, namespace=args.namespace,
                            kubeconfig=args.kubeconfig, context=args.context)
    api = KubeApi.connect(opts)
    try:
        namespace = opts.namespace or api.namespace
        path = f"/api/v1/namespaces/{namespace}/services/{args.name}"
        # The same merge patch as the seed's `kubectl patch svc NAME -p '{"spec": ...}'`.
        svc = api.request(
            "PATCH", path, body={"spec": {"type": args.service_type}},
            content_type="application/merge-patch+json",
            what=f"patch services in namespace {namespace}",
        )
    finally:
        api.close()
    ports = ", ".join(f"{p.get('port')}->nodePort {p.get('nodePort')}"
                      for p in svc["spec"].get("ports", []))
    print(f"service {namespace}/{args.name} is now {svc['spec']['type']}: {ports}")
    ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        print("LoadBalancer ingress: " + ", ".join(i.get("ip") or i.get("hostname", "")
                                                  for i in ingress))
    return 0
