"""network source: SR-IOV counts of interfaces with a PCI device behind them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hosttree import HostTree, short_labels, uncatalogued

from nodefeatures.sources.network import NetworkSource

BRIDGE = "devices/pci0000:3a/0000:3a:00.0"


def pci_nic(tree: HostTree, name: str, address: str, *, totalvfs: str | None = None,
            numvfs: str | None = None, absolute: bool = False) -> None:
    """A PCI NIC as sysfs shows it: class/net link, net/<if> dir, device link back up."""
    pci = f"sys/{BRIDGE}/{address}"
    tree.file(f"{pci}/class", "0x020000\n")
    if totalvfs is not None:
        tree.file(f"{pci}/sriov_totalvfs", totalvfs + "\n")
    if numvfs is not None:
        tree.file(f"{pci}/sriov_numvfs", numvfs + "\n")
    tree.file(f"{pci}/net/{name}/mtu", "1500\n")
    device = f"/{pci}" if absolute else f"../../../{address}"
    tree.link(f"{pci}/net/{name}/device", device)
    tree.link(f"sys/class/net/{name}", f"../../{BRIDGE}/{address}/net/{name}")


def virtual_interface(tree: HostTree, name: str) -> None:
    tree.file(f"sys/devices/virtual/net/{name}/mtu", "65536\n")
    tree.link(f"sys/class/net/{name}", f"../../devices/virtual/net/{name}")


def test_capable_but_not_configured(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "ens1f0", "0000:3b:00.0", totalvfs="64", numvfs="0")
    virtual_interface(tree, "lo")
    result = tree.run(NetworkSource())
    label = result.labels["feature.node.kubernetes.io/network-sriov.capable"]
    assert (label.value, label.origin) == (
        "true", "/sys/class/net/ens1f0/device/sriov_totalvfs=64")
    assert short_labels(NetworkSource(), result) == {"sriov.capable": "true"}


def test_capable_and_configured(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "ens1f0", "0000:3b:00.0", totalvfs="64", numvfs="8")
    # A virtual function's own netdev has a device link but no sriov files.
    pci_nic(tree, "ens1f0v0", "0000:3b:02.0")
    assert tree.labels(NetworkSource()) == {"sriov.capable": "true",
                                            "sriov.configured": "true"}


@pytest.mark.parametrize(("totalvfs", "numvfs"), [("0", "0"), (None, None), ("0", None)])
def test_zero_or_absent_counts_give_no_label(tmp_path: Path, totalvfs: str | None,
                                             numvfs: str | None) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "eno1", "0000:3b:00.0", totalvfs=totalvfs, numvfs=numvfs)
    result = tree.run(NetworkSource())
    assert result.labels == {}
    assert result.warnings == []


def test_second_interface_carries_the_vfs(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "eno1", "0000:3b:00.0", totalvfs="0", numvfs="0")
    pci_nic(tree, "eno2", "0000:3b:00.1", totalvfs="7", numvfs="7")
    result = tree.run(NetworkSource())
    assert result.labels["feature.node.kubernetes.io/network-sriov.configured"].origin == (
        "/sys/class/net/eno2/device/sriov_numvfs=7")


def test_absolute_device_link_resolves_inside_the_root(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "eth0", "0000:3b:00.0", totalvfs="16", numvfs="2", absolute=True)
    assert tree.labels(NetworkSource()) == {"sriov.capable": "true",
                                            "sriov.configured": "true"}


def test_virtual_interfaces_and_bonding_masters(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    virtual_interface(tree, "lo")
    virtual_interface(tree, "bond0")
    tree.file("sys/class/net/bonding_masters", "bond0\n")
    # A virtual interface with sriov files beside it is still no SR-IOV device.
    tree.file("sys/devices/virtual/net/lo/sriov_totalvfs", "4\n")
    result = tree.run(NetworkSource())
    assert result.labels == {}
    assert result.features is not None
    assert [i.attributes["name"] for i in result.features.instances["virtual"]] == [
        "bond0", "lo"]
    # As NFD: no physical interface is an empty feature, not a missing one.
    assert result.features.instances["device"] == []


@pytest.mark.parametrize("garbage", ["lots", "-1", "0x40", "", "6 4", "٣"])
def test_garbage_count_is_a_warning_naming_the_file(tmp_path: Path, garbage: str) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "eth0", "0000:3b:00.0", totalvfs=garbage, numvfs="2")
    result = tree.run(NetworkSource())
    assert short_labels(NetworkSource(), result) == {"sriov.configured": "true"}
    assert result.warnings == [
        f"/sys/class/net/eth0/device/sriov_totalvfs: expected a count, found {garbage!r}"]


def test_huge_count_file_is_refused(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "eth0", "0000:3b:00.0", totalvfs="8" * 100_000, numvfs="0")
    result = tree.run(NetworkSource())
    assert result.labels == {}
    assert any(w.startswith("/sys/class/net/eth0/device/sriov_totalvfs: larger than")
               for w in result.warnings)


def test_every_label_is_catalogued(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_nic(tree, "ens1f0", "0000:3b:00.0", totalvfs="64", numvfs="8")
    source = NetworkSource()
    labels = tree.labels(source)
    assert len(labels) == len(source.catalogue) == 2
    assert uncatalogued(source, labels) == []


def _live_sriov_counts() -> tuple[bool, bool]:
    """From the PCI side: network-class functions that have a netdev, and their VF counts."""
    capable = configured = False
    for device in Path("/sys/bus/pci/devices").iterdir():
        try:
            if not (device / "class").read_text().startswith("0x02") or not (
                    device / "net").is_dir() or not any((device / "net").iterdir()):
                continue
            total = (device / "sriov_totalvfs").read_text().strip()
            configured_count = (device / "sriov_numvfs").read_text().strip()
        except OSError:
            continue
        capable = capable or int(total) > 0
        configured = configured or int(configured_count) > 0
    return capable, configured


@pytest.mark.skipif(not Path("/sys/bus/pci/devices").is_dir(), reason="needs Linux with PCI")
def test_live_machine_agrees_with_the_pci_view() -> None:
    capable, configured = _live_sriov_counts()
    labels = HostTree(Path("/")).labels(NetworkSource())
    assert ("sriov.capable" in labels) is capable
    assert ("sriov.configured" in labels) is configured
