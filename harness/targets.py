"""Where a run's target comes from: the embedded lab (``--lab``), a kubeconfig (or in-cluster
config), or an inventory file; the target options every command shares; and how to inject a
fault into a lab target."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.core.faults import Fault
from harness.core.model import Target
from harness.discovery import ADDRESS_TYPES, DiscoveryOptions
from harness.errors import DiscoveryError, HarnessError


def add_target_arguments(parser, *, lab_default: bool = False, add=None) -> None:
    """Target options; `add` lets Locust's parser attach its web-UI and env-var settings."""
    parser = _Adder(add) if add else parser
    parser.add_argument("--lab", action="store_true", default=lab_default,
                        help="start the embedded lab cluster for this command and target it")
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
    """Discovery options for the command, with a lab running around it when --lab is given."""
    opts = options_from_args(args)
    if not getattr(args, "lab", False):
        yield opts
        return
    if opts.kubeconfig or opts.inventory or opts.context:
        raise DiscoveryError("--lab cannot be combined with --kubeconfig, --context or --inventory")
    from harness.lab.cluster import LabCluster

    with LabCluster(**lab_options) as lab:
        opts.kubeconfig = str(lab.kubeconfig)
        opts.extra["lab"] = lab  # faults and ground truth for the command that asked
        yield opts


@contextlib.contextmanager
def open_target(args, **lab_options) -> Iterator[tuple[Target, Any]]:
    """The discovered target, and the lab started around it with --lab (else None)."""
    from harness.discovery import discover

    with target_source(args, **lab_options) as opts:
        yield discover(opts), opts.extra.get("lab")


def lab_faulter(options: Any, lab: Any = None) -> Callable[[Fault], dict]:
    """How to inject faults: through the lab this command started, or the running lab whose
    kubeconfig the options name. HarnessError when the target is not a lab."""
    from harness.lab.cluster import control_call, read_lab_info

    if lab is not None:
        return lambda fault: lab.fault(fault.kind, fault.name, fault.action)
    if not getattr(options, "kubeconfig", None):
        raise HarnessError("--lab-fault needs the lab: use --lab or the kubeconfig of a "
                           "running lab")
    try:
        info = read_lab_info(Path(options.kubeconfig).parent)
    except HarnessError as err:
        raise HarnessError(f"--lab-fault: {err}") from None

    def inject(fault: Fault) -> dict:
        body = {"kind": fault.kind, "name": fault.name, "action": fault.action}
        return control_call(info, "POST", "/lab/v1/faults", body)

    return inject
