"""Number, time and command formatting shared by the HTML, Markdown and JUnit outputs."""

from __future__ import annotations

import re
import shlex
import time

from harness.errors import HarnessError

# Values after such flags never reach a report (a reproduce command may carry one).
HIDDEN = "REDACTED"  # needs no shell quoting, so it reads the same in HTML and Markdown
_SECRET_FLAG = re.compile(r"^--?[\w-]*(pass(word|wd)?|token|secret|auth|api-?key|credential)",
                          re.I)


def pct(ratio: float | None, digits: int = 1) -> str:
    if ratio is None:
        return "n/a"
    value = ratio * 100
    if 0 < value < 10 ** -digits:
        return f"< {10 ** -digits:g} %"
    return f"{value:.{digits}f} %"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} ms"


def num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def when(epoch: float | None) -> str:
    if epoch is None:
        return "n/a"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def redact_command(command: str) -> str:
    """The reproduce command with values of password/token-like flags replaced."""
    try:
        args = shlex.split(command)
    except ValueError:  # unbalanced quotes: show nothing rather than a possible secret
        return "(command not shown: it could not be parsed)"
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
        elif _SECRET_FLAG.match(arg):
            flag, sep, _value = arg.partition("=")
            out.append(f"{flag}={HIDDEN}" if sep else arg)
            hide_next = not sep
        else:
            out.append(arg)
    return shlex.join(out)


def parse_duration(text: str) -> float:
    """'90', '30s', '2m', '1h30m' -> seconds (Locust's --run-time format)."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not text or not parts or not any(parts.groups()):
        raise HarnessError(
            f"-t/--run-time {text!r} is not a duration; use e.g. 30s, 2m or 1h30m"
        )
    h, m, s = (int(g) if g else 0 for g in parts.groups())
    return float(h * 3600 + m * 60 + s)
