"""The Spread tab's data: the pure view from a recorder snapshot, and the Flask routes.

The view tests import no Locust. The route test runs in a subprocess (importing Locust
monkey-patches gevent, as it does for users): a real Environment with a LocalRunner and a
WebUI, driven with Flask's test client, with and without Locust's web login.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.recorder import SpreadRecorder
from harness.plugin.webui import (
    FINDINGS_KEY,
    MAX_POD_COLUMNS,
    TAB_KEY,
    _extend,
    live_view,
    pod_columns,
    spread_structure,
)

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
    key = {c["title"].split()[0]: c["key"] for c in columns}

    view = live_view(spread, TARGET, clock.now + 1.0, columns=columns)
    rows = rows_by_entry(view[TAB_KEY])
    assert list(rows) == ["node-1", "node-2", "node-3", "All entry points"]
    # Locust sorts rows by "name" by default: the total stays last.
    assert [r["name"] for r in view[TAB_KEY]] == sorted(r["name"] for r in view[TAB_KEY])
    node1, node2, node3, total = rows.values()
    assert node1[key["pod-a"]] == "60 (75 %)" and node1[key["pod-b"]] == "20 (25 %)"
    assert node1[key["pod-c"]] == "0"  # a pod that got nothing still shows, as 0
    assert node2[key["pod-b"]] == "20 (100 %)"
    assert (node1["requests"], node2["requests"], node3["requests"]) == ("80", "40", "0")
    assert (node1["pods"], node2["pods"], node3["pods"], total["pods"]) == ("1", "2", "0", "3")
    assert node1["share"] == "66.7 %" and total["share"] == "100 %"
    assert node2["failures"] == "20 (50 %)" and node2["kinds"] == "refused 20"
    assert node1["failures"] == "0" and node1["kinds"] == "–"
    assert node1["crossnode"] == "25 %"  # pod-b runs on node-2
    assert node2["crossnode"] == "0 %"
    assert total[key["pod-a"]] == "60 (60 %)" and total["requests"] == "120"
    assert total["failures"] == "20 (16.7 %)"


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
    findings = live_view(recorder.to_dict(), TARGET, clock.now,
                         run_info={"entry_strategy": "all", "connection_mode": "keepalive",
                                   "start": T0, "duration_s": 20.0})[FINDINGS_KEY]
    assert findings and all(set(f) == {"name", "severity", "finding"} for f in findings)
    severities = [f["severity"] for f in findings]
    assert "critical" in severities or "warning" in severities
    assert any("pod-c" in f["finding"] for f in findings)  # the pod that got nothing


def test_before_any_request_the_tab_is_empty_but_lists_nodes_and_pods():
    spread = SpreadRecorder(TARGET.pod_nodes()).to_dict()
    view = live_view(spread, TARGET, T0)
    rows = rows_by_entry(view[TAB_KEY])
    assert rows["node-1"]["requests"] == "0" and rows["node-1"]["p95"] == "n/a"
    assert rows["All entry points"]["share"] == "n/a"
    assert view[FINDINGS_KEY] == [
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
    row = rows_by_entry(live_view(spread, target, T0, columns=columns)[TAB_KEY])["node-1"]
    assert row["podrest"].startswith("6 (")
    cut = pod_columns(spread, make_target({"node-1": [long_name]}))[0]["title"]
    assert len(cut) < 100 and cut.startswith("xxx") and "…" in cut


def test_hostile_names_are_data_never_markup():
    # The tab renders through React (text nodes); the view must pass names through as plain
    # strings and keep them out of the JSON keys, which the UI rewrites.
    evil = '</script><script>window.__xss=1</script>'
    target = make_target({"<img src=x onerror=window.__xss=1>": [evil]})
    recorder = SpreadRecorder(target.pod_nodes())
    recorder.record("<img src=x onerror=window.__xss=1>", evil, 1.0)
    spread = recorder.to_dict()
    columns = pod_columns(spread, target)
    structure = spread_structure(columns)
    assert f"{evil} on <img src=x onerror=window.__xss=1>" in [c["title"] for c in structure]
    assert all(c["key"].isalnum() for c in structure)
    rows = live_view(spread, target, T0, columns=columns)[TAB_KEY]
    assert rows[0]["entry"] == "<img src=x onerror=window.__xss=1>"
    assert all(key.isalnum() for row in rows for key in row)


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
        for path in ("/nodeport/spread.json", "/nodeport/report"):
            reply = client.get(path)
            result[path] = {"status": reply.status_code, "type": reply.mimetype,
                            "disposition": reply.headers.get("Content-Disposition", ""),
                            "location": reply.headers.get("Location", ""),
                            "body": reply.get_data(as_text=True)[:200000]}
    print(json.dumps(out))
''')


def test_routes_in_a_locust_web_ui(tmp_path):
    target = make_target({"node-1": ["pod-a"], "node-2": ["pod-b"]})
    proc = subprocess.run(
        [sys.executable, "-c", ROUTES_SCRIPT, json.dumps(target.to_dict()), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    open_ui = out["open"]
    assert open_ui["before"] == 409  # no test yet: nothing to report
    assert open_ui["index"] == 200
    assert '"extended_tabs"' in open_ui["index_html"]
    assert '"spread-findings"' in open_ui["index_html"]
    assert "pod-b on node-2" in open_ui["index_html"]
    extended = {e["key"]: e["data"] for e in open_ui["stats"]["extended_stats"]}
    rows = {row["entry"]: row for row in extended["spread"]}
    assert rows["node-1"]["requests"] == "30" and rows["All entry points"]["requests"] == "60"
    assert extended["spread-findings"]
    assert "stats" in open_ui["stats"]  # Locust's own reply is intact

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
    for path in ("/nodeport/spread.json", "/nodeport/report"):
        assert locked[path]["status"] == 302 and "login" in locked[path]["location"]
        assert "pod-a" not in locked[path]["body"]


def test_importing_the_view_does_not_import_locust():
    code = ("import sys, harness.plugin.webui; "
            "print('locust' in sys.modules, 'gevent' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
