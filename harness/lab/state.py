"""The lab cluster's truth: nodes, pods and Services, and their Kubernetes JSON views.

The API server (`apiserver.py`) reads and writes it; the kube-proxy emulation (`proxy.py`)
subscribes to changes and routes connections from it. Everything runs in one gevent
process, so plain attributes are safe; every mutation goes through a method that bumps the
resource version and notifies subscribers.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from harness.core.faults import check_fault
from harness.errors import HarnessError
from harness.lab.config import NODE_PORTS, SERVICE_TYPES, LabConfig

APP = "helloworld"  # the application the lab runs: its pods, Service and labels
MAX_POD_ADDRESSES = 250  # a pod address's last octet runs 1..250 (127.<block>.1.<n>)
FAULT_LOG_MAX = 10_000  # the fault log keeps the latest this many (a lab left running for days)


class ApiError(Exception):
    """An API-level refusal: becomes a Kubernetes `Status` with this code, reason and details."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LabNode:
    name: str
    internal_ip: str
    external_ip: str | None
    zone: str
    roles: tuple[str, ...] = ("worker",)
    ready: bool = True
    up: bool = True  # False: its NodePort listeners black-hole traffic
    api_only: bool = False  # listed by the API only (scale tests); no listeners
    uid: str = ""
    created: str = field(default_factory=_now)


@dataclass
class LabPod:
    name: str
    node: str
    ip: str
    port: int = 8080
    ready: bool = True
    uid: str = ""
    created: str = field(default_factory=_now)


def addresses(block: int, datapath: str = "userspace") -> dict[str, str]:
    """Address layout of a lab in 127.<block>.x.y (block 0 = the documented defaults); a
    kernel-datapath lab's is in 198.18.0.0/15 (``netns.addresses``)."""
    if datapath == "kernel":
        from harness.lab.netns import addresses as kernel_addresses

        return kernel_addresses(block)
    return {
        "external": f"127.{block}.0.{{}}",  # node i -> 10 + i
        "pod": f"127.{block}.1.{{}}",
        "internal": f"127.{block}.2.{{}}",
        "lb": f"127.{block}.0.100",
    }


