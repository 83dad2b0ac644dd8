"""Security: credentials never leak into output, the lab listens on loopback only and its API
wants the token, helloworld keeps serving through garbage, huge bodies and slow clients.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
import trustme
import yaml
from conftest import stop_process
from lab_runs import (
    ROOT,
    harness_cmd,
    locust_cmd,
    run,
    start,
)

PASSWORD = "hunter2-" + "p4ssw0rd-never-printed"


@pytest.fixture(scope="module")
def lab(lb_lab):
    """The session's LoadBalancer lab with a restricted token (conftest.py). These tests read
    it, send it traffic and try faults without the right token, which it must refuse."""
    return lb_lab


@pytest.fixture(scope="module")
def secret_kubeconfigs(lab, tmp_path_factory):
    """The lab's kubeconfig with a client certificate, key and password added (the lab does
    not ask for them: they only have to be carried around, and never shown), and one that
    has only a username and password (the API answers 401)."""
    folder = tmp_path_factory.mktemp("secret")
    leaf = trustme.CA().issue_cert("lab-user.example")
    cert = base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode()
    key = base64.b64encode(leaf.private_key_pem.bytes()).decode()
    config = yaml.safe_load(lab.kubeconfig.read_text())
    config["users"][0]["user"].update({"client-certificate-data": cert, "client-key-data": key,
                                       "username": "admin", "password": PASSWORD})
    full = folder / "kubeconfig"
    full.write_text(yaml.safe_dump(config))
    basic = json.loads(json.dumps(config))
    del basic["users"][0]["user"]["token"]
    basic_path = folder / "kubeconfig-basic"
    basic_path.write_text(yaml.safe_dump(basic))
    secrets = {
        "token": lab.token,
        "restricted token": yaml.safe_load(lab.restricted_kubeconfig.read_text())
        ["users"][0]["user"]["token"],
        "client certificate": cert,
        "client key": key,
        "password": PASSWORD,
        "basic auth header": base64.b64encode(f"admin:{PASSWORD}".encode()).decode(),
    }
    # Pieces of the PEM text too, should anything print the decoded key or certificate.
    for name, pem in (("key", leaf.private_key_pem.bytes()),
                      ("cert", leaf.cert_chain_pems[0].bytes())):
        lines = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
        secrets[f"{name} PEM line"] = max(lines, key=len)
    return {"full": full, "basic": basic_path, "secrets": secrets}


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_credentials_never_appear_in_output_files_or_web_ui(lab, secret_kubeconfigs, tmp_path):
    kubeconfig = str(secret_kubeconfigs["full"])
    secrets = secret_kubeconfigs["secrets"]
    reports = tmp_path / "reports"
    raw = tmp_path / "raw.csv.gz"
    outputs: dict[str, str] = {}

    proc = run(harness_cmd("run", "--kubeconfig", kubeconfig, "--report-dir", str(reports),
                           "--run-id", "secret", "-u", "2", "-t", "2s", "--loglevel", "DEBUG",
                           "--raw", str(raw), "--plotlyjs", "cdn"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs["run"] = proc.stdout + proc.stderr
    assert "urllib3" in proc.stderr or "DEBUG" in proc.stderr  # the noisy level really ran
    proc = run(harness_cmd("--debug", "discover", "--kubeconfig", kubeconfig, "-o", "json"))
    assert proc.returncode == 0, proc.stderr
    outputs["discover --debug"] = proc.stdout + proc.stderr
    for broken in (str(secret_kubeconfigs["basic"]), str(lab.restricted_kubeconfig)):
        proc = run(harness_cmd("--debug", "discover", "--kubeconfig", broken))
        assert proc.returncode != 0 and "Traceback" in proc.stderr  # --debug shows it all
        outputs[f"discover --debug {broken}"] = proc.stdout + proc.stderr
    proc = run(harness_cmd("report", str(reports / "secret")))
    assert proc.returncode == 0, proc.stderr
    outputs["report"] = proc.stdout + proc.stderr

    # The live web UI: every page and download of ours, and Locust's stats poll.
    port = _free_port()
    web = start(locust_cmd("--kubeconfig", kubeconfig, "--web-host", "127.0.0.1",
                           "--web-port", str(port), "--report-dir", str(reports),
                           "--run-id", "web", "--plotlyjs", "cdn", "--autostart", "-u", "2",
                           "-r", "2", "-t", "3s", "--autoquit", "1"))
    try:
        pages = _fetch_web_ui(port, ["/", "/stats/requests", "/nodeport/spread.json",
                                     "/nodeport/report"])
        out, err = web.communicate(timeout=60)
    finally:
        stop_process(web)
    assert set(pages) == {"/", "/stats/requests", "/nodeport/spread.json", "/nodeport/report"}
    assert "extended_stats" in pages["/stats/requests"]
    outputs.update({f"web {path}": body for path, body in pages.items()})
    outputs["web process"] = out + err

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 20  # every run folder, report and the raw file were written
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        outputs[str(path.relative_to(tmp_path))] = data.decode("utf-8", "replace")
    leaks = {where: found for where, text in outputs.items()
             if (found := _leaks(text, secrets))}
    assert not leaks, leaks
    # What is recorded is where the credentials live, never what they are.
    options = json.loads((reports / "secret" / "run.json").read_text())["options"]
    assert options["kubeconfig"] == kubeconfig


def _fetch_web_ui(port: int, paths: list[str]) -> dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/", timeout=2).read()  # noqa: S310 - loopback
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(1.5)  # some traffic first, so the tabs and downloads have data
    pages = {}
    for path in paths:
        with urllib.request.urlopen(base + path, timeout=30) as reply:  # noqa: S310
            pages[path] = reply.read().decode("utf-8", "replace")
    return pages


def test_the_lab_listens_on_loopback_only(lab):
    connections = psutil.Process(lab.process.pid).net_connections(kind="inet")
    listening = [c for c in connections if c.status == psutil.CONN_LISTEN or not c.raddr]
    assert len(listening) >= 2 + 2 + 2  # API, LB, node ports, pods, the block's reservation
    outside = [c.laddr for c in listening if not c.laddr.ip.startswith("127.")]
    assert not outside, outside
    # Everything a lab process has open for the outside is on 127.0.0.0/8, in or out.
    assert all(c.laddr.ip.startswith("127.") for c in connections)


def _api(lab, method: str, path: str, token: str | None, body: dict | None = None,
         scheme: str = "Bearer") -> tuple[int, str]:
    context = ssl.create_default_context(cafile=lab.info()["ca"])
    host, port = lab.api_url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    reply = conn.getresponse()
    text = reply.read().decode()
    conn.close()
    return reply.status, text


def test_the_lab_api_wants_the_token(lab):
    fault = {"kind": "node", "name": "node-1", "action": "down"}
    paths = [("GET", "/api/v1/nodes"), ("GET", "/api/v1/namespaces/default/services"),
             ("GET", "/version"), ("GET", "/api"), ("GET", "/lab/v1/stats"),
             ("POST", "/lab/v1/faults")]
    for method, path in paths:
        body = fault if method == "POST" else None
        for token, scheme in ((None, "Bearer"), ("", "Bearer"), ("wrong", "Bearer"),
                              (lab.token, "Basic"), (lab.token[:-1], "Bearer")):
            status, text = _api(lab, method, path, token, body, scheme)
            assert status == 401, (method, path, scheme, status, text)
            assert lab.token not in text
    restricted = yaml.safe_load(lab.restricted_kubeconfig.read_text())["users"][0]["user"]["token"]
    assert _api(lab, "POST", "/lab/v1/faults", restricted, fault)[0] == 403
    assert _api(lab, "GET", "/lab/v1/stats", restricted)[0] == 403
    assert _api(lab, "GET", "/api/v1/nodes", restricted)[0] == 403
    status, text = _api(lab, "GET", "/api/v1/nodes/node-1", lab.token)
    assert status == 200 and '"status": "True"' in text.replace('":"', '": "')  # still up
    # No cleartext HTTP on the API port.
    host, port = lab.api_url.removeprefix("https://").split(":")
    plain = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        plain.request("GET", "/api/v1/nodes")
        assert plain.getresponse().status == 400  # "plain HTTP sent to an HTTPS port"
    except (ConnectionError, http.client.HTTPException):
        pass
    finally:
        plain.close()


# -- helloworld under abuse -------------------------------------------------------------------

@pytest.fixture
def hello():
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.helloworld", "--host", "127.0.0.1", "--port", "0",
         "--idle-timeout", "1", "--pod-name", "pod-a", "--node-name", "node-a"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stderr.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    try:
        yield proc, int(match.group(1))
    finally:
        stop_process(proc)


def _post(port: int, body: bytes = b'{"sender": "ok"}') -> tuple[int, bytes, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/api/messages", body=body,
                 headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data, time.monotonic() - started


def test_helloworld_keeps_serving_through_abuse(hello):
    proc, port = hello
    baseline = len(os.listdir(f"/proc/{proc.pid}/fd"))
    held = []
    # Slowloris: requests that never finish their headers, and bodies that never arrive.
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(sock)
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        held.append(sock)
    # Garbage, an endless request line, a body far over the limit.
    answers = {}
    for name, payload in (
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)),
        ("not http", b"HELLO THERE\r\n\r\n"),
        ("long line", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("huge header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000
         + b"\r\n\r\n"),
        ("huge body", b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Length: "
         + str(50 * 1024 * 1024).encode() + b"\r\n\r\n" + b"{" * 1_000_000),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                sock.sendall(payload)
                answers[name] = sock.recv(200)
            except OSError as err:  # a reset after an early refusal is a fine answer
                answers[name] = repr(err).encode()
    assert answers["not http"].startswith(b"HTTP/1.1 400"), answers
    assert answers["long line"].startswith((b"HTTP/1.1 414", b"ConnectionResetError")), answers
    assert answers["huge body"].startswith((b"HTTP/1.1 413", b"ConnectionResetError")), answers
    # Meanwhile everyone else is served at once.
    for _ in range(5):
        status, data, seconds = _post(port)
        assert status == 200 and json.loads(data)["host"] == "pod-a" and seconds < 1.0
    # The stalled clients are dropped after the idle timeout (1 s here, 60 s by default),
    # so they cannot hold the server's descriptors forever.
    time.sleep(1.5)
    replies = set()
    for sock in held:
        sock.settimeout(3)
        try:
            replies.add(sock.recv(40)[:28])
        except OSError as err:
            replies.add(repr(err).encode())
        sock.close()
    assert replies <= {b"HTTP/1.1 408 Request Timeout", b""}, replies
    deadline = time.time() + 5
    while len(os.listdir(f"/proc/{proc.pid}/fd")) > baseline + 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(os.listdir(f"/proc/{proc.pid}/fd")) <= baseline + 2
    # It counted exactly the good requests, and is still healthy.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/api/stats")
    assert json.loads(conn.getresponse().read())["served"] == 5
    conn.close()
    assert proc.poll() is None
