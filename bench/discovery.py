"""Discovery at scale: `nodeport-harness discover` vs the official client's typed path.

Starts a lab with ``--nodes`` extra API-only nodes (5 000: 5 003 in all), then, interleaved
over ``--reps`` repetitions (after one warm-up of each), times as fresh subprocesses:

- (a) the whole command ``nodeport-harness discover --kubeconfig K -o json`` (wall time:
  interpreter start, imports, paging raw JSON, building the Target, printing JSON; its
  output goes to a file, so the timing does not hang on when a pipe's reader runs);
- (b) the official client's typed path: ``from kubernetes import client, config;
  config.load_kube_config(K)``, ``CoreV1Api().list_node(limit=500, _continue=...)`` paging
  every node into models, and ``read_namespaced_service``.

Goals: median (a) < 2 s, (a)/(b) <= 0.5. Then, once each, where (a)'s time goes (phases
timed in one fresh process), the import cost of ``harness.plugin.listeners`` (what a Locust process
pays; no web UI module of ours, no kubernetes) and, in a real master + worker run against a
small lab, whether the worker imports kubernetes (it should not: the master sends it the
target). Prints JSON lines; the lab and the measured processes are pinned to different
cores when there are two or more. Linux only.

    python bench/discovery.py [--nodes 5000] [--reps 5] [--skip-extras]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from harness.lab.cluster import LabCluster  # noqa: E402

GOAL_A_S = 2.0
GOAL_RATIO = 0.5
STEP_TIMEOUT_S = 120

TYPED = """
import json, sys, time
t0 = time.perf_counter()
from kubernetes import client, config
t1 = time.perf_counter()
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
t2 = time.perf_counter()
nodes, token = [], None
while True:
    page = api.list_node(limit=500, _continue=token) if token else api.list_node(limit=500)
    nodes.extend(page.items)
    token = page.metadata._continue
    if not token:
        break
t3 = time.perf_counter()
svc = api.read_namespaced_service(sys.argv[2], sys.argv[3])
t4 = time.perf_counter()
print(json.dumps({"nodes": len(nodes), "node_port": svc.spec.ports[0].node_port,
                  "import_s": t1 - t0, "config_and_api_s": t2 - t1, "list_nodes_s": t3 - t2,
                  "service_s": t4 - t3}))
"""

PHASES = """
import io, json, sys, time
t0 = time.perf_counter()
from harness.discovery import DiscoveryOptions, KubeApi, build_target
t1 = time.perf_counter()
import kubernetes.client.api_client, kubernetes.config.kube_config  # what connect() imports
t2 = time.perf_counter()
opts = DiscoveryOptions(kubeconfig=sys.argv[1])
api = KubeApi.connect(opts)
t3 = time.perf_counter()
nodes = list(api.list_all("/api/v1/nodes", opts.page_size))
ns = api.namespace
service = api.get(f"/api/v1/namespaces/{ns}/services/{opts.service}")
slices = list(api.list_all(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                           opts.page_size,
                           label_selector=f"kubernetes.io/service-name={opts.service}"))
t4 = time.perf_counter()
target = build_target(nodes, service, slices=slices, opts=opts)
t5 = time.perf_counter()
data = target.to_dict()
t6 = time.perf_counter()
json.dump(data, io.StringIO(), indent=2)
t7 = time.perf_counter()
r = lambda s: round(s, 3)
print(json.dumps({"import_harness_discovery_s": r(t1 - t0), "import_kubernetes_s": r(t2 - t1),
                  "connect_s": r(t3 - t2), "api_reads_s": r(t4 - t3),
                  "build_target_s": r(t5 - t4), "to_dict_s": r(t6 - t5),
                  "json_dump_s": r(t7 - t6), "nodes": len(target.nodes)}))
"""

PLUGIN_IMPORT = """
import json, sys, time
t0 = time.perf_counter()
import locust
t1 = time.perf_counter()
import harness.plugin.listeners
t2 = time.perf_counter()
mods = sys.modules
print(json.dumps({"locust_s": t1 - t0, "harness_plugin_s": t2 - t1,
                  "kubernetes": "kubernetes" in mods,
                  "harness_webui": "harness.plugin.webui" in mods,
                  "flask_by_locust": "flask" in mods, "yaml": "yaml" in mods,
                  "plotly": "plotly" in mods, "jinja2": "jinja2" in mods}))
"""


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def pin(pid: int, cores: set[int]) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task), cores)


def timed(argv: list[str], cores: set[int] | None, env: dict | None = None
          ) -> tuple[float, str, str]:
    """Wall time of a fresh process (pinned from the start via taskset when possible)."""
    if cores and shutil.which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, sorted(cores)))] + argv
    # Output to files, not pipes: the timing must not depend on when this process reads.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=STEP_TIMEOUT_S, env=env, check=False)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if done.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({done.returncode}): {tail}")
    return elapsed, stdout, stderr


def discover_argv(kubeconfig: Path) -> list[str]:
    """The installed console script next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("nodeport-harness")
    if script.exists():
        return [str(script), "discover", "--kubeconfig", str(kubeconfig), "-o", "json"]
    return [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main())",
            "discover", "--kubeconfig", str(kubeconfig), "-o", "json"]


