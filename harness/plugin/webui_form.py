"""The start form of Locust's web UI: readable labels in a useful order, the target shown
read-only, and every POST /swarm checked as the command line is before any user starts.

Locust makes a field's label of the option's name and raw help ("Max P9 5Ms (threshold: p95
latency, ms)"), sorts the fields by name and posts each back under its name snake-cased
again ("max_p9_5ms": that threshold never reached the run). Here each field is keyed by its
label (``options.WEB_FORM_LABELS``), written so that Locust shows and posts it unchanged, in
the order of that table; the check maps labels back to options.

The target is discovered once, when Locust starts: its options (kubeconfig, namespace,
service, lab, inventory...) and where the files go are shown with their values as fields
that offer that value only, and a form that posts another value, a Host that is not the
one Entry sends requests to, or an option by its name that the form does not offer is
refused with one message (Locust's own JSON error shape), as is any value the command line
would refuse: the run never starts to fail once per user.

Importing this module imports neither Locust nor Flask.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from harness.core.entry import entry_plan
from harness.core.model import Target
from harness.errors import HarnessError
from harness.options import WEB_FORM_LABELS, option_types, retype

# What Locust's own form posts to /swarm (snake-cased); everything else is ours to map.
LOCUST_FORM = frozenset(("user_count", "spawn_rate", "host", "user_classes", "run_time",
                         "profile", "shape_class"))
FIXED = "set at start-up"
WORD_JOINER = "\u2060"  # zero width: keeps Locust from splitting "p95" into "p 9 5"
# Where the files go: fixed at start-up like the target (run.fixed restores them).
FILE_OPTIONS = {"report_dir": "Report folder", "raw": "Raw file (every request)",
                "lab_fault": "Lab faults"}
MAX_SHOWN = 200  # a read-only value longer than this is cut (a long inventory path)


def ui_label(text: str) -> str:
    """``text`` as a field key Locust's UI shows and posts back unchanged.

    The UI derives a label from a key by putting a space inside every lower-case letter or
    digit followed by a capital or digit, and posts a key back snake-cased unless it starts
    with a capital (and it camel-cases "_x" when it reads the page): a capital first, a
    word joiner inside those pairs and after "_" keep the text as it is.
    """
    text = " ".join(str(text).split()) or "?"
    text = text[0].upper() + text[1:]
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z0-9])", WORD_JOINER, text)
    return text.replace("_", "_" + WORD_JOINER)


def flag_label(dest: str) -> str:
    """A label for an option without one in WEB_FORM_LABELS: its flag in words."""
    return dest.strip("_").replace("_", " ").capitalize()


@dataclass(frozen=True)
class Field:
    """One form field: an option the form sets (``dest``) or a value shown read-only."""

    label: str  # as shown and posted (ui_label)
    dest: str | None = None
    value: str | None = None  # read-only: the only value the form may post
    name: str = ""  # read-only: what it is, in a message
    how: str = ""  # read-only: how to change it ("with another --inventory")


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _target_summary(target: Target | None) -> str | None:
    if target is None:
        return None
    service = target.service
    nodes = len(target.targeted_nodes)
    pods = len(target.endpoints)
    return (f"{service.namespace}/{service.name}, nodePort {service.node_port}: "
            f"{nodes} node{'s' * (nodes != 1)}, {pods} pod{'s' * (pods != 1)} "
            f"(from {target.source})")


def _target_actions() -> list[argparse.Action]:
    from harness.targets import add_target_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_target_arguments(parser)
    return [a for a in parser._actions if a.dest != "help"]


def readonly_fields(options: Any, target: Target | None) -> list[Field]:
    """What is fixed at start-up, with its value: the target, each target option given, and
    where the files go."""
    fields = []
    summary = _target_summary(target)
    if summary:
        fields.append(Field(ui_label(f"Target ({FIXED})"), value=summary, name="The target",
                            how="with other target options"))
    for action in _target_actions():
        value = getattr(options, action.dest, None)
        if value in (None, False, "", []) or value == action.default:
            continue
        flag = action.option_strings[-1]
        name = flag_label(flag.lstrip("-").replace("-", "_"))
        fields.append(Field(ui_label(f"{name} ({FIXED})"), value=_shown(value), name=name,
                            how=f"with another {flag}"))
    for dest, name in FILE_OPTIONS.items():
        value = getattr(options, dest, None)
        if value in (None, "", []):
            continue
        fields.append(Field(ui_label(f"{name} ({FIXED})"), value=_shown(value), name=name,
                            how=f"with another --{dest.replace('_', '-')}"))
    return fields


def form_fields(ui_dests: Iterable[str], options: Any, target: Target | None) -> list[Field]:
    """The form's fields in order: the options the form sets (WEB_FORM_LABELS' order, then
    any other plugin's), then the read-only ones."""
    dests = list(ui_dests)
    ordered = [d for d in WEB_FORM_LABELS if d in dests] + [
        d for d in dests if d not in WEB_FORM_LABELS]
    fields = [Field(ui_label(WEB_FORM_LABELS.get(d) or flag_label(d)), dest=d) for d in ordered]
    return fields + readonly_fields(options, target)


