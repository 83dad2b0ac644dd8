"""The README's "Using it" blocks, run as written, and the --lab-... options it documents.

The first block starts the lab (in a folder of the test's own, where the block's `.lab/`
lands); the lab's printed block must be the README's second block (its absolute kubeconfig
path where the README shows `$PWD/.lab/kubeconfig`); the other blocks then run one after
the other in one `bash -euo pipefail` session, as in the second terminal, with one
mechanical change to stay short: `-t 30s` -> `-t 2s` and `--step-time 10s` ->
`--step-time 3s` (SHORTER; the test checks that undoing it gives the README's text back).
`nodeport-harness` is this tree's CLI (a shim first on PATH), HOME a folder of the test's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import stop_process
from lab_runs import assert_one_line_error, harness_cmd, load, run

from harness import cli
from harness.commands.lab import COMMAND_SETTINGS, SEED_HEADER
from harness.errors import HarnessError
from harness.lab.cluster import block_is_free, pid_alive, read_fault_log, read_lab_info
from harness.targets import LAB_SHAPE, lab_flag

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPLY = "Hello world1 (direct)"  # the seed's helloworld, word for word
# The one change made to the blocks before running them: (as written, as run).
SHORTER = (("-t 30s", "-t 2s"), ("--step-time 10s", "--step-time 3s"))
KUBECONFIG_SHOWN = "$PWD/.lab/kubeconfig"

needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "kubectl", "jq", "curl")),
    reason="bash, kubectl, jq and curl are needed for the README's blocks")


def using_it_blocks() -> list[str]:
    """The ```bash blocks of the README's "Using it" section, in order."""
    text = README.read_text()
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```$", section, re.S | re.M)


def shortened(block: str) -> str:
    """The block with SHORTER applied, whole words only; undoing it must give the block."""
    out = block
    for written, short in SHORTER:
        pattern = re.compile(rf"(?<!\S){re.escape(short)}(?!\S)")
        assert not pattern.search(block), f"{short!r} is already in the README: not undoable"
        out = re.sub(rf"(?<!\S){re.escape(written)}(?!\S)", short, out)
    undone = out
    for written, short in SHORTER:
        undone = re.sub(rf"(?<!\S){re.escape(short)}(?!\S)", written, undone)
    assert undone == block
    return out


def test_the_section_has_the_blocks_this_test_runs():
    blocks = using_it_blocks()
    assert len(blocks) == 4, blocks
    assert blocks[0].strip().startswith("nodeport-harness lab ")
    assert blocks[1].startswith("export KUBECONFIG=")
    changed = shortened(blocks[2])
    assert changed != blocks[2] and "-t 2s" in changed and "--step-time 3s" in changed
    assert changed.count("\n") == blocks[2].count("\n")


# -- the lab, started as the first block says --------------------------------------------------


