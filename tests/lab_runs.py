"""Helpers shared by the lab tests: requests to the lab, real runs as subprocesses (the labs
themselves and `stop_process` are in conftest.py).

Everything is loopback and bounded: every subprocess has a timeout, every wait a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = str(ROOT / "locustfile.py")


MESSAGE = json.dumps({"sender": "test"}).encode()


def post(ip: str, port: int, timeout: float = 3.0,
         conn: http.client.HTTPConnection | None = None) -> dict:
    """One POST /api/messages; a new connection unless `conn` is given (keep-alive)."""
    assert ip.startswith(("127.", "198.18.", "198.19.")), ip  # loopback, or the lab's netns
    own = conn is None
    conn = conn or http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("POST", "/api/messages", body=MESSAGE,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return json.loads(body)
    finally:
        if own:
            conn.close()


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def locust_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args]


def run(cmd: list[str], timeout: float = 90, env: dict | None = None,
        ) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL)


def load(run_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((run_dir / name).read_text())


def pod_successes(spread: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in spread["entry_nodes"].values():
        for pod, count in entry["pods"].items():
            out[pod] = out.get(pod, 0) + count
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {p: after[p] - before.get(p, 0) for p in after if after[p] - before.get(p, 0)}


def wait_for_traffic(lab, before: dict[str, int], proc: subprocess.Popen | None = None,
                     deadline_s: float = 30.0) -> float:
    """Block until the lab's pods served something new; returns when (time.time())."""
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before any traffic: {proc.stderr.read()[-2000:]}")
        if sum(lab.stats().values()) > sum(before.values()):
            return time.time()
        time.sleep(0.1)
    raise AssertionError("no traffic reached the lab")


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str,
                          *, exact: bool = True) -> str:
    """Exit 2, one `error:` line naming the problem, no traceback. `exact`: nothing else at all
    on stderr (else: Locust's own INFO log lines may surround it)."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("error:")]
    assert len(ours) == 1, err[-3000:]
    if exact:
        assert lines == ours, err[-3000:]
    assert fragment in ours[0], (fragment, ours[0])
    return ours[0]


def http_requests(conn, stop=None):
    """Yield (request line, body) for each HTTP/1.1 request read from a test server's
    accepted socket (headers, then a Content-Length body), until the client closes it or
    ``stop`` (a threading.Event) is set. The loopback test servers share it."""
    data = b""
    while stop is None or not stop.is_set():
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith("content-length:")), 0)
        while len(data) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        body, data = data[:length], data[length:]
        yield lines[0], body

