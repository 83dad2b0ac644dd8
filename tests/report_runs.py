"""Synthetic run folders for the report tests: a real SpreadRecorder fed with a fake clock."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target
from harness.core.recorder import SpreadRecorder
from harness.report.files import write_json_atomic

T0 = 1_700_000_000.0
# Pod names come from servers' replies: a report must show these as text, never run them.
HOSTILE_PODS = (
    "</script><script>window.__xss=1</script>",
    "</script><script>document.body.dataset.xss=1</script>",
    '<img src=x onerror="document.body.dataset.xss=2">',
    "\"quoted'",
    "pöd-ünïcødé-日本-\u2028-x",
    "p" * 300,
)


def make_target(nodes: int = 3, pods: list[str] | None = None,
                policy: str = "Cluster") -> Target:
    names = [f"node-{i + 1}" for i in range(nodes)]
    pods = pods or [f"helloworld-5f7c9d8b6-{i:05d}" for i in range(6)]
    return Target(
        nodes=tuple(
            Node(name=n, addresses={"InternalIP": f"10.0.0.{i + 11}", "Hostname": n},
                 address=f"10.0.0.{i + 11}", address_type="InternalIP", zone=f"zone-{i % 2}")
            for i, n in enumerate(names)
        ),
        service=ServiceInfo(
            name="helloworld", namespace="demo", type="NodePort",
            port=ServicePort("http", 80, 8080, 30080),
            ports=(ServicePort("http", 80, 8080, 30080),),
            external_traffic_policy=policy,
        ),
        endpoints=tuple(
            Endpoint(pod=p, node=names[i % nodes], ip=f"10.244.{i % nodes}.{i + 2}")
            for i, p in enumerate(pods)
        ),
        source="lab",
    )


def record_run(target: Target, seconds: int = 30, per_second: int = 60,
               down: tuple[str, int, int] | None = ("node-3", 10, 20),
               seed: int = 7, entry: str = "all") -> SpreadRecorder:
    """Entry round-robin over the nodes (``all``), always the first (``single``) or ``lb``;
    random pods; one node down for a while."""
    rng = random.Random(seed)
    now = [T0]
    recorder = SpreadRecorder(target.pod_nodes(), clock=lambda: now[0],
                              nodes=[n.name for n in target.nodes])
    nodes = {"all": [n.name for n in target.nodes], "single": [target.nodes[0].name],
             "lb": ["lb"]}[entry]
    pods = [e.pod for e in target.endpoints]
    where = target.pod_nodes()
    count = 0
    for second in range(seconds):
        for i in range(per_second):
            now[0] = T0 + second + i / per_second
            entry_node = nodes[count % len(nodes)]
            connection = (entry_node, count % 12)
            count += 1
            if down and entry_node == down[0] and down[1] <= second < down[2]:
                recorder.record(entry_node, None, 0.2, "refused", connection)
                continue
            if count % 97 == 0:
                recorder.record(entry_node, rng.choice(pods), 30.0, "http_503", connection)
                continue
            pod = rng.choice(pods)
            latency = rng.uniform(2.0, 6.0) + (1.5 if where[pod] != entry_node else 0.0)
            if entry == "lb":  # the node the LB chose for the connection, as the pod saw it
                recorder.note_via("lb", target.nodes[connection[1] % len(target.nodes)].name)
            recorder.record(entry_node, pod, latency, None, connection)
    if down:
        recorder.mark(T0 + down[1], f"{down[0]} down")
        recorder.mark(T0 + down[2], f"{down[0]} up")
    recorder.close()
    return recorder


def run_info(run_id: str, seconds: int, options: dict[str, Any] | None = None,
             partial: str | None = None, down: tuple[str, int, int] | None = None,
             entry: str = "all") -> dict[str, Any]:
    faults = []
    if down:
        faults = [
            {"t": down[1], "kind": "node", "name": down[0], "action": "down",
             "time": T0 + down[1]},
            {"t": down[2], "kind": "node", "name": down[0], "action": "up",
             "time": T0 + down[2]},
        ]
    opts = {"max_fail_ratio": None, "max_p95_ms": None, "max_p99_ms": None,
            "min_fairness": None, "require_all_pods": False, "max_node_share": None,
            "method": "POST", "path": "/api/messages", "pod_from": "auto", "timeout": 5.0,
            "node": "", "kubeconfig": "/tmp/lab/kubeconfig"}
    opts.update(options or {})
    return {
        "schema": "nodeport-harness/run/v1", "run_id": run_id, "harness_version": "0.1.0",
        "locust_version": "2.x", "python": "3.11", "started": T0, "stopped": T0 + seconds,
        "duration_s": float(seconds), "role": "local", "entry": entry,
        "connection": "keepalive", "users": 12, "spawn_rate": None, "stop_timeout_s": 7.0,
        "in_flight": "users stopped after their request in flight completed",
        "load_model": "closed loop: each user waits for its reply (coordinated omission "
                      "applies)",
        "faults": faults, "workers": {}, "partial": partial,
        "command": "nodeport-harness run --lab -u 12 -t 30s --web-auth admin:hunter2",
        "options": opts,
    }


def make_run(parent: Path, run_id: str = "run-test", *, nodes: int = 3,
             pods: list[str] | None = None, seconds: int = 30, per_second: int = 60,
             down: tuple[str, int, int] | None = ("node-3", 10, 20),
             options: dict[str, Any] | None = None, partial: str | None = None,
             policy: str = "Cluster", entry: str = "all") -> Path:
    """A run folder as `nodeport-harness run` leaves it, before the reports are built."""
    target = make_target(nodes, pods, policy)
    recorder = record_run(target, seconds, per_second, down, entry=entry)
    run_dir = parent / run_id
    write_json_atomic(run_dir / "target.json", target.to_dict())
    write_json_atomic(run_dir / "spread.json", recorder.to_dict())
    info = run_info(run_id, seconds, options, partial, down, entry)
    write_json_atomic(run_dir / "run.json", info)
    return run_dir
