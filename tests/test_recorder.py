"""SpreadRecorder: exact merging and draining, histogram accuracy, flat memory, raw output."""

from __future__ import annotations

import csv
import gc
import gzip
import json
import random
import subprocess
import sys
import tracemalloc
import types

import numpy as np
import pytest

from harness.core.histogram import (
    BUCKETS,
    INDEX_TABLE,
    SERIES_SHIFT,
    bucket_index,
    bucket_of_us,
    bucket_range_us,
    bucket_value_ms,
    percentiles,
)
from harness.core.recorder import (
    BATCH,
    OTHER_POD,
    SPREAD_SCHEMA,
    UNKNOWN_POD,
    SpreadRecorder,
    failure_kind,
)
from harness.errors import DataError
from harness.plugin.rawfile import RawWriter

POD_NODES = {f"pod-{i}": f"node-{i % 3 + 1}" for i in range(6)}
NODES = ["node-1", "node-2", "node-3"]


class Clock:
    """A settable clock: tests decide which second each request lands in."""

    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def stream(count: int, seed: int = 7, step: float = 0.0007):
    """A realistic request mix: (time, entry_node, pod, latency_ms, failure, connection)."""
    rng = random.Random(seed)
    pods = list(POD_NODES)
    t = 1_700_000_000.25
    failures = ["refused", "timeout", "reset", "http_503", "http_404", "bad_reply", "boom"]
    for i in range(count):
        t += step
        failure = rng.choice(failures) if rng.random() < 0.02 else None
        pod = rng.choice(pods) if failure is None or failure.startswith("http") else None
        if failure is None and rng.random() < 0.01:
            pod = None  # a reply that named no pod
        connection = i // 37 if rng.random() < 0.9 else None
        yield t, NODES[i % 3], pod, rng.lognormvariate(0.3, 0.6), failure, connection


def canonical(data: dict) -> dict:
    return json.loads(json.dumps(data, sort_keys=True))


def feed(recorder: SpreadRecorder, clock: Clock, rows) -> None:
    for t, node, pod, latency, failure, connection in rows:
        clock.t = t
        recorder.record(node, pod, latency, failure, connection)


