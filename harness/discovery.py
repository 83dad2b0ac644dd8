"""Turn a cluster (kubeconfig, in-cluster config or an inventory file) into a `Target`.

The only module that talks to the Kubernetes API. It keeps the `kubernetes` package's
kubeconfig and auth handling but reads raw JSON through its `ApiClient` (no typed models:
paging 5 000 nodes into pydantic models costs ~3x more), and imports the package only when
a cluster is actually queried so Locust workers and `--help` stay light.
Building the Target from API objects (`build_target`) is pure and testable with plain dicts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.errors import DiscoveryError

ADDRESS_TYPES = ("auto", "ExternalIP", "InternalIP")
CONTROL_PLANE_ROLES = ("control-plane", "master")
NODE_IP_TYPES = ("ExternalIP", "InternalIP")
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass
class DiscoveryOptions:
    service: str = "helloworld"
    namespace: str | None = None
    port_name: str | None = None
    port: int | None = None
    address_type: str = "auto"
    include_control_plane: bool = False
    include_not_ready: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    inventory: str | None = None
    page_size: int = 500
    timeout_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


def discover(opts: DiscoveryOptions) -> Target:
    """Discover the target from the inventory file, or from the cluster's API."""
    if opts.address_type not in ADDRESS_TYPES:
        raise DiscoveryError(
            f"--address-type must be one of {', '.join(ADDRESS_TYPES)}, not {opts.address_type!r}"
        )
    if opts.inventory:
        return load_inventory(opts.inventory, opts)
    api = KubeApi.connect(opts)
    try:
        return discover_with(api, opts)
    finally:
        api.close()


def discover_with(api: KubeApi, opts: DiscoveryOptions) -> Target:
    namespace = opts.namespace or api.namespace
    nodes = list(api.list_all("/api/v1/nodes", opts.page_size, what="list nodes"))
    svc_path = f"/api/v1/namespaces/{quote(namespace)}/services/{quote(opts.service)}"
    service = api.get(svc_path, what=f"get services in namespace {namespace}", missing=None)
    if service is None:
        raise DiscoveryError(_service_missing(api, namespace, opts.service))
    slices, pods, warnings = None, None, []
    try:
        slices = list(api.list_all(
            f"/apis/discovery.k8s.io/v1/namespaces/{quote(namespace)}/endpointslices",
            opts.page_size,
            label_selector=f"kubernetes.io/service-name={opts.service}",
            what=f"list endpointslices in namespace {namespace}",
        ))
    except DiscoveryError as err:
        if not (err.forbidden or err.not_found):
            raise
        # Old clusters or tight RBAC: pods by the Service's selector say the same thing.
        selector = (service.get("spec") or {}).get("selector") or {}
        if selector:
            try:
                pods = list(api.list_all(
                    f"/api/v1/namespaces/{quote(namespace)}/pods", opts.page_size,
                    label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())),
                    what=f"list pods in namespace {namespace}",
                ))
                warnings.append("EndpointSlices not readable; endpoints taken from pods")
            except DiscoveryError as err2:
                if not err2.forbidden:
                    raise
                warnings.append(
                    "cannot list endpointslices or pods: pod placement unknown, "
                    "cross-node hops will not be measured"
                )
    return build_target(
        nodes, service, slices=slices, pods=pods, opts=opts, source=api.source,
        context=api.context, server=api.server, warnings=warnings,
    )


# -- pure construction from API objects -------------------------------------------------


