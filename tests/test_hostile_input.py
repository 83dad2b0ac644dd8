"""Hostile input (issue 18): hand-edited run folders, kubeconfigs that carry secrets or break
in odd ways, a --state-dir that is not the lab's, names with control characters, bad
inventories, `| head`; and a seeded, bounded hypothesis pass over option values, inventory
documents and run-folder documents: one line, exit 2, never a traceback, bounded time.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_runs import make_run

from harness import cli
from harness.core.findings import _f_ingress
from harness.core.text import name_list, printable
from harness.discovery import DiscoveryOptions, KubeApi, load_inventory
from harness.errors import DiscoveryError, HarnessError, LabError, ReportError
from harness.lab.cluster import STATE_MARKER, claim_state_dir
from harness.report.build import build_report
from harness.report.compare import build_compare
from harness.report.rundir import load_run
from harness.report.terminal import node_pod_table

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(derandomize=True, max_examples=200, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    return lines[0]


# -- hand-edited run folders (item 10) -------------------------------------------------------

@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("good"), "good", seconds=4, down=None)


def edited(good: Path, parent: Path, spread=None, run=None, raw: str | None = None) -> Path:
    folder = parent / "edited"
    folder.mkdir()
    for name in ("target.json", "run.json", "spread.json"):
        (folder / name).write_text((good / name).read_text())
    if spread or raw is not None:
        data = json.loads((good / "spread.json").read_text())
        if spread:
            spread(data)
        (folder / "spread.json").write_text(raw if raw is not None else json.dumps(data))
    if run:
        data = json.loads((good / "run.json").read_text())
        run(data)
        (folder / "run.json").write_text(json.dumps(data))
    return folder


def _far_point(s):
    s["series"]["node-1"].append(dict(s["series"]["node-1"][-1], t=10_000_000_000))


def _late_point(s):  # a believable epoch second, but a year after the run
    s["series"]["node-1"].append(dict(s["series"]["node-1"][-1], t=int(s["end"]) + 31_536_000))


def _long_span(s):
    s["end"] = s["start"] + 400 * 86_400


HOSTILE_FOLDERS = [
    ("bucket index", dict(spread=lambda s: s["latency"]["buckets"][0].__setitem__(0, 999999999)),
     "latency/buckets/0 bucket index 999999999 is out of range"),
    ("series bucket", dict(spread=lambda s: s["series"]["node-2"][0]["latency"].append(
        [2000, 1])), "series/node-2/0/latency/"),
    ("1e400", dict(raw='{"schema": "nodeport-harness/spread/v1", "totals": {"requests": 1e400}}'),
     "holds the number 1e400, too large for a float"),
    ("NaN", dict(raw='{"schema": "nodeport-harness/spread/v1", "start": NaN}'), "holds NaN"),
    ("deep nesting", dict(raw='{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
     "nests deeper than 64 levels"),
    ("t = 1e10", dict(spread=_far_point), "is out of range"),
    ("a year late", dict(spread=_late_point), "lies outside the run"),
    ("400-day span", dict(spread=_long_span), "more than the 604800 s a report draws"),
    ("negative count", dict(spread=lambda s: s["totals"].__setitem__("failures", -3)),
     "totals/failures -3 is out of range"),
    ("max_p95_ms fast", dict(run=lambda r: r["options"].__setitem__("max_p95_ms", "fast")),
     "run.json: options/max_p95_ms should be a number or a null, not a string"),
    ("entry", dict(run=lambda r: r.__setitem__("entry", ["all"])), "run.json: entry"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in HOSTILE_FOLDERS],
                         ids=[c[0] for c in HOSTILE_FOLDERS])
def test_a_hand_edited_run_folder_is_one_line_and_exit_2(good_run, tmp_path, capsys, change,
                                                         message):
    folder = edited(good_run, tmp_path, **change)
    started = time.monotonic()
    code, out, err = main(capsys, "report", "--plotlyjs", "cdn", str(folder))
    assert code == 2 and out == ""
    assert message in one_line(err)
    assert time.monotonic() - started < 10
    assert not (folder / "index.html").exists()
    code, out, err = main(capsys, "compare", str(good_run), str(folder), "-o",
                          str(tmp_path / "cmp"))
    assert code == 2 and message in one_line(err)


def test_debug_shows_the_traceback_and_still_exits_2(tmp_path, capsys):
    code, _out, err = main(capsys, "report", "--debug", str(tmp_path / "missing"))
    assert code == 2
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_a_closed_pipe_is_quiet(good_run, tmp_path):
    """`nodeport-harness report RUN | head`: the reader is gone before the output comes."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--plotlyjs",
                               "cdn", str(good_run)], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr[-2000:]


