"""SpreadRecorder: per-request accounting of entry node, pod, latency and failure, kept as
streaming aggregates that are cheap to record, flat in memory and exact to merge.

The hot path (`SpreadRecorder.record`) runs inside Locust for every request: it queues the
request and accounts the queue every ``BATCH`` requests (and before every read), with dict
lookups and integer increments on plain lists; no numpy, nothing kept per request. Memory
is flat in the number of requests: histograms are fixed lists per entry node, pod and
locality; pod names are capped (``max_pods``); live connections are capped
(``max_connections``, about 300 bytes each); only the per-second series grows, with the run's
duration (about 1 KB per entry node per second).

Latency histograms use the fixed log-linear layout of ``harness.core.histogram`` (within
0.78 %; the per-second series keep a coarser copy, within 3.1 %).
Latency histograms hold successful requests only (a refused connection answers in 0.1 ms and
would make failures look fast); failed requests' latencies go to one separate histogram.

``spread.json`` (``SpreadRecorder.to_dict()``), schema ``nodeport-harness/spread/v1``.
A *hist* is a sparse list of ``[bucket_index, count]`` pairs in ascending index order.

- ``schema``: ``"nodeport-harness/spread/v1"``.
- ``histogram``: the bucket layout: ``unit`` (``"us"``), ``sub_bucket_bits`` (7),
  ``buckets`` (2048), ``series_shift`` (2: a series bucket is ``bucket_index >> 2``).
- ``start`` / ``end``: epoch seconds of the first / last recorded request (when it
  completed); ``null`` before any request.
- ``pod_nodes``: pod -> the node it runs on (``null`` when unknown), as given.
- ``totals``: ``requests``, ``successes``, ``failures``.
- ``latency``: successful requests: ``count`` and ``buckets`` (hist). No exact min, max or
  sum: each would cost the hot path a comparison or an addition, and the histogram gives
  them within 0.78 %.
- ``failure_latency``: hist of failed requests' latencies.
- ``entry_nodes``: entry node (or entry point, e.g. ``lb``) -> ``requests``, ``successes``,
  ``failures``, ``pods`` (pod -> successes that entered here), ``failure_kinds`` (kind ->
  count; kinds: refused, timeout, reset, bad_reply, too_large (over --max-body), other,
  http_4xx, http_5xx, ... ),
  ``http_status`` (exact status code as a string -> count, for http_* failures),
  ``latency`` (hist of successes entering here), ``failure_latency`` (hist of its
  failures), ``via_nodes`` (a LoadBalancer entry only: node the reply came through ->
  successes; ``"unknown"`` when the reply did not tell).
- ``pods``: pod -> ``node``, ``successes``, ``failures`` (failed replies that named the pod),
  ``latency`` (hist). ``"unknown"``: the reply did not say; ``"(other)"``: names beyond the
  ``limits.max_pods`` distinct pods (a mis-configured extractor cannot grow memory).
- ``locality``: ``local`` / ``cross_node`` / ``unknown`` -> ``successes``, ``latency`` (hist).
  Cross-node: the pod's node is known and differs from the entry node; unknown: the pod's
  node is unknown or the entry point is not a node.
- ``series``: entry node -> list (ascending ``t``) of ``{"t": epoch second, "requests",
  "failures", "latency": coarse hist of that second's successes, "pods": {pod: successes}}``
  plus, in a second with failures, ``"kinds"`` ({kind: failures}) and ``"failure_latency"``
  (coarse hist of the failures' latencies).
- ``connections``: ``tracked`` (connections seen; a request recorded with connection ``0``
  had a connection of its own), ``requests`` (requests on them),
  ``evicted`` (finalized early because more than ``limits.max_connections`` were live),
  ``distinct_pods`` (number of distinct known pods, as a string -> connections),
  ``requests_per_connection`` (hist, in the same layout over integer counts: exact < 128).
- ``markers``: ``[{"t": epoch seconds, "label": text}]`` (fault annotations).
- ``limits``: ``max_pods``, ``max_connections``, ``pod_names_over_cap`` (distinct names
  beyond ``max_pods``, at least).
"""

