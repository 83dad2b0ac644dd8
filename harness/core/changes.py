"""Cluster changes seen during a run: two snapshots of the cluster -> change records.

On a real cluster nobody announces a fault: the master polls the Service's EndpointSlices
and the Nodes about once a second (``harness.discovery.ClusterWatch``) and this module
says what changed between two polls. Each change becomes a timeline marker (``marker``)
and an entry of run.json's ``changes``::

    {"t": 12.3, "time": 1700000012.3, "kind": "endpoint", "name": "web-abc12",
     "change": "left", "node": "node-2", "text": "pod web-abc12 left the endpoints (not
     ready) at 12.3 s"}

``kind`` is ``endpoint`` (``name``: the pod; ``node``: where it runs, when known) or
``node``; ``change`` is one of ``CHANGES``. A snapshot part that could not be read (None)
changes nothing: what was last known stands. No marker label here reads as a fault
(``harness.core.faults.parse_marker``): a change is what the cluster reports, not what
was done to it. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.model import Endpoint, Node
from harness.core.text import secs

KINDS = ("endpoint", "node")
# left: a ready endpoint became not ready; joined: an endpoint became ready (or appeared
# ready); added: appeared not ready (a node: appeared); removed: gone from the list;
# not_ready / ready: a node's Ready condition.
CHANGES = ("left", "joined", "not_ready", "ready", "added", "removed")


@dataclass(frozen=True)
class Snapshot:
    """What one poll saw. ``nodes``: node -> Ready; ``endpoints``: pod -> (ready, node).
    None: that part was not read (forbidden, unreachable, not polled)."""

    nodes: Mapping[str, bool] | None = None
    endpoints: Mapping[str, tuple[bool, str | None]] | None = None


def snapshot(nodes: Iterable[Node] | None = None,
             endpoints: Iterable[Endpoint] | None = None) -> Snapshot:
    """A snapshot from discovered nodes and endpoints (either may be None: not read)."""
    return Snapshot(
        nodes=None if nodes is None else {n.name: bool(n.ready) for n in nodes},
        endpoints=None if endpoints is None else {
            e.pod: (bool(e.ready), e.node) for e in endpoints},
    )


def merged(before: Snapshot | None, after: Snapshot) -> Snapshot:
    """The latest knowledge: ``after``'s parts, ``before``'s where ``after`` read nothing."""
    if before is None:
        return after
    return Snapshot(
        nodes=after.nodes if after.nodes is not None else before.nodes,
        endpoints=after.endpoints if after.endpoints is not None else before.endpoints,
    )


@dataclass(frozen=True)
class Change:
    kind: str  # one of KINDS
    name: str  # the pod (endpoint) or the node
    change: str  # one of CHANGES
    node: str | None = None  # an endpoint's node, when known

    @property
    def marker(self) -> str:
        """The timeline marker's label ("pod web-1 left the endpoints (not ready)")."""
        if self.kind == "node":
            return {
                "not_ready": f"{self.name} NotReady",
                "ready": f"{self.name} Ready again",
                "added": f"node {self.name} added",
                "removed": f"node {self.name} removed",
            }.get(self.change, f"node {self.name} {self.change}")
        on = f" on {self.node}" if self.node else ""
        return {
            "left": f"pod {self.name} left the endpoints (not ready)",
            "joined": f"pod {self.name} joined the endpoints{on}",
            "added": f"pod {self.name} added to the endpoints{on} (not ready)",
            "removed": f"pod {self.name} removed from the endpoints",
        }.get(self.change, f"pod {self.name} {self.change}")

    def text(self, t: float) -> str:
        """The marker with its moment: "... at 12.3 s" (seconds from the run's start)."""
        return f"{self.marker} at {secs(round(t, 1))}"

    def to_dict(self, t: float, time: float) -> dict[str, Any]:
        """run.json's form: ``t`` seconds from the run's start, ``time`` epoch seconds."""
        out: dict[str, Any] = {"t": round(t, 3), "time": time, "kind": self.kind,
                               "name": self.name, "change": self.change}
        if self.kind == "endpoint" and self.node:
            out["node"] = self.node
        out["text"] = self.text(t)
        return out


def diff(before: Snapshot | None, after: Snapshot) -> list[Change]:
    """What changed from ``before`` to ``after``: nodes first, then endpoints, each sorted
    by name. No ``before`` (the first poll) or a part unread on either side: no change."""
    if before is None:
        return []
    out: list[Change] = []
    if before.nodes is not None and after.nodes is not None:
        out += _node_changes(before.nodes, after.nodes)
    if before.endpoints is not None and after.endpoints is not None:
        out += _endpoint_changes(before.endpoints, after.endpoints)
    return out


def _node_changes(before: Mapping[str, bool], after: Mapping[str, bool]) -> list[Change]:
    out = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            out.append(Change("node", name, "removed"))
        elif name not in before:
            out.append(Change("node", name, "added"))
        elif before[name] and not after[name]:
            out.append(Change("node", name, "not_ready"))
        elif not before[name] and after[name]:
            out.append(Change("node", name, "ready"))
    return out


def _endpoint_changes(before: Mapping[str, tuple[bool, str | None]],
                      after: Mapping[str, tuple[bool, str | None]]) -> list[Change]:
    out = []
    for pod in sorted(set(before) | set(after)):
        if pod not in after:
            out.append(Change("endpoint", pod, "removed", before[pod][1]))
            continue
        ready, node = after[pod]
        if pod not in before:
            out.append(Change("endpoint", pod, "joined" if ready else "added", node))
        elif before[pod][0] and not ready:
            out.append(Change("endpoint", pod, "left", node))
        elif not before[pod][0] and ready:
            out.append(Change("endpoint", pod, "joined", node))
    return out


def pod_nodes(snap: Snapshot) -> dict[str, str | None]:
    """Pod -> node from a snapshot's endpoints (for the recorder's cross-node accounting)."""
    return {pod: node for pod, (_ready, node) in (snap.endpoints or {}).items()}
