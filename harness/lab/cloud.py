"""The real lab's cloud: the LoadBalancer in front of its nodes.

For a Service of type LoadBalancer it sets ``status.loadBalancer.ingress`` to the lab's
LoadBalancer address (one per lab: the first such Service gets it), and spreads new
connections to that address over the nodes whose health check passes, at the Service's
nodePort (the gateway DNATs them: ``iptables_rules.lb_restore_text``). The health check is
the one cloud load balancers use: with ``externalTrafficPolicy: Local`` the Service's
``healthCheckNodePort`` (kube-proxy answers 200 only on nodes with a ready local endpoint),
with ``Cluster`` kube-proxy's own ``/healthz`` on port 10256. A node changes state after
``LB_THRESHOLD`` checks in a row disagree, as the emulated lab's LoadBalancer does.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from typing import Any

from harness.errors import LabError
from harness.lab import iptables_rules as rules
from harness.lab import netns
from harness.lab.kubeapi import KubeApi

LB_THRESHOLD = 2
KUBE_PROXY_HEALTHZ = 10256


def probe(ip: str, port: int, timeout: float) -> bool:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Cloud:
    def __init__(self, api: KubeApi, layout: netns.Layout, nodes: list[Any], interval_s: float,
                 log: Callable[[str], None]):
        self.api = api
        self.layout = layout
        self.nodes = nodes
        self.interval_s = interval_s
        self.log = log
        self.status: dict[str, list] = {}  # node -> [passing, disagreeing checks]
        self.loaded = ""
        self.service: tuple[str, str] | None = None
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lab-cloud", daemon=True)

    def start(self) -> Cloud:
        self.check()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()

    def healthy(self) -> list[str]:
        return [n.name for n in self.nodes if self.status.get(n.name, [False])[0]]

    def _loop(self) -> None:
        errors = 0
        while not self.stopping.wait(self.interval_s):
            try:
                self.check()
                errors = 0
            except LabError as err:
                errors += 1
                if errors in (1, 10, 100):
                    self.log(f"lab cloud: {err}")

    def check(self) -> None:
        services = [svc for svc in self.api.get("/api/v1/services").get("items") or ()
                    if (svc.get("spec") or {}).get("type") == "LoadBalancer"]
        svc = next((s for s in services if self._is_ours(s)), None) or (
            services[0] if services else None)
        if svc is None:
            self._load([], None)
            return
        meta, spec = svc["metadata"], svc["spec"]
        self.service = (meta["namespace"], meta["name"])
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if [i.get("ip") for i in ingress] != [self.layout.lb_ip]:
            self.api.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
                {"status": {"loadBalancer": {"ingress": [
                    {"ip": self.layout.lb_ip, "ipMode": "VIP"}]}}})
        local = spec.get("externalTrafficPolicy") == "Local"
        port = int(spec["healthCheckNodePort"]) if local and spec.get("healthCheckNodePort") \
            else KUBE_PROXY_HEALTHZ
        timeout = max(0.2, min(1.0, self.interval_s))
        for node in self.nodes:
            rules.lb_vote(self.status, node.name, probe(node.internal_ip, port, timeout),
                          LB_THRESHOLD)
        self._load(spec.get("ports") or [], f"{meta['namespace']}/{meta['name']}")

    def _is_ours(self, svc: dict) -> bool:
        meta = svc["metadata"]
        return self.service == (meta["namespace"], meta["name"])

    def _load(self, ports: list[dict], name: str | None) -> None:
        port = ports[0] if ports else {}
        backends = []
        if port.get("nodePort"):
            index = {n.name: i for i, n in enumerate(self.nodes, 1)}
            backends = [(node, self.layout.internal_ip(index[node]), int(port["nodePort"]))
                        for node in self.healthy()]
        text = rules.lb_restore_text(self.layout.lb_ip, int(port.get("port") or 8080), backends,
                                     name or "no LoadBalancer Service")
        if text != self.loaded:
            netns.iptables_restore(self.layout.gateway_ns, text)
            self.loaded = text
