"""The Locust plugin (harness.plugin: context, listeners, outputs, schedule) as Locust runs it:
`python -m locust -f locustfile.py --headless ...` against a lab, a few seconds at most.

What run.json records (and never records), --lab-fault markers, usage errors found inside
Locust, and the note a master writes about workers it lost. Locust runs in subprocesses only:
importing it patches the process with gevent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from lab_runs import ROOT, assert_one_line_error, load, locust_cmd, post, run

from harness.core.runinfo import CLOSED_LOOP, RUN_SCHEMA, RunInfo

PASSWORD = "plugin-test-" + "s3cret-never-written"
# Locust options that protect its web UI: never in run.json, whatever their value.
WEB_LOGIN = ("web_login", "web_auth", "tls_cert", "tls_key")


def headless(lab_kubeconfig: str, tmp_path, run_id: str, *args: str, seconds: int = 2,
             env: dict | None = None) -> subprocess.CompletedProcess:
    return run(locust_cmd("--headless", "-u", "2", "-r", "2", "-t", f"{seconds}s",
                          "--only-summary", "--loglevel", "WARNING", "--kubeconfig",
                          lab_kubeconfig, "--report-dir", str(tmp_path), "--run-id", run_id,
                          "--plotlyjs", "cdn", *args), timeout=60, env=env)


@pytest.fixture(scope="module")
def fault_lab(make_module_lab):
    """This module's own lab: the run.json test takes node-3 down (and back up)."""
    return make_module_lab(nodes=3, pods=3)


