"""The run folder's documents as JSON Schemas (spread.json, run.json, target.json), and the
bounds a report puts on what it will draw.

A run folder may be hand-edited, truncated or hostile: ``check_document`` turns whatever it
holds into a one-line ``ReportError`` before the analysis reads it, so the report never
meets a bucket index past the histogram, a count of ``1e400``, a threshold of ``"fast"`` or
a per-second point years past the run (the timeline is drawn second by second, so one such
point would cost gigabytes). Parsing (``parse_json``) refuses NaN/Infinity, numbers too
large for a float and nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import extend

from harness.core.histogram import BUCKETS, SERIES_BUCKETS
from harness.core.recorder import SPREAD_SCHEMA
from harness.core.runinfo import CONNECTION_MODES, ENTRY_STRATEGIES, THRESHOLDS
from harness.core.text import printable
from harness.errors import ReportError

MAX_DEPTH = 64  # the documents nest 6 deep; anything far deeper is not ours
MAX_COUNT = 2**53  # counts stay exact as floats (JavaScript's too)
MAX_SERIES_SPAN_S = 7 * 86_400  # the timeline is drawn per second: at most a week of it
EPOCH_MAX = 4_102_444_800  # 2100-01-01: an epoch second past it is not a run's
NAME = {"type": "string", "maxLength": 1024}

COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
NUMBER = {"type": "number", "minimum": -1e15, "maximum": 1e15}
EPOCH = {"type": "number", "minimum": 0, "maximum": EPOCH_MAX}


def _hist(buckets: int) -> dict[str, Any]:
    """A sparse histogram: [[bucket index, count], ...] with indexes inside the layout
    (checked by the ``histogram`` keyword below: a long run holds millions of pairs)."""
    return {"type": "array", "histogram": buckets}


def _check_histogram(validator: Any, buckets: int, instance: Any, schema: Any):
    if not isinstance(instance, list):
        return
    for i, pair in enumerate(instance):
        if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not int
                or type(pair[1]) is not int):
            yield ValidationError("should be a pair of integers [bucket, count]",
                                  path=[i])
        elif not 0 <= pair[0] < buckets:
            yield ValidationError(f"bucket index {_short(str(pair[0]), 40)} is out of "
                                  f"range (0 to {buckets - 1})", path=[i])
        elif not 0 <= pair[1] <= MAX_COUNT:
            yield ValidationError(f"count {_short(str(pair[1]), 40)} is out of range",
                                  path=[i])


HIST = _hist(BUCKETS)
COARSE = _hist(SERIES_BUCKETS)


def _counts(keys: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": COUNT}
    if keys:
        schema["propertyNames"] = keys
    return schema


SPREAD: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "totals", "entry_nodes", "pods", "series"],
    "properties": {
        "schema": {"const": SPREAD_SCHEMA},
        "start": {"anyOf": [EPOCH, {"type": "null"}]},
        "end": {"anyOf": [EPOCH, {"type": "null"}]},
        "pod_nodes": {"type": "object", "propertyNames": NAME,
                      "additionalProperties": {"anyOf": [NAME, {"type": "null"}]}},
        "totals": {"type": "object", "properties": {
            k: COUNT for k in ("requests", "successes", "failures")}},
        "latency": {"type": "object", "properties": {"count": COUNT, "buckets": HIST}},
        "failure_latency": HIST,
        "entry_nodes": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "properties": {
                "requests": COUNT, "successes": COUNT, "failures": COUNT,
                "pods": _counts(NAME), "failure_kinds": _counts(NAME),
                "http_status": _counts({"pattern": "^[1-9][0-9]{2}$"}),
                "latency": HIST, "failure_latency": HIST, "via_nodes": _counts(NAME)}}},
        "pods": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "properties": {
                "node": {"anyOf": [NAME, {"type": "null"}]},
                "successes": COUNT, "failures": COUNT, "latency": HIST}}},
        "locality": {"type": "object", "propertyNames": {"enum": [
            "local", "cross_node", "unknown"]}, "additionalProperties": {
            "type": "object", "properties": {"successes": COUNT, "latency": HIST}}},
        "series": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "array", "items": {
                "type": "object", "required": ["t"], "properties": {
                    "t": {"type": "integer", "minimum": 0, "maximum": EPOCH_MAX},
                    "requests": COUNT, "failures": COUNT, "latency": COARSE,
                    "failure_latency": COARSE, "pods": _counts(NAME),
                    "kinds": _counts(NAME)}}}},
        "connections": {"type": "object", "properties": {
            "tracked": COUNT, "requests": COUNT, "evicted": COUNT,
            "distinct_pods": _counts({"pattern": "^[0-9]{1,7}$"}),
            "requests_per_connection": HIST}},
        "markers": {"type": "array", "items": {
            "type": "object", "required": ["t", "label"],
            "properties": {"t": EPOCH, "label": {"type": "string", "maxLength": 4096}}}},
        "limits": {"type": "object", "properties": {
            "max_pods": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "max_connections": {"type": "integer", "minimum": 1, "maximum": 10_000_000}}},
    },
}

_OPTIONAL_NUMBER = {"anyOf": [NUMBER, {"type": "null"}]}
_TIMED = {"type": "array", "items": {"type": "object", "properties": {
    "t": NUMBER, "time": _OPTIONAL_NUMBER}}}
RUN: dict[str, Any] = {
    "type": "object",
    "properties": {
        "schema": {"type": "string", "maxLength": 200},
        "run_id": NAME,
        "started": {"anyOf": [EPOCH, {"type": "null"}]},
        "stopped": {"anyOf": [EPOCH, {"type": "null"}]},
        "duration_s": {"type": "number", "minimum": 0, "maximum": 1e9},
        "entry": {"anyOf": [{"enum": list(ENTRY_STRATEGIES)}, {"type": "null"}]},
        "connection": {"anyOf": [{"enum": list(CONNECTION_MODES)}, {"type": "null"}]},
        "users": {"anyOf": [COUNT, {"type": "null"}]},
        "spawn_rate": _OPTIONAL_NUMBER,
        "stop_timeout_s": _OPTIONAL_NUMBER,
        "in_flight": {"type": ["string", "null"]},
        "load_model": {"type": ["string", "null"]},
        "faults": {"anyOf": [_TIMED, {"type": "null"}]},
        "changes": {"anyOf": [_TIMED, {"type": "null"}]},
        "workers": {"anyOf": [{"type": "object", "additionalProperties": {"type": "object"}},
                              {"type": "null"}]},
        "partial": {"type": ["string", "null"]},
        "command": {"type": ["string", "null"]},
        "cwd": {"type": ["string", "null"], "maxLength": 4096},
        "kubeconfig": {"type": ["string", "null"], "maxLength": 65536},
        "options": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
            **{name: _OPTIONAL_NUMBER for name in THRESHOLDS},
            "require_all_pods": {"type": ["boolean", "null"]},
            "timeout": {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
                                  {"type": "null"}]},
        }}]},
        "capacity": {"type": ["object", "null"]},
        "steps": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "object"}}]},
    },
}

_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}
_SERVICE_PORT = {"type": "object", "properties": {
    "name": {"type": ["string", "null"]}, "port": _PORT,
    "target_port": {"type": ["integer", "string", "null"]}, "node_port": _PORT}}
TARGET: dict[str, Any] = {
    "type": "object",
    "required": ["nodes", "service"],
    "properties": {
        "nodes": {"type": "array", "items": {"type": "object", "required": ["name"],
                                             "properties": {"name": NAME}}},
        "service": {"type": "object", "properties": {
            "name": NAME, "namespace": NAME, "port": _SERVICE_PORT,
            "ports": {"type": "array", "items": _SERVICE_PORT}}},
        "endpoints": {"type": "array", "items": {"type": "object", "properties": {
            "pod": NAME, "node": {"type": ["string", "null"]}}}},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

_Validator = extend(Draft202012Validator, {"histogram": _check_histogram})
_VALIDATORS = {name: _Validator(schema)
               for name, schema in (("spread", SPREAD), ("run", RUN), ("target", TARGET))}


# -- parsing ----------------------------------------------------------------------------------

class _Refused(ValueError):
    pass


def _no_constant(name: str) -> float:
    raise _Refused(f"holds {name}, which is not a number in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"holds the number {text[:40]}, too large for a float")
    return value


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity, out-of-range numbers and deep nesting
    (``_Refused`` or ``ValueError``, each with a short message)."""
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise _Refused(f"nests deeper than {MAX_DEPTH} levels") from None
    if _depth_over(data, MAX_DEPTH):
        raise _Refused(f"nests deeper than {MAX_DEPTH} levels")
    return data