def build_target(
    nodes_json: list[dict],
    service_json: dict,
    *,
    slices: list[dict] | None = None,
    pods: list[dict] | None = None,
    opts: DiscoveryOptions | None = None,
    source: str = "kubeconfig",
    context: str | None = None,
    server: str | None = None,
    warnings: list[str] | None = None,
) -> Target:
    opts = opts or DiscoveryOptions()
    warnings = list(warnings or [])
    service = parse_service(service_json, opts)
    nodes = [parse_node(n) for n in nodes_json]
    nodes = _choose_addresses(nodes, opts.address_type, warnings)
    nodes = _mark_targets(nodes, opts)
    if not any(n.targeted for n in nodes):
        listed = ", ".join(f"{n.name} ({n.reason})" for n in nodes[:5]) or "none"
        raise DiscoveryError(
            f"no Ready worker node to send traffic to (nodes: {listed}); "
            "use --include-not-ready or --include-control-plane if that is intended"
        )
    if slices is not None:
        endpoints = endpoints_from_slices(slices)
    elif pods is not None:
        endpoints = endpoints_from_pods(pods)
    else:
        endpoints = []
    zones = {n.name: n.zone for n in nodes}
    endpoints = [
        e if e.zone or not e.node else Endpoint(e.pod, e.node, e.ip, e.ready, zones.get(e.node))
        for e in endpoints
    ]
    if service.external_traffic_policy == "Local":
        local_nodes = {e.node for e in endpoints if e.ready}
        empty = [n.name for n in nodes if n.targeted and n.name not in local_nodes]
        if empty and endpoints:
            warnings.append(
                "externalTrafficPolicy Local: no ready pod on " + _names(empty)
                + " - traffic entering there is dropped"
            )
    return Target(
        nodes=tuple(nodes), service=service, endpoints=tuple(endpoints), source=source,
        context=context, server=server, warnings=tuple(warnings),
    )


def parse_node(obj: dict) -> Node:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    addresses: dict[str, str] = {}
    ips: list[str] = []
    for addr in status.get("addresses") or []:
        # Keep the first of each type (dual-stack nodes list one per family).
        addresses.setdefault(addr.get("type", ""), addr.get("address", ""))
        # ...and every External/InternalIP apart: what a pod's peer address is matched on.
        if addr.get("type") in NODE_IP_TYPES and addr.get("address") not in ips:
            ips.append(addr.get("address"))
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    roles = tuple(sorted(
        key.split("/", 1)[1] for key in labels if key.startswith("node-role.kubernetes.io/")
    ))
    if not roles and labels.get("kubernetes.io/role"):
        roles = (labels["kubernetes.io/role"],)
    zone = labels.get("topology.kubernetes.io/zone") or labels.get(
        "failure-domain.beta.kubernetes.io/zone"
    )
    return Node(
        name=meta.get("name", "?"), addresses=addresses, address=None, address_type=None,
        ready=ready, unschedulable=bool(spec.get("unschedulable")), zone=zone, roles=roles,
        ips=tuple(ip for ip in ips if isinstance(ip, str) and ip), pod_cidrs=_pod_cidrs(spec),
    )


def _pod_cidrs(spec: dict) -> tuple[str, ...]:
    """spec.podCIDRs (both families), or the older single spec.podCIDR; as given (the API
    server validated them; harness.core.nodeaddr skips one it cannot read)."""
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    if not isinstance(cidrs, list):
        return ()
    return tuple(dict.fromkeys(c for c in cidrs if isinstance(c, str) and c))


def _choose_addresses(nodes: list[Node], address_type: str, warnings: list[str]) -> list[Node]:
    out, fell_back, missing = [], [], []
    for node in nodes:
        if address_type == "auto":
            kind = "ExternalIP" if node.addresses.get("ExternalIP") else "InternalIP"
            if kind == "InternalIP":
                fell_back.append(node.name)
        else:
            kind = address_type
        address = node.addresses.get(kind) or None
        if address is None:
            missing.append(node.name)
        out.append(_replace(node, address=address, address_type=kind if address else None))
    if address_type == "ExternalIP" and missing:
        raise DiscoveryError(
            f"{len(missing)} node(s) have no ExternalIP: {_names(missing)}; "
            "use --address-type InternalIP (or auto) if you can reach their internal addresses"
        )
    if address_type == "InternalIP" and missing:
        raise DiscoveryError(f"{len(missing)} node(s) have no InternalIP: {_names(missing)}")
    if address_type == "auto" and fell_back:
        warnings.append(
            f"no ExternalIP on {_names(fell_back)}: using InternalIP "
            "(pass --address-type InternalIP to silence this)"
        )
    return out


