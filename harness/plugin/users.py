"""NodePortUser: a FastHttpUser that picks an entry node per request and records who served it.

Entry strategies (`--entry`): all (round-robin over nodes), random, single (first node or
`--node NAME`, what the lab's naive client does), sticky (each user keeps one node, like
DNS round-robin) and lb (the Service's LoadBalancer ingress). `--connection close` opens a
new TCP connection per request by closing the user's client pool after each one: sending
`Connection: close` alone let geventhttpclient reuse a socket the server had just closed.
Recording is a direct call into the process's SpreadRecorder (no extra event listener).

Connections are counted as TCP connections. In close mode every request is recorded as a
connection of its own (connection ``0``). With keep-alive, each entry point's connection
pool announces every socket it opens (`_watch_connections`): the first one, one after an
error dropped the last, or one after the server closed the connection and geventhttpclient
reconnected without a word. Each opening ends the previous connection in the recorder and
starts a new connection id, so the recorder's connections are the ones the server accepted.

Replies are bounded (issue 18): a reply's body is read up to ``--max-body`` bytes, decoded
(gzip, deflate, br) up to as many, by the user's own response class (``BoundedResponse``, set
on its LocustUserAgent: Locust's FastHttpSession reads every body through
``response.content``, which geventhttpclient reads whole); beyond it the request fails as
``too_large``. ``--timeout`` bounds the whole request: geventhttpclient's timeouts are per
socket operation, so a reply trickling a byte a second never ends; a watchdog (one hub timer
per process, no cost per request beyond one attribute) throws ``ReplyTimeout`` into a user
whose request outlived it, and the request fails as ``timeout``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import re
import socket
import time
import weakref
import zlib
from collections.abc import Callable
from typing import Any

import gevent
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser, FastResponse

from harness.core.entry import LB_ENTRY, entry_plan
from harness.core.nodeaddr import NodeLocator
from harness.plugin import context

log = logging.getLogger(__name__)
_user_ids = itertools.count(1)
_connection_ids = itertools.count(1)  # ints: the recorder hashes one per request
_dict_get = dict.get
_perf_counter = time.perf_counter
# --entry lb: the peer the pod saw, from the reply (helloworld's JSON field "client"), read
# without parsing the JSON; in a reply's first 64 KiB.
_CLIENT_FIELD = re.compile(rb'"client"\s*:\s*"([^"\\]{1,300})"')
_CLIENT_SCAN = 64 * 1024
_locators: dict[int, tuple[object, NodeLocator]] = {}  # id(target) -> (target, its locator)


DEFAULT_MAX_BODY = 1024 * 1024  # --max-body's default
_READ_BLOCK = 64 * 1024


class ReplyTooLarge(ConnectionError):
    """The reply's body (or what it decodes to) is over --max-body: not read further."""

    failure_kind = "too_large"


class ReplyUnreadable(ConnectionError):
    """The reply's body could not be decoded (a broken gzip/deflate/br stream)."""

    failure_kind = "bad_reply"


class ReplyTimeout(TimeoutError):
    """The whole request outlived --timeout (thrown in by the watchdog)."""

    failure_kind = "timeout"

    def __str__(self) -> str:
        return "no complete reply within --timeout"


