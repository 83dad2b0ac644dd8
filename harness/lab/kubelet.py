"""The real lab's kubelet: one process-level kubelet for every node of the lab.

It registers the Nodes (addresses, zone labels, capacity, Ready) and renews their Leases, and
for every Pod the scheduler binds to one of them whose image is one the project builds
(``nodeport-harness/helloworld``) it starts the container's command as a process in a pod
network namespace with its own pod address (``KernelDatapath.run_pod``), reports its status
the way a kubelet does (podIP, phase, conditions, containerStatuses), runs its readiness
probe as the manifest says, restarts a container that exited (restartPolicy Always), stops
it on deletion (SIGTERM, then the kill after the grace period) and finalises the delete.

A node that is down (a lab fault: its link is down) has a kubelet that cannot reach the API
server: nothing is reported for it or its pods, its Lease expires and the node lifecycle
controller marks it NotReady and its pods not ready, as on any cluster.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.lab.kubeapi import KubeApi
from harness.lab.realcp import lease_renewal, now_rfc3339

POLL_S = 0.25
HEARTBEAT_S = 5.0
IMAGES = {"nodeport-harness/helloworld": ([sys.executable, "-m", "harness.helloworld"],
                                          ["--port", "8080", "--host", "0.0.0.0"])}
RUNTIME = "nodeport-harness-lab://0.1.0"


def image_command(image: str) -> tuple[list[str], list[str]] | None:
    """(entrypoint, cmd) of an image the lab can run, else None."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    for prefix in ("docker.io/", "localhost/"):
        name = name.removeprefix(prefix)
    return IMAGES.get(name)


