"""Service validation (fieldValidation) and merge, strategic-merge and JSON patches."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from harness.lab.state import ApiError

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
