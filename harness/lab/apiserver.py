"""A minimal Kubernetes REST API over HTTPS, served from a `LabState`, as kubectl expects it."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from gevent import pywsgi

from harness.lab.state import LabApiError, LabNode, LabPod, LabState

log = logging.getLogger(__name__)

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-lab"}
KUBELET_VERSION = "v1.32.0"
APP_IMAGE = "nodeport-harness/helloworld:0.1.0"
CONTAINER_PORT_NAME = "http-server"
MAX_BODY = 3 * 1024 * 1024  # what a real API server accepts for one request body
RESTRICTED_SA = "restricted"

StatsFn = Callable[[], dict]
FaultsFn = Callable[[str, str, str], dict]
Response = tuple[int, Any, list[tuple[str, str]]]


# ---------------------------------------------------------------------------------------
# TLS and kubeconfig
# ---------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_tls(state_dir: str | os.PathLike) -> tuple[bytes, str, str]:
    """A fresh CA and a server certificate for 127.0.0.1/localhost: (ca_pem, certfile, keyfile)."""
    import trustme  # imported here: only the lab process needs it

    directory = Path(state_dir)
    ca = trustme.CA(organization_name="nodeport-harness lab")
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name="lab-apiserver")
    ca_pem = ca.cert_pem.bytes()
    certfile, keyfile = directory / "apiserver.crt", directory / "apiserver.key"
    _write_private(directory / "ca.crt", ca_pem)
    _write_private(certfile, b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    _write_private(keyfile, cert.private_key_pem.bytes())
    return ca_pem, str(certfile), str(keyfile)


def write_kubeconfig(
    path: str | os.PathLike,
    server_url: str,
    ca_pem: bytes,
    token: str,
    context: str = "lab",
    namespace: str = "default",
) -> None:
    """Write a kubeconfig (mode 0600) that trusts the lab CA and sends `token`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": context,
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": f"{context}-user", "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": f"{context}-user", "namespace": namespace},
            }
        ],
        "current-context": context,
    }
    import yaml  # a kubeconfig is conventionally YAML; people read and merge these files

    _write_private(Path(path), yaml.safe_dump(config, sort_keys=False).encode())


# ---------------------------------------------------------------------------------------
# Small helpers: time, JSON, Status
# ---------------------------------------------------------------------------------------


def _now_str() -> str:
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


def _age(timestamp: str | None) -> str:
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


