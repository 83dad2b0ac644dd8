"""The discovery and OpenAPI documents kubectl needs before it talks to the lab."""

from __future__ import annotations

import base64
import hashlib

from harness.lab.apiobjects import KUBE_VERSION


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