def test_lab_stats_into_a_closed_pipe(lab):
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "lab", "stats",
                               "--state-dir", str(lab.state_dir)], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr[-2000:]


# -- names with control characters, lists in sentences, compare (item 14) --------------------

RED = "\x1b[31mred"


def test_control_characters_never_reach_a_terminal_or_a_file(tmp_path):
    pods = [RED, "pod-\r\n=cmd", "ok-pod\u202egnp.exe"]
    run_dir = make_run(tmp_path, "ctl", pods=pods, seconds=3, down=None)
    build_report(run_dir, plotlyjs="cdn")
    spread = json.loads((run_dir / "spread.json").read_text())
    table = node_pod_table(spread)
    for text in (table, (run_dir / "summary.md").read_text(),
                 (run_dir / "pods.csv").read_text()):
        assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert "\\x1b[31mred" in (run_dir / "pods.csv").read_text()
    assert printable(RED) == "\\x1b[31mred"


def test_a_finding_names_a_few_nodes_and_counts_the_rest():
    nodes = [{"name": f"node-{i}", "is_node": True, "targeted": True, "pods": 1,
              "requests": 100 if i < 5 else 0} for i in range(1, 9_996)]
    [finding] = _f_ingress({"nodes": nodes, "run": {"entry_strategy": "all"}})
    assert "node-5, node-6, node-7, node-8, node-9, ... and 9,986 more got nothing" in (
        finding["text"])
    assert len(finding["text"]) < 600
    assert name_list(["a", "b"]) == "a, b"
    assert name_list([f"n{i}" for i in range(6)]) == "n0, n1, n2, n3, n4, n5"


def test_compare_warns_when_the_runs_measured_different_services(tmp_path, capsys):
    first = make_run(tmp_path, "a", seconds=3, down=None)
    second = make_run(tmp_path, "b", seconds=3, down=None)
    target = json.loads((second / "target.json").read_text())
    target["service"]["name"] = "other"
    (second / "target.json").write_text(json.dumps(target))
    code, out, err = main(capsys, "compare", str(first), str(second), "--plotlyjs", "cdn")
    assert code == 0
    assert "warning: the runs measured 2 different Services: demo/helloworld (a); " \
           "demo/other (b)" in err
    page = Path(next(p for p in out.splitlines() if p.endswith("index.html"))).read_text()
    assert "different Services" in page
    same = build_compare([first, first], tmp_path / "same", plotlyjs="cdn")
    assert same["warnings"] == []


# -- inventories (item 14) -------------------------------------------------------------------

BASE_INVENTORY = {"service": {"name": "web", "namespace": "shop", "nodePort": 30080},
                  "nodes": [{"name": "node-1", "address": "203.0.113.11", "zone": "a"}]}


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["service"].update(port=-5), "service.port -5 is not a port"),
    (lambda d: d["service"].update(namespace=["a", "b"]),
     "service.namespace must be a name, got a list of 2"),
    (lambda d: d["nodes"][0].update(zone={"x": 1}), "nodes[0].zone must be a name"),
])
def test_an_inventory_with_wrong_types_is_one_line(tmp_path, change, message):
    data = copy.deepcopy(BASE_INVENTORY)
    change(data)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DiscoveryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_inventory(str(path))


def test_an_ipv6_zone_is_escaped_in_the_url(tmp_path):
    data = copy.deepcopy(BASE_INVENTORY)
    data["nodes"][0]["address"] = "fe80::1%lo"
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    target = load_inventory(str(path))
    assert target.node_url(target.nodes[0]) == "http://[fe80::1%25lo]:30080"


# -- kubeconfigs (item 12) -------------------------------------------------------------------

