"""The lab's kernel datapath: nodes and pods in network namespaces, NodePort through the kernel.

``--datapath kernel`` replaces the userspace proxy (``proxy.py``) and the in-process pods with
what a real cluster runs:

- a gateway namespace with the node network's bridge, reached from the root namespace over
  one veth (the client's side, like the router in front of a cluster);
- a namespace per node on that bridge, with its InternalIP and ExternalIP, IP forwarding on
  and kube-proxy's iptables-mode rules (``iptables_rules.py``) loaded with iptables-restore;
- a namespace per pod with its own pod address, routed through its node (a veth, as a CNI
  plugin would make it), running a real ``python -m harness.helloworld`` process;
- the LoadBalancer: the gateway DNATs each new connection to its address to one healthy
  node's NodePort (iptables statistic), its health check lagging as the userspace one does.

``KernelDatapath`` follows the ``LabState``: on every change it starts and kills pods, takes
node links down and up, fixes routes and reloads every node's rules that changed. Addresses
and names come from ``netns.Layout``; nothing is left behind on ``stop()``, and
``netns.cleanup`` removes what a lab killed with SIGKILL left.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import helloworld
from harness.errors import LabError
from harness.lab import iptables_rules as rules
from harness.lab import netns
from harness.lab.config import LabConfig
from harness.lab.state import LabState

POD_READY_TIMEOUT_S = 15.0
KILL_GRACE_S = 2.0  # a pod not gone this long after helloworld.KILL_SIGNAL gets SIGKILL
LB_THRESHOLD = 2  # checks in a row before the LB changes its mind (proxy.LB_THRESHOLD's rule)
_PR_SET_PDEATHSIG = 1


@dataclass
class _Pod:
    """A running pod: its namespace and process, and the file it counts its replies in."""

    name: str
    node: str
    ip: str
    port: int
    netns: str
    served_file: Path
    process: subprocess.Popen | None = None
    routes: set[str] = field(default_factory=set)  # namespaces holding a route to it
    before: int = 0  # what its earlier processes served (a restarted container's)


class KernelDatapath:
    """Nodes, pods and kube-proxy's rules in network namespaces, kept in line with a LabState."""

    def __init__(self, state: LabState, config: LabConfig, state_dir: Path,
                 log: Callable[[str], None] | None = None, hosted: bool = False):
        """``hosted``: the pods, the rules and the LoadBalancer belong to someone else (the
        real control plane: its kubelet starts pods with ``run_pod``, kube-proxy writes the
        rules); the datapath keeps the network, node links and routes only."""
        self.state = state
        self.hosted = hosted
        self.config = config
        self.layout = netns.Layout(state.block)
        self.pods_dir = state_dir / "pods"
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.pods: dict[str, _Pod] = {}
        self._first_pods = [pod.name for pod in state.pods]  # their order: slow_pod_ms's
        self.gone: dict[str, int] = {}  # killed pods' final counts
        self.node_index = {node.name: i for i, node in enumerate(state.live_nodes(), 1)}
        self.link_up: dict[str, bool] = {}
        self.loaded: dict[str, str] = {}  # namespace -> the rules text it has
        self.lb_status: dict[str, list] = {}  # node -> [passing, disagreeing checks]
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.errors: list[str] = []
        self._lb_thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> KernelDatapath:
        """Build the namespaces, start the pods, load the rules; LabError when it cannot."""
        netns.preflight()
        for block in [self.layout.block, *netns.leftover_blocks()]:
            if block == self.layout.block or _block_free(block):
                for what in netns.cleanup(block):  # a lab killed with SIGKILL left these
                    self.log(f"kernel datapath: removed leftover {what}")
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self._build_network()
        for node in self.state.live_nodes():
            self._build_node(node.name)
        self._pin_neighbours()
        self.sync()
        self.state.subscribe(self._on_change)
        if self.hosted:
            return self
        self._check_lb()
        self._lb_thread = threading.Thread(target=self._lb_loop, name="lab-lb-check",
                                           daemon=True)
        self._lb_thread.start()
        return self

    def stop(self) -> None:
        """Kill the pods and remove every namespace and link of this lab."""
        self.stopped.set()
        with self.lock:
            for pod in list(self.pods.values()):
                self._kill(pod)
            netns.cleanup(self.layout.block)

    def stats(self) -> dict[str, int]:
        """Pod name -> successful /api/messages it served (killed pods included): the count
        each pod keeps in its own file, read here even after the pod died."""
        out = dict(self.gone)
        for name, pod in self.pods.items():
            out[name] = pod.before + _read_count(pod.served_file)
        return out

    # -- the network ------------------------------------------------------------------------

    def _build_network(self) -> None:
        lay = self.layout
        gw = lay.gateway_ns
        netns.run(["ip", "netns", "add", gw])
        netns.ip_batch([
            f"link add {lay.host_link} type veth peer name up0 netns {gw}",
            f"addr add {lay.host_ip}/30 dev {lay.host_link}",
            f"link set {lay.host_link} up",
        ])
        netns.ip_batch([
            "link set lo up",
            f"addr add {lay.uplink_ip}/30 dev up0",
            f"addr add {lay.lb_ip}/32 dev up0",
            "link set up0 up",
            "link add br0 type bridge",
            f"addr add {lay.gateway_ip}/24 dev br0",
            "link set br0 up",
        ], gw)
        netns.sysctl(gw, "net.ipv4.ip_forward=1")
        # The root namespace reaches the node, client and pod networks through the gateway.
        netns.ip_batch([f"route replace {net} via {lay.uplink_ip} dev {lay.host_link}"
                        for net in (lay.node_net, lay.client_net, lay.pod_net)])
        netns.iptables_restore(gw, rules.lb_restore_text(lay.lb_ip, 8080, [], "none"))
        self.loaded[gw] = ""

    def _build_node(self, name: str) -> None:
        lay, i = self.layout, self.node_index[name]
        ns, gw = lay.node_ns(name), lay.gateway_ns
        netns.run(["ip", "netns", "add", ns])
        netns.ip_batch([f"link add n{i} type veth peer name eth0 netns {ns}",
                        f"link set n{i} master br0 up",
                        f"route replace {lay.external_ip(i)}/32 via {lay.internal_ip(i)}"], gw)
        netns.ip_batch([
            "link set lo up",
            # InternalIP first: the primary address, the one MASQUERADE gives forwarded
            # connections (kube-proxy's SNAT to the node).
            f"addr add {lay.internal_ip(i)}/24 dev eth0",
            f"addr add {lay.external_ip(i)}/32 dev eth0",
            "link set eth0 up",
            f"route replace default via {lay.gateway_ip} dev eth0",
        ], ns)
        netns.sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                     "net.ipv4.conf.default.rp_filter=0")
        self.link_up[name] = True

    def _pin_neighbours(self) -> None:
        """Every node's address is a permanent neighbour of the gateway and the other nodes,
        as in a cloud network (no ARP): a down node's packets vanish and its peers time out,
        instead of answering "no route to host" once ARP has given up on it."""
        lay = self.layout
        macs = {name: _mac(lay.node_ns(name), "eth0") for name in self.node_index}
        for ns, dev in [(lay.gateway_ns, "br0"), *((lay.node_ns(n), "eth0")
                                                   for n in self.node_index)]:
            netns.ip_batch([f"neigh replace {lay.internal_ip(i)} lladdr {macs[name]} dev {dev} "
                            "nud permanent" for name, i in self.node_index.items()
                            if ns != lay.node_ns(name)], ns)

    # -- following the state ----------------------------------------------------------------

    def _on_change(self) -> None:
        if self.stopped.is_set():
            return
        try:
            self.sync()
        except Exception as err:  # the API call that changed the state must still answer
            self._error(f"kernel datapath: re-sync failed: {err}")

    def sync(self) -> None:
        """Make the namespaces say what the state says: pods, node links, routes, rules."""
        with self.lock:
            if self.stopped.is_set():
                return
            if self.hosted:
                self._sync_links()
                self._sync_routes()
                return
            wanted = {pod.name: pod for pod in self.state.pods}
            for name in [n for n in self.pods if n not in wanted]:
                self._kill(self.pods.pop(name))  # its connections die with it
            started = [self._start_pod(pod) for pod in self.state.pods
                       if pod.name not in self.pods]
            self._sync_links()
            self._sync_routes()
            for pod in started:  # before any rule sends it connections
                _wait_listening(pod)
            self._sync_rules()

    def _start_pod(self, lab_pod) -> _Pod:
        pod = self._pod_network(lab_pod.name, lab_pod.node, lab_pod.ip, lab_pod.port)
        config = self.config
        self._spawn(pod, [
            sys.executable, "-m", "harness.helloworld", "--host", pod.ip, "--port", str(pod.port),
            "--pod-name", pod.name, "--node-name", pod.node, "--service-ms", str(
                config.service_ms(self._first_pods.index(pod.name)
                                  if pod.name in self._first_pods else None)),
            "--concurrency", str(config.pod_concurrency),
            "--served-file", str(pod.served_file)])
        self.pods[pod.name] = pod
        return pod

    def run_pod(self, name: str, node: str, ip: str, port: int,
                argv: Callable[[Path], list[str]], env: dict[str, str] | None = None) -> _Pod:
        """A hosted pod: its namespace, address and routes, and ``argv(served_file)`` run in
        it (the kubelet's container). LabError when the namespace cannot be made."""
        with self.lock:
            pod = self._pod_network(name, node, ip, port)
            self.pods[name] = pod
            self._sync_routes()
            self._spawn(pod, argv(pod.served_file), env)
            return pod

    def respawn(self, name: str, argv: Callable[[Path], list[str]],
                env: dict[str, str] | None = None) -> None:
        """Start a hosted pod's process again in its namespace (a container restart)."""
        with self.lock:
            pod = self.pods[name]
            self._spawn(pod, argv(pod.served_file), env, keep_count=True)

    def remove_pod(self, name: str) -> None:
        """Stop a hosted pod and remove its namespace and routes (nothing if unknown)."""
        with self.lock:
            pod = self.pods.pop(name, None)
            if pod is not None:
                self._kill(pod)

    def _pod_network(self, name: str, node: str, ip: str, port: int) -> _Pod:
        lay = self.layout
        node_ns = lay.node_ns(node)
        i = self.node_index[node]
        pod = _Pod(name, node, ip, port, lay.pod_ns(ip), self.pods_dir / f"{name}.served")
        veth = "p" + ip.rsplit(".", 1)[1]
        netns.run(["ip", "netns", "add", pod.netns])
        netns.ip_batch([f"link add {veth} type veth peer name eth0 netns {pod.netns}",
                        f"link set {veth} up",
                        f"route replace {pod.ip}/32 dev {veth} scope link"], node_ns)
        netns.ip_batch([
            "link set lo up",
            f"addr add {pod.ip}/32 dev eth0",
            "link set eth0 up",
            # The node is the pod's only neighbour, as with a routed CNI plugin.
            f"route replace {lay.internal_ip(i)}/32 dev eth0 scope link",
            f"route replace default via {lay.internal_ip(i)} dev eth0",
        ], pod.netns)
        # ip netns exec mounts /etc/netns/<namespace>/* over /etc: the pod resolves names
        # from its own hosts file and has no DNS server (it may reach nothing outside the lab).
        netns.etc_files(pod.netns, {"hosts": f"127.0.0.1 localhost\n{pod.ip} {pod.name}\n",
                                    "resolv.conf": "# the lab's pods use no DNS\n"
                                                   "nameserver 127.0.0.1\n"})
        return pod

    def _spawn(self, pod: _Pod, argv: list[str], env: dict[str, str] | None = None,
               keep_count: bool = False) -> None:
        if keep_count:
            pod.before += _read_count(pod.served_file)
        else:
            pod.served_file.unlink(missing_ok=True)
        with open(self.pods_dir / f"{pod.name}.log", "ab") as log:
            pod.process = subprocess.Popen(["ip", "netns", "exec", pod.netns, *argv],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           close_fds=True, env=env,
                                           preexec_fn=_die_with_parent)

    def _kill(self, pod: _Pod) -> None:
        """A pod killed: its process dies at once, resetting its open connections (idle
        keep-alive ones too, which a plain SIGKILL would close with a FIN), as the userspace
        lab's pods do; then its namespace and the routes to it go."""
        for signum, wait_s in ((helloworld.KILL_SIGNAL, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
            if pod.process is None or pod.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                pod.process.wait(timeout=wait_s)
        self.gone[pod.name] = pod.before + _read_count(pod.served_file)
        netns.run(["ip", "netns", "del", pod.netns], check=False)
        netns.remove_etc_files(pod.netns)
        for ns in pod.routes:
            netns.run(["ip", "-n", ns, "route", "del", f"{pod.ip}/32"], check=False)
        pod.routes.clear()

    def _sync_links(self) -> None:
        """A node that is down has its link to the node network down: everything through it
        (and to its pods) times out, as when a real node fails."""
        for node in self.state.live_nodes():
            if self.link_up.get(node.name) != node.up:
                state = "up" if node.up else "down"
                i = self.node_index[node.name]
                netns.run(["ip", "-n", self.layout.gateway_ns, "link", "set", f"n{i}", state])
                self.link_up[node.name] = node.up

    def _sync_routes(self) -> None:
        """Every pod is reachable from the gateway and from the other nodes through its node."""
        lay = self.layout
        for pod in self.pods.values():
            via = lay.internal_ip(self.node_index[pod.node])
            for ns in [lay.gateway_ns, *(lay.node_ns(n) for n in self.node_index)]:
                if ns in pod.routes or ns == lay.node_ns(pod.node):
                    continue
                netns.run(["ip", "-n", ns, "route", "replace", f"{pod.ip}/32", "via", via])
                pod.routes.add(ns)

    def _sync_rules(self) -> None:
        services = self.service_ports()
        for name in self.node_index:
            ns = self.layout.node_ns(name)
            text = rules.restore_text(name, services, self.layout.pod_net)
            if self.loaded.get(ns) != text:
                netns.iptables_restore(ns, text)
                self.loaded[ns] = text
        self._load_lb()

    def service_ports(self) -> list[rules.ServicePort]:
        """The state's Services as kube-proxy sees them: every port with a clusterIP, and its
        ready endpoints."""
        out = []
        for svc in self.state.services.values():
            spec = svc.get("spec") or {}
            pods = self.state.ready_endpoints(svc)
            lb_ips = tuple(ingress["ip"] for ingress in
                           ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")
                           or () if ingress.get("ip"))
            affinity = None
            if spec.get("sessionAffinity") == "ClientIP":
                client_ip = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
                affinity = int(client_ip.get("timeoutSeconds")
                               or rules.DEFAULT_AFFINITY_TIMEOUT)
            for port in spec.get("ports") or ():
                endpoints = tuple(
                    rules.Endpoint(pod.ip, target, pod.node) for pod in pods
                    if (target := _target_port(port, pod.port)) is not None)
                out.append(rules.ServicePort(
                    namespace=svc["metadata"]["namespace"], name=svc["metadata"]["name"],
                    port=int(port["port"]), port_name=port.get("name") or "",
                    protocol=port.get("protocol") or "TCP", cluster_ip=spec.get("clusterIP"),
                    node_port=port.get("nodePort"),
                    external_policy=spec.get("externalTrafficPolicy") or "Cluster",
                    internal_policy=spec.get("internalTrafficPolicy") or "Cluster",
                    affinity_timeout=affinity, lb_ips=lb_ips,
                    health_check_node_port=spec.get("healthCheckNodePort"),
                    endpoints=endpoints))
        return out

    # -- the LoadBalancer -------------------------------------------------------------------

    def _lb_loop(self) -> None:
        while not self.stopped.wait(self.config.lb_check_s):
            try:
                self._check_lb()
            except Exception as err:  # the next check tries again
                self._error(f"kernel datapath: LoadBalancer check failed: {err}")

    def _check_lb(self) -> None:
        """The LoadBalancer's health check, as the userspace one: a node changes state only
        after LB_THRESHOLD checks in a row disagree with it (a failed node keeps getting new
        connections for one to two intervals; a recovered one waits as long)."""
        with self.lock:
            services = [sp for sp in self.service_ports() if sp.lb_ips and sp.node_port]
            with_pods = {ep.node for sp in services for ep in sp.endpoints}
            local = any(sp.external_local for sp in services)
            for node in self.state.live_nodes():
                passing = node.up and (not local or node.name in with_pods)
                rules.lb_vote(self.lb_status, node.name, passing, LB_THRESHOLD)
            self._load_lb()

    def lb_healthy(self) -> list[str]:
        return [node for node in self.node_index if self.lb_status.get(node, [False])[0]]

    def _load_lb(self) -> None:
        services = [sp for sp in self.service_ports() if sp.lb_ips and sp.node_port]
        backends = []
        comment = "no LoadBalancer Service"
        if services:
            sp = services[0]  # the lab's LoadBalancer address serves its one Service
            comment = sp.name_string
            backends = [(node, self.layout.internal_ip(self.node_index[node]), sp.node_port)
                        for node in self.lb_healthy()]
        text = rules.lb_restore_text(self.layout.lb_ip, services[0].port if services else 8080,
                                     backends, comment)
        gw = self.layout.gateway_ns
        if self.loaded.get(gw) != text:
            netns.iptables_restore(gw, text)
            self.loaded[gw] = text

    def _error(self, message: str) -> None:
        self.errors.append(message)
        del self.errors[:-100]
        self.log(message)


# -- helpers ---------------------------------------------------------------------------------


def _target_port(port: dict, pod_port: int) -> int | None:
    """The pod port a Service port reaches (a named targetPort is the pod's one port)."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    return pod_port if target == "http-server" else None


def _mac(ns: str, dev: str) -> str:
    return netns.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/address"]
                     ).stdout.strip()


def _die_with_parent() -> None:
    # In the child before exec: the pod gets SIGKILL when the lab process dies, even by
    # SIGKILL (ip netns exec execs the pod in place, so the setting carries over).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _read_count(path: Path) -> int:
    try:
        data = path.read_bytes()[:8]
    except OSError:
        return 0
    return struct.unpack("<Q", data)[0] if len(data) == 8 else 0


def _wait_listening(pod: _Pod) -> None:
    """Until the pod answers its health check (from the root namespace, through its node):
    a listening socket is not enough, the server must be accepting."""
    deadline = time.monotonic() + POD_READY_TIMEOUT_S
    while True:
        if pod.process is not None and pod.process.poll() is not None:
            raise LabError(f"pod {pod.name} exited at start (code {pod.process.returncode}); "
                           f"see {pod.served_file.with_suffix('.log')}")
        try:
            with socket.create_connection((pod.ip, pod.port), timeout=0.5) as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
                if conn.recv(64).startswith(b"HTTP/1.1 200"):
                    return
                raise OSError("not healthy yet")
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"pod {pod.name} did not listen on {pod.ip}:{pod.port} within "
                               f"{POD_READY_TIMEOUT_S:.0f} s") from None
            time.sleep(0.05)


def _block_free(block: int) -> bool:
    # A kernel lab holds its block's reservation (cluster.py) while it runs.
    from harness.lab.cluster import block_is_free

    return block_is_free(block)
