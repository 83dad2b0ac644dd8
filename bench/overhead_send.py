"""What NodePortUser.send() adds to a request, without the network: ns per request.

A real NodePortUser (real Environment, Target from an inventory-like dict, SpreadRecorder,
`auto` extractor) makes one real request to ``--host`` (a helloworld pod); then its HTTP
client is replaced by a stub that returns that same real FastResponse (its geventhttpclient
headers, its cached body), and ``send()`` is timed in a loop, against the bare user's send
(the same stub call, nothing else). The difference is the harness's own work per request:
entry choice, timing, failure classification, pod extraction, recording. Also times each
part alone. Prints JSON lines; bench/overhead.py runs it in its own process.

    python bench/overhead_send.py --host http://POD_IP:8080 --pod POD [--requests 300000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust.env import Environment  # noqa: E402 (imports gevent and patches, as Locust does)

from harness.core.extract import make_extractor  # noqa: E402
from harness.core.model import Endpoint, Node, ServiceInfo, ServicePort, Target  # noqa: E402
from harness.core.recorder import SpreadRecorder  # noqa: E402
from harness.plugin.context import HarnessRun  # noqa: E402
from harness.plugin.users import NodePortUser, classify_failure  # noqa: E402


class StubClient:
    """Returns one real response for every request: the HTTP exchange costs nothing."""

    def __init__(self, response):
        self.response = response

    def request(self, method, url, data=None, headers=None, name=None):
        return self.response


def make_user(host: str, pod: str) -> NodePortUser:
    address, port = host.removeprefix("http://").rsplit(":", 1)
    sport = ServicePort(name=None, port=int(port), target_port=None, node_port=int(port))
    target = Target(
        nodes=(Node(name="pod-direct", addresses={"inventory": address}, address=address,
                    address_type="inventory"),),
        service=ServiceInfo(name="helloworld", namespace="default", type="NodePort",
                            port=sport, ports=(sport,)),
        endpoints=(Endpoint(pod=pod, node="pod-direct", ip=address),),
        source="inventory",
    )
    options = SimpleNamespace(timeout=5.0, entry="all", node="", connection="keepalive",
                              method="POST", path="/api/messages",
                              body='{"sender": "{user}"}', pod_from="auto")
    env = Environment(parsed_options=options, host=host)
    run = HarnessRun(env, target=target, extractor=make_extractor("auto"))
    run.recorder = SpreadRecorder(target.pod_nodes(), nodes=[n.name for n in target.nodes])
    env.nodeport_run = run
    return NodePortUser(env)


def per_call_ns(fn, count: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the ns per call of ``fn`` (looped ``count`` times)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(count):
            fn()
        times.append((time.perf_counter() - started) / count)
    return statistics.median(times) * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="http://POD_IP:PORT of a helloworld pod")
    parser.add_argument("--pod", required=True, help="that pod's name")
    parser.add_argument("--requests", type=int, default=300_000, help="calls per timing")
    args = parser.parse_args(argv)
    count = max(1000, min(args.requests, 5_000_000))

    user = make_user(args.host, args.pod)
    label, base = user.plan[0]
    response = user.client.request(user.method, base + user.path, data=user.body,
                                   headers=user.headers, name=user.names[label])
    pod = user.extract(response)
    if classify_failure(response) is not None or pod != args.pod:
        raise SystemExit(f"the real request failed or named {pod!r}, not {args.pod!r}")
    stub = StubClient(response)
    user.client = stub
    body, headers = user.body, user.headers

    def bare_send() -> None:  # bench/bare_locustfile.py's task, on the same stub
        stub.request("POST", "/api/messages", data=body, headers=headers)

    recorder = user.harness.recorder
    extract = user.extract
    connection = user.connections[label]

    def record_only() -> None:
        recorder.record(label, pod, 1.7, None, connection)

    parts = {
        "bare_send": bare_send,
        "nodeport_send": user.send,
        "classify": lambda: classify_failure(response),
        "extract": lambda: extract(response),
        "record": record_only,
    }
    for fn in parts.values():  # warm up: entry node, pod, connection exist
        per_call_ns(fn, 10_000, 1)
    # Interleaved: bare, nodeport, parts; three passes, the median pass is reported.
    passes = [{name: per_call_ns(fn, count, 1) for name, fn in parts.items()}
              for _ in range(3)]
    ns = {name: statistics.median(p[name] for p in passes) for name in parts}
    # The stub's response carries no per-request state, so one recorder sees them all.
    print(json.dumps({
        "bench": "overhead_send", "requests": count,
        "ns_bare_send": round(ns["bare_send"]), "ns_nodeport_send": round(ns["nodeport_send"]),
        "ns_added_per_request": round(ns["nodeport_send"] - ns["bare_send"]),
        "ns_parts": {k: round(ns[k]) for k in ("classify", "extract", "record")},
        "recorded": recorder.totals()["requests"],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
