"""``--control-plane real``: the lab as a real cluster on one machine.

The kernel datapath's network (``kernel.py``, hosted mode: gateway, node namespaces, links and
routes), the control plane (``realcp.py``: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), one real kube-proxy per node namespace, the lab's kubelet (``kubelet.py``)
and its cloud (``cloud.py``). The lab then creates its application as anyone would, through
the API: a Deployment of helloworld and its Service; from there on the controllers, the
scheduler, the kubelet and kube-proxy do what they do on any cluster.

The lab's control API (faults, served counts, the fault log) is a small HTTPS server of its
own on loopback (``control_url`` in lab.json), beside the real API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.core.faults import check_fault
from harness.errors import HarnessError, LabError
from harness.lab.cluster import LAB_SCHEMA
from harness.lab.config import LabConfig
from harness.lab.state import ApiError, LabState

READY_TIMEOUT_S = 180.0
APP_IMAGE = "nodeport-harness/helloworld:0.1.0"


def app_objects(config: LabConfig, namespace: str, app: str) -> tuple[dict, dict]:
    """The lab's application: a Deployment of helloworld and its Service, as the emulated lab
    shows them (port 8080 -> the container's http-server port)."""
    labels = {"app": app}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {"replicas": config.pods, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "automountServiceAccountToken": False, "enableServiceLinks": False,
                     "terminationGracePeriodSeconds": 5,
                     # Even over the nodes; with --placement each node's pod capacity is
                     # its count until the lab is ready, and the spread only prefers.
                     "topologySpreadConstraints": [{
                         "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway" if config.placement
                         else "DoNotSchedule",
                         "labelSelector": {"matchLabels": labels}}],
                     "containers": [{
                         "name": app, "image": APP_IMAGE,
                         "args": ["--port", "8080", "--host", "0.0.0.0", "--service-ms",
                                  f"{config.pod_service_ms:g}", "--concurrency",
                                  str(config.pod_concurrency)],
                         "ports": [{"name": "http-server", "containerPort": 8080,
                                    "protocol": "TCP"}],
                         "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {
                                     "fieldPath": "metadata.name"}}},
                                 {"name": "NODE_NAME", "valueFrom": {"fieldRef": {
                                     "fieldPath": "spec.nodeName"}}}],
                         "readinessProbe": {"httpGet": {"path": "/healthz",
                                                        "port": "http-server"},
                                            "periodSeconds": 1, "timeoutSeconds": 1,
                                            "failureThreshold": 2}}]}}}}
    spec: dict[str, Any] = {"type": config.service_type, "selector": labels,
                            "ports": [{"protocol": "TCP", "port": 8080,
                                       "targetPort": "http-server"}],
                            "sessionAffinity": config.affinity}
    if config.service_type != "ClusterIP":
        spec["externalTrafficPolicy"] = config.policy
        if config.node_port:
            spec["ports"][0]["nodePort"] = config.node_port
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": app, "namespace": namespace, "labels": labels},
               "spec": spec}
    return deployment, service


