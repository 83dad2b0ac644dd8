"""The real lab's control plane: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from their Go modules (``binaries.py``), run as processes of the lab,
their logs in ``<state>/logs``.

The API server serves HTTPS on the root end of the lab's uplink (``netns.Layout.host_ip``,
an address of this machine in 198.18.0.0/15), so that kube-proxy in every node namespace
reaches it as a node reaches its control plane; the lab's kubeconfigs point there. Users are
static tokens (``--token-auth-file``) under RBAC: the admin, the controller manager and the
scheduler and the lab's kubelet are in ``system:masters``; kube-proxy is ``system:kube-proxy``
(bound to ``system:node-proxier`` by the API server's bootstrap policy); the restricted
kubeconfig holds a ServiceAccount token from the TokenRequest API, allowed by a Role to read
the application's namespace only, as the emulated lab's restricted identity is.

Flags follow what runs without a kubelet's TLS or a cloud: controller-runtime's envtest for
the API server (``--endpoint-reconciler-type=none`` as KWOK does), the controller manager
with the controllers the lab needs and node lifecycle (the lab's kubelet renews its nodes'
Leases, so a node that stops answering turns NotReady as on any cluster).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.lab.kubeapi import ApiStatus, KubeApi
from harness.lab.netns import Layout

START_TIMEOUT_S = 120.0
CONTROLLERS = ("deployment", "replicaset", "endpointslice", "endpoint", "serviceaccount",
               "serviceaccount-token", "garbagecollector", "namespace", "nodelifecycle",
               "podgc", "ttl-after-finished", "disruption", "statefulset", "daemonset", "job",
               "cronjob")
RESTRICTED_SA = "restricted"


def service_range(layout: Layout) -> str:
    """ClusterIPs: the block's fourth /24 (198.19.<2b+1>.0/24), beside the pod network."""
    return f"198.19.{2 * layout.block + 1}.0/24"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ControlPlane:
    """Start with ``start()``; ``stop()`` ends every process (also after a failed start)."""

    def __init__(self, layout: Layout, state_dir: Path, bins: dict[str, Path],
                 namespace: str, log: Callable[[str], None],
                 die_with_parent: Callable[[], None] | None = None):
        self.layout = layout
        self.dir = state_dir
        self.logs = state_dir / "logs"
        self.pki = state_dir / "pki"
        self.bins = bins
        self.namespace = namespace
        self.log = log
        self.die_with_parent = die_with_parent
        self.processes: dict[str, subprocess.Popen] = {}
        self.tokens = {who: secrets.token_urlsafe(32) for who in
                       ("admin", "controller-manager", "scheduler", "kube-proxy", "kubelet")}
        self.restricted_token: str | None = None
        self.api_url = ""
        self.ca_pem = b""
        self.version = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(parents=True, exist_ok=True)
        host = self.layout.host_ip
        self._write_pki(host)
        etcd_port, peer_port = free_port(), free_port()
        self._spawn("etcd", [
            "--name", "lab", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"lab=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", "2147483648"])
        self._wait_http(f"http://127.0.0.1:{etcd_port}/health", "etcd")
        api_port = free_port(host)
        self.api_url = f"https://{host}:{api_port}"
        pki = self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={host}", f"--advertise-address={host}",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={service_range(self.layout)}",
            "--service-node-port-range=30000-32767",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1"])
        self._wait_api()
        for name, who, extra in (
                ("kube-controller-manager", "controller-manager", [
                    f"--controllers={','.join(CONTROLLERS)}",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--service-cluster-ip-range={service_range(self.layout)}",
                    "--use-service-account-credentials=false",
                    "--node-monitor-period=2s"]),
                ("kube-scheduler", "scheduler", [])):
            kubeconfig = self.kubeconfig(who)
            self._spawn(name, [
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                "--profiling=false", "--v=1", *extra])
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            proc = self.processes.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def check(self) -> None:
        """LabError when one of the processes has exited."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise LabError(f"{name} exited (code {proc.returncode}): "
                               f"{_last_line(self.logs / f'{name}.log')}")

    # -- clients ----------------------------------------------------------------------------

    def api(self, who: str = "admin") -> KubeApi:
        return KubeApi(self.api_url, self.tokens[who], str(self.pki / "ca.crt"))

    def kubeconfig(self, who: str) -> Path:
        """A kubeconfig for one of the lab's own components (in pki/, mode 0600)."""
        from harness.lab.apiserver import write_kubeconfig

        path = self.pki / f"{who}.kubeconfig"
        if not path.exists():
            write_kubeconfig(str(path), self.api_url, self.ca_pem, self.tokens[who],
                             context=f"lab-{who}", namespace="kube-system")
        return path

    def bootstrap(self, namespace: str) -> None:
        """The application's namespace and the restricted identity: a ServiceAccount whose
        Role reads Services, Pods, Endpoints, EndpointSlices and Events there, and a token
        for it from the TokenRequest API."""
        api = self.api()
        ns = namespace
        if ns != "default":
            api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": ns}})
        api.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": RESTRICTED_SA}})
        api.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "nodeport-harness-discovery"},
            "rules": [{"apiGroups": [""], "resources": ["services", "pods", "endpoints",
                                                       "events"], "verbs": ["get", "list"]},
                      {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["get", "list"]}]})
        api.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "nodeport-harness-discovery"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "nodeport-harness-discovery"},
            "subjects": [{"kind": "ServiceAccount", "name": RESTRICTED_SA, "namespace": ns}]})
        deadline = time.monotonic() + 30
        while True:  # the ServiceAccount admission may lag its creation by a moment
            try:
                reply = api.request(
                    "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{RESTRICTED_SA}/token",
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": 7 * 86400}})
                self.restricted_token = reply["status"]["token"]
                break
            except ApiStatus:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- helpers ----------------------------------------------------------------------------

    def _write_pki(self, host: str) -> None:
        import trustme
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from harness.lab.apiserver import write_private

        ca = trustme.CA(organization_name="nodeport-harness real lab")
        first_service_ip = str(next(ipaddress.ip_network(service_range(self.layout)).hosts()))
        cert = ca.issue_cert(host, "127.0.0.1", first_service_ip, "localhost", "kubernetes",
                             "kubernetes.default", "kubernetes.default.svc",
                             "kubernetes.default.svc.cluster.local",
                             common_name="kube-apiserver")
        self.ca_pem = ca.cert_pem.bytes()
        write_private(self.pki / "ca.crt", self.ca_pem)
        write_private(self.dir / "ca.crt", self.ca_pem)
        write_private(self.pki / "apiserver.crt",
                      b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        write_private(self.pki / "apiserver.key", cert.private_key_pem.bytes())
        control = ca.issue_cert("127.0.0.1", "localhost", common_name="lab-control")
        write_private(self.pki / "control.crt",
                      b"".join(blob.bytes() for blob in control.cert_chain_pems))
        write_private(self.pki / "control.key", control.private_key_pem.bytes())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(self.pki / "sa.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        write_private(self.pki / "sa.pub", key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        users = {"admin": ("lab-admin", "system:masters"),
                 "controller-manager": ("system:kube-controller-manager", "system:masters"),
                 "scheduler": ("system:kube-scheduler", "system:masters"),
                 "kube-proxy": ("system:kube-proxy", ""),
                 "kubelet": ("system:lab-kubelet", "system:masters")}
        lines = [f'{self.tokens[who]},{user},{user},"{groups}"' if groups
                 else f"{self.tokens[who]},{user},{user}" for who, (user, groups) in users.items()]
        write_private(self.pki / "tokens.csv", ("\n".join(lines) + "\n").encode())

    def start_kube_proxy(self, node: str, namespace: str, cluster_cidr: str) -> None:
        """kube-proxy for one node, in the node's network namespace: iptables mode, the
        Node's name as its hostname (externalTrafficPolicy Local needs it), no conntrack
        sysctls (they cannot be written outside the initial namespace)."""
        import json

        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig("kube-proxy"))},
            "hostnameOverride": node, "mode": "iptables", "clusterCIDR": cluster_cidr,
            "bindAddress": "0.0.0.0", "healthzBindAddress": "0.0.0.0:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "iptables": {"syncPeriod": "30s", "minSyncPeriod": "1s"}}
        path = self.pki / f"kube-proxy-{node}.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        self._spawn(f"kube-proxy-{node}", ["--config", str(path), "--v=1"],
                    binary="kube-proxy", prefix=["ip", "netns", "exec", namespace])

    def _spawn(self, name: str, args: list[str], binary: str | None = None,
               prefix: list[str] | None = None) -> None:
        path = self.bins[binary or name]
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [*(prefix or []), str(path), *args], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, close_fds=True, preexec_fn=self.die_with_parent, cwd=self.dir)

    def _wait_http(self, url: str, name: str, context: ssl.SSLContext | None = None,
                   headers: dict[str, str] | None = None) -> bytes:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while True:
            self.check()
            try:
                request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
                with urllib.request.urlopen(request, timeout=2,  # noqa: S310 - our own
                                            context=context) as reply:
                    return reply.read()
            except OSError as err:
                last = str(getattr(err, "reason", err))
            if time.monotonic() > deadline:
                raise LabError(f"{name} did not become ready within {START_TIMEOUT_S:.0f} s "
                               f"({last}); see {self.logs / (name + '.log')}")
            time.sleep(0.25)

    def _wait_api(self) -> None:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        headers = {"Authorization": f"Bearer {self.tokens['admin']}"}
        self._wait_http(self.api_url + "/readyz", "kube-apiserver", context, headers)
        reply = self._wait_http(self.api_url + "/version", "kube-apiserver", context, headers)
        import json

        self.version = json.loads(reply).get("gitVersion", "")


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][-300:]
    return f"see {path}"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_renewal(api: KubeApi, node: str, duration_s: int = 40) -> None:
    """Create or renew a node's Lease in kube-node-lease (the node lifecycle's heartbeat)."""
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    spec: dict[str, Any] = {"holderIdentity": node, "leaseDurationSeconds": duration_s,
                            "renewTime": micro_rfc3339()}
    try:
        api.merge_patch(f"{path}/{node}", {"spec": spec})
    except ApiStatus as err:
        if err.code != 404:
            raise
        api.create(path, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "metadata": {"name": node, "namespace": "kube-node-lease"},
                          "spec": spec})