def compare(args, cores: set[int] | None, lab_cores: set[int] | None) -> None:
    with LabCluster(extra_api_nodes=args.nodes) as lab:
        if lab_cores:
            pin(lab.process.pid, lab_cores)
        kubeconfig = lab.kubeconfig
        a_argv = discover_argv(kubeconfig)
        _, out, _ = timed(a_argv, cores)  # warm-up, and what to ask (b) for
        target = json.loads(out)
        service = target["service"]
        b_argv = [sys.executable, "-c", TYPED, str(kubeconfig), service["name"],
                  service["namespace"]]
        timed(b_argv, cores)  # warm-up
        emit(bench="discovery_setup", nodes=len(target["nodes"]), command=" ".join(
            [Path(a_argv[0]).name] + a_argv[1:2] + ["--kubeconfig", "K", "-o", "json"]),
            json_mb=round(len(out) / 2**20, 2),
            cores=sorted(cores) if cores else None,
            lab_cores=sorted(lab_cores) if lab_cores else None)
        a_times, b_times = [], []
        for rep in range(1, args.reps + 1):
            order = ("a", "b") if rep % 2 else ("b", "a")
            for which in order:
                if which == "a":
                    seconds, out, _ = timed(a_argv, cores)
                    count = len(json.loads(out)["nodes"])
                    a_times.append(seconds)
                    emit(bench="discovery_run", rep=rep, path="a_discover_command",
                         seconds=round(seconds, 3), nodes=count)
                else:
                    seconds, out, _ = timed(b_argv, cores)
                    inner = json.loads(out)
                    b_times.append(seconds)
                    emit(bench="discovery_run", rep=rep, path="b_typed_client",
                         seconds=round(seconds, 3), nodes=inner["nodes"],
                         inside={k: round(v, 3) for k, v in inner.items() if k.endswith("_s")})
        a, b = statistics.median(a_times), statistics.median(b_times)
        emit(bench="discovery", a_discover_command_s=round(a, 3), b_typed_client_s=round(b, 3),
             ratio=round(a / b, 3), goal_a_s=GOAL_A_S, goal_ratio=GOAL_RATIO,
             a_ok=a < GOAL_A_S, ratio_ok=a / b <= GOAL_RATIO,
             a_range_s=[round(min(a_times), 3), round(max(a_times), 3)],
             b_range_s=[round(min(b_times), 3), round(max(b_times), 3)], reps=args.reps)
        if not args.skip_extras:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            _, out, _ = timed([sys.executable, "-c", PHASES, str(kubeconfig)], cores, env)
            emit(bench="discovery_phases", **json.loads(out))


def plugin_import(cores: set[int] | None) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [json.loads(timed([sys.executable, "-c", PLUGIN_IMPORT], cores, env)[1])
            for _ in range(3)]
    flags = {k: v for k, v in runs[0].items() if isinstance(v, bool)}
    emit(bench="plugin_import", runs=3,
         locust_s=round(statistics.median(r["locust_s"] for r in runs), 3),
         harness_plugin_after_locust_s=round(
             statistics.median(r["harness_plugin_s"] for r in runs), 3),
         modules_loaded=flags)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_imports(cores: set[int] | None) -> None:
    """A real distributed run (1 master, 1 worker): does the worker import kubernetes?"""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    locustfile = str(ROOT / "harness" / "plugin" / "locustfile.py")
    with LabCluster(nodes=2, pods=2) as lab, \
            tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        master = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "locust", "-f", locustfile, "--master",
             "--headless", "--expect-workers", "1", "-u", "2", "-r", "2", "-t", "2s",
             "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
             "--kubeconfig", str(lab.kubeconfig), "--report-dir", tmp, "--run-id", "w",
             "--plotlyjs", "cdn", "--only-summary"],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        worker = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "locust", "-f", locustfile, "--worker",
             "--master-host", "127.0.0.1", "--master-port", str(port)],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        if cores:
            pin(worker.pid, cores)
        try:
            _, master_err = master.communicate(timeout=STEP_TIMEOUT_S)
            _, worker_err = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            worker.kill()
            raise SystemExit("the master + worker run did not finish in time") from None
        try:
            spread = json.loads((Path(tmp) / "w" / "spread.json").read_text())
            requests = spread["totals"]["requests"]
        except (OSError, ValueError, KeyError):
            requests = None

    def imported(stderr: str) -> set[str]:
        return {line.split("|")[-1].strip() for line in stderr.splitlines()
                if line.startswith("import time:") and "|" in line}

    worker_mods, master_mods = imported(worker_err), imported(master_err)
    emit(bench="worker_imports", requests_recorded=requests,
         worker_exit=worker.returncode, master_exit=master.returncode,
         worker_imports_kubernetes=any(m.split(".")[0] == "kubernetes" for m in worker_mods),
         master_imports_kubernetes=any(m.split(".")[0] == "kubernetes" for m in master_mods),
         worker_imports_yaml="yaml" in worker_mods,
         worker_modules=len(worker_mods), master_modules=len(master_mods))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000, help="extra API-only lab nodes")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of each path")
    parser.add_argument("--skip-extras", action="store_true",
                        help="only (a) vs (b): no phases, plugin import or worker check")
    args = parser.parse_args(argv)
    if not (0 <= args.nodes <= 10_000 and 1 <= args.reps <= 20):
        parser.error("bounds: 0 <= --nodes <= 10000, 1 <= --reps <= 20")
    available = sorted(os.sched_getaffinity(0))
    cores, lab_cores = (set(available[1:]), {available[0]}) if len(available) > 1 \
        else (None, None)
    compare(args, cores, lab_cores)
    if not args.skip_extras:
        plugin_import(cores)
        worker_imports(cores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