def _mark_targets(nodes: list[Node], opts: DiscoveryOptions) -> list[Node]:
    out = []
    for node in nodes:
        reason = ""
        if not opts.include_control_plane and set(node.roles) & set(CONTROL_PLANE_ROLES):
            reason = "control plane"
        elif not node.ready and not opts.include_not_ready:
            reason = "NotReady"
        elif not node.address:
            reason = "no address"
        # Nodes are targeted by default: copy only the few that are not (5 000-node lists).
        out.append(_replace(node, targeted=False, reason=reason) if reason else node)
    return out


def parse_service(obj: dict, opts: DiscoveryOptions) -> ServiceInfo:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    name, namespace = meta.get("name", opts.service), meta.get("namespace", "default")
    stype = spec.get("type", "ClusterIP")
    ports = tuple(
        ServicePort(
            name=p.get("name"), port=int(p.get("port", 0)), target_port=p.get("targetPort"),
            node_port=p.get("nodePort"), protocol=p.get("protocol", "TCP"),
        )
        for p in spec.get("ports") or []
    )
    if stype == "ClusterIP" or stype == "ExternalName":
        raise DiscoveryError(
            f"service {name} in namespace {namespace} is type {stype}: it has no NodePort. "
            f"Fix: kubectl patch svc {name} -n {namespace} -p "
            "'{\"spec\": {\"type\": \"NodePort\"}}' "
            f"(or: nodeport-harness expose {name} -n {namespace} --type NodePort)"
        )
    chosen = _choose_port(name, ports, opts)
    if not chosen.node_port:
        raise DiscoveryError(
            f"service {name} port {chosen.port} has no nodePort "
            "(allocateLoadBalancerNodePorts is false?); use --entry lb or another port"
        )
    ingress = tuple(
        i.get("ip") or i.get("hostname")
        for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if i.get("ip") or i.get("hostname")
    )
    affinity_cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
    affinity = spec.get("sessionAffinity", "None")
    return ServiceInfo(
        name=name, namespace=namespace, type=stype, port=chosen, ports=ports,
        external_traffic_policy=spec.get("externalTrafficPolicy", "Cluster"),
        internal_traffic_policy=spec.get("internalTrafficPolicy", "Cluster"),
        session_affinity=affinity,
        session_affinity_timeout=(
            affinity_cfg.get("timeoutSeconds", 10800) if affinity == "ClientIP" else None
        ),
        health_check_node_port=spec.get("healthCheckNodePort"),
        lb_ingress=ingress, selector=dict(spec.get("selector") or {}),
        cluster_ip=spec.get("clusterIP"),
    )


def _choose_port(service: str, ports: tuple[ServicePort, ...], opts: DiscoveryOptions):
    listing = ", ".join(
        f"{p.name or '(unnamed)'} {p.port}->nodePort {p.node_port}" for p in ports
    ) or "none"
    if opts.port_name is not None:
        match = [p for p in ports if p.name == opts.port_name]
        if not match:
            raise DiscoveryError(
                f"service {service} has no port named {opts.port_name!r}; its ports: {listing}"
            )
        return match[0]
    if opts.port is not None:
        match = [p for p in ports if p.port == opts.port or p.node_port == opts.port]
        if not match:
            raise DiscoveryError(
                f"service {service} has no port {opts.port}; its ports: {listing}"
            )
        return match[0]
    tcp = [p for p in ports if p.protocol == "TCP"]
    if len(tcp) == 1:
        return tcp[0]
    if not tcp:
        raise DiscoveryError(f"service {service} has no TCP port; its ports: {listing}")
    raise DiscoveryError(
        f"service {service} has {len(tcp)} ports ({listing}): "
        "choose one with --port-name NAME or --port N"
    )


def endpoints_from_slices(slices: list[dict]) -> list[Endpoint]:
    seen: dict[str, Endpoint] = {}
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            ref = ep.get("targetRef") or {}
            addresses = ep.get("addresses") or []
            ip = addresses[0] if addresses else ""
            pod = ref.get("name") or ip
            conditions = ep.get("conditions") or {}
            # Per the API, a nil `ready` means ready.
            ready = conditions.get("ready") is not False
            endpoint = Endpoint(pod=pod, node=ep.get("nodeName"), ip=ip, ready=ready,
                                zone=ep.get("zone"))
            # The same pod can appear in two slices while they are being rebalanced.
            if pod not in seen or (ready and not seen[pod].ready):
                seen[pod] = endpoint
    return sorted(seen.values(), key=lambda e: (e.node or "", e.pod))


