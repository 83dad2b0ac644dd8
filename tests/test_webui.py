"""The Spread tab's data: the pure views from a recorder snapshot (the per-node table, the
panel's heatmap and time series), the start form's labels and order, and the Flask routes.

The view tests import no Locust. The route test runs in a subprocess (importing Locust
monkey-patches gevent, as it does for users): a real Environment with a LocalRunner and a
WebUI, driven with Flask's test client, with and without Locust's web login.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.recorder import SpreadRecorder
from harness.options import WEB_FORM_LABELS, web_ui_dests
from harness.plugin.webui import (
    MAX_POD_COLUMNS,
    TAB_KEY,
    _extend,
    finding_rows,
    live_view,
    pod_columns,
    spread_structure,
)
from harness.plugin.webui_form import WORD_JOINER, form_fields, ui_label
from harness.plugin.webui_live import WINDOW_S, live_data

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0


def make_target(pods_on: dict[str, list[str]]) -> Target:
    nodes = tuple(Node(name=n, addresses={"InternalIP": f"10.0.0.{i}"}, address=f"10.0.0.{i}",
                       address_type="InternalIP") for i, n in enumerate(pods_on, 1))
    endpoints = tuple(Endpoint(pod=p, node=n, ip="10.1.0.1") for n, ps in pods_on.items()
                      for p in ps)
    port = ServicePort(name=None, port=80, target_port=8080, node_port=30080)
    return Target(nodes=nodes, service=ServiceInfo(name="web", namespace="default",
                                                   type="NodePort", port=port),
                  endpoints=endpoints)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def recorded(target: Target) -> tuple[SpreadRecorder, Clock]:
    """node-1 and node-2 take traffic for 20 s; pod-c (on node-2) never answers."""
    clock = Clock()
    recorder = SpreadRecorder(target.pod_nodes(), clock, nodes=[n.name for n in target.nodes])
    for second in range(20):
        clock.now = T0 + second + 0.5
        for _ in range(3):
            recorder.record("node-1", "pod-a", 2.0)
        recorder.record("node-1", "pod-b", 8.0)
        recorder.record("node-2", "pod-b", 4.0)
        recorder.record("node-2", None, 1.0, failure="refused")
    return recorder, clock


TARGET = make_target({"node-1": ["pod-a"], "node-2": ["pod-b", "pod-c"], "node-3": []})


def rows_by_entry(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["entry"]: row for row in rows}


def test_matrix_lists_every_endpoint_pod_with_its_node_and_counts():
    recorder, clock = recorded(TARGET)
    spread = recorder.to_dict()
    columns = pod_columns(spread, TARGET)
    titles = [c["title"] for c in columns]
    assert titles == ["pod-a on node-1", "pod-b on node-2", "pod-c on node-2"]

    live = live_data(spread, TARGET, columns, now=clock.now + 1.0, started=T0)
    assert live["entries"] == ["node-1", "node-2", "node-3"]
    assert [(p["name"], p["node"]) for p in live["pods"]] == [
        ("pod-a", "node-1"), ("pod-b", "node-2"), ("pod-c", "node-2")]
    # entry x pod successes; a pod that got nothing still has its column, at 0
    assert live["counts"] == [[60, 20, 0], [0, 20, 0], [0, 0, 0]]
    assert live["cells"][0][0] == ["60", "75 %", "60 %"]  # of node-1's, of all successes
    assert live["shares"][0] == [0.75, 0.25, 0.0] and live["shares"][2] == [0.0] * 3
    assert live["cells"][2][0] == ["0", "n/a", "0 %"]  # node-3: no request entered
    assert live["requests"] == "120" and live["failures"] == "20"

    rows = rows_by_entry(live_view(spread, TARGET, clock.now + 1.0)[TAB_KEY])
    assert list(rows) == ["node-1", "node-2", "node-3", "All entry points"]
    node1, node2, node3, total = rows.values()
    # Locust sorts rows by "name" by default: the total stays last.
    assert [r["name"] for r in rows.values()] == sorted(r["name"] for r in rows.values())
    assert (node1["requests"], node2["requests"], node3["requests"]) == ("80", "40", "0")
    assert (node1["pods"], node2["pods"], node3["pods"], total["pods"]) == ("1", "2", "0", "3")
    assert node1["share"] == "66.7 %" and total["share"] == "100 %"
    assert node2["failures"] == "20 (50 %)" and node2["kinds"] == "refused 20"
    assert node1["failures"] == "0" and node1["kinds"] == "–"
    assert node1["crossnode"] == "25 %"  # pod-b runs on node-2
    assert node2["crossnode"] == "0 %"
    assert total["requests"] == "120" and total["failures"] == "20 (16.7 %)"
    # The table has the node columns only: the pods are the heatmap's (20 pods fit 1400 px).
    assert [c["key"] for c in spread_structure()] == [
        "entry", "pods", "requests", "share", "rps", "p95now", "p95", "failures", "kinds",
        "crossnode"]
    assert set(node1) == {"name"} | {c["key"] for c in spread_structure()}


def test_time_series_count_each_whole_second_of_the_last_five_minutes():
    target = make_target({"node-1": ["pod-a"], "node-2": ["pod-b"]})
    clock = Clock()
    recorder = SpreadRecorder(target.pod_nodes(), clock, nodes=["node-1", "node-2"])
    started = T0 + 0.4  # the run's first second is partial
    for second in range(WINDOW_S + 40):
        clock.now = T0 + second + 0.5
        recorder.record("node-1", "pod-a", 1.0)
        recorder.record("node-1", "pod-b", 1.0)
        if second % 10 == 0:
            recorder.record("node-2", None, 1.0, failure="refused")
        if second != 100:  # a quiet second on node-2: a zero, not a hole
            recorder.record("node-2", "pod-b", 1.0)
    spread = recorder.to_dict()
    columns = pod_columns(spread, target)
    # Mid-run, the second still filling (and, on a master, those not reported) are left out.
    now = T0 + 200.7
    live = live_data(spread, target, columns, now=now, started=started, lag_s=1)
    assert live["x0"] == 1  # second 0 was partial
    pod_a, pod_b = live["pod_rate"]
    assert len(pod_a) == 199  # seconds 1..199: 200 is not over yet
    assert set(pod_a) == {1} and pod_b[99] == 1 and set(pod_b[:99] + pod_b[100:]) == {2}
    node1, node2 = live["node_failures"]
    assert set(node1) == {0} and sum(node2) == 19 and node2[9] == 1  # second 10
    master = live_data(spread, target, columns, now=now, started=started, lag_s=4)
    assert len(master["pod_rate"][0]) == 196
    # A long run: only the last WINDOW_S seconds travel, whole ones up to the stop.
    done = live_data(spread, target, columns, now=T0 + 999, started=started,
                     stopped=T0 + WINDOW_S + 39.9)
    assert len(done["pod_rate"][0]) == WINDOW_S
    assert done["x0"] == 39 and done["x0"] + WINDOW_S - 1 == 338  # 339 was cut by the stop
    # Before the first request: nothing to draw, and no error.
    empty = live_data(SpreadRecorder(target.pod_nodes()).to_dict(), target, columns, now=T0)
    assert empty["pod_rate"] == [[], []] and empty["counts"] == [[0, 0], [0, 0]]


def test_heatmap_columns_show_short_names_and_keep_full_ones():
    pods = [f"helloworld-7d9f8b6c5d-{s}" for s in ("x2k9p", "ab3cd", "q8wer")]
    target = make_target({"node-1": pods[:2], "node-2": pods[2:]})
    recorder = SpreadRecorder(target.pod_nodes())
    for pod in pods:
        recorder.record("node-1", pod, 1.0)
    recorder.record("node-2", None, 1.0)
    spread = recorder.to_dict()
    live = live_data(spread, target, pod_columns(spread, target), now=T0)
    assert [(p["short"], p["name"], p["node"]) for p in live["pods"]] == [
        ("ab3cd", pods[1], "node-1"), ("x2k9p", pods[0], "node-1"),  # by node, then name
        ("q8wer", pods[2], "node-2"), ("(no pod named)", "(no pod named)", None)]


def test_rates_and_p95_come_from_the_last_complete_seconds():
    recorder, clock = recorded(TARGET)
    spread = recorder.to_dict()
    rows = rows_by_entry(live_view(spread, TARGET, clock.now + 0.2)[TAB_KEY])
    assert rows["node-1"]["rps"] == "4" and rows["node-2"]["rps"] == "2"
    assert rows["All entry points"]["rps"] == "6"
    # node-1: 3 of 4 successes at 2 ms, 1 at 8 ms: p95 is the 8 ms bucket (coarse: ±3.1 %).
    assert abs(float(rows["node-1"]["p95now"]) - 8.0) < 0.3
    assert abs(float(rows["node-1"]["p95"]) - 8.0) < 0.1
    # A master sees workers' seconds late: with no data in its window, no rate, no p95.
    later = rows_by_entry(live_view(spread, TARGET, clock.now + 30, lag_s=4)[TAB_KEY])
    assert later["node-1"]["rps"] == "0" and later["node-1"]["p95now"] == "n/a"
    assert later["node-1"]["p95"] != "n/a"


def test_findings_come_from_the_analysis_in_severity_order():
    recorder, clock = recorded(TARGET)
    findings = finding_rows(recorder.to_dict(), TARGET,
                            {"entry_strategy": "all", "connection_mode": "keepalive",
                             "start": T0, "duration_s": 20.0})
    assert findings and all(set(f) == {"name", "severity", "finding"} for f in findings)
    severities = [f["severity"] for f in findings]
    assert "critical" in severities or "warning" in severities
    assert any("pod-c" in f["finding"] for f in findings)  # the pod that got nothing
    live = live_data(recorder.to_dict(), TARGET, [], now=clock.now, findings=findings)
    assert live["findings"] == [{"severity": f["severity"], "text": f["finding"]}
                                for f in findings]


def test_before_any_request_the_tab_is_empty_but_lists_nodes_and_pods():
    spread = SpreadRecorder(TARGET.pod_nodes()).to_dict()
    view = live_view(spread, TARGET, T0)
    rows = rows_by_entry(view[TAB_KEY])
    assert rows["node-1"]["requests"] == "0" and rows["node-1"]["p95"] == "n/a"
    assert rows["All entry points"]["share"] == "n/a"
    assert finding_rows(spread, TARGET, None) == [
        {"name": "00000", "severity": "info", "finding": "No request recorded yet."}]
    assert len(pod_columns(spread, TARGET)) == 3


def test_pods_only_replies_named_and_unknown_get_columns_and_keys_stay_stable():
    target = make_target({"node-1": ["pod-a"]})
    recorder = SpreadRecorder(target.pod_nodes())
    recorder.record("node-1", "pod-a", 1.0)
    keys: dict[str, str] = {}
    first = pod_columns(recorder.to_dict(), target, keys)
    recorder.record("node-1", "pod-new", 1.0)  # a replacement pod discovery never saw
    recorder.record("node-1", None, 1.0)
    second = pod_columns(recorder.to_dict(), target, keys)
    assert [c["title"] for c in second] == [
        "pod-a on node-1", "pod-new (node unknown)", "reply named no pod"]
    # A page loaded earlier keeps labelling its columns right: pod-a keeps its key.
    assert first[0]["key"] == second[0]["key"]
    assert len({c["key"] for c in second}) == 3


def test_many_pods_fold_into_one_column_and_long_names_are_cut():
    long_name = "x" * 250  # a name as long as Kubernetes allows (253)
    names = [f"pod-{i:03d}" for i in range(MAX_POD_COLUMNS + 5)] + [long_name]
    target = make_target({"node-1": names})
    recorder = SpreadRecorder(target.pod_nodes())
    for name in names:
        recorder.record("node-1", name, 1.0)
    spread = recorder.to_dict()
    columns = pod_columns(spread, target)
    assert len(columns) == MAX_POD_COLUMNS + 1
    assert columns[-1]["key"] == "podrest" and len(columns[-1]["pods"]) == 6
    live = live_data(spread, target, columns, now=T0)
    assert live["counts"][0][-1] == 6 and live["pods"][-1]["short"] == "+6 more"
    cut = pod_columns(spread, make_target({"node-1": [long_name]}))[0]["title"]
    assert len(cut) < 100 and cut.startswith("xxx") and "…" in cut


def test_hostile_names_are_data_never_markup():
    # The table renders through React (text nodes), the panel sets names as text and escapes
    # them for plotly: the views pass names through as plain strings, never as JSON keys
    # (the UI rewrites those).
    evil = '</script><script>window.__xss=1</script>'
    node = "<img src=x onerror=window.__xss=1>"
    target = make_target({node: [evil]})
    recorder = SpreadRecorder(target.pod_nodes())
    recorder.record(node, evil, 1.0)
    spread = recorder.to_dict()
    columns = pod_columns(spread, target)
    assert f"{evil} on {node}" in [c["title"] for c in columns]
    rows = live_view(spread, target, T0)[TAB_KEY]
    assert rows[0]["entry"] == node
    assert all(key.isalnum() for row in rows for key in row)
    live = live_data(spread, target, columns, now=T0)
    assert live["entries"] == [node] and live["pods"][0]["name"] == evil
    assert live["pods"][0]["node"] == node


# -- the start form --------------------------------------------------------------------------

LOCUST_BUNDLE = next((Path(sys.modules["locust"].__file__).parent if "locust" in sys.modules
                      else Path(subprocess.run(
                          [sys.executable, "-c", "import importlib.util as u;"
                           "print(u.find_spec('locust').submodule_search_locations[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()))
                     .glob("webui/dist/assets/*.js"))
# How Locust's UI (the bundle above) reads a field's key: it camel-cases the page's keys
# ("_x" -> "X"), shows a key as a label by splitting lower-case-or-digit + capital-or-digit,
# and posts a key back snake-cased unless it starts with a capital.
LOCUST_JS = ("e.replace(/_([a-z0-9])/g,", "e.replace(/([a-z0-9])([A-Z0-9])/g,`$1 $2`)",
             "e[0]===e[0].toUpperCase()?e:e.replace(/([a-z0-9])([A-Z0-9])/g,`$1_$2`)"
             ".toLowerCase()")


def camel(key: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)


def shown(key: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z0-9])", r"\1 \2", camel(key))
    return text[:1].upper() + text[1:]


def posted(key: str) -> str:
    key = camel(key)
    return key if key[0] == key[0].upper() else re.sub(
        r"([a-z0-9])([A-Z0-9])", r"\1_\2", key).lower()


def test_locust_reads_field_keys_as_this_test_does():
    bundle = LOCUST_BUNDLE.read_text()
    for snippet in LOCUST_JS:
        assert snippet in bundle, snippet
    # What the form used to show and post for --max-p95-ms:
    assert shown("max_p95_ms") == "Max P9 5Ms" and posted("max_p95_ms") == "max_p9_5ms"


def test_every_field_reads_as_written_and_posts_back_unchanged():
    target = make_target({"node-1": ["pod-a"]})
    options = type("Options", (), {"kubeconfig": "/home/me/.kube/config_2", "service": "web",
                                   "namespace": "team_a", "report_dir": "reports",
                                   "raw": "", "lab_fault": []})()
    fields = form_fields(web_ui_dests(), options, target)
    labels = [f.label for f in fields]
    for field in fields:
        assert shown(field.label).replace(WORD_JOINER, "") == (
            field.label.replace(WORD_JOINER, "")), field
        assert posted(field.label) == field.label, field
        assert "%(" not in field.label
    texts = [label.replace(WORD_JOINER, "") for label in labels]
    assert texts[0].startswith("Entry:") and texts[1].startswith("Connection:")
    assert "Threshold: largest p95 latency (ms)" in texts
    # Every option the form sets has its own label; what is fixed at start-up comes last.
    assert {f.dest for f in fields if f.dest} == set(web_ui_dests()) <= set(WEB_FORM_LABELS)
    fixed = [(f.name, f.value) for f in fields if f.dest is None]
    assert fixed == [("The target", "default/web, nodePort 30080: 1 node, 1 pod (from "
                      "kubeconfig)"), ("Kubeconfig", "/home/me/.kube/config_2"),
                     ("Namespace", "team_a"), ("Service", "web"), ("Report folder", "reports")]
    assert labels[-5:] == [f.label for f in fields if f.dest is None]
    assert ui_label("x_ray p95") == "X_" + WORD_JOINER + "ray p" + WORD_JOINER + "9" + (
        WORD_JOINER + "5")


def test_template_args_keep_other_plugins_entries():
    args = {"extendedTabs": [{"key": "other", "title": "Other"}]}
    _extend(args, "extended_tabs", [{"key": "spread", "title": "Spread"}])
    _extend(args, "extended_tabs", [{"key": "spread", "title": "Spread"}])
    assert args == {"extendedTabs": [{"key": "other", "title": "Other"},
                                     {"key": "spread", "title": "Spread"}]}
    fresh: dict = {}
    _extend(fresh, "extended_csv_files", [{"href": "./a", "title": "A"}], by="href")
    assert fresh == {"extended_csv_files": [{"href": "./a", "title": "A"}]}


# -- the routes, in a real Locust web UI (subprocess) ----------------------------------------

ROUTES_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from locust.argument_parser import get_parser
    from locust.env import Environment
    import harness.plugin.listeners  # noqa: F401  (registers our options on Locust's parser)
    from harness.plugin.context import HarnessRun
    from harness.plugin import webui
    from harness.core.model import Target
    from harness.core.recorder import SpreadRecorder
    from harness.plugin.users import NodePortUser

    target = Target.from_dict(json.loads(sys.argv[1]))
    out = {}
    for login in (False, True):
        options = get_parser().parse_args(["--run-id", "live-test", "--report-dir", sys.argv[2]])
        env = Environment(user_classes=[NodePortUser], parsed_options=options)
        env.create_local_runner()
        web_ui = env.create_web_ui("127.0.0.1", 0, delayed_start=True, web_login=login)
        if login:
            web_ui.app.secret_key = "test"
            web_ui.login_manager.user_loader(lambda user_id: None)
        run = HarnessRun(env, target=target)
        env.nodeport_run = run
        webui.install(env, run)
        client = web_ui.app.test_client()
        result = out["login" if login else "open"] = {}
        result["before"] = client.get("/nodeport/report").status_code
        run.recorder = SpreadRecorder(target.pod_nodes(), nodes=[n.name for n in target.nodes])
        run.run_id, run.started = "live-test", time.time() - 5.0
        for _ in range(30):
            run.recorder.record("node-1", "pod-a", 2.0)
            run.recorder.record("node-2", "pod-a", 3.0)
        page = client.get("/")
        result["index"] = page.status_code
        result["index_html"] = page.get_data(as_text=True)
        stats = client.get("/stats/requests")
        result["stats_status"] = stats.status_code
        result["stats"] = stats.get_json(silent=True)
        for path in ("/nodeport/spread.json", "/nodeport/report", "/nodeport/live.json",
                     "/nodeport/spread.js", "/nodeport/spread.css", "/nodeport/plotly.min.js"):
            reply = client.get(path)
            body = reply.get_data(as_text=True)
            result[path] = {"status": reply.status_code, "type": reply.mimetype,
                            "disposition": reply.headers.get("Content-Disposition", ""),
                            "location": reply.headers.get("Location", ""),
                            "size": len(body), "body": body[:200000]}
        # The start form: each of these is refused, with one message, and starts nothing.
        result["forms"] = []
        for form in json.loads(sys.argv[3]) if not login else ():
            reply = client.post("/swarm", data={"user_count": "2", "spawn_rate": "2", **form})
            result["forms"].append({"status": reply.status_code,
                                    "reply": reply.get_json(silent=True),
                                    "state": env.runner.state,
                                    "users": env.runner.user_count})
    print(json.dumps(out))
''')


REFUSED_FORMS = [
    ({"entry": "bogus"}, "--entry 'bogus': choose one of all, random, single, sticky, lb"),
    ({"entry": "single", "node": "node-9"}, "--node node-9: the target has no such node"),
    ({"entry": "lb"}, "--entry lb: service web has no LoadBalancer ingress"),
    ({"max_pods": "-5"}, "--max-pods '-5': expected a whole number >= 1"),
    ({"timeout": "-1"}, "--timeout must be positive, got -1.0"),
    ({"host": "http://10.9.9.9:80"}, "Host cannot be changed from the web UI: requests go "
                                     "where Entry says (http://10.0.0.1:30080 for --entry all)"),
    ({"service": "doesnotexist"}, "--service cannot be set from the web UI"),
    ({"Target (set at start-up)": "doesnotexist"}, "The target cannot be changed from the web "
                                                   "UI: it is fixed when Locust starts"),
    ({"Service (set at start-up)": "x"}, "the form has no field 'Service (set at start-up)'"),
    ({"user_count": "abc", "entry": "random"}, "Invalid user_count value: 'abc'"),  # Locust's
    ({"Entry: all (round-robin), random, single, sticky (a node per user) or lb": "nope"},
     "--entry 'nope': choose one of"),
]


def test_routes_in_a_locust_web_ui(tmp_path):
    target = make_target({"node-1": ["pod-a"], "node-2": ["pod-b"]})
    forms = [form for form, _ in REFUSED_FORMS]
    proc = subprocess.run(
        [sys.executable, "-c", ROUTES_SCRIPT, json.dumps(target.to_dict()), str(tmp_path),
         json.dumps(forms)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    open_ui = out["open"]
    assert open_ui["before"] == 409  # no test yet: nothing to report
    assert open_ui["index"] == 200
    page = open_ui["index_html"]
    assert '"extended_tabs"' in page and '"Spread"' in page
    assert '<script defer src="./nodeport/spread.js"' in page
    # The form's fields in our order (Locust's page would sort them), with their values.
    args = json.loads(re.search(r"window.templateArgs = (.*)", page).group(1))
    fields = list(args["extra_options"])
    assert fields[0].startswith("Entry: ") and fields[1].startswith("Connection: ")
    summary = "default/web, nodePort 30080: 2 nodes, 2 pods (from kubeconfig)"
    assert args["extra_options"]["Target (set at start-up)"] == {
        "default_value": summary, "choices": [summary], "is_secret": False,
        "is_required": False, "is_multiple": False, "help_text": None}
    extended = {e["key"]: e["data"] for e in open_ui["stats"]["extended_stats"]}
    assert set(extended) == {"spread"}
    rows = {row["entry"]: row for row in extended["spread"]}
    assert rows["node-1"]["requests"] == "30" and rows["All entry points"]["requests"] == "60"
    assert "stats" in open_ui["stats"]  # Locust's own reply is intact

    live = open_ui["/nodeport/live.json"]
    assert live["status"] == 200 and live["type"] == "application/json"
    data = json.loads(live["body"])
    assert data["entries"] == ["node-1", "node-2"] and data["counts"] == [[30, 0], [30, 0]]
    assert data["findings"] and data["run"]["run_id"] == "live-test"
    for path, kind in (("/nodeport/spread.js", "javascript"), ("/nodeport/spread.css", "css"),
                       ("/nodeport/plotly.min.js", "javascript")):
        assert open_ui[path]["status"] == 200 and kind in open_ui[path]["type"], path
    assert open_ui["/nodeport/plotly.min.js"]["size"] > 1_000_000  # plotly.js itself, offline
    assert "Plotly" in open_ui["/nodeport/plotly.min.js"]["body"][:5000]
    for (form, message), answer in zip(REFUSED_FORMS, open_ui["forms"], strict=True):
        reply = answer["reply"]
        assert reply and reply["success"] is False and message in reply["message"], (form, reply)
        assert "\n" not in reply["message"] and answer["status"] == 200
        assert answer["state"] == "ready" and answer["users"] == 0, (form, answer)

    snapshot = open_ui["/nodeport/spread.json"]
    assert snapshot["status"] == 200 and snapshot["type"] == "application/json"
    assert 'filename="live-test-spread.json"' in snapshot["disposition"]
    assert json.loads(snapshot["body"])["totals"]["requests"] == 60

    report = open_ui["/nodeport/report"]
    assert report["status"] == 200, report["body"][:2000]
    assert report["type"] in ("text/html", "application/json")  # JSON until report/ exists
    assert "attachment" in report["disposition"]
    if report["type"] == "text/html":
        assert "live-test-so-far.html" in report["disposition"]
        assert "pod-a" in report["body"] and "<html" in report["body"].lower()
    assert not (tmp_path / "live-test").exists()  # built in a temporary folder, not reports/

    # With --web-login, our routes and rows sit behind Locust's login like its own.
    locked = out["login"]
    assert locked["index"] == 302 and locked["stats_status"] == 302
    assert locked["stats"] is None
    for path in ("/nodeport/spread.json", "/nodeport/report", "/nodeport/live.json",
                 "/nodeport/plotly.min.js"):
        assert locked[path]["status"] == 302 and "login" in locked[path]["location"]
        assert "pod-a" not in locked[path]["body"]


def test_importing_the_view_does_not_import_locust():
    code = ("import sys, harness.plugin.webui; "
            "print('locust' in sys.modules, 'gevent' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
