"""The kernel datapath's ground: its addresses and names, the commands it runs, the checks
before it starts and the clean-up of what a lab left behind.

Every kernel lab lives in one address block of the benchmarking range 198.18.0.0/15 (RFC
2544: never routed on the Internet, never anyone's private network) and names everything it
creates in the root namespace ``npk<block>-...``: its network namespaces and its one root link.
Block ``b`` (0-127) uses

- ``198.18.<2b>.0/24``: the node network, a bridge in the lab's gateway namespace; node ``i``'s
  InternalIP is ``.<10+i>``, the gateway ``.1``;
- ``198.18.<2b+1>.0/24``: what the client reaches: the root end of the uplink ``.1``, the
  gateway ``.2``, node ``i``'s ExternalIP ``.<10+i>``, the LoadBalancer ``.100``;
- ``198.19.<2b>.0/24``: the pod network, pod ``k`` at ``.k`` (routed through its node).

Only this module and ``kernel.py`` touch the kernel; nothing here changes the root namespace
beyond the uplink and its three routes, and nothing at all when the user is not root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LabError

PREFIX = "npk"  # every kernel lab's names start with npk<block>-
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")  # ip netns exec mounts /etc/netns/<name>/<file> on /etc/<file>
COMMAND_TIMEOUT_S = 30.0
TOOLS = {"ip": "iproute2", "iptables-restore": "iptables", "iptables-save": "iptables",
         "sysctl": "procps"}


@dataclass(frozen=True)
class Layout:
    """Addresses and names of the kernel lab on one block."""

    block: int

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.block}-"

    @property
    def _n(self) -> int:
        return 2 * self.block

    # addresses ---------------------------------------------------------------------------

    @property
    def node_net(self) -> str:
        return f"198.18.{self._n}.0/24"

    @property
    def gateway_ip(self) -> str:
        return f"198.18.{self._n}.1"

    @property
    def client_net(self) -> str:
        return f"198.18.{self._n + 1}.0/24"

    @property
    def host_ip(self) -> str:
        """The root namespace's end of the uplink: where the client's connections come from."""
        return f"198.18.{self._n + 1}.1"

    @property
    def uplink_ip(self) -> str:
        return f"198.18.{self._n + 1}.2"

    @property
    def pod_net(self) -> str:
        return f"198.19.{self._n}.0/24"

    @property
    def lb_ip(self) -> str:
        return f"198.18.{self._n + 1}.100"

    def internal_ip(self, index: int) -> str:
        return f"198.18.{self._n}.{10 + index}"

    def external_ip(self, index: int) -> str:
        return f"198.18.{self._n + 1}.{10 + index}"

    def pod_ip(self, index: int) -> str:
        return f"198.19.{self._n}.{index}"

    # names ------------------------------------------------------------------------------

    @property
    def gateway_ns(self) -> str:
        return self.prefix + "gw"

    @property
    def host_link(self) -> str:
        return self.prefix + "up"

    def node_ns(self, node: str) -> str:
        return self.prefix + node

    def pod_ns(self, pod_ip: str) -> str:
        return self.prefix + "p" + pod_ip.rsplit(".", 1)[1]


def addresses(block: int) -> dict[str, str]:
    """LabState's address layout for a kernel lab (``{}`` is the node's or pod's number)."""
    n = 2 * block
    return {"external": f"198.18.{n + 1}.{{}}", "pod": f"198.19.{n}.{{}}",
            "internal": f"198.18.{n}.{{}}", "lb": f"198.18.{n + 1}.100"}


# -- commands --------------------------------------------------------------------------------


def run(argv: list[str], stdin: str | None = None, check: bool = True,
        netns: str | None = None) -> subprocess.CompletedProcess:
    """One command (in ``netns`` when given); a failure is a LabError naming it."""
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"kernel datapath: {' '.join(argv)} failed: {err}") from None
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"kernel datapath: {' '.join(argv)} failed: "
                       f"{why[-1] if why else f'exit code {proc.returncode}'}")
    return proc


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    """Many ``ip`` commands in one process (``ip -batch``), in ``netns`` when given."""
    if lines:
        run(["ip", *(["-n", netns] if netns else []), "-batch", "-"], "\n".join(lines) + "\n")


