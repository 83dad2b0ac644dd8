"""Where a run's target comes from: the embedded lab (``--lab``), a kubeconfig (or in-cluster
config), or an inventory file; the target options every command shares; how to inject a
fault into a lab target and read the lab's fault log; what watches the target's cluster
during a run."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.core.faults import Fault
from harness.core.model import Target
from harness.discovery import ADDRESS_TYPES, DiscoveryOptions
from harness.errors import DiscoveryError, HarnessError, LabError
from harness.lab.config import LabConfig, flag_of


def add_target_arguments(parser, *, lab_default: bool = False, add=None) -> None:
    """Target options; `add` lets Locust's parser attach its web-UI and env-var settings."""
    parser = _Adder(add) if add else parser
    parser.add_argument("--lab", action="store_true", default=lab_default,
                        help="start the embedded lab cluster for this command and target it")
    add_lab_shape_arguments(parser)
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=None,
                        help="namespace of the Service (default: the context's, else default)")
    parser.add_argument("--service", default="helloworld",
                        help="Service name (default: %(default)s)")
    ports = parser
    ports.add_argument("--port-name", default=None, help="Service port name (multi-port Services)")
    ports.add_argument("--port", type=int, default=None,
                       help="Service port number (multi-port Services)")
    parser.add_argument("--address-type", default="auto", choices=ADDRESS_TYPES,
                        help="node address to target: auto (ExternalIP, else InternalIP), "
                             "ExternalIP or InternalIP (default: %(default)s)")
    parser.add_argument("--inventory", default=None,
                        help="YAML/JSON inventory file instead of querying a cluster")
    parser.add_argument("--include-control-plane", action="store_true", default=False,
                        help="also target control-plane nodes")
    parser.add_argument("--include-not-ready", action="store_true", default=False,
                        help="also target NotReady nodes")


class _Adder:
    def __init__(self, add):
        self.add_argument = add


# -- the lab --lab starts: `nodeport-harness lab`'s shape settings, spelled --lab-<flag> ----------

# Every setting of `nodeport-harness lab` that shapes the cluster. Not its --block (a
# throw-away lab takes a free address block) nor --restricted-token (the command uses the
# lab's admin kubeconfig).
LAB_SHAPE = ("nodes", "pods", "placement", "service_type", "node_port", "policy", "affinity",
             "proxy_mode", "pod_service_ms", "slow_pod_ms", "pod_concurrency", "external_ip",
             "extra_api_nodes", "hop_ms", "lb_check_s", "restart_delay_s", "seed", "datapath",
             "control_plane")
_LAB_HELP = {"service_type": "the Service's type: NodePort, ClusterIP or LoadBalancer "
                             "(default NodePort; LoadBalancer with --entry lb)"}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def lab_flag(name: str) -> str:
    """How --lab spells a lab setting: --lab-nodes, --lab-no-external-ip."""
    return "--lab-" + flag_of(name).removeprefix("--")


def _lab_specs() -> list[dataclasses.Field]:
    return [spec for spec in dataclasses.fields(LabConfig) if spec.name in LAB_SHAPE]


def add_lab_shape_arguments(parser) -> None:
    """--lab-<flag> for each LAB_SHAPE setting, typed as `nodeport-harness lab` types it.
    Not given: None (False for a switch), so what was given can be told apart."""
    for spec in _lab_specs():
        options = {k: v for k, v in spec.metadata.items() if k in ("type", "choices", "action")}
        options["default"] = False if options.get("action") == "store_true" else None
        options["help"] = "with --lab: " + (_LAB_HELP.get(spec.name) or spec.metadata["help"])
        parser.add_argument(lab_flag(spec.name), **options)


def _dest(name: str) -> str:
    return lab_flag(name).removeprefix("--").replace("-", "_")


def lab_shape_given(args) -> dict[str, Any]:
    """The lab settings the --lab-<flag> options gave (name -> value, as LabConfig takes it)."""
    given: dict[str, Any] = {}
    for spec in _lab_specs():
        value = getattr(args, _dest(spec.name), None)
        if value is None or value is False:
            continue
        parse = spec.metadata.get("parse")
        try:
            given[spec.name] = parse(value) if parse else value
        except LabError as err:
            raise LabError(_lab_flags(str(err))) from None
    return given


def clear_lab_shape(args) -> None:
    """Forget the --lab-<flag> options (a command that started the lab itself hands the run
    its kubeconfig instead)."""
    for spec in _lab_specs():
        if hasattr(args, _dest(spec.name)):
            setattr(args, _dest(spec.name), None)


def lab_config(args, **defaults: Any) -> LabConfig | None:
    """The lab --lab starts: LabConfig's defaults, then the command's ``defaults``, then the
    --lab-<flag> options; with --entry lb its Service is a LoadBalancer unless
    --lab-service-type says otherwise (then: a one-line refusal). None without --lab, and a
    one-line refusal when --lab-<flag> options came without it."""
    given = lab_shape_given(args)
    flags = [lab_flag(name) for name in given]
    if not getattr(args, "lab", False):
        if flags:
            one = len(flags) == 1
            raise HarnessError(f"{', '.join(flags)} shape{'s' if one else ''} the lab that --lab "
                               f"starts: add --lab, or leave {'it' if one else 'them'} out")
        return None
    settings = {**defaults, **given}
    if getattr(args, "entry", None) == "lb":
        chosen = settings.setdefault("service_type", "LoadBalancer")
        if chosen != "LoadBalancer":
            raise HarnessError(f"--entry lb needs a LoadBalancer and --lab-service-type {chosen} "
                               "has none: use --lab-service-type LoadBalancer (or leave it out: "
                               "with --entry lb the lab's Service is a LoadBalancer)")
    try:
        return LabConfig(**settings)
    except LabError as err:
        raise LabError(_lab_flags(str(err))) from None


