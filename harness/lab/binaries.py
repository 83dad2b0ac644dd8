"""The real lab's Kubernetes binaries: built from the wrapper Go module in ``gomod/``, found
in a cache folder outside the repo (one per Kubernetes version).

    build()  ``nodeport-harness lab build``: ``go build`` each binary that is missing or was
             built from another go.mod/go.sum; Go's own build cache makes a rebuild fast
    find()   the binaries' paths, or a one-line LabError saying what to run

The Kubernetes version is the one ``gomod/go.mod`` requires (its ``k8s.io/kubernetes`` line),
so bumping it there is the whole upgrade.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from harness.core.text import secs
from harness.errors import LabError

GOMOD = Path(__file__).resolve().parent / "gomod"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
BUILD_COMMAND = "nodeport-harness lab build"
GO_MINIMUM = "1.24"
_STAMP = ".stamp.json"
_LOG = "build.log"


def _required_version(module: str) -> str:
    """The version ``gomod/go.mod`` requires of ``module``."""
    text = (GOMOD / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if found is None:
        raise RuntimeError(f"{GOMOD / 'go.mod'} does not require {module}")
    return found.group(1)


KUBERNETES_VERSION = _required_version("k8s.io/kubernetes")
ETCD_VERSION = _required_version("go.etcd.io/etcd/server/v3")


def cache_root() -> Path:
    """$NODEPORT_HARNESS_CACHE, else $XDG_CACHE_HOME/nodeport-harness, else
    ~/.cache/nodeport-harness."""
    if os.environ.get("NODEPORT_HARNESS_CACHE"):
        return Path(os.environ["NODEPORT_HARNESS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nodeport-harness"


def cache_dir(version: str = KUBERNETES_VERSION) -> Path:
    """The folder holding this version's binaries."""
    return cache_root() / f"k8s-{version}" / "bin"


def log_path(version: str = KUBERNETES_VERSION) -> Path:
    """Where ``build`` writes go's full output."""
    return cache_root() / f"k8s-{version}" / _LOG


def find() -> dict[str, Path]:
    """Every binary's path; a one-line LabError naming the missing ones and the command that
    builds them."""
    folder = cache_dir()
    paths = {name: folder / name for name in BINARIES}
    missing = [name for name, path in paths.items()
               if not (path.is_file() and os.access(path, os.X_OK))]
    if missing:
        raise LabError(f"the real control plane's binaries (Kubernetes {KUBERNETES_VERSION}) "
                       f"are not built: {', '.join(missing)} missing from {folder}; run "
                       f"'{BUILD_COMMAND}' (needs Go {GO_MINIMUM}+)")
    return paths


def source_key() -> str:
    """What a binary was built from: the version and a hash of the wrapper module's files."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "etcd/main.go"):
        digest.update(name.encode() + b"\0" + (GOMOD / name).read_bytes() + b"\0")
    return f"{KUBERNETES_VERSION} {digest.hexdigest()[:16]}"


def ldflags(name: str, build_date: str) -> str:
    """``-s -w`` and, for Kubernetes' own commands, the version their ``--version`` prints."""
    if name == "etcd":  # etcd's version is a constant of its own module
        return "-s -w"
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    settings = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor,
                "gitTreeState": "clean", "buildDate": build_date}
    return " ".join(["-s", "-w", *(f"-X {pkg}.{key}={value}"
                                   for key, value in settings.items())])


def go_command(name: str, output: Path, build_date: str) -> list[str]:
    package = "./etcd" if name == "etcd" else f"k8s.io/kubernetes/cmd/{name}"
    return ["go", "build", "-mod=readonly", "-trimpath", "-buildvcs=false",
            "-ldflags", ldflags(name, build_date), "-o", str(output), package]


def _read_stamps(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamps(folder: Path, stamps: dict[str, str]) -> None:
    tmp = folder / f"{_STAMP}.{os.getpid()}"
    tmp.write_text(json.dumps(stamps, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / _STAMP)


def build(log: Callable[[str], None] = print, force: bool = False) -> dict[str, float | None]:
    """Build every binary not already built from this module: {name: seconds, or None when it
    was up to date}. One line per binary goes to ``log``; a missing Go or a failed
    ``go build`` is a one-line LabError (go's full output is in ``log_path()``)."""
    go = shutil.which("go")
    if go is None:
        raise LabError(f"Go is not installed: '{BUILD_COMMAND}' builds the Kubernetes "
                       f"{KUBERNETES_VERSION} binaries with it; install Go {GO_MINIMUM}+ "
                       "(https://go.dev/doc/install) and put 'go' on PATH")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    logfile = log_path()
    key = source_key()
    stamps = _read_stamps(folder)
    env = {**os.environ, "CGO_ENABLED": "0"}  # GOCACHE, GOMODCACHE, GOPROXY: the user's
    build_date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    width = max(map(len, BINARIES))
    timings: dict[str, float | None] = {}
    with contextlib.ExitStack() as stack:
        out = None  # the log of this run's go builds: opened (emptied) by the first one
        for name in BINARIES:
            target = folder / name
            if not force and stamps.get(name) == key and target.is_file():
                timings[name] = None
                log(f"{name:<{width}}  up to date")
                continue
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            command = go_command(name, tmp, build_date)
            command[0] = go
            out = out or stack.enter_context(logfile.open("w"))
            out.write(f"$ (cd {GOMOD} && CGO_ENABLED=0 {' '.join(command)})\n")
            out.flush()
            started = time.monotonic()
            try:
                proc = subprocess.run(command, cwd=GOMOD, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, errors="replace")
                out.write(proc.stdout)
                out.flush()
                if proc.returncode != 0:
                    lines = [line for line in proc.stdout.splitlines() if line.strip()]
                    last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
                    raise LabError(f"building {name} failed: {last} (go's full output: "
                                   f"{logfile})")
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            timings[name] = time.monotonic() - started
            stamps[name] = key
            _write_stamps(folder, stamps)
            log(f"{name:<{width}}  built in {secs(timings[name])}")
    return timings
