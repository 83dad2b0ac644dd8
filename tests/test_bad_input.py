"""Bad input, through the commands users type: one clear line on stderr, exit 2, no traceback,
nothing written (and never recorded data lost). Hostile replies: a real run against a server
that answers garbage, HTML, huge or slow replies; the reports escape it all.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import stop_process
from lab_runs import (
    assert_one_line_error,
    harness_cmd,
    load,
    locust_cmd,
    run,
    start,
    wait_for_traffic,
)

from harness.discovery import DiscoveryOptions, KubeApi


@pytest.fixture(scope="module")
def lab(make_module_lab):
    """Two nodes with an InternalIP only, no LoadBalancer, a ClusterIP and a two-port Service."""
    cluster = make_module_lab(nodes=2, pods=2, external_ip=False, restricted_token=True)
    api = KubeApi.connect(DiscoveryOptions(kubeconfig=str(cluster.kubeconfig)))
    try:
        for name, kind, ports in (
            ("internal", "ClusterIP", [{"name": "http", "port": 8080}]),
            ("multi", "NodePort", [{"name": "http", "port": 8080},
                                   {"name": "admin", "port": 9000, "targetPort": 8080}]),
        ):
            api.request("POST", "/api/v1/namespaces/default/services", body={
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": kind, "selector": {"app": "helloworld"}, "ports": ports},
            }, content_type="application/json", what="create services")
    finally:
        api.close()
    return cluster


@pytest.fixture(scope="module")
def configs(lab, tmp_path_factory):
    """Broken variants of the lab's kubeconfig."""
    folder = tmp_path_factory.mktemp("configs")
    good = yaml.safe_load(lab.kubeconfig.read_text())

    def variant(name: str, change) -> str:
        config = json.loads(json.dumps(good))
        change(config)
        path = folder / name
        path.write_text(yaml.safe_dump(config))
        return str(path)

    (folder / "malformed").write_text("apiVersion: v1\nclusters: [\n")
    return {
        "good": str(lab.kubeconfig),
        "malformed": str(folder / "malformed"),
        "directory": str(folder),
        "unreachable": variant("unreachable", lambda c: c["clusters"][0]["cluster"].update(
            server="https://127.0.0.1:9")),
        "wrong_token": variant("wrong_token", lambda c: c["users"][0]["user"].update(
            token="not-the-token")),
        "restricted": str(lab.restricted_kubeconfig),
    }


# (id, arguments after the target, what the one line must say)
CASES = [
    ("malformed kubeconfig", ["--kubeconfig", "{malformed}"], "cannot read kubeconfig"),
    ("unreadable kubeconfig", ["--kubeconfig", "{directory}"], "cannot read kubeconfig"),
    ("missing kubeconfig", ["--kubeconfig", "{directory}/nope"], "does not exist"),
    ("unknown context", ["--kubeconfig", "{good}", "--context", "nope"], "contexts: lab"),
    ("API unreachable", ["--kubeconfig", "{unreachable}"],
     "cannot reach the Kubernetes API at https://127.0.0.1:9"),
    ("401", ["--kubeconfig", "{wrong_token}"], "401 Unauthorized"),
    ("403 with an RBAC hint", ["--kubeconfig", "{restricted}"], "ClusterRole"),
    ("unknown namespace", ["--kubeconfig", "{good}", "-n", "ghost"], "namespace 'ghost'"),
    ("unknown service", ["--kubeconfig", "{good}", "--service", "nope"],
     "'nope' not found in namespace default; services there:"),
    ("ClusterIP service", ["--kubeconfig", "{good}", "--service", "internal"],
     "type ClusterIP"),
    ("no ExternalIP", ["--kubeconfig", "{good}", "--address-type", "ExternalIP"],
     "have no ExternalIP: node-1, node-2"),
    ("multi-port without a choice", ["--kubeconfig", "{good}", "--service", "multi"],
     "choose one with --port-name NAME or --port N"),
    ("unknown port name", ["--kubeconfig", "{good}", "--service", "multi", "--port-name", "x"],
     "no port named 'x'"),
    ("invalid inventory", ["--inventory", "{inventory}"], "'nodes' must be a non-empty list"),
    ("--entry lb without LB", ["--kubeconfig", "{good}", "--entry", "lb"],
     "no LoadBalancer ingress"),
    ("--node unknown", ["--kubeconfig", "{good}", "--entry", "single", "--node", "node-9"],
     "--node node-9: no such node"),
    ("threshold out of range", ["--kubeconfig", "{good}", "--max-fail-ratio", "2"],
     "--max-fail-ratio must be between 0 and 1"),
    ("threshold not positive", ["--kubeconfig", "{good}", "--max-p95-ms", "0"],
     "--max-p95-ms must be positive"),
    ("timeout not positive", ["--kubeconfig", "{good}", "--timeout", "0"],
     "--timeout must be positive"),
    ("bad --pod-from", ["--kubeconfig", "{good}", "--pod-from", "regex:("],
     "not a valid regular expression"),
    ("bad --lab-fault", ["--kubeconfig", "{good}", "--lab-fault", "soon:node:x:down"],
     "expected AT:node:NAME:down|up"),
    ("report folder under a file", ["--kubeconfig", "{good}", "--report-dir", "{file}/reports"],
     "is not a folder"),
]
RUN_ONLY = [
    ("negative users", ["--kubeconfig", "{good}", "-u", "-1"], "-u/--users must be at least 1"),
    ("bad duration", ["--kubeconfig", "{good}", "-t", "5x"], "is not a duration"),
    ("unknown strategy", ["--kubeconfig", "{good}", "--entry", "nearest"],
     "argument --entry: invalid choice: 'nearest'"),
    ("--port and --port-name", ["--kubeconfig", "{good}", "--port", "1", "--port-name", "x"],
     "give either --port-name or --port"),
]
LOCUST_ONLY = [
    ("negative users", ["--kubeconfig", "{good}", "-u", "-1"], "-u/--users must not be negative"),
]
LOCUST_CASES = [c for c in CASES if c[0] in (
    "403 with an RBAC hint", "--entry lb without LB", "--node unknown", "threshold out of range",
    "report folder under a file", "API unreachable")] + LOCUST_ONLY


