"""Plain dataclasses shared by every module: what was discovered about the cluster.

No Locust, no kubernetes client here: `discovery` builds a `Target`, everything downstream
reads it. `Target.to_dict()` is the documented `target.json` schema (``TARGET_SCHEMA``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TARGET_SCHEMA = "nodeport-harness/target/v1"


@dataclass(frozen=True)
class Node:
    name: str
    addresses: dict[str, str]  # address type (ExternalIP, InternalIP, Hostname) -> address
    address: str | None  # the address traffic is sent to (None: no usable address)
    address_type: str | None  # ExternalIP | InternalIP | inventory
    ready: bool = True
    unschedulable: bool = False
    zone: str | None = None
    roles: tuple[str, ...] = ()
    targeted: bool = True  # False: listed but not sent traffic (NotReady, control plane...)
    reason: str = ""  # why not targeted
    # Every ExternalIP and InternalIP the node lists (both families: ``addresses`` keeps the
    # first of each type) and its spec.podCIDRs: what tells a pod's peer is this node
    # (harness.core.nodeaddr; the SNAT source behind a LoadBalancer).
    ips: tuple[str, ...] = ()
    pod_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    target_port: int | str | None
    node_port: int | None
    protocol: str = "TCP"


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    namespace: str
    type: str  # ClusterIP | NodePort | LoadBalancer
    port: ServicePort  # the chosen port
    ports: tuple[ServicePort, ...] = ()
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    health_check_node_port: int | None = None
    lb_ingress: tuple[str, ...] = ()  # LoadBalancer ingress ip or hostname
    selector: dict[str, str] = field(default_factory=dict)
    cluster_ip: str | None = None

    @property
    def node_port(self) -> int | None:
        return self.port.node_port


@dataclass(frozen=True)
class Endpoint:
    pod: str
    node: str | None
    ip: str
    ready: bool = True
    zone: str | None = None


@dataclass(frozen=True)
class Target:
    nodes: tuple[Node, ...]
    service: ServiceInfo
    endpoints: tuple[Endpoint, ...] = ()
    source: str = "kubeconfig"  # kubeconfig | in-cluster | lab | inventory
    context: str | None = None
    server: str | None = None  # API server URL (never credentials)
    warnings: tuple[str, ...] = ()

    @property
    def targeted_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.targeted and n.address)

    def node_url(self, node: Node, scheme: str = "http") -> str:
        return f"{scheme}://{_host(node.address or '')}:{self.service.node_port}"

    def lb_url(self, scheme: str = "http") -> str | None:
        if not self.service.lb_ingress:
            return None
        return f"{scheme}://{_host(self.service.lb_ingress[0])}:{self.service.port.port}"

    def pod_nodes(self) -> dict[str, str | None]:
        """Pod name -> the node it runs on (for cross-node accounting)."""
        return {e.pod: e.node for e in self.endpoints}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = TARGET_SCHEMA
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        svc = dict(data["service"])
        svc["port"] = ServicePort(**svc["port"])
        svc["ports"] = tuple(ServicePort(**p) for p in svc.get("ports", ()))
        svc["lb_ingress"] = tuple(svc.get("lb_ingress", ()))
        nodes = tuple(
            Node(**{**n, "roles": tuple(n.get("roles", ())), "ips": tuple(n.get("ips", ())),
                    "pod_cidrs": tuple(n.get("pod_cidrs", ()))})
            for n in data.get("nodes", ())
        )
        endpoints = tuple(Endpoint(**e) for e in data.get("endpoints", ()))
        return cls(
            nodes=nodes,
            service=ServiceInfo(**svc),
            endpoints=endpoints,
            source=data.get("source", "kubeconfig"),
            context=data.get("context"),
            server=data.get("server"),
            warnings=tuple(data.get("warnings", ())),
        )


def _host(address: str) -> str:
    # An IPv6 zone (fe80::1%eth0) is written %25eth0 inside a URL (RFC 6874).
    return f"[{address.replace('%', '%25')}]" if ":" in address else address