def _lab_flags(message: str) -> str:
    """A LabConfig refusal with the flags as --lab spells them (--nodes -> --lab-nodes)."""
    spelled = {flag_of(name): lab_flag(name) for name in LAB_SHAPE}
    return _FLAG.sub(lambda found: spelled.get(found.group(0), found.group(0)), message)


def options_from_args(args) -> DiscoveryOptions:
    if args.port_name is not None and args.port is not None:
        raise DiscoveryError("give either --port-name or --port, not both")
    return DiscoveryOptions(
        service=args.service, namespace=args.namespace, port_name=args.port_name,
        port=args.port, address_type=args.address_type,
        include_control_plane=args.include_control_plane,
        include_not_ready=args.include_not_ready, kubeconfig=args.kubeconfig,
        context=args.context, inventory=args.inventory,
    )


@contextlib.contextmanager
def target_source(args, **lab_options) -> Iterator[DiscoveryOptions]:
    """Discovery options for the command, with a lab running around it when --lab is given
    (shaped by ``lab_options``, then the --lab-<flag> options: ``lab_config``)."""
    opts = options_from_args(args)
    config = lab_config(args, **lab_options)
    if config is None:
        yield opts
        return
    if opts.kubeconfig or opts.inventory or opts.context:
        raise DiscoveryError("--lab cannot be combined with --kubeconfig, --context or --inventory")
    from harness.lab.cluster import LabCluster

    with LabCluster(config) as lab:
        opts.kubeconfig = str(lab.kubeconfig)
        opts.extra["lab"] = lab  # faults and ground truth for the command that asked
        yield opts


@contextlib.contextmanager
def open_target(args, **lab_options) -> Iterator[tuple[Target, Any]]:
    """The discovered target, and the lab started around it with --lab (else None)."""
    from harness.discovery import discover

    with target_source(args, **lab_options) as opts:
        yield discover(opts), opts.extra.get("lab")


def lab_faulter(options: Any, lab: Any = None, target: Target | None = None,
                ) -> Callable[[Fault], dict]:
    """How to inject faults: into the lab this command started, or the running lab the
    target is (its kubeconfig as discovery resolves it: --kubeconfig, else $KUBECONFIG,
    else ~/.kube/config). HarnessError when the target is not a lab."""
    from harness.lab.cluster import control_call

    info = lab_info(options, lab, target)

    def inject(fault: Fault) -> dict:
        body = {"kind": fault.kind, "name": fault.name, "action": fault.action}
        return control_call(info, "POST", "/lab/v1/faults", body)

    return inject


def lab_info(options: Any, lab: Any = None, target: Target | None = None) -> dict[str, Any]:
    """The lab.json of the lab the target is: the one this command started, else the
    running lab whose folder holds the kubeconfig discovery read (the file itself, or where
    a symlink to it points). With ``target``, the lab must serve the target's API server.
    HarnessError (starting ``--lab-fault: ``) saying why it is not a lab."""
    from harness.lab.cluster import read_lab_info

    if lab is not None:
        return lab.info()
    if getattr(options, "inventory", None) or (target is not None
                                               and target.source == "inventory"):
        raise HarnessError("--lab-fault needs the lab: use --lab or the kubeconfig of a "
                           "running lab")
    files = _kubeconfig_files(getattr(options, "kubeconfig", None))
    if not files:
        raise HarnessError("--lab-fault needs the lab: use --lab or the kubeconfig of a "
                           "running lab")
    folders = list(dict.fromkeys(folder for path in files for folder in (
        path.parent, path.resolve().parent)))
    first: HarnessError | None = None
    for folder in folders:
        try:
            info = read_lab_info(folder)
        except HarnessError as err:
            first = first or err
            continue
        server = target.server if target is not None else None
        if server and str(info.get("api_url", "")).rstrip("/") != server.rstrip("/"):
            first = first or HarnessError(
                f"the lab running from {folder} serves {info.get('api_url')}, not the "
                f"target's API server {server}")
            continue
        return info
    assert first is not None
    raise HarnessError(f"--lab-fault: {first}") from None


def _kubeconfig_files(kubeconfig: str | None) -> list[Path]:
    """The kubeconfig file(s) discovery reads: --kubeconfig, else $KUBECONFIG (a list, as
    kubectl reads it), else ~/.kube/config when it exists."""
    given = kubeconfig or os.environ.get("KUBECONFIG")
    if given:
        return [Path(one) for one in given.split(os.pathsep) if one]
    default = Path(os.path.expanduser("~/.kube/config"))
    return [default] if default.exists() else []


def lab_fault_log(info: dict[str, Any], since: float | None = None,
                  timeout: float = 5.0) -> list[dict]:
    """Every fault the lab applied from epoch ``since`` on (id, time, kind, name, action)."""
    from harness.lab.cluster import read_fault_log

    return read_fault_log(info, since, timeout=timeout)


def cluster_watch(options: Any, target: Target, lab: Any = None) -> Any:
    """What polls the target's Nodes and EndpointSlices during a run (a
    ``discovery.ClusterWatch``), with discovery's credentials (the kubeconfig of ``lab``
    when this command started it); None for a target with no API (an inventory).
    DiscoveryError when the credentials cannot be loaded."""
    from harness.discovery import ClusterWatch

    if getattr(options, "inventory", None) or target.source == "inventory":
        return None
    opts = options_from_args(options)
    if lab is not None:
        opts.kubeconfig = str(lab.kubeconfig)
    return ClusterWatch.connect(opts, target.service.namespace, target.service.name)
