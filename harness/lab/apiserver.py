"""A minimal Kubernetes REST API over HTTPS, served from a `LabState`, as kubectl expects it.

The lab process (``process.py``) serves it beside the pods and the proxy; ``python -m
harness.lab.apiserver`` serves it alone (no data plane) for tests and for poking with kubectl.
"""

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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from gevent import pywsgi

from harness.core.faults import BODY_FORMAT
from harness.errors import LabError
from harness.lab.apiobjects import (
    KUBE_VERSION,
    MAX_BODY,
    RESTRICTED_SA,
    dumps,
    events_v1,
    not_found,
    now_str,
    render_endpoints,
    render_endpointslice,
    render_events,
    render_lease,
    render_namespace,
    render_node,
    render_pod,
    render_service,
    stable_uid,
    status,
)
from harness.lab.apitables import make_table, wants_table
from harness.lab.config import add_arguments, from_args
from harness.lab.openapi import (
    CORE_RESOURCES,
    GROUPS,
    SYSTEM_NAMESPACES,
    api_group_list,
    openapi_v3_core,
)
from harness.lab.patching import (
    check_service,
    json_patch,
    merge_patch,
    strategic_merge,
    validate_service,
)
from harness.lab.selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from harness.lab.state import ApiError, LabNode, LabState

log = logging.getLogger(__name__)

StatsFn = Callable[[], dict]
# (kind, name, action) -> what it did; it refuses with ApiError, or ValueError for a 400.
FaultsFn = Callable[[str, str, str], dict]
Response = tuple[int, Any, list[tuple[str, str]]]


# ---------------------------------------------------------------------------------------
# TLS and kubeconfig
# ---------------------------------------------------------------------------------------


def write_private(path: Path, data: bytes | str) -> None:
    """Write a file readable by its owner only, atomically (temp file + rename): the lab's
    keys, tokens and lab.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
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
    write_private(directory / "ca.crt", ca_pem)
    write_private(certfile, b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    write_private(keyfile, cert.private_key_pem.bytes())
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

    write_private(Path(path), yaml.safe_dump(config, sort_keys=False).encode())


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
        self.started = now_str()
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
                raise ApiError(400, "BadRequest", f"a fault is {BODY_FORMAT}")
            return 200, self.faults(body["kind"], body["name"], body["action"]), []
        if rest == ["faults"] and req.method == "GET":
            # The fault log: every fault the lab applied, whoever sent it (?since=EPOCH).
            since = None
            if req.query.get("since"):
                try:
                    since = float(req.query["since"])
                except ValueError:
                    raise ApiError(400, "BadRequest", "since: epoch seconds expected, got "
                                   f"{req.query['since']!r}") from None
            return 200, {"kind": "FaultLog", "faults": self.state.faults_since(since)}, []
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
            raise not_found("namespaces", namespace)
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
                raise not_found(resource, name, group)
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
            raise not_found("nodes", name)
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
                     **render_namespace(name, now_str())}, []

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
            raise not_found("services", name or "")
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
            raise ApiError(422, "Invalid", "Service.metadata.name: Required value")
        if (meta["namespace"], meta["name"]) in state.services:
            raise ApiError(409, "AlreadyExists", f'services "{meta["name"]}" already exists')
        meta.setdefault("uid", stable_uid("dry-run", meta["namespace"], meta["name"]))
        meta.setdefault("creationTimestamp", now_str())
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


# The lab settings the stand-alone server takes (no data plane: no pod or proxy settings).
STANDALONE_SETTINGS = ("nodes", "pods", "extra_api_nodes", "service_type", "node_port", "policy",
                       "affinity", "external_ip", "block", "namespace", "seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.lab.apiserver",
        description="Serve the lab's Kubernetes API alone (no data plane) until interrupted.")
    parser.add_argument("--state-dir", required=True, help="where TLS files, kubeconfigs and "
                        "the port file are written")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any free one)")
    add_arguments(parser, STANDALONE_SETTINGS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        state = LabState(from_args(args))
    except LabError as err:
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
                   faults=state.apply_fault)
    url = f"https://127.0.0.1:{server.server_port}"
    write_kubeconfig(state_dir / "kubeconfig", url, ca_pem, admin, namespace=state.namespace)
    write_kubeconfig(state_dir / "kubeconfig-restricted", url, ca_pem, restricted,
                     context="lab-restricted", namespace=state.namespace)
    # The port file is written last: its presence means "ready".
    write_private(state_dir / "port", f"{server.server_port}\n".encode())
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