def endpoints_from_pods(pods: list[dict]) -> list[Endpoint]:
    out = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        status = pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") not in (None, "Running"):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        out.append(Endpoint(pod=meta.get("name", "?"), node=spec.get("nodeName"),
                            ip=status.get("podIP") or "", ready=ready))
    return sorted(out, key=lambda e: (e.node or "", e.pod))


# -- inventory files ---------------------------------------------------------------------


def load_inventory(path: str, opts: DiscoveryOptions | None = None) -> Target:
    """Read a YAML/JSON inventory for clusters the user cannot query.

    ```yaml
    service: {name: helloworld, namespace: default, nodePort: 30080,
              port: 8080, type: NodePort, externalTrafficPolicy: Cluster,
              loadBalancer: 203.0.113.7}         # all but nodePort optional
    nodes:                                      # required, one or more
      - {name: node-1, address: 203.0.113.11}   # zone optional; and optional, to see
        # which node a LoadBalancer passed a request through (the pod's SNAT source):
        # internalIPs: [10.0.0.11], podCIDRs: [10.244.1.0/24] (or podCIDR: 10.244.1.0/24)
    endpoints:                                  # optional: which pod runs where
      - {pod: helloworld-abc-1, node: node-1}   # ip optional
    ```
    """
    opts = opts or DiscoveryOptions()
    where = f"inventory {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise DiscoveryError(f"cannot read {where}: {err.strerror or err}") from None
    try:
        import yaml  # JSON is YAML too

        data = yaml.safe_load(text)
    except Exception as err:  # yaml.YAMLError and friends
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise DiscoveryError(f"{where} is not valid YAML/JSON{at}: fix the syntax") from None
    if not isinstance(data, dict):
        raise DiscoveryError(f"{where}: expected a mapping with 'service' and 'nodes'")
    unknown = set(data) - {"service", "nodes", "endpoints"}
    if unknown:
        raise DiscoveryError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            "allowed: service, nodes, endpoints"
        )
    svc = data.get("service")
    if not isinstance(svc, dict):
        raise DiscoveryError(f"{where}: 'service' must be a mapping with at least nodePort")
    node_port = _int_field(svc, "nodePort", where + ": service", required=True)
    if not 1 <= node_port <= 65535:
        raise DiscoveryError(f"{where}: service.nodePort {node_port} is not a port (1-65535)")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise DiscoveryError(f"{where}: 'nodes' must be a non-empty list of {{name, address}}")
    nodes, names = [], set()
    for i, item in enumerate(raw_nodes):
        at = f"{where}: nodes[{i}]"
        if not isinstance(item, dict):
            raise DiscoveryError(f"{at} must be a mapping with name and address")
        name, address = item.get("name"), item.get("address")
        if not isinstance(name, str) or not name:
            raise DiscoveryError(f"{at}.name is missing")
        if name in names:
            raise DiscoveryError(f"{at}.name {name!r} is listed twice")
        if not isinstance(address, str) or not _valid_host(address):
            raise DiscoveryError(
                f"{at}.address must be an IP address or host name, got {address!r}"
            )
        zone = item.get("zone")
        if zone is not None and not isinstance(zone, str | int):
            raise DiscoveryError(f"{at}.zone must be a name, got {_kind(zone)}")
        names.add(name)
        internal = _inventory_list(item, "internalIPs", None, at, _valid_ip, "IP addresses")
        cidrs = _inventory_list(item, "podCIDRs", "podCIDR", at, _valid_cidr, "CIDRs")
        nodes.append(Node(name=name, addresses={"inventory": address}, address=address,
                          address_type="inventory", zone=None if zone is None else str(zone),
                          ips=tuple(dict.fromkeys(
                              ([address] if _valid_ip(address) else []) + internal)),
                          pod_cidrs=tuple(cidrs)))
    endpoints = []
    raw_endpoints = data.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        raise DiscoveryError(f"{where}: 'endpoints' must be a list of {{pod, node}}, got "
                             f"{_kind(raw_endpoints)}")
    for i, item in enumerate(raw_endpoints):
        at = f"{where}: endpoints[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pod"), str):
            raise DiscoveryError(f"{at} must be a mapping with a pod name")
        node, ip = item.get("node"), item.get("ip")
        if node is not None and (not isinstance(node, str) or node not in names):
            raise DiscoveryError(f"{at}.node {_kind(node)} is not one of the listed nodes")
        if ip is not None and not (isinstance(ip, str) and _valid_ip(ip)):
            raise DiscoveryError(f"{at}.ip must be an IP address, got {_kind(ip)}")
        endpoints.append(Endpoint(pod=item["pod"], node=node, ip=(ip or "").strip()))
    lb = svc.get("loadBalancer")
    if lb is not None and (not isinstance(lb, str) or not _valid_host(lb)):
        raise DiscoveryError(f"{where}: service.loadBalancer must be an address, got {lb!r}")
    port = _int_field(svc, "port", where + ": service", required=False) or node_port
    if not 1 <= port <= 65535:
        raise DiscoveryError(f"{where}: service.port {port} is not a port (1-65535)")
    for key in ("name", "namespace", "type", "portName", "sessionAffinity"):
        value = svc.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise DiscoveryError(f"{where}: service.{key} must be a name, got {_kind(value)}")
    policy = svc.get("externalTrafficPolicy", "Cluster")
    if policy not in ("Cluster", "Local"):
        raise DiscoveryError(f"{where}: service.externalTrafficPolicy must be Cluster or Local")
    sport = ServicePort(name=svc.get("portName"), port=port, target_port=None, node_port=node_port)
    service = ServiceInfo(
        name=str(svc.get("name", opts.service)), namespace=str(svc.get("namespace", "default")),
        type=str(svc.get("type", "LoadBalancer" if lb else "NodePort")), port=sport,
        ports=(sport,), external_traffic_policy=policy,
        session_affinity=str(svc.get("sessionAffinity", "None")),
        lb_ingress=(lb,) if lb else (),
    )
    return Target(nodes=tuple(nodes), service=service, endpoints=tuple(endpoints),
                  source="inventory", server=None)


