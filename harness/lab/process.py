"""The lab process: ``python -m harness.lab.process --config JSON``, started by ``LabCluster``.

It runs every pod as a helloworld server, the kube-proxy emulation and the API server, all
in one gevent hub (monkey-patched here only, never in the caller), writes ``lab.json`` when
ready and serves until SIGTERM/SIGINT or until its parent goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.lab.cluster import (
    EXIT_ADDRESS_IN_USE,
    LAB_FILE,
    LAB_SCHEMA,
    RESERVED_PORT,
    pid_alive,
    read_json,
    reserved_address,
)
from harness.lab.config import LabConfig
from harness.lab.state import ApiError, LabState


def run(config: LabConfig, parent_pid: int = 0) -> int:
    """The lab process body: patch gevent in, start everything, serve until told to stop.
    ``config`` has its state_dir and block settled (LabCluster does that)."""
    if config.state_dir is None or config.block is None:
        print("error: the lab process needs its state_dir and block in --config; start labs "
              "with LabCluster or 'nodeport-harness lab'", file=sys.stderr, flush=True)
        return 2
    block = config.block

    from gevent import monkey

    monkey.patch_all()  # this process only; before the API server imports ssl
    import logging

    import gevent
    from gevent.event import Event

    from harness.helloworld import HelloApp, make_app, serve
    from harness.lab.proxy import NodePortProxy

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")

    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        reservation.bind((reserved_address(block), RESERVED_PORT))
        reservation.listen(1)
    except OSError as err:
        log(f"error: the lab's address block 127.{block}.0.0/16 is in use "
            f"({reserved_address(block)}:{RESERVED_PORT}: {err.strerror}); another lab may "
            "be running there: stop it or pass another --block")
        return EXIT_ADDRESS_IN_USE
    _raise_file_limit()
    try:
        state = LabState(config)
    except ApiError as err:  # the config was checked; the Service the state makes may not be
        log(f"error: {err}")
        return 2

    # Set before the datapath starts: a SIGTERM meanwhile still stops the lab cleanly.
    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)

    if config.control_plane == "real":
        return _run_real(state, config, stop, parent_pid, log, reservation)
    if config.datapath == "kernel":
        return _run_kernel(state, config, stop, parent_pid, log, reservation)

    apps: dict[str, HelloApp] = {}
    servers: dict[str, Any] = {}
    for index, pod in enumerate(state.pods):
        app = make_app(pod.name, pod.node, config.service_ms(index), config.pod_concurrency)
        try:
            servers[pod.name] = serve(app, pod.ip, pod.port)
        except OSError as err:
            log(f"error: pod {pod.name} cannot listen on {pod.ip}:{pod.port} "
                f"({err.strerror}); stop whatever uses it or pass another --block")
            return EXIT_ADDRESS_IN_USE
        apps[pod.name] = app

    def sync_pods() -> None:
        alive = {pod.name for pod in state.pods}
        for name in [name for name in servers if name not in alive]:
            servers.pop(name).kill()  # a killed pod stops serving and resets its clients
        for pod in state.pods:
            if pod.name in servers or pod.name in apps:
                continue
            # A restarted pod's replacement: it listens at once; the proxy only sends it
            # connections once it is ready.
            app = make_app(pod.name, pod.node, config.pod_service_ms, config.pod_concurrency)
            try:
                servers[pod.name] = serve(app, pod.ip, pod.port)
            except OSError as err:
                log(f"pod {pod.name} cannot listen on {pod.ip}:{pod.port} ({err.strerror})")
            apps[pod.name] = app  # its count shows in the stats, as a killed pod's does

    state.subscribe(sync_pods)
    state.later = gevent.spawn_later

    def handoff(pod_name: str) -> Any:
        server = servers.get(pod_name)
        return server.adopt if server is not None else None

    proxy = NodePortProxy(state, proxy_mode=config.proxy_mode, hop_ms=config.hop_ms,
                          lb_check_s=config.lb_check_s, seed=config.seed, log=log,
                          handoff=handoff if config.data_plane == "handoff" else None)
    proxy.start()
    if proxy.errors:
        log(f"error: {proxy.errors[0]}; pass another --node-port or stop what uses it")
        return 2

    def stats() -> dict[str, int]:
        return {name: app.served for name, app in apps.items()}

    def teardown() -> None:
        proxy.stop()
        for server in servers.values():
            server.kill()

    return _serve(state, config, stats, teardown, stop, parent_pid, log, reservation)


def _serve(state: LabState, config: LabConfig, stats: Any, teardown: Any, stop: Any,
           parent_pid: int, log: Any, reservation: socket.socket) -> int:
    """The API server, the kubeconfigs and lab.json, for either datapath; serves until
    ``stop`` is set, then tears down (``teardown``: the datapath) and returns the exit code."""

    from harness.lab import apiserver

    assert config.state_dir is not None
    state_dir = Path(config.state_dir)
    ca_pem, certfile, keyfile = apiserver.make_tls(state_dir)  # writes ca.crt too
    token = secrets.token_urlsafe(32)
    tokens = {token: "admin"}
    restricted = secrets.token_urlsafe(32) if config.restricted_token else None
    if restricted:
        tokens[restricted] = "restricted"
    api = apiserver.serve(state, host="127.0.0.1", port=0, certfile=certfile, keyfile=keyfile,
                          tokens=tokens, stats=stats, faults=state.apply_fault)
    api_url = f"https://127.0.0.1:{api.server_port}"
    kubeconfig = state_dir / "kubeconfig"
    apiserver.write_kubeconfig(str(kubeconfig), api_url, ca_pem, token,
                               namespace=state.namespace)
    restricted_kubeconfig = None
    if restricted:
        restricted_kubeconfig = state_dir / "kubeconfig-restricted"
        apiserver.write_kubeconfig(str(restricted_kubeconfig), api_url, ca_pem, restricted,
                                   context="lab-restricted", namespace=state.namespace)

    info = _lab_info(state, config, api_url, kubeconfig, restricted_kubeconfig, token)
    _ready_until_stopped(state_dir, info, stop, parent_pid, log,
                         f"lab ready: {len(info['nodes'])} nodes, {len(state.pods)} pods, "
                         f"API {api_url}")
    api.stop(timeout=1)
    teardown()
    reservation.close()
    log("lab stopped")
    return 0


def _ready_until_stopped(state_dir: Path, info: dict[str, Any], stop: Any, parent_pid: int,
                         log: Any, ready: str) -> None:
    """Announce the lab (lab.json, then ``ready`` in the log) and serve until ``stop`` is
    set; lab.json goes again when it is still ours."""
    import gevent

    from harness.lab.apiserver import write_private

    lab_file = state_dir / LAB_FILE

    def watch_parent() -> None:
        # A caller killed hard (SIGKILL) cannot stop us: notice and go, leaving nothing.
        while not stop.wait(0.5):
            if parent_pid and (os.getppid() != parent_pid or not pid_alive(parent_pid)):
                stop.set()

    watcher = gevent.spawn(watch_parent)
    if not stop.is_set():  # a SIGTERM while the datapath started: no "ready" to announce
        write_private(lab_file, json.dumps(info, indent=2) + "\n")
        log(ready)
    stop.wait()
    watcher.kill()
    with contextlib.suppress(OSError):
        if read_json(lab_file).get("pid") == os.getpid():
            lab_file.unlink()


def _run_kernel(state: LabState, config: LabConfig, stop: Any, parent_pid: int, log: Any,
                reservation: socket.socket) -> int:
    """--datapath kernel: nodes and pods in network namespaces (``kernel.py``)."""
    import gevent

    from harness.lab.kernel import KernelDatapath

    assert config.state_dir is not None
    state.later = gevent.spawn_later  # a restarted pod's replacement turns ready later
    datapath = KernelDatapath(state, config, Path(config.state_dir), log=log)
    try:
        datapath.start()
    except LabError as err:
        datapath.stop()
        reservation.close()
        log(f"error: {err}")
        return 2
    return _serve(state, config, datapath.stats, datapath.stop, stop, parent_pid, log,
                  reservation)


def _run_real(state: LabState, config: LabConfig, stop: Any, parent_pid: int, log: Any,
              reservation: socket.socket) -> int:
    """--control-plane real (``reallab.py``): the real control plane on the kernel datapath,
    the lab's control API beside it."""
    from gevent.pywsgi import WSGIServer

    from harness.lab import apiserver
    from harness.lab.reallab import RealLab, control_app

    assert config.state_dir is not None
    state_dir = Path(config.state_dir)
    try:
        lab = RealLab(state, config, log)
    except LabError as err:
        reservation.close()
        log(f"error: {err}")
        return 2
    try:
        lab.start()
    except (LabError, OSError) as err:
        log(f"error: {err}")
        lab.stop()
        reservation.close()
        return 2
    cp = lab.control_plane
    kubeconfig = state_dir / "kubeconfig"
    apiserver.write_kubeconfig(str(kubeconfig), cp.api_url, cp.ca_pem, cp.tokens["admin"],
                               namespace=state.namespace)
    restricted = None
    if config.restricted_token and cp.restricted_token:
        restricted = state_dir / "kubeconfig-restricted"
        apiserver.write_kubeconfig(str(restricted), cp.api_url, cp.ca_pem, cp.restricted_token,
                                   context="lab-restricted", namespace=state.namespace)
    control = WSGIServer(("127.0.0.1", 0), control_app(lab, cp.tokens["admin"]), log=None,
                         error_log=None, certfile=str(cp.pki / "control.crt"),
                         keyfile=str(cp.pki / "control.key"))
    control.start()
    info = lab.info(state.block, kubeconfig, restricted)
    info["control_url"] = f"https://127.0.0.1:{control.server_port}"
    _ready_until_stopped(state_dir, info, stop, parent_pid, log,
                         f"lab ready: {len(info['nodes'])} nodes, {len(info['pods'])} pods, "
                         f"Kubernetes {info['kubernetes_version']} at {cp.api_url}")
    control.stop(timeout=1)
    lab.stop()
    reservation.close()
    log("lab stopped")
    return 0


