"""Issue 18: what a run's stop, names and numbers must withstand.

- A later signal (a second Ctrl-C, SIGTERM after Ctrl-C) only hastens the stop: the first
  signal's exit code, reports written and marked, no traceback.
- A run id is a name: reports stay inside --report-dir, from the command line and from the
  web UI (whose form cannot choose paths at all).
- Every number option is finite; users are bounded by what a process can hold.
- A run lasts what was asked even when discovery kept the CPU for seconds (10 000 nodes).
- --lab-fault names and times are checked at the start.

Every run is real (Locust in a subprocess) against a lab on loopback, bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from conftest import stop_process
from lab_runs import (
    assert_one_line_error,
    delta,
    harness_cmd,
    load,
    locust_cmd,
    pod_successes,
    run,
    start,
    wait_for_traffic,
)


@pytest.fixture(scope="module")
def lab(make_module_lab):
    """This module's own lab: node-3 goes down for the signal tests (a user stuck there makes
    the graceful stop long, so a later signal has something to hasten)."""
    return make_module_lab(nodes=3, placement=[2, 2, 2])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- later signals -----------------------------------------------------------------------------

@pytest.mark.parametrize(("how", "signals", "code", "text"), [
    ("nodeport-harness run", ("SIGINT", "SIGINT"), 130, "interrupted (Ctrl-C)"),
    ("nodeport-harness run --processes 2", ("SIGINT", "SIGINT"), 130, "interrupted (Ctrl-C)"),
    ("locust --headless", ("SIGINT", "SIGINT"), 130, "interrupted (Ctrl-C)"),
    ("nodeport-harness run", ("SIGINT", "SIGTERM"), 130, "interrupted (Ctrl-C)"),
    ("locust --headless", ("SIGINT", "SIGTERM"), 130, "interrupted (Ctrl-C)"),
    ("locust --headless", ("SIGTERM", "SIGINT"), 143, "terminated (SIGTERM)"),
])
def test_a_later_signal_hastens_the_stop_and_keeps_the_data(lab, tmp_path, how, signals,
                                                            code, text):
    # sticky, three users (per process): one per node; once node-3 is down its user waits
    # its --timeout 20 s, so the graceful stop would take 22 s; a later signal cuts it short.
    args = ["--kubeconfig", str(lab.kubeconfig), "--report-dir", str(tmp_path), "--run-id",
            "sig", "--entry", "sticky", "--timeout", "20", "--plotlyjs", "cdn"]
    if how.startswith("locust"):
        cmd = locust_cmd("--headless", "-u", "3", "-r", "3", "-t", "60s", "--only-summary",
                         *args)
    else:
        # (with two workers, each numbers its own users: three each reach node-3 too)
        users = "6" if "--processes" in how else "3"
        cmd = harness_cmd("run", "-u", users, "-t", "60s", *args, *how.split()[2:])
    before = lab.stats()
    proc = start(cmd)
    family: list[psutil.Process] = []
    try:
        wait_for_traffic(lab, before, proc)
        lab.node_down("node-3")  # after discovery: its user's next request hangs
        time.sleep(1.5)
        family = psutil.Process(proc.pid).children(recursive=True)
        signalled = time.monotonic()
        proc.send_signal(getattr(signal, signals[0]))
        time.sleep(0.3)
        proc.send_signal(getattr(signal, signals[1]))
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - signalled
        _, alive = psutil.wait_procs(family, timeout=5)
        assert not alive, f"left running: {alive}"
    finally:
        lab.node_up("node-3")
        stop_process(proc)
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert took < 12, f"the later signal did not hasten the stop ({took:.1f} s)"
    run_dir = tmp_path / "sig"
    info, spread = load(run_dir, "run.json"), load(run_dir, "spread.json")
    assert info["partial"].startswith(text), info["partial"]
    assert "a later signal" in info["partial"] and "cut the graceful stop short" in \
        info["partial"]
    assert f"{text}: reports are partial" in err
    assert "This run is partial" in (run_dir / "index.html").read_text()
    # What was recorded is kept: every success was served, none counted twice.
    assert spread["totals"]["successes"] > 0
    served, recorded = delta(before, lab.stats()), pod_successes(spread)
    assert all(recorded.get(p, 0) <= n for p, n in served.items()), (recorded, served)


# -- run ids, number options, users: one line, exit 2, nothing written -------------------------

LONG_ID = "r" * 300
RUN_ID_CASES = [
    (["--run-id", "../../x"], "--run-id '../../x' is not a folder name"),
    (["--run-id", "{outside}"], "is not a folder name"),
    (["--run-id", "."], "--run-id '.' is not a folder name"),
    (["--run-id", ".."], "--run-id '..' is not a folder name"),
    (["--run-id", "a/b"], "--run-id 'a/b' is not a folder name"),
    (["--run-id", LONG_ID], "--run-id is 300 characters long; use at most 100"),
]
NUMBER_CASES = [
    (["--timeout", "nan"], "--timeout must be a finite number, got nan"),
    (["--timeout", "inf"], "--timeout must be a finite number, got inf"),
    (["--timeout", "-0"], "--timeout must be positive, got -0.0"),
    (["--max-p95-ms", "nan"], "--max-p95-ms must be a finite number, got nan"),
    (["--max-p99-ms", "inf"], "--max-p99-ms must be a finite number, got inf"),
    (["--max-fail-ratio", "nan"], "--max-fail-ratio must be"),
    (["--min-fairness=-inf"], "--min-fairness must be"),
    (["-r", "nan"], "--spawn-rate must be a finite number, got nan"),
]
USERS_CASE = (["-u", "99999999999999999999"],
              "-u/--users 99,999,999,999,999,999,999 is more than one Locust process can hold "
              "(at most 5,000 users per process): spread them over processes with --processes N")
FAULT_CASES = [
    (["--lab-fault", "1:node:nonexistent:down"],
     "--lab-fault node nonexistent: the target has no such node"),
    (["--lab-fault", "nan:node:node-1:down"], "--lab-fault 'nan:node:node-1:down': expected"),
    (["--lab-fault", "inf:node:node-1:down"], "--lab-fault 'inf:node:node-1:down': expected"),
    (["--lab-fault=-inf:node:node-1:down"], "--lab-fault '-inf:node:node-1:down': expected"),
]
RUN_ONLY = [
    (["--stop-timeout", "nan"], "--stop-timeout must be a finite number, got nan"),
    (["-u", "10001", "--processes", "2"], "-u/--users 10,001 is more than 2 Locust processes"),
]
CAPACITY_CASES = [
    (["--step-users", "1", "--max-users", "99999999999999999999", "--slo-p95-ms", "50"],
     "--max-users 99,999,999,999,999,999,999 is more than one Locust process can hold"),
    (["--step-users", "1", "--max-users", "3", "--slo-p95-ms", "nan"],
     "--slo-p95-ms must be a finite number, got nan"),
    (["--step-rps", "inf", "--max-rps", "5", "--slo-p95-ms", "50"],
     "--step-rps must be a finite number, got inf"),
    (["--step-users", "1", "--max-users", "3", "--slo-p95-ms", "50", "--headroom", "nan"],
     "--headroom must be a finite number, got nan"),
    (["--lab", "--lab-pod-service-ms", "nan", "--step-users", "1", "--max-users", "3",
      "--slo-p95-ms", "50"], "--lab-pod-service-ms must be a finite number, got nan"),
]


def _check_all(cases: list[tuple[str, list[str], str]]) -> None:
    def one(case):
        name, cmd, fragment = case
        try:
            assert_one_line_error(run(cmd, timeout=60), fragment)
        except AssertionError as err:
            return f"{name}: {err}"
        return None

    with ThreadPoolExecutor(max_workers=3) as pool:
        problems = [p for p in pool.map(one, cases) if p]
    assert not problems, "\n".join(problems)


def _fill(args: list[str], tmp_path: Path) -> list[str]:
    return [a.format(outside=str(tmp_path / "outside")) for a in args]


def test_run_rejects_paths_non_finite_numbers_and_too_many_users(lab, tmp_path):
    reports = tmp_path / "reports"
    base = ["--kubeconfig", str(lab.kubeconfig), "--report-dir", str(reports), "-t", "1s"]
    _check_all([
        (" ".join(args), harness_cmd("run", *base, *_fill(args, tmp_path)), fragment)
        for args, fragment in [*RUN_ID_CASES, *NUMBER_CASES, USERS_CASE, *FAULT_CASES,
                               *RUN_ONLY]])
    _check_all([
        (" ".join(args), harness_cmd("capacity", "--kubeconfig", str(lab.kubeconfig),
                                     "--report-dir", str(reports), *args), fragment)
        for args, fragment in CAPACITY_CASES])
    assert not reports.exists() and not (tmp_path / "outside").exists()
    assert not (tmp_path.parent / "x").exists()


def test_locust_rejects_the_same_in_one_line(lab, tmp_path):
    reports = tmp_path / "reports"
    base = locust_cmd("--headless", "-u", "1", "-r", "1", "-t", "1s", "--loglevel", "WARNING",
                      "--kubeconfig", str(lab.kubeconfig), "--report-dir", str(reports))
    # (-r nan: Locust's own parser refuses it, in its own words)
    cases = [*RUN_ID_CASES, *[c for c in NUMBER_CASES if c[0][0] != "-r"], USERS_CASE,
             *FAULT_CASES]
    _check_all([(" ".join(args), [*base, *_fill(args, tmp_path)], fragment)
                for args, fragment in cases])
    assert not reports.exists() and not (tmp_path / "outside").exists()


def test_a_run_folder_cannot_lead_out_of_the_report_dir(lab, tmp_path):
    """A link named like the run, pointing elsewhere, is refused too."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (reports / "linked").symlink_to(tmp_path / "elsewhere")
    proc = run(harness_cmd("run", "--kubeconfig", str(lab.kubeconfig), "--report-dir",
                           str(reports), "--run-id", "linked", "-t", "1s"), timeout=60)
    assert_one_line_error(proc, "is not inside --report-dir")
    assert not list((tmp_path / "elsewhere").iterdir())


