"""kube-proxy emulation for the lab: NodePort (and LoadBalancer) listeners that route each
new TCP connection to a pod the way iptables/IPVS kube-proxy would.

It runs inside the lab's gevent process, where the pods run too, so the proxy's cost comes
straight out of the pods' CPU. Two data planes, same behaviour:

- ``handoff`` (the lab's default): the accepted client socket is handed to the chosen
  in-process pod, which serves it as if it had accepted it, with the peer address kube-proxy
  would leave (client or node): like NAT, no second connection and no copying, so a proxied
  request costs what a direct one does;
- ``pipe``: a real upstream TCP connection, bound to the address the pod must see (node
  InternalIP for SNAT, the client IP for Local), and a byte pipe run directly on the event
  loop (io watchers calling plain non-blocking socket methods in the hub: no greenlet and
  no gevent socket wrapper per connection). Used when pods are not in this process.

Behaviour, per node and per exposed (Service, nodePort):

- endpoint choice per NEW connection: ``iptables`` uniform random, ``ipvs`` round-robin
  (each node has its own counter and affinity table, as each node has its own kernel);
- ``externalTrafficPolicy: Cluster``: any ready pod, source NAT to the entry node's
  InternalIP, plus ``hop_ms`` per forwarded client->pod chunk when the pod is elsewhere;
- ``Local``: only pods on the entry node, client IP preserved; none -> dropped (accepted,
  never answered);
- ``sessionAffinity: ClientIP``: a client IP sticks to one ready pod for timeoutSeconds;
- a node that is down black-holes new connections and stalls existing ones;
- a LoadBalancer listener spreads connections over nodes that passed the last health check.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import random
import socket
import struct
import sys
import time
import weakref
from collections.abc import Callable

import gevent
from gevent import socket as gsocket

from harness.lab.state import LabPod, LabState

BUFSIZE = 256 * 1024
LISTEN_BACKLOG = 4096
ACCEPTS_PER_WAKEUP = 64
DEFAULT_AFFINITY_TIMEOUT = 10800
LB_THRESHOLD = 2  # health checks in a row before the LB changes its mind about a node
# Linux: choose the source port at connect() time, by 4-tuple; lets many upstream
# connections share one bound source address without exhausting ports at bind().
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_LINGER_RESET = struct.pack("ii", 1, 0)
_READ, _WRITE = 1, 2
_SHUT_WR = socket.SHUT_WR
_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)

SvcKey = tuple[str, str]  # (namespace, name)


def _raw_socket() -> _socket.socket:
    # The C socket type: not replaced by gevent's monkey-patching, so calls stay plain
    # non-blocking system calls (the event loop does the waiting).
    sock = _socket.socket(socket.AF_INET, socket.SOCK_STREAM | _NONBLOCK)
    if not _NONBLOCK:
        sock.setblocking(False)
    return sock


class _Listener:
    """One listening socket: a node's address (or the LB's) on one port."""

    def __init__(self, proxy: NodePortProxy, ip: str, port: int, node: str | None,
                 svc: SvcKey, lb: bool):
        self.proxy, self.ip, self.port, self.node, self.svc, self.lb = (
            proxy, ip, port, node, svc, lb)
        sock = _raw_socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(*_NODELAY)  # accepted sockets inherit it (Linux): no call each
            sock.bind((ip, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.closed = False
        self.pause = None
        self.watcher = proxy.loop.io(sock.fileno(), _READ)
        self.watcher.start(self._on_accept)

    def _on_accept(self) -> None:
        accept = self.sock._accept
        route = self.proxy._route
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                # EMFILE and friends: pause accepting briefly instead of spinning on a
                # level-triggered watcher; the backlog holds the connections meanwhile.
                self.proxy._log(f"accept on {self.ip}:{self.port} failed: {err.strerror}")
                self.watcher.stop()
                self.pause = self.proxy.loop.timer(0.1)
                self.pause.start(self._resume)
                return
            client = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
            try:
                route(client, addr, self)
            except Exception as err:  # a routing bug must never stop the listener
                self.proxy._log(f"routing a connection on {self.ip}:{self.port} failed: {err!r}")
                _reset(client)

    def _resume(self) -> None:
        if not self.closed:
            self.watcher.start(self._on_accept)

    def close(self) -> None:
        self.closed = True
        self.watcher.stop()
        self.watcher.close()
        self.sock.close()


class _Held:
    """A black-holed client connection: read and discard until the client gives up."""

    __slots__ = ("proxy", "sock", "watcher")

    def __init__(self, proxy: NodePortProxy, sock: _socket.socket):
        self.proxy, self.sock = proxy, sock
        self.watcher = proxy.loop.io(sock.fileno(), _READ)
        self.watcher.start(self._on_read)
        proxy.held.add(self)

    def _on_read(self) -> None:
        try:
            if self.sock.recv(BUFSIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        self.watcher.stop()
        self.watcher.close()
        self.sock.close()
        self.proxy.held.discard(self)


class _Pipe:
    """A proxied connection: client <-> pod, forwarding from io-watcher callbacks."""

    __slots__ = (
        "proxy", "entry", "pod", "client", "upstream", "hop_s", "c_read", "u_read",
        "c_write", "u_write", "to_upstream", "to_client", "client_eof", "upstream_eof",
        "timer", "closed",
    )

    def __init__(self, proxy: NodePortProxy, client: _socket.socket, upstream: _socket.socket,
                 entry: str, pod: str, hop_s: float):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.entry, self.pod, self.hop_s = entry, pod, hop_s
        loop = proxy.loop
        self.c_read = loop.io(client.fileno(), _READ)
        self.u_read = loop.io(upstream.fileno(), _READ)
        self.c_write = self.u_write = self.timer = None
        self.to_upstream = self.to_client = b""
        self.client_eof = self.upstream_eof = self.closed = False
        proxy.pipes.add(self)
        # The upstream connect may still be in progress: a send then fails with EAGAIN and
        # waits for writability, which is also how connect completion is signalled.
        self.c_read.start(self._on_client)
        self.u_read.start(self._on_upstream)

    # client -> pod ----------------------------------------------------------------------

    def _on_client(self) -> None:
        try:
            data = self.client.recv(BUFSIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(reset=True)
            return
        if not data:
            self.client_eof = True
            self.c_read.stop()
            self._half_close(self.upstream)
            return
        if self.hop_s:
            # Cross-node hop: hold the chunk for the hop time, reading nothing meanwhile.
            self.c_read.stop()
            self.to_upstream = data
            if self.timer is None:
                self.timer = self.proxy.loop.timer(self.hop_s)
            self.timer.start(self._after_hop)
            return
        self._send_upstream(data)

    def _after_hop(self) -> None:
        data, self.to_upstream = self.to_upstream, b""
        self._send_upstream(data)
        if not self.to_upstream and not self.closed:
            self.c_read.start(self._on_client)

    def _send_upstream(self, data: bytes) -> None:
        try:
            sent = self.upstream.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(reset=True)
            return
        if sent < len(data):
            self.to_upstream = data[sent:]
            self.c_read.stop()
            if self.u_write is None:
                self.u_write = self.proxy.loop.io(self.upstream.fileno(), _WRITE)
            self.u_write.start(self._on_upstream_writable)

    def _on_upstream_writable(self) -> None:
        self.u_write.stop()
        data, self.to_upstream = self.to_upstream, b""
        self._send_upstream(data)
        if not self.to_upstream and not self.closed:
            if self.client_eof:
                self._half_close(self.upstream)
            else:
                self.c_read.start(self._on_client)

    # pod -> client ----------------------------------------------------------------------

    def _on_upstream(self) -> None:
        try:
            data = self.upstream.recv(BUFSIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(reset=True)
            return
        if not data:
            self.upstream_eof = True
            self.u_read.stop()
            self._half_close(self.client)
            return
        self._send_client(data)

    def _send_client(self, data: bytes) -> None:
        try:
            sent = self.client.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(reset=True)
            return
        if sent < len(data):
            self.to_client = data[sent:]
            self.u_read.stop()
            if self.c_write is None:
                self.c_write = self.proxy.loop.io(self.client.fileno(), _WRITE)
            self.c_write.start(self._on_client_writable)

    def _on_client_writable(self) -> None:
        self.c_write.stop()
        data, self.to_client = self.to_client, b""
        self._send_client(data)
        if not self.to_client and not self.closed:
            if self.upstream_eof:
                self._half_close(self.client)
            else:
                self.u_read.start(self._on_upstream)

    # ending -----------------------------------------------------------------------------

    def _half_close(self, sock: _socket.socket) -> None:
        """Pass an EOF on once nothing is left to send; close when both sides are done."""
        pending = self.to_upstream if sock is self.upstream else self.to_client
        if pending:
            return  # sent after the flush
        if self.client_eof and self.upstream_eof:
            self.close()
            return
        try:
            sock.shutdown(_SHUT_WR)
        except OSError:
            self.close(reset=True)

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for watcher in (self.c_read, self.u_read, self.c_write, self.u_write, self.timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        if reset:
            _reset(self.client)
        else:
            self.client.close()
        self.upstream.close()
        self.proxy.pipes.discard(self)

    def stall(self) -> None:
        """The entry node went down: nothing more is forwarded; the client times out."""
        if self.closed:
            return
        self.closed = True
        for watcher in (self.c_read, self.u_read, self.c_write, self.u_write, self.timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self.upstream.close()
        self.proxy.pipes.discard(self)
        _Held(self.proxy, self.client)


def _reset(sock: _socket.socket) -> None:
    """Close with an RST, as the client sees when the pod behind it dies."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class _HandedSocket(gsocket.socket):
    """A client connection handed straight to an in-process pod, as NAT hands packets on.

    The pod serves it like any accepted socket. The proxy keeps two levers on it: the
    cross-node hop (each chunk read from the client reaches the pod ``hop_s`` later) and
    the stall of a node that went down (nothing more is delivered either way).
    """

    __slots__ = ("entry", "hop_s", "stalled")

    def recv_into(self, buffer, nbytes=0, flags=0):  # type: ignore[override]
        while True:
            count = super().recv_into(buffer, nbytes, flags)
            if count and self.hop_s:
                gevent.sleep(self.hop_s)
            # Stalled: what the client sends goes nowhere, until it hangs up. Checked after
            # the hop too: a chunk still crossing when its entry node went down is lost with
            # it (else the pod would serve, and count, a request whose reply is dropped).
            if not self.stalled or not count:
                break
        return count

    def recv(self, bufsize, flags=0):  # type: ignore[override]
        while True:
            data = super().recv(bufsize, flags)
            if data and self.hop_s:
                gevent.sleep(self.hop_s)
            if not self.stalled or not data:
                break
        return data

    def sendall(self, data, flags=0):  # type: ignore[override]
        if self.stalled:
            return None  # the answer is lost on the way: the client times out
        return super().sendall(data, flags)

    def send(self, data, flags=0):  # type: ignore[override]
        if self.stalled:
            return len(data)
        return super().send(data, flags)