def _kind(value: Any) -> str:
    """What a wrong value is, briefly (a 10 000-item list is not repeated back)."""
    if isinstance(value, list | dict):
        return f"a {'list' if isinstance(value, list) else 'mapping'} of {len(value)}"
    return repr(value)[:80]


def _inventory_list(item: dict, key: str, single: str | None, where: str, valid,
                    what: str) -> list[str]:
    """An optional list of strings (or, under ``single``, one string), each checked."""
    value = item.get(key)
    if value is None and single is not None and item.get(single) is not None:
        key, value = single, [item.get(single)]
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and valid(v) for v in value):
        raise DiscoveryError(f"{where}.{key} must be a list of {what}, got {value!r}")
    return [v.strip() for v in value]


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip())
        return True
    except ValueError:
        return False


def _valid_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
        return True
    except ValueError:
        return False


def _int_field(obj: dict, key: str, where: str, required: bool) -> int:
    value = obj.get(key)
    if value is None:
        if required:
            raise DiscoveryError(f"{where}.{key} is missing")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise DiscoveryError(f"{where}.{key} must be a whole number, got {value!r}")
    return value


def _valid_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        labels = value.rstrip(".").split(".")
        return 0 < len(value) <= 253 and all(
            0 < len(lbl) <= 63 and lbl.replace("-", "").isalnum() for lbl in labels
        )


# -- the API edge --------------------------------------------------------------------------


