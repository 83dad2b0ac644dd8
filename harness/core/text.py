"""How every figure reads, in every output: the one set of formatters.

The HTML and Markdown reports, JUnit, the terminal table, the web UI tab, the demo and
capacity pages and every finding write numbers through these functions, so one figure reads
the same wherever it appears. Pure: stdlib only.

The house rule, for every figure but whole counts and clock times:

- Round half up on the decimal the value is written as (0.95 is 0.95 here, not the binary
  0.94999…), to three significant figures but to at least one decimal place and at most
  three. In practice: one decimal from 10 up (1,246.5), two from 1 to 10 (9.99), three
  below 1 (0.123). A value that rounds up to the next power of ten keeps the rule of the
  magnitude it started at (9.995 -> 10.00 -> "10").
- Trailing zeros go (90.0 -> "90", 2.50 -> "2.5"); thousands are separated by commas.
- Rounding never makes a figure say more than it measured: a non-zero value below the last
  place reads "< 0.001" (never "0"), and a share short of its whole reads one step below it
  ("> 99.9 %", never "100 %"); the same holds for a fairness index whose best is 1
  (Jain's) and for p-values ("p < 0.001").
- Whole counts are exact with separators ("8,842"); ``None`` (and NaN, infinity) is "n/a".
- Durations of two minutes and more read in whole seconds or minutes ("2 min 05 s",
  "1 h 30 min"): at that length a tenth of a second says nothing.

Units follow after a space ("12.5 ms", "50 %", "90 s", "1,246.5 req/s") except the factor
sign ("2.5×"); percentages take ratios (0.5 -> "50 %").
"""

from __future__ import annotations

import math
import numbers
import re
import shlex
import time
from decimal import ROUND_HALF_UP, Context, Decimal

from harness.errors import HarnessError

# Values after such flags never reach a report (a reproduce command may carry one).
HIDDEN = "REDACTED"  # needs no shell quoting, so it reads the same in HTML and Markdown
_SECRET_FLAG = re.compile(r"^--?[\w-]*(pass(word|wd)?|token|secret|auth|api-?key|credential)",
                          re.I)

NA = "n/a"
SIGNIFICANT = 3
MIN_PLACES, MAX_PLACES = 1, 3
_HUNDRED, _ONE = Decimal(100), Decimal(1)


# -- the rule --------------------------------------------------------------------------------

def _exact(value: float) -> Decimal | None:
    """The value as the decimal it is written as; None when there is no finite value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return Decimal(int(value))
    as_float = float(value)
    # repr is the shortest decimal that reads back as the same float: 0.95, not 0.9499...
    return Decimal(repr(as_float)) if math.isfinite(as_float) else None


def _places(exact: Decimal) -> int:
    return min(MAX_PLACES, max(MIN_PLACES, SIGNIFICANT - 1 - exact.adjusted()))


def _plain(value: Decimal) -> str:
    text = f"{value:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _figure(exact: Decimal, whole: Decimal | None = None) -> str:
    """The house rule on one decimal value (see the module docstring); ``whole``: the
    bound a share or index reaches only when it is exact (100 %, a Jain index of 1)."""
    if not exact:
        return "0"
    places = _places(exact)
    step = _ONE.scaleb(-places)
    # Quantize fails when the digits do not fit the context's precision (28 by default):
    # a wider one only for the rare huge value.
    digits = exact.adjusted() + places + 2
    context = Context(prec=digits) if digits > 28 else None
    shown = exact.quantize(step, rounding=ROUND_HALF_UP, context=context)
    if not shown:  # never round a non-zero value to zero
        return f"< {_plain(step)}" if exact > 0 else f"> -{_plain(step)}"
    if whole is not None and exact < whole <= shown:  # nor a part up to the whole
        return f"> {_plain(whole - step)}"
    return _plain(shown)


# -- the formatters --------------------------------------------------------------------------

def number(value: float | None) -> str:
    """A count or a plain figure: 8842 -> "8,842", 1246.53 -> "1,246.5", 0.1234 -> "0.123"."""
    exact = _exact(value)
    return NA if exact is None else _figure(exact)


def pct(ratio: float | None) -> str:
    """A ratio as a percentage: 0.5 -> "50 %", 0.0001 -> "0.01 %", 0.99996 -> "> 99.9 %"."""
    exact = _exact(ratio)
    return NA if exact is None else _figure(exact * _HUNDRED, whole=_HUNDRED) + " %"


def ms(value: float | None) -> str:
    """Milliseconds: 0.95 -> "0.95 ms", 9.995 -> "10 ms", 1234.56 -> "1,234.6 ms"."""
    exact = _exact(value)
    return NA if exact is None else _figure(exact) + " ms"


def rate(rps: float | None) -> str:
    """Requests per second: 1246.53 -> "1,246.5 req/s"."""
    exact = _exact(rps)
    return NA if exact is None else _figure(exact) + " req/s"


def times(factor: float | None) -> str:
    """A factor: 2.5 -> "2.5×", 1.034 -> "1.03×"."""
    exact = _exact(factor)
    return NA if exact is None else _figure(exact) + "×"


def fair_index(value: float | None) -> str:
    """A fairness index from 0 to 1, best 1 (Jain's): 0.98765 -> "0.988", and only an exact
    1 reads "1" (0.99996 -> "> 0.999")."""
    exact = _exact(value)
    return NA if exact is None else _figure(exact, whole=_ONE)


def p_value(p: float | None) -> str:
    """A p-value with its letter: "p = 0.012", "p < 0.001", "p n/a"."""
    exact = _exact(p)
    if exact is None:
        return f"p {NA}"
    shown = _figure(exact, whole=_ONE)
    return f"p {shown}" if shown[0] in "<>" else f"p = {shown}"


def secs(seconds: float | None) -> str:
    """A duration: 90 -> "90 s", 2.25 -> "2.25 s", 125 -> "2 min 05 s", 5400 -> "1 h 30 min"."""
    exact = _exact(seconds)
    if exact is None:
        return NA
    whole = int(exact.to_integral_value(rounding=ROUND_HALF_UP))
    if abs(whole) < 120:
        return _figure(exact) + " s"
    sign, (minutes, rest) = "-" if whole < 0 else "", divmod(abs(whole), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{sign}{hours:,} h {minutes:02d} min" if hours
            else f"{sign}{minutes} min {rest:02d} s")


def when(epoch: float | None) -> str:
    """A moment in local time: "2025-01-31 14:05:09 CET"."""
    if _exact(epoch) is None:
        return NA
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


# -- names from the cluster and from replies -------------------------------------------------

# C0/C1 controls, DEL, and the invisible or direction-changing format characters: a name
# holding one could rewrite a terminal (ESC [ ...), break a CSV or Markdown row, or read as
# another name.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def printable(text: object) -> str:
    """``text`` with every control or invisible character written as an escape (``\\x1b``),
    so a name from the cluster or a reply shows as text and never acts on the terminal."""
    return _UNPRINTABLE.sub(lambda m: _escape(m.group()), str(text))


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def name_list(names: object, shown: int = 5) -> str:
    """Names for a sentence, at most ``shown`` of them: "node-1, node-2, ... and 9,990 more"."""
    names = [printable(n) for n in names]  # type: ignore[attr-defined]
    if len(names) <= shown + 1:  # "and 1 more" says no more than the name itself
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... and {number(len(names) - shown)} more"


# -- commands and durations ------------------------------------------------------------------

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
