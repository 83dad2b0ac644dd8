"""NodePortUser: a FastHttpUser that picks an entry node per request and records who served it.

Entry strategies (`--entry`): all (round-robin over nodes), random, single (first node or
`--node NAME`, what the lab's naive client does), sticky (each user keeps one node, like
DNS round-robin) and lb (the Service's LoadBalancer ingress). `--connection close` opens a
new TCP connection per request by closing the user's client pool after each one: sending
`Connection: close` alone let geventhttpclient reuse a socket the server had just closed.
Recording is a direct call into the process's SpreadRecorder (no extra event listener).
"""

from __future__ import annotations

import functools
import itertools
import random
import socket
import time

from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from harness.core.entry import entry_plan
from harness.plugin import context

_user_ids = itertools.count(1)
_session_ids = itertools.count(1)
_dict_get = dict.get
_perf_counter = time.perf_counter


def classify_failure(response) -> str | None:
    """None for a good reply, else the failure kind the recorder counts."""
    error = getattr(response, "error", None)
    status = getattr(response, "status_code", 0) or 0
    if error is None:
        if 200 <= status < 400:
            return None
        return _status_kind(status)
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
        # Client session ids (ints: the recorder hashes one per request) per entry label.
        self.sessions = {label: next(_session_ids) for label in self.names}

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
        start = _perf_counter()
        response = self.client.request(
            self.method, url, data=self.body, headers=self.headers, name=name,
        )
        latency_ms = (_perf_counter() - start) * 1000.0
        # A "client session": one keep-alive connection, or (close mode) one user's series
        # of new connections to the same entry. Pods per session shows kube-proxy's
        # per-connection balancing: 1 with keep-alive, many with a new connection each time.
        session = self.sessions[label]
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
            self.record(label, pod, latency_ms, None, session)
        else:
            self.record(label, None, latency_ms, classify_failure(response), session)
            if not self.close_each:
                # geventhttpclient drops a connection after an error: the next one is new.
                self.harness.recorder.end_connection(session)
                self.sessions[label] = next(_session_ids)
        if self.close_each:
            self.client.client.clientpool.close()
