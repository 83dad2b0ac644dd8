"""Kubernetes JSON as the lab's API server returns it: nodes, pods, slices, events, Status."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from harness.lab.state import ApiError, LabNode, LabPod, LabState

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-lab"}
KUBELET_VERSION = "v1.32.0"
APP_IMAGE = "nodeport-harness/helloworld:0.1.0"
CONTAINER_PORT_NAME = "http-server"
MAX_BODY = 3 * 1024 * 1024  # what a real API server accepts for one request body
RESTRICTED_SA = "restricted"


# ---------------------------------------------------------------------------------------
# Small helpers: time, JSON, Status
# ---------------------------------------------------------------------------------------


def now_str() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's AGE format (k8s.io/apimachinery duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None) -> str:
    when = _parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((datetime.now(timezone.utc) - when).total_seconds())


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    details = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def stable_uid(*parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# ---------------------------------------------------------------------------------------
# Object rendering (shaped like a real API server's JSON)
# ---------------------------------------------------------------------------------------


def node_labels(node: LabNode) -> dict[str, str]:
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "lab.loopback",
        "topology.kubernetes.io/region": "lab",
        "topology.kubernetes.io/zone": node.zone,
    }
    for role in node.roles:
        labels[f"node-role.kubernetes.io/{role}"] = ""
    return labels


def render_node(node: LabNode, index: int, resource_version: str) -> dict:
    """A Node list item (no kind/apiVersion: real list items carry none)."""
    ready = node.ready
    unschedulable = bool(getattr(node, "unschedulable", False))
    since = node.created
    conditions = [
        {"type": t, "status": "False", "lastHeartbeatTime": since,
         "lastTransitionTime": since, "reason": r, "message": m}
        for t, r, m in (
            ("MemoryPressure", "KubeletHasSufficientMemory",
             "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        )
    ]
    if ready:
        conditions.append({"type": "Ready", "status": "True", "lastHeartbeatTime": since,
                           "lastTransitionTime": since, "reason": "KubeletReady",
                           "message": "kubelet is posting ready status"})
    else:
        conditions.append({"type": "Ready", "status": "Unknown", "lastHeartbeatTime": since,
                           "lastTransitionTime": now_str(), "reason": "NodeStatusUnknown",
                           "message": "Kubelet stopped posting node status."})
    addresses = [{"type": "InternalIP", "address": node.internal_ip}]
    if node.external_ip:
        addresses.append({"type": "ExternalIP", "address": node.external_ip})
    addresses.append({"type": "Hostname", "address": node.name})
    spec: dict = {
        "podCIDR": f"10.{64 + (index >> 8)}.{index & 255}.0/24",
        "podCIDRs": [f"10.{64 + (index >> 8)}.{index & 255}.0/24"],
        "providerID": f"lab://{node.name}",
    }
    taints = []
    if "control-plane" in node.roles:
        taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    if unschedulable:
        spec["unschedulable"] = True
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                       "timeAdded": since})
    if not ready:
        taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule",
                       "timeAdded": since})
    if taints:
        spec["taints"] = taints
    resources = {"cpu": "4", "ephemeral-storage": "61202244Ki", "hugepages-2Mi": "0",
                 "memory": "8148508Ki", "pods": "110"}
    machine = node.uid.replace("-", "") or hashlib.md5(node.name.encode()).hexdigest()  # noqa: S324
    return {
        "metadata": {
            "name": node.name,
            "uid": node.uid or stable_uid("node", node.name),
            "resourceVersion": resource_version,
            "creationTimestamp": node.created,
            "labels": node_labels(node),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "capacity": resources,
            "allocatable": {**resources, "cpu": "3800m", "memory": "7841308Ki"},
            "conditions": conditions,
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine,
                "systemUUID": node.uid or machine,
                "bootID": stable_uid("boot", node.name),
                "kernelVersion": "6.8.0-lab",
                "osImage": "Lab Linux 1.0 (loopback)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def replicaset_name(state: LabState) -> str:
    return f"{state.app}-{state.pod_template_hash}"


def render_pod(state: LabState, pod: LabPod, nodes: dict[str, LabNode]) -> dict:
    node = nodes.get(pod.node)
    host_ip = node.internal_ip if node else None
    ready = "True" if pod.ready else "False"
    created = pod.created
    probe_common = {"timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
    container = {
        "name": state.app,
        "image": APP_IMAGE,
        "ports": [{"name": CONTAINER_PORT_NAME, "containerPort": pod.port, "protocol": "TCP"}],
        "resources": {},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": CONTAINER_PORT_NAME,
                                       "scheme": "HTTP"}, "periodSeconds": 5, **probe_common},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": CONTAINER_PORT_NAME,
                                      "scheme": "HTTP"}, "initialDelaySeconds": 3,
                          "periodSeconds": 10, **probe_common},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    container_status = {
        "name": state.app,
        "state": {"running": {"startedAt": created}},
        "lastState": {},
        "ready": pod.ready,
        "restartCount": 0,
        "image": f"docker.io/{APP_IMAGE}",
        "imageID": "docker.io/" + APP_IMAGE.split(":")[0] + "@sha256:"
        + hashlib.sha256(APP_IMAGE.encode()).hexdigest(),
        "containerID": "containerd://" + hashlib.sha256(pod.name.encode()).hexdigest(),
        "started": True,
    }

    def cond(kind: str, value: str = "True") -> dict:
        return {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": created}

    status_block: dict = {
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready", ready),
                       cond("ContainersReady", ready), cond("PodScheduled")],
        "podIP": pod.ip,
        "podIPs": [{"ip": pod.ip}],
        "startTime": created,
        "containerStatuses": [container_status],
        "qosClass": "BestEffort",
    }
    if host_ip:
        status_block["hostIP"] = host_ip
        status_block["hostIPs"] = [{"ip": host_ip}]
    return {
        "metadata": {
            "name": pod.name,
            "generateName": f"{replicaset_name(state)}-",
            "namespace": state.namespace,
            "uid": pod.uid or stable_uid("pod", pod.name),
            "resourceVersion": str(state.resource_version),
            "creationTimestamp": created,
            "labels": state.pod_labels(),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset_name(state),
                "uid": stable_uid("replicaset", state.namespace, replicaset_name(state)),
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "containers": [container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": pod.node,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": status_block,
    }


def _resolve_target_port(port: dict, pod: LabPod) -> int | None:
    """The pod port a Service port reaches (named ports resolve by the container port name)."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    return pod.port if target == CONTAINER_PORT_NAME else None