class KubeApi:
    """Raw-JSON reads through the official client's ApiClient (its kubeconfig and auth)."""

    def __init__(self, api_client, *, namespace: str, source: str, context: str | None,
                 server: str, timeout_s: float):
        self.client = api_client
        self.namespace = namespace
        self.source = source
        self.context = context
        self.server = server
        self.timeout_s = timeout_s

    @classmethod
    def connect(cls, opts: DiscoveryOptions) -> KubeApi:
        try:
            from kubernetes.client import Configuration
            from kubernetes.client.api_client import ApiClient
            from kubernetes.config import incluster_config, kube_config
            from kubernetes.config.config_exception import ConfigException
        except ImportError as err:  # pragma: no cover - dependency missing
            raise DiscoveryError(f"the kubernetes package is not installed: {err}") from None

        configuration = type.__call__(Configuration)
        configuration.retries = 0  # one clear error beats three silent retries
        kubeconfig = opts.kubeconfig or os.environ.get("KUBECONFIG")
        default_path = Path(os.path.expanduser("~/.kube/config"))
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").exists()
        if kubeconfig or default_path.exists() or not in_cluster:
            if not kubeconfig and not default_path.exists():
                raise DiscoveryError(
                    "no cluster configured: no kubeconfig (--kubeconfig, $KUBECONFIG or "
                    "~/.kube/config) and not running in a pod; pass --kubeconfig FILE or "
                    "--inventory FILE, or --lab to use the embedded lab cluster"
                )
            config_file = kubeconfig or str(default_path)
            for one in config_file.split(os.pathsep):
                if one and not Path(one).exists():
                    raise DiscoveryError(f"kubeconfig {one} does not exist; check --kubeconfig")
            try:
                contexts, current = kube_config.list_kube_config_contexts(config_file)
            except Exception as err:  # ConfigException, yaml errors
                raise DiscoveryError(
                    f"cannot read kubeconfig {config_file}: {_first_line(err)}; "
                    "check the file (kubectl config view)"
                ) from None
            names = [c.get("name") for c in contexts or []]
            context = opts.context or (current or {}).get("name")
            chosen = next((c for c in contexts or [] if c.get("name") == context), None)
            if chosen is None:
                raise DiscoveryError(
                    f"context {context!r} not in kubeconfig {config_file}; "
                    f"contexts: {', '.join(map(str, names)) or 'none'}"
                )
            _KUBE_CONFIG_LOG.install()
            _KUBE_CONFIG_LOG.exec_failure = None
            try:
                kube_config.load_kube_config(
                    config_file=config_file, context=context,
                    client_configuration=configuration, persist_config=False,
                )
            except (ConfigException, Exception) as err:
                raise DiscoveryError(
                    f"kubeconfig {config_file} context {context}: {_config_error(err)}"
                ) from None
            if _KUBE_CONFIG_LOG.exec_failure:
                raise DiscoveryError(f"kubeconfig {config_file} context {context}: "
                                     f"{_KUBE_CONFIG_LOG.exec_failure}")
            if not configuration.host:
                raise DiscoveryError(
                    f"kubeconfig {config_file} context {context}: its cluster has no server "
                    "URL; set it (kubectl config set-cluster NAME --server=https://HOST:6443)"
                )
            namespace = (chosen.get("context") or {}).get("namespace") or "default"
            source = "kubeconfig"
        else:
            try:
                incluster_config.load_incluster_config(client_configuration=configuration)
            except Exception as err:
                raise DiscoveryError(f"in-cluster config failed: {_first_line(err)}") from None
            context = None
            ns_file = SA_DIR / "namespace"
            namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
            source = "in-cluster"
        return cls(
            ApiClient(configuration=configuration),
            namespace=namespace, source=source, context=context,
            server=safe_url(configuration.host), timeout_s=opts.timeout_s,
        )

    def close(self) -> None:
        # Closing a pool must never mask the real error.
        with contextlib.suppress(Exception):
            self.client.close()

    def request(self, method: str, path: str, query: list | None = None,
                body: Any = None, content_type: str | None = None, what: str = "",
                missing: Any = ...) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            params = self.client.param_serialize(
                method, path, query_params=query or [], header_params=headers,
                body=body, auth_settings=["BearerToken"],
            )
            response = self.client.call_api(*params, _request_timeout=self.timeout_s)
            data = response.read()
        except Exception as err:
            raise DiscoveryError(self._unreachable(err)) from None
        status = response.status
        if 200 <= status < 300:
            try:
                return json.loads(data)
            except ValueError:
                raise DiscoveryError(
                    f"the API at {self.server} answered {path} with something that is not "
                    "JSON; is --kubeconfig pointing at a Kubernetes API server?"
                ) from None
        if status == 404 and missing is not ...:
            return missing
        raise self._http_error(status, data, what or f"{method} {path}")

    def get(self, path: str, what: str = "", missing: Any = ..., **query) -> Any:
        return self.request("GET", path, list(query.items()), what=what, missing=missing)

    def list_all(self, path: str, page_size: int, label_selector: str | None = None,
                 what: str = "") -> Iterator[dict]:
        """Every item of a list, following `continue` tokens page by page."""
        token = None
        while True:
            query: list[tuple[str, Any]] = [("limit", page_size)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = self.request("GET", path, query, what=what)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _unreachable(self, err: Exception) -> str:
        text = _first_line(err)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return (f"TLS verification failed for the API at {self.server}: the kubeconfig's "
                    "certificate authority does not match the server")
        if any(mark in text for mark in _CLIENT_CERT_ERRORS):
            return ("the kubeconfig's client certificate and key cannot be used (they do not "
                    "match each other, or one is not valid PEM): check client-certificate(-data)"
                    " and client-key(-data)")
        if "SSLError" in text:
            reason = re.search(r"\[([A-Z0-9]+: [A-Z0-9_]+)\]", text)
            return (f"the TLS handshake with the API at {self.server} failed"
                    f"{f' ({reason.group(1)})' if reason else ''}; is the server URL's port the "
                    "API server's HTTPS port?")
        reason = "connection refused" if "refused" in text.lower() else (
            "timed out" if "timed out" in text.lower() else "unreachable")
        return (f"cannot reach the Kubernetes API at {self.server} ({reason}); is the cluster "
                "running and the kubeconfig current? (or use --inventory FILE / --lab)")

    def _http_error(self, status: int, data: bytes, what: str) -> DiscoveryError:
        message = ""
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(data).get("message", "")
        if status == 401:
            err = DiscoveryError(
                f"the API at {self.server} rejected the credentials (401 Unauthorized): "
                "log in again or refresh the token in your kubeconfig"
            )
        elif status == 403:
            scope = "at cluster scope" if "nodes" in what else ""
            hint = ("needs get/list on nodes (ClusterRole); or use --inventory FILE"
                    if "nodes" in what else "needs that verb on the resource (Role)")
            err = DiscoveryError(f"forbidden: cannot {what} {scope}: {hint}".replace("  ", " "))
            err.forbidden = True
        elif status == 404:
            err = DiscoveryError(f"not found: cannot {what}: {message or 'no such resource'}")
            err.not_found = True
        else:
            err = DiscoveryError(
                f"the API at {self.server} answered {status} to {what}: "
                f"{_first_line(message) or 'no message'}"
            )
        return err


def _service_missing(api: KubeApi, namespace: str, service: str) -> str:
    try:
        listing = api.get(f"/api/v1/namespaces/{quote(namespace)}/services", what="list services")
        names = sorted(i["metadata"]["name"] for i in listing.get("items") or [])
    except DiscoveryError:
        names = None
    if names:
        return (f"service {service!r} not found in namespace {namespace}; services there: "
                f"{_names(names, 10)} (use --service NAME or -n NAMESPACE)")
    ns = api.get(f"/api/v1/namespaces/{quote(namespace)}", what="get namespace", missing=None) \
        if names is not None else {}
    if ns is None:
        return f"namespace {namespace!r} not found; pass -n NAMESPACE"
    return f"service {service!r} not found in namespace {namespace}; check --service and -n"


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _first_line(err: Any) -> str:
    text = scrub_urls(str(err).strip())
    return text.splitlines()[0][:300] if text else type(err).__name__


# -- keeping credentials out of messages ---------------------------------------------------

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
# OpenSSL's words for a client certificate or key it cannot load
_CLIENT_CERT_ERRORS = ("KEY_VALUES_MISMATCH", "PEM lib", "PEM_R_", "NO_START_LINE",
                       "X509: ", "EVP_LIB", "BAD_DECRYPT")


def safe_url(url: str | None) -> str:
    """A URL without its user:password part (https://user:pw@host -> https://host)."""
    return scrub_urls(url or "")


def scrub_urls(text: str) -> str:
    return _URL_USERINFO.sub(r"\1", text)


def _config_error(err: Exception) -> str:
    """A kubeconfig loading error in one line, without what an exec plugin printed."""
    text = _first_line(err)
    return _exec_failure(text) if text.startswith("exec:") else text


def _exec_failure(message: str) -> str:
    # The plugin's stderr follows "process returned N." and may hold a token: never shown.
    code = re.match(r"exec: process returned (-?\d+)", message)
    what = f"exited with {code.group(1)}" if code else "gave no usable credential"
    return (f"the kubeconfig's exec credential plugin {what}; run its command yourself "
            "to see why (its output is not shown here: it can hold a token)")


class _KubeConfigLog(logging.Filter):
    """The kubernetes package logs an exec plugin's failure, stderr and all, on the root
    logger (``logging.error(str(e))``), and carries on without credentials: this filter drops
    its config-loading records and keeps the failure (without the stderr) to raise."""

    def __init__(self) -> None:
        super().__init__()
        self.exec_failure: str | None = None
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            logging.getLogger().addFilter(self)
            self.installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        if "/kubernetes/config/" not in path:
            return True
        message = str(record.msg)
        if message.startswith("exec:") and self.exec_failure is None:
            self.exec_failure = _exec_failure(message)
        return False


_KUBE_CONFIG_LOG = _KubeConfigLog()


def _replace(node: Node, **changes) -> Node:
    from dataclasses import replace

    return replace(node, **changes)


# -- watching the cluster during a run -----------------------------------------------------


class ClusterWatch:
    """The Nodes and the Service's EndpointSlices, read during a run: one list each per
    ``poll`` (raw JSON, the slices label-selected), as a ``harness.core.changes.Snapshot``.

    A part that could not be read is None in that snapshot and its reason is in the errors
    ``poll`` returns; a part the credentials may not read (403) or the API does not serve
    (404) is not asked for again, and when the API does not answer for the nodes the
    slices are not asked for in that poll. ``poll`` never raises a DiscoveryError.
    """

    PARTS = ("nodes", "endpoints")

    def __init__(self, api: KubeApi, namespace: str, service: str, page_size: int = 500):
        self.api = api
        self.namespace = namespace
        self.service = service
        self.page_size = page_size
        self.skipped: dict[str, str] = {}  # part -> why it is not asked for any more

    @classmethod
    def connect(cls, opts: DiscoveryOptions, namespace: str, service: str,
                timeout_s: float = 3.0) -> ClusterWatch:
        """Through the same kubeconfig / in-cluster credentials as discovery; a poll's
        request gives up after ``timeout_s`` (the next poll tries again)."""
        from dataclasses import replace

        api = KubeApi.connect(replace(opts, timeout_s=timeout_s))
        return cls(api, namespace, service, opts.page_size)

    def poll(self) -> tuple[Any, dict[str, str]]:
        """(Snapshot, {part: why it was not read}) for this moment."""
        from harness.core.changes import snapshot

        errors: dict[str, str] = {}
        nodes = self._read("nodes", "list nodes", errors, lambda what: [
            parse_node(n) for n in self.api.list_all("/api/v1/nodes", self.page_size,
                                                     what=what)])
        ns = self.namespace
        if "nodes" in errors and "nodes" not in self.skipped:
            # The API did not answer (or failed): asking again now would only wait as long.
            errors["endpoints"] = errors["nodes"]
            return snapshot(nodes, None), errors
        endpoints = self._read(
            "endpoints", f"list endpointslices in namespace {ns}", errors,
            lambda what: endpoints_from_slices(list(self.api.list_all(
                f"/apis/discovery.k8s.io/v1/namespaces/{quote(ns)}/endpointslices",
                self.page_size, label_selector=f"kubernetes.io/service-name={self.service}",
                what=what))))
        return snapshot(nodes, endpoints), errors

    def _read(self, part: str, what: str, errors: dict[str, str], read: Any) -> Any:
        if part in self.skipped:
            return None
        try:
            return read(what)
        except DiscoveryError as err:
            # Discovery's texts go on with what to do instead (--inventory, --lab): here a
            # part of the watch is only missing, so its first clause says enough.
            why = f"forbidden to {what} (403)" if err.forbidden else str(err).split("; ")[0]
            errors[part] = why
            if err.forbidden or err.not_found:
                self.skipped[part] = why
            return None

    def close(self) -> None:
        self.api.close()