def _lab_info(state: LabState, config: LabConfig, api_url: str, kubeconfig: Path,
              restricted_kubeconfig: Path | None, token: str) -> dict[str, Any]:
    """lab.json: how to reach the lab, and its ground truth."""
    assert config.state_dir is not None
    state_dir = Path(config.state_dir)
    svc = state.service(state.namespace, state.app) or {}
    port = (svc.get("spec", {}).get("ports") or [{}])[0]
    return {
        "schema": LAB_SCHEMA,
        "pid": os.getpid(),
        "block": state.block,
        "state_dir": str(state_dir.resolve()),
        "api_url": api_url,
        "ca": str((state_dir / "ca.crt").resolve()),
        "token": token,
        "kubeconfig": str(kubeconfig.resolve()),
        "restricted_kubeconfig": str(restricted_kubeconfig.resolve())
        if restricted_kubeconfig else None,
        "namespace": state.namespace,
        "service": state.app,
        "service_type": config.service_type,
        "service_port": port.get("port"),
        "node_port": port.get("nodePort"),
        "lb_address": state.lb_address,
        "policy": config.policy,
        "affinity": config.affinity,
        "proxy_mode": config.proxy_mode,
        "data_plane": config.data_plane,
        "datapath": config.datapath,
        "hop_ms": config.hop_ms,
        "lb_check_s": config.lb_check_s,
        "restart_delay_s": config.restart_delay_s,
        "nodes": [
            {"name": n.name, "external_ip": n.external_ip, "internal_ip": n.internal_ip,
             "zone": n.zone}
            for n in state.live_nodes()
        ],
        "api_only_nodes": len(state.nodes) - len(state.live_nodes()),
        "pods": [{"name": p.name, "node": p.node, "ip": p.ip, "port": p.port}
                 for p in state.pods],
        # Ground truth for capacity runs against a lab started by hand.
        "pod_service_ms": config.pod_service_ms,
        "pod_concurrency": config.pod_concurrency,
        "started": time.time(),
    }


def _raise_file_limit() -> None:
    # Every proxied connection holds two descriptors; the default soft limit (1024) is low.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lab.process",
                                     description="The lab process (started by LabCluster).")
    parser.add_argument("--config", required=True,
                        help="LabConfig as JSON (to_dict), state_dir and block included")
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="exit when this process goes away (0: never)")
    args = parser.parse_args(argv)
    try:
        config = LabConfig.from_dict(json.loads(args.config))
    except (LabError, ValueError) as err:
        print(f"error: --config: {err}", file=sys.stderr, flush=True)
        return 2
    return run(config, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