def _svc_pods(state: LabState, svc: dict) -> list[LabPod]:
    return state.pods_for(svc["metadata"]["namespace"], svc["spec"].get("selector") or {})


def render_endpointslice(state: LabState, svc: dict, nodes: dict[str, LabNode]) -> dict:
    meta = svc["metadata"]
    ns, name = meta["namespace"], meta["name"]
    pods = _svc_pods(state, svc)
    endpoints, ports = [], []
    for sp in svc["spec"].get("ports") or []:
        number = next((n for p in pods if (n := _resolve_target_port(sp, p))), None)
        if number is None:
            continue  # no pod has this (named) port: the controller publishes no such port
        ports.append({"name": sp.get("name", ""), "protocol": sp.get("protocol", "TCP"),
                      "port": number})
    for pod in pods:
        node = nodes.get(pod.node)
        endpoint: dict = {
            "addresses": [pod.ip],
            "conditions": {"ready": pod.ready, "serving": pod.ready, "terminating": False},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.name,
                          "uid": pod.uid or stable_uid("pod", pod.name)},
            "nodeName": pod.node,
        }
        if node:
            endpoint["zone"] = node.zone
        endpoints.append(endpoint)
    suffix = hashlib.sha256(meta.get("uid", name).encode()).hexdigest()
    suffix = "".join("bcdfghjklmnpqrstvwxz2456789"[int(c, 16)] for c in suffix[:5])
    labels = {**(meta.get("labels") or {}),
              "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
              "kubernetes.io/service-name": name}
    return {
        "metadata": {
            "name": f"{name}-{suffix}",
            "generateName": f"{name}-",
            "namespace": ns,
            "uid": stable_uid("endpointslice", ns, name, meta.get("uid", "")),
            "resourceVersion": str(state.resource_version),
            "creationTimestamp": meta.get("creationTimestamp"),
            "labels": labels,
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                            meta.get("creationTimestamp")},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                 "uid": meta.get("uid", ""), "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def render_endpoints(state: LabState, svc: dict) -> dict:
    meta = svc["metadata"]
    ns, name = meta["namespace"], meta["name"]
    pods = _svc_pods(state, svc)
    body: dict = {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": stable_uid("endpoints", ns, name, meta.get("uid", "")),
            "resourceVersion": str(state.resource_version),
            "creationTimestamp": meta.get("creationTimestamp"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                            meta.get("creationTimestamp")},
        },
    }
    if not pods:
        return body
    ports = []
    for sp in svc["spec"].get("ports") or []:
        number = _resolve_target_port(sp, pods[0])
        if number is not None:
            entry = {"port": number, "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                entry["name"] = sp["name"]
            ports.append(entry)
    subset: dict = {}
    for key, wanted in (("addresses", True), ("notReadyAddresses", False)):
        addrs = [{"ip": p.ip, "nodeName": p.node,
                  "targetRef": {"kind": "Pod", "namespace": ns, "name": p.name,
                                "uid": p.uid or stable_uid("pod", p.name)}}
                 for p in pods if p.ready is wanted]
        if addrs:
            subset[key] = addrs
    subset["ports"] = ports
    body["subsets"] = [subset]
    return body


def render_namespace(name: str, created: str) -> dict:
    return {
        "metadata": {"name": name, "uid": stable_uid("namespace", name),
                     "resourceVersion": "1", "creationTimestamp": created,
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def render_lease(node: LabNode) -> dict:
    """The node heartbeat Lease: renewed "now" while the node is Ready, stale once it isn't."""
    renewed = now_str() if node.ready else node.created
    return {
        "metadata": {"name": node.name, "namespace": "kube-node-lease",
                     "uid": stable_uid("lease", node.name), "resourceVersion": "1",
                     "creationTimestamp": node.created,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name,
                                          "uid": node.uid or stable_uid("node", node.name)}]},
        "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40,
                 "renewTime": renewed[:19] + ".000000Z"},
    }


