"""The terminal summary at the end of a run: requests per entry node x pod, with shares."""

from __future__ import annotations

from harness.core.model import Target
from harness.core.text import number, pct, printable


def node_pod_table(spread: dict, target: Target | None = None) -> str:
    entries = spread.get("entry_nodes") or {}
    pods: list[str] = []
    if target is not None:
        pods = [e.pod for e in target.endpoints]
    for entry in entries.values():
        for pod in entry.get("pods") or {}:
            if pod not in pods:
                pods.append(pod)
    pod_node = {e.pod: e.node for e in target.endpoints} if target else {}
    total = sum(e.get("requests", 0) for e in entries.values()) or 1
    header = ["entry \\ pod"] + [_short(p) for p in pods] + ["failed", "share"]
    rows = [header]
    for name, entry in sorted(entries.items()):
        counts = entry.get("pods") or {}
        share = pct(entry.get("requests", 0) / total)
        rows.append([printable(name)] + [number(counts.get(p, 0)) for p in pods]
                    + [number(entry.get("failures", 0)), share])
    served = {p: sum((e.get("pods") or {}).get(p, 0) for e in entries.values()) for p in pods}
    all_ok = sum(served.values()) or 1
    rows.append(["pod share"] + [pct(served[p] / all_ok) for p in pods] + ["", ""])
    if pod_node:
        rows.append(["pod's node"] + [printable(pod_node.get(p) or "?") for p in pods] + ["", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))) for r in rows)


def _short(pod: str) -> str:
    # helloworld-5f7c9d8b6-x2x7q -> x2x7q: columns stay readable; full names are in reports.
    pod = printable(pod)  # a name from a reply must not drive the terminal (ESC [ ...)
    parts = pod.rsplit("-", 1)
    return parts[-1] if len(parts) == 2 and len(pod) > 16 else pod
