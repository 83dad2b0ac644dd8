"""The `discover` and `expose` commands, and the target options every command shares."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from harness.core.model import Target
from harness.discovery import ADDRESS_TYPES, DiscoveryOptions, KubeApi, discover
from harness.errors import DiscoveryError


def add_target_arguments(parser, *, lab_default: bool = False, add=None) -> None:
    """Target options; `add` lets Locust's parser attach its web-UI and env-var settings."""
    parser = _Adder(add) if add else parser
    parser.add_argument("--lab", action="store_true", default=lab_default,
                        help="start the embedded lab cluster for this command and target it")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=None,
                        help="namespace of the Service (default: the context's, else default)")
    parser.add_argument("--service", default="helloworld",
                        help="Service name (default: %(default)s)")
    ports = parser
    ports.add_argument("--port-name", default=None, help="Service port name (multi-port Services)")
    ports.add_argument("--port", type=int, default=None,
                       help="Service port number (multi-port Services)")
    parser.add_argument("--address-type", default="auto", choices=ADDRESS_TYPES,
                        help="node address to target: auto (ExternalIP, else InternalIP), "
                             "ExternalIP or InternalIP (default: %(default)s)")
    parser.add_argument("--inventory", default=None,
                        help="YAML/JSON inventory file instead of querying a cluster")
    parser.add_argument("--include-control-plane", action="store_true", default=False,
                        help="also target control-plane nodes")
    parser.add_argument("--include-not-ready", action="store_true", default=False,
                        help="also target NotReady nodes")


class _Adder:
    def __init__(self, add):
        self.add_argument = add


def options_from_args(args) -> DiscoveryOptions:
    if args.port_name is not None and args.port is not None:
        raise DiscoveryError("give either --port-name or --port, not both")
    return DiscoveryOptions(
        service=args.service, namespace=args.namespace, port_name=args.port_name,
        port=args.port, address_type=args.address_type,
        include_control_plane=args.include_control_plane,
        include_not_ready=args.include_not_ready, kubeconfig=args.kubeconfig,
        context=args.context, inventory=args.inventory,
    )


@contextlib.contextmanager
def target_source(args, **lab_options) -> Iterator[DiscoveryOptions]:
    """Discovery options for the command, with a lab running around it when --lab is given."""
    opts = options_from_args(args)
    if not getattr(args, "lab", False):
        yield opts
        return
    if opts.kubeconfig or opts.inventory or opts.context:
        raise DiscoveryError("--lab cannot be combined with --kubeconfig, --context or --inventory")
    from harness.lab.cluster import LabCluster

    with LabCluster(**lab_options) as lab:
        opts.kubeconfig = str(lab.kubeconfig)
        opts.extra["lab"] = lab  # faults and ground truth for the command that asked
        yield opts


def add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="table (default) or the versioned JSON saved as target.json")


def run_discover(args) -> int:
    with target_source(args) as opts:
        target = discover(opts)
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


def save_target(target: Target, run_dir: Path) -> Path:
    from harness.report.files import write_json_atomic

    return write_json_atomic(run_dir / "target.json", target.to_dict())
