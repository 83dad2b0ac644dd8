"""Issue 18: replies are bounded in size (--max-body, decoded too) and time (--timeout covers
the whole request), a run that recorded nothing cannot pass, a slow --pod-from regex cannot
hang a user, and pod names beyond the recorder's cap are named as such (--max-pods).

NodePortUser runs as in tests/test_users.py (a subprocess with a Locust Environment) against
small loopback servers that misbehave on purpose; `nodeport-harness run` for real for the
exit code; the rest is pure.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from lab_runs import http_requests
from report_runs import T0, make_target
from test_users import hand_target, send

from harness.core.analysis import summarize
from harness.core.extract import make_extractor
from harness.core.recorder import SpreadRecorder

ROOT = Path(__file__).resolve().parents[1]
POD = b'{"host": "pod-a"}'
BOMB = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # ~64 KiB that inflates to 64 MiB


class MisbehavingServer:
    """HTTP/1.1 on loopback, one reply style for every request: ``ok`` (names pod-a),
    ``chunked_forever`` (64 KiB chunks until the client goes), ``bomb`` (gzip, 64 MiB
    inflated), ``declared`` (Content-Length 1 GiB, then nothing), ``trickle`` (a byte of body
    every 0.1 s, forever), ``trickle_headers`` (the headers a byte every 0.1 s), ``silent``
    (reads the request, never answers), ``big`` (a plain 200-byte body)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            for _request in http_requests(conn, self.stop):
                self._reply(conn)

    def _reply(self, conn: socket.socket) -> None:
        mode, ok = self.mode, b"HTTP/1.1 200 OK\r\n"
        if mode in ("ok", "big"):
            body = POD if mode == "ok" else b"x" * 200
            conn.sendall(ok + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "chunked_forever":
            conn.sendall(ok + b"Transfer-Encoding: chunked\r\n\r\n")
            block = b"%x\r\n" % 65536 + b"y" * 65536 + b"\r\n"
            while not self.stop.is_set():
                conn.sendall(block)
        elif mode == "bomb":
            conn.sendall(ok + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                         % len(BOMB) + BOMB)
        elif mode == "declared":
            conn.sendall(ok + b"Content-Length: %d\r\n\r\n" % (1 << 30))
            self.stop.wait(30)
        elif mode in ("trickle", "trickle_headers"):
            head = ok + b"Content-Length: 100000\r\n\r\n"
            if mode == "trickle":
                conn.sendall(head)
                head = b"z" * 100000
            for byte in head:
                if self.stop.wait(0.1):
                    return
                conn.sendall(bytes([byte]))
        elif mode == "silent":
            self.stop.wait(60)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def server():
    made: list[MisbehavingServer] = []

    def make(mode: str) -> MisbehavingServer:
        made.append(MisbehavingServer(mode))
        return made[-1]

    yield make
    for s in made:
        s.close()


def one_node(server: MisbehavingServer):
    return hand_target({"node-1": "127.0.0.1"}, server.port, {"pod-a": "node-1"})


def kinds(spread: dict) -> dict:
    return spread["entry_nodes"]["node-1"]["failure_kinds"]


# -- size: --max-body, raw and decoded -------------------------------------------------------

@pytest.mark.parametrize("mode", ["chunked_forever", "bomb", "declared"])
def test_replies_over_max_body_fail_as_too_large_and_are_recorded(server, mode):
    started = time.monotonic()
    spread = send(one_node(server(mode)), "--method", "get", rounds=3)["spread"]
    assert spread["totals"] == {"requests": 3, "successes": 0, "failures": 3}
    assert kinds(spread) == {"too_large": 3}
    assert time.monotonic() - started < 30  # not read to the end (there is none)


def test_max_body_option_sets_the_bound_and_normal_replies_still_name_their_pod(server):
    big, ok = server("big"), server("ok")
    spread = send(one_node(big), "--method", "get", "--max-body", "100", rounds=2)["spread"]
    assert kinds(spread) == {"too_large": 2}
    spread = send(one_node(big), "--method", "get", "--max-body", "1k", rounds=2)["spread"]
    assert spread["totals"]["failures"] == 0
    spread = send(one_node(ok), "--method", "get", rounds=3)["spread"]
    assert spread["totals"]["successes"] == 3
    assert spread["entry_nodes"]["node-1"]["pods"] == {"pod-a": 3}


def test_max_body_rejects_what_is_not_a_size():
    from harness.cli import main

    for bad in ("0", "-5", "1.5M", "lots"):
        with pytest.raises(SystemExit) as exc:
            main(["run", "--inventory", "none.yaml", "--max-body", bad])
        assert exc.value.code == 2


# -- time: --timeout is the whole request's limit --------------------------------------------

@pytest.mark.parametrize("mode", ["trickle", "trickle_headers"])
def test_trickling_replies_time_out_at_timeout_for_the_whole_request(server, mode):
    started = time.monotonic()
    spread = send(one_node(server(mode)), "--method", "get", "--timeout", "1", rounds=2)["spread"]
    elapsed = time.monotonic() - started
    assert spread["totals"] == {"requests": 2, "successes": 0, "failures": 2}
    assert kinds(spread) == {"timeout": 2}
    assert elapsed < 15  # 2 x (1 s + the watchdog's 0.1 s), plus start-up; not forever


def real_run(tmp_path: Path, server: MisbehavingServer, *options: str, env=None):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        f"service: {{name: web, nodePort: {server.port}}}\n"
        "nodes: [{name: node-1, address: 127.0.0.1}]\n"
        "endpoints: [{pod: pod-a, node: node-1}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--inventory", str(inventory),
         "--report-dir", str(tmp_path), "--run-id", "r", "-u", "1", "-t", "2s",
         "--plotlyjs", "cdn", "--method", "get", *options],
        capture_output=True, text=True, timeout=90, cwd=ROOT, stdin=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env})
    return proc, tmp_path / "r"