@pytest.fixture(scope="module")
def listener():
    """A loopback TCP port that accepts and hangs up (no TLS): enough for a client to get
    as far as loading its own certificate."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    sock.close()


def kubeconfig(folder: Path, name: str, cluster: dict, user: dict) -> str:
    path = folder / name
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": user}]}))
    return str(path)


SECRET = "s3cr3t-TOKEN-never-shown"


def test_kubeconfig_errors_never_show_secrets_and_say_what_is_wrong(tmp_path, listener,
                                                                    capsys):
    ca = trustme.CA()
    leaf, other = ca.issue_cert("a.example"), ca.issue_cert("b.example")
    cadata = base64.b64encode(ca.cert_pem.bytes()).decode()
    server = {"server": f"https://127.0.0.1:{listener}", "certificate-authority-data": cadata}
    cases = {
        "credentials in the URL": (kubeconfig(tmp_path, "url", {
            "server": f"https://admin:{SECRET}@127.0.0.1:9"}, {"token": "t"}),
            "cannot reach the Kubernetes API at https://127.0.0.1:9 (connection refused)"),
        "failing exec plugin": (kubeconfig(tmp_path, "exec", server, {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "sh",
            "args": ["-c", f"echo {SECRET} >&2; exit 3"]}}),
            "exec credential plugin exited with 3"),
        "mismatched client key": (kubeconfig(tmp_path, "key", server, {
            "client-certificate-data": base64.b64encode(
                leaf.cert_chain_pems[0].bytes()).decode(),
            "client-key-data": base64.b64encode(other.private_key_pem.bytes()).decode()}),
            "client certificate and key cannot be used"),
        "no server": (kubeconfig(tmp_path, "noserver", {"certificate-authority-data": cadata},
                                 {"token": "t"}), "its cluster has no server URL"),
    }
    for name, (path, message) in cases.items():
        code, out, err = main(capsys, "discover", "--kubeconfig", path)
        assert code == 2, (name, err)
        line = one_line(err)
        assert message in line, (name, line)
        assert SECRET not in err + out, name
        assert "certificate authority does not match" not in line, name
        code, _out, err = main(capsys, "discover", "--debug", "--kubeconfig", path)
        assert code == 2 and SECRET not in err, name
    with pytest.raises(DiscoveryError) as caught:
        KubeApi.connect(DiscoveryOptions(kubeconfig=cases["credentials in the URL"][0])).get(
            "/api/v1/nodes")
    assert SECRET not in str(caught.value)


# -- lab --state-dir (item 13) ---------------------------------------------------------------

def test_the_lab_never_takes_over_a_folder_that_is_not_its_own(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    (shared / "notes.txt").write_text("someone else's\n")
    with pytest.raises(LabError, match="already holds files that are not the lab's"):
        claim_state_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert not (shared / STATE_MARKER).exists()
    code, out, err = main(capsys, "lab", "--state-dir", str(shared))
    assert code == 2 and "pass a new or empty folder" in one_line(err)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    # A new folder, an empty one and a lab's own are taken, and made private.
    for folder in (tmp_path / "new" / "lab", tmp_path / "empty", tmp_path / "old-lab"):
        if folder.name != "lab":
            folder.mkdir(mode=0o755)
        if folder.name == "old-lab":
            (folder / "kubeconfig").write_text("{}")
            (folder / "lab.log").write_text("")
        claim_state_dir(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert (folder / STATE_MARKER).is_file()
    (tmp_path / "empty" / "run-1").mkdir()  # marked as the lab's: re-used, whatever it holds
    claim_state_dir(tmp_path / "empty")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(LabError, match="is not a folder"):
        claim_state_dir(afile)


# -- fuzz: options, inventories, run folders -------------------------------------------------

NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-1", "0", "-0", "1e-400",
                     "0x10", "1_000", " 5", "5s", "", "١٢", "9" * 5000, "1e308", "3.5"]),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
RUN_NUMBER_OPTIONS = ["-u", "-r", "--timeout", "--max-fail-ratio", "--max-p95-ms",
                      "--max-p99-ms", "--min-fairness", "--max-node-share", "-t"]


@FUZZ
@given(option=st.sampled_from(RUN_NUMBER_OPTIONS), value=NUMBER_TEXT)
def test_fuzz_run_number_options(option, value):
    """Parsing and checking the run's number options: accepted as a finite value, or one
    usage line and exit 2; never a traceback."""
    import contextlib
    import io

    argv = ["run", "--lab", f"{option}={value}"]
    err = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stderr(err):
        try:
            args = cli.build_parser(argv).parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code == 2
            lines = [line for line in err.getvalue().splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
            return
    try:
        from harness.options import check_numbers

        check_numbers(args)
    except HarnessError as error:
        assert "\n" not in str(error)
    assert time.monotonic() - started < 2


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=20), st.just("fe80::1%lo"), st.just(-5))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _mutate(data, path_choices, value):
    """Replace the value at one path (a list of keys/indexes) of ``data`` with ``value``."""
    node = data
    for key in path_choices[:-1]:
        node = node[key]
    node[path_choices[-1]] = value
    return data


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data[:3]):
            yield from _paths(value, (*prefix, i))


INVENTORY = {"service": {"name": "web", "namespace": "shop", "nodePort": 30080, "port": 80,
                         "externalTrafficPolicy": "Cluster", "loadBalancer": "203.0.113.7"},
             "nodes": [{"name": "node-1", "address": "203.0.113.11", "zone": "a",
                        "internalIPs": ["10.0.0.11"], "podCIDRs": ["10.244.1.0/24"]},
                       {"name": "node-2", "address": "node-2.example"}],
             "endpoints": [{"pod": "web-1", "node": "node-1", "ip": "10.244.1.5"}]}
INVENTORY_PATHS = [p for p in _paths(INVENTORY) if p]


@FUZZ
@given(path=st.sampled_from(INVENTORY_PATHS), value=JSON_VALUE)
def test_fuzz_inventory_documents(tmp_path_factory, path, value):
    data = _mutate(copy.deepcopy(INVENTORY), list(path), value)
    file = tmp_path_factory.getbasetemp() / "fuzz-inventory.json"
    file.write_text(json.dumps(data))
    started = time.monotonic()
    try:
        target = load_inventory(str(file))
    except DiscoveryError as error:
        assert "\n" not in str(error) and len(str(error)) < 2000
    else:
        for node in target.nodes:
            assert isinstance(node.name, str) and isinstance(node.address, str)
            assert node.zone is None or isinstance(node.zone, str)
            assert "%" not in target.node_url(node).replace("%25", "")
        assert 1 <= target.service.port.port <= 65535
        assert isinstance(target.service.namespace, str)
    assert time.monotonic() - started < 2


HOSTILE_LEAF = st.one_of(JSON_LEAF, st.sampled_from(
    [999_999_999, 10_000_000_000, -1, 2**63, 1e300, "fast", [], {}, [[1, 2, 3]],
     [[-1, 1]], [[2047, 2**60]]]))


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("fuzz"), "fuzz", seconds=3, per_second=20,
                    down=None)


@FUZZ
@given(data=st.data())
def test_fuzz_run_folder_documents(fuzz_run, data):
    """One value anywhere in spread.json or run.json replaced: the run folder is read, analysed
    and its series drawn in bounded time, or refused in one line."""
    name = data.draw(st.sampled_from(["spread.json", "run.json"]))
    original = json.loads((fuzz_run / name).read_text())
    paths = [p for p in _paths(original) if p]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(HOSTILE_LEAF)
    mutated = _mutate(copy.deepcopy(original), list(path), value)
    folder = fuzz_run.parent / "mutated"
    folder.mkdir(exist_ok=True)
    for other in ("spread.json", "run.json", "target.json"):
        (folder / other).write_text((fuzz_run / other).read_text())
    (folder / name).write_text(json.dumps(mutated))
    started = time.monotonic()
    try:
        run = load_run(folder)
        from harness.report import csvs
        from harness.report.build import analyse

        summary = analyse(run)
        rows = csvs.series_rows(summary)
        assert sum(len(r) for r in rows.values()) < 200_000
    except ReportError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000
    assert time.monotonic() - started < 5
