"""The lab's settings, once: a frozen ``LabConfig`` with defaults, validation, JSON and flags.

``LabCluster`` takes it (or its fields as keywords), hands it to the lab process as JSON
(``to_dict``/``from_dict``), and ``LabState`` builds the lab from it; ``nodeport-harness lab``
and the stand-alone API server add its flags with ``add_arguments`` and read them back with
``from_args``. Every refusal is a ``LabError`` of one line naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import LabError

# Kubernetes' order (what the API server's own messages list); flags list the default first.
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
POLICIES = ("Cluster", "Local")
AFFINITIES = ("None", "ClientIP")
PROXY_MODES = ("iptables", "ipvs")
DATA_PLANES = ("handoff", "pipe")
DATAPATHS = ("userspace", "kernel")
CONTROL_PLANES = ("emulated", "real")
MAX_KERNEL_BLOCK = 127  # a kernel lab's block b uses 198.18.<2b>.0/24 and 198.18.<2b+1>.0/24
MAX_NODES = 89  # live nodes: 10 + i must stay a valid last octet with room for the LB (.100)
MAX_PODS = 250  # pod addresses are 127.<block>.1.<1..250>
MAX_EXTRA_API_NODES = 10000
MAX_BLOCK = 250
NODE_PORTS = (30000, 32767)
MAX_RESTART_DELAY_S = 300.0  # a restarted pod's replacement is ready within this
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _setting(default: Any, text: str | None, **flag: Any) -> Any:
    """A field with its command-line flag: ``text`` is its help (None: none), ``flag`` holds
    argparse keywords plus ``flag`` (its spelling when not --<name>), ``cli_default`` (when
    the commands' default differs from the API's) and ``parse`` (flag value -> field value,
    LabError when it cannot)."""
    return field(default=default, metadata={"help": text, **flag})


def _placement(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise LabError(f"--placement must be comma-separated pod counts, e.g. 3,2,1; "
                       f"got {text!r}") from None


def _block(text: str | int | None) -> int | None:
    if text is None or str(text).lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise LabError(f"--block must be a number 0-{MAX_BLOCK} or 'auto', got {text!r}"
                       ) from None


def _choices(values: tuple[str, ...], default: str) -> tuple[str, ...]:
    return (default, *(v for v in values if v != default))


@dataclass(frozen=True)
class LabConfig:
    """Everything a lab is started with. Invalid values raise LabError on construction."""

    nodes: int = _setting(3, "worker nodes (default 3)", type=int)
    pods: int = _setting(6, "helloworld pods (default 6)", type=int)
    # Pods per node; when given, it decides the pod count (``pods`` becomes its sum).
    placement: tuple[int, ...] | None = _setting(
        None, "pods per node, e.g. 3,2,1 (default: even)", parse=_placement)
    service_type: str = _setting("NodePort", None,
                                 choices=_choices(SERVICE_TYPES, "NodePort"))
    node_port: int | None = _setting(None, "the Service's nodePort (default: allocated)",
                                     type=int)
    policy: str = _setting("Cluster", "externalTrafficPolicy (default Cluster)",
                           choices=_choices(POLICIES, "Cluster"))
    affinity: str = _setting("None", "sessionAffinity (default None)",
                             choices=_choices(AFFINITIES, "None"))
    proxy_mode: str = _setting("iptables",
                               "kube-proxy mode: random (iptables) or round-robin (ipvs)",
                               choices=_choices(PROXY_MODES, "iptables"))
    pod_service_ms: float = _setting(0.0, "time each request takes in a pod, ms (default 0)",
                                     type=float)
    slow_pod_ms: float = _setting(
        0.0, "time added to the first pod's requests, ms: an injected slow pod (default 0)",
        type=float)
    pod_concurrency: int = _setting(
        0, "requests a pod serves at once; the rest queue (0: no cap)", type=int)
    external_ip: bool = _setting(True, "nodes have an InternalIP only", flag="--no-external-ip",
                                 action="store_true", parse=lambda off: not off)
    # None: LabCluster picks a free block. The `lab` command keeps the documented addresses
    # (block 0) unless told 'auto'.
    block: int | None = _setting(
        None, f"address block: 127.<B>.x.y, 0-{MAX_BLOCK}, or 'auto' (default 0)",
        cli_default="0", parse=_block)
    extra_api_nodes: int = _setting(
        0, "extra nodes the API lists without listeners (scale tests)", type=int)
    hop_ms: float = _setting(0.2, "added per client->pod chunk when the pod is on another node",
                             type=float)
    restricted_token: bool = _setting(
        False, "also write a least-privilege kubeconfig (kubeconfig-restricted)",
        action="store_true")
    lb_check_s: float = _setting(0.5, "LoadBalancer health-check interval, s (default 0.5)",
                                 type=float)
    restart_delay_s: float = _setting(
        1.0, "seconds a restarted pod's replacement takes to become ready (default 1)",
        type=float)
    seed: int | None = _setting(None, "random seed (pod names, nodePort, choices)", type=int)
    data_plane: str = _setting(
        "handoff", "how the proxy reaches a pod: handoff (the socket itself) or pipe (a relay)",
        choices=_choices(DATA_PLANES, "handoff"))
    datapath: str = _setting(
        "userspace", "userspace (the lab process proxies, pods in it; any user) or kernel "
        "(nodes and pods in network namespaces, kube-proxy's iptables rules; root)",
        choices=_choices(DATAPATHS, "userspace"))
    control_plane: str = _setting(
        "emulated", "emulated (the lab's own API subset) or real (kube-apiserver, etcd, "
        "controllers, scheduler and kube-proxy built by 'nodeport-harness lab build', a "
        "process kubelet; implies --datapath kernel; root)",
        choices=_choices(CONTROL_PLANES, "emulated"))
    namespace: str = _setting("default", "the application's namespace (default default)")
    # Where lab.json, the kubeconfigs and the log go; None: a temporary directory of its own.
    # Each command spells its own --state-dir (its default and help differ).
    state_dir: str | None = field(default=None, metadata={})

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise through the back door, once
        if self.placement is not None:
            set_(self, "placement", tuple(self.placement) or None)
        if self.state_dir is not None:
            set_(self, "state_dir", os.fspath(self.state_dir))
        if self.control_plane == "real":
            set_(self, "datapath", "kernel")  # the real control plane runs on the kernel's
        self._check()
        if self.placement:
            set_(self, "pods", sum(self.placement))

    # -- validation ------------------------------------------------------------------------

    def _check(self) -> None:
        for name, allowed in (("service_type", SERVICE_TYPES), ("policy", POLICIES),
                              ("affinity", AFFINITIES), ("proxy_mode", PROXY_MODES),
                              ("data_plane", DATA_PLANES), ("datapath", DATAPATHS),
                              ("control_plane", CONTROL_PLANES)):
            value = getattr(self, name)
            if value not in allowed:
                listed = ", ".join(_choices(allowed, getattr(LabConfig, name)))
                raise LabError(f"{flag_of(name)} must be one of {listed}, got {value!r}")
        for name in ("nodes", "pods", "pod_concurrency", "extra_api_nodes"):
            _need_int(name, getattr(self, name))
        for name in ("node_port", "seed", "block"):
            if getattr(self, name) is not None:
                _need_int(name, getattr(self, name))
        for name in ("pod_service_ms", "slow_pod_ms", "hop_ms", "lb_check_s",
                     "restart_delay_s"):
            _need_number(name, getattr(self, name))
        for name in ("external_ip", "restricted_token"):
            if not isinstance(getattr(self, name), bool):
                raise LabError(f"lab setting {name} must be true or false, "
                               f"got {getattr(self, name)!r}")
        if not 1 <= self.nodes <= MAX_NODES:
            raise LabError(f"--nodes must be between 1 and {MAX_NODES}, got {self.nodes}")
        if not 0 <= self.pods <= MAX_PODS:
            raise LabError(f"--pods must be between 0 and {MAX_PODS}, got {self.pods}")
        if self.placement is not None:
            if (len(self.placement) != self.nodes
                    or any(not _is_int(p) or p < 0 for p in self.placement)):
                raise LabError(f"--placement needs {self.nodes} non-negative counts (one per "
                               f"node), got {','.join(map(str, self.placement))}")
            if sum(self.placement) > MAX_PODS:
                raise LabError(f"--placement puts more than {MAX_PODS} pods in the lab; "
                               "use fewer")
        if self.node_port is not None and not NODE_PORTS[0] <= self.node_port <= NODE_PORTS[1]:
            raise LabError(f"--node-port must be in {NODE_PORTS[0]}-{NODE_PORTS[1]}, "
                           f"got {self.node_port}")
        for name in ("pod_service_ms", "slow_pod_ms", "pod_concurrency", "extra_api_nodes",
                     "hop_ms"):
            if getattr(self, name) < 0:
                raise LabError(f"{flag_of(name)} must not be negative")
        if self.extra_api_nodes > MAX_EXTRA_API_NODES:
            raise LabError(f"--extra-api-nodes must be at most {MAX_EXTRA_API_NODES}")
        if not 0.01 <= self.lb_check_s <= 60:
            raise LabError(f"--lb-check-s must be between 0.01 and 60 seconds, "
                           f"got {self.lb_check_s}")
        if not 0 <= self.restart_delay_s <= MAX_RESTART_DELAY_S:
            raise LabError(f"--restart-delay-s must be between 0 and {MAX_RESTART_DELAY_S:g} "
                           f"seconds, got {self.restart_delay_s}")
        if self.block is not None and not 0 <= self.block <= MAX_BLOCK:
            raise LabError(f"--block must be between 0 and {MAX_BLOCK}, got {self.block}")
        if self.datapath == "kernel":
            self._check_kernel()
        if self.control_plane == "real":
            self._check_real()
        if not isinstance(self.namespace, str) or not _LABEL.fullmatch(self.namespace):
            raise LabError(f"--namespace must be a lowercase RFC 1123 label, e.g. default; "
                           f"got {self.namespace!r}")

    def _check_kernel(self) -> None:
        # What the kernel datapath does not model; it says so instead of ignoring it.
        if self.proxy_mode != "iptables":
            raise LabError("--datapath kernel runs kube-proxy's iptables mode only; use "
                           "--proxy-mode iptables, or --datapath userspace for ipvs")
        if self.block is not None and self.block > MAX_KERNEL_BLOCK:
            raise LabError(f"--datapath kernel needs --block 0-{MAX_KERNEL_BLOCK} "
                           f"(198.18.<2B>.0/24 and the next), got {self.block}")
        if self.extra_api_nodes:
            raise LabError("--extra-api-nodes needs --datapath userspace (the kernel datapath "
                           "builds every node it lists)")

    def _check_real(self) -> None:
        # The pods run the Deployment's template (--placement works through the nodes' pod
        # capacity: kube-scheduler fills each node to its count).
        if self.slow_pod_ms:
            raise LabError("--slow-pod-ms needs --control-plane emulated (every replica of a "
                           "real Deployment runs the same template)")

    # -- the lab process's --config JSON ---------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["placement"] = list(self.placement) if self.placement else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabConfig:
        """A config from ``to_dict``'s form; missing settings take their defaults."""
        if not isinstance(data, dict):
            raise LabError(f"a lab config is a JSON object of settings, got {data!r}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise LabError(f"unknown lab setting(s) {', '.join(unknown)}; known: "
                           f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        return cls(**data)

    def service_ms(self, pod_index: int | None) -> float:
        """A pod's service time: the first pod (index 0) is the slow one when slow_pod_ms is
        set; replacements (no index) get the common time."""
        return self.pod_service_ms + (self.slow_pod_ms if pod_index == 0 else 0.0)

    def replace(self, **settings: Any) -> LabConfig:
        return dataclasses.replace(self, **settings)


# -- command-line flags ------------------------------------------------------------------------


def flag_of(name: str) -> str:
    """The flag a setting is spelled with (``--no-external-ip`` for ``external_ip``)."""
    meta = _field(name).metadata
    return meta.get("flag") or "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                  names: Iterable[str]) -> None:
    """Add these settings' flags (in LabConfig's order) to a parser or an argument group."""
    wanted = set(names)
    unknown = wanted - {f.name for f in _flagged()}
    if unknown:
        raise ValueError(f"no flag for lab setting(s) {', '.join(sorted(unknown))}")
    for spec in _flagged():
        if spec.name not in wanted:
            continue
        options = {k: v for k, v in spec.metadata.items()
                   if k not in ("flag", "cli_default", "parse")}
        if options.get("help") is None:
            options.pop("help", None)
        if options.get("action") != "store_true":
            options["default"] = spec.metadata.get("cli_default", spec.default)
        parser.add_argument(flag_of(spec.name), **options)


def from_args(args: argparse.Namespace, **settings: Any) -> LabConfig:
    """The config the parsed flags (those the parser had) say, with ``settings`` on top."""
    values: dict[str, Any] = {}
    for spec in _flagged():
        dest = flag_of(spec.name).removeprefix("--").replace("-", "_")
        if hasattr(args, dest):
            parse: Callable[[Any], Any] = spec.metadata.get("parse") or (lambda v: v)
            values[spec.name] = parse(getattr(args, dest))
    return LabConfig(**{**values, **settings})


def _flagged() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(LabConfig) if "help" in f.metadata]


def _field(name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(LabConfig)}[name]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need_int(name: str, value: Any) -> None:
    if not _is_int(value):
        raise LabError(f"{flag_of(name)} must be a whole number, got {value!r}")


def _need_number(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise LabError(f"{flag_of(name)} must be a number, got {value!r}")