def _depth_over(data: Any, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return True
        stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


# -- validation -------------------------------------------------------------------------------

def check_document(kind: str, data: Mapping[str, Any], where: str, hint: str) -> None:
    """Raise a one-line ReportError when ``data`` (``kind``: spread, run or target) does not
    fit its schema, or (spread) when its timeline leaves the bounds a report draws."""
    error = best_match(_VALIDATORS[kind].iter_errors(data))
    if error is not None:
        raise ReportError(f"{where}: {_describe(error)}: {hint}")
    if kind == "spread":
        problem = _timeline_problem(data)
        if problem:
            raise ReportError(f"{where}: {problem}: {hint}")


def _describe(error: Any) -> str:
    path = "/".join(_short(str(p), 60) for p in error.absolute_path) or "(top level)"
    rule, expected = error.validator, error.validator_value
    if rule == "type":
        said = f"should be {_kinds(expected)}, not {_json_kind(error.instance)}"
    elif rule in ("minimum", "maximum", "exclusiveMinimum"):
        said = f"{_short(repr(error.instance), 40)} is out of range ({rule} {expected})"
    elif rule == "anyOf" and all("type" in option for option in expected):
        kinds = [k for option in expected for k in (
            [option["type"]] if isinstance(option["type"], str) else option["type"])]
        said = f"should be {_kinds(kinds)}, not {_json_kind(error.instance)}"
        if any(_fits_type(error.instance, k) for k in kinds):  # the right type, out of range
            inner = best_match(error.context)
            said = _describe(inner).partition(" ")[2] if inner is not None else said
    elif rule == "maxLength":
        said = f"is longer than {expected} characters"
    elif rule in ("const", "enum"):
        said = f"{_short(repr(error.instance), 60)} is not one of {_short(repr(expected), 80)}"
    else:
        said = _short(error.message, 160)
    return printable(f"{path} {said}")


def _kinds(expected: Any) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join("a number" if n == "number" else f"an {n}" if n[0] in "aeiou"
                       else f"a {n}" for n in names)


def _fits_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    return {"integer": isinstance(value, int), "number": isinstance(value, int | float),
            "string": isinstance(value, str), "null": value is None,
            "object": isinstance(value, dict), "array": isinstance(value, list)}.get(kind, False)


def _json_kind(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _timeline_problem(spread: Mapping[str, Any]) -> str | None:
    """The per-second series must lie within the run's own start..end, which spans at most
    MAX_SERIES_SPAN_S: a report draws every second of it."""
    start, end = spread.get("start"), spread.get("end")
    seconds = [row["t"] for rows in spread["series"].values() for row in rows]
    if start is None or end is None:
        return "series has points but start/end are null" if seconds else None
    if end < start:
        return f"end ({end}) is before start ({start})"
    if end - start > MAX_SERIES_SPAN_S:
        return (f"the run spans {end - start:.0f} s, more than the {MAX_SERIES_SPAN_S} s "
                "a report draws")
    low, high = math.floor(start) - 1, math.ceil(end) + 1
    outside = next((t for t in seconds if not low <= t <= high), None)
    if outside is not None:
        return f"series point t={outside} lies outside the run ({start:.0f} to {end:.0f})"
    return None
