"""Label and field selectors, parsed and matched the way the API server does."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from harness.lab.state import ApiError

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
Requirement = tuple[str, str, tuple[str, ...]]


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        m = re.fullmatch(rf"(!?)\s*({_KEY})", part)
        if m:
            reqs.append((m[2], "!" if m[1] else "exists", ()))
            continue
        m = re.fullmatch(rf"({_KEY})\s*(==|!=|=)\s*({_VALUE})", part)
        if m:
            reqs.append((m[1], "!=" if m[2] == "!=" else "=", (m[3],)))
            continue
        m = re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^()]*)\)", part)
        if m:
            values = tuple(v.strip() for v in m[3].split(",") if v.strip())
            if not values or not all(re.fullmatch(_VALUE, v) for v in values):
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
            reqs.append((m[1], m[2], values))
            continue
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("=", "in") and (not present or value not in values):
            return False
        if op in ("!=", "notin") and present and value in values:
            return False
    return True


def parse_field_selector(text: str, allowed: Iterable[str]) -> list[tuple[str, bool, str]]:
    """`a=b,c!=d` -> [(field, equal?, value)]; fields outside `allowed` are a 400 as upstream."""
    allowed = set(allowed)
    out = []
    for part in _split_top(text or ""):
        m = re.fullmatch(r"([A-Za-z.]+)\s*(==|!=|=)\s*(.*)", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: can't understand '{part}'")
        if m[1] not in allowed:
            raise ApiError(400, "BadRequest", f'field label not supported: {m[1]}')
        out.append((m[1], m[2] != "!=", m[3]))
    return out


# Fields a real server compares as their Go zero value when the JSON omits them.
_FIELD_ZERO = {"spec.unschedulable": "false"}


def _dig(obj: Any, dotted: str) -> str:
    for key in dotted.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    if obj is None:
        return _FIELD_ZERO.get(dotted, "")
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def fields_match(reqs: list[tuple[str, bool, str]], obj: dict, aliases: dict[str, str]) -> bool:
    return all((_dig(obj, aliases.get(f, f)) == v) == eq for f, eq, v in reqs)
