"""JUnit XML for CI: one test case per configured threshold, or one "run completed" case."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

# Characters XML 1.0 cannot carry even escaped; a pod name from a reply might hold one.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def junit_xml(summary: Mapping[str, Any], thresholds: Sequence[Mapping[str, Any]],
              run: Mapping[str, Any], run_id: str) -> str:
    cases = _threshold_cases(thresholds) if thresholds else [_completed_case(run)]
    if not summary["totals"]["requests"]:  # nothing measured is never a pass
        case = ET.Element("testcase", classname="nodeport-harness.run", name="requests recorded",
                          time="0")
        ET.SubElement(case, "failure", type="no_requests",
                      message="nothing was recorded: no request completed during the run")
        cases.append(case)
    failures = sum(1 for case in cases if case.find("failure") is not None)
    duration = f"{(summary['run'].get('duration_s') or 0):.3f}"
    suites = ET.Element("testsuites", name="nodeport-harness", tests=str(len(cases)),
                        failures=str(failures), errors="0", time=duration)
    suite = ET.SubElement(suites, "testsuite", name=xml_text(f"nodeport-harness {run_id}"),
                          tests=str(len(cases)), failures=str(failures), errors="0",
                          skipped="0", time=duration)
    properties = ET.SubElement(suite, "properties")
    for name, value in _properties(summary, run).items():
        ET.SubElement(properties, "property", name=name, value=xml_text(value))
    suite.extend(cases)
    out = ET.SubElement(suite, "system-out")
    out.text = xml_text("\n".join(
        f"[{f['severity']}] {f['text']}" for f in summary.get("findings", ())))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _threshold_cases(thresholds: Sequence[Mapping[str, Any]]) -> list[ET.Element]:
    cases = []
    for result in thresholds:
        case = ET.Element("testcase", classname="nodeport-harness.thresholds",
                          name=xml_text(result["name"]), time="0")
        if not result["passed"]:
            failure = ET.SubElement(case, "failure", type="threshold",
                                    message=xml_text(result["text"]))
            failure.text = xml_text(
                f"{result['name']}: value {result['value']}, limit {result['limit']}")
        cases.append(case)
    return cases


def _completed_case(run: Mapping[str, Any]) -> ET.Element:
    case = ET.Element("testcase", classname="nodeport-harness.run", name="run completed",
                      time="0")
    partial = run.get("partial")
    if partial:
        failure = ET.SubElement(case, "failure", type="partial",
                                message=xml_text(f"the run is partial: {partial}"))
        failure.text = xml_text(partial)
    return case


def _properties(summary: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    service = summary.get("service") or {}
    props = {
        "service": f"{service.get('namespace')}/{service.get('name')}" if service else None,
        "node_port": service.get("node_port"),
        "entry": run.get("entry"),
        "connection": run.get("connection"),
        "requests": summary["totals"]["requests"],
        "failures": summary["totals"]["failures"],
    }
    return {k: v for k, v in props.items() if v is not None}