# -- purity ----------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["harness.core.recorder", "harness.core.analysis"])
def test_pure_core_imports_no_locust_gevent_or_kubernetes(module):
    code = (
        f"import sys, {module}\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "bad = sorted(loaded & {'locust', 'gevent', 'kubernetes'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


# -- histogram layout ------------------------------------------------------------------------

def test_bucket_layout_is_contiguous_and_table_matches_formula():
    previous_high = 0
    for index in range(BUCKETS):
        low, high = bucket_range_us(index)
        assert low == previous_high
        assert (high - low) / max(low, 1) <= 1 / 64 or low < 128
        previous_high = high
    assert previous_high == 1 << 37
    step = 97
    assert all(INDEX_TABLE[v] == bucket_of_us(v) for v in range(0, len(INDEX_TABLE), step))
    for value in (0, 1, 127, 128, 129, 255, 256, 1000, 131071, 131072, 10**7, 1 << 36):
        low, high = bucket_range_us(bucket_of_us(value))
        assert low <= value < high
    assert bucket_of_us(1 << 40) == BUCKETS - 1
    assert bucket_index(float("inf")) == BUCKETS - 1
    assert bucket_index(float("nan")) == 0
    assert bucket_index(-3.0) == 0


def test_histogram_percentiles_within_one_percent_of_numpy():
    rng = np.random.default_rng(42)
    latencies = rng.lognormal(mean=np.log(2.0), sigma=0.8, size=200_000)  # ms
    clock = Clock()
    recorder = SpreadRecorder(POD_NODES, clock)
    for i, latency in enumerate(latencies.tolist()):
        clock.t = 1_700_000_000.0 + i * 1e-4  # 20 s
        recorder.record(NODES[i % 3], f"pod-{i % 6}", latency)
    data = recorder.to_dict()
    quantiles = [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    ours = percentiles(data["latency"]["buckets"], quantiles)
    for q, value in zip(quantiles, ours, strict=True):
        exact = float(np.percentile(latencies, q * 100, method="inverted_cdf"))
        assert abs(value - exact) / exact <= 0.01, (q, value, exact)
    # Per node, per pod and per-second (coarse) histograms see the same values.
    node_1 = latencies[0::3]
    ours_node = percentiles(data["entry_nodes"]["node-1"]["latency"], [0.5, 0.99])
    for q, value in zip([0.5, 0.99], ours_node, strict=True):
        exact = float(np.percentile(node_1, q * 100, method="inverted_cdf"))
        assert abs(value - exact) / exact <= 0.01
    second = data["series"]["node-2"][3]
    first_index = round((second["t"] - 1_700_000_000.0) / 1e-4)
    in_second = [latencies[i] for i in range(first_index - 3, first_index + 10_003)
                 if i % 3 == 1 and int(1_700_000_000.0 + i * 1e-4) == second["t"]]
    assert second["requests"] == len(in_second)
    coarse = percentiles(second["latency"], [0.5, 0.95], SERIES_SHIFT)
    for q, value in zip([0.5, 0.95], coarse, strict=True):
        exact = float(np.percentile(in_second, q * 100, method="inverted_cdf"))
        assert abs(value - exact) / exact <= 0.032


def test_percentiles_of_empty_histogram_are_none():
    assert percentiles([], [0.5, 0.99]) == [None, None]
    assert percentiles([0] * BUCKETS, [0.5]) == [None]


# -- what is counted -------------------------------------------------------------------------

def test_counts_pods_cross_node_failures_and_status_codes():
    clock = Clock()
    recorder = SpreadRecorder(POD_NODES, clock)
    recorder.record("node-1", "pod-0", 1.0)  # pod-0 runs on node-1: local
    recorder.record("node-1", "pod-1", 2.0)  # node-2: cross-node
    recorder.record("node-1", None, 3.0)  # unknown pod
    recorder.record("node-2", "pod-1", 4.0, "http_503")
    recorder.record("node-2", None, 5.0, "refused")
    recorder.record("node-2", None, 5.0, "a strange message")
    data = recorder.to_dict()
    assert data["schema"] == SPREAD_SCHEMA
    assert data["totals"] == {"requests": 6, "successes": 3, "failures": 3}
    assert recorder.totals() == data["totals"]
    node_1, node_2 = data["entry_nodes"]["node-1"], data["entry_nodes"]["node-2"]
    assert node_1["pods"] == {"pod-0": 1, "pod-1": 1, UNKNOWN_POD: 1}
    assert node_2["failure_kinds"] == {"http_5xx": 1, "refused": 1, "other": 1}
    assert node_2["http_status"] == {"503": 1}
    assert data["pods"]["pod-1"]["failures"] == 1
    assert {k: v["successes"] for k, v in data["locality"].items()} == {
        "local": 1, "cross_node": 1, "unknown": 1}
    assert failure_kind("http_404") == ("http_4xx", 404)
    assert failure_kind("http_5xx") == ("http_5xx", None)
    assert failure_kind("timeout") == ("timeout", None)


def test_entry_point_that_is_not_a_node_has_unknown_locality():
    recorder = SpreadRecorder(POD_NODES, Clock(), nodes=NODES)
    recorder.record("lb", "pod-0", 1.0)
    recorder.record("node-1", "pod-0", 1.0)
    locality = recorder.to_dict()["locality"]
    assert locality["unknown"]["successes"] == 1
    assert locality["local"]["successes"] == 1


def test_per_second_series_and_a_clock_that_steps_back():
    clock = Clock(100.5)
    recorder = SpreadRecorder(POD_NODES, clock)
    for t, failure in [(100.5, None), (101.2, "timeout"), (100.7, None), (102.0, None)]:
        clock.t = t
        recorder.record("node-1", "pod-0", 1.0, failure)
    data = recorder.to_dict()
    rows = [(r["t"], r["requests"], r["failures"]) for r in data["series"]["node-1"]]
    assert rows == [(100, 2, 0), (101, 1, 1), (102, 1, 0)]
    assert data["start"] == 100.5 and data["end"] == 102.0


def test_queued_requests_keep_their_own_time_and_order():
    # record() queues; reads account the queue. A request belongs to the second it finished
    # in, not the one it was accounted in; a connection ended between requests splits them.
    clock = Clock(100.2)
    recorder = SpreadRecorder(POD_NODES, clock)
    for t in (100.2, 100.9, 101.1):
        clock.t = t
        recorder.record("node-1", "pod-0", 1.0, None, "a")
    recorder.end_connection("a")
    recorder.record("node-1", "pod-1", 1.0, None, "a")
    recorder.record("node-1", "pod-1", 1.0, None, "a")
    clock.t = 500.0
    data = recorder.to_dict()
    rows = [(r["t"], r["requests"]) for r in data["series"]["node-1"]]
    assert rows == [(100, 2), (101, 3)]
    assert data["end"] == 101.1
    conns = data["connections"]
    assert conns["tracked"] == 2
    assert conns["requests_per_connection"] == [[2, 1], [3, 1]]
    # Across batch boundaries nothing is lost or counted twice.
    recorder.drain(final=True)
    for i in range(3 * BATCH + 7):
        recorder.record("node-2", f"pod-{i % 3}", 1.0)
    assert recorder.totals() == {"requests": 3 * BATCH + 7, "successes": 3 * BATCH + 7,
                                 "failures": 0}


def test_pod_names_are_trimmed_once_per_spelling():
    # The recorder takes a name as the reply gave it (Locust's header value, untouched on
    # the hot path) and trims it when it first sees that spelling.
    recorder = SpreadRecorder(POD_NODES, Clock(), max_pods=5)
    for pod in (" pod-0 ", "pod-0", "pod-0\t", "", "   ", "x" * 300, None, "pod-0"):
        recorder.record("node-1", pod, 1.0, None, "c1")
    data = recorder.to_dict()
    assert data["entry_nodes"]["node-1"]["pods"] == {"pod-0": 4, UNKNOWN_POD: 4}
    assert data["pods"]["pod-0"]["successes"] == 4
    assert data["locality"]["local"]["successes"] == 4
    assert recorder.totals() == {"requests": 8, "successes": 8, "failures": 0}
    assert data["connections"]["distinct_pods"] == {"1": 1}  # one pod, however spelled
    recorder.record("node-1", " pod-0 ", 1.0, "http_500")  # a failed reply that named it
    assert recorder.to_dict()["pods"]["pod-0"]["failures"] == 1
    # Spellings are bounded: past max_pods of them, a name is trimmed on every request.
    for i in range(50):
        recorder.record("node-1", "pod-1" + " " * (i + 1), 1.0)
    recorder.flush()
    assert len(recorder._entry["node-1"].cells) <= 2 + 1 + 5
    assert recorder.to_dict()["entry_nodes"]["node-1"]["pods"]["pod-1"] == 50


def test_pod_names_beyond_the_cap_fold_into_other():
    recorder = SpreadRecorder({}, Clock(), max_pods=5)
    for i in range(100):
        recorder.record("node-1", f"request-id-{i}", 1.0)
    data = recorder.to_dict()
    assert len(data["pods"]) == 6  # five names, then "(other)"
    assert data["pods"][OTHER_POD]["successes"] == 95
    assert data["totals"]["successes"] == 100
    assert len(recorder._entry["node-1"].cells) == 6


def test_markers_are_kept_and_sorted():
    clock = Clock(50.0)
    recorder = SpreadRecorder(POD_NODES, clock)
    recorder.mark(60.0, "node-2 up")
    recorder.mark(None, "node-2 down")
    assert recorder.to_dict()["markers"] == [
        {"t": 50.0, "label": "node-2 down"}, {"t": 60.0, "label": "node-2 up"}]


# -- connections -----------------------------------------------------------------------------

def test_connection_pinning_and_requests_per_connection():
    recorder = SpreadRecorder(POD_NODES, Clock())
    for connection in range(1, 11):  # (0 means a connection of the request's own)
        for _ in range(20):  # keep-alive: one pod per connection
            recorder.record("node-1", f"pod-{connection % 6}", 1.0, None, connection)
    for _ in range(3):  # a connection that saw three pods, then failed once
        recorder.record("node-1", "pod-0", 1.0, None, "multi")
        recorder.record("node-1", "pod-1", 1.0, None, "multi")
        recorder.record("node-1", "pod-2", 1.0, None, "multi")
    recorder.record("node-1", None, 1.0, "reset", "multi")
    recorder.record("node-1", None, 1.0, "refused", "never-answered")
    recorder.record("node-1", "pod-0", 1.0)  # untracked
    conns = recorder.to_dict()["connections"]
    assert conns["tracked"] == 12
    assert conns["requests"] == 10 * 20 + 10 + 1
    assert conns["distinct_pods"] == {"0": 1, "1": 10, "3": 1}
    assert conns["requests_per_connection"] == [[1, 1], [10, 1], [20, 10]]


def test_connection_zero_is_a_connection_per_request():
    # --connection close: each request opened (and closed) its own TCP connection.
    recorder = SpreadRecorder(POD_NODES, Clock())
    for index in range(30):
        recorder.record("node-1", f"pod-{index % 3}", 1.0, None, 0)
    recorder.record("node-1", None, 1.0, "refused", 0)
    conns = recorder.drain(final=True)["connections"]
    assert conns["tracked"] == 31 and conns["requests"] == 31
    assert conns["distinct_pods"] == {"0": 1, "1": 30}
    assert conns["requests_per_connection"] == [[1, 31]]


def test_series_rows_name_the_pods_and_the_failures_of_each_second():
    clock = Clock()
    recorder = SpreadRecorder(POD_NODES, clock)
    for second in range(3):
        for index in range(10):
            recorder.record("node-1", f"pod-{index % 2}", 2.0)
        if second == 1:
            recorder.record("node-1", None, 5000.0, "timeout")
            recorder.record("node-1", None, 0.2, "refused")
        clock.t += 1.0
    delta = recorder.drain()  # a worker's delta, merged on a master
    merged = SpreadRecorder(POD_NODES, Clock())
    merged.merge(delta)
    for data in (delta, merged.to_dict()):
        rows = data["series"]["node-1"]
        assert [r["pods"] for r in rows] == [{"pod-0": 5, "pod-1": 5}] * 3
        assert [r.get("kinds") for r in rows] == [None, {"timeout": 1, "refused": 1}, None]
        (slow, slow_n), (fast, fast_n) = sorted(
            rows[1]["failure_latency"], key=lambda pair: -pair[0])
        assert slow_n == fast_n == 1
        assert 4800 < bucket_value_ms(slow, SERIES_SHIFT) < 5200
        assert data["entry_nodes"]["node-1"]["failure_latency"]
    # Merged counts stay in their own seconds: a later second of the master's is not
    # credited with the merged successes.
    merged.merge(recorder.drain())
    assert sum(sum(r["pods"].values()) for r in merged.to_dict()["series"]["node-1"]) == 30


def test_connection_tracking_is_bounded_and_oldest_finish_first():
    recorder = SpreadRecorder(POD_NODES, Clock(), max_connections=100)
    for connection in range(1, 1001):
        recorder.record("node-1", "pod-0", 1.0, None, connection)
        recorder.record("node-1", "pod-1", 1.0, None, connection)
        recorder.flush()  # account the queue before looking at the live connections
        assert len(recorder._live) <= 100
    assert 1 not in recorder._live and 1000 in recorder._live
    conns = recorder.to_dict()["connections"]
    assert conns["tracked"] == 1000
    assert conns["distinct_pods"] == {"2": 1000}
    assert conns["evicted"] == 1000 - len(recorder._live)
    recorder.end_connection(1000)
    assert 1000 not in recorder._live
    assert recorder.to_dict()["connections"]["tracked"] == 1000


# -- merge, drain, round trip ----------------------------------------------------------------

def test_drained_deltas_merge_to_one_recorder_that_saw_everything():
    rows = list(stream(20_000))
    clock_all, clock_worker = Clock(), Clock()
    everything = SpreadRecorder(POD_NODES, clock_all)
    worker = SpreadRecorder(POD_NODES, clock_worker)
    deltas = []
    for i, row in enumerate(rows):
        feed(everything, clock_all, [row])
        feed(worker, clock_worker, [row])
        if i == 5000:
            everything.mark(row[0], "node-2 down")
            worker.mark(row[0], "node-2 down")
        if i % 997 == 0:
            deltas.append(json.loads(json.dumps(worker.drain())))
    deltas.append(worker.drain(final=True))
    master = SpreadRecorder(POD_NODES)
    for delta in deltas:
        master.merge(delta)
    assert canonical(master.to_dict()) == canonical(everything.to_dict())
    assert worker.totals() == {"requests": 0, "successes": 0, "failures": 0}


def test_two_workers_merge_exactly():
    rows = list(stream(12_000, seed=3))
    clocks = [Clock(), Clock(), Clock()]
    everything = SpreadRecorder(POD_NODES, clocks[0])
    workers = [SpreadRecorder(POD_NODES, clocks[1]), SpreadRecorder(POD_NODES, clocks[2])]
    master = SpreadRecorder(POD_NODES)
    for i, row in enumerate(rows):
        feed(everything, clocks[0], [row])
        # A connection lives in one worker, as in Locust.
        which = 0 if row[5] is None else row[5] % 2
        feed(workers[which], clocks[which + 1], [row])
        if i % 1500 == 0:
            for worker in workers:
                master.merge(worker.drain())
    for worker in workers:
        master.merge(worker.drain(final=True))
    assert canonical(master.to_dict()) == canonical(everything.to_dict())


def test_merge_accepts_a_recorder():
    rows = list(stream(3000, seed=5))
    clock = Clock()
    first, second, both = (SpreadRecorder(POD_NODES, clock) for _ in range(3))
    feed(first, clock, rows[:1500])
    feed(second, clock, rows[1500:])
    feed(both, clock, rows)
    first.merge(second)
    assert first.totals() == both.totals() == {"requests": 3000,
                                               "successes": both.totals()["successes"],
                                               "failures": both.totals()["failures"]}
    merged, whole = first.to_dict(), both.to_dict()
    # Connection 1500 // 37 straddles the split: the only allowed difference.
    for data in (merged, whole):
        data.pop("connections")
    assert canonical(merged) == canonical(whole)


def test_to_dict_from_dict_round_trip_through_json():
    clock = Clock()
    recorder = SpreadRecorder(POD_NODES, clock, max_connections=500, max_pods=50)
    feed(recorder, clock, stream(5000, seed=11))
    recorder.mark(clock.t, "node-1 down")
    data = json.loads(json.dumps(recorder.to_dict(), allow_nan=False))
    again = SpreadRecorder.from_dict(data).to_dict()
    assert canonical(again) == data
    assert data["limits"] == {"max_pods": 50, "max_connections": 500, "pod_names_over_cap": 0}


def test_merge_refuses_other_schemas():
    recorder = SpreadRecorder(POD_NODES)
    with pytest.raises(DataError, match="schema"):
        recorder.merge({"schema": "something/else"})
    bad_layout = {**recorder.to_dict(), "histogram": {"unit": "ms"}}
    with pytest.raises(DataError, match="layout"):
        recorder.merge(bad_layout)


# -- memory ----------------------------------------------------------------------------------

def retained_bytes(root: object) -> int:
    """Everything reachable from ``root`` (classes, modules and functions excluded)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def busy_recorder():
    """A recorder and a function feeding it requests first..last (10 000 per second)."""
    clock = Clock()
    recorder = SpreadRecorder(POD_NODES, clock)
    pods = list(POD_NODES)
    rng = random.Random(1)
    latencies = [rng.lognormvariate(0.3, 0.6) for _ in range(4096)]
    base = 1_700_000_000.0

    def run(first: int, last: int) -> None:
        record = recorder.record
        for i in range(first, last):
            clock.t = base + i * 1e-4
            # Three requests per connection, over three pods: sets in every live connection.
            record(NODES[i % 3], pods[i % 6], latencies[i & 4095], None, i // 3)

    return recorder, run


def test_memory_is_flat_in_the_number_of_requests():
    recorder, run = busy_recorder()
    run(0, 50_000)  # every node, pod and the 10 000 live connections exist
    before = retained_bytes(recorder)
    run(50_000, 1_050_000)
    grown = retained_bytes(recorder) - before
    assert recorder.totals()["requests"] == 1_050_000
    # What may grow is the per-second series: 100 s x 3 nodes of packed rows (~1 KB each).
    assert grown < 1024 * 1024, grown


def test_no_allocation_is_kept_per_request():
    recorder, run = busy_recorder()
    # Traced from the start, so live connections replaced later count as freed. tracemalloc
    # slows every allocation twentyfold: a shorter run than the retained-size test.
    tracemalloc.start()
    try:
        run(0, 50_000)
        before = tracemalloc.get_traced_memory()[0]
        run(50_000, 200_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 512 * 1024, grown  # 15 s of series rows, nothing per request


# -- raw output ------------------------------------------------------------------------------

def test_raw_writer_writes_every_request_as_gzip_csv(tmp_path):
    path = tmp_path / "requests.csv.gz"
    clock = Clock(10.0)
    recorder = SpreadRecorder(POD_NODES, clock, raw=RawWriter(path))
    recorder.record("node-1", "pod-0", 1.25, None, 7)
    clock.t = 10.5
    recorder.record("node-1", "pod-1", 2.5, None, (1, "node-1", 0))
    recorder.record("node-2", None, 3.0, "timeout")
    recorder.record("node-1", " pod-0 ", 1.0)  # as the reply spelled it: trimmed
    assert not path.exists()  # written atomically on close
    recorder.close()
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(RawWriter.FIELDS)
    assert rows[1] == ["10.000000", "node-1", "pod-0", "node-1", "0", "1.250", "", "7"]
    assert rows[2][2:5] == ["pod-1", "node-2", "1"]
    assert rows[3][1:] == ["node-2", UNKNOWN_POD, "", "", "3.000", "timeout", ""]
    assert rows[4][1:5] == ["node-1", "pod-0", "node-1", "0"]
    assert len(rows) == 5
    assert not path.with_name(path.name + ".part").exists()
