"""HTML pages from jinja2 templates (autoescaped), with plotly figures embedded as safe JSON."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness.core.runinfo import PLOTLYJS_MODES
from harness.core.text import fair_index, ms, number, pct, rate, secs, when
from harness.errors import ReportError
from harness.report.files import write_text_atomic

SHARED_PLOTLYJS = "plotly.min.js"
SEVERITIES = ("critical", "warning", "info", "ok")

# Inside <script> the HTML parser ends at "</script" whatever the JSON means, and "<!--"
# changes its state; U+2028/2029 end lines in older JavaScript. JSON allows \uXXXX anywhere
# in a string, and these characters only occur inside strings, so escaping them is lossless.
_SCRIPT_SAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(text: str) -> Markup:
    """JSON text made safe to place inside a <script> element."""
    return Markup(text.translate(_SCRIPT_SAFE))  # noqa: S704 - escaped just above


def figures_json(figures: Mapping[str, str]) -> Markup:
    """One JSON object {chart id: figure} from figures already serialised by plotly."""
    body = ",".join(f"{json.dumps(key)}:{value}" for key, value in figures.items())
    return script_json("{" + body + "}")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,  # every cluster-provided string is escaped unless marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The templates format every figure through harness.core.text, under the same names.
    env.filters.update(pct=pct, ms=ms, number=number, rate=rate, secs=secs, when=when,
                       fair_index=fair_index, severity=severity_class)
    return env


def severity_class(severity: object) -> str:
    """A CSS class name for a finding's severity, whatever string arrives."""
    return str(severity) if severity in SEVERITIES else "info"


def render(template: str, context: Mapping[str, Any]) -> str:
    try:
        return _environment().get_template(template).render(**context)
    except jinja2.TemplateNotFound as err:
        raise ReportError(
            f"report template {err.name} is missing: reinstall nodeport-harness"
        ) from None


def plotly_loader(mode: str, page_dir: Path) -> dict[str, Any]:
    """How a page gets plotly.js: inline, ../plotly.min.js shared by sibling folders, or CDN.

    For ``directory`` the shared file is (re)written beside ``page_dir`` when missing or
    from another plotly version.
    """
    if mode not in PLOTLYJS_MODES:
        raise ReportError(f"--plotlyjs {mode!r}: choose one of {', '.join(PLOTLYJS_MODES)}")
    if mode == "inline":
        # plotly.js holds no "</script" today; the guard keeps it that way if it ever does.
        source = _plotlyjs().replace("</script", "<\\/script")
        return {"mode": mode, "inline": Markup(source), "src": None, "integrity": None}  # noqa: S704
    if mode == "directory":
        shared = page_dir.resolve().parent / SHARED_PLOTLYJS  # "." has no parent otherwise
        if not _same_file(shared, _plotlyjs()):
            write_text_atomic(shared, _plotlyjs())
        return {"mode": mode, "inline": None, "src": f"../{SHARED_PLOTLYJS}",
                "integrity": None}
    from plotly.io._utils import plotly_cdn_url

    return {"mode": mode, "inline": None, "src": plotly_cdn_url(),
            "integrity": _plotlyjs_sri()}


@lru_cache(maxsize=1)
def _plotlyjs() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _same_file(path: Path, text: str) -> bool:
    try:
        if path.stat().st_size != len(text.encode("utf-8")):
            return False
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


@lru_cache(maxsize=1)
def _plotlyjs_sri() -> str:
    # Subresource integrity: a CDN serving anything but this plotly.js is refused.
    digest = hashlib.sha384(_plotlyjs().encode("utf-8")).digest()
    return "sha384-" + base64.b64encode(digest).decode("ascii")
