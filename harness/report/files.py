"""Atomic file writes: a reader never sees half a report (temp file in the folder + rename)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import ReportError


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ReportError(
            f"cannot write into {path.parent}: {err.strerror or err}; "
            "choose a writable folder with --report-dir"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ReportError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, data: Any, compact: bool = False) -> Path:
    """`compact` for big machine-read files (an hour's spread.json: 25 MB indented)."""
    if compact:
        return write_text_atomic(path, json.dumps(data, separators=(",", ":")) + "\n")
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_writable(folder: Path | str) -> None:
    """ReportError unless run folders can be made in `folder`; creates nothing (a run that
    fails later on bad input leaves no empty folder behind)."""
    path = Path(folder).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    hint = "choose a writable folder with --report-dir"
    if not probe.is_dir():
        raise ReportError(f"cannot write reports into {folder}: {probe} is not a folder; {hint}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write reports into {folder}: {probe} is not writable; {hint}")


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null instead of an unparsable file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