# -- the web UI's form ---------------------------------------------------------------------------

def _post(url: str, form: dict[str, str]) -> dict:
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return {"status": err.code, **json.loads(err.read())}


def test_the_web_form_cannot_choose_paths_or_bad_values(lab, tmp_path):
    reports, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    port = _free_port()
    proc = start(locust_cmd("--web-host", "127.0.0.1", "--web-port", str(port),
                            "--loglevel", "WARNING", "--kubeconfig", str(lab.kubeconfig),
                            "--report-dir", str(reports), "--plotlyjs", "cdn"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                page = urllib.request.urlopen(base + "/", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
                time.sleep(0.2)
        # Where files go and the target are not form fields.
        for name in ("report_dir", "raw", "kubeconfig", "inventory", "lab_fault"):
            assert f'"{name}"' not in page, name
        swarm = base + "/swarm"
        users = {"user_count": "1", "spawn_rate": "1"}
        refused = [
            ({"run_id": "../x"}, "--run-id '../x' is not a folder name"),
            ({"run_id": LONG_ID}, "--run-id is 300 characters long"),
            ({"report_dir": str(elsewhere)}, "--report-dir cannot be set from the web UI"),
            ({"raw": str(elsewhere / "raw.csv.gz")}, "--raw cannot be set from the web UI"),
            ({"kubeconfig": "/etc/passwd"}, "--kubeconfig cannot be set from the web UI"),
            ({"timeout": "nan"}, "--timeout must be a finite number, got nan"),
            ({"max_p95_ms": "inf"}, "--max-p95-ms must be a finite number, got inf"),
            ({"user_count": "99999999999"}, "is more than one Locust process can hold"),
        ]
        for extra, fragment in refused:
            answer = _post(swarm, {**users, **extra})
            assert answer["success"] is False and fragment in answer["message"], (extra, answer)
        # A good form runs, and writes its reports where the command line said.
        # (an empty threshold field is the form's "not set")
        answer = _post(swarm, {**users, "run_id": "web-ok", "run_time": "2s",
                               "max_p95_ms": "", "timeout": "3"})
        assert answer["success"] is True, answer
        deadline = time.time() + 30
        while not (reports / "web-ok" / "run.json").exists():
            assert time.time() < deadline and proc.poll() is None, "no reports"
            time.sleep(0.2)
    finally:
        stop_process(proc)
    assert not elsewhere.exists() and sorted(p.name for p in reports.iterdir()) == ["web-ok"]
    options = load(reports / "web-ok", "run.json")["options"]
    assert options["max_p95_ms"] is None and options["timeout"] == 3.0
    assert options["report_dir"] == str(reports) and not options["raw"]
    assert not (tmp_path / "x").exists()


# -- a busy start: the run still lasts what was asked ------------------------------------------

def test_a_ten_thousand_node_target_still_runs_its_time(lab, tmp_path):
    """Reading 10 000 nodes keeps the CPU for seconds before the first request; Locust's
    --run-time timer must not count that time (it used to: -t 5s ran 0.086 s)."""
    nodes = [{"name": "node-1", "address": lab.nodes[0]["external_ip"]}] + [
        {"name": f"n{i:05d}", "address": f"127.9.{i // 250}.{i % 250 + 1}"}
        for i in range(9_999)]
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"service": {"name": "helloworld",
                                                 "nodePort": lab.node_port},
                                     "nodes": nodes}))
    proc = run(harness_cmd("run", "--inventory", str(inventory), "--entry", "single",
                           "--node", "node-1", "-u", "2", "-t", "3s", "--report-dir",
                           str(tmp_path), "--run-id", "big", "--plotlyjs", "cdn"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info, spread = load(tmp_path / "big", "run.json"), load(tmp_path / "big", "spread.json")
    assert info["partial"] is None
    assert spread["end"] - spread["start"] >= 2.7, (spread["start"], spread["end"])
    assert info["duration_s"] >= 2.9
