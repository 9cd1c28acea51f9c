"""usb source: NFD's device labels, including per-interface classes of class-00 devices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nodefeatures.discovery.config import ConfigError, build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import SourceResult, run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.usb import UsbSource

PREFIX = "feature.node.kubernetes.io/usb-"
SOURCE = UsbSource()
CONTROLLER = "devices/pci0000:00/0000:00:14.0"


def link(root: Path, name: str, target: str) -> None:
    bus = root / "sys/bus/usb/devices"
    bus.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../{target}", bus / name)


def add_device(root: Path, name: str, parent: str, device_class: str, vendor: str,
               product: str, interfaces: tuple[str, ...] = (), serial: str | None = None) -> Path:
    """A device (and its interfaces) under /sys/devices, linked from /sys/bus/usb/devices."""
    relative = f"{parent}/{name}"
    directory = root / "sys" / relative
    directory.mkdir(parents=True)
    files = {"bDeviceClass": device_class, "idVendor": vendor, "idProduct": product,
             "bNumInterfaces": f"{len(interfaces):2d}", "speed": "480"}
    if serial is not None:
        files["serial"] = serial
    for file, value in files.items():
        (directory / file).write_text(value + "\n")
    (directory / "power").mkdir()
    (directory / "ep_00").mkdir()
    (directory / "ep_00/bInterval").write_text("00\n")
    bus_name = "1-0" if name.startswith("usb") else name
    for number, interface_class in enumerate(interfaces):
        interface = f"{bus_name}:1.{number}"
        (directory / interface).mkdir()
        (directory / interface / "bInterfaceClass").write_text(interface_class + "\n")
        (directory / interface / "bInterfaceNumber").write_text(f"{number:02x}\n")
        link(root, interface, f"{relative}/{interface}")
    link(root, name, relative)
    return directory


def workstation(root: Path) -> None:
    """Root hub, a webcam (misc class), an NCS2 stick and a keyboard (both class 00)."""
    add_device(root, "usb1", CONTROLLER, "09", "1d6b", "0002", interfaces=("09",))
    hub = f"{CONTROLLER}/usb1"
    add_device(root, "1-1", hub, "ef", "046d", "082d", interfaces=("0e", "0e", "01", "01"))
    add_device(root, "1-2", hub, "00", "03e7", "2485", interfaces=("ff",), serial="03e72485")
    add_device(root, "1-3", hub, "00", "046d", "c31c", interfaces=("03", "03"))


def run(root: Path, **options: Any) -> SourceResult:
    config = build({"sources": {"usb": options}} if options else {}, {"usb": SOURCE})
    return run_source(Host(root=HostRoot(root)), SOURCE, config)


def labels_of(result: SourceResult) -> dict[str, str]:
    return {k.removeprefix(PREFIX): v.value for k, v in result.labels.items()}


def test_default_labels(tmp_path: Path) -> None:
    workstation(tmp_path)
    result = run(tmp_path)
    # Hub (09) and keyboard (interfaces 03) are not whitelisted; the NCS2 counts by its
    # interface class because its device class is 00.
    assert labels_of(result) == {"ef_046d_082d.present": "true", "ff_03e7_2485.present": "true"}
    assert result.warnings == []
    origin = result.labels[PREFIX + "ff_03e7_2485.present"].origin
    assert origin == "/sys/bus/usb/devices/1-2/1-2:1.0: class=ff vendor=03e7 device=2485"


def test_interface_classes_of_a_class_00_device(tmp_path: Path) -> None:
    hub = f"{CONTROLLER}/usb1"
    add_device(tmp_path, "1-4", hub, "00", "1a6e", "089a", interfaces=("0e", "ff", "0e", "03"))
    result = run(tmp_path)
    assert labels_of(result) == {"0e_1a6e_089a.present": "true", "ff_1a6e_089a.present": "true"}
    # Raw features keep one instance per interface, with its class, as NFD's do.
    assert [(i.attributes["class"], i.origin) for i in result.features.instances["device"]] == [
        ("0e", "/sys/bus/usb/devices/1-4/1-4:1.0"), ("ff", "/sys/bus/usb/devices/1-4/1-4:1.1"),
        ("0e", "/sys/bus/usb/devices/1-4/1-4:1.2"), ("03", "/sys/bus/usb/devices/1-4/1-4:1.3"),
    ]


def test_device_class_is_not_replaced_when_set(tmp_path: Path) -> None:
    # Class ff at device level wins even though its interface says 03.
    add_device(tmp_path, "1-5", CONTROLLER, "ff", "0403", "6001", interfaces=("03",))
    assert labels_of(run(tmp_path)) == {"ff_0403_6001.present": "true"}


def test_fields_in_canonical_order_and_serial(tmp_path: Path) -> None:
    workstation(tmp_path)
    result = run(tmp_path, deviceLabelFields=["serial", "vendor"])
    # The webcam has no serial: that part of the name stays empty, as NFD names it.
    assert labels_of(result) == {"03e7_03e72485.present": "true", "046d_.present": "true"}
    result = run(tmp_path, deviceLabelFields=["device"], deviceClassWhitelist=["ff"])
    assert labels_of(result) == {"2485.present": "true"}


def test_unknown_fields_fall_back_to_defaults_with_a_warning(tmp_path: Path) -> None:
    workstation(tmp_path)
    result = run(tmp_path, deviceLabelFields=["idVendor"])
    assert labels_of(result) == {"ef_046d_082d.present": "true", "ff_03e7_2485.present": "true"}
    assert any("idVendor" in w for w in result.warnings)
    assert any("using class, vendor, device" in w for w in result.warnings)


def test_whitelist_prefix(tmp_path: Path) -> None:
    workstation(tmp_path)
    assert labels_of(run(tmp_path, deviceClassWhitelist=["09", "0"])) == {
        "09_1d6b_0002.present": "true", "03_046d_c31c.present": "true",
    }
    assert labels_of(run(tmp_path, deviceClassWhitelist=["EF"])) == {
        "ef_046d_082d.present": "true",
    }


def test_empty_product_still_a_device(tmp_path: Path) -> None:
    directory = add_device(tmp_path, "1-6", CONTROLLER, "fe", "abcd", "0001")
    (directory / "idProduct").write_text("\n")
    assert labels_of(run(tmp_path)) == {"fe_abcd_.present": "true"}


def test_unreadable_interface_costs_that_interface(tmp_path: Path) -> None:
    directory = add_device(tmp_path, "1-7", CONTROLLER, "00", "1a6e", "089a",
                           interfaces=("0e", "ff"))
    (directory / "1-7:1.1/bInterfaceClass").unlink()
    (directory / "1-7:1.1/bInterfaceClass").mkdir()
    result = run(tmp_path)
    assert labels_of(result) == {"0e_1a6e_089a.present": "true"}
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("/sys/bus/usb/devices/1-7/1-7:1.1/bInterfaceClass: ")


def test_huge_attribute_is_refused(tmp_path: Path) -> None:
    directory = add_device(tmp_path, "1-8", CONTROLLER, "ff", "abcd", "0001")
    (directory / "idVendor").write_bytes(b"a" * (20 * 1024 * 1024))
    result = run(tmp_path)
    # Without its vendor the device is still named, with an empty vendor part.
    assert labels_of(result) == {"ff__0001.present": "true"}
    assert any("1-8/idVendor: larger than" in w for w in result.warnings)


def test_binary_junk_in_an_id_drops_that_label_with_a_warning(tmp_path: Path) -> None:
    directory = add_device(tmp_path, "1-9", CONTROLLER, "ff", "abcd", "0001")
    (directory / "idProduct").write_bytes(b"\x00\xfe\xff")
    add_device(tmp_path, "1-10", CONTROLLER, "ff", "abcd", "0002")
    result = run(tmp_path)
    assert labels_of(result) == {"ff_abcd_0002.present": "true"}
    assert any(w.startswith("/sys/bus/usb/devices/1-9/idProduct: ") and "not a hex number" in w
               for w in result.warnings), result.warnings
    assert any("dropped label" in w for w in result.warnings)


def test_no_usb_bus_means_no_labels_and_no_warnings(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert (result.labels, result.warnings) == ({}, [])


@pytest.mark.parametrize("entry", ["0x0e", "0e0", "video"])
def test_whitelist_entries_that_never_match_are_refused(entry: str) -> None:
    with pytest.raises(ConfigError, match="deviceClassWhitelist"):
        build({"sources": {"usb": {"deviceClassWhitelist": [entry]}}}, {"usb": SOURCE})


def test_live_usb_devices() -> None:
    """This machine's USB devices, checked against a direct reading of sysfs."""
    bus = Path("/sys/bus/usb/devices")
    result = run(Path("/"), deviceClassWhitelist=list("0123456789abcdef"))
    assert result.warnings == []
    if not bus.is_dir():
        assert result.labels == {}  # no USB at all: nothing, and nothing to complain about
        return
    expected = set()
    for device in bus.iterdir():
        if not (device / "idProduct").exists():
            continue
        ids = [(device / f).read_text().strip() for f in ("idVendor", "idProduct")]
        device_class = (device / "bDeviceClass").read_text().strip()
        classes = [device_class]
        if device_class == "00":
            classes = [(i / "bInterfaceClass").read_text().strip()
                       for i in device.iterdir() if (i / "bInterfaceClass").exists()]
        expected.update("_".join([c, *ids]) + ".present" for c in classes)
    assert set(labels_of(result)) == expected


def test_every_device_is_a_feature_and_only_whitelisted_classes_are_labelled(
        tmp_path: Path) -> None:
    workstation(tmp_path)
    result = run(tmp_path)
    assert result.warnings == []
    origins = sorted(i.origin for i in result.features.instances["device"])
    # The keyboard (HID interfaces) and the root hub: features, not labels.
    assert "/sys/bus/usb/devices/1-3/1-3:1.0" in origins
    assert "/sys/bus/usb/devices/usb1" in origins
    assert not any(k.startswith("03_") for k in labels_of(result))