def _fill(args: list[str], configs: dict, tmp_path: Path) -> list[str]:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("service: {nodePort: 30080}\nnodes: []\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    values = {**configs, "inventory": str(inventory), "file": str(a_file)}
    return [a.format(**values) for a in args]


def _check_all(commands: list[tuple[str, list[str], str, bool]]) -> None:
    """Run independent failing commands a few at a time (each is mostly Python start-up) and
    report every case that misbehaves, not just the first."""
    def one(case):
        name, cmd, fragment, exact = case
        try:
            line = assert_one_line_error(run(cmd, timeout=60), fragment, exact=exact)
            assert "not-the-token" not in line
        except AssertionError as err:
            return f"{name}: {err}"
        return None

    with ThreadPoolExecutor(max_workers=3) as pool:
        problems = [p for p in pool.map(one, commands) if p]
    assert not problems, "\n".join(problems)


def test_run_says_what_is_wrong_in_one_line(configs, tmp_path):
    reports = tmp_path / "reports"
    _check_all([
        (case, harness_cmd("run", "--report-dir", str(reports), "-u", "1", "-t", "1s",
                           *_fill(args, configs, tmp_path)), fragment, True)
        for case, args, fragment in CASES + RUN_ONLY])
    assert not reports.exists(), "a failed start left files behind"


def test_locust_itself_exits_2_with_one_line(configs, tmp_path):
    reports = tmp_path / "reports"
    commands = []
    for case, args, fragment in LOCUST_CASES:
        args = _fill(args, configs, tmp_path)
        if "--report-dir" not in args:
            args += ["--report-dir", str(reports)]
        base = locust_cmd("--headless", "-u", "1", "-r", "1", "-t", "1s")
        commands.append((case, [*base, "--loglevel", "WARNING", *args], fragment, True))
        if case == "--node unknown":
            # At Locust's default log level its INFO lines surround ours: one error, no trace.
            commands.append((case + " (INFO)", [*base, *args], fragment, False))
    _check_all(commands)
    assert not reports.exists()


def test_no_ready_worker_node(lab, configs, tmp_path):
    for node in ("node-1", "node-2"):
        lab.node_down(node)
    try:
        proc = run(harness_cmd("run", "--kubeconfig", configs["good"], "--report-dir",
                               str(tmp_path / "r"), "-t", "1s"), timeout=60)
    finally:
        for node in ("node-1", "node-2"):
            lab.node_up(node)
    assert_one_line_error(proc, "no Ready worker node to send traffic to")


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "x.txt").write_text("hello\n")
    _check_all([(str(folder), harness_cmd("report", str(folder)), str(folder), True)
                for folder in (tmp_path, tmp_path / "missing", tmp_path / "x.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_report_dir_gone_at_the_end_keeps_the_data_and_says_where(lab, tmp_path):
    """The folder is fine at the start and a plain file by the end: the data survives."""
    reports = tmp_path / "reports"
    spare = tmp_path / "tmp"
    spare.mkdir()
    before = lab.stats()
    proc = start(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                             str(reports), "--run-id", "lost", "-u", "2", "-t", "3s",
                             "--plotlyjs", "cdn"), env={"TMPDIR": str(spare)})
    try:
        wait_for_traffic(lab, before, proc)
        shutil.rmtree(reports, ignore_errors=True)
        reports.write_text("someone put a file here\n")
        _, err = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "saved in" in errors[0], err[-3000:]
    kept = [p for p in spare.iterdir() if p.name.startswith("nodeport-harness-lost-")]
    assert len(kept) == 1 and str(kept[0]) in errors[0]
    spread = load(kept[0], "spread.json")
    assert spread["totals"]["requests"] > 0
    assert (kept[0] / "index.html").exists() and (kept[0] / "run.json").exists()


# -- hostile replies ----------------------------------------------------------------------

HOSTILE_PODS = [
    "<script>window.__pwned=1</script>",
    "\"quoted' & <b>bold</b>",
    "pöd-ünïcødé-ポッド-\u2028-end",
    "p" * 300,  # longer than any pod name: counted as unknown
]
HUGE = 3 * 1024 * 1024


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers in turn with a hostile pod name, an unreadable, huge, slow or failed reply."""

    protocol_version = "HTTP/1.1"
    counter = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            Hostile.counter += 1
            turn = Hostile.counter % 10
        if turn < len(HOSTILE_PODS):
            self._send(200, json.dumps({"host": HOSTILE_PODS[turn]}).encode())
        elif turn == 4:
            self._send(200, b"<html><script>alert(1)</script> not JSON</html>",
                       headers={"X-Served-By": "<img src=x onerror=alert(2)>"})
        elif turn == 5:
            self._send(200, b'{"host": "big-pod", "pad": "' + b"x" * HUGE + b'"}')
        elif turn == 6:
            time.sleep(1.5)  # longer than the run's --timeout
            self._send(200, b'{"host": "slow-pod"}')
        elif turn == 7:
            self._send(503, b'{"host": "<i>overloaded</i>"}')
        elif turn == 8:
            self.wfile.write(b"HTTP/1.1 2OO WHAT\r\n\r\ngarbage")  # not HTTP
            self.close_connection = True
        else:
            self.close_connection = True  # hang up without a reply

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_hostile_replies_are_counted_and_escaped_in_every_report(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        f"service: {{name: hostile, nodePort: {server.server_address[1]}}}\n"
        "nodes: [{name: '<b>node</b>', address: 127.0.0.1}]\n")
    try:
        proc = run(harness_cmd("run", "--inventory", str(inventory), "--report-dir",
                               str(tmp_path), "--run-id", "hostile", "-u", "3", "-t", "3s",
                               "--timeout", "1", "--plotlyjs", "cdn"), timeout=90)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1, proc.stderr[-3000:]  # failures, but a finished run
    assert "Traceback" not in proc.stderr
    run_dir = tmp_path / "hostile"
    spread = load(run_dir, "spread.json")
    entry = spread["entry_nodes"]["<b>node</b>"]
    pods = entry["pods"]
    for name in HOSTILE_PODS[:3]:
        assert pods.get(name, 0) > 0, name
    assert "p" * 300 not in pods and pods["unknown"] > 0
    assert pods.get("<img src=x onerror=alert(2)>", 0) > 0  # from the header
    assert pods.get("big-pod", 0) == 0  # too big to parse: unknown, not a stall
    kinds = entry["failure_kinds"]
    assert kinds.get("timeout", 0) > 0 and kinds.get("http_5xx", 0) > 0
    assert set(kinds) - {"timeout", "http_5xx"}, kinds  # the garbage and the hang-ups
    for name in ("index.html", "summary.md", "junit.xml"):
        text = (run_dir / name).read_text()
        assert "<script>window.__pwned" not in text, name
        assert "<img src=x" not in text, name
        assert "<b>node</b>" not in text and "<b>bold</b>" not in text, name
    html = (run_dir / "index.html").read_text()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "ポッド" in html or "\\u30dd" in html


@pytest.mark.parametrize("args, fragment", [
    (["-t", "99999999999999999999h"], "-t/--run-time is 3.6e+23 s, longer than 30 days"),
    (["--method", ""], "--method '' is not an HTTP method"),
    (["--method", "GET POST"], "--method 'GET POST' is not an HTTP method"),
    (["--path", "//x"], "--path '//x' is not a request path"),
    (["--raw", "/nonexistent/d/x.csv.gz"],
     "--raw /nonexistent/d/x.csv.gz: folder /nonexistent/d does not exist or is not writable"),
])
@pytest.mark.parametrize("via", ["run", "locust"])
def test_requests_that_cannot_be_sent_are_one_line_before_any_user(lab, tmp_path, args,
                                                                    fragment, via):
    # Once a traceback per request (or an OverflowError); now refused before the run.
    if via == "run":
        cmd = harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                          str(tmp_path), "-u", "1", "-t", "2s", *args)
    else:
        if args[0] == "-t":
            args = ["-t", "99999999h"]  # Locust parses -t itself: a huge whole number of hours
            fragment = "-t/--run-time is 3.6e+11 s, longer than 30 days"
        cmd = locust_cmd("--headless", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                         str(tmp_path), "-u", "1", "-t", "2s", "--loglevel", "WARNING",
                         "--only-summary", *args)
    proc = run(cmd, timeout=60)
    line = assert_one_line_error(proc, fragment)
    assert proc.returncode == 2, line
    assert not any(tmp_path.iterdir())  # nothing run, nothing written