def render_service(svc: dict) -> dict:
    """A stored Service as a list item (kind/apiVersion belong to the list, not the item)."""
    item = {k: v for k, v in svc.items() if k not in ("kind", "apiVersion")}
    return copy.deepcopy(item)


_WARNING_REASONS = {"BackOff", "Failed", "FailedScheduling", "Unhealthy", "NodeNotReady",
                    "FailedKillPod", "Evicted"}


def render_events(state: LabState, nodes: dict[str, LabNode]) -> list[dict]:
    """`state.events` as core/v1 Events (list items)."""
    pods = {p.name: p for p in state.pods}
    out = []
    for index, ev in enumerate(state.events):
        kind, name = ev.get("kind", ""), ev.get("name", "")
        involved: dict = {"kind": kind, "name": name, "apiVersion": "v1"}
        source: dict = {}
        uid = None
        if kind == "Pod":
            involved["namespace"] = state.namespace
            pod = pods.get(name)
            uid = pod.uid if pod else None
            source = {"component": "kubelet"}
            if pod:
                source["host"] = pod.node
        elif kind == "Node":
            node = nodes.get(name)
            uid = node.uid if node else None
            source = {"component": "node-controller"}
        elif kind == "Service":
            involved["namespace"] = state.namespace
            svc = state.service(state.namespace, name)
            uid = svc["metadata"].get("uid") if svc else None
            source = {"component": "service-controller"}
        elif kind == "ReplicaSet":  # a restarted pod's replacement created
            involved.update(apiVersion="apps/v1", namespace=state.namespace)
            uid = stable_uid("replicaset", state.namespace, name)
            source = {"component": "replicaset-controller"}
        if uid:
            involved["uid"] = uid
        when = ev.get("time") or now_str()
        warning = ev.get("reason") in _WARNING_REASONS
        ev_type = ev.get("type") or ("Warning" if warning else "Normal")
        digest = hashlib.sha256(f"{index}{name}{when}".encode()).hexdigest()[:16]
        out.append({
            "metadata": {"name": f"{name}.{digest}", "namespace": state.namespace,
                         "uid": stable_uid("event", str(index), name, when),
                         "resourceVersion": str(index + 1), "creationTimestamp": when},
            "involvedObject": involved,
            "reason": ev.get("reason", ""),
            "message": ev.get("message", ""),
            "source": source,
            "firstTimestamp": when,
            "lastTimestamp": when,
            "count": 1,
            "type": ev_type,
            "eventTime": None,
            "reportingComponent": source.get("component", ""),
            "reportingInstance": source.get("host", ""),
        })
    return out


def events_v1(core: dict) -> dict:
    """A core/v1 Event item as events.k8s.io/v1 names its fields."""
    when = core["firstTimestamp"]
    micro = when[:19] + ".000000Z"
    return {
        "metadata": core["metadata"],
        "eventTime": micro,
        "reportingController": core["reportingComponent"],
        "reportingInstance": core["reportingInstance"] or core["reportingComponent"],
        "action": core["reason"],
        "reason": core["reason"],
        "regarding": core["involvedObject"],
        "note": core["message"],
        "type": core["type"],
        "deprecatedSource": core["source"],
        "deprecatedFirstTimestamp": when,
        "deprecatedLastTimestamp": when,
        "deprecatedCount": 1,
    }
