"""`nodeport-harness lab build` and `harness.lab.binaries`: the real control plane's binaries,
built from harness/lab/gomod into a cache folder, found there, and one clear line when Go is
missing, a build fails or the binaries are not built.

The fast tests drive the command with a stand-in `go` on PATH (a script that writes the `-o`
file, or fails like a compile error); the last test runs the real `lab build` against the real
cache, which .ci/run fills before the tests (there it is the up-to-date check and the
binaries' `--version`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import LabError
from harness.lab import binaries

ROOT = Path(__file__).resolve().parents[1]
GOMOD = ROOT / "harness" / "lab" / "gomod"

# A stand-in for `go build`: records its argv and cwd, then writes an executable at -o that
# prints what it was built as, or fails the way a compile error does.
FAKE_GO = """#!{python}
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GO_CALLS"], "a") as calls:
    cgo = os.environ["CGO_ENABLED"]
    calls.write(os.getcwd() + " " + repr(args) + " CGO_ENABLED=" + cgo + "\\n")
if os.environ.get("FAKE_GO_FAIL"):
    print("# k8s.io/kubernetes/cmd/" + args[-1], file=sys.stderr)
    print("compile: out of memory", file=sys.stderr)
    print(os.environ["FAKE_GO_FAIL"], file=sys.stderr)
    sys.exit(1)
out = args[args.index("-o") + 1]
with open(out, "w") as f:
    f.write("#!/bin/sh\\necho built from " + args[-1] + "\\n")
os.chmod(out, 0o755)
"""


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "lab", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def path_without_go() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.access(os.path.join(d, "go"), os.X_OK))


@pytest.fixture
def fake_go(tmp_path: Path) -> dict[str, str]:
    """The environment of a `lab build` whose `go` is the stand-in and whose cache is tmp."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    go = bindir / "go"
    go.write_text(FAKE_GO.format(python=sys.executable))
    go.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{path_without_go()}",
            "NODEPORT_HARNESS_CACHE": str(tmp_path / "cache"),
            "FAKE_GO_CALLS": str(tmp_path / "calls.txt")}


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_GO_CALLS"])
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_version_is_the_one_go_mod_requires():
    text = (GOMOD / "go.mod").read_text()
    assert re.search(r"^\s*k8s\.io/kubernetes v1\.34\.4$", text, re.M)
    assert binaries.KUBERNETES_VERSION == "v1.34.4"
    # The staging modules are the same release: v0.X.Y for Kubernetes v1.X.Y.
    staging = re.findall(r"^\s*(k8s\.io/\S+) => k8s\.io/\S+ (v\S+)$", text, re.M)
    assert len(staging) >= 30
    assert {version for _, version in staging} == {"v0.34.4"}
    flags = binaries.ldflags("kube-apiserver", "2025-01-01T00:00:00Z")
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "gitMajor=1 " in flags and "gitMinor=34 " in flags


def test_cache_folder_order(monkeypatch, tmp_path):
    monkeypatch.delenv("NODEPORT_HARNESS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert binaries.cache_dir() == (tmp_path / "home/.cache/nodeport-harness/k8s-v1.34.4/bin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert binaries.cache_dir() == tmp_path / "xdg/nodeport-harness/k8s-v1.34.4/bin"
    monkeypatch.setenv("NODEPORT_HARNESS_CACHE", str(tmp_path / "mine"))
    assert binaries.cache_dir() == tmp_path / "mine/k8s-v1.34.4/bin"


def test_find_names_what_is_missing_and_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("NODEPORT_HARNESS_CACHE", str(tmp_path))
    with pytest.raises(LabError) as err:
        binaries.find()
    message = str(err.value)
    assert "\n" not in message
    assert "run 'nodeport-harness lab build'" in message
    assert all(name in message for name in binaries.BINARIES)
    assert str(tmp_path / "k8s-v1.34.4" / "bin") in message
    # Four of five there: only the fifth is named; all five: their paths.
    folder = binaries.cache_dir()
    folder.mkdir(parents=True)
    for name in binaries.BINARIES[1:]:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    with pytest.raises(LabError, match=r"binaries \(Kubernetes v1\.34\.4\) are not built: etcd "
                                       r"missing from"):
        binaries.find()
    (folder / "etcd").write_text("#!/bin/sh\n")
    with pytest.raises(LabError, match=r"not built: etcd missing"):  # not executable
        binaries.find()
    (folder / "etcd").chmod(0o755)
    assert binaries.find() == {name: folder / name for name in binaries.BINARIES}


def test_lab_build_without_go_is_one_line(tmp_path):
    env = {**os.environ, "PATH": path_without_go(), "NODEPORT_HARNESS_CACHE": str(tmp_path)}
    assert shutil.which("go", path=env["PATH"]) is None
    proc = cli("build", env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: Go is not installed: ")
    assert "install Go 1.24+" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_lab_build_builds_each_binary_once(fake_go):
    proc = cli("build", env=fake_go)
    assert proc.returncode == 0, proc.stderr
    folder = Path(fake_go["NODEPORT_HARNESS_CACHE"]) / "k8s-v1.34.4" / "bin"
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[:5]] == list(binaries.BINARIES)
    assert all(re.search(r"  built in [\d.]+ s$", line) for line in lines[:5]), lines
    assert lines[5].startswith("Kubernetes v1.34.4: built 5 of 5 in ")
    assert lines[5].endswith(f"; binaries in {folder}")
    ran = calls(fake_go)
    assert len(ran) == 5
    for name, call in zip(binaries.BINARIES, ran, strict=True):
        # run in the wrapper module, static, module graph read-only, version stamped
        assert call.startswith(f"{GOMOD} ['build', '-mod=readonly', '-trimpath'"), call
        assert call.endswith("CGO_ENABLED=0")
        package = "./etcd" if name == "etcd" else f"k8s.io/kubernetes/cmd/{name}"
        assert f"'{package}']" in call
        assert ("gitVersion=v1.34.4" in call) == (name != "etcd")
        out = subprocess.run([folder / name], capture_output=True, text=True, check=True)
        assert out.stdout == f"built from {package}\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*binaries.BINARIES,
                                                               ".stamp.json"])
    # Again: nothing to do, go is not even called (and the last build's log stays); --force
    # builds all five again.
    log = folder.parent / "build.log"
    assert log.read_text().count("CGO_ENABLED=0 ") == 5
    again = cli("build", env=fake_go)
    assert log.read_text().count("CGO_ENABLED=0 ") == 5
    assert again.returncode == 0, again.stderr
    assert calls(fake_go) == []
    assert [line.split() for line in again.stdout.splitlines()[:5]] == [
        [name, "up", "to", "date"] for name in binaries.BINARIES]
    assert again.stdout.splitlines()[5] == (f"Kubernetes v1.34.4: all 5 up to date; "
                                            f"binaries in {folder}")
    forced = cli("build", "--force", env=fake_go)
    assert forced.returncode == 0, forced.stderr
    assert len(calls(fake_go)) == 5
    # A deleted binary is the only one rebuilt.
    (folder / "kube-proxy").unlink()
    one = cli("build", env=fake_go)
    assert [call.split()[-2] for call in calls(fake_go)] == ["'k8s.io/kubernetes/cmd/kube-proxy']"]
    assert "Kubernetes v1.34.4: built 1 of 5 in " in one.stdout


