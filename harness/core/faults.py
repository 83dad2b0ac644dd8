"""The fault vocabulary, once: what can fail, and how a fault is written everywhere it appears.

A fault is a kind (``node`` or ``pod``), a name and an action: a node goes ``down`` and
comes back ``up``; a pod is killed, or restarted (killed and replaced, as its Deployment's
ReplicaSet does, by a pod with a new name that joins the endpoints once ready). It is
written as ``AT:node:NAME:down`` on the command line (``--lab-fault``), as ``{"kind", "name",
"action"}`` in the lab's control API and in run.json's ``faults`` (with ``t``, seconds from
the run's start), as ``NAME ACTION`` in a timeline marker and as a verb ("went down") in
findings. Pure: the lab, the Locust plugin and the analysis all read these definitions.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

KINDS = ("node", "pod")
ACTIONS: dict[str, tuple[str, ...]] = {"node": ("down", "up"), "pod": ("kill", "restart")}
UNDO_ACTIONS = ("up",)  # actions that end an earlier fault on the same name
# How a fault reads in a sentence; markers written by other tools may say "killed"/"delete".
VERBS = {"down": "went down", "up": "came back", "kill": "was killed", "killed": "was killed",
         "delete": "was deleted", "restart": "was restarted", "restarted": "was restarted"}
SPEC_FORMAT = ("AT:node:NAME:down|up or AT:pod:NAME:kill|restart (AT: seconds after the "
               "start)")
# As a command's words (`lab fault node NODE down`): ("node NODE down|up",
# "pod POD kill|restart").
USAGE = tuple(f"{kind} {kind.upper()} {'|'.join(ACTIONS[kind])}" for kind in KINDS)
# As the lab control API's JSON body, for its "malformed fault" answer.
BODY_FORMAT = ('{"kind": ' + "|".join(f'"{k}"' for k in KINDS) + ', "name": "...", "action": '
               + "|".join(f'"{a}"' for a in dict.fromkeys(a for k in KINDS for a in ACTIONS[k]))
               + "}")
_MARKER = re.compile(r"^(?:(node|pod)[\s:/]+)?(\S+)\s+"
                     r"(down|up|kill|killed|delete|restart|restarted)$", re.I)


@dataclass(frozen=True)
class Fault:
    kind: str
    name: str
    action: str
    at: float | None = None  # seconds after the run's start (scheduled or observed)

    @property
    def marker(self) -> str:
        """The label a timeline marker carries (and `parse_marker` reads back)."""
        return f"{self.name} {self.action}"

    @property
    def undoes(self) -> bool:
        return self.action in UNDO_ACTIONS

    def to_dict(self) -> dict[str, Any]:
        """run.json's form (and, without ``t``, the lab control API's body)."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "action": self.action}
        if self.at is not None:
            out = {"t": self.at, **out}
        return out


def check_fault(kind: str, name: str, action: str, at: float | None = None) -> Fault:
    """A valid fault, or HarnessError in one line naming what is wrong."""
    if kind not in ACTIONS:
        raise HarnessError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if action not in ACTIONS[kind]:
        raise HarnessError(f"{kind} fault action must be {' or '.join(ACTIONS[kind])}, "
                           f"not {action!r}")
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise HarnessError(f"fault: {name!r} is not a {kind} name")
    return Fault(kind, name, action, at)


def parse_spec(spec: str) -> Fault:
    """``AT:node:NAME:down`` (AT in seconds, ``12`` or ``12s``) -> Fault."""
    parts = str(spec).split(":")
    at = math.nan
    if len(parts) == 4:
        with contextlib.suppress(ValueError):
            at = float(parts[0].strip().removesuffix("s"))
    if len(parts) != 4 or not math.isfinite(at) or at < 0:
        raise HarnessError(f"--lab-fault {spec!r}: expected {SPEC_FORMAT}")
    try:
        return check_fault(parts[1], parts[2], parts[3], at)
    except HarnessError as err:
        raise HarnessError(f"--lab-fault {spec!r}: {err}") from None


def parse_specs(specs: list[str] | None) -> list[Fault]:
    return [parse_spec(spec) for spec in specs or ()]


def parse_marker(label: str, t: float, node_names: set[str]) -> Fault | None:
    """A marker such as ``node-2 down`` or ``pod: web-1 killed`` read as a fault, else None.
    Without a kind, a name among the nodes (or any name when no node is known) is a node."""
    match = _MARKER.match(str(label).strip())
    if not match:
        return None
    kind, name, action = match.groups()
    if name.rstrip(":/") in KINDS:  # "pod: down": a kind with no name
        return None
    kind = kind or ("node" if name in node_names or not node_names else "pod")
    return Fault(kind.lower(), name, action.lower(), t)


def verb(action: str) -> str | None:
    """How a fault's action reads in a sentence ("went down"); None for an undo or unknown."""
    return None if action in UNDO_ACTIONS else VERBS.get(action)
