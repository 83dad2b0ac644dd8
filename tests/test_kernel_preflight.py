"""A kernel lab that cannot start says, in one line, what is missing and what to do (these
run anywhere: the checks are faked, nothing touches the kernel)."""

from __future__ import annotations

import pytest

from harness.errors import LabError
from harness.lab import netns
from harness.lab.cluster import LabCluster
from harness.lab.config import LabConfig


def test_not_root(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError) as err:
        netns.preflight()
    assert str(err.value) == ("the kernel datapath needs root (network namespaces, veth links, "
                              "iptables): run as root; or use --datapath userspace")
    # LabCluster checks before it starts anything.
    with pytest.raises(LabError, match="needs root"):
        LabCluster(datapath="kernel", nodes=1, pods=1).start()


def test_no_iptables(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which",
                        lambda tool: None if tool.startswith("iptables") else f"/sbin/{tool}")
    with pytest.raises(LabError) as err:
        netns.preflight()
    assert str(err.value) == ("the kernel datapath needs iptables-restore, iptables-save: "
                              "apt-get install -y iptables; or use --datapath userspace")


def test_no_network_namespaces(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: f"/sbin/{tool}")

    class Refused:
        returncode, stdout, stderr = 1, "", "mount --make-shared /run/netns failed: Operation " \
                                            "not permitted"

    monkeypatch.setattr(netns, "run", lambda *args, **kwargs: Refused())
    with pytest.raises(LabError) as err:
        netns.preflight()
    assert "cannot create network namespaces (mount --make-shared" in str(err.value)
    assert str(err.value).endswith("; or use --datapath userspace")


def test_settings_the_kernel_datapath_does_not_model():
    with pytest.raises(LabError, match="iptables mode only"):
        LabConfig(datapath="kernel", proxy_mode="ipvs")
    with pytest.raises(LabError, match="--block 0-127"):
        LabConfig(datapath="kernel", block=128)
    with pytest.raises(LabError, match="--extra-api-nodes needs --datapath userspace"):
        LabConfig(datapath="kernel", extra_api_nodes=5)
    with pytest.raises(LabError, match="--datapath must be one of userspace, kernel"):
        LabConfig(datapath="ebpf")


def test_the_kernel_layout_is_in_the_benchmarking_range():
    lay = netns.Layout(127)
    addresses = [lay.gateway_ip, lay.host_ip, lay.uplink_ip, lay.lb_ip, lay.internal_ip(89),
                 lay.external_ip(89), lay.pod_ip(250)]
    assert all(a.startswith(("198.18.", "198.19.")) for a in addresses)
    assert lay.host_link == "npk127-up" and len(lay.host_link) <= 15
    assert lay.pod_ns("198.19.254.250") == "npk127-p250"
    assert netns.addresses(3) == {"external": "198.18.7.{}", "pod": "198.19.6.{}",
                                  "internal": "198.18.6.{}", "lb": "198.18.7.100"}