def test_a_changed_module_rebuilds(fake_go, monkeypatch, tmp_path):
    gomod = tmp_path / "gomod"
    shutil.copytree(GOMOD, gomod)
    monkeypatch.setattr(binaries, "GOMOD", gomod)
    for name in ("PATH", "NODEPORT_HARNESS_CACHE", "FAKE_GO_CALLS"):
        monkeypatch.setenv(name, fake_go[name])
    lines: list[str] = []
    timings = binaries.build(log=lines.append)
    assert set(timings) == set(binaries.BINARIES) and None not in timings.values()
    assert set(binaries.build(log=lines.append).values()) == {None}
    with (gomod / "go.sum").open("a") as f:
        f.write("example.com/x v1.0.0 h1:AAAA=\n")
    calls(fake_go)
    assert None not in binaries.build(log=lines.append).values()
    assert len(calls(fake_go)) == 5


def test_a_failed_build_is_one_line_and_keeps_the_log(fake_go, monkeypatch):
    fake_go["FAKE_GO_FAIL"] = "cmd/kube-apiserver/app/server.go:1:1: undefined: thing"
    cache = Path(fake_go["NODEPORT_HARNESS_CACHE"])
    proc = cli("build", env=fake_go)
    assert proc.returncode == 2
    log = cache / "k8s-v1.34.4" / "build.log"
    assert proc.stderr == (f"error: building etcd failed: cmd/kube-apiserver/app/server.go:1:1: "
                           f"undefined: thing (go's full output: {log})\n")
    assert proc.stdout == ""
    assert "compile: out of memory" in log.read_text()  # the whole output is there
    assert "CGO_ENABLED=0" in log.read_text()  # with the command that gave it
    # Nothing half-written is left, and nothing is taken for built.
    assert sorted(p.name for p in (cache / "k8s-v1.34.4" / "bin").iterdir()) == []
    monkeypatch.setenv("NODEPORT_HARNESS_CACHE", str(cache))
    with pytest.raises(LabError, match="not built: etcd, kube-apiserver"):
        binaries.find()


def test_force_is_for_build_only(tmp_path):
    proc = cli("stats", "--force", env={**os.environ, "NODEPORT_HARNESS_CACHE": str(tmp_path)})
    assert (proc.returncode, proc.stderr) == (2, "error: --force is for 'lab build' only\n")


@pytest.mark.timeout(3600)
def test_real_build_is_done_and_the_binaries_run(monkeypatch):
    """CI builds the binaries before the tests (.ci/run), so here it is the up-to-date check
    (a cold build where it did not happen: tens of minutes). Elsewhere it skips unless they
    are built."""
    if shutil.which("go") is None and not os.environ.get("CI"):
        pytest.skip("no Go toolchain: 'nodeport-harness lab build' cannot run here")
    env = {k: v for k, v in os.environ.items() if k != "NODEPORT_HARNESS_CACHE"}
    if not os.environ.get("CI"):
        monkeypatch.delenv("NODEPORT_HARNESS_CACHE", raising=False)
        try:
            binaries.find()
        except LabError:
            pytest.skip("binaries not built (run 'nodeport-harness lab build'; CI does)")
    proc = cli("build", env=env, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    folder = Path(proc.stdout.splitlines()[-1].split("; binaries in ")[1])
    assert folder.name == "bin" and folder.parent.name == "k8s-v1.34.4"
    for name in binaries.BINARIES:
        out = subprocess.run([folder / name, "--version"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        if name == "etcd":
            assert re.search(r"^etcd Version: 3\.6\.\d+$", out.stdout, re.M), out.stdout
        else:
            assert out.stdout.strip() == "Kubernetes v1.34.4", out.stdout