def test_run_json_has_the_run_info_keys_faults_and_no_secrets(fault_lab, tmp_path):
    # The kubeconfig carries a password beside the lab's token: neither may be written.
    config = yaml.safe_load(fault_lab.kubeconfig.read_text())
    config["users"][0]["user"].update({"username": "admin", "password": PASSWORD})
    # Beside the lab's own: --lab-fault finds the lab from the kubeconfig's folder.
    kubeconfig = fault_lab.kubeconfig.parent / "kubeconfig-with-password"
    kubeconfig.write_text(yaml.safe_dump(config))
    typed = f"nodeport-harness run --lab -u 2 --web-auth admin:{PASSWORD} --token={PASSWORD}"
    proc = headless(str(kubeconfig), tmp_path, "plugin", "--web-login", "--timeout", "1",
                    "--lab-fault", "0.5:node:node-3:down", "--lab-fault", "1.5:node:node-3:up",
                    seconds=3, env={"NODEPORT_HARNESS_COMMAND": typed})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: requests failed on node-3
    assert "Traceback" not in proc.stderr
    run_dir = tmp_path / "plugin"
    info = load(run_dir, "run.json")
    # Every key RunInfo declares, but the capacity shape's own.
    assert set(info) == set(RunInfo.__optional_keys__) - {"capacity", "steps"}
    assert info["schema"] == RUN_SCHEMA and info["run_id"] == "plugin"
    assert info["role"] == "local" and info["entry"] == "all"
    assert info["connection"] == "keepalive" and info["users"] == 2
    assert info["load_model"] == CLOSED_LOOP and info["partial"] is None
    assert info["stop_timeout_s"] == 1 + 2  # --timeout + 2 s for the request in flight
    assert info["duration_s"] == pytest.approx(info["stopped"] - info["started"], abs=0.01)
    assert info["duration_s"] >= 2.5  # the 3 s run ran
    # Options: where the credentials live, never what they are; no web-login settings.
    options = info["options"]
    assert options["kubeconfig"] == str(kubeconfig)
    assert options["lab_fault"] == ["0.5:node:node-3:down", "1.5:node:node-3:up"]
    assert not set(WEB_LOGIN) & set(options) and "nodeport_target" not in options
    written = "".join(p.read_text() for p in run_dir.glob("*.json"))
    assert PASSWORD not in written and fault_lab.token not in written
    assert PASSWORD not in info["command"] and info["command"].startswith("nodeport-harness")

    # --lab-fault: each fault in run.json (seconds from the start and the time it fired),
    # and as a marker on the recorder's timeline.
    faults = info["faults"]
    assert [(f["kind"], f["name"], f["action"]) for f in faults] == [
        ("node", "node-3", "down"), ("node", "node-3", "up")]
    for fault, planned in zip(faults, (0.5, 1.5), strict=True):
        assert fault["t"] >= planned, fault  # not before its time
        assert fault["time"] == pytest.approx(info["started"] + fault["t"], abs=0.01)
    markers = [m for m in load(run_dir, "spread.json")["markers"]
               if m["label"] in ("node-3 down", "node-3 up")]  # the watch's may be there too
    assert [m["label"] for m in markers] == ["node-3 down", "node-3 up"]
    assert [f["source"] for f in faults] == ["--lab-fault", "--lab-fault"]
    assert [m["t"] for m in markers] == pytest.approx([f["time"] for f in faults], abs=0.01)
    summary = load(run_dir, "summary.json")
    assert any(f["id"] == "fault:node-3" for f in summary["findings"])
    # The lab really had node-3 down and back: through it, a pod answers again.
    assert post(fault_lab.nodes[2]["external_ip"], fault_lab.node_port)["host"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--timeout", "0"], "--timeout must be positive"),
    (["--timeout", "-2.5"], "--timeout must be positive"),
    (["-u", "-1"], "-u/--users must not be negative"),
    (["--max-fail-ratio", "1.5"], "--max-fail-ratio must be between 0 and 1"),
    (["--lab-fault", "soon:node:node-1:down"], "--lab-fault 'soon:node:node-1:down': expected"),
    (["--lab-fault", "nan:node:node-1:down"], "--lab-fault 'nan:node:node-1:down': expected"),
    (["--lab-fault", "1:pod:web-1:down"], "pod fault action must be kill"),
    (["--lab-fault", "1:node:node-9:down"],
     "--lab-fault node node-9: the target has no such node (nodes: node-1, node-2, node-3)"),
    (["--lab-fault", "1:pod:web-1:kill"], "--lab-fault pod web-1: the target has no such pod"),
    (["--pod-from", "regex:("], "--pod-from regex:( is not a valid regular expression"),
    (["--entry", "single", "--node", "node-9"],
     "--node node-9: no such node with an address; nodes: node-1, node-2, node-3"),
    (["--entry", "lb"], "--entry lb: service helloworld has no LoadBalancer ingress"),
])
def test_a_usage_error_inside_locust_is_one_line_and_exit_2(lab, tmp_path, args, fragment):
    proc = headless(str(lab.kubeconfig), tmp_path, "bad", *args)
    assert_one_line_error(proc, fragment)  # the whole of stderr: one line, no traceback
    assert not (tmp_path / "bad").exists()  # nothing run, nothing written


def test_lab_fault_without_a_lab_is_a_usage_error(lab, tmp_path):
    # An inventory target: no lab to inject into.
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("service: {nodePort: 30080}\nnodes: [{name: only, address: 127.0.0.1}]\n")
    proc = run(locust_cmd("--headless", "-u", "1", "-t", "2s", "--loglevel", "WARNING",
                          "--only-summary", "--inventory", str(inventory), "--report-dir",
                          str(tmp_path), "--lab-fault", "1:node:only:down"), timeout=60)
    assert_one_line_error(proc, "--lab-fault needs the lab")
    # A kubeconfig that is not in a running lab's folder.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(lab.kubeconfig, elsewhere / "kubeconfig")
    proc = headless(str(elsewhere / "kubeconfig"), tmp_path, "copy", "--lab-fault",
                    "1:node:node-1:down")
    line = assert_one_line_error(proc, "--lab-fault: no running lab found in")
    assert str(elsewhere) in line
    assert lab.token not in proc.stderr


# -- the run context and the master's note on lost workers (no Locust run needed) ------------