class RealLab:
    """Everything of one real lab; ``start()`` returns once the application serves through
    every node (and the LoadBalancer), ``stop()`` takes it all down."""

    def __init__(self, state: LabState, config: LabConfig, log: Callable[[str], None]):
        from harness.lab.binaries import find
        from harness.lab.kernel import KernelDatapath

        assert config.state_dir is not None
        self.state = state
        self.config = config
        self.dir = Path(config.state_dir)
        self.log = log
        self.bins = find()  # LabError naming `nodeport-harness lab build` when missing
        self.datapath = KernelDatapath(state, config, self.dir, log=log, hosted=True)
        self.control_plane: Any = None
        self.kubelet: Any = None
        self.cloud: Any = None
        self.node_port: int | None = None

    def start(self) -> RealLab:
        from harness.lab.cloud import Cloud
        from harness.lab.kernel import _die_with_parent
        from harness.lab.kubelet import Kubelet
        from harness.lab.realcp import ControlPlane

        self.datapath.start()
        lay = self.datapath.layout
        cp = self.control_plane = ControlPlane(lay, self.dir, self.bins, self.state.namespace,
                                               self.log, die_with_parent=_die_with_parent)
        cp.start()
        self.log(f"real control plane: {cp.version} at {cp.api_url}")
        cp.bootstrap(self.state.namespace)
        nodes = self.state.live_nodes()
        capacity = ({n.name: count for n, count in zip(nodes, self.config.placement,
                                                        strict=True)}
                    if self.config.placement else None)
        self.kubelet = Kubelet(cp.api("kubelet"), self.datapath, nodes, self.node_up,
                               self.log, max_pods=capacity).start()
        for node in nodes:
            cp.start_kube_proxy(node.name, lay.node_ns(node.name), lay.pod_net)
        self.cloud = Cloud(cp.api("admin"), lay, nodes, self.config.lb_check_s, self.log)
        deployment, service = app_objects(self.config, self.state.namespace, self.state.app)
        api = cp.api()
        ns = self.state.namespace
        api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)
        svc = api.create(f"/api/v1/namespaces/{ns}/services", service)
        ports = (svc.get("spec") or {}).get("ports") or [{}]
        self.node_port = ports[0].get("nodePort")
        self.cloud.start()
        self._wait_ready()
        if self.config.placement:
            # The placement is made: from now on the nodes have a node's usual room, and a
            # replacement goes where kube-scheduler puts it.
            self.kubelet.max_pods = {}
            for node in nodes:
                self.kubelet.heartbeat(node)
        return self

    def node_up(self, name: str) -> bool:
        return self.state.node(name).up

    def stop(self) -> None:
        for part in (self.cloud, self.kubelet):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if self.control_plane is not None:
            self.control_plane.stop()
        self.datapath.stop()

    # -- readiness --------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        """Until every replica is ready, in the EndpointSlices, and reachable through every
        node's NodePort (kube-proxy synced) and the LoadBalancer."""
        from harness.lab.cloud import probe

        api = self.control_plane.api()
        ns, app = self.state.namespace, self.state.app
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = "the Deployment's pods"
        while time.monotonic() < deadline:
            self.control_plane.check()
            time.sleep(0.25)
            dep = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{app}")
            if (dep.get("status") or {}).get("readyReplicas", 0) < self.config.pods:
                continue
            waiting = "the EndpointSlices"
            slices = api.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?"
                             + urllib.parse.urlencode({"labelSelector":
                                                       f"kubernetes.io/service-name={app}"}))
            ready = sum(1 for s in slices.get("items") or () for e in s.get("endpoints") or ()
                        if (e.get("conditions") or {}).get("ready"))
            if ready < self.config.pods:
                continue
            if self.config.service_type == "ClusterIP" or not self.node_port:
                return
            waiting = "kube-proxy's rules on every node"
            with_pods = {w.node for w in self.kubelet.workers.values()}
            targets = [n.external_ip or n.internal_ip for n in self.state.live_nodes()
                       if self.config.policy == "Cluster" or n.name in with_pods]
            if self.config.service_type == "LoadBalancer":
                targets.append(self.datapath.layout.lb_ip)
            if all(probe(ip, 8080 if ip == self.datapath.layout.lb_ip else self.node_port, 1.0)
                   for ip in targets):
                return
        raise LabError(f"the real lab did not become ready within {READY_TIMEOUT_S:.0f} s "
                       f"(waiting for {waiting}); see {self.dir / 'logs'}")

    # -- the lab's control API --------------------------------------------------------------

    def fault(self, kind: str, name: str, action: str) -> dict:
        """A lab fault; HarnessError with an HTTP code attribute for a bad one."""
        fault = check_fault(kind, name, action)
        if fault.kind == "node":
            return self.state.apply_fault(kind, name, action)
        at = time.time()
        if fault.action == "restart":  # the pod deleted: its ReplicaSet replaces it
            worker = self.kubelet.find(name)
            if worker is None:
                raise KeyError(name)
            api = self.control_plane.api()
            path = f"/api/v1/namespaces/{worker.namespace}/pods"
            owner = [o.get("uid") for o in worker.api_pod["metadata"].get("ownerReferences")
                     or ()]
            before = {p["metadata"]["name"] for p in api.get(path).get("items") or ()}
            api.request("DELETE", f"{path}/{name}")
            result = {**fault.to_dict(), "node": worker.node}
            deadline = time.monotonic() + 3.0  # the ReplicaSet creates the replacement now
            while owner and time.monotonic() < deadline:
                new = [p for p in api.get(path).get("items") or ()
                       if p["metadata"]["name"] not in before and owner == [
                           o.get("uid") for o in p["metadata"].get("ownerReferences") or ()]]
                if new:
                    result["replacement"] = new[0]["metadata"]["name"]
                    break
                time.sleep(0.05)
            return self.state.log_fault(at, result)
        result = self.kubelet.kill(name)
        return self.state.log_fault(at, {**fault.to_dict(), **result})

    def info(self, reservation_block: int, kubeconfig: Path, restricted: Path | None
             ) -> dict[str, Any]:
        cp = self.control_plane
        api = cp.api()
        ns, app = self.state.namespace, self.state.app
        svc = api.get(f"/api/v1/namespaces/{ns}/services/{app}")
        port = ((svc.get("spec") or {}).get("ports") or [{}])[0]
        pods = api.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}")
        config = self.config
        return {
            "schema": LAB_SCHEMA, "pid": os.getpid(), "block": reservation_block,
            "state_dir": str(self.dir.resolve()), "api_url": cp.api_url,
            "control_url": "", "ca": str((self.dir / "ca.crt").resolve()),
            "token": cp.tokens["admin"], "kubeconfig": str(kubeconfig.resolve()),
            "restricted_kubeconfig": str(restricted.resolve()) if restricted else None,
            "namespace": ns, "service": app, "service_type": config.service_type,
            "service_port": port.get("port"), "node_port": port.get("nodePort"),
            "lb_address": self.datapath.layout.lb_ip
            if config.service_type == "LoadBalancer" else None,
            "policy": config.policy, "affinity": config.affinity, "proxy_mode": "iptables",
            "data_plane": config.data_plane, "datapath": "kernel", "control_plane": "real",
            "kubernetes_version": cp.version, "hop_ms": 0.0,
            "lb_check_s": config.lb_check_s, "restart_delay_s": config.restart_delay_s,
            "nodes": [{"name": n.name, "external_ip": n.external_ip,
                       "internal_ip": n.internal_ip, "zone": n.zone}
                      for n in self.state.live_nodes()],
            "api_only_nodes": 0,
            "pods": [{"name": p["metadata"]["name"], "node": p["spec"].get("nodeName"),
                      "ip": (p.get("status") or {}).get("podIP"), "port": 8080}
                     for p in pods.get("items") or ()],
            "pod_service_ms": config.pod_service_ms,
            "pod_concurrency": config.pod_concurrency, "started": time.time(),
        }


