"""pci source: NFD's device labels from sysfs trees laid out as the kernel lays them out."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from nodefeatures.discovery.config import ConfigError, build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import SourceResult, run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.pci import PciSource

PREFIX = "feature.node.kubernetes.io/pci-"
SOURCE = PciSource()
BRIDGE = "devices/pci0000:3a/0000:3a:00.0"


def add_device(root: Path, address: str, pci_class: str, vendor: str, device: str = "0x1234",
               subsystem_vendor: str = "0x1028", subsystem_device: str = "0x0001",
               **extra: str | bytes) -> Path:
    """A device directory under /sys/devices and its /sys/bus/pci/devices link, as on a host."""
    directory = root / "sys" / BRIDGE / address
    directory.mkdir(parents=True)
    attributes: dict[str, str | bytes] = {
        "class": pci_class, "vendor": vendor, "device": device,
        "subsystem_vendor": subsystem_vendor, "subsystem_device": subsystem_device, **extra,
    }
    for name, value in attributes.items():
        data = value if isinstance(value, bytes) else f"{value}\n".encode()
        (directory / name).write_bytes(data)
    (directory / "numa_node").write_text("0\n")  # present on real devices, never read
    bus = root / "sys/bus/pci/devices"
    bus.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../{BRIDGE}/{address}", bus / address)
    return directory


def run(root: Path, **options: Any) -> SourceResult:
    config = build({"sources": {"pci": options}} if options else {}, {"pci": SOURCE})
    return run_source(Host(root=HostRoot(root)), SOURCE, config)


def labels_of(result: SourceResult) -> dict[str, str]:
    return {k.removeprefix(PREFIX): v.value for k, v in result.labels.items()}


# Real IDs: H100 SXM (datacenter, 3D controller), RTX 4090 (consumer, VGA controller),
# ConnectX-6 Dx (Ethernet), Gaudi2 (processing accelerator), Intel QAT (co-processor).
def gpu_server(root: Path) -> None:
    add_device(root, "0000:3b:00.0", "0x030200", "0x10de", "0x2330", "0x10de", "0x16c1")
    add_device(root, "0000:3c:00.0", "0x030000", "0x10de", "0x2684", "0x1458", "0x40bf")
    add_device(root, "0000:5e:00.0", "0x020000", "0x15b3", "0x101d", sriov_totalvfs="8")
    add_device(root, "0000:9a:00.0", "0x120000", "0x1da3", "0x1020")
    add_device(root, "0000:e8:00.0", "0x0b4000", "0x8086", "0x4940")


def test_default_labels_name_datacenter_and_consumer_gpus(tmp_path: Path) -> None:
    gpu_server(tmp_path)
    result = run(tmp_path)
    # The NIC (class 0200) is not whitelisted; the others are, by class prefix.
    assert labels_of(result) == {
        "0302_10de.present": "true",
        "0300_10de.present": "true",
        "1200_1da3.present": "true",
        "0b40_8086.present": "true",
    }
    assert result.warnings == []


def test_vendor_only_fields_give_the_gpu_operator_label(tmp_path: Path) -> None:
    gpu_server(tmp_path)
    result = run(tmp_path, deviceLabelFields=["vendor"])
    assert labels_of(result) == {
        "10de.present": "true", "1da3.present": "true", "8086.present": "true",
    }
    # Two GPUs collapse into one label; the origin names the first and counts the rest.
    origin = result.labels[PREFIX + "10de.present"].origin
    assert origin == "/sys/bus/pci/devices/0000:3b:00.0: vendor=10de (+1 more)"


def test_fields_are_put_in_canonical_order(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de", "0x2330", "0x10de", "0x16c1")
    result = run(tmp_path, deviceLabelFields=["subsystem_device", "device", "vendor", "class",
                                              "subsystem_vendor"])
    assert labels_of(result) == {"0302_10de_2330_10de_16c1.present": "true"}
    result = run(tmp_path, deviceLabelFields=["device", "vendor"])
    assert labels_of(result) == {"10de_2330.present": "true"}


def test_unknown_fields_are_ignored_with_a_warning(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    result = run(tmp_path, deviceLabelFields=["vendor", "revision"])
    assert labels_of(result) == {"10de.present": "true"}
    assert len(result.warnings) == 1
    assert "revision" in result.warnings[0]


def test_no_known_field_falls_back_to_class_and_vendor(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    for fields in (["Vendor", "driver"], []):
        result = run(tmp_path, deviceLabelFields=fields)
        assert labels_of(result) == {"0302_10de.present": "true"}, fields
        assert any("using class, vendor" in w for w in result.warnings), fields


def test_whitelist_is_a_case_insensitive_prefix(tmp_path: Path) -> None:
    gpu_server(tmp_path)
    assert labels_of(run(tmp_path, deviceClassWhitelist=["02"])) == {
        "0200_15b3.present": "true", "0200_15b3.sriov.capable": "true",
    }
    assert labels_of(run(tmp_path, deviceClassWhitelist=["0302"])) == {
        "0302_10de.present": "true",
    }
    assert labels_of(run(tmp_path, deviceClassWhitelist=["0B4"])) == {
        "0b40_8086.present": "true",
    }
    assert labels_of(run(tmp_path, deviceClassWhitelist=[])) == {}


def test_sriov_capable_needs_only_the_file(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de", sriov_totalvfs="0")
    add_device(tmp_path, "0000:3c:00.0", "0x120000", "0x1da3")
    result = run(tmp_path)
    assert labels_of(result) == {
        "0302_10de.present": "true",
        "0302_10de.sriov.capable": "true",
        "1200_1da3.present": "true",
    }
    origin = result.labels[PREFIX + "0302_10de.sriov.capable"].origin
    assert origin == "/sys/bus/pci/devices/0000:3b:00.0/sriov_totalvfs=0"


def test_sriov_of_any_collapsed_device_counts(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    add_device(tmp_path, "0000:3c:00.0", "0x030200", "0x10de", sriov_totalvfs="16")
    assert labels_of(run(tmp_path)) == {
        "0302_10de.present": "true", "0302_10de.sriov.capable": "true",
    }


def test_values_are_trimmed_and_class_is_cut_to_four_digits(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "  0x030201\t\n", "0x10de\r\n", device="2330",
               subsystem_vendor="10de", subsystem_device="0x16c1")
    result = run(tmp_path, deviceLabelFields=["class", "vendor", "device", "subsystem_device"])
    assert labels_of(result) == {"0302_10de_2330_16c1.present": "true"}
    assert result.warnings == []
    device = result.features.instances["device"][0] if result.features else None
    assert device is not None
    assert device.attributes == {"class": "0302", "vendor": "10de", "device": "2330",
                                 "subsystem_vendor": "10de", "subsystem_device": "16c1"}


def test_absolute_bus_link_resolves_inside_the_root(tmp_path: Path) -> None:
    directory = tmp_path / "sys" / BRIDGE / "0000:3b:00.0"
    directory.mkdir(parents=True)
    for name, value in (("class", "0x030200"), ("vendor", "0x10de"), ("device", "0x2330"),
                        ("subsystem_vendor", "0x10de"), ("subsystem_device", "0x16c1")):
        (directory / name).write_text(value + "\n")
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink(f"/sys/{BRIDGE}/0000:3b:00.0", tmp_path / "sys/bus/pci/devices/0000:3b:00.0")
    assert labels_of(run(tmp_path)) == {"0302_10de.present": "true"}


def test_missing_mandatory_attribute_skips_only_that_device(tmp_path: Path) -> None:
    gone = add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    (gone / "subsystem_device").unlink()
    add_device(tmp_path, "0000:3c:00.0", "0x030000", "0x1002")
    result = run(tmp_path)
    assert labels_of(result) == {"0300_1002.present": "true"}
    assert result.warnings == [
        "/sys/bus/pci/devices/0000:3b:00.0: skipped, `subsystem_device` is missing or unreadable"
    ]


def test_unreadable_attribute_skips_the_device_and_names_the_file(tmp_path: Path) -> None:
    broken = add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    (broken / "vendor").unlink()
    (broken / "vendor").mkdir()  # reading it fails with EISDIR even as root
    add_device(tmp_path, "0000:3c:00.0", "0x030000", "0x1002")
    result = run(tmp_path)
    assert labels_of(result) == {"0300_1002.present": "true"}
    assert any(w.startswith("/sys/bus/pci/devices/0000:3b:00.0/vendor: ")
               for w in result.warnings), result.warnings
    assert any("skipped, `vendor`" in w for w in result.warnings)


def test_permission_denied_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    real_open = HostRoot._open

    def denied(self: HostRoot, path: str, flags: int) -> int:
        if path.endswith("0000:3b:00.0/class"):  # tests run as root: chmod 0 is no bar
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(self, path, flags)

    monkeypatch.setattr(HostRoot, "_open", denied)
    result = run(tmp_path)
    assert labels_of(result) == {}
    assert any("0000:3b:00.0/class: Permission denied" in w for w in result.warnings)
    assert not result.complete


def test_binary_junk_costs_that_label_with_a_warning_naming_the_file(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", b"\x00\xff\xfe junk")
    add_device(tmp_path, "0000:3c:00.0", "0x030000", "0x10de")
    result = run(tmp_path)
    assert labels_of(result) == {"0300_10de.present": "true"}
    assert any(w.startswith("/sys/bus/pci/devices/0000:3b:00.0/vendor: ")
               and "not a hex number" in w for w in result.warnings), result.warnings
    assert any("dropped label" in w for w in result.warnings)


def test_huge_attribute_is_refused(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de" + " " * (20 * 1024 * 1024))
    result = run(tmp_path)
    assert labels_of(result) == {}
    assert any("0000:3b:00.0/vendor: larger than" in w for w in result.warnings)


def test_entries_that_are_not_devices(tmp_path: Path) -> None:
    add_device(tmp_path, "0000:3b:00.0", "0x030200", "0x10de")
    bus = tmp_path / "sys/bus/pci/devices"
    (bus / "stray-file").write_text("x")
    os.symlink("../../../devices/nowhere", bus / "0000:ff:00.0")
    result = run(tmp_path)
    assert labels_of(result) == {"0302_10de.present": "true"}
    assert len(result.warnings) == 2
    assert all("skipped, `class`" in w for w in result.warnings)


def test_no_pci_bus_means_no_labels_and_no_warnings(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result.labels == {}
    assert result.warnings == []
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    assert run(tmp_path).warnings == []


@pytest.mark.parametrize("entry", ["0x03", "030200", "gpu", "03 "])
def test_whitelist_entries_that_never_match_are_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match="deviceClassWhitelist"):
        build({"sources": {"pci": {"deviceClassWhitelist": ["12", entry]}}}, {"pci": SOURCE})


def test_whitelist_must_be_strings() -> None:
    with pytest.raises(ConfigError, match=r"sources\.pci\.deviceClassWhitelist"):
        build({"sources": {"pci": {"deviceClassWhitelist": [3]}}}, {"pci": SOURCE})


def read_sysfs(path: Path) -> str:
    return path.read_text().strip().removeprefix("0x")


def test_live_pci_devices() -> None:
    """Every device on this machine whose class is whitelisted gets its label."""
    bus = Path("/sys/bus/pci/devices")
    if not bus.is_dir():
        pytest.skip("this machine has no /sys/bus/pci")
    expected_display: set[str] = set()
    expected_all: set[str] = set()
    for device in bus.iterdir():
        pci_class = read_sysfs(device / "class")[:4]
        name = f"{pci_class}_{read_sysfs(device / 'vendor')}"
        suffixes = [".present"] + ([".sriov.capable"]
                                   if (device / "sriov_totalvfs").exists() else [])
        expected_all.update(name + s for s in suffixes)
        if pci_class.startswith("03"):
            expected_display.update(name + s for s in suffixes)
    result = run(Path("/"), deviceClassWhitelist=["03"])
    assert set(labels_of(result)) == expected_display
    assert result.warnings == []
    # Every class at once, so machines without a GPU still test the whole path.
    result = run(Path("/"), deviceClassWhitelist=list("0123456789abcdef"))
    assert set(labels_of(result)) == expected_all
    assert expected_all


def test_every_device_is_a_feature_and_only_whitelisted_classes_are_labelled(
        tmp_path: Path) -> None:
    gpu_server(tmp_path)
    result = run(tmp_path)
    assert result.warnings == []
    assert result.features is not None
    kept = sorted(i.origin.rsplit("/", 1)[1] for i in result.features.instances["device"])
    assert "0000:5e:00.0" in kept  # the NIC: a feature for rules, never a label
    assert not any(k.split("/")[-1].startswith("pci-02") for k in result.labels)


def test_a_device_without_a_mandatory_attribute_is_skipped_with_a_warning(
        tmp_path: Path) -> None:
    gpu_server(tmp_path)
    nic = tmp_path / "sys" / BRIDGE / "0000:5e:00.0"
    (nic / "subsystem_device").unlink()
    result = run(tmp_path)
    assert result.features is not None
    kept = [i.origin.rsplit("/", 1)[1] for i in result.features.instances["device"]]
    assert "0000:5e:00.0" not in kept
    assert any("0000:5e:00.0" in w and "subsystem_device" in w for w in result.warnings)
