"""The helloworld target app, as a real process on loopback: answers, bad input, capacity."""

from __future__ import annotations

import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import stop_process

HOST = "127.0.0.1"


def start_app(*extra: str) -> tuple[subprocess.Popen, int]:
    """Run `python -m harness.helloworld --port 0 ...`; return it and the port it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.helloworld", "--host", HOST, "--port", "0",
         "--pod-name", "pod-a", "--node-name", "node-a", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            line += chunk
    if b"listening on" not in line:
        stop_process(proc)
        raise AssertionError(f"helloworld did not start: {line!r}")
    return proc, int(line.split(b"listening on", 1)[1].strip().rsplit(b":", 1)[1])


@pytest.fixture(scope="module")
def app() -> Iterator[int]:
    proc, port = start_app()
    yield port
    stop_process(proc)


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, conn: http.client.HTTPConnection | None = None
            ) -> tuple[int, dict, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        if own:
            conn.close()


def stats(port: int) -> int:
    status, _, body = request(port, "GET", "/api/stats")
    assert status == 200
    data = json.loads(body)
    assert data["pod"] == "pod-a" and data["node"] == "node-a"
    return data["served"]


MESSAGE = json.dumps({"sender": "world1"}).encode()


def test_answers_with_pod_node_and_client(app: int) -> None:
    conn = http.client.HTTPConnection(HOST, app, timeout=5)
    conn.connect()
    local = conn.sock.getsockname()
    status, headers, body = request(app, "POST", "/api/messages", MESSAGE,
                                    {"Content-Type": "application/json"}, conn=conn)
    conn.close()
    assert status == 200
    assert headers["x-served-by"] == "pod-a"
    assert headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["sender"] == "world1"
    assert data["message"] == "Hello world1 (direct)"
    assert data["host"] == "pod-a" and data["node"] == "node-a"
    assert data["client"] == f"{local[0]}:{local[1]}"
    assert uuid.UUID(data["id"]).version == 4


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", None,
                                   "application/x-www-form-urlencoded"])
def test_body_is_json_whatever_the_content_type(app: int, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    status, _, body = request(app, "POST", "/api/messages", MESSAGE, headers)
    assert status == 200, body
    assert json.loads(body)["sender"] == "world1"


def test_chunked_body_is_read(app: int) -> None:
    with socket.create_connection((HOST, app), timeout=5) as sock:
        sock.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(MESSAGE), MESSAGE))
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200"), data[:80]


@pytest.mark.parametrize("body, why", [
    (b"{not json", "not valid JSON"),
    (b"", "JSON object"),
    (b'{"sender": 42}', "string"),
    (b'{"other": "x"}', "string"),
    (b'["world1"]', "string"),
    (b'{"sender": "\xff"}', "not valid JSON"),
])
def test_bad_json_is_400_with_json_error(app: int, body: bytes, why: str) -> None:
    before = stats(app)
    status, headers, answer = request(app, "POST", "/api/messages", body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert why in json.loads(answer)["error"]
    assert stats(app) == before  # failures are not counted as served


def test_body_over_64_kib_is_413(app: int) -> None:
    big = b'{"sender": "' + b"x" * (70 * 1024) + b'"}'
    status, headers, body = request(app, "POST", "/api/messages", big)
    assert status == 413
    assert "64" in json.loads(body)["error"] or "65536" in json.loads(body)["error"]
    # Exactly at the limit is fine.
    edge = b'{"sender": "' + b"y" * (64 * 1024 - 15) + b'"}'
    assert len(edge) <= 64 * 1024
    assert request(app, "POST", "/api/messages", edge)[0] == 200


def test_chunked_body_over_64_kib_is_413_without_reading_it_all(app: int) -> None:
    with socket.create_connection((HOST, app), timeout=5) as sock:
        sock.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n")
        chunk = b"z" * 16384
        for _ in range(5):  # 80 KiB, and the body never ends: a bounded read must stop
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 413"), data[:80]


def test_huge_declared_length_is_413_at_once(app: int) -> None:
    with socket.create_connection((HOST, app), timeout=5) as sock:
        sock.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n"
                     b"\r\n{")
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 413"), data[:80]


def test_unknown_path_and_wrong_method(app: int) -> None:
    assert request(app, "GET", "/nope")[0] == 404
    status, headers, _ = request(app, "GET", "/api/messages")
    assert status == 405 and headers["allow"] == "POST"
    assert request(app, "POST", "/healthz", b"{}")[0] == 405
    assert request(app, "GET", "/healthz")[0] == 200


def test_stats_count_served_messages(app: int) -> None:
    before = stats(app)
    conn = http.client.HTTPConnection(HOST, app, timeout=5)
    for _ in range(7):  # keep-alive on one connection
        assert request(app, "POST", "/api/messages", MESSAGE, conn=conn)[0] == 200
    conn.close()
    request(app, "POST", "/api/messages", b"bad")
    assert stats(app) == before + 7


def test_garbage_and_slow_clients_do_not_stop_it(app: int) -> None:
    slow = socket.create_connection((HOST, app), timeout=5)
    slow.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    with socket.create_connection((HOST, app), timeout=5) as junk:
        junk.sendall(b"\x00\x01GARBAGE \xff\r\n\r\n")
        _read_all(junk)
    with socket.create_connection((HOST, app), timeout=5) as half:
        half.sendall(b"GET /api/st")  # and hang up mid-request
    started = time.monotonic()
    assert request(app, "POST", "/api/messages", MESSAGE)[0] == 200
    assert time.monotonic() - started < 1.0  # the slow client blocks nobody
    slow.close()
    assert request(app, "GET", "/healthz")[0] == 200


def _concurrent_posts(port: int, count: int) -> float:
    """Fire `count` requests at once (one connection each); seconds until all answered."""
    results: list[int] = []
    barrier = threading.Barrier(count)

    def one() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.connect()
        barrier.wait(timeout=10)
        results.append(request(port, "POST", "/api/messages", MESSAGE, conn=conn)[0])
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert results == [200] * count
    return time.monotonic() - started


def test_service_time_and_concurrency_set_capacity() -> None:
    # 8 requests, 2 at a time, 100 ms each: 4 rounds, about 0.4 s.
    capped, capped_port = start_app("--service-ms", "100", "--concurrency", "2")
    free, free_port = start_app("--service-ms", "100")
    try:
        capped_s = _concurrent_posts(capped_port, 8)
        free_s = _concurrent_posts(free_port, 8)
    finally:
        stop_process(capped)
        stop_process(free)
    assert 0.38 <= capped_s < 2.0, capped_s
    assert 0.09 <= free_s < 0.35, free_s


def test_tcp_nodelay_is_set_on_accepted_sockets() -> None:
    # In this process, with gevent's own sockets (no monkey-patching): look at the server's
    # side of the connection, which no client can see.
    import gevent
    from gevent import socket as gsocket

    from harness import helloworld

    seen: list[int] = []

    class Probe(helloworld.HelloServer):
        def _serve(self, sock, address):
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            return super()._serve(sock, address)

    server = Probe((HOST, 0), helloworld.make_app("p", "n"), log=None, error_log=None)
    server.start()
    try:
        client = gsocket.create_connection((HOST, server.server_port), timeout=5)
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with gevent.Timeout(5):
            data = b""
            while chunk := client.recv(65536):
                data += chunk
        client.close()
    finally:
        server.kill()
    assert data.startswith(b"HTTP/1.1 200")
    assert seen and seen[0] != 0


def test_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "harness.helloworld", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--service-ms" in out.stdout and "--concurrency" in out.stdout
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "harness.helloworld", "--host", HOST,
                              "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot listen" in out.stderr


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


# -- the peer it saw: `client` in the reply, and GET /clientip (as agnhost netexec) ----------

def test_clientip_answers_the_peer_as_text_and_matches_client(app: int) -> None:
    conn = http.client.HTTPConnection(HOST, app, timeout=5)
    conn.connect()
    local = conn.sock.getsockname()
    try:
        status, headers, body = request(app, "GET", "/clientip", conn=conn)
        assert status == 200 and headers["content-type"] == "text/plain"
        assert body == f"{local[0]}:{local[1]}".encode()  # IP:PORT, no newline (agnhost)
        # The same connection's message reply names the same peer; its text is unchanged.
        status, _, reply = request(app, "POST", "/api/messages", MESSAGE,
                                   {"Content-Type": "application/json"}, conn=conn)
        data = json.loads(reply)
        assert data["client"] == body.decode()
        assert data["message"] == "Hello world1 (direct)"
        status, headers, body = request(app, "HEAD", "/clientip", conn=conn)
        assert status == 200 and body == b""
    finally:
        conn.close()
    served = stats(app)
    status, headers, _ = request(app, "POST", "/clientip", b"x")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert stats(app) == served  # /clientip serves no message


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_peer_is_written_in_brackets() -> None:
    proc, port = start_app("--host", "::1")
    try:
        conn = http.client.HTTPConnection("::1", port, timeout=5)
        conn.request("GET", "/clientip")
        body = conn.getresponse().read().decode()
        local_port = conn.sock.getsockname()[1]
        conn.request("POST", "/api/messages", body=MESSAGE)
        data = json.loads(conn.getresponse().read())
        conn.close()
    finally:
        stop_process(proc)
    assert body == f"[::1]:{local_port}" == data["client"]