class NodePortProxy:
    """Keeps every node's NodePort listeners in line with the LabState and routes connections."""

    def __init__(self, state: LabState, *, proxy_mode: str = "iptables", hop_ms: float = 0.2,
                 lb_check_s: float = 0.5, seed: int | None = None,
                 log: Callable[[str], None] | None = None,
                 handoff: Callable[[str], Callable[[object, tuple], None] | None] | None = None):
        """``handoff(pod name)`` may return the pod's ``adopt(socket, peer address)`` when
        the pod runs in this process: connections are then handed over instead of piped
        through a second TCP connection (same behaviour, a fraction of the cost)."""
        if proxy_mode not in ("iptables", "ipvs"):
            raise ValueError("--proxy-mode must be iptables or ipvs")
        self.state = state
        self.proxy_mode = proxy_mode
        self.hop_s = max(0.0, hop_ms) / 1000.0
        self.lb_check_s = max(0.01, lb_check_s)
        self.rng = random.Random(seed)
        self.loop = gevent.get_hub().loop
        self.listeners: dict[tuple[str, int], _Listener] = {}
        self.pipes: set[_Pipe] = set()
        self.handed: weakref.WeakSet[_HandedSocket] = weakref.WeakSet()
        self.handoff = handoff
        self.held: set[_Held] = set()
        self.rr: dict[tuple, int] = {}
        self.affinity: dict[tuple, tuple[str, float]] = {}
        self.lb_healthy: dict[SvcKey, list[str]] = {}
        self._lb_status: dict[SvcKey, dict[str, list]] = {}  # node -> [healthy, streak]
        self.lb_next: dict[SvcKey, int] = {}
        self.errors: list[str] = []
        self._endpoints: dict[SvcKey, list[LabPod]] = {}
        self._log_fn = log
        self._lb_timer = None
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> NodePortProxy:
        self.state.subscribe(self.sync)
        self._started = True
        self.sync()
        self._check_lb()
        self._lb_timer = self.loop.timer(self.lb_check_s, self.lb_check_s)
        self._lb_timer.start(self._check_lb)
        return self

    def stop(self) -> None:
        self._started = False
        if self._lb_timer is not None:
            self._lb_timer.stop()
            self._lb_timer.close()
            self._lb_timer = None
        for listener in list(self.listeners.values()):
            listener.close()
        self.listeners.clear()
        for pipe in list(self.pipes):
            pipe.close(reset=True)
        for held in list(self.held):
            held.close()

    def _log(self, message: str) -> None:
        self.errors.append(message)
        del self.errors[:-100]
        if self._log_fn is not None:
            self._log_fn(message)
        else:
            print(f"lab proxy: {message}", file=sys.stderr, flush=True)

    # -- following the state --------------------------------------------------------------

    def wanted(self) -> dict[tuple[str, int], tuple[str | None, SvcKey, bool]]:
        """(ip, port) -> (entry node or None for the LB, service, is LB) from the state."""
        out: dict[tuple[str, int], tuple[str | None, SvcKey, bool]] = {}
        nodes = self.state.live_nodes()
        for svc, port in self.state.exposed_ports():
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            for node in nodes:
                for ip in (node.external_ip, node.internal_ip):
                    if ip:
                        out.setdefault((ip, int(port["nodePort"])), (node.name, key, False))
            if svc["spec"]["type"] == "LoadBalancer":
                out.setdefault((self.state.lb_address, int(port["port"])), (None, key, True))
        return out

    def sync(self) -> None:
        """Called on every state change: listeners, endpoint cache, dead pods, down nodes."""
        if not self._started:
            return
        self._endpoints.clear()
        wanted = self.wanted()
        for addr in list(self.listeners):
            listener = self.listeners[addr]
            if wanted.get(addr) != (listener.node, listener.svc, listener.lb):
                listener.close()
                del self.listeners[addr]
        for addr, (node, svc, lb) in wanted.items():
            if addr not in self.listeners:
                try:
                    self.listeners[addr] = _Listener(self, addr[0], addr[1], node, svc, lb)
                except OSError as err:
                    self._log(f"cannot listen on {addr[0]}:{addr[1]}: {err.strerror}")
        alive = {pod.name for pod in self.state.pods}
        down = {node.name for node in self.state.nodes if not node.up}
        for sock in list(self.handed):
            if sock.entry in down:
                sock.stalled = True  # (a killed pod resets its own connections)
        for pipe in list(self.pipes):
            if pipe.entry in down:
                pipe.stall()
            elif pipe.pod not in alive:
                pipe.close(reset=True)  # the pod died: its connections are reset
        if any(lsn.lb and lsn.svc not in self.lb_healthy for lsn in self.listeners.values()):
            self._check_lb(only_new=True)  # a LoadBalancer just appeared: its first check

    def endpoints(self, svc_key: SvcKey) -> list[LabPod]:
        pods = self._endpoints.get(svc_key)
        if pods is None:
            svc = self.state.service(*svc_key)
            pods = self.state.ready_endpoints(svc) if svc else []
            self._endpoints[svc_key] = pods
        return pods

    def _check_lb(self, only_new: bool = False) -> None:
        """The LoadBalancer's health check, run every ``lb_check_s``.

        As a cloud LB does, a node changes state only after LB_THRESHOLD checks in a row
        disagree with it: a failed node keeps receiving new connections for one to two
        intervals (they time out), and a recovered one waits as long to get traffic back.
        A Service's first check (when its LB appears) is taken at face value.
        """
        healthy: dict[SvcKey, list[str]] = dict(self.lb_healthy) if only_new else {}
        for listener in self.listeners.values():
            if not listener.lb or listener.svc in healthy:
                continue
            svc = self.state.service(*listener.svc)
            local = bool(svc) and svc["spec"].get("externalTrafficPolicy") == "Local"
            with_pods = {pod.node for pod in self.endpoints(listener.svc)}
            status = self._lb_status.setdefault(listener.svc, {})
            for node in self.state.live_nodes():
                passing = node.up and (not local or node.name in with_pods)
                current = status.get(node.name)
                if current is None:
                    status[node.name] = [passing, 0]
                elif current[0] == passing:
                    current[1] = 0
                else:
                    current[1] += 1
                    if current[1] >= LB_THRESHOLD:
                        status[node.name] = [passing, 0]
            healthy[listener.svc] = [
                node.name for node in self.state.live_nodes()
                if status.get(node.name, [False])[0]
            ]
        self.lb_healthy = healthy

    # -- routing one new connection -------------------------------------------------------

    def _route(self, client: _socket.socket, addr: tuple[str, int], listener: _Listener) -> None:
        node_name = listener.node
        if listener.lb:
            nodes = self.lb_healthy.get(listener.svc) or []
            if not nodes:
                self._hold(client)  # no healthy backend: the LB drops it
                return
            index = self.lb_next.get(listener.svc, 0)
            self.lb_next[listener.svc] = index + 1
            node_name = nodes[index % len(nodes)]
        state = self.state
        node = state.node(node_name)
        if not node.up:
            self._hold(client)  # a down node (or one the LB still believes healthy)
            return
        svc = state.service(*listener.svc)
        if svc is None:
            _reset(client)
            return
        pods = self.endpoints(listener.svc)
        spec = svc["spec"]
        local = spec.get("externalTrafficPolicy") == "Local"
        if local:
            pods = [pod for pod in pods if pod.node == node_name]
        if not pods:
            if local:
                self._hold(client)  # kube-proxy's DROP for Local without a local pod
            else:
                _reset(client)  # kube-proxy's REJECT: "has no endpoints"
            return
        client_ip = addr[0]
        pod = self._choose(node_name, listener, pods, spec, client_ip)
        hop_s = self.hop_s if pod.node != node_name else 0.0
        adopt = self.handoff(pod.name) if self.handoff is not None else None
        if adopt is not None:
            sock = _HandedSocket(socket.AF_INET, socket.SOCK_STREAM, 0, client.detach())
            sock.entry, sock.hop_s, sock.stalled = node_name, hop_s, False
            self.handed.add(sock)
            # What the pod sees as its peer: the client (Local) or the entry node's
            # InternalIP (Cluster, SNAT), keeping the client's port as MASQUERADE tries to.
            adopt(sock, addr if local else (node.internal_ip, addr[1]))
            return
        client.setblocking(False)
        upstream = _raw_socket()
        try:
            upstream.setsockopt(*_NODELAY)
            upstream.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            # Local keeps the client's address; Cluster SNATs to the entry node's.
            upstream.bind((client_ip if local else node.internal_ip, 0))
            code = upstream.connect_ex((pod.ip, pod.port))
        except OSError as err:
            code = err.errno or errno.EIO
        if code not in (0, errno.EINPROGRESS):
            upstream.close()
            _reset(client)
            return
        _Pipe(self, client, upstream, node_name, pod.name, hop_s)

    def _hold(self, client: _socket.socket) -> None:
        client.setblocking(False)
        _Held(self, client)

    def _choose(self, node: str, listener: _Listener, pods: list[LabPod], spec: dict,
                client_ip: str) -> LabPod:
        sticky = spec.get("sessionAffinity") == "ClientIP"
        if sticky:
            key = (node, listener.svc, listener.port, client_ip)
            pinned = self.affinity.get(key)
            now = time.monotonic()
            if pinned is not None and pinned[1] > now:
                for pod in pods:
                    if pod.name == pinned[0]:
                        self.affinity[key] = (pod.name, now + _affinity_timeout(spec))
                        return pod
        if self.proxy_mode == "ipvs":
            rr_key = (node, listener.svc, listener.port)
            index = self.rr.get(rr_key, 0)
            self.rr[rr_key] = index + 1
            pod = pods[index % len(pods)]
        else:
            pod = pods[self.rng.randrange(len(pods))]
        if sticky:
            self.affinity[key] = (pod.name, time.monotonic() + _affinity_timeout(spec))
        return pod


def _affinity_timeout(spec: dict) -> float:
    config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
    try:
        return float(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    except (TypeError, ValueError):
        return float(DEFAULT_AFFINITY_TIMEOUT)