from __future__ import annotations

import itertools
import math
import re
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from harness.core.extract import clean_pod_name
from harness.core.histogram import (
    BUCKETS,
    INDEX_TABLE,
    LAYOUT,
    MAX_US,
    SERIES_BUCKETS,
    SERIES_SHIFT,
    add_hist,
    bucket_of_us,
    hist_items,
    sparse,
)
from harness.errors import DataError

SPREAD_SCHEMA = "nodeport-harness/spread/v1"
UNKNOWN_POD = "unknown"
OTHER_POD = "(other)"
OVER_CAP_COUNTED = 100_000  # distinct over-the-cap names counted, at most (memory stays flat)
FAILURE_KINDS = ("refused", "timeout", "reset", "bad_reply", "too_large", "other")
LOCALITIES = ("local", "cross_node", "unknown")
MAX_PODS = 1000
MAX_CONNECTIONS = 10_000
BATCH = 256  # requests queued by record() before they are accounted

# -- failure kinds ---------------------------------------------------------------------------

_HTTP_KIND = re.compile(r"http_(\d)(\d\d|xx)$")


def failure_kind(failure: str) -> tuple[str, int | None]:
    """Normalise a failure to (kind, exact HTTP status or None): ``http_503`` -> http_5xx, 503.

    Unknown kinds become ``other`` so a caller passing error messages cannot grow memory.
    """
    if failure in FAILURE_KINDS:
        return failure, None
    match = _HTTP_KIND.match(failure)
    if match is None:
        return "other", None
    digit, rest = match.groups()
    return f"http_{digit}xx", (None if rest == "xx" else int(digit + rest))


# -- the recorder ----------------------------------------------------------------------------

class _Pod:
    __slots__ = ("name", "node", "latency", "failures")

    def __init__(self, name: str, node: str | None):
        self.name = name
        self.node = node
        self.latency = [0] * BUCKETS
        self.failures = 0


class _Cell:
    """Successes for one (entry node, pod), with the histograms each success also lands in."""

    __slots__ = (
        "pod", "successes", "marked", "pod_latency", "locality_latency", "cross_node",
        "connection_name",
    )

    def __init__(self, pod: _Pod, locality_latency: list[int], cross_node: bool | None):
        self.pod = pod
        # What per-connection distinctness counts: the capped name; unknown is no pod.
        self.connection_name = None if pod.name == UNKNOWN_POD else pod.name
        self.successes = 0
        self.marked = 0  # successes when its entry node's last second closed
        self.pod_latency = pod.latency
        self.locality_latency = locality_latency
        self.cross_node = cross_node


class _EntryNode:
    __slots__ = (
        "name", "is_node", "cells", "latency", "failure_latency", "failure_kinds",
        "http_status", "via", "series", "second", "second_end", "row",
    )

    def __init__(self, name: str, is_node: bool):
        self.name = name
        self.is_node = is_node
        self.cells: dict[str, _Cell] = {}
        self.latency = [0] * BUCKETS
        self.failure_latency = [0] * BUCKETS
        self.failure_kinds: dict[str, int] = {}
        self.http_status: dict[int, int] = {}
        self.via: dict[str, int] = {}  # an LB entry: node the reply came through -> successes
        # Closed seconds: second -> [requests, failures, packed (bucket, count) pairs,
        # detail or None]; detail: {"pods": {pod: successes}, "kinds": {kind: failures},
        # "failure_latency": {coarse bucket: failures}}.
        self.series: dict[int, list[Any]] = {}
        # The open second: [requests, failures, dense series buckets, failure detail or
        # None]. The empty window
        # (second > second_end) makes the first record open one.
        self.second = 1
        self.second_end = 0
        self.row: list[Any] | None = None


