"""`meta.k8s.io/v1` Tables: what `kubectl get` prints for the lab's objects."""

from __future__ import annotations

from collections.abc import Callable

from harness.lab.apiobjects import age

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
    return [meta["name"], state, ",".join(roles) or "<none>", age(meta.get("creationTimestamp")),
            info["kubeletVersion"], addrs.get("InternalIP", "<none>"),
            addrs.get("ExternalIP", "<none>"), info["osImage"], info["kernelVersion"],
            info["containerRuntimeVersion"]]


def _pod_row(item: dict) -> list:
    statuses = item["status"].get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    return [item["metadata"]["name"], f"{ready}/{len(item['spec']['containers'])}",
            item["status"].get("phase", "Unknown"), str(restarts),
            age(item["metadata"].get("creationTimestamp")),
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
            age(item["metadata"].get("creationTimestamp")), selector or "<none>"]


def _endpoints_row(item: dict) -> list:
    pairs = [f"{a['ip']}:{p['port']}" for s in item.get("subsets") or []
             for p in s.get("ports") or [] for a in s.get("addresses") or []]
    shown = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [item["metadata"]["name"], shown or "<none>",
            age(item["metadata"].get("creationTimestamp"))]


def _slice_row(item: dict) -> list:
    ports = ",".join(str(p.get("port")) for p in item.get("ports") or []) or "<unset>"
    addrs = [a for e in item.get("endpoints") or [] for a in e.get("addresses", [])]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [item["metadata"]["name"], item["addressType"], ports, shown or "<unset>",
            age(item["metadata"].get("creationTimestamp"))]


def _event_row(item: dict) -> list:
    ref = item.get("involvedObject") or item.get("regarding") or {}
    when = item.get("lastTimestamp") or item.get("deprecatedLastTimestamp")
    return [age(when), item.get("type", ""), item.get("reason", ""),
            f"{ref.get('kind', '').lower()}/{ref.get('name', '')}",
            item.get("message") or item.get("note", "")]


def _namespace_row(item: dict) -> list:
    return [item["metadata"]["name"], item["status"]["phase"],
            age(item["metadata"].get("creationTimestamp"))]


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
        i["metadata"]["name"], age(i["metadata"].get("creationTimestamp"))]))
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