@pytest.fixture(scope="module")
def readme_lab(tmp_path_factory):
    """The first block, run in a folder of its own: (folder, env, its printed lines, lab.json)."""
    folder = tmp_path_factory.mktemp("readme")
    shim = folder / "bin"
    shim.mkdir()
    (shim / "nodeport-harness").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m harness.cli "$@"\n')
    (shim / "nodeport-harness").chmod(0o755)
    (folder / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBECACHEDIR")}
    env.update(PATH=f"{shim}{os.pathsep}{env.get('PATH', '')}", HOME=str(folder / "home"),
               PYTHONPATH=str(ROOT), COLUMNS="80")
    command = using_it_blocks()[0].strip()
    if not block_is_free(0):
        # Another `lab` holds the documented addresses on this machine: a free block, which
        # the printed block handles as well (it reads the addresses from the API).
        command += " --block auto"
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", command], cwd=folder, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(60)
        assert proc.poll() is None and lines and lines[-1].startswith("Ctrl-C"), (
            lines, proc.stderr.read() if proc.poll() is not None else "")
        yield folder, env, lines, read_lab_info(folder / ".lab")
    finally:
        info = None
        with contextlib.suppress(HarnessError):  # (it never started)
            info = read_lab_info(folder / ".lab")
        stop_process(proc, timeout=20)
        if info and pid_alive(int(info["pid"])):
            os.kill(int(info["pid"]), 9)


def printed_block(lines: list[str]) -> list[str]:
    """The commands the lab printed under SEED_HEADER (a blank line around them)."""
    start = lines.index(SEED_HEADER) + 2
    end = lines.index("", start)
    assert lines[start - 1] == "" and end > start, lines
    return lines[start:end]


@needs_tools
def test_the_lab_prints_the_block_the_readme_shows(readme_lab):
    folder, _env, lines, _info = readme_lab
    printed = printed_block(lines)
    kubeconfig = (folder / ".lab" / "kubeconfig").resolve()
    assert printed[0] == f"export KUBECONFIG={kubeconfig}" and kubeconfig.is_file()
    shown = [line.replace(str(kubeconfig), KUBECONFIG_SHOWN) for line in printed]
    assert "\n".join(shown) + "\n" == using_it_blocks()[1]


@needs_tools
def test_the_readme_blocks_run_as_written(readme_lab):
    folder, env, _lines, info = readme_lab
    blocks = using_it_blocks()
    mark = "--- block {} done ---"
    script = "".join(shortened(block) + f"echo; echo '{mark.format(i)}'\n"
                     for i, block in enumerate(blocks[1:], 1))
    started = time.monotonic()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=180)
    taken = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    seed, measured, _faults = re.split(r"\n--- block \d done ---\n", "\n" + proc.stdout)[:3]

    # The seed's steps: the curl prints helloworld's reply, the seed's words.
    reply = json.loads(seed.strip())
    assert reply["message"] == REPLY and reply["sender"] == "world1"
    assert reply["host"] in {pod["name"] for pod in info["pods"]}

    # Measuring: every run reached the lab without a failure, as its entry strategy says.
    reports = folder / "reports"
    summaries = {name: load(reports / name, "summary.json")
                 for name in ("single", "all", "close", "lb")}
    for name, summary in summaries.items():
        totals = summary["totals"]
        assert totals["requests"] > 0 and totals["failures"] == 0, (name, totals)
    entered = {name: {n["name"] for n in s["nodes"] if n["requests"]}
               for name, s in summaries.items()}
    assert entered["single"] == {"node-1"} and entered["all"] == {"node-1", "node-2", "node-3"}
    assert summaries["lb"]["lb"]["address"] == info["lb_address"], summaries["lb"]["lb"]
    assert summaries["single"]["lb"] is None
    assert re.match(r"Service\s+default/helloworld\s+type LoadBalancer", measured), measured
    capacity = sorted(reports.glob("capacity-*/capacity.json"))
    assert len(capacity) == 1 and json.loads(capacity[0].read_text())["steps"]

    # The faults block: each one reached the lab, in order.
    log = read_fault_log(info)
    assert [(f["kind"], f["name"], f["action"]) for f in log] == [
        ("node", "node-2", "down"), ("node", "node-2", "up"),
        ("pod", info["pods"][0]["name"], "restart")]
    print(f"README blocks 2-4 ran in {taken:.0f} s")


# -- the --lab-... options (the lab's shape for run, discover and capacity --lab) ------------


def test_lab_shape_options_are_the_lab_commands_minus_where_it_lives():
    # --block: a throw-away lab takes a free one; --restricted-token: the command uses the
    # lab's admin kubeconfig. Everything else `nodeport-harness lab` takes, --lab takes too.
    assert set(LAB_SHAPE) == set(COMMAND_SETTINGS) - {"block", "restricted_token"}
    assert lab_flag("service_type") == "--lab-service-type"
    assert lab_flag("external_ip") == "--lab-no-external-ip"
    text = README.read_text()
    assert all(f"`{lab_flag(name)}`" in text for name in LAB_SHAPE)