class _PodWorker:
    """One pod on one node: its process, probe and status."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]):
        self.kubelet = kubelet
        meta, spec = pod["metadata"], pod["spec"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.node = spec["nodeName"]
        self.spec = spec
        self.container = (spec.get("containers") or [{}])[0]
        self.api_pod = pod
        self.ip: str | None = None
        self.started_at = now_rfc3339()
        self.container_started = ""
        self.restarts = 0
        self.last_state: dict[str, Any] = {}
        self.ready = False
        self.ready_since = now_rfc3339()
        self.waiting: tuple[str, str] | None = None
        self.last_error = ""
        self.successes = self.failures = 0
        self.next_probe = 0.0
        self.deleting = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"kubelet-{self.name}",
                                       daemon=True)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    # -- the container ----------------------------------------------------------------------

    def _argv(self) -> Callable[[Path], list[str]] | None:
        command = image_command(self.container.get("image") or "")
        if command is None:
            return None
        entry, cmd = command
        if self.container.get("command"):
            entry = list(self.container["command"])
            if entry[0] in ("python", "python3"):
                entry[0] = sys.executable
            cmd = []
        if self.container.get("args") is not None:
            cmd = list(self.container["args"])
        return lambda served: [*entry, *cmd, "--served-file", str(served)]

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
               "PYTHONUNBUFFERED": "1", "HOSTNAME": self.name}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.uid, "spec.nodeName": self.node,
                  "spec.serviceAccountName": self.spec.get("serviceAccountName") or "default",
                  "status.podIP": self.ip or "",
                  "status.hostIP": self.kubelet.node_ips.get(self.node, "")}
        for item in self.container.get("env") or ():
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif (ref := (item.get("valueFrom") or {}).get("fieldRef")) is not None:
                env[item["name"]] = fields.get(ref.get("fieldPath", ""), "")
        return env

    def _port(self) -> int:
        for port in self.container.get("ports") or ():
            return int(port.get("containerPort") or 8080)
        return 8080

    def _start(self) -> None:
        argv = self._argv()
        if argv is None:
            self.waiting = ("ErrImagePull", f"the lab runs only the images the project "
                            f"builds ({', '.join(IMAGES)}), not {self.container.get('image')}")
            return
        self.ip = self.kubelet.allocate_ip()
        try:
            self.kubelet.datapath.run_pod(self.name, self.node, self.ip, self._port(), argv,
                                          self._env())
        except (LabError, OSError) as err:
            self.waiting = ("CreateContainerError", str(err))
            return
        self.container_started = now_rfc3339()
        self._arm_probe()

    def _arm_probe(self) -> None:
        probe = self.container.get("readinessProbe") or {}
        self.successes = self.failures = 0
        self.next_probe = time.monotonic() + float(probe.get("initialDelaySeconds") or 0)

    def _process(self):
        pod = self.kubelet.datapath.pods.get(self.name)
        return pod.process if pod is not None else None

    def _check_exit(self) -> None:
        proc = self._process()
        if proc is None or proc.poll() is None:
            return
        code = proc.returncode
        self.last_state = {"terminated": {
            "exitCode": 128 - code if code < 0 else code,
            "reason": "Error" if code else "Completed", "startedAt": self.container_started,
            "finishedAt": now_rfc3339()}}
        self._set_ready(False)
        if (self.spec.get("restartPolicy") or "Always") == "Never":
            return
        self.restarts += 1
        argv = self._argv()
        assert argv is not None
        self.kubelet.datapath.respawn(self.name, argv, self._env())
        self.container_started = now_rfc3339()
        self._arm_probe()

    # -- readiness --------------------------------------------------------------------------

    def _probe(self) -> None:
        probe = self.container.get("readinessProbe")
        if not probe:
            self._set_ready(self._process() is not None)
            return
        now = time.monotonic()
        if now < self.next_probe:
            return
        self.next_probe = now + float(probe.get("periodSeconds") or 10)
        ok = self._probe_once(probe)
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(probe.get("successThreshold") or 1):
                self._set_ready(True)
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(probe.get("failureThreshold") or 3):
                self._set_ready(False)

    def _probe_once(self, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds") or 1)
        port_ref = ((probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port"))
        port = self._port()
        if isinstance(port_ref, int) or (isinstance(port_ref, str) and port_ref.isdigit()):
            port = int(port_ref)
        assert self.ip is not None
        try:
            if "httpGet" in probe:
                conn = http.client.HTTPConnection(self.ip, port, timeout=timeout)
                try:
                    conn.request("GET", probe["httpGet"].get("path") or "/",
                                 headers={"User-Agent": "kube-probe/1.34"})
                    status = conn.getresponse().status
                finally:
                    conn.close()
                return 200 <= status < 400
            import socket

            with socket.create_connection((self.ip, port), timeout=timeout):
                return True
        except (OSError, http.client.HTTPException):
            return False

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self.ready_since = now_rfc3339()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        node_ip = self.kubelet.node_ips.get(self.node)
        ready = "True" if self.ready else "False"
        image = self.container.get("image") or ""
        container: dict[str, Any] = {
            "name": self.container.get("name") or "app", "image": image,
            "imageID": f"{image}@lab", "ready": self.ready, "restartCount": self.restarts,
            "lastState": self.last_state,
            "started": self.waiting is None and self.ip is not None}
        if self.waiting is not None:
            container["state"] = {"waiting": {"reason": self.waiting[0],
                                              "message": self.waiting[1]}}
        else:
            container["state"] = {"running": {"startedAt": self.container_started}}
            container["containerID"] = f"lab://{self.uid}/{self.restarts}"
        out: dict[str, Any] = {
            "phase": "Running" if self.waiting is None else "Pending",
            "hostIP": node_ip, "hostIPs": [{"ip": node_ip}], "startTime": self.started_at,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True",
                 "lastTransitionTime": self.started_at},
                {"type": "Initialized", "status": "True", "lastTransitionTime": self.started_at},
                {"type": "Ready", "status": ready, "lastTransitionTime": self.ready_since},
                {"type": "ContainersReady", "status": ready,
                 "lastTransitionTime": self.ready_since},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.started_at},
            ],
            "containerStatuses": [container]}
        if self.ip:
            out["podIP"], out["podIPs"] = self.ip, [{"ip": self.ip}]
        return out

    def _report(self) -> None:
        wanted = self.status()
        have = self.api_pod.get("status") or {}
        if _summary(wanted) == _summary(have):
            return
        try:
            self.api_pod = self.kubelet.api.merge_patch(self.path + "/status",
                                                        {"status": wanted})
        except LabError as err:  # ApiStatus included; a 404: being deleted
            if getattr(err, "code", None) != 404 and str(err) != self.last_error:
                self.kubelet.log(f"kubelet: status of pod {self.name}: {err}")
            self.last_error = str(err)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._start()
            while not self.deleting.is_set() and not self.kubelet.stopping.is_set():
                if self.kubelet.node_up(self.node):
                    with self.lock:
                        if self.waiting is None:
                            self._check_exit()
                            self._probe()
                        self._report()
                self.deleting.wait(POLL_S)
            self._stop()
        except Exception as err:  # a worker must never take the lab down
            self.kubelet.log(f"kubelet: pod {self.name}: {err!r}")
            self._stop()
        finally:
            self.stopped.set()

    def _stop(self) -> None:
        grace = self.spec.get("terminationGracePeriodSeconds")
        meta_grace = (self.api_pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
        grace = float(meta_grace if meta_grace is not None else (30 if grace is None else grace))
        proc = self._process()
        if proc is not None and proc.poll() is None and not self.kubelet.stopping.is_set():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                proc.wait(timeout=min(grace, 30.0))
        self.kubelet.datapath.remove_pod(self.name)
        self.kubelet.release_ip(self.ip)
        if self.deleting.is_set() and self.kubelet.node_up(self.node):
            # The kubelet's last word: the pod is gone from its node, delete it for good.
            with contextlib.suppress(LabError):
                self.kubelet.api.request("DELETE", self.path, {
                    "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid}})


def _summary(status: dict[str, Any]) -> tuple:
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    containers = tuple((c.get("ready"), c.get("restartCount"), tuple(c.get("state") or ()))
                       for c in status.get("containerStatuses") or ())
    return (status.get("phase"), status.get("podIP"), conditions.get("Ready"),
            conditions.get("ContainersReady"), containers)


class Kubelet:
    """``start()`` registers the nodes and starts the loop; ``stop()`` stops every pod."""

    def __init__(self, api: KubeApi, datapath: Any, nodes: list[Any], node_up:
                 Callable[[str], bool], log: Callable[[str], None],
                 max_pods: dict[str, int] | None = None):
        """``max_pods``: a node's pod capacity (status.allocatable.pods; default 110)."""
        self.api = api
        self.max_pods = max_pods or {}
        self.datapath = datapath
        self.nodes = nodes
        self.node_ips = {n.name: n.internal_ip for n in nodes}
        self.node_up = node_up
        self.log = log
        self.workers: dict[str, _PodWorker] = {}  # uid -> worker
        self.stopping = threading.Event()
        self._ips: set[int] = set()
        self._next_ip = 0
        self._ip_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self.errors = 0

    # -- pod addresses ----------------------------------------------------------------------

    def allocate_ip(self) -> str:
        with self._ip_lock:
            for _ in range(250):
                self._next_ip = self._next_ip % 250 + 1  # round the range, as IPAM does
                if self._next_ip not in self._ips:
                    self._ips.add(self._next_ip)
                    return self.datapath.layout.pod_ip(self._next_ip)
        raise LabError("the lab's pod network (250 addresses) is full")

    def release_ip(self, ip: str | None) -> None:
        if ip:
            with self._ip_lock:
                self._ips.discard(int(ip.rsplit(".", 1)[1]))

    # -- nodes ------------------------------------------------------------------------------

    def start(self) -> Kubelet:
        for node in self.nodes:
            labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
                      "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": node.zone,
                      "node.kubernetes.io/instance-type": "lab"}
            self.api.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                              "metadata": {"name": node.name, "labels": labels},
                                              "spec": {}})
            self.heartbeat(node)
        self._thread.start()
        return self

    def _node_status(self, node: Any) -> dict[str, Any]:
        now = now_rfc3339()
        addresses = [{"type": "InternalIP", "address": node.internal_ip}]
        if node.external_ip:
            addresses.append({"type": "ExternalIP", "address": node.external_ip})
        addresses.append({"type": "Hostname", "address": node.name})
        resources = {"cpu": "4", "memory": "8Gi", "pods": str(self.max_pods.get(node.name, 110)),
                     "ephemeral-storage": "20Gi"}
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{reason}",
             "message": f"kubelet has {text}", "lastHeartbeatTime": now}
            for kind, reason, text in (
                ("MemoryPressure", "SufficientMemory", "sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "no disk pressure"),
                ("PIDPressure", "SufficientPID", "sufficient PID available"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "kubelet is posting ready status",
                           "lastHeartbeatTime": now})
        from harness.lab.binaries import KUBERNETES_VERSION

        return {"addresses": addresses, "capacity": resources, "allocatable": resources,
                "conditions": conditions, "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"kubeletVersion": KUBERNETES_VERSION,
                             "kubeProxyVersion": KUBERNETES_VERSION,
                             "containerRuntimeVersion": RUNTIME, "operatingSystem": "linux",
                             "architecture": "amd64", "osImage": "nodeport-harness lab",
                             "kernelVersion": os.uname().release, "machineID": "",
                             "systemUUID": "", "bootID": ""}}

    def heartbeat(self, node: Any) -> None:
        # The merge patch replaces the conditions and addresses lists whole, as kubelet's
        # strategic patch ends up doing for the fields it owns.
        self.api.merge_patch(f"/api/v1/nodes/{node.name}/status",
                             {"status": self._node_status(node)})
        lease_renewal(self.api, node.name)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while not self.stopping.wait(POLL_S):
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    last_beat = time.monotonic()
                    for node in self.nodes:
                        if self.node_up(node.name):
                            self.heartbeat(node)
                self._sync()
                self.errors = 0
            except LabError as err:
                self.errors += 1
                if self.errors in (1, 10, 100):
                    self.log(f"kubelet: {err}")

    def _sync(self) -> None:
        names = set(self.node_ips)
        items = self.api.get("/api/v1/pods").get("items") or []
        seen = set()
        for pod in items:
            node = (pod.get("spec") or {}).get("nodeName")
            if node not in names:
                continue
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            worker = self.workers.get(uid)
            phase = (pod.get("status") or {}).get("phase")
            if worker is None:
                if pod["metadata"].get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                    if pod["metadata"].get("deletionTimestamp") and self.node_up(node):
                        with contextlib.suppress(LabError):  # never ran here: just finish it
                            self.api.request("DELETE", f"/api/v1/namespaces/"
                                             f"{pod['metadata']['namespace']}/pods/"
                                             f"{pod['metadata']['name']}",
                                             {"gracePeriodSeconds": 0,
                                              "preconditions": {"uid": uid}})
                    continue
                worker = self.workers[uid] = _PodWorker(self, pod)
                worker.thread.start()
                continue
            worker.api_pod = pod
            if pod["metadata"].get("deletionTimestamp") and self.node_up(node):
                worker.deleting.set()
        for uid, worker in list(self.workers.items()):
            if uid not in seen and self.node_up(worker.node):
                worker.deleting.set()  # deleted for good (grace 0) by someone else
            if worker.stopped.is_set():
                del self.workers[uid]

    def find(self, name: str) -> _PodWorker | None:
        return next((w for w in self.workers.values() if w.name == name
                     and not w.stopped.is_set()), None)

    def kill(self, name: str) -> dict[str, Any]:
        """A pod's container killed on its node (SIGKILL): the kubelet restarts it and it
        rejoins once its readiness probe passes. KeyError for a pod the lab does not run."""
        worker = self.find(name)
        proc = worker._process() if worker is not None else None
        if worker is None or proc is None:
            raise KeyError(name)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return {"node": worker.node, "restarts": worker.restarts + 1}

    def stop(self) -> None:
        self.stopping.set()
        for worker in list(self.workers.values()):
            worker.stopped.wait(40)
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=5)
