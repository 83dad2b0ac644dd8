"""What a run prints on the terminal: the end-of-run view and the ``--progress`` line.

The end-of-run view, in this order: requests per entry node x pod (pods as short names, the
columns that fit the width; more pods: the busiest and an "others" column; a legend gives
each short name's full pod name and node), the top findings with their severity, the
thresholds as ``✓`` / ``✗`` lines (as k6's end-of-test summary) and one ``report:`` line.
Built with rich: colour on a terminal, plain text in a pipe or a file. The width is
``COLUMNS``, else the terminal's, else 80.

Every name from the cluster or a reply goes through `printable` and into a rich ``Text``
(never markup): a pod named ``\\x1b[31m...`` or ``[bold]...`` shows as written.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.core.model import Target
from harness.core.text import ms, number, pct, printable, rate

DEFAULT_WIDTH = 80
MATRIX_ROWS = 20  # entry nodes shown; the others are summed in one row
ENTRY_WIDTH = 24  # longest entry-node name shown whole in the matrix
FINDINGS_SHOWN = 5
SHORT_MAX = 12  # longest short pod name
SEVERITY_STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "cyan",
                  "ok": "green"}
# A threshold's comparison, and the one a breach reads as (ASCII, as k6 writes them).
_HELD = {"≤": "<=", "≥": ">=", "=": "=="}
_BROKEN = {"≤": ">", "≥": "<", "=": "!="}
_GAP = 2  # between two columns (rich: one cell of padding on each side)


def terminal_width(stream: TextIO | None = None) -> int:
    """``COLUMNS`` when set, else the width of the terminal `stream` is, else 80."""
    text = os.environ.get("COLUMNS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        if stream is not None and stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_WIDTH


def console(stream: TextIO, width: int | None = None) -> Console:
    """A rich console on `stream`: colour only when it is a terminal (and NO_COLOR is not
    set), no markup, no highlighting of numbers, never wider than `width`."""
    return Console(file=stream, width=width or terminal_width(stream), markup=False,
                   highlight=False, emoji=False, soft_wrap=False)


# -- the node x pod matrix ------------------------------------------------------------------

def short_names(pods: Sequence[str]) -> dict[str, str]:
    """pod -> a short, distinct name: helloworld-5f7c9d8b6-x2x7q -> x2x7q (the part after
    the last '-' of a long name), at most SHORT_MAX characters."""
    def cut(text: str) -> str:
        return text if cell_len(text) <= SHORT_MAX else text[:SHORT_MAX - 1] + "…"

    out: dict[str, str] = {}
    taken: set[str] = set()
    for pod in pods:
        name = printable(pod)
        parts = name.rsplit("-", 2)
        candidates = [name] if len(name) <= 16 or len(parts) < 2 else [
            parts[-1], "-".join(parts[-2:])]
        short = next((cut(c) for c in candidates if cut(c) not in taken), None)
        number_ = 2
        while short is None or short in taken:
            short = f"{cut(candidates[0])[:SHORT_MAX - 3]}~{number_}"
            number_ += 1
        out[pod] = short
        taken.add(short)
    return out


def node_pod_view(spread: Mapping[str, Any], target: Target | None = None,
                  width: int = DEFAULT_WIDTH) -> RenderableType:
    """The matrix (successes per entry node and pod, failures and share per entry node) and
    its legend, fitted to `width`."""
    entries: Mapping[str, Any] = spread.get("entry_nodes") or {}
    if not entries:
        return Text("No request was recorded.")
    # The target's pods (in its order: by node), then any other pod that answered.
    order = dict.fromkeys(e.pod for e in target.endpoints) if target is not None else {}
    for entry in entries.values():
        order.update(dict.fromkeys(entry.get("pods") or {}))
    pods = list(order)
    pod_node = {e.pod: e.node for e in target.endpoints} if target is not None else {}
    pod_node.update({p: n for p, n in (spread.get("pod_nodes") or {}).items() if n})
    served = {p: sum((e.get("pods") or {}).get(p, 0) for e in entries.values()) for p in pods}
    shorts = short_names(pods)
    total = sum(e.get("requests", 0) for e in entries.values()) or 1
    all_served = sum(served.values()) or 1

    # Rows: the busiest entry nodes (by name), the rest summed in one row.
    names = sorted(entries, key=lambda n: -entries[n].get("requests", 0))
    shown_rows = sorted(names[:MATRIX_ROWS] if len(names) > MATRIX_ROWS + 1 else names,
                        key=_natural)
    rest_rows = [n for n in names if n not in shown_rows]

    def row_cells(counts: Mapping[str, int], requests: int, failures: int,
                  columns: list[str], others: list[str] | None) -> list[str]:
        cells = [number(counts.get(p, 0)) for p in columns]
        if others is not None:
            cells.append(number(sum(counts.get(p, 0) for p in others)))
        return [*cells, number(failures), pct(requests / total)]

    rows: list[tuple[str, Mapping[str, int], int, int]] = [
        (printable(n), entries[n].get("pods") or {}, entries[n].get("requests", 0),
         entries[n].get("failures", 0)) for n in shown_rows]
    if rest_rows:
        summed: dict[str, int] = {}
        for n in rest_rows:
            for p, c in (entries[n].get("pods") or {}).items():
                summed[p] = summed.get(p, 0) + c
        rows.append((f"{number(len(rest_rows))} others", summed,
                     sum(entries[n].get("requests", 0) for n in rest_rows),
                     sum(entries[n].get("failures", 0) for n in rest_rows)))

    def column_width(pod_cells: list[str], header: str) -> int:
        return max(cell_len(c) for c in [header, *pod_cells])

    widths = {p: column_width([number(r[1].get(p, 0)) for r in rows]
                              + [pct(served[p] / all_served)], shorts[p]) for p in pods}

    first = min(ENTRY_WIDTH, max(cell_len(c) for c in ["entry \\ pod", "pod share",
                                                       *(r[0] for r in rows)]))
    fixed = first + column_width([number(r[3]) for r in rows], "failed") + column_width(
        [pct(r[2] / total) for r in rows], "share") + 2 * _GAP
    busiest = sorted(pods, key=lambda p: -served[p])
    shown, chosen = pods, set(pods)
    if fixed + sum(widths[p] + _GAP for p in pods) > width:
        # The busiest pods that fit beside an "others" column (as wide as its figures).
        others_width = max(6, cell_len(number(all_served)), cell_len(pct(1.0))) + _GAP
        room, chosen = width - fixed - others_width, set()
        for p in busiest:
            if room < widths[p] + _GAP:
                break
            room -= widths[p] + _GAP
            chosen.add(p)
        shown = [p for p in pods if p in chosen]  # in the target's order (by node)
    others = [p for p in pods if p not in chosen] if len(shown) < len(pods) else None

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("entry \\ pod", max_width=ENTRY_WIDTH, no_wrap=True, overflow="ellipsis")
    for p in shown:
        table.add_column(Text(shorts[p]), justify="right", no_wrap=True)
    if others is not None:
        table.add_column("others", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    for label, counts, requests, failures in rows:
        table.add_row(Text(label), *row_cells(counts, requests, failures, shown, others))
    share_row = [pct(served[p] / all_served) for p in shown]
    if others is not None:
        share_row.append(pct(sum(served[p] for p in others) / all_served))
    table.add_row(Text("pod share", style="dim"), *share_row, "", "", style="dim")

    legend = Table(box=None, pad_edge=False, show_edge=False, header_style="dim")
    legend.add_column("pod", no_wrap=True)
    legend.add_column("full name", overflow="fold")
    legend.add_column("node", overflow="fold")
    for p in shown:
        legend.add_row(Text(shorts[p]), Text(printable(p)), Text(printable(pod_node.get(p)
                                                                            or "?")))
    if others:
        nodes = sorted({printable(pod_node.get(p) or "?") for p in others})
        legend.add_row("others", Text(f"{number(len(others))} more pods, "
                                      f"{pct(sum(served[p] for p in others) / all_served)} "
                                      "of the replies"),
                       Text(", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")))
    return Group(table, Text(""), legend)


def node_pod_table(spread: Mapping[str, Any], target: Target | None = None,
                   width: int = DEFAULT_WIDTH) -> str:
    """The matrix and its legend as plain text, `width` columns at most."""
    return _rendered(console(io.StringIO(), width), node_pod_view(spread, target, width))


def _rendered(out: Console, renderable: RenderableType) -> str:
    """What `out` would print, each line without the blanks rich pads table rows with."""
    with out.capture() as captured:
        out.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().split("\n"))


# -- findings and thresholds ----------------------------------------------------------------

def findings_view(findings: Sequence[Mapping[str, Any]],
                  shown: int = FINDINGS_SHOWN) -> RenderableType:
    """The first `shown` findings (they come most severe first), each with its severity."""
    if not findings:
        return Text("No finding.")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for finding in findings[:shown]:
        severity = str(finding.get("severity", "info"))
        grid.add_row(Text(f"{severity:<8}", style=SEVERITY_STYLE.get(severity, "")),
                     Text(printable(finding.get("text", ""))))
    if len(findings) > shown:
        grid.add_row("", Text(f"... and {number(len(findings) - shown)} more in the report",
                              style="dim"))
    return grid


def threshold_line(result: Mapping[str, Any]) -> Text:
    """``✓ p95 latency 3.2 ms <= 5 ms`` / ``✗ p95 latency 25.5 ms > 5 ms``."""
    passed = bool(result.get("passed"))
    op = str(result.get("op") or "≤")
    label, limit = printable(result.get("label", result.get("name", ""))), result.get(
        "limit_shown", result.get("limit"))
    if result.get("value") is None:
        body = f"{label}: no data (limit {_HELD.get(op, op)} {limit})"
    else:
        body = (f"{label} {printable(result.get('shown'))} "
                f"{(_HELD if passed else _BROKEN).get(op, op)} {limit}")
    return Text.assemble(("✓" if passed else "✗", "bold green" if passed else "bold red"),
                         " ", body)


def thresholds_view(thresholds: Sequence[Mapping[str, Any]]) -> RenderableType:
    return Group(*(threshold_line(t) for t in thresholds))


def print_end_of_run(stream: TextIO, spread: Mapping[str, Any], target: Target | None,
                     summary: Mapping[str, Any] | None,
                     thresholds: Sequence[Mapping[str, Any]], report: str,
                     width: int | None = None) -> None:
    """The end-of-run view on `stream`: matrix, findings, thresholds, then `report` (the
    ``report: PATH`` line, written as is: a path is never wrapped)."""
    width = width or terminal_width(stream)
    out = console(stream, width)
    parts: list[RenderableType] = [
        Text(""), Text("Requests per entry node (rows) and pod (columns)", style="bold"),
        node_pod_view(spread, target, width)]
    if summary is not None:
        parts += [Text(""), Text("Findings", style="bold"),
                  findings_view(summary.get("findings") or [])]
    if thresholds:
        parts += [Text(""), Text("Thresholds", style="bold"), thresholds_view(thresholds)]
    stream.write(_rendered(out, Group(*parts, Text(""))))
    stream.write(report + "\n")
    stream.flush()


# -- the --progress line --------------------------------------------------------------------

def progress_line(elapsed: float, total: float | None, rps: float | None,
                  p95: float | None, requests: int, failures: int,
                  shares: Sequence[tuple[str, float]], width: int = DEFAULT_WIDTH,
                  tty: bool = False) -> str:
    """One line, at most `width` (on a terminal `tty`: one less, so it never wraps):
    ``12/30 s  1,235 req/s  p95 3.1 ms  0 failed  node-2 34 % node-1 33 % +1 more``
    (req/s, p95 and each entry node's share: the last seconds; the busiest nodes first, as
    many as fit)."""
    when = number(round(elapsed)) + (f"/{number(round(total))}" if total else "") + " s"
    failed = f"{number(failures)} failed" + (f" ({pct(failures / requests)})"
                                              if failures and requests else "")
    # Rounder figures than the reports': the lab's three entry nodes fit in 80 columns.
    now = rate(rps if rps is None or rps < 100 else round(rps))
    latency = ms(p95 if p95 is None or p95 < 1 else round(p95, 1))
    line = "  ".join([when, now, f"p95 {latency}", failed])
    limit = max(10, width - 1 if tty else width)
    ordered = sorted(shares, key=lambda s: -s[1])  # the busiest entry nodes first
    for count, (name, share) in enumerate(ordered):
        shown = pct(round(share, 2) if share >= 0.01 else share)
        longer = f"{line}{'  ' if count == 0 else ' '}{_cut(printable(name), 20)} {shown}"
        left = len(ordered) - count - 1
        if cell_len(longer) + (cell_len(f" +{number(left)} more") if left else 0) > limit:
            line += f" +{number(left + 1)} more"  # (it fitted after the previous one)
            break
        line = longer
    return _cut(line, limit)


def _natural(name: str) -> list:
    """node-2 before node-10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def _cut(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    out = Text(text)
    out.truncate(width, overflow="ellipsis")
    return out.plain