def sysctl(netns: str, *settings: str) -> None:
    run(["sysctl", "-q", "-w", *settings], netns=netns)


def iptables_restore(netns: str, text: str) -> None:
    """Replace the tables ``text`` names, at once (-w: wait for the xtables lock)."""
    run(["iptables-restore", "-w", "5"], text, netns=netns)


def iptables_save(netns: str) -> str:
    return run(["iptables-save"], netns=netns).stdout


def etc_files(netns: str, files: dict[str, str]) -> None:
    """Files that replace /etc's for the processes ``ip netns exec`` starts in ``netns``."""
    folder = ETC_NETNS / netns
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def remove_etc_files(netns: str) -> None:
    shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)


# -- before starting -------------------------------------------------------------------------


def preflight() -> None:
    """Raise a one-line LabError when this machine cannot run a kernel lab: what is missing
    and what to do."""
    other = "; or use --datapath userspace"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise LabError("the kernel datapath needs root (network namespaces, veth links, "
                       f"iptables): run as root{other}")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
        raise LabError(f"the kernel datapath needs {', '.join(missing)}: "
                       f"apt-get install -y {packages}{other}")
    probe = f"{PREFIX}-probe-{os.getpid()}"
    proc = run(["ip", "netns", "add", probe], check=False)
    if proc.returncode != 0:
        why = (proc.stderr or "").strip().splitlines()
        raise LabError("the kernel datapath cannot create network namespaces "
                       f"({why[-1] if why else 'ip netns add failed'}): run it where "
                       f"CAP_SYS_ADMIN and CAP_NET_ADMIN are granted{other}")
    try:
        check = run(["iptables-restore", "-w", "5", "--test"], "*nat\nCOMMIT\n", check=False,
                    netns=probe)
        if check.returncode != 0:
            raise LabError("the kernel datapath cannot load iptables rules in a network "
                           f"namespace ({check.stderr.strip() or 'iptables-restore failed'}): "
                           f"check the kernel's nf_tables/xtables support{other}")
    finally:
        run(["ip", "netns", "del", probe], check=False)


# -- cleaning up -----------------------------------------------------------------------------


def lab_namespaces(block: int | None = None) -> list[str]:
    """Network namespaces of kernel labs (of one block, or every block)."""
    return _lab_entries(NETNS_DIR, block)


def lab_links(block: int | None = None) -> list[str]:
    """Root-namespace links of kernel labs (of one block, or every block)."""
    return _lab_entries(Path("/sys/class/net"), block)


def lab_etc_folders(block: int | None = None) -> list[str]:
    """/etc/netns folders of kernel labs' pods (of one block, or every block)."""
    return _lab_entries(ETC_NETNS, block)


def _lab_entries(folder: Path, block: int | None) -> list[str]:
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except OSError:
        return []
    return [name for name in names if _block_of(name) is not None
            and (block is None or _block_of(name) == block)]


def _block_of(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    head, dash, _ = name[len(PREFIX):].partition("-")
    return int(head) if dash and head.isdigit() else None


def cleanup(block: int) -> list[str]:
    """Remove everything a kernel lab on ``block`` created: the processes in its namespaces
    (its pods), the namespaces (with their links, routes and rules) and its root link.
    Returns what it removed. Safe to run any time the block's lab is not running."""
    removed = []
    namespaces = lab_namespaces(block)
    for ns in namespaces:
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
    for ns in namespaces:
        # A namespace outlives its name while a process is still in it; its pods were killed
        # above, so deleting the name frees it and every veth end inside it.
        if run(["ip", "netns", "del", ns], check=False).returncode == 0:
            removed.append(f"netns {ns}")
    for link in lab_links(block):
        if run(["ip", "link", "del", link], check=False).returncode == 0:
            removed.append(f"link {link}")
    for folder in _lab_entries(ETC_NETNS, block):
        shutil.rmtree(ETC_NETNS / folder, ignore_errors=True)
        removed.append(f"{ETC_NETNS / folder}")
    return removed


def leftover_blocks() -> list[int]:
    """Blocks that have kernel-lab namespaces or links."""
    return sorted({b for name in lab_namespaces() + lab_links() + lab_etc_folders()
                   if (b := _block_of(name)) is not None})