class BoundedResponse(FastResponse):
    """Locust's FastResponse whose body is read and decoded up to ``max_body`` bytes.

    geventhttpclient's CompatResponse reads the whole body (``self._response.read()``) and
    inflates it whole; Locust's FastHttpSession.request reads ``response.content`` for every
    request. This class is set as the user's own ``LocustUserAgent.response_type`` (an
    instance attribute: nothing of Locust's changes for anyone else). A reply that arrived
    with its headers (the common case) costs what it did. On a failure the response gets
    ``error`` and the exception goes to Locust, which counts the request as failed.
    """

    max_body = DEFAULT_MAX_BODY

    def _content(self):
        if self.headers is None:
            return None
        response = self._response
        try:
            try:
                encoding = self.headers.getlist("content-encoding")[0].lower()
            except IndexError:
                encoding = "identity"
            if response.message_complete:  # the body came with the headers (the common case)
                body = response.read()
                if len(body) > self.max_body:
                    raise ReplyTooLarge(f"the reply is over --max-body {self.max_body} bytes")
            else:
                body = self._read_bounded(response)
            if encoding != "identity":
                body = self._decoded(body, encoding)
        except Exception as err:
            if not isinstance(err, ConnectionError | TimeoutError):
                err = ReplyUnreadable(f"cannot decode the reply: {err}")
            self.error = err
            response.release()  # an unfinished reply's socket is closed, not reused
            raise err from None
        response.release()
        return body

    def _read_bounded(self, response) -> bytes:
        limit = self.max_body
        declared = response.content_length
        if declared is not None and declared > limit:
            raise ReplyTooLarge(f"the reply declares {declared} bytes, over --max-body {limit}")
        body = bytearray()
        while True:
            chunk = response.read(_READ_BLOCK)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > limit:
                raise ReplyTooLarge(f"the reply is over --max-body {limit} bytes")

    def _decoded(self, body: bytes, encoding: str) -> bytes:
        limit = self.max_body
        if encoding == "br":
            import brotli

            inflater = brotli.Decompressor()
            out = inflater.process(body, output_buffer_limit=limit + 1)
            done = inflater.is_finished()
        elif encoding in ("gzip", "deflate"):
            wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else -zlib.MAX_WBITS
            inflater = zlib.decompressobj(wbits)
            try:
                out = inflater.decompress(body, limit + 1)
            except zlib.error:
                if encoding != "deflate":
                    raise
                inflater = zlib.decompressobj()  # zlib-wrapped "deflate", as servers send it
                out = inflater.decompress(body, limit + 1)
            done = not inflater.unconsumed_tail
        else:
            raise ReplyUnreadable(f"unknown content encoding {encoding!r}")
        if len(out) > limit or not done:
            raise ReplyTooLarge(f"the reply inflates to over --max-body {limit} bytes")
        if encoding != "br" and not inflater.eof:
            raise ReplyUnreadable(f"the {encoding} stream ends early")
        return out


@functools.cache
def bounded_response(max_body: int) -> type[BoundedResponse]:
    """The response class for one --max-body (a subclass per limit, made once)."""
    return type("BoundedResponse", (BoundedResponse,), {"max_body": max_body})


class _Watchdog:
    """Ends requests that outlive --timeout: geventhttpclient's timeouts are per socket
    operation, so a reply that trickles in (or never ends) would hold its user forever.

    One hub timer per process, every ``timeout / 10`` (at most 0.25 s): a user whose
    ``sent_at`` (set by send() before each request) is older than the timeout, and whose
    greenlet is suspended inside send(), gets ReplyTimeout thrown in, as gevent.Timeout does
    (from the hub). Per request this costs send() one attribute store, nothing else; the
    frames are walked only for a user that looks stuck."""

    def __init__(self) -> None:
        self.users: weakref.WeakSet[NodePortUser] = weakref.WeakSet()
        self.timer = None
        self.interval = 0.25

    def watch(self, user: NodePortUser) -> None:
        self.users.add(user)
        interval = max(0.01, min(0.25, user.request_timeout / 10))
        if self.timer is None or interval < self.interval:
            if self.timer is not None:
                self.timer.stop()
            self.interval = interval
            self.timer = gevent.get_hub().loop.timer(interval, interval, ref=False)
            self.timer.start(self.check)

    def check(self) -> None:
        now = _perf_counter()
        for user in list(self.users):
            sent_at = user.sent_at
            if not sent_at or now - sent_at <= user.request_timeout:
                continue
            greenlet = getattr(user, "_greenlet", None) or user.send_greenlet
            if greenlet is None or greenlet.dead or not _in_send(greenlet):
                continue
            user.sent_at = 0.0  # once per request
            try:
                greenlet.throw(ReplyTimeout)
            except Exception:  # the greenlet let it out: it ends, as Locust's users do
                log.debug("a user ended on its request's timeout", exc_info=True)


def _in_send(greenlet) -> bool:
    frame = getattr(greenlet, "gr_frame", None)
    while frame is not None:
        if frame.f_code is _SEND_CODE:
            return True
        frame = frame.f_back
    return False


_watchdog = _Watchdog()


def classify_failure(response) -> str | None:
    """None for a good reply, else the failure kind the recorder counts."""
    error = getattr(response, "error", None)
    status = getattr(response, "status_code", 0) or 0
    if error is None:
        if 200 <= status < 400:
            return None
        return _status_kind(status)
    kind = getattr(error, "failure_kind", None)  # the body's bounds (BoundedResponse)
    if kind is not None:
        return kind
    if status:
        return _status_kind(status)
    # geventhttpclient wraps the cause: RetriesExceeded(url, n, original=<the real error>).
    original = getattr(error, "original", None)
    if isinstance(original, BaseException):
        error = original
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, socket.timeout | TimeoutError) or "Timeout" in type(error).__name__:
        return "timeout"
    if isinstance(error, ConnectionResetError | BrokenPipeError) or (
        type(error).__name__ == "HTTPConnectionClosed"
    ):
        return "reset"
    if "Parse" in type(error).__name__ or "Protocol" in type(error).__name__:
        return "bad_reply"
    return "other"