def extra_options(fields: Iterable[Field], actions: Mapping[str, Any], options: Any
                  ) -> dict[str, dict[str, Any]]:
    """Locust's template_args["extra_options"] for these fields (label -> field), with each
    option's value as it is now (what the last form set, else the command line's)."""
    out: dict[str, dict[str, Any]] = {}
    for field in fields:
        if field.dest is None:
            out[field.label] = {"default_value": field.value, "choices": [field.value],
                                "is_secret": False, "is_required": False,
                                "is_multiple": False, "help_text": None}
            continue
        action = actions.get(field.dest)
        value = getattr(options, field.dest, None)
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # "5", not "5.0"
        choices = getattr(action, "choices", None)
        out[field.label] = {
            "default_value": value,
            "choices": list(choices) if choices else None,
            "is_secret": bool(getattr(action, "is_secret", False)),
            "is_required": bool(getattr(action, "is_required", False)),
            "is_multiple": bool(getattr(action, "is_multiple", False)),
            "help_text": None,  # the label says it
        }
    return out


def entry_host(target: Target, entry: str) -> str | None:
    """The Host Locust shows: where requests go first for this --entry (as at start-up)."""
    if entry == "lb" and target.lb_url():
        return target.lb_url()
    nodes = target.targeted_nodes
    return target.node_url(nodes[0]) if nodes else None


@dataclass
class FormCheck:
    """What a POST /swarm may do: ``error`` (the one line to answer), else the options to
    set (dest -> typed value) and the form Locust still reads (its own fields)."""

    error: str | None = None
    values: dict[str, Any] | None = None
    form: list[tuple[str, str]] | None = None


def check_form(
    form: Iterable[tuple[str, str]],
    *,
    fields: Iterable[Field],
    actions: Mapping[str, Any],
    options: Any,
    target: Target | None,
    host: str | None,
    processes: int,
) -> FormCheck:
    """Check a posted form (its (key, value) pairs) as the command line's options are."""
    from harness.plugin.context import check_run_options

    form = list(form)
    by_label = {f.label: f for f in fields}
    current = vars(options) if options is not None else {}
    locust_form: list[tuple[str, str]] = []
    posted: dict[str, str] = {}
    for key, value in form:
        field = by_label.get(key)
        if field is not None and field.dest is None:
            if value != field.value:
                return FormCheck(error=(
                    f"{field.name} cannot be changed from the web UI: it is fixed when Locust "
                    f"starts ({field.value}); restart Locust {field.how}"))
            continue
        dest = field.dest if field is not None else key
        if dest in actions:
            posted[dest] = value
        elif dest in LOCUST_FORM:
            locust_form.append((key, value))  # Locust's own fields
        elif dest in current:
            return FormCheck(error=(
                f"--{dest.replace('_', '-')} cannot be set from the web UI: it is fixed when "
                "Locust starts (give it on the command line)"))
        else:  # Locust would ignore it, and the run would go without it
            shown = key if len(key) <= 60 else key[:59] + "…"
            return FormCheck(error=f"the form has no field {shown!r}: nothing was started")
    checked = SimpleNamespace(**current)
    given = dict(locust_form)
    try:
        if given.get("user_count"):
            checked.num_users = int(given["user_count"])
        if given.get("spawn_rate"):
            checked.spawn_rate = float(given["spawn_rate"])
    except ValueError:
        return FormCheck(values={}, form=list(form))  # Locust answers that one itself
    types = option_types()
    try:
        retype(checked, {d: v for d, v in posted.items() if d in types})
        for dest, text in posted.items():
            action = actions[dest]
            if dest in types:
                continue
            if isinstance(current.get(dest), bool) or action.nargs == 0:
                setattr(checked, dest, text == "true")
            else:
                setattr(checked, dest, text)
            choices = getattr(action, "choices", None)
            if choices and text not in choices:
                raise HarnessError(f"--{dest.replace('_', '-')} {text!r}: choose one of "
                                   f"{', '.join(map(str, choices))}")
        check_run_options(checked, max(1, processes))
        expected = _check_target(checked, target)
    except HarnessError as err:
        return FormCheck(error=str(err))
    new_host = (given.get("host") or "").strip().rstrip("/")
    if new_host and expected and new_host not in {expected.rstrip("/"),
                                                  (host or "").rstrip("/")}:
        return FormCheck(error=(
            f"Host cannot be changed from the web UI: requests go where Entry says "
            f"({expected} for --entry {checked.entry}); choose Entry instead, or restart "
            "Locust with another target"))
    if expected:
        locust_form = [(k, expected if k == "host" else v) for k, v in locust_form]
    return FormCheck(values={d: getattr(checked, d) for d in posted}, form=locust_form)


def _check_target(options: Any, target: Target | None) -> str | None:
    """--entry and --node against the target (as at start-up); the Host for that entry."""
    if target is None:
        return None
    node = getattr(options, "node", "") or ""
    if node and node not in {n.name for n in target.nodes}:
        shown = ", ".join(n.name for n in target.targeted_nodes[:10])
        raise HarnessError(f"--node {node}: the target has no such node (nodes: {shown})")
    entry_plan(target, options.entry, 0, node or None)
    return entry_host(target, options.entry)
