"""summary.md: the run in Markdown for CI job summaries ($GITHUB_STEP_SUMMARY and the like)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from harness.core.text import number, pct, printable

ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵", "ok": "🟢"}
MAX_POD_ROWS = 50  # a step summary is capped (1 MiB on GitHub): the CSV holds them all
MAX_NAME = 60
# Enough to stop emphasis, code, links, tables and strike-through; HTML goes as entities.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md(text: object, limit: int | None = None) -> str:
    """Literal text in Markdown (and in the HTML renderers accept inside it)."""
    value = str(text)
    if limit and len(value) > limit:
        value = value[: limit - 1] + "…"
    value = " ".join(value.split())  # a newline would end a table row
    value = printable(value)  # an escape sequence would act on a terminal showing the file
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", value)


def summary_markdown(view: Mapping[str, Any]) -> str:
    """``view``: the page's context (see build.page_context)."""
    parts = [
        f"## {ICONS.get(view['verdict'], '')} NodePort spread: {md(view['title'])}",
        "",
        f"**{md(view['headline'])}**",
        "",
        *([f"> ⚠ **partial**: this run is partial: {md(view['partial'])}. Totals may miss "
           "requests.", ""] if view.get("partial") else []),
        "### Findings",
        "",
        *(f"- {ICONS.get(f['severity'], '')} **{f['severity']}**: {md(f['text'])}"
          for f in view["findings"]),
        "",
        "### Requests per pod and entry node (successes)",
        "",
        *_matrix_table(view["matrix"]),
        "",
        *_lb_table(view.get("lb")),
        *_whatifs(view.get("whatifs") or ()),
        *_thresholds(view["thresholds"]),
        "### Run",
        "",
        *(f"- {md(k)}: {md(v)}" for k, v in view["facts"]),
        "",
        "<details><summary>How to reproduce</summary>",
        "",
        *([f"Target: {md(view['reproduce']['target'])}", ""] if view.get("reproduce") else []),
        *_code(view["command"]),
        "",
        *(["Re-render the reports:", "", *_code(view["reproduce"]["rerender"]), ""]
          if view.get("reproduce") else []),
        "</details>",
        "",
    ]
    return "\n".join(parts)


def _matrix_table(matrix: Mapping[str, Any]) -> list[str]:
    entries, pods, counts = matrix["entries"], matrix["pods"], matrix["counts"]
    if not entries or not pods:
        return ["No successful request was recorded."]
    total = sum(map(sum, counts)) or 1
    header = ["pod", "node", *(md(e, MAX_NAME) for e in entries), "total", "share"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for j, pod in enumerate(pods[:MAX_POD_ROWS]):
        row = [counts[i][j] for i in range(len(entries))]
        lines.append("| " + " | ".join([
            md(pod, MAX_NAME), md(matrix["pod_nodes"].get(pod) or "?", MAX_NAME),
            *(number(c) for c in row), number(sum(row)), pct(sum(row) / total),
        ]) + " |")
    sums = [sum(row) for row in counts]
    lines.append("| **entry share** | | " + " | ".join(pct(s / total) for s in sums)
                 + f" | {number(sum(sums))} | |")
    if len(pods) > MAX_POD_ROWS:
        lines += ["", f"… and {number(len(pods) - MAX_POD_ROWS)} more pods: see pods.csv."]
    return lines


def _lb_table(lb: Mapping[str, Any] | None) -> list[str]:
    """--entry lb: successes per node the LoadBalancer chose (or why that is unseen)."""
    if not lb:
        return []
    lines = ["### Through the LoadBalancer", ""]
    if not lb["seen"]:
        return [*lines, md(lb["text"]), ""]
    lines += ["| node | pods on it | successes through it | share |", "|---|---|---|---|"]
    for row in lb["rows"][:MAX_POD_ROWS]:
        lines.append(f"| {md(row['node'], MAX_NAME)} | {number(row['pods'])} | "
                     f"{number(row['successes'])} | {pct(row['share'])} |")
    if lb["unknown"]:
        lines.append(f"| not shown by the reply | | {number(lb['unknown'])} | "
                     f"{pct(lb['unknown_share'])} |")
    return [*lines, ""]


def _whatifs(whatifs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What-ifs: each title and its sentences, every one a prediction (core/whatif.py)."""
    if not whatifs:
        return []
    lines = ["### What if (predictions, not measurements)", ""]
    for whatif in whatifs:
        lines.append(f"- **{md(whatif['title'])}** (prediction)")
        lines += [f"  - {md(sentence)}" for sentence in whatif["sentences"]]
    lines += ["", "Re-run one for real (the commands are in index.html), then "
              "`nodeport-harness compare` this run and the new one: it sets the prediction "
              "against the measurement.", ""]
    return lines


def _thresholds(results: Sequence[Mapping[str, Any]]) -> list[str]:
    if not results:
        return ["No thresholds were set (see --max-fail-ratio, --max-p95-ms, ...).", ""]
    lines = ["### Thresholds", "", "| threshold | result |", "|---|---|"]
    for result in results:
        mark = "✅ passed" if result["passed"] else "❌ **breached**"
        lines.append(f"| {md(result['text'])} | {mark} |")
    return [*lines, ""]


def _code(text: str) -> list[str]:
    # A fence longer than any run of backticks inside, so the command cannot close it.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}sh", printable(text), fence]