@pytest.mark.parametrize("argv, fragment", [
    (["discover", "--lab-nodes", "2"], "--lab-nodes shapes the lab that --lab starts: add --lab"),
    (["discover", "--lab-pods", "2", "--lab-no-external-ip"], "--lab-pods, --lab-no-external-ip"),
    (["capacity", "--lab-pods", "2", "--step-users", "1", "--max-users", "2",
      "--slo-p95-ms", "50"], "--lab-pods shapes the lab that --lab starts"),
    (["discover", "--lab", "--lab-nodes", "0"], "--lab-nodes must be between 1 and"),
    (["discover", "--lab", "--lab-placement", "3,2"], "--lab-placement needs 3 non-negative"),
    (["discover", "--lab", "--lab-placement", "a,b"], "--lab-placement must be comma-separated"),
    (["discover", "--lab", "--lab-node-port", "80"], "--lab-node-port must be in 30000-32767"),
    (["discover", "--lab", "--lab-datapath", "kernel", "--lab-proxy-mode", "ipvs"],
     "--lab-datapath kernel runs kube-proxy's iptables mode only; use --lab-proxy-mode"),
    (["discover", "--lab", "--lab-service-type", "Ingress"], "--lab-service-type"),
    (["discover", "--lab", "--lab-nodes", "two"], "--lab-nodes"),
    (["capacity", "--lab", "--lab-pod-concurrency", "0", "--step-users", "1",
      "--max-users", "2", "--slo-p95-ms", "50"], "--lab-pods and --lab-pod-concurrency"),
    (["capacity", "--lab", "--entry", "lb", "--lab-service-type", "NodePort", "--step-users",
      "1", "--max-users", "2", "--slo-p95-ms", "50"],
     "--entry lb needs a LoadBalancer and --lab-service-type NodePort has none: use "
     "--lab-service-type LoadBalancer"),
])
def test_bad_lab_shapes_are_one_line_and_exit_2(argv, fragment, capsys, tmp_path):
    try:
        code = cli.main([*argv, *(["--report-dir", str(tmp_path)] if argv[0] == "capacity"
                                  else [])])
    except SystemExit as exit_info:  # argparse's own refusals (a type, a choice)
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_discover_lab_takes_the_shape(capsys):
    code = cli.main(["discover", "--lab", "--lab-nodes", "2", "--lab-placement", "2,1",
                     "--lab-service-type", "LoadBalancer", "--lab-policy", "Local",
                     "--lab-seed", "7", "-o", "json"])
    target = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [n["name"] for n in target["nodes"]] == ["node-1", "node-2"]
    pods = [e["node"] for e in target["endpoints"]]
    assert sorted(pods) == ["node-1", "node-1", "node-2"]
    service = target["service"]
    assert service["type"] == "LoadBalancer" and service["external_traffic_policy"] == "Local"
    assert service["lb_ingress"]


def test_run_lab_refuses_a_shape_without_lab_in_one_line(tmp_path):
    proc = run(harness_cmd("run", "--lab-service-type", "LoadBalancer", "-u", "1", "-t", "1s",
                           "--report-dir", str(tmp_path)), timeout=60)
    assert_one_line_error(proc, "--lab-service-type shapes the lab that --lab starts",
                          exact=False)


def test_run_lab_entry_lb_works_end_to_end(tmp_path):
    """The README's `run --lab --entry lb`: the throw-away lab's Service is a LoadBalancer."""
    proc = run(harness_cmd("run", "--lab", "--entry", "lb", "-u", "2", "-t", "2s",
                           "--report-dir", str(tmp_path), "--run-id", "lb"), timeout=90)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    summary = load(tmp_path / "lb", "summary.json")
    target = load(tmp_path / "lb", "target.json")
    assert target["service"]["type"] == "LoadBalancer" and target["service"]["lb_ingress"]
    assert summary["totals"]["requests"] > 0 and summary["totals"]["failures"] == 0
    lb = summary["lb"]
    assert lb["address"] in target["service"]["lb_ingress"] and lb["seen"] is True
    assert sum(lb["via_nodes"].values()) == lb["successes"] == summary["totals"]["successes"]
