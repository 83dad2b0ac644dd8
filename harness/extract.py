"""Which pod served a reply: `--pod-from auto|json:FIELD|header:NAME|body|regex:PATTERN`.

`make_extractor(spec)` validates the spec once and returns a function of
(headers, body bytes) -> pod name or None. It never raises on a reply: a reply it can't
read gives None, which the recorder counts as pod "unknown". Pure: no Locust import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from harness.errors import HarnessError

Extractor = Callable[[Mapping[str, str] | None, bytes | None], str | None]

AUTO_HEADERS = ("X-Served-By", "X-Pod-Name")
AUTO_FIELDS = ("host", "hostname", "pod")
MAX_POD_NAME = 253  # a DNS subdomain: longer is not a pod name
# A reply is parsed on every request: a misconfigured target answering megabytes must not
# turn the load generator into a JSON parser. Text is scanned in its first 64 KiB; a JSON
# body over 1 MiB is not parsed (its pod is "unknown": use --pod-from header:NAME).
MAX_SCAN = 64 * 1024
MAX_JSON = 1024 * 1024


def make_extractor(spec: str) -> Extractor:
    spec = (spec or "auto").strip()
    kind, _, arg = spec.partition(":")
    if kind == "auto":
        return _auto
    if kind == "header" and arg:
        return lambda headers, body: _clean(_header(headers, arg))
    if kind == "json" and arg:
        path = arg.split(".")
        return lambda headers, body: _clean(_json_field(body, path))
    if kind == "body":
        return lambda headers, body: _clean(_text(body))
    if kind == "regex" and arg:
        try:
            pattern = re.compile(arg)
        except re.error as err:
            raise HarnessError(f"--pod-from regex:{arg} is not a valid regular expression: {err}") \
                from None
        return lambda headers, body: _regex(pattern, body)
    raise HarnessError(
        f"--pod-from {spec!r} is not understood; use auto, json:FIELD, header:NAME, body "
        "or regex:PATTERN"
    )


def _auto(headers, body):
    for name in AUTO_HEADERS:
        value = _header(headers, name)
        if value:
            return _clean(value)
    data = _json(body)
    if isinstance(data, dict):
        for name in AUTO_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and value:
                return _clean(value)
    return None


def _header(headers, name: str) -> str | None:
    # Hot path (every request): `is None`, not `not headers`. geventhttpclient's Headers
    # computes len() in Python over every stored value, ~0.5 µs a request; an empty or odd
    # container gives None below anyway (get finds nothing, or raises and is caught).
    if headers is None:
        return None
    try:
        value = headers.get(name)
        if value is None:
            value = headers.get(name.lower())
    except Exception:  # an odd header container must not break a run
        return None
    if isinstance(value, str):  # the common case: skip the list/tuple check
        return value
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _json(body):
    if not body or len(body) > MAX_JSON:
        return None
    try:
        return json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None


def _json_field(body, path: list[str]):
    data = _json(body)
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data if isinstance(data, str | int) and not isinstance(data, bool) else None


def _text(body) -> str | None:
    if not body:
        return None
    body = body[:MAX_SCAN]
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else str(body)
    except UnicodeDecodeError:
        return None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else None


def _regex(pattern: re.Pattern, body) -> str | None:
    if not body:
        return None
    body = body[:MAX_SCAN]
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
    match = pattern.search(text)
    if not match:
        return None
    return _clean(match.group(1) if match.groups() else match.group(0))


def _clean(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    if not value or len(value) > MAX_POD_NAME:
        return None
    return value
