"""Which pod served a reply: `--pod-from auto|json:FIELD|header:NAME|body|regex:PATTERN`.

`make_extractor(spec)` validates the spec once and returns a function of a reply (anything
with ``headers`` and ``content``, e.g. Locust's FastResponse) -> pod name or None. It reads
the body only when the spec needs it, and never raises on a reply: a reply it can't read
gives None, which the recorder counts as pod "unknown". Pure: no Locust import.

``regex:PATTERN`` runs on the `regex` module (re-compatible syntax) over a reply's first
4 KiB with a time budget per match (``REGEX_BUDGET_S``): Python's ``re`` backtracks without
bound and cannot be interrupted (``([a-z0-9]+-?)+Z`` took 104 s for two replies, and a
SIGTERM waited for it). A match over budget gives None and one warning line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import regex

from harness.errors import HarnessError

Extractor = Callable[[Any], str | None]

AUTO_HEADERS = ("X-Served-By", "X-Pod-Name")
AUTO_FIELDS = ("host", "hostname", "pod")
MAX_POD_NAME = 253  # a DNS subdomain: longer is not a pod name
# A reply is parsed on every request: a misconfigured target answering megabytes must not
# turn the load generator into a JSON parser. Text is scanned in its first 64 KiB; a JSON
# body over 1 MiB is not parsed (its pod is "unknown": use --pod-from header:NAME).
MAX_SCAN = 64 * 1024
MAX_JSON = 1024 * 1024
REGEX_SCAN = 4 * 1024  # regex:PATTERN looks at a reply's first 4 KiB only
REGEX_BUDGET_S = 0.02  # and gives up on a match after 20 ms
log = logging.getLogger("harness.extract")


def make_extractor(spec: str) -> Extractor:
    """The extractor for ``spec``. Its ``header`` attribute names (lower-cased) the header
    that names the pod when the spec starts with one: a caller may read it straight from
    geventhttpclient's Headers and fall back to the extractor when it is missing (what
    NodePortUser does; the recorder trims names, so the value can go there as it is)."""
    spec = (spec or "auto").strip()
    kind, _, arg = spec.partition(":")
    if kind == "auto":
        return _auto
    if kind == "header" and arg:
        return _with_header(lambda reply: clean_pod_name(_header(reply.headers, arg)), arg.lower())
    if kind == "json" and arg:
        path = arg.split(".")
        return _with_header(lambda reply: clean_pod_name(_json_field(reply.content, path)), None)
    if kind == "body":
        return _with_header(lambda reply: clean_pod_name(_text(reply.content)), None)
    if kind == "regex" and arg:
        try:
            pattern = regex.compile(arg)
        except (regex.error, ValueError, TypeError) as err:
            raise HarnessError(f"--pod-from regex:{arg} is not a valid regular expression: {err}") \
                from None
        return _with_header(_RegexExtractor(pattern, arg), None)
    raise HarnessError(
        f"--pod-from {spec!r} is not understood; use auto, json:FIELD, header:NAME, body "
        "or regex:PATTERN"
    )


def _with_header(extractor, header: str | None):
    extractor.header = header
    return extractor


# geventhttpclient's Headers (what Locust's FastHttpUser replies carry) is a dict keyed by the
# lower-cased name, holding a (name, value) tuple or a list of them. Its get() is three Python
# calls per lookup: _header reads the dict directly.
_INDEXED: set[type] = set()
_NOT_INDEXED: set[type] = {type(None), dict}
_dict_get = dict.get


def _auto(reply):
    headers = reply.headers
    for name in AUTO_HEADERS:
        value = _header(headers, name)
        if value:
            return clean_pod_name(value)
    data = _json(reply.content)
    if isinstance(data, dict):
        for name in AUTO_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and value:
                return clean_pod_name(value)
    return None


_auto.header = AUTO_HEADERS[0].lower()  # type: ignore[attr-defined]


def _is_indexed(headers) -> bool:
    kind = type(headers)
    if kind in _NOT_INDEXED:
        return False
    indexed = isinstance(headers, dict) and (kind.__module__, kind.__name__) == (
        "geventhttpclient.header", "Headers")
    (_INDEXED if indexed else _NOT_INDEXED).add(kind)
    return indexed


def _first(stored) -> str | None:
    """The first value of a header stored more than once: [(name, value), ...]."""
    if isinstance(stored, list) and stored and isinstance(stored[0], tuple):
        return stored[0][1]
    return None


def _header(headers, name: str) -> str | None:
    # `is None`, not `not headers`: geventhttpclient's Headers computes len() in Python over
    # every stored value; an empty or odd container gives None below anyway.
    if headers is None:
        return None
    if type(headers) in _INDEXED or _is_indexed(headers):
        value = _dict_get(headers, name.lower())
        value = value[1] if type(value) is tuple else _first(value)
        return value if isinstance(value, str) else None
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


class _RegexExtractor:
    """regex:PATTERN over a reply's first REGEX_SCAN bytes, each match within REGEX_BUDGET_S;
    ``too_slow`` counts the replies whose match ran out of time (their pod is unknown)."""

    def __init__(self, pattern, spec: str):
        self.pattern, self.spec, self.too_slow = pattern, spec, 0

    def __call__(self, reply) -> str | None:
        body = reply.content
        if not body:
            return None
        body = body[:REGEX_SCAN]
        text = (body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray)
                else str(body))
        try:
            match = self.pattern.search(text, timeout=REGEX_BUDGET_S)
        except TimeoutError:
            self.too_slow += 1
            if self.too_slow == 1:
                log.warning("--pod-from regex:%s is too slow: a match ran over %g ms on a "
                            "reply's first %d KiB and was stopped; such replies count as pod "
                            "unknown (simplify the pattern)", self.spec[:200],
                            REGEX_BUDGET_S * 1000, REGEX_SCAN // 1024)
            return None
        if not match:
            return None
        return clean_pod_name(match.group(1) if match.groups() else match.group(0))


def clean_pod_name(value) -> str | None:
    """A pod name trimmed; None when blank or longer than a DNS name."""
    if value is None:
        return None
    value = str(value).strip()
    if not value or len(value) > MAX_POD_NAME:
        return None
    return value
