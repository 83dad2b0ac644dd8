"""Pod extraction: every --pod-from form, and replies it cannot read."""

import json

import pytest

from harness.errors import HarnessError
from harness.extract import make_extractor

BODY = json.dumps({"host": "pod-json", "hostname": "h", "pod": "p", "meta": {"pod": "deep"}})


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
    assert make_extractor(spec)(headers, body) == expected


def test_huge_and_nested_json_do_not_raise():
    nested = b"[" * 100000 + b"]" * 100000
    assert make_extractor("auto")(None, nested) is None
    assert make_extractor("json:a")(None, nested) is None


@pytest.mark.parametrize("spec", ["json:", "header:", "regex:(", "xml:host", "bogus"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(HarnessError) as err:
        make_extractor(spec)
    assert "\n" not in str(err.value)
    assert "--pod-from" in str(err.value)
