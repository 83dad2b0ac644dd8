"""Pod extraction: every --pod-from form, and replies it cannot read."""

import json
from types import SimpleNamespace

import pytest

from harness.core.extract import make_extractor
from harness.errors import HarnessError

BODY = json.dumps({"host": "pod-json", "hostname": "h", "pod": "p", "meta": {"pod": "deep"}})


def reply(headers, body):
    """What an extractor reads: a reply's headers and content (as Locust's FastResponse)."""
    return SimpleNamespace(headers=headers, content=body)


class Headers(dict):
    """Case-insensitive like geventhttpclient's headers."""

    def get(self, key, default=None):
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


@pytest.mark.parametrize(
    "spec, headers, body, expected",
    [
        ("auto", Headers({"x-served-by": "pod-h"}), BODY.encode(), "pod-h"),
        ("auto", Headers({"X-Pod-Name": "pod-n"}), b"", "pod-n"),
        ("auto", Headers(), BODY.encode(), "pod-json"),
        ("auto", Headers(), b'{"hostname": "only-hostname"}', "only-hostname"),
        ("auto", Headers(), b"not json", None),
        ("auto", None, None, None),
        ("auto", Headers(), b'["a list"]', None),
        ("json:meta.pod", Headers(), BODY.encode(), "deep"),
        ("json:missing", Headers(), BODY.encode(), None),
        ("header:X-Custom", Headers({"x-custom": "c1"}), b"", "c1"),
        ("body", Headers(), b"agnhost-pod-1\n", "agnhost-pod-1"),
        ("body", Headers(), b"\xff\xfe", None),
        ("regex:served by (\\S+)", Headers(), b"hello, served by pod-r!", "pod-r!"),
        ("regex:pod-[0-9]+", Headers(), b"xx pod-42 yy", "pod-42"),
        ("auto", Headers({"X-Served-By": "x" * 300}), b"", None),
    ],
)
def test_extractors(spec, headers, body, expected):
    assert make_extractor(spec)(reply(headers, body)) == expected


def test_huge_and_nested_json_do_not_raise():
    nested = b"[" * 100000 + b"]" * 100000
    assert make_extractor("auto")(reply(None, nested)) is None
    assert make_extractor("json:a")(reply(None, nested)) is None


@pytest.mark.parametrize("spec", ["json:", "header:", "regex:(", "xml:host", "bogus"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(HarnessError) as err:
        make_extractor(spec)
    assert "\n" not in str(err.value)
    assert "--pod-from" in str(err.value)


@pytest.mark.parametrize(
    "spec, fields, body, expected",
    [
        ("auto", [("X-Served-By", "pod-a")], b"", "pod-a"),
        ("auto", [("x-pod-name", " pod-b ")], b"", "pod-b"),
        ("auto", [("X-Served-By", "pod-1"), ("X-Served-By", "pod-2")], b"", "pod-1"),
        ("auto", [("X-Served-By", ""), ("X-Pod-Name", "pod-c")], b"", "pod-c"),
        ("auto", [("Content-Type", "application/json")], BODY.encode(), "pod-json"),
        ("auto", [("X-Served-By", "x" * 300)], b"", None),
        ("auto", [], b"not json", None),
        ("header:X-Custom", [("x-CUSTOM", "c2")], b"", "c2"),
        ("header:X-Custom", [("X-Other", "o")], b"", None),
    ],
)
def test_real_geventhttpclient_headers(spec, fields, body, expected):
    # Locust's FastHttpUser replies carry geventhttpclient's Headers (a dict keyed by the
    # lower-cased name holding (name, value) tuples); extraction reads that dict directly.
    from geventhttpclient.header import Headers as GHeaders

    assert make_extractor(spec)(reply(GHeaders(fields), body)) == expected


class BodyNeverRead:
    """A reply whose body must not be touched: extraction from a header reads no body."""

    def __init__(self, headers):
        self.headers = headers

    @property
    def content(self):
        raise AssertionError("the body was read")


def test_a_header_that_names_the_pod_spares_reading_the_body():
    from geventhttpclient.header import Headers as GHeaders

    assert make_extractor("auto")(BodyNeverRead(GHeaders([("X-Served-By", "p")]))) == "p"
    assert make_extractor("auto")(BodyNeverRead(Headers({"x-pod-name": "q"}))) == "q"
    with pytest.raises(AssertionError):  # no header: the body is where the pod is
        make_extractor("auto")(BodyNeverRead(GHeaders([])))