def test_a_trickling_run_records_its_timeouts_and_fails(tmp_path, server):
    proc, run_dir = real_run(tmp_path, server("trickle"), "--timeout", "0.5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["totals"]["requests"] >= 2
    assert summary["failures"]["by_kind"] == {"timeout": summary["totals"]["requests"]}
    failed = summary["totals"]["failures"]
    assert f'<property name="failures" value="{failed}" />' in (run_dir / "junit.xml").read_text()


def test_a_run_that_recorded_nothing_exits_1_saying_so(tmp_path, server):
    # The user's one request is still waiting when the stop timeout ends it: nothing recorded.
    proc, run_dir = real_run(tmp_path, server("silent"), "--timeout", "30",
                             env={"LOCUST_STOP_TIMEOUT": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "nothing was recorded" in line]
    assert len(lines) == 1 and lines[0].startswith("error: nothing was recorded")
    junit = (run_dir / "junit.xml").read_text()
    assert 'failures="0"' not in junit and "nothing was recorded" in junit


# -- a slow --pod-from regex -----------------------------------------------------------------

def test_a_catastrophic_regex_is_stopped_and_said_once(caplog):
    extract = make_extractor("regex:([a-z0-9]+-?)+Z")
    slow = SimpleNamespace(headers={}, content=b"Z" + b"a" * 5000 + b"!")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="harness.extract"):
        assert [extract(slow) for _ in range(3)] == [None, None, None]
    assert time.monotonic() - started < 2  # 104 s for two replies with Python's re
    warnings = [r.getMessage() for r in caplog.records if "too slow" in r.getMessage()]
    assert len(warnings) == 1 and "regex:([a-z0-9]+-?)+Z is too slow" in warnings[0]
    assert "unknown" in warnings[0]
    # The same pattern still reads a reply it can match, within the first 4 KiB only.
    assert extract(SimpleNamespace(headers={}, content=b"pod-x1Z")) == "x1"  # group 1, as re
    assert make_extractor("regex:(pod-\\d+)")(
        SimpleNamespace(headers={}, content=b" " * 5000 + b"pod-7")) is None


# -- more pod names than the recorder keeps --------------------------------------------------

def cap_summary(names: int, max_pods: int) -> dict:
    target = make_target()
    now = [T0]
    recorder = SpreadRecorder(target.pod_nodes(), clock=lambda: now[0], max_pods=max_pods,
                              nodes=[n.name for n in target.nodes])
    for i in range(names * 2):
        now[0] = T0 + i / 1000
        recorder.record("node-1", f"pod-{i % names}", 2.0, None, None)
    recorder.close()
    return summarize(recorder.to_dict(), target.to_dict(),
                     {"entry_strategy": "single", "connection_mode": "keepalive", "start": T0})


def test_pods_beyond_the_cap_are_named_as_such_not_as_unreadable_replies():
    summary = cap_summary(names=50, max_pods=10)
    ids = {f["id"]: f for f in summary["findings"]}
    assert "unknown_pod" not in ids  # they named a pod: --pod-from is fine
    text = ids["pod_cap"]["text"]
    assert text.startswith("Replies named at least 50 distinct pods, over the 10 the run "
                           "records:")
    assert "--max-pods" in text and '"(other)"' in text
    assert summary["pod_cap"]["names_over_cap"] == 40
    assert "check --pod-from" not in text
    from harness.report.markdown import md

    assert "--max-pods" in md(text)


def test_the_cap_count_survives_merging():
    recorder = SpreadRecorder({}, max_pods=2)
    for i in range(6):
        recorder.record("node-1", f"p{i}", 1.0, None, None)
    recorder.close()
    merged = SpreadRecorder.from_dict(recorder.to_dict())
    assert merged.to_dict()["limits"]["pod_names_over_cap"] == 4
