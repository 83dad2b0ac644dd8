"""Read a run folder (target.json, spread.json, run.json) into plain dicts, or say what is wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.recorder import check_spread
from harness.errors import DataError, ReportError
from harness.report.schema import check_document, parse_json

HINT = "pass a folder written by nodeport-harness run"


@dataclass(frozen=True)
class RunData:
    """One run folder's saved data; ``target`` and ``run`` are empty dicts when absent."""

    run_dir: Path
    spread: dict[str, Any]
    target: dict[str, Any]
    run: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.run.get("run_id") or self.run_dir.name)


def load_run(run_dir: Path | str) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"{run_dir} does not exist: {HINT}")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder: {HINT}")
    if not (run_dir / "spread.json").is_file():
        raise ReportError(f"{run_dir} is not a run folder (no spread.json): {HINT}")
    spread = read_json(run_dir / "spread.json")
    try:
        check_spread(spread)
    except DataError as err:
        raise ReportError(f"{run_dir / 'spread.json'}: {err}") from None
    _require_keys(run_dir / "spread.json", spread,
                  {"totals": dict, "entry_nodes": dict, "pods": dict, "series": dict})
    # Every field's type and range, and the timeline's span: a hand-edited folder is one
    # line, never a traceback or a report gigabytes large.
    check_document("spread", spread, str(run_dir / "spread.json"), HINT)
    # target.json and run.json enrich the report; a folder holding only spread.json
    # (copied out of CI, say) still renders.
    target = _optional(run_dir / "target.json")
    if target:
        _require_keys(run_dir / "target.json", target, {"nodes": list, "service": dict})
        check_document("target", target, str(run_dir / "target.json"), HINT)
    run = _optional(run_dir / "run.json")
    if run:
        check_document("run", run, str(run_dir / "run.json"), HINT)
    # Resolved: a run given as "." still has a name (its run id) and a parent folder.
    return RunData(run_dir.resolve(), spread, target, run)


def read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ReportError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not UTF-8 text: {HINT}") from None
    try:
        data = parse_json(text)
    except json.JSONDecodeError as err:
        raise ReportError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}): {HINT}"
        ) from None
    except ValueError as err:  # NaN, 1e400, a 5 000-digit integer, deep nesting
        raise ReportError(f"{path} {str(err)[:160]}: {HINT}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} does not hold a JSON object: {HINT}")
    return data


def _optional(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _require_keys(path: Path, data: dict[str, Any], keys: dict[str, type]) -> None:
    missing = [key for key, kind in keys.items() if not isinstance(data.get(key), kind)]
    if missing:
        raise ReportError(f"{path} lacks a valid {', '.join(missing)}: {HINT}")
