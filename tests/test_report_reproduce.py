"""A run page's "How to reproduce" command, pasted into another folder, runs the same test
against the same target (a real run against the session's lab, then its pasted re-run)."""

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `lab`: the session's NodePort lab (conftest.py); these runs only send it traffic.


def command_on_page(page: Path, pre_id: str) -> list[str]:
    found = re.search(rf'<pre id="{pre_id}" class="command">(.*?)</pre>', page.read_text())
    assert found, f"no {pre_id} on {page}"
    return [html.unescape(w) for w in re.findall(r"<span>(.*?)</span>", found.group(1))]


def cli(words: list[str], cwd: Path | str) -> subprocess.CompletedProcess:
    assert words[0] == "nodeport-harness"
    return subprocess.run([sys.executable, "-m", "harness.cli", *words[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_reproduce_command_runs_when_pasted_elsewhere(lab, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    kubeconfig = os.path.relpath(lab.kubeconfig, work)  # typed relative to where it ran
    first = cli(["nodeport-harness", "run", "--kubeconfig", kubeconfig, "--report-dir",
                 "reports", "--run-id", "first", "-u", "2", "-t", "1s", "--plotlyjs", "cdn",
                 "--entry", "single"], cwd=work)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = work / "reports" / "first"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["cwd"] == str(work)
    assert info["kubeconfig"] == os.path.normpath(work / kubeconfig)

    words = command_on_page(run_dir / "index.html", "reproduce-command")
    assert words[words.index("--kubeconfig") + 1] == os.path.normpath(work / kubeconfig)
    assert words[words.index("--report-dir") + 1] == str(work / "reports")
    assert "--run-id" not in words  # a re-run must not write over this run
    assert words[-4:] == ["--namespace", "default", "--service", "helloworld"]
    text = (run_dir / "index.html").read_text()
    assert f"kubeconfig {os.path.normpath(work / kubeconfig)}" in text

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = cli(words, cwd=elsewhere)
    assert again.returncode == 0, again.stderr[-2000:]
    reruns = [p for p in (work / "reports").iterdir() if p.is_dir() and p.name != "first"]
    assert len(reruns) == 1 and (reruns[0] / "index.html").is_file()
    rerun = json.loads((reruns[0] / "run.json").read_text())
    assert rerun["entry"] == "single" and rerun["options"]["service"] == "helloworld"
    assert not list(elsewhere.iterdir())  # nothing landed in the folder it was pasted in