def control_app(lab: RealLab, token: str) -> Callable:
    """The lab's control API as a WSGI app: GET /lab/v1/stats, GET and POST /lab/v1/faults
    (the same calls and replies as the emulated lab's API server), admin token only."""

    def reply(start_response, code: int, doc: dict) -> list[bytes]:
        body = json.dumps(doc).encode()
        reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                   405: "Method Not Allowed", 422: "Unprocessable Entity",
                   500: "Internal Server Error"}
        start_response(f"{code} {reasons.get(code, 'Error')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))])
        return [body]

    def status(code: int, reason: str, message: str) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                "reason": reason, "message": message}

    def app(environ, start_response):
        import hmac

        given = environ.get("HTTP_AUTHORIZATION") or ""
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return reply(start_response, 401, status(401, "Unauthorized", "Unauthorized"))
        path, method = environ.get("PATH_INFO") or "/", environ.get("REQUEST_METHOD")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING") or "")
        try:
            if path == "/lab/v1/stats" and method == "GET":
                return reply(start_response, 200, lab.datapath.stats())
            if path == "/lab/v1/faults" and method == "GET":
                since = float(query["since"][0]) if query.get("since") else None
                return reply(start_response, 200, {"kind": "FaultLog",
                                                   "faults": lab.state.faults_since(since)})
            if path == "/lab/v1/faults" and method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(min(length, 65536)) or b"{}")
                if not isinstance(body, dict) or not all(
                        isinstance(body.get(k), str) for k in ("kind", "name", "action")):
                    return reply(start_response, 400, status(
                        400, "BadRequest", 'a fault is {"kind": ..., "name": ..., '
                        '"action": ...}'))
                return reply(start_response, 200,
                             lab.fault(body["kind"], body["name"], body["action"]))
            if path in ("/lab/v1/stats", "/lab/v1/faults"):
                return reply(start_response, 405, status(405, "MethodNotAllowed",
                                                          f"{method} is not supported here"))
            return reply(start_response, 404, status(404, "NotFound", "not found"))
        except ApiError as err:
            return reply(start_response, err.code, status(err.code, err.reason, err.message))
        except KeyError as err:
            return reply(start_response, 404, status(404, "NotFound", f"{err.args[0]!r} is "
                                                     "not a node or pod of the lab"))
        except ValueError as err:
            return reply(start_response, 400, status(400, "BadRequest", str(err)))
        except HarnessError as err:  # outside the fault vocabulary
            return reply(start_response, 422, status(422, "Invalid", str(err)))
        except Exception as err:  # the lab keeps serving
            lab.log(f"lab control API: {err!r}")
            return reply(start_response, 500, status(500, "InternalError", str(err)))

    return app