class SpreadRecorder:
    """Streaming aggregates of which entry node and pod handled each request.

    ``pod_nodes`` maps pod -> node (from the Target's endpoints) for cross-node accounting;
    ``nodes`` (optional) lists the cluster's node names: an entry point outside it (a
    LoadBalancer address) has unknown locality. ``raw`` receives every request when given.
    """

    def __init__(
        self,
        pod_nodes: Mapping[str, str | None] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        nodes: Iterable[str] | None = None,
        raw: Any = None,  # a writer of one row per request (plugin.rawfile.RawWriter)
        max_connections: int = MAX_CONNECTIONS,
        max_pods: int = MAX_PODS,
    ):
        self.pod_nodes: dict[str, str | None] = dict(pod_nodes or {})
        self.nodes = None if nodes is None else set(nodes)
        self._clock = clock
        self._raw = raw
        self.max_connections = max_connections
        self.max_pods = max_pods
        # Distinct names beyond the cap, counted (not kept as pods) up to OVER_CAP_COUNTED,
        # for the run's whole life (drains keep it): the reports say how many were lumped.
        self._over_cap: set[str] = set()
        self._over_cap_merged = 0
        # Live connections survive drains: their totals are only known when they finish.
        # A plain dict (insertion-ordered, faster to look up than OrderedDict).
        self._live: dict[object, list[Any]] = {}
        # Recorded, not yet accounted: (time, entry node, pod, latency, failure, connection).
        self._pending: list[tuple[Any, ...]] = []
        self._reset()

    def _reset(self) -> None:
        self._start = math.inf
        self._end = -math.inf
        self._entry: dict[str, _EntryNode] = {}
        self._aliases = 0  # cell keys that are another spelling of a pod's name
        self._pods: dict[str, _Pod] = {}
        self._locality = {name: [0] * BUCKETS for name in LOCALITIES}
        self._failure_latency = [0] * BUCKETS
        self._conn_tracked = 0
        self._conn_requests = 0
        self._conn_evicted = 0
        self._conn_distinct: dict[int, int] = {}
        self._conn_requests_hist: dict[int, int] = {}
        self._markers: list[dict[str, Any]] = []

    # -- hot path ----------------------------------------------------------------------------

    def record(
        self,
        entry_node: str,
        pod: str | None,
        latency_ms: float,
        failure: str | None = None,
        connection: object | None = None,
    ) -> None:
        """Account one finished request (``failure`` None on success, else its kind).

        ``pod`` is the name as the reply gave it (None: unknown): the recorder trims it once
        per distinct spelling, when it first sees it (see ``_add_cell``).

        The request is queued with the time it finished and accounted in batches of
        ``BATCH``; every read (totals, to_dict, drain, merge...) accounts the queue first.
        In Locust a request's accounting runs between ~100 µs of HTTP work that evicts the
        CPU caches: one at a time it measured ~3.6 µs a request, queued and accounted in
        batches ~1.9 µs (bench/overhead.py has the whole cost).
        """
        pending = self._pending
        pending.append((self._clock(), entry_node, pod, latency_ms, failure, connection))
        if len(pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Account the queued requests, in the order they were recorded."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._end = pending[-1][0]
        entries, live, table, raw = self._entry, self._live, INDEX_TABLE, self._raw
        for now, entry_node, pod, latency_ms, failure, connection in pending:
            node = entries.get(entry_node)
            if node is None:
                node = self._add_entry_node(entry_node)
            if not node.second <= now < node.second_end:
                if now < self._start:
                    self._start = now
                self._open_second(node, now)
            row = node.row
            row[0] += 1
            if not pod:
                pod = UNKNOWN_POD
            try:
                us = int(latency_ms * 1000.0)
            except (ValueError, OverflowError):
                us = 0 if latency_ms != latency_ms else MAX_US
            # bucket_of_us() inlined, with a table for the common range: half the cost.
            if us < 131072:
                index = table[us] if us > 0 else 0
            else:
                shift = us.bit_length() - 7
                index = (shift << 6) + (us >> shift)
                if index > 2047:
                    index = 2047
            if failure is None:
                cell = node.cells.get(pod)
                if cell is None:
                    cell = self._add_cell(node, pod)
                cell.successes += 1
                node.latency[index] += 1
                cell.pod_latency[index] += 1
                cell.locality_latency[index] += 1
                row[2][index >> 2] += 1
                if connection:
                    conn = live.get(connection)
                    if conn is None:
                        conn = self._open_connection(connection)
                    conn[0] += 1
                    name = cell.connection_name
                    if name != conn[1] and name is not None:
                        if conn[1] is None:
                            conn[1] = name
                        else:
                            if conn[2] is None:
                                conn[2] = {conn[1]}
                            conn[2].add(name)
                            conn[1] = name
                elif connection == 0:  # a connection for this one request (close mode)
                    self._finish([1, cell.connection_name, None])
            else:
                row[1] += 1
                self._record_failure(node, row, pod, index, failure)
                if connection:
                    conn = live.get(connection)
                    if conn is None:
                        conn = self._open_connection(connection)
                    conn[0] += 1
                elif connection == 0:
                    self._finish([1, None, None])
            if raw is not None:
                if failure is None:
                    pod = cell.pod.name  # trimmed (or "(other)" past the cap)
                pod_node = self.pod_nodes.get(pod)
                cross = None if pod_node is None or not node.is_node else pod_node != entry_node
                raw.write(now, entry_node, pod, pod_node, cross, latency_ms, failure, connection)

    # -- cold paths --------------------------------------------------------------------------

    def _add_entry_node(self, name: str) -> _EntryNode:
        node = _EntryNode(name, self.nodes is None or name in self.nodes)
        self._entry[name] = node
        return node

    def _pod(self, name: str) -> _Pod:
        pod = self._pods.get(name)
        if pod is None:
            if len(self._pods) >= self.max_pods and name not in (UNKNOWN_POD, OTHER_POD):
                if len(self._over_cap) < OVER_CAP_COUNTED:
                    self._over_cap.add(name)
                return self._pod(OTHER_POD)
            pod = self._pods[name] = _Pod(name, self.pod_nodes.get(name))
        return pod

    def _add_cell(self, node: _EntryNode, name: str) -> _Cell:
        # A name as the reply gave it: trimmed here, once per spelling, not per request
        # (blank or longer than a DNS name: unknown). A spelling that differs from its
        # trimmed name becomes a second key for the same cell, up to max_pods of them.
        pod = self._pod(_trimmed(name))
        cross_node = None if pod.node is None or not node.is_node else pod.node != node.name
        locality = "unknown" if cross_node is None else ("cross_node" if cross_node else "local")
        cell = node.cells.get(pod.name)
        if cell is None:
            cell = _Cell(pod, self._locality[locality], cross_node)
            node.cells[pod.name] = cell
        if name != pod.name and pod.name != OTHER_POD and self._aliases < self.max_pods:
            node.cells[name] = cell
            self._aliases += 1
        # An over-the-cap name is not added as a key: it would grow memory again; it comes
        # back here each time (a mis-configured run, so speed does not matter).
        return cell

    def _open_second(self, node: _EntryNode, now: float) -> None:
        if node.row is not None:
            self._close_second(node)
        second = math.floor(now)
        row: list[Any] = [0, 0, [0] * SERIES_BUCKETS, None]
        stored = node.series.pop(second, None)  # a clock that stepped back
        if stored is not None:
            row[0], row[1] = stored[0], stored[1]
            for index, count in _unpack(stored[2]):
                row[2][index] += count
            row[3] = stored[3]
        node.second, node.second_end, node.row = second, second + 1, row

    def _close_second(self, node: _EntryNode) -> None:
        requests, failures, dense, detail = node.row  # type: ignore[misc]
        # Which pods served this second: the cells' successes since the last close, once a
        # second per entry node (not per request: the hot path stays as it is).
        pods = _second_pods(node, mark=True)
        if pods:
            detail = _add_detail(detail, {"pods": pods})
        node.series[node.second] = [requests, failures, _pack(sparse(dense)), detail]
        node.row = None
        node.second, node.second_end = 1, 0

    def _record_failure(self, node: _EntryNode, row: list[Any], pod: str, index: int,
                        failure: str) -> None:
        kind, status = failure_kind(failure)
        node.failure_kinds[kind] = node.failure_kinds.get(kind, 0) + 1
        if status is not None:
            node.http_status[status] = node.http_status.get(status, 0) + 1
        self._failure_latency[index] += 1
        node.failure_latency[index] += 1
        # The second's failures by kind and latency: what tells when an outage began (a
        # time-out reported at t began at t minus its latency).
        detail = row[3]
        if detail is None:
            detail = row[3] = {}
        kinds = detail.setdefault("kinds", {})
        kinds[kind] = kinds.get(kind, 0) + 1
        coarse = detail.setdefault("failure_latency", {})
        coarse[index >> SERIES_SHIFT] = coarse.get(index >> SERIES_SHIFT, 0) + 1
        pod = _trimmed(pod)
        if pod != UNKNOWN_POD:
            self._pod(pod).failures += 1

    def _open_connection(self, connection: object) -> list[Any]:
        # [requests, last pod, set of pods once a second one shows up]
        conn: list[Any] = [0, None, None]
        self._live[connection] = conn
        if len(self._live) > self.max_connections:
            self._evict()
        return conn

    def _evict(self) -> None:
        # The oldest sixteenth in one go: popping a dict's front one at a time rescans the
        # deleted slots, in a batch it is amortised O(1).
        live = self._live
        count = max(1, self.max_connections // 16)
        for key in list(itertools.islice(live, count)):
            self._finish(live.pop(key))
        self._conn_evicted += count

    def _finish(self, conn: list[Any]) -> None:
        self._fold_connection(conn, self._conn_distinct, self._conn_requests_hist)
        self._conn_tracked += 1
        self._conn_requests += conn[0]

    @staticmethod
    def _fold_connection(
        conn: list[Any], distinct: dict[int, int], requests_hist: dict[int, int]
    ) -> None:
        pods = len(conn[2]) if conn[2] else (0 if conn[1] is None else 1)
        distinct[pods] = distinct.get(pods, 0) + 1
        index = bucket_of_us(conn[0])
        requests_hist[index] = requests_hist.get(index, 0) + 1

    # -- public API --------------------------------------------------------------------------

    def end_connection(self, connection: object) -> None:
        """The caller closed this connection: fold it into the per-connection histograms."""
        self.flush()  # its queued requests first
        conn = self._live.pop(connection, None)
        if conn is not None:
            self._finish(conn)

    def finish_connections(self) -> None:
        """Fold every live connection (end of run)."""
        self.flush()
        for conn in self._live.values():
            self._finish(conn)
        self._live.clear()

    def update_pod_nodes(self, pod_nodes: Mapping[str, str | None]) -> None:
        """Learn pods that appeared during the run (replacements, scale-up)."""
        self.flush()  # requests recorded before are accounted with what was known then
        for pod, node in pod_nodes.items():
            if node is not None or pod not in self.pod_nodes:
                self.pod_nodes[pod] = node

    def note_via(self, entry_node: str, node: str | None) -> None:
        """A success that entered through ``entry_node`` (a LoadBalancer) reached its pod
        through ``node`` (None: the reply did not tell)."""
        entry = self._entry.get(entry_node) or self._add_entry_node(entry_node)
        name = node or UNKNOWN_POD
        if name in entry.via or len(entry.via) < self.max_pods:
            entry.via[name] = entry.via.get(name, 0) + 1

    def mark(self, t: float | None, label: str) -> None:
        """Annotate a moment (epoch seconds on the recorder's clock; None: now), e.g.
        ``"node-2 down"``: the analysis reads ``<name> down|up|kill`` labels as faults."""
        self._markers.append({"t": self._clock() if t is None else float(t), "label": label})

    def totals(self) -> dict[str, int]:
        self.flush()
        successes = sum(c.successes for n in self._entry.values() for c in _distinct(n.cells))
        failures = sum(sum(n.failure_kinds.values()) for n in self._entry.values())
        return {"requests": successes + failures, "successes": successes, "failures": failures}

    def progress_counts(self) -> dict[str, Any]:
        """Running totals, cheap enough to read every second (the ``--progress`` line):
        ``entry_nodes`` (entry node -> [requests, failures]) and ``latency`` (the successes'
        dense histogram), cumulative since the start (or the last drain)."""
        self.flush()
        entries = {name: [sum(c.successes for c in _distinct(n.cells)),
                          sum(n.failure_kinds.values())] for name, n in self._entry.items()}
        # Every success has one locality: their three histograms add up to all successes
        # (a few thousand additions, however many entry nodes there are).
        latency = [sum(counts) for counts in zip(*self._locality.values(), strict=True)]
        return {"entry_nodes": entries, "latency": latency}

    def close(self) -> None:
        """End of run: fold live connections and close the raw writer."""
        self.finish_connections()
        if self._raw is not None:
            self._raw.close()

    def drain(self, final: bool = False) -> dict[str, Any]:
        """The aggregates since the last drain (as ``to_dict``), then start afresh.

        Live connections are carried over and reported when they finish, so merging every
        drained delta equals one recorder that saw everything only if the last drain is
        ``final=True`` (which folds the live ones first).
        """
        self.flush()
        if final:
            self.finish_connections()
        delta = self._export(include_live=False)
        self._reset()
        return delta

    def to_dict(self) -> dict[str, Any]:
        """A snapshot in the ``spread.json`` schema; live connections count as finished."""
        return self._export(include_live=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> SpreadRecorder:
        limits = data.get("limits", {})
        kwargs.setdefault("max_pods", limits.get("max_pods", MAX_PODS))
        kwargs.setdefault("max_connections", limits.get("max_connections", MAX_CONNECTIONS))
        recorder = cls(data.get("pod_nodes", {}), **kwargs)
        recorder.merge(data)
        return recorder

    def merge(self, other: Mapping[str, Any] | SpreadRecorder) -> None:
        """Add another recorder's aggregates (or a ``spread.json`` dict) into this one."""
        data = other.to_dict() if isinstance(other, SpreadRecorder) else other
        check_spread(data)
        self.flush()
        self._over_cap_merged = max(self._over_cap_merged,
                                    int((data.get("limits") or {}).get("pod_names_over_cap") or 0))
        self.update_pod_nodes(data.get("pod_nodes", {}))
        if data.get("start") is not None:
            self._start = min(self._start, data["start"])
            self._end = max(self._end, data["end"])
        add_hist(self._failure_latency, data.get("failure_latency"))
        for name, part in data.get("entry_nodes", {}).items():
            node = self._entry.get(name) or self._add_entry_node(name)
            for pod, count in part.get("pods", {}).items():
                cell = node.cells.get(pod) or self._add_cell(node, pod)
                cell.successes += count
                cell.marked += count  # the series rows carry their own per-second pods
            add_hist(node.latency, part.get("latency"))
            add_hist(node.failure_latency, part.get("failure_latency"))
            for via, count in part.get("via_nodes", {}).items():
                node.via[via] = node.via.get(via, 0) + count
            for kind, count in part.get("failure_kinds", {}).items():
                node.failure_kinds[kind] = node.failure_kinds.get(kind, 0) + count
            for status, count in part.get("http_status", {}).items():
                code = int(status)
                node.http_status[code] = node.http_status.get(code, 0) + count
        for name, part in data.get("pods", {}).items():
            pod = self._pod(name)
            pod.failures += part.get("failures", 0)
            add_hist(pod.latency, part.get("latency"))
        for name, part in data.get("locality", {}).items():
            add_hist(self._locality[name], part.get("latency"))
        for name, rows in data.get("series", {}).items():
            node = self._entry.get(name) or self._add_entry_node(name)
            for row in rows:
                self._merge_second(node, row)
        conns = data.get("connections", {})
        self._conn_tracked += conns.get("tracked", 0)
        self._conn_requests += conns.get("requests", 0)
        self._conn_evicted += conns.get("evicted", 0)
        for pods, count in conns.get("distinct_pods", {}).items():
            self._conn_distinct[int(pods)] = self._conn_distinct.get(int(pods), 0) + count
        for index, count in hist_items(conns.get("requests_per_connection")):
            self._conn_requests_hist[index] = self._conn_requests_hist.get(index, 0) + count
        self._markers.extend(dict(m) for m in data.get("markers", ()))

    def _merge_second(self, node: _EntryNode, row: Mapping[str, Any]) -> None:
        second = int(row["t"])
        if node.row is not None and second == node.second:
            target = node.row
            add_hist(target[2], row.get("latency"))
        else:
            target = node.series.setdefault(second, [0, 0, _pack(()), None])
            merged = dict(_unpack(target[2]))
            for index, count in hist_items(row.get("latency")):
                merged[index] = merged.get(index, 0) + count
            target[2] = _pack(sorted(merged.items()))
        target[0] += row.get("requests", 0)
        target[1] += row.get("failures", 0)
        detail = {"pods": row.get("pods"), "kinds": row.get("kinds"),
                  "failure_latency": dict(hist_items(row.get("failure_latency")))}
        if any(detail.values()):
            target[3] = _add_detail(target[3], detail)

    # -- export ------------------------------------------------------------------------------

    def _export(self, include_live: bool) -> dict[str, Any]:
        self.flush()
        overall = [0] * BUCKETS
        entry_nodes: dict[str, Any] = {}
        series: dict[str, Any] = {}
        pod_successes: dict[str, int] = {}
        total_successes = total_failures = 0
        for name, node in self._entry.items():
            pods = {c.pod.name: c.successes for c in node.cells.values()}
            for pod, count in pods.items():
                pod_successes[pod] = pod_successes.get(pod, 0) + count
            successes = sum(pods.values())
            failures = sum(node.failure_kinds.values())
            total_successes += successes
            total_failures += failures
            for index, count in enumerate(node.latency):
                if count:
                    overall[index] += count
            entry_nodes[name] = {
                "requests": successes + failures,
                "successes": successes,
                "failures": failures,
                "pods": pods,
                "failure_kinds": dict(node.failure_kinds),
                "http_status": {str(k): v for k, v in sorted(node.http_status.items())},
                "latency": sparse(node.latency),
                "failure_latency": sparse(node.failure_latency),
                **({"via_nodes": dict(node.via)} if node.via else {}),
            }
            series[name] = _export_series(node)
        distinct = dict(self._conn_distinct)
        requests_hist = dict(self._conn_requests_hist)
        tracked, conn_requests = self._conn_tracked, self._conn_requests
        if include_live:
            for conn in self._live.values():
                self._fold_connection(conn, distinct, requests_hist)
                tracked += 1
                conn_requests += conn[0]
        return {
            "schema": SPREAD_SCHEMA,
            "histogram": dict(LAYOUT),
            "start": None if self._start == math.inf else self._start,
            "end": None if self._end == -math.inf else self._end,
            "pod_nodes": dict(self.pod_nodes),
            "totals": {
                "requests": total_successes + total_failures,
                "successes": total_successes,
                "failures": total_failures,
            },
            "latency": {"count": total_successes, "buckets": sparse(overall)},
            "failure_latency": sparse(self._failure_latency),
            "entry_nodes": entry_nodes,
            "pods": {
                name: {
                    "node": pod.node,
                    "successes": pod_successes.get(name, 0),
                    "failures": pod.failures,
                    "latency": sparse(pod.latency),
                }
                for name, pod in self._pods.items()
            },
            "locality": {
                name: {"successes": sum(dense), "latency": sparse(dense)}
                for name, dense in self._locality.items()
            },
            "series": series,
            "connections": {
                "tracked": tracked,
                "requests": conn_requests,
                "evicted": self._conn_evicted,
                "distinct_pods": {str(k): v for k, v in sorted(distinct.items())},
                "requests_per_connection": [[i, n] for i, n in sorted(requests_hist.items())],
            },
            "markers": sorted((dict(m) for m in self._markers), key=lambda m: m["t"]),
            "limits": {"max_pods": self.max_pods, "max_connections": self.max_connections,
                       "pod_names_over_cap": self.names_over_cap()},
        }

    def names_over_cap(self) -> int:
        """Distinct pod names seen beyond ``max_pods`` (counted as "(other)"), at least:
        merged from other processes as the largest count (they may share names)."""
        return max(len(self._over_cap), self._over_cap_merged)


def _trimmed(name: object) -> str:
    """A pod name as a reply gave it, trimmed; blank or longer than a DNS name: unknown."""
    return (clean_pod_name(name) if isinstance(name, str) else None) or UNKNOWN_POD


def _distinct(cells: Mapping[str, _Cell]) -> Iterable[_Cell]:
    """Each cell once (a cell may be keyed by more than one spelling of its pod's name)."""
    return {id(cell): cell for cell in cells.values()}.values()


def _export_series(node: _EntryNode) -> list[dict[str, Any]]:
    rows = {s: (r[0], r[1], [list(p) for p in _unpack(r[2])], r[3])
            for s, r in node.series.items()}
    if node.row is not None:
        detail = node.row[3]
        pods = _second_pods(node, mark=False)
        if pods:
            detail = _add_detail(dict(detail or {}), {"pods": pods})
        rows[node.second] = (node.row[0], node.row[1], sparse(node.row[2]), detail)
    out = []
    for second, (requests, failures, pairs, detail) in sorted(rows.items()):
        row = {"t": second, "requests": requests, "failures": failures, "latency": pairs,
               "pods": dict((detail or {}).get("pods") or {})}
        if detail and detail.get("kinds"):
            row["kinds"] = dict(detail["kinds"])
            row["failure_latency"] = [[i, n] for i, n in sorted(
                detail.get("failure_latency", {}).items())]
        out.append(row)
    return out


def _second_pods(node: _EntryNode, mark: bool) -> dict[str, int]:
    """Successes per pod since the entry node's last closed second (``mark``: close it)."""
    pods: dict[str, int] = {}
    for cell in _distinct(node.cells):
        served = cell.successes - cell.marked
        if served:
            pods[cell.pod.name] = pods.get(cell.pod.name, 0) + served
            if mark:
                cell.marked = cell.successes
    return pods


def _add_detail(detail: dict[str, Any] | None, more: Mapping[str, Any]) -> dict[str, Any]:
    """Add a second's detail (pods / kinds / failure_latency counts) into another's."""
    detail = {} if detail is None else detail
    for key, counts in more.items():
        if counts:
            into = detail.setdefault(key, {})
            for name, count in counts.items():
                into[name] = into.get(name, 0) + count
    return detail


def _pack(pairs: Iterable[Sequence[int]]) -> array:
    # A closed second's histogram as flat (index, count) uint32s: ~8 bytes a bucket instead
    # of ~25 in a dict, which is what keeps an hour-long run's series small.
    return array("I", [value for pair in pairs for value in pair])


def _unpack(packed: array) -> Iterable[tuple[int, int]]:
    return zip(packed[0::2], packed[1::2], strict=True)


def check_spread(data: Mapping[str, Any]) -> None:
    """Raise DataError unless ``data`` is spread/v1 data in this histogram layout."""
    schema = data.get("schema")
    if schema != SPREAD_SCHEMA:
        raise DataError(
            f"spread data has schema {schema!r}, expected {SPREAD_SCHEMA!r}: "
            "re-run with this version of nodeport-harness"
        )
    layout = data.get("histogram", LAYOUT)
    if dict(layout) != LAYOUT:
        raise DataError(
            f"spread data uses histogram layout {dict(layout)}, expected {LAYOUT}: "
            "it was written by an incompatible nodeport-harness"
        )
