"""The house number formats (harness.core.text): every expectation below is worked out by hand
from the rule in the module docstring, so a change to the rule shows up here first."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from harness.core import findings
from harness.core.text import (
    fair_index,
    ms,
    number,
    p_value,
    parse_duration,
    pct,
    rate,
    redact_command,
    secs,
    times,
    when,
)
from harness.errors import HarnessError

NO_VALUE = [None, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("formatter", [number, pct, ms, rate, times, fair_index, secs, when])
@pytest.mark.parametrize("value", NO_VALUE)
def test_no_value_reads_n_a(formatter, value):
    assert formatter(value) == "n/a"


def test_p_value_without_a_value():
    assert p_value(None) == "p n/a"
    assert p_value(math.nan) == "p n/a"


# -- the rule, through number() --------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    (0, "0"),
    (0.0, "0"),
    (-0.0, "0"),  # no "-0"
    (8842, "8,842"),
    (8842.0, "8,842"),  # a whole float reads like the count it is
    (1234567, "1,234,567"),
    (10**12, "1,000,000,000,000"),
    (np.int64(8842), "8,842"),
    (np.float64(1246.53), "1,246.5"),
    (1246.53, "1,246.5"),  # one decimal from 10 up
    (12.345, "12.3"),  # 12.345: the next digit is 4
    (12.35, "12.4"),  # half up on the decimal as written (the float is 12.3499...)
    (1.2345, "1.23"),  # two decimals from 1 to 10
    (1.005, "1.01"),  # half up again (the float is 1.00499...)
    (0.1234, "0.123"),  # three decimals below 1
    (0.0123, "0.012"),  # never more than three
    (0.0015, "0.002"),
    (0.0004, "< 0.001"),  # non-zero never reads as 0
    (-0.0004, "> -0.001"),
    (-1234.56, "-1,234.6"),
    (2.50, "2.5"),  # trailing zeros go
    (90.0, "90"),
])
def test_number_follows_the_house_rule(value, shown):
    assert number(value) == shown


def test_booleans_and_text_are_not_numbers():
    assert number(True) == "n/a"
    assert number("12") == "n/a"


# -- percentages -----------------------------------------------------------------------------

@pytest.mark.parametrize("ratio, shown", [
    (0, "0 %"),
    (0.5, "50 %"),
    (1, "100 %"),
    (1.0, "100 %"),
    (0.123456, "12.3 %"),
    (0.05, "5 %"),
    (0.0123, "1.23 %"),
    (0.001234, "0.123 %"),
    (0.0001, "0.01 %"),  # findings said "0.01 %", the report formatter "< 0.1 %": now one answer
    (0.00001, "0.001 %"),
    (0.000001, "< 0.001 %"),  # a failure in a million is not "0 %"
    (0.999, "99.9 %"),
    (0.99949, "99.9 %"),
    (0.9995, "> 99.9 %"),  # 99.95 rounds to 100.0, which it is not
    (0.99996, "> 99.9 %"),
    (1.5, "150 %"),  # a gain can pass 100 %
    (-0.032, "-3.2 %"),  # and fall
    (1 / 3, "33.3 %"),
    (2 / 3, "66.7 %"),
])
def test_pct(ratio, shown):
    assert pct(ratio) == shown


def test_pct_scales_the_decimal_not_the_float():
    # 0.0035 * 100 is 0.35000000000000003 as a float; as written it is 0.35 exactly.
    assert pct(0.0035) == "0.35 %"
    assert pct(0.00145) == "0.145 %"
    assert pct(0.000145) == "0.015 %"  # 0.0145 to three decimals, half up


# -- milliseconds, rates, factors -----------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    (0, "0 ms"),
    (0.95, "0.95 ms"),  # the float 0.9499999... still reads 0.95
    (0.995, "0.995 ms"),
    (1.5, "1.5 ms"),
    (9.994, "9.99 ms"),
    (9.995, "10 ms"),  # rounds up into the next magnitude: 10.00, trailing zeros go
    (12.345, "12.3 ms"),
    (99.95, "100 ms"),
    (123.45, "123.5 ms"),
    (1234.56, "1,234.6 ms"),
    (0.0004, "< 0.001 ms"),
    (-1.5, "-1.5 ms"),  # a cost can be negative (cross-node faster than local)
])
def test_ms(value, shown):
    assert ms(value) == shown


@pytest.mark.parametrize("value, shown", [
    (1246.5, "1,246.5 req/s"),
    (1246.53, "1,246.5 req/s"),
    (300, "300 req/s"),
    (300.0, "300 req/s"),
    (0.5, "0.5 req/s"),
    (12345.67, "12,345.7 req/s"),
    (0, "0 req/s"),
])
def test_rate(value, shown):
    assert rate(value) == shown


@pytest.mark.parametrize("value, shown", [
    (2.5, "2.5×"), (2.0, "2×"), (1.034, "1.03×"), (12.34, "12.3×"), (1500, "1,500×"),
])
def test_times(value, shown):
    assert times(value) == shown


@pytest.mark.parametrize("value, shown", [
    (1.0, "1"), (0.98765, "0.988"), (0.9994, "0.999"),
    (0.9995, "> 0.999"), (0.99996, "> 0.999"),  # only an even spread reads 1
    (0.5, "0.5"), (0.0, "0"),
])
def test_fair_index(value, shown):
    assert fair_index(value) == shown


@pytest.mark.parametrize("p, shown", [
    (0.0004, "p < 0.001"),
    (0.001, "p = 0.001"),
    (0.0123, "p = 0.012"),
    (0.045, "p = 0.045"),
    (0.5, "p = 0.5"),
    (1.0, "p = 1"),
    (0.99996, "p > 0.999"),
    (0.0, "p = 0"),
])
def test_p_value(p, shown):
    assert p_value(p) == shown


# -- durations and moments -------------------------------------------------------------------

@pytest.mark.parametrize("seconds, shown", [
    (0, "0 s"),
    (90, "90 s"),  # findings said "90 s", the report formatter "90.0 s": now one answer
    (90.0, "90 s"),
    (2.25, "2.25 s"),
    (0.5, "0.5 s"),
    (12.345, "12.3 s"),
    (119.4, "119.4 s"),
    (119.6, "2 min 00 s"),  # rounds to two minutes: read in minutes
    (125, "2 min 05 s"),
    (3599.4, "59 min 59 s"),
    (3600, "1 h 00 min"),
    (5400, "1 h 30 min"),
    (0.0004, "< 0.001 s"),
    (-5, "-5 s"),
])
def test_secs(seconds, shown):
    assert secs(seconds) == shown


def test_when_is_local_time_to_the_second():
    epoch = 1_700_000_000.7
    assert when(epoch) == time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))
    assert when(epoch).startswith(time.strftime("%Y-%m-%d", time.localtime(epoch)))


# -- one house: the findings write with the same functions -----------------------------------

def test_findings_use_these_formatters():
    for name in ("pct", "ms", "number", "secs", "times", "p_value"):
        assert getattr(findings, name) is globals()[name], name


# -- commands and durations (already here before the formats moved in) ----------------------

def test_redact_command_hides_secret_values():
    assert redact_command("nodeport-harness run --token abc --password=x -u 5") == (
        "nodeport-harness run --token REDACTED --password=REDACTED -u 5")
    assert redact_command("run 'unbalanced") == "(command not shown: it could not be parsed)"


@pytest.mark.parametrize("text, seconds", [
    ("90", 90.0), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0), ("1.5", 1.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "m"])
def test_parse_duration_refuses_what_is_not_a_duration(text):
    with pytest.raises(HarnessError, match="is not a duration"):
        parse_duration(text)