def _status_kind(status: int) -> str:
    return f"http_{status}"


class NodePortUser(FastHttpUser):
    """Sends the configured request through the node (or LB) its strategy picks."""

    wait_time = constant(0)
    # Placeholder: Locust wants a host; the plugin fills it from discovery.
    host = "http://127.0.0.1"
    # Per-node keep-alive needs one connection per node at most: the user is one greenlet.
    concurrency = 1

    def __init__(self, environment):
        options = environment.parsed_options
        timeout = float(getattr(options, "timeout", 5.0) or 5.0)
        self.connection_timeout = timeout
        self.network_timeout = timeout
        super().__init__(environment)
        # Replies bounded in size (the user's own response class) and in time (the watchdog).
        max_body = int(getattr(options, "max_body", None) or DEFAULT_MAX_BODY)
        self.client.client.response_type = bounded_response(max_body)
        self.request_timeout = timeout
        self.sent_at = 0.0  # when the request in flight was sent (0: none yet, or ended)
        self.send_greenlet = None  # without Locust's runner: the greenlet of the last connect
        _watchdog.watch(self)
        self.harness = context.current_run(environment)
        self.user_index = next(_user_ids)
        self.user_id = f"user-{self.user_index}"
        target = self.harness.target
        self.plan = entry_plan(target, options.entry, self.user_index, options.node or None)
        self.close_each = options.connection == "close"
        self.method = options.method.upper()
        self.path = options.path if options.path.startswith("/") else "/" + options.path
        self.body = self._render_body(options.body)
        self.headers = {"Content-Type": "application/json"} if self.body else {}
        self.names = {label: f"{self.path} @{label}" for label, _ in self.plan}
        # The plan with its Locust row names and full URLs resolved up front; the next step
        # is one call (a C iterator, or random.choice).
        steps = [(label, base + self.path, self.names[label]) for label, base in self.plan]
        if options.entry == "random" and len(steps) > 1:
            self.next_step = functools.partial(random.choice, steps)
        else:
            self.next_step = itertools.cycle(steps).__next__
        self.extract = self.harness.extractor
        self.pod_header = getattr(self.extract, "header", None)
        # The run's recorder is made at test start, before any user: bound once here.
        self.record = self.harness.recorder.record
        # The TCP connection each entry label's requests go over, as the recorder knows it:
        # 0 in close mode (every request its own connection, folded at once); with
        # keep-alive the id of the connection open now, set by the connection pool each time
        # it opens a socket (None before the first: such a request is not tracked).
        if self.close_each:
            self.connections: dict[str, int | None] = dict.fromkeys(self.names, 0)
        else:
            self.connections = dict.fromkeys(self.names)
            self._watch_connections(steps)
        if options.entry == "lb":
            self._note_lb_nodes(target)

    def _note_lb_nodes(self, target) -> None:
        """--entry lb: note, for each success, the node the LoadBalancer passed it through.

        With externalTrafficPolicy Cluster the pod saw that node as its peer (kube-proxy's
        source NAT): helloworld says so in its reply's ``client``, which maps to a node by
        the node's addresses or pod CIDRs (core.nodeaddr). With Local the pod saw the
        client, which tells nothing: such successes are noted as unknown.
        send() stays as it is for every strategy: it reads the pod from ``pod_header`` and,
        when that gives nothing, asks ``extract``. Here ``extract`` does both jobs and the
        header lookup in send() is skipped, so only LoadBalancer runs pay for ``client``.
        """
        key = id(target)
        cached = _locators.get(key)
        if cached is None or cached[0] is not target:
            cached = _locators[key] = (target, NodeLocator(target.nodes))
        locate = cached[1].node_of_peer
        note_via = self.harness.recorder.note_via
        header, extract = self.pod_header, self.extract
        local = target.service.external_traffic_policy == "Local"

        def pod_and_via(response) -> str | None:
            via = None
            if not local:
                try:
                    found = _CLIENT_FIELD.search(response.content, 0, _CLIENT_SCAN)
                    if found is not None:
                        via = locate(found.group(1).decode("ascii", "replace"))
                except Exception:  # an odd reply is an unknown node, never a crash
                    via = None
            note_via(LB_ENTRY, via)
            pod = None
            if header:
                try:
                    pod = _dict_get(response.headers, header)
                except TypeError:  # not a dict
                    pod = None
                pod = pod[1] if type(pod) is tuple else None
            return pod or extract(response)

        self.pod_header = None
        self.extract = pod_and_via

    def _watch_connections(self, steps: list[tuple[str, str, str]]) -> None:
        """Keep-alive: hook each entry point's connection pool so every socket it opens
        gives its labels a new connection id and ends the previous connection.

        geventhttpclient keeps one HTTPClient (and ConnectionPool) per host:port in the
        user's HTTPClientPool; they are made here, up front, and the hook is an instance
        attribute wrapping that pool's socket factory (``_create_socket``, meant to be
        overridden): it runs once per new socket, never per request, and touches no other
        user and nothing of Locust's. A socket that fails to connect still takes an id: its
        one failed request is a connection attempt, as in close mode.
        """
        clients = self.client.client.clientpool  # FastHttpSession -> UserAgent -> pool
        labels: dict[int, tuple[Any, list[str]]] = {}
        for label, url, _ in steps:
            pool = getattr(clients.get_client(url), "_connection_pool", None)
            if pool is None or not callable(getattr(pool, "_create_socket", None)):
                log.warning("geventhttpclient has no connection pool to watch: connections "
                            "through %s are not tracked", label)
                continue
            labels.setdefault(id(pool), (pool, []))[1].append(label)
        for pool, names in labels.values():
            pool._create_socket = functools.partial(
                self._connect, pool._create_socket, tuple(names))

    def _connect(self, create_socket: Callable[[], Any], labels: tuple[str, ...]) -> Any:
        """A socket is being opened for these labels: their connection so far has ended."""
        self.send_greenlet = gevent.getcurrent()
        connections = self.connections
        previous = connections[labels[0]]
        new = next(_connection_ids)
        for label in labels:
            connections[label] = new
        if previous is not None:
            self.harness.recorder.end_connection(previous)
        return create_socket()

    def _render_body(self, template: str | None) -> bytes | None:
        if not template:
            return None
        return template.replace("{user}", self.user_id).encode()

    @task
    def send(self) -> None:
        # The hot path: every request of the run goes through here, between ~100 µs of
        # Locust's own HTTP work that leaves the CPU caches cold, where every call and lookup
        # costs several times what it does in a loop. Kept to a few of them; the recorder
        # queues the request and accounts it later, in a batch.
        label, url, name = self.next_step()
        self.sent_at = start = _perf_counter()  # the watchdog's view: see _Watchdog
        try:
            response = self.client.request(
                self.method, url, data=self.body, headers=self.headers, name=name,
            )
        except ReplyTimeout:  # thrown in where Locust does not catch it: still a time-out
            self.record(label, None, (_perf_counter() - start) * 1000.0, "timeout",
                        self.connections[label])
            return
        latency_ms = (_perf_counter() - start) * 1000.0
        # The TCP connection the request went over (0: its own, in close mode); a socket
        # opened during the request already set it (see _connect). Pods per connection
        # show kube-proxy's per-connection balancing.
        connection = self.connections[label]
        # Locust sets `error` on every failed request (an invalid status included): a reply
        # without one is a success, and only failures pay for classify_failure().
        if getattr(response, "error", None) is None:
            # The pod header straight from geventhttpclient's Headers, which stores a
            # (name, value) tuple under the lower-cased name; the recorder trims names. No
            # such header (or another kind of container): the extractor, the whole way.
            try:
                pod = _dict_get(response.headers, self.pod_header)
            except TypeError:  # not a dict
                pod = None
            pod = pod[1] if type(pod) is tuple else None
            if not pod:
                try:
                    pod = self.extract(response)
                except Exception:  # a reply must never stop the user
                    pod = None
            self.record(label, pod, latency_ms, None, connection)
        else:
            # A connection an error dropped ends when the next socket opens (_connect); one
            # that stays open (an HTTP error status on a kept-alive connection) goes on.
            self.record(label, None, latency_ms, classify_failure(response), connection)
        if self.close_each:
            self.client.client.clientpool.close()


_SEND_CODE = NodePortUser.send.__code__  # the watchdog's test for "inside a request"