class LabState:
    """The lab's nodes, pods and Services; every mutation bumps the version and notifies."""

    def __init__(self, config: LabConfig | None = None):
        """The lab ``config`` describes (validated there). Its block None (auto) is for
        LabCluster to resolve; a state made directly lives at block 0."""
        config = config or LabConfig()
        nodes, seed, app, namespace = config.nodes, config.seed, APP, config.namespace
        block = config.block or 0
        placement = list(config.placement) if config.placement else _even(config.pods, nodes)
        self.rng = random.Random(seed)
        self.block = block
        self.namespace = namespace
        self.app = app
        self.resource_version = 1
        self._subscribers: list[Callable[[], None]] = []
        self.events: list[dict] = []
        # Every fault the lab applied, whoever sent it (the CLI, the control API, a run's
        # --lab-fault): id, time (epoch seconds), kind, name, action and what it did.
        self.fault_log: list[dict] = []
        self._fault_ids = 0
        lay = addresses(block, config.datapath)
        self.lb_address = lay["lb"]
        self.nodes: list[LabNode] = []
        for i in range(1, nodes + 1):
            self.nodes.append(
                LabNode(
                    name=f"node-{i}",
                    internal_ip=lay["internal"].format(10 + i),
                    external_ip=lay["external"].format(10 + i) if config.external_ip else None,
                    zone=f"zone-{'abc'[(i - 1) % 3]}",
                    uid=self._uid(),
                )
            )
        for j in range(config.extra_api_nodes):
            # API-only nodes for scale tests: addresses outside the live ranges, no listeners.
            hi, lo = divmod(j, 250)
            self.nodes.append(
                LabNode(
                    name=f"node-x{j + 1:05d}",
                    internal_ip=f"127.{block}.{10 + hi % 240}.{lo + 1}",
                    external_ip=None,
                    zone=f"zone-{'abc'[j % 3]}",
                    api_only=True,
                    uid=self._uid(),
                )
            )
        pod_hash = hashlib.sha256(f"{app}{seed}{block}".encode()).hexdigest()[:10]
        self.pod_template_hash = pod_hash
        self._pod_address = lay["pod"]
        self.restart_delay_s = config.restart_delay_s
        # How a restarted pod's replacement becomes ready later: ``later(delay, callback)``
        # (the lab process passes gevent's spawn_later). None: ready at once.
        self.later: Callable[[float, Callable[[], None]], object] | None = None
        self.pods: list[LabPod] = []
        self._pod_names: set[str] = set()
        index = 0
        for node, count in zip(self.nodes, placement, strict=False):
            for _ in range(count):
                index += 1
                self.pods.append(
                    LabPod(
                        name=self._new_pod_name(),
                        node=node.name,
                        ip=lay["pod"].format(index),
                        uid=self._uid(),
                    )
                )
        self._last_pod_index = index
        self.services: dict[tuple[str, str], dict] = {}
        self.namespaces = {namespace, "kube-system"}
        spec: dict = {
            "type": config.service_type,
            "selector": {"app": app},
            "ports": [{"protocol": "TCP", "port": 8080, "targetPort": "http-server"}],
            "sessionAffinity": config.affinity,
        }
        if config.service_type != "ClusterIP":
            spec["externalTrafficPolicy"] = config.policy
            if config.node_port:
                spec["ports"][0]["nodePort"] = config.node_port
        self.create_service(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": app, "namespace": namespace, "labels": {"app": app}},
                "spec": spec,
            }
        )

    # -- change notification -------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    def changed(self) -> None:
        self.resource_version += 1
        for callback in list(self._subscribers):
            callback()

    def _uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    # -- queries -----------------------------------------------------------------------

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def live_nodes(self) -> list[LabNode]:
        return [n for n in self.nodes if not n.api_only]

    def service(self, namespace: str, name: str) -> dict | None:
        return self.services.get((namespace, name))

    def pods_for(self, namespace: str, selector: dict[str, str]) -> list[LabPod]:
        if namespace != self.namespace or not selector:
            return []
        labels = self.pod_labels()
        if all(labels.get(k) == v for k, v in selector.items()):
            return list(self.pods)
        return []

    def ready_endpoints(self, svc: dict) -> list[LabPod]:
        """Pods behind a Service that are ready (what kube-proxy routes to)."""
        ns = svc["metadata"]["namespace"]
        return [p for p in self.pods_for(ns, svc["spec"].get("selector") or {}) if p.ready]

    def exposed_ports(self) -> list[tuple[dict, dict]]:
        """(service, port) pairs that have a nodePort: what every node listens on."""
        out = []
        for svc in self.services.values():
            if svc["spec"]["type"] in ("NodePort", "LoadBalancer"):
                out.extend((svc, port) for port in svc["spec"]["ports"] if port.get("nodePort"))
        return out

    def pod_labels(self) -> dict[str, str]:
        return {"app": self.app, "pod-template-hash": self.pod_template_hash}

    # -- mutations ---------------------------------------------------------------------

    def set_node_up(self, name: str, up: bool) -> None:
        self.node(name).up = up
        self.changed()

    def kill_pod(self, name: str) -> LabPod:
        for pod in self.pods:
            if pod.name == name:
                self.pods.remove(pod)
                self.add_event("Pod", name, "Killing", f"Stopping container {self.app}")
                self.changed()
                return pod
        raise KeyError(name)

    def restart_pod(self, name: str) -> tuple[LabPod, LabPod]:
        """Kill a pod and, as its Deployment's ReplicaSet does, create a replacement at once:
        the ReplicaSet's name with a new suffix, on the same node, at a new pod address, not
        ready; it becomes ready (joins the endpoints) ``restart_delay_s`` later. Returns
        (the killed pod, its replacement); KeyError for a name the lab does not have."""
        old = next((pod for pod in self.pods if pod.name == name), None)
        if old is None:
            raise KeyError(name)
        new = LabPod(name=self._new_pod_name(), node=old.node, ip=self._new_pod_ip(),
                     port=old.port, ready=False, uid=self._uid())
        self.pods.remove(old)
        self.add_event("Pod", name, "Killing", f"Stopping container {self.app}")
        self.pods.append(new)
        self.add_event("ReplicaSet", f"{self.app}-{self.pod_template_hash}", "SuccessfulCreate",
                       f"Created pod: {new.name}")
        self.add_event("Pod", new.name, "Scheduled",
                       f"Successfully assigned {self.namespace}/{new.name} to {new.node}")
        self.changed()
        if self.later is None or self.restart_delay_s <= 0:
            self._pod_ready(new.name)
        else:
            self.later(self.restart_delay_s, lambda: self._pod_ready(new.name))
        return old, new

    def _pod_ready(self, name: str) -> None:
        """A replacement passed its readiness probe: it joins the endpoints (unless it was
        killed meanwhile)."""
        for pod in self.pods:
            if pod.name == name and not pod.ready:
                pod.ready = True
                self.add_event("Pod", name, "Started", f"Started container {self.app}")
                self.changed()
                return

    def _new_pod_name(self) -> str:
        """The ReplicaSet's name with a random suffix no pod of the lab ever had."""
        while True:
            suffix = "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            name = f"{self.app}-{self.pod_template_hash}-{suffix}"
            if name not in self._pod_names:
                self._pod_names.add(name)
                return name

    def _new_pod_ip(self) -> str:
        """The next pod address after the last one given, skipping those in use (the last
        octet runs 1-250 and wraps around)."""
        used = {pod.ip for pod in self.pods}
        for step in range(1, MAX_POD_ADDRESSES + 1):
            index = (self._last_pod_index + step - 1) % MAX_POD_ADDRESSES + 1
            ip = self._pod_address.format(index)
            if ip not in used:
                self._last_pod_index = index
                return ip
        raise ApiError(422, "Invalid", "no free pod address left in the lab")

    def apply_fault(self, kind: str, name: str, action: str) -> dict:
        """A fault as the control API receives it (``harness.core.faults``' vocabulary): what
        it did, or ApiError 422 for one outside the vocabulary (or on an API-only node) and
        404 for a name the lab does not have."""
        try:
            fault = check_fault(kind, name, action)
        except HarnessError as err:
            raise ApiError(422, "Invalid", str(err)) from None
        if fault.kind == "node":
            try:
                node = self.node(name)
            except KeyError:
                raise ApiError(404, "NotFound", f'nodes "{name}" not found') from None
            if node.api_only:
                raise ApiError(422, "Invalid", f'node "{name}" is listed by the API only')
            up = fault.undoes  # a node fault's undo brings it back
            at = time.time()
            self.add_event("Node", name, "NodeReady" if up else "NodeNotReady",
                           f"lab fault: node {fault.action}")
            # Reported NotReady at once (a real node controller takes ~40 s to notice).
            node.ready = up
            self.set_node_up(name, up)
            return self.log_fault(at, {**fault.to_dict(), "ready": node.ready})
        try:
            at = time.time()
            if fault.action == "restart":
                pod, new = self.restart_pod(name)
                return self.log_fault(at, {**fault.to_dict(), "node": pod.node,
                                            "replacement": new.name,
                                            "ready_after_s": self.restart_delay_s})
            pod = self.kill_pod(name)
        except KeyError:
            raise ApiError(404, "NotFound", f'pods "{name}" not found') from None
        return self.log_fault(at, {**fault.to_dict(), "node": pod.node})

    def log_fault(self, at: float, result: dict) -> dict:
        """Keep an applied fault in the fault log (``faults_since``); returns ``result``."""
        self._fault_ids += 1
        self.fault_log.append({"id": self._fault_ids, "time": at, **result})
        del self.fault_log[:-FAULT_LOG_MAX]
        return result

    def faults_since(self, since: float | None = None) -> list[dict]:
        """The fault log (oldest first), from epoch ``since`` on when given."""
        return [dict(f) for f in self.fault_log if since is None or f["time"] >= since]

    def add_event(self, kind: str, name: str, reason: str, message: str) -> None:
        self.events.append(
            {"kind": kind, "name": name, "reason": reason, "message": message, "time": _now()}
        )

    def create_service(self, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or self.namespace
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "Service.metadata.name: Required value")
        if (ns, name) in self.services:
            raise ApiError(409, "AlreadyExists", f'services "{name}" already exists')
        svc = copy.deepcopy(obj)
        svc["metadata"] = {**meta, "namespace": ns}
        svc["metadata"].setdefault("uid", self._uid())
        svc["metadata"].setdefault("creationTimestamp", _now())
        self.services[(ns, name)] = self._normalise(svc, previous=None)
        self.namespaces.add(ns)
        self.changed()
        return self.services[(ns, name)]

    def replace_service(self, namespace: str, name: str, obj: dict) -> dict:
        previous = self.services.get((namespace, name))
        if previous is None:
            raise ApiError(404, "NotFound", f'services "{name}" not found')
        svc = copy.deepcopy(obj)
        svc.setdefault("metadata", {})
        svc["metadata"]["name"] = name
        svc["metadata"]["namespace"] = namespace
        for key in ("uid", "creationTimestamp"):
            svc["metadata"][key] = previous["metadata"][key]
        self.services[(namespace, name)] = self._normalise(svc, previous=previous)
        self.changed()
        return self.services[(namespace, name)]

    def delete_service(self, namespace: str, name: str) -> dict:
        """Remove a Service (its nodePorts are freed; the proxy stops listening on them)."""
        svc = self.services.pop((namespace, name), None)
        if svc is None:
            raise ApiError(404, "NotFound", f'services "{name}" not found')
        self.changed()
        return svc

    def _normalise(self, svc: dict, previous: dict | None) -> dict:
        """Apply the API server's defaulting and allocation, as a real one does."""
        spec = svc.setdefault("spec", {})
        stype = spec.setdefault("type", "ClusterIP")
        if stype not in SERVICE_TYPES:
            supported = ", ".join(f'"{t}"' for t in SERVICE_TYPES)
            raise ApiError(
                422, "Invalid", f'Service "{svc["metadata"]["name"]}" is invalid: spec.type: '
                f'Unsupported value: "{stype}": supported values: {supported}'
            )
        ports = spec.get("ports") or []
        if not ports:
            raise ApiError(
                422, "Invalid",
                f'Service "{svc["metadata"]["name"]}" is invalid: spec.ports: Required value',
            )
        prev_spec = (previous or {}).get("spec", {})
        spec["clusterIP"] = prev_spec.get("clusterIP") or self._cluster_ip()
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        prev_node_ports = {p.get("port"): p.get("nodePort") for p in prev_spec.get("ports", [])}
        used = {p.get("nodePort") for s in self.services.values() if s is not previous
                for p in s["spec"].get("ports", [])}
        if len(ports) > 1 and not all(p.get("name") for p in ports):
            raise ApiError(
                422, "Invalid", f'Service "{svc["metadata"]["name"]}" is invalid: '
                "spec.ports[0].name: Required value",
            )
        for port in ports:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if stype == "ClusterIP":
                port.pop("nodePort", None)
                continue
            wanted = port.get("nodePort") or prev_node_ports.get(port.get("port"))
            if wanted:
                if not NODE_PORTS[0] <= int(wanted) <= NODE_PORTS[1]:
                    raise ApiError(
                        422, "Invalid", f"spec.ports.nodePort: Invalid value: {wanted}: "
                        "provided port is not in the valid range. The range of valid ports "
                        "is 30000-32767",
                    )
                if wanted in used:
                    raise ApiError(
                        422, "Invalid",
                        f"spec.ports.nodePort: Invalid value: {wanted}: provided port is "
                        "already allocated",
                    )
                port["nodePort"] = int(wanted)
            else:
                port["nodePort"] = self._allocate_node_port(used)
            used.add(port["nodePort"])
        if stype == "ClusterIP":
            for key in ("externalTrafficPolicy", "healthCheckNodePort"):
                spec.pop(key, None)
        else:
            spec.setdefault("externalTrafficPolicy", "Cluster")
        status: dict = {"loadBalancer": {}}
        if stype == "LoadBalancer":
            status["loadBalancer"] = {"ingress": [{"ip": self.lb_address, "ipMode": "VIP"}]}
            if spec["externalTrafficPolicy"] == "Local":
                spec["healthCheckNodePort"] = (
                    spec.get("healthCheckNodePort")
                    or prev_spec.get("healthCheckNodePort")
                    or self._allocate_node_port(used)
                )
        else:
            spec.pop("healthCheckNodePort", None)
        svc["status"] = status
        svc["metadata"]["resourceVersion"] = str(self.resource_version + 1)
        return svc

    def _cluster_ip(self) -> str:
        return f"10.96.{self.rng.randrange(0, 256)}.{self.rng.randrange(1, 255)}"

    def _allocate_node_port(self, used: set) -> int:
        while True:
            port = self.rng.randint(*NODE_PORTS)
            if port not in used:
                return port


def _even(pods: int, nodes: int) -> list[int]:
    base, extra = divmod(pods, nodes)
    return [base + (1 if i < extra else 0) for i in range(nodes)]