class ApiError(Exception):
    """A request the server refuses: rendered as a Kubernetes Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def _not_found(resource: str, name: str, group: str = "") -> ApiError:
    details = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def _stable_uid(*parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# ---------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
Requirement = tuple[str, str, tuple[str, ...]]


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        m = re.fullmatch(rf"(!?)\s*({_KEY})", part)
        if m:
            reqs.append((m[2], "!" if m[1] else "exists", ()))
            continue
        m = re.fullmatch(rf"({_KEY})\s*(==|!=|=)\s*({_VALUE})", part)
        if m:
            reqs.append((m[1], "!=" if m[2] == "!=" else "=", (m[3],)))
            continue
        m = re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^()]*)\)", part)
        if m:
            values = tuple(v.strip() for v in m[3].split(",") if v.strip())
            if not values or not all(re.fullmatch(_VALUE, v) for v in values):
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
            reqs.append((m[1], m[2], values))
            continue
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("=", "in") and (not present or value not in values):
            return False
        if op in ("!=", "notin") and present and value in values:
            return False
    return True


def parse_field_selector(text: str, allowed: Iterable[str]) -> list[tuple[str, bool, str]]:
    """`a=b,c!=d` -> [(field, equal?, value)]; fields outside `allowed` are a 400 as upstream."""
    allowed = set(allowed)
    out = []
    for part in _split_top(text or ""):
        m = re.fullmatch(r"([A-Za-z.]+)\s*(==|!=|=)\s*(.*)", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: can't understand '{part}'")
        if m[1] not in allowed:
            raise ApiError(400, "BadRequest", f'field label not supported: {m[1]}')
        out.append((m[1], m[2] != "!=", m[3]))
    return out


# Fields a real server compares as their Go zero value when the JSON omits them.
_FIELD_ZERO = {"spec.unschedulable": "false"}


def _dig(obj: Any, dotted: str) -> str:
    for key in dotted.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    if obj is None:
        return _FIELD_ZERO.get(dotted, "")
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def fields_match(reqs: list[tuple[str, bool, str]], obj: dict, aliases: dict[str, str]) -> bool:
    return all((_dig(obj, aliases.get(f, f)) == v) == eq for f, eq, v in reqs)


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
                           "lastTransitionTime": _now_str(), "reason": "NodeStatusUnknown",
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
            "uid": node.uid or _stable_uid("node", node.name),
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
                "bootID": _stable_uid("boot", node.name),
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
            "uid": pod.uid or _stable_uid("pod", pod.name),
            "resourceVersion": str(state.resource_version),
            "creationTimestamp": created,
            "labels": state.pod_labels(),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset_name(state),
                "uid": _stable_uid("replicaset", state.namespace, replicaset_name(state)),
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
                          "uid": pod.uid or _stable_uid("pod", pod.name)},
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
            "uid": _stable_uid("endpointslice", ns, name, meta.get("uid", "")),
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
            "uid": _stable_uid("endpoints", ns, name, meta.get("uid", "")),
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
                                "uid": p.uid or _stable_uid("pod", p.name)}}
                 for p in pods if p.ready is wanted]
        if addrs:
            subset[key] = addrs
    subset["ports"] = ports
    body["subsets"] = [subset]
    return body


def render_namespace(name: str, created: str) -> dict:
    return {
        "metadata": {"name": name, "uid": _stable_uid("namespace", name),
                     "resourceVersion": "1", "creationTimestamp": created,
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def render_lease(node: LabNode) -> dict:
    """The node heartbeat Lease: renewed "now" while the node is Ready, stale once it isn't."""
    renewed = _now_str() if node.ready else node.created
    return {
        "metadata": {"name": node.name, "namespace": "kube-node-lease",
                     "uid": _stable_uid("lease", node.name), "resourceVersion": "1",
                     "creationTimestamp": node.created,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name,
                                          "uid": node.uid or _stable_uid("node", node.name)}]},
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
        if uid:
            involved["uid"] = uid
        when = ev.get("time") or _now_str()
        warning = ev.get("reason") in _WARNING_REASONS
        ev_type = ev.get("type") or ("Warning" if warning else "Normal")
        digest = hashlib.sha256(f"{index}{name}{when}".encode()).hexdigest()[:16]
        out.append({
            "metadata": {"name": f"{name}.{digest}", "namespace": state.namespace,
                         "uid": _stable_uid("event", str(index), name, when),
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


# ---------------------------------------------------------------------------------------
# Tables (what `kubectl get` prints)
# ---------------------------------------------------------------------------------------

_NAME_COL = {"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace."}
_AGE_COL = {"name": "Age", "type": "string", "format": "", "priority": 0,
            "description": "CreationTimestamp is a timestamp representing the server time "
            "when this object was created."}


def _col(name: str, priority: int = 0, description: str = "", kind: str = "string") -> dict:
    return {"name": name, "type": kind, "format": "", "description": description,
            "priority": priority}


def _node_row(item: dict) -> list:
    status_block, meta = item["status"], item["metadata"]
    ready = next((c["status"] for c in status_block["conditions"] if c["type"] == "Ready"), "")
    state = "Ready" if ready == "True" else "NotReady"
    if item["spec"].get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in meta.get("labels", {})
                   if k.startswith("node-role.kubernetes.io/"))
    addrs = {a["type"]: a["address"] for a in status_block["addresses"]}
    info = status_block["nodeInfo"]
    return [meta["name"], state, ",".join(roles) or "<none>", _age(meta.get("creationTimestamp")),
            info["kubeletVersion"], addrs.get("InternalIP", "<none>"),
            addrs.get("ExternalIP", "<none>"), info["osImage"], info["kernelVersion"],
            info["containerRuntimeVersion"]]


def _pod_row(item: dict) -> list:
    statuses = item["status"].get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    return [item["metadata"]["name"], f"{ready}/{len(item['spec']['containers'])}",
            item["status"].get("phase", "Unknown"), str(restarts),
            _age(item["metadata"].get("creationTimestamp")),
            item["status"].get("podIP", "<none>"), item["spec"].get("nodeName", "<none>"),
            "<none>", "<none>"]


def _service_row(item: dict) -> list:
    spec = item["spec"]
    ports = ",".join(
        (f"{p['port']}:{p['nodePort']}" if p.get("nodePort") else str(p["port"]))
        + f"/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []
    ) or "<none>"
    external = ",".join(spec.get("externalIPs") or [])
    if spec.get("type") == "LoadBalancer":
        ingress = item.get("status", {}).get("loadBalancer", {}).get("ingress") or []
        lb = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)
        external = ",".join(x for x in (lb, external) if x) or "<pending>"
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [item["metadata"]["name"], spec.get("type", "ClusterIP"),
            spec.get("clusterIP", "<none>"), external or "<none>", ports,
            _age(item["metadata"].get("creationTimestamp")), selector or "<none>"]


def _endpoints_row(item: dict) -> list:
    pairs = [f"{a['ip']}:{p['port']}" for s in item.get("subsets") or []
             for p in s.get("ports") or [] for a in s.get("addresses") or []]
    shown = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [item["metadata"]["name"], shown or "<none>",
            _age(item["metadata"].get("creationTimestamp"))]


def _slice_row(item: dict) -> list:
    ports = ",".join(str(p.get("port")) for p in item.get("ports") or []) or "<unset>"
    addrs = [a for e in item.get("endpoints") or [] for a in e.get("addresses", [])]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [item["metadata"]["name"], item["addressType"], ports, shown or "<unset>",
            _age(item["metadata"].get("creationTimestamp"))]


def _event_row(item: dict) -> list:
    ref = item.get("involvedObject") or item.get("regarding") or {}
    when = item.get("lastTimestamp") or item.get("deprecatedLastTimestamp")
    return [_age(when), item.get("type", ""), item.get("reason", ""),
            f"{ref.get('kind', '').lower()}/{ref.get('name', '')}",
            item.get("message") or item.get("note", "")]


def _namespace_row(item: dict) -> list:
    return [item["metadata"]["name"], item["status"]["phase"],
            _age(item["metadata"].get("creationTimestamp"))]


TABLES: dict[str, tuple[list[dict], Callable[[dict], list]]] = {
    "nodes": ([_NAME_COL, _col("Status", 0, "The status of the node"),
               _col("Roles", 0, "The roles of the node"), _AGE_COL,
               _col("Version", 0, "Kubelet Version reported by the node."),
               _col("Internal-IP", 1, "List of addresses reachable to the node."),
               _col("External-IP", 1, "List of addresses reachable to the node."),
               _col("OS-Image", 1, "OS Image reported by the node from /etc/os-release."),
               _col("Kernel-Version", 1, "Kernel Version reported by the node."),
               _col("Container-Runtime", 1, "Container Runtime Version reported by the node.")],
              _node_row),
    "pods": ([_NAME_COL, _col("Ready", 0, "The aggregate readiness state of this pod."),
              _col("Status", 0, "The aggregate status of the containers in this pod."),
              _col("Restarts", 0, "The number of times the containers in this pod have been "
                   "restarted."), _AGE_COL,
              _col("IP", 1, "IP address allocated to the pod."),
              _col("Node", 1, "NodeName indicates in which node this pod is scheduled."),
              _col("Nominated Node", 1, "nominatedNodeName is set only when this pod preempts "
                   "other pods on the node."),
              _col("Readiness Gates", 1, "If specified, all readiness gates will be evaluated "
                   "for pod readiness.")],
             _pod_row),
    "services": ([_NAME_COL, _col("Type", 0, "type determines how the Service is exposed."),
                  _col("Cluster-IP", 0, "clusterIP is the IP address of the service."),
                  _col("External-IP", 0, "externalIPs is a list of IP addresses for which nodes "
                       "in the cluster will also accept traffic for this service."),
                  _col("Port(s)", 0, "The list of ports that are exposed by this service."),
                  _AGE_COL,
                  _col("Selector", 1, "Route service traffic to pods with label keys and values "
                       "matching this selector.")],
                 _service_row),
    "endpoints": ([_NAME_COL, _col("Endpoints", 0, "Endpoints of the service"), _AGE_COL],
                  _endpoints_row),
    "endpointslices": ([_NAME_COL, _col("AddressType", 0, "Type of address carried by this "
                                        "EndpointSlice."),
                        _col("Ports", 0, "Ports provided by this EndpointSlice."),
                        _col("Endpoints", 0, "Endpoints represented by this EndpointSlice."),
                        _AGE_COL],
                       _slice_row),
    "events": ([_col("Last Seen", 0, "Time when the most recent occurrence of this event was "
                     "recorded."), _col("Type", 0, "Type of this event."),
                _col("Reason", 0, "Reason for the transition into the object's current status."),
                _col("Object", 0, "The object that this event is about."),
                _col("Message", 0, "A human-readable description of the status.")],
               _event_row),
    "namespaces": ([_NAME_COL, _col("Status", 0, "The status of the namespace"), _AGE_COL],
                   _namespace_row),
}


def partial_metadata(item: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": item["metadata"]}


def make_table(resource: str, items: list[dict], list_meta: dict, include: str,
               kind: str, api_version: str) -> dict:
    columns, row_fn = TABLES.get(resource, ([_NAME_COL, _AGE_COL], lambda i: [
        i["metadata"]["name"], _age(i["metadata"].get("creationTimestamp"))]))
    rows = []
    for item in items:
        row: dict = {"cells": row_fn(item)}
        if include == "Object":
            row["object"] = {"kind": kind, "apiVersion": api_version, **item}
        elif include != "None":
            row["object"] = partial_metadata(item)
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": columns, "rows": rows}


def wants_table(accept: str) -> bool:
    """True when the client asked for a meta.k8s.io/v1 Table before anything else it accepts."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table":
            if params.get("v") == "v1" and params.get("g") == "meta.k8s.io":
                return True
            continue  # a Table version we don't serve: try the next media range
        return False
    return False


# ---------------------------------------------------------------------------------------
# Service validation (fieldValidation) and patching
# ---------------------------------------------------------------------------------------

STR, INT, BOOL, ANY, INTSTR, STRMAP, TIME = "string", "int", "bool", "any", "intstr", "map", "time"

OBJECT_META_FIELDS: dict = {
    "name": STR, "generateName": STR, "namespace": STR, "selfLink": STR, "uid": STR,
    "resourceVersion": STR, "generation": INT, "creationTimestamp": TIME,
    "deletionTimestamp": TIME, "deletionGracePeriodSeconds": INT, "labels": STRMAP,
    "annotations": STRMAP, "ownerReferences": [ANY], "finalizers": [STR], "managedFields": [ANY],
}
SERVICE_FIELDS: dict = {
    "apiVersion": STR,
    "kind": STR,
    "metadata": OBJECT_META_FIELDS,
    "spec": {
        "ports": [{"name": STR, "protocol": STR, "appProtocol": STR, "port": INT,
                   "targetPort": INTSTR, "nodePort": INT}],
        "selector": STRMAP, "clusterIP": STR, "clusterIPs": [STR], "type": STR,
        "externalIPs": [STR], "sessionAffinity": STR, "loadBalancerIP": STR,
        "loadBalancerSourceRanges": [STR], "externalName": STR, "externalTrafficPolicy": STR,
        "healthCheckNodePort": INT, "publishNotReadyAddresses": BOOL,
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": INT}},
        "ipFamilies": [STR], "ipFamilyPolicy": STR, "allocateLoadBalancerNodePorts": BOOL,
        "loadBalancerClass": STR, "internalTrafficPolicy": STR, "trafficDistribution": STR,
    },
    "status": {
        "loadBalancer": {"ingress": [{"ip": STR, "hostname": STR, "ipMode": STR,
                                      "ports": [{"port": INT, "protocol": STR, "error": STR}]}]},
        "conditions": [ANY],
    },
}
_GO_TYPES = {STR: "string", INT: "int32", BOOL: "bool", TIME: "Time", STRMAP: "string"}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def clean_object(value: Any, schema: Any, path: str, unknown: list[str]) -> Any:
    """Drop fields the schema doesn't know (collected in `unknown`); raise on wrong JSON types."""
    def bad() -> ApiError:
        if isinstance(schema, list):
            go_type = "slice"
        elif isinstance(schema, dict):
            go_type = "struct"
        else:
            go_type = _GO_TYPES.get(schema, "string")
        return ApiError(400, "BadRequest", f"json: cannot unmarshal {_json_kind(value)} into Go "
                        f"struct field .{path} of type {go_type}")

    if value is None or schema == ANY:
        return value
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise bad()
        out = {}
        for key, sub in value.items():
            child = f"{path}.{key}" if path else key
            if key not in schema:
                unknown.append(child)
                continue
            if sub is None:
                continue  # JSON null decodes as "not set"
            out[key] = clean_object(sub, schema[key], child, unknown)
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise bad()
        return [clean_object(v, schema[0], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    ok = {
        STR: isinstance(value, str),
        TIME: isinstance(value, str),
        INT: isinstance(value, int) and not isinstance(value, bool),
        BOOL: isinstance(value, bool),
        INTSTR: isinstance(value, (int, str)) and not isinstance(value, bool),
        STRMAP: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
    }[schema]
    if not ok:
        raise bad()
    return value


def validate_service(obj: Any, mode: str) -> tuple[dict, list[str]]:
    """Apply `fieldValidation`: returns (object without unknown fields, warnings)."""
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body of the request was in an unknown format - "
                       "accepted media types include: application/json")
    try:
        unknown: list[str] = []
        cleaned = clean_object(obj, SERVICE_FIELDS, "", unknown)
    except ApiError as err:
        err.message = f'Service in version "v1" cannot be handled as a Service: {err.message}'
        raise
    if obj.get("kind") not in (None, "Service") or obj.get("apiVersion") not in (None, "v1"):
        raise ApiError(400, "BadRequest", f'the API version in the data ({obj.get("apiVersion")}) '
                       "does not match the expected API version (v1)")
    messages = [f'unknown field "{p}"' for p in unknown]
    if messages and mode == "Strict":
        raise ApiError(400, "BadRequest", 'Service in version "v1" cannot be handled as a '
                       "Service: strict decoding error: " + ", ".join(messages))
    return cleaned, messages if mode == "Warn" else []


_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_CHOICES = {
    "type": ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
    "externalTrafficPolicy": ("Cluster", "Local"),
    "internalTrafficPolicy": ("Cluster", "Local"),
    "sessionAffinity": ("ClientIP", "None"),
}


def check_service(obj: dict) -> None:
    """The value checks a real API server makes before defaulting (422 Invalid)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    name = meta.get("name") or ""
    problems = []
    if not name:
        problems.append("metadata.name: Required value: name or generateName is required")
    elif len(name) > 63 or not re.fullmatch(_DNS1035, name):
        problems.append(f'metadata.name: Invalid value: "{name}": a DNS-1035 label must consist '
                        "of lower case alphanumeric characters or '-', start with an alphabetic "
                        "character, and end with an alphanumeric character (e.g. 'my-name',  or "
                        f"'abc-123', regex used for validation is '{_DNS1035}')")
    for field, allowed in _CHOICES.items():
        value = spec.get(field)
        if value is not None and value not in allowed:
            supported = ", ".join(f'"{a}"' for a in allowed)
            problems.append(f'spec.{field}: Unsupported value: "{value}": supported values: '
                            f"{supported}")
    seen = set()
    for i, port in enumerate(spec.get("ports") or []):
        where = f"spec.ports[{i}]"
        port = port if isinstance(port, dict) else {}  # JSON null decodes as an empty port
        number = port.get("port")
        if number is None:
            problems.append(f"{where}.port: Required value")
        elif not 1 <= number <= 65535:
            problems.append(f"{where}.port: Invalid value: {number}: must be between 1 and "
                            "65535, inclusive")
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            problems.append(f"{where}.targetPort: Invalid value: {target}: must be between 1 "
                            "and 65535, inclusive")
        if isinstance(target, str) and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", target):
            problems.append(f'{where}.targetPort: Invalid value: "{target}": must be an '
                            "IANA_SVC_NAME or a port number")
        protocol = port.get("protocol", "TCP")
        if protocol not in ("SCTP", "TCP", "UDP"):
            problems.append(f'{where}.protocol: Unsupported value: "{protocol}": supported '
                            'values: "SCTP", "TCP", "UDP"')
        if (number, protocol) in seen:
            problems.append(f"{where}: Duplicate value: port {number}/{protocol}")
        seen.add((number, protocol))
    if problems:
        listed = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
        raise ApiError(422, "Invalid", f'Service "{name}" is invalid: {listed}',
                       {"name": name, "kind": "Service"})


# Strategic merge: list fields merged by a key (the rest are replaced), per the Go struct tags.
SMP_MERGE_KEYS = {
    ("spec", "ports"): "port",
    ("metadata", "ownerReferences"): "uid",
    ("status", "conditions"): "type",
}
SMP_MERGE_PRIMITIVES = {("metadata", "finalizers")}
_DELETE = object()


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value
                if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch to a map (directives honoured and stripped)."""
    if not isinstance(patch, dict):
        raise ApiError(400, "BadRequest", "strategic merge patch must be a JSON object")
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    if directive not in (None, "merge"):
        raise ApiError(400, "BadRequest", f"Unknown patch type: {directive}")
    retain = patch.pop("$retainKeys", None)
    orders = {k.split("/", 1)[1]: patch.pop(k) for k in list(patch)
              if k.startswith("$setElementOrder/")}
    deletions = {k.split("/", 1)[1]: patch.pop(k) for k in list(patch)
                 if k.startswith("$deleteFromPrimitiveList/")}
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = strategic_merge(current if isinstance(current, dict) else {}, value,
                                     (*path, key))
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(current if isinstance(current, list) else [], value,
                                      (*path, key))
        else:
            result[key] = value
    for key, values in deletions.items():
        if isinstance(result.get(key), list) and isinstance(values, list):
            result[key] = [v for v in result[key] if v not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list) and isinstance(order, list):
            result[key] = _apply_order(result[key], order, SMP_MERGE_KEYS.get((*path, key)))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: list, patch: list, path: tuple[str, ...]) -> list:
    key = SMP_MERGE_KEYS.get(path)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch
                if not (isinstance(i, dict) and "$patch" in i)]
    if path in SMP_MERGE_PRIMITIVES:
        return list(current) + [v for v in patch if v not in current]
    if key is None:
        return _strip_directives(patch)
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(400, "BadRequest",
                           f"map: {item} does not contain declared merge key: {key}")
        index = next((n for n, r in enumerate(result)
                      if isinstance(r, dict) and r.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        merged = strategic_merge(result[index] if index is not None else {}, item, path)
        if merged is _DELETE:
            continue
        if index is None:
            result.append(merged)
        else:
            result[index] = merged
    return result


def _apply_order(items: list, order: list, key: str | None) -> list:
    def ident(value: Any) -> Any:
        if key and isinstance(value, dict):
            return value.get(key)
        return json.dumps(value, sort_keys=True)

    rank = {ident(v): n for n, v in enumerate(order)}
    ordered = sorted((i for i in items if ident(i) in rank), key=lambda i: rank[ident(i)])
    return ordered + [i for i in items if ident(i) not in rank]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(400, "BadRequest", f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(422, "Invalid", f"jsonpatch: path not found: /{'/'.join(parts)}")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json patch must be a JSON array of operations")
    doc = copy.deepcopy(doc)

    def remove(parts: list[str]) -> Any:
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, dict) and last in parent:
            return parent.pop(last)
        if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            return parent.pop(int(last))
        raise ApiError(422, "Invalid", f"jsonpatch remove operation does not apply: doc is "
                       f"missing path: /{'/'.join(parts)}")

    def add(parts: list[str], value: Any) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, dict):
            parent[last] = value
        elif isinstance(parent, list) and (
                last == "-" or (last.isdigit() and int(last) <= len(parent))):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            raise ApiError(422, "Invalid", f"jsonpatch add operation does not apply: doc is "
                           f"missing path: /{'/'.join(parts)}")

    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"invalid json patch operation: {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise ApiError(400, "BadRequest", f"missing value for {kind} operation")
        if kind == "add":
            add(parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(parts)
        elif kind == "replace":
            _walk(doc, parts)  # must exist
            if parts:
                remove(parts)
            add(parts, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = remove(source) if kind == "move" else copy.deepcopy(_walk(doc, source))
            add(parts, value)
        elif kind == "test":
            if _walk(doc, parts) != op["value"]:
                raise ApiError(422, "Invalid", f"testing value /{'/'.join(parts)} failed")
        else:
            raise ApiError(400, "BadRequest", f"unexpected json patch operation: {kind}")
    return doc


# ---------------------------------------------------------------------------------------
# Discovery and OpenAPI documents
# ---------------------------------------------------------------------------------------


def _res(name: str, singular: str, kind: str, namespaced: bool, verbs: list[str],
         short: list[str] | None = None, categories: list[str] | None = None) -> dict:
    out = {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
           "verbs": verbs,
           "storageVersionHash": base64.b64encode(
               hashlib.sha256(kind.encode()).digest()[:8]).decode()}
    if short:
        out["shortNames"] = short
    if categories:
        out["categories"] = categories
    return out


READ = ["get", "list"]
CORE_RESOURCES = [
    _res("endpoints", "endpoints", "Endpoints", True, READ, ["ep"]),
    _res("events", "event", "Event", True, READ, ["ev"]),
    _res("namespaces", "namespace", "Namespace", False, ["create", "get", "list"], ["ns"]),
    _res("nodes", "node", "Node", False, READ, ["no"]),
    _res("pods", "pod", "Pod", True, READ, ["po"], ["all"]),
    _res("services", "service", "Service", True,
         ["create", "delete", "get", "list", "patch", "update"], ["svc"], ["all"]),
    {"name": "services/status", "singularName": "", "namespaced": True, "kind": "Service",
     "verbs": ["get"]},
]
GROUPS = {
    "coordination.k8s.io": [_res("leases", "lease", "Lease", True, READ)],
    "discovery.k8s.io": [_res("endpointslices", "endpointslice", "EndpointSlice", True, READ)],
    "events.k8s.io": [_res("events", "event", "Event", True, READ, ["ev"])],
}
# Namespaces every cluster has; kube-node-lease holds the node heartbeats `describe node` reads.
SYSTEM_NAMESPACES = ("kube-node-lease", "kube-public", "kube-system")


def api_group_list() -> dict:
    groups = []
    for name in GROUPS:
        gv = {"groupVersion": f"{name}/v1", "version": "v1"}
        groups.append({"name": name, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _ref(name: str) -> dict:
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": {}}


def _props(**fields: dict) -> dict:
    return {"type": "object", "properties": fields}


_S = {"type": "string", "default": ""}
_I = {"type": "integer", "format": "int32"}
_B = {"type": "boolean"}
_SL = {"type": "array", "items": _S, "x-kubernetes-list-type": "atomic"}
_SM = {"type": "object", "additionalProperties": _S}
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_CORE = "io.k8s.api.core.v1."


def openapi_v3_core() -> dict:
    """A hand-written slice of the real `/openapi/v3/api/v1`: the Service operations + schemas.

    Enough for kubectl: the PATCH operation lists `fieldValidation` (so kubectl asks the
    server to validate) and the schemas carry the strategic-merge keys for `spec.ports`.
    """
    gvk = {"group": "", "version": "v1", "kind": "Service"}
    body = {"content": {"*/*": {"schema": {"$ref": f"#/components/schemas/{_CORE}Service"}}},
            "required": True}
    ok = {"200": {"description": "OK", "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{_CORE}Service"}}}}}

    def param(name: str, description: str) -> dict:
        return {"name": name, "in": "query", "description": description,
                "schema": {"type": "string", "uniqueItems": True}}

    write_params = [param("dryRun", "When present, modifications are not persisted."),
                    param("fieldManager", "The name of the actor making these changes."),
                    param("fieldValidation", "Ignore, Warn or Strict: how the server treats "
                          "unknown or duplicate fields.")]

    def op(action: str, op_id: str, extra: dict | None = None) -> dict:
        return {"tags": ["core_v1"], "operationId": op_id, "responses": ok,
                "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                **(extra or {})}

    patch_body = {"content": {t: {"schema": {"$ref": f"#/components/schemas/{_META}Patch"}}
                              for t in ("application/json-patch+json",
                                        "application/merge-patch+json",
                                        "application/strategic-merge-patch+json")},
                  "required": True}
    named = "/api/v1/namespaces/{namespace}/services/{name}"
    collection = "/api/v1/namespaces/{namespace}/services"
    path_params = [{"name": "namespace", "in": "path", "required": True,
                    "schema": {"type": "string", "uniqueItems": True}}]
    schemas = {
        f"{_CORE}Service": {
            **_props(apiVersion={"type": "string"}, kind={"type": "string"},
                     metadata=_ref(f"{_META}ObjectMeta"), spec=_ref(f"{_CORE}ServiceSpec"),
                     status=_ref(f"{_CORE}ServiceStatus")),
            "x-kubernetes-group-version-kind": [gvk],
        },
        f"{_CORE}ServiceSpec": _props(
            allocateLoadBalancerNodePorts=_B, clusterIP=_S, clusterIPs=_SL, externalIPs=_SL,
            externalName=_S, externalTrafficPolicy=_S, healthCheckNodePort=_I,
            internalTrafficPolicy=_S, ipFamilies=_SL, ipFamilyPolicy=_S, loadBalancerClass=_S,
            loadBalancerIP=_S, loadBalancerSourceRanges=_SL,
            ports={"type": "array", "items": _ref(f"{_CORE}ServicePort"),
                   "x-kubernetes-list-map-keys": ["port", "protocol"],
                   "x-kubernetes-list-type": "map", "x-kubernetes-patch-merge-key": "port",
                   "x-kubernetes-patch-strategy": "merge"},
            publishNotReadyAddresses=_B,
            selector={**_SM, "x-kubernetes-map-type": "atomic"},
            sessionAffinity=_S, sessionAffinityConfig=_ref(f"{_CORE}SessionAffinityConfig"),
            trafficDistribution=_S, type=_S,
        ),
        f"{_CORE}ServicePort": {
            **_props(appProtocol=_S, name=_S, nodePort=_I, port={**_I, "default": 0},
                     protocol={**_S, "default": "TCP"},
                     targetPort=_ref("io.k8s.apimachinery.pkg.util.intstr.IntOrString")),
            "required": ["port"],
        },
        f"{_CORE}SessionAffinityConfig": _props(clientIP=_ref(f"{_CORE}ClientIPConfig")),
        f"{_CORE}ClientIPConfig": _props(timeoutSeconds=_I),
        f"{_CORE}ServiceStatus": _props(
            conditions={"type": "array", "items": {"type": "object"},
                        "x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map",
                        "x-kubernetes-patch-merge-key": "type",
                        "x-kubernetes-patch-strategy": "merge"},
            loadBalancer=_ref(f"{_CORE}LoadBalancerStatus")),
        f"{_CORE}LoadBalancerStatus": _props(ingress={
            "type": "array", "items": _ref(f"{_CORE}LoadBalancerIngress"),
            "x-kubernetes-list-type": "atomic"}),
        f"{_CORE}LoadBalancerIngress": _props(hostname=_S, ip=_S, ipMode=_S, ports={
            "type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "atomic"}),
        f"{_META}ObjectMeta": _props(
            annotations=_SM, creationTimestamp=_ref(f"{_META}Time"),
            deletionGracePeriodSeconds={"type": "integer", "format": "int64"},
            deletionTimestamp=_ref(f"{_META}Time"),
            finalizers={**_SL, "x-kubernetes-list-type": "set",
                        "x-kubernetes-patch-strategy": "merge"},
            generateName=_S, generation={"type": "integer", "format": "int64"}, labels=_SM,
            managedFields={"type": "array", "items": {"type": "object"},
                           "x-kubernetes-list-type": "atomic"},
            name=_S, namespace=_S,
            ownerReferences={"type": "array", "items": {"type": "object"},
                             "x-kubernetes-list-map-keys": ["uid"],
                             "x-kubernetes-list-type": "map",
                             "x-kubernetes-patch-merge-key": "uid",
                             "x-kubernetes-patch-strategy": "merge"},
            resourceVersion=_S, selfLink=_S, uid=_S,
        ),
        f"{_META}Time": {"type": "string", "format": "date-time"},
        f"{_META}Patch": {"type": "object"},
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string",
                                                            "format": "int-or-string"},
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (nodeport-harness lab)",
                 "version": KUBE_VERSION["gitVersion"]},
        "paths": {
            collection: {
                "post": op("post", "createCoreV1NamespacedService",
                           {"requestBody": body, "parameters": write_params}),
                "get": op("list", "listCoreV1NamespacedService"),
                "parameters": path_params,
            },
            named: {
                "get": op("get", "readCoreV1NamespacedService"),
                "put": op("put", "replaceCoreV1NamespacedService",
                          {"requestBody": body, "parameters": write_params}),
                "patch": op("patch", "patchCoreV1NamespacedService",
                            {"requestBody": patch_body, "parameters": write_params}),
                "delete": op("delete", "deleteCoreV1NamespacedService"),
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string", "uniqueItems": True}}, *path_params],
            },
        },
        "components": {"schemas": schemas},
    }


# ---------------------------------------------------------------------------------------
# The WSGI application
# ---------------------------------------------------------------------------------------


class NodeCache:
    """Pre-rendered Node JSON: a list of 5 000 nodes is a join of cached bytes, not a render."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, dict, bytes]] = {}

    def get(self, state: LabState, node: LabNode, index: int) -> tuple[dict, bytes]:
        key = (index, node.ready, node.up, bool(getattr(node, "unschedulable", False)),
               node.internal_ip, node.external_ip, node.zone, node.roles, node.uid, node.created)
        hit = self._entries.get(node.name)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        item = render_node(node, index, str(state.resource_version))
        blob = dumps(item)
        self._entries[node.name] = (key, item, blob)
        return item, blob


class Request:
    def __init__(self, environ: dict):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "/") or "/"
        self.query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""),
                                                     keep_blank_values=True).items()}
        self.accept = environ.get("HTTP_ACCEPT", "") or ""
        self.content_type = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()

    def body(self) -> bytes:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge",
                           f"Request entity too large: limit is {MAX_BODY}")
        return self.environ["wsgi.input"].read(length) if length else b""

    def json(self) -> Any:
        raw = self.body()
        try:
            return json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as err:
            raise ApiError(400, "BadRequest",
                           f"the body of the request was not valid JSON: {err}") from None


class ApiServer:
    """Routes Kubernetes REST paths to views of a `LabState`."""

    def __init__(self, state: LabState, tokens: dict[str, str], stats: StatsFn,
                 faults: FaultsFn):
        self.state = state
        # Compare digests so token comparison doesn't leak through timing.
        self._tokens = [(hashlib.sha256(t.encode()).digest(), role) for t, role in tokens.items()]
        self.stats = stats
        self.faults = faults
        self.nodes = NodeCache()
        self.started = _now_str()
        state.namespaces.update(SYSTEM_NAMESPACES)

    def warm(self) -> None:
        """Render every Node once up front, so even the first page of a big list is fast."""
        for index, node in enumerate(self.state.nodes):
            self.nodes.get(self.state, node, index)

    # -- WSGI entry ---------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        headers: list[tuple[str, str]] = []
        try:
            req = Request(environ)
            role = self._authenticate(environ)
            code, body, headers = self.dispatch(req, role)
        except ApiError as err:
            code, body = err.code, status(err.code, err.reason, err.message, err.details)
        except LabApiError as err:
            code, body = err.code, status(err.code, err.reason, err.message)
        except Exception:  # never crash the server: a 500 Status, details in the log only
            log.exception("lab API server error on %s %s", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            code, body = 500, status(500, "InternalError", "an error on the server has prevented "
                                     "the request from succeeding")
        blob = body if isinstance(body, bytes) else dumps(body)
        reason = _REASONS.get(code, "Unknown")
        if not any(name == "Content-Type" for name, _ in headers):
            headers = [("Content-Type", "application/json"), *headers]
        start_response(f"{code} {reason}", [
            *headers,
            ("Content-Length", str(len(blob))),
            ("Cache-Control", "no-cache, private"),
        ])
        return [blob]

    def _authenticate(self, environ: dict) -> str:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            digest = hashlib.sha256(token.strip().encode()).digest()
            for known, role in self._tokens:
                if hmac.compare_digest(digest, known):
                    return role
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _user(self) -> str:
        return f"system:serviceaccount:{self.state.namespace}:{RESTRICTED_SA}"

    def _authorize(self, role: str, verb: str, resource: str, namespace: str | None,
                   name: str | None = None, group: str = "") -> None:
        """Admin may do anything; "restricted" reads namespaced objects in the app namespace."""
        if role == "admin":
            return
        readable = {"services", "pods", "endpoints", "endpointslices", "events"}
        if (verb in ("get", "list") and resource in readable
                and namespace == self.state.namespace):
            return
        what = f'{resource} "{name}"' if name else resource
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        details = {"kind": resource}
        if name:
            details["name"] = name
        if group:
            details["group"] = group
        raise ApiError(403, "Forbidden", f'{what} is forbidden: User "{self._user()}" cannot '
                       f'{verb} resource "{resource}" in API group "{group}" {scope}', details)

    # -- routing ------------------------------------------------------------------------

    def dispatch(self, req: Request, role: str) -> Response:
        parts = [p for p in req.path.split("/") if p]
        if req.method == "GET":
            doc = self._static(parts, req)
            if isinstance(doc, bytes):
                return 200, doc, [("Content-Type", "text/plain; charset=utf-8")]
            if doc is not None:
                return 200, doc, []
        if parts[:2] == ["lab", "v1"]:
            return self._lab(req, role, parts[2:])
        if parts[:2] == ["api", "v1"] and len(parts) > 2:
            return self._resource(req, role, "", parts[2:])
        if len(parts) > 3 and parts[0] == "apis" and parts[1] in GROUPS and parts[2] == "v1":
            return self._resource(req, role, parts[1], parts[3:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _static(self, parts: list[str], req: Request) -> Any:
        if parts == ["version"]:
            return {**KUBE_VERSION, "gitCommit": "0" * 40, "gitTreeState": "clean",
                    "buildDate": self.started, "goVersion": "go1.23.4", "compiler": "gc",
                    "platform": "linux/amd64"}
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return b"ok"
        if parts == ["api"]:
            port = req.environ.get("SERVER_PORT", "")
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}]}
        if parts == ["api", "v1"]:
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_RESOURCES}
        if parts == ["apis"]:
            return api_group_list()
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in GROUPS:
            gv = {"groupVersion": f"{parts[1]}/v1", "version": "v1"}
            return {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": [gv],
                    "preferredVersion": gv}
        if len(parts) == 3 and parts[0] == "apis" and parts[1] in GROUPS and parts[2] == "v1":
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{parts[1]}/v1", "resources": GROUPS[parts[1]]}
        if parts == ["openapi", "v3"]:
            digest = hashlib.sha256(dumps(openapi_v3_core())).hexdigest()[:32].upper()
            return {"paths": {"api/v1": {"serverRelativeURL": f"/openapi/v3/api/v1?hash={digest}"}}}
        if parts == ["openapi", "v3", "api", "v1"]:
            return openapi_v3_core()
        return None

    def _lab(self, req: Request, role: str, rest: list[str]) -> Response:
        if role != "admin":
            raise ApiError(403, "Forbidden",
                           f'User "{self._user()}" cannot use the lab control API')
        if rest == ["stats"] and req.method == "GET":
            return 200, self.stats(), []
        if rest == ["faults"] and req.method == "POST":
            body = req.json()
            if not isinstance(body, dict) or not all(
                    isinstance(body.get(k), str) for k in ("kind", "name", "action")):
                raise ApiError(400, "BadRequest", 'a fault is {"kind": "node"|"pod", '
                               '"name": "...", "action": "down"|"up"|"kill"}')
            try:
                result = self.faults(body["kind"], body["name"], body["action"])
            except KeyError:
                raise ApiError(404, "NotFound",
                               f'{body["kind"]} "{body["name"]}" not found') from None
            except ValueError as err:
                raise ApiError(400, "BadRequest", str(err)) from None
            return 200, result, []
        if rest in (["stats"], ["faults"]):
            raise ApiError(405, "MethodNotAllowed", f"{req.method} is not supported here")
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _resource(self, req: Request, role: str, group: str, parts: list[str]) -> Response:
        namespace = None
        if parts[0] == "namespaces" and len(parts) >= 3:
            namespace, parts = parts[1], parts[2:]
        resource, name = parts[0], (parts[1] if len(parts) > 1 else None)
        sub = parts[2] if len(parts) > 2 else None
        if len(parts) > 3 or (sub and (resource, sub) != ("services", "status")):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        known = {r["name"] for r in (GROUPS[group] if group else CORE_RESOURCES)}
        if resource not in known:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespaced = resource not in ("nodes", "namespaces")
        if namespace is not None and not namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if req.query.get("watch") in ("1", "true"):
            raise ApiError(405, "MethodNotAllowed", "watch is not supported by the lab API server")
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}.get(req.method)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"{req.method} is not supported")
        self._authorize(role, verb, resource, namespace, name, group)
        if namespace is not None and namespace not in self.state.namespaces and verb != "list":
            raise _not_found("namespaces", namespace)
        if resource == "services" and verb not in ("get", "list"):
            if sub:
                raise ApiError(405, "MethodNotAllowed", "the lab serves services/status read-only")
            return self._write_service(req, verb, namespace, name)
        if resource == "namespaces" and verb == "create" and name is None:
            return self._create_namespace(req)
        if verb not in ("get", "list"):
            raise ApiError(405, "MethodNotAllowed",
                           f"{verb} is not supported on {resource} by the lab API server")
        return self._read(req, group, resource, namespace, name)

    # -- reads --------------------------------------------------------------------------

    def _read(self, req: Request, group: str, resource: str, namespace: str | None,
              name: str | None) -> Response:
        kind, api_version = _KINDS[(group, resource)]
        table = wants_table(req.accept)
        if resource == "nodes":
            return self._nodes(req, name, table)
        items = self._items(group, resource, namespace, name)
        if name is not None:
            found = next((i for i in items if i["metadata"]["name"] == name), None)
            if found is None:
                raise _not_found(resource, name, group)
            if table:
                meta = {"resourceVersion": found["metadata"].get("resourceVersion", "")}
                return 200, make_table(resource, [found], meta, req.query.get("includeObject", ""),
                                       kind, api_version), []
            return 200, {"kind": kind, "apiVersion": api_version, **found}, []
        items = self._filter(req, resource, items)
        page, list_meta = self._page(req, [(i["metadata"]["name"], i) for i in items])
        if table:
            return 200, make_table(resource, page, list_meta, req.query.get("includeObject", ""),
                                   kind, api_version), []
        return 200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": list_meta,
                     "items": page}, []

    def _node_index(self) -> dict[str, LabNode]:
        return {n.name: n for n in self.state.nodes}

    def _items(self, group: str, resource: str, namespace: str | None,
               name: str | None = None) -> list[dict]:
        state = self.state

        def in_ns(ns: str) -> bool:
            return namespace is None or ns == namespace

        services = [s for s in state.services.values() if in_ns(s["metadata"]["namespace"])]
        if resource == "namespaces":
            return [render_namespace(n, self.started) for n in sorted(state.namespaces)]
        if resource == "services":
            return [render_service(s) for s in services]
        if resource == "pods":
            if not in_ns(state.namespace):
                return []
            nodes = self._node_index()
            return [render_pod(state, p, nodes) for p in state.pods]
        if resource == "endpoints":
            return [render_endpoints(state, s) for s in services if s["spec"].get("selector")]
        if resource == "endpointslices":
            nodes = self._node_index()
            return [render_endpointslice(state, s, nodes) for s in services
                    if s["spec"].get("selector")]
        if resource == "events":
            if not in_ns(state.namespace):
                return []
            core = render_events(state, self._node_index())
            return [events_v1(e) for e in core] if group else core
        if resource == "leases":
            if not in_ns("kube-node-lease"):
                return []
            return [render_lease(n) for n in state.nodes if name in (None, n.name)]
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _filter(self, req: Request, resource: str, items: list[dict]) -> list[dict]:
        labels = parse_label_selector(req.query.get("labelSelector", ""))
        fields = parse_field_selector(req.query.get("fieldSelector", ""),
                                      _FIELD_SELECTORS.get(resource, ("metadata.name",
                                                                       "metadata.namespace")))
        aliases = {"source": "source.component"}
        if resource == "events" and "regarding" in (items[0] if items else {}):
            aliases = {f"involvedObject.{k}": f"regarding.{k}"
                       for k in ("kind", "name", "namespace", "uid", "apiVersion")}
            aliases["source"] = "deprecatedSource.component"
        if labels:
            items = [i for i in items if labels_match(labels, i["metadata"].get("labels"))]
        if fields:
            items = [i for i in items if fields_match(fields, i, aliases)]
        return items

    def _page(self, req: Request, keyed: list[tuple[str, Any]]) -> tuple[list, dict]:
        """Apply `limit`/`continue` to (name, item) pairs; returns (items, list metadata)."""
        rv = str(self.state.resource_version)
        start = 0
        token = req.query.get("continue")
        if token:
            start = self._decode_continue(token, [k for k, _ in keyed])
        try:
            limit = int(req.query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "limit must be an integer") from None
        end = len(keyed) if limit <= 0 else min(len(keyed), start + limit)
        meta: dict = {"resourceVersion": rv}
        if end < len(keyed):
            last = keyed[end - 1][0] if end > 0 else ""
            raw = dumps({"v": "meta.k8s.io/v1", "rv": int(rv), "start": last, "offset": end})
            meta["continue"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            meta["remainingItemCount"] = len(keyed) - end
        return [item for _, item in keyed[start:end]], meta

    @staticmethod
    def _decode_continue(token: str, names: list[str]) -> int:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            last, offset = str(data["start"]), int(data["offset"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "BadRequest", "continue key is not valid: the continue token "
                           "could not be decoded") from None
        # Resume after the last name served (robust to changes), else at the offset.
        if 0 < offset <= len(names) and names[offset - 1] == last:
            return offset
        try:
            return names.index(last) + 1
        except ValueError:
            return min(max(offset, 0), len(names))

    def _nodes(self, req: Request, name: str | None, table: bool) -> Response:
        state = self.state
        include = req.query.get("includeObject", "")
        if name is not None:
            for index, node in enumerate(state.nodes):
                if node.name == name:
                    item, _ = self.nodes.get(state, node, index)
                    if table:
                        meta = {"resourceVersion": item["metadata"]["resourceVersion"]}
                        return 200, make_table("nodes", [item], meta, include, "Node", "v1"), []
                    return 200, {"kind": "Node", "apiVersion": "v1", **item}, []
            raise _not_found("nodes", name)
        labels = parse_label_selector(req.query.get("labelSelector", ""))
        fields = parse_field_selector(req.query.get("fieldSelector", ""),
                                      _FIELD_SELECTORS["nodes"])
        keyed = []
        for index, node in enumerate(state.nodes):
            if labels or fields:
                item, _ = self.nodes.get(state, node, index)
                if labels and not labels_match(labels, item["metadata"]["labels"]):
                    continue
                if fields and not fields_match(fields, item, {}):
                    continue
            keyed.append((node.name, (index, node)))
        page, meta = self._page(req, keyed)
        rendered = [self.nodes.get(state, node, index) for index, node in page]
        if table:
            return 200, make_table("nodes", [i for i, _ in rendered], meta, include, "Node",
                                   "v1"), []
        # Splice cached item bytes: this is what keeps a 500-node page in milliseconds.
        head = dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": meta})[:-1]
        blob = head + b',"items":[' + b",".join(b for _, b in rendered) + b"]}"
        return 200, blob, [("Content-Type", "application/json")]

    # -- writes -------------------------------------------------------------------------

    def _create_namespace(self, req: Request) -> Response:
        body = req.json()
        meta = body.get("metadata") if isinstance(body, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
            raise ApiError(422, "Invalid", "Namespace.metadata.name: Required value: a lowercase "
                           "RFC 1123 label is required")
        if name in self.state.namespaces:
            raise ApiError(409, "AlreadyExists", f'namespaces "{name}" already exists',
                           {"name": name, "kind": "namespaces"})
        if req.query.get("dryRun") != "All":
            self.state.namespaces.add(name)
            self.state.changed()
        return 201, {"kind": "Namespace", "apiVersion": "v1",
                     **render_namespace(name, _now_str())}, []

    def _write_service(self, req: Request, verb: str, namespace: str | None,
                       name: str | None) -> Response:
        state = self.state
        namespace = namespace or state.namespace
        mode = req.query.get("fieldValidation") or "Warn"
        if mode not in ("Ignore", "Warn", "Strict"):
            raise ApiError(400, "BadRequest", f"fieldValidation: invalid value {mode!r}: "
                           "supported values are Ignore, Warn, Strict")
        dry_run = req.query.get("dryRun")
        if dry_run not in (None, "", "All"):
            raise ApiError(400, "BadRequest", f'dryRun: Unsupported value: "{dry_run}": '
                           'supported values: "All"')
        if verb == "create" and name is not None:
            raise ApiError(405, "MethodNotAllowed", "POST to a named service is not supported")
        if verb != "create" and name is None:
            raise ApiError(405, "MethodNotAllowed", f"{verb} needs a service name")
        current = state.service(namespace, name) if name else None
        if verb in ("update", "patch", "delete") and current is None:
            raise _not_found("services", name or "")
        if verb == "delete":
            deleted = {"kind": "Service", "apiVersion": "v1", **render_service(current)}
            if not dry_run:
                state.delete_service(namespace, name or "")
            return 200, deleted, []
        body = req.json()
        if verb == "patch":
            body = self._apply_patch(req, current, body)
        obj, warnings = validate_service(body, mode)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                           "match the namespace sent on the request")
        if verb == "update" and meta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object "
                           f"({meta.get('name')}) does not match the name on the URL ({name})")
        if verb == "update" and meta.get("resourceVersion") not in (
                None, "", current["metadata"].get("resourceVersion")):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on services "{name}": '
                           "the object has been modified; please apply your changes to the "
                           "latest version and try again",
                           {"name": name, "kind": "services"})
        meta["namespace"] = namespace
        obj["kind"], obj["apiVersion"] = "Service", "v1"
        if verb == "create" and meta.get("generateName") and not meta.get("name"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        check_service(obj)
        headers = [("Warning", _warning_header(w)) for w in warnings]
        if verb == "create":
            if dry_run:
                return 201, _preview_service(state, obj, None), headers
            return 201, _with_kind(state.create_service(obj)), headers
        if dry_run:
            return 200, _preview_service(state, obj, current), headers
        return 200, _with_kind(state.replace_service(namespace, name or "", obj)), headers

    def _apply_patch(self, req: Request, current: dict, patch: Any) -> Any:
        ctype = req.content_type
        base = copy.deepcopy(current)
        if ctype == "application/strategic-merge-patch+json":
            return strategic_merge(base, patch)
        if ctype == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "merge patch must be a JSON object")
            return merge_patch(base, patch)
        if ctype == "application/json-patch+json":
            return json_patch(base, patch)
        raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown '
                       f'format - accepted media types include: application/json-patch+json, '
                       f'application/merge-patch+json, application/strategic-merge-patch+json '
                       f'(got "{ctype}")')


def _warning_header(text: str) -> str:
    """An RFC 7234 warning (code 299) as Kubernetes sends it: quoted, with quotes escaped."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'299 - "{quoted}"'


def _with_kind(svc: dict) -> dict:
    return {"kind": "Service", "apiVersion": "v1", **render_service(svc)}


def _preview_service(state: LabState, obj: dict, previous: dict | None) -> dict:
    """What a create/replace would store, without storing it (dryRun=All)."""
    if previous is None:
        meta = obj["metadata"]
        if not meta.get("name"):
            raise LabApiError(422, "Invalid", "Service.metadata.name: Required value")
        if (meta["namespace"], meta["name"]) in state.services:
            raise LabApiError(409, "AlreadyExists", f'services "{meta["name"]}" already exists')
        meta.setdefault("uid", _stable_uid("dry-run", meta["namespace"], meta["name"]))
        meta.setdefault("creationTimestamp", _now_str())
    else:
        for key in ("uid", "creationTimestamp"):
            obj["metadata"][key] = previous["metadata"][key]
    # `_normalise` is the state's defaulting/allocation without the store: exactly a dry run.
    rng_state = state.rng.getstate()
    try:
        preview = state._normalise(copy.deepcopy(obj), previous=previous)
    finally:
        state.rng.setstate(rng_state)  # a dry run must not change later allocations
    # Nothing was stored, so the version is the stored one (none yet for a create).
    if previous is None:
        preview["metadata"].pop("resourceVersion", None)
    else:
        preview["metadata"]["resourceVersion"] = previous["metadata"].get("resourceVersion")
    return _with_kind(preview)




_KINDS = {
    ("coordination.k8s.io", "leases"): ("Lease", "coordination.k8s.io/v1"),
    ("", "nodes"): ("Node", "v1"),
    ("", "namespaces"): ("Namespace", "v1"),
    ("", "services"): ("Service", "v1"),
    ("", "pods"): ("Pod", "v1"),
    ("", "endpoints"): ("Endpoints", "v1"),
    ("", "events"): ("Event", "v1"),
    ("discovery.k8s.io", "endpointslices"): ("EndpointSlice", "discovery.k8s.io/v1"),
    ("events.k8s.io", "events"): ("Event", "events.k8s.io/v1"),
}
_FIELD_SELECTORS = {
    "nodes": ("metadata.name", "spec.unschedulable"),
    "pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
             "spec.schedulerName", "spec.serviceAccountName", "status.phase", "status.podIP",
             "status.nominatedNodeName"),
    "events": ("metadata.name", "metadata.namespace", "involvedObject.kind",
               "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "services": ("metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"),
}
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
            415: "Unsupported Media Type", 422: "Unprocessable Entity",
            500: "Internal Server Error"}


# ---------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------


class _Server(pywsgi.WSGIServer):
    """pywsgi with TCP_NODELAY (small JSON replies must not wait for Nagle) and quiet TLS errors."""

    def do_read(self):  # type: ignore[override]
        result = super().do_read()
        if result:
            with contextlib.suppress(OSError):
                result[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return result

    def wrap_socket_and_handle(self, client_socket, address):  # type: ignore[override]
        try:
            return super().wrap_socket_and_handle(client_socket, address)
        except (ssl.SSLError, ConnectionError, TimeoutError) as err:
            # A client that hangs up or distrusts our CA mid-handshake is not a server error.
            log.debug("TLS connection from %s ended: %s", address, err)
            return None


def serve(
    state: LabState,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certfile: str,
    keyfile: str,
    tokens: dict[str, str],
    stats: StatsFn,
    faults: FaultsFn,
) -> pywsgi.WSGIServer:
    """Start serving the Kubernetes API for `state` over HTTPS; returns the started server."""
    bad = sorted({r for r in tokens.values() if r not in ("admin", "restricted")})
    if bad:
        raise ValueError(f"unknown token role(s): {', '.join(bad)} (use admin or restricted)")
    app = ApiServer(state, tokens, stats, faults)
    app.warm()  # ~0.1 ms a node: 5 000 API-only nodes cost half a second here, not per page
    server = _Server((host, port), app, certfile=certfile, keyfile=keyfile, log=None,
                     error_log=log)
    server.start()
    return server


# ---------------------------------------------------------------------------------------
# Stand-alone: the API alone, no data plane (handy for tests and poking with kubectl)
# ---------------------------------------------------------------------------------------


def _standalone_faults(state: LabState) -> FaultsFn:
    def faults(kind: str, name: str, action: str) -> dict:
        if kind == "node" and action in ("down", "up"):
            node = state.node(name)
            node.ready = action == "up"
            state.set_node_up(name, action == "up")
            return {"kind": kind, "name": name, "action": action, "ready": node.ready}
        if kind == "pod" and action == "kill":
            pod = state.kill_pod(name)
            return {"kind": kind, "name": pod.name, "action": action}
        raise ValueError(f"unsupported fault: {kind} {action} (node down|up, pod kill)")

    return faults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.lab.apiserver",
        description="Serve the lab's Kubernetes API alone (no data plane) until interrupted.")
    parser.add_argument("--state-dir", required=True, help="where TLS files, kubeconfigs and "
                        "the port file are written")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any free one)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--pods", type=int, default=6)
    parser.add_argument("--extra-api-nodes", type=int, default=0)
    parser.add_argument("--service-type", default="NodePort")
    parser.add_argument("--node-port", type=int)
    parser.add_argument("--policy", default="Cluster")
    parser.add_argument("--affinity", default="None")
    parser.add_argument("--block", type=int, default=0)
    parser.add_argument("--no-external-ip", action="store_true")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        state = LabState(nodes=args.nodes, pods=args.pods, service_type=args.service_type,
                         node_port=args.node_port, policy=args.policy, affinity=args.affinity,
                         block=args.block, external_ip=not args.no_external_ip,
                         extra_api_nodes=args.extra_api_nodes, namespace=args.namespace,
                         seed=args.seed)
    except (ValueError, LabApiError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "port").unlink(missing_ok=True)  # a stale one would say "ready" too early
    ca_pem, certfile, keyfile = make_tls(state_dir)
    admin, restricted = secrets.token_urlsafe(32), secrets.token_urlsafe(32)

    def stats() -> dict:
        return {"nodes": len(state.nodes), "pods": len(state.pods),
                "services": len(state.services), "resourceVersion": state.resource_version,
                "dataPlane": False}

    server = serve(state, port=args.port, certfile=certfile, keyfile=keyfile,
                   tokens={admin: "admin", restricted: "restricted"}, stats=stats,
                   faults=_standalone_faults(state))
    url = f"https://127.0.0.1:{server.server_port}"
    write_kubeconfig(state_dir / "kubeconfig", url, ca_pem, admin, namespace=args.namespace)
    write_kubeconfig(state_dir / "kubeconfig-restricted", url, ca_pem, restricted,
                     context="lab-restricted", namespace=args.namespace)
    # The port file is written last: its presence means "ready".
    _write_private(state_dir / "port", f"{server.server_port}\n".encode())
    print(f"lab API server on {url}  kubeconfig: {state_dir / 'kubeconfig'}", flush=True)

    import gevent
    import gevent.event

    stop = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    server.stop(timeout=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