CONTEXT = """
import json, sys
from types import SimpleNamespace
from locust.runners import STATE_MISSING, STATE_RUNNING
from harness.errors import HarnessError
from harness.plugin import listeners
from harness.plugin.context import HarnessRun, current_run, raise_exit_code

out = {}
try:
    current_run(SimpleNamespace())
except HarnessError as err:
    out["no_run"] = str(err)
env = SimpleNamespace(process_exit_code=None)
raise_exit_code(env, 1); raise_exit_code(env, 143); raise_exit_code(env, 1)
out["exit_code"] = env.process_exit_code

states = {"w-done": STATE_RUNNING, "w-early": STATE_RUNNING, "w-dead": STATE_MISSING,
          "w-silent": STATE_MISSING, "w-stuck": STATE_RUNNING}
clients = [SimpleNamespace(id=k, state=v) for k, v in states.items()]
runner = SimpleNamespace(clients=SimpleNamespace(all=clients),
                         get_worker_index=lambda cid: list(states).index(cid))
run = HarnessRun(SimpleNamespace(runner=runner), started=1000.0, stopping=1010.0,
                 partial=sys.argv[1] or None)
for client in clients:
    listeners._worker_info(run, client.id)
run.workers["w-done"].update(reports=3, last_report=1009.0, final=1010.3)
run.workers["w-early"].update(reports=1, last_report=1003.0, final=1004.0)  # left on its own
# Its last rate, and when it was last seen alive: it died about then.
run.workers["w-dead"].update(reports=2, last_report=1006.04, rate=100.0, alive_at=1007.0)
run.workers["w-stuck"].update(reports=3, last_report=1009.5)
run.finals.update({"w-done", "w-early"})
listeners._note_lost_workers(run, runner)
out.update(partial=run.partial, workers=run.workers, lost=run.lost_workers)
print(json.dumps(out))
"""


def context_run(partial: str = "") -> dict:
    proc = subprocess.run([sys.executable, "-c", CONTEXT, partial], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_lost_worker_note_says_whose_data_ends_when():
    out = context_run()
    workers = out["workers"]
    assert {k: w["state"] for k, w in workers.items()} == {
        "w-done": "complete", "w-early": "complete", "w-dead": "missing",
        "w-silent": "missing", "w-stuck": "no final report"}
    assert "left_at_s" not in workers["w-done"]
    assert workers["w-early"]["left_at_s"] == pytest.approx(4.0)
    assert workers["w-dead"]["data_until_s"] == pytest.approx(6.0)
    assert workers["w-silent"]["data_until_s"] == 0
    dead, stuck = workers["w-dead"], workers["w-stuck"]
    assert out["lost"] is True
    # The requests lost with it: its last rate over the seconds it went on (0.96 s).
    assert dead["lost_estimate"] == 96 and dead["lost_seconds"] == pytest.approx(1.0)
    assert stuck["lost_estimate"] is None and workers["w-silent"]["lost_estimate"] is None
    assert "lost_estimate" not in workers["w-done"]
    assert out["partial"].split("; ") == [
        f"worker 2 (w-dead) missing: its data ends at {dead['data_until_s']} s "
        "(last of 2 reports), about 96 requests lost with it (its last rate, 100.0 req/s, "
        "over the 1.0 s it went on after that report)",
        "worker 3 (w-silent) missing: it sent no data (how many requests it made is unknown)",
        f"worker 4 (w-stuck) no final report: its data ends at {stuck['data_until_s']} s "
        "(last of 3 reports), how many requests were lost with it is unknown",
    ]


def test_the_note_follows_an_earlier_reason_and_the_context_helpers():
    out = context_run("terminated (SIGTERM) after 3.0 s")
    assert out["partial"].startswith("terminated (SIGTERM) after 3.0 s; worker 2 (w-dead)")
    assert out["no_run"] == "nodeport-harness: no target yet (discovery has not run)"
    assert out["exit_code"] == 143  # the highest code wins; a later 1 does not lower it
