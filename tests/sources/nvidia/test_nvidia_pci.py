"""The PCI side: finding NVIDIA GPUs, hostile sysfs files, and the scan kept between passes."""

from __future__ import annotations

import os
from pathlib import Path

from gpufixtures import FIXTURES, Clock, copy_fixture, expected_nvidia, live_host, run, values

from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia.pci import PciScanner, sysfs_bus_id


def pci_device(root: Path, address: str, vendor: str, class_code: str,
               config: bytes | None = None) -> Path:
    directory = root / "sys/devices/pci0000:00" / address
    directory.mkdir(parents=True)
    (directory / "vendor").write_text(vendor + "\n")
    (directory / "class").write_text(class_code + "\n")
    (directory / "device").write_text("0x1eb8\n")
    if config is not None:
        (directory / "config").write_bytes(config)
    bus = root / "sys/bus/pci/devices"
    bus.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../devices/pci0000:00/{address}", bus / address)
    return directory


def test_display_functions_of_nvidia_only(tmp_path: Path) -> None:
    pci_device(tmp_path, "0000:00:01.0", "0x10de", "0x030200")
    pci_device(tmp_path, "0000:00:02.0", "0x10DE", "0x030000")  # upper case is fine
    pci_device(tmp_path, "0000:00:03.0", "0x10de", "0x038000")  # other display controller
    pci_device(tmp_path, "0000:00:04.0", "0x10de", "0x068000")  # NVSwitch
    pci_device(tmp_path, "0000:00:05.0", "0x10de", "0x040300")  # HDMI audio
    pci_device(tmp_path, "0000:00:06.0", "0x1002", "0x030000")  # another vendor's GPU
    scan = PciScanner().scan(HostRoot(tmp_path))
    assert scan.listed == 6
    assert [(g.address, g.class_code) for g in scan.gpus] == [
        ("0000:00:01.0", 0x030200), ("0000:00:02.0", 0x030000), ("0000:00:03.0", 0x038000)]


def test_hostile_files_cost_only_the_device(tmp_path: Path) -> None:
    pci_device(tmp_path, "0000:00:01.0", "\x00\xff junk", "0x030200")
    pci_device(tmp_path, "0000:00:02.0", "0x10de", "not hex")
    pci_device(tmp_path, "0000:00:03.0", "0x10de" + " " * 100_000, "0x030200")  # too big
    pci_device(tmp_path, "0000:00:04.0", "0x10de", "0x030200")
    os.symlink("/nonexistent/absolute", tmp_path / "sys/bus/pci/devices/0000:00:05.0")
    scan = PciScanner().scan(HostRoot(tmp_path))
    assert [g.address for g in scan.gpus] == ["0000:00:04.0"]


def test_the_scan_is_kept_until_the_bus_changes(tmp_path: Path) -> None:
    pci_device(tmp_path, "0000:00:01.0", "0x10de", "0x030200")
    scanner, root = PciScanner(), HostRoot(tmp_path)
    first = scanner.scan(root)
    (tmp_path / "sys/devices/pci0000:00/0000:00:01.0/vendor").write_text("0x8086\n")
    assert scanner.scan(root) is first  # same devices: vendor files not read again
    pci_device(tmp_path, "0000:00:02.0", "0x10de", "0x030000")  # hot-plugged
    assert [g.address for g in scanner.scan(root).gpus] == ["0000:00:02.0"]


def test_an_unreadable_file_is_read_again_next_pass(tmp_path: Path) -> None:
    device = pci_device(tmp_path, "0000:00:01.0", "0x10de", "0x030200")
    (device / "class").unlink()
    scanner, root = PciScanner(), HostRoot(tmp_path)
    assert scanner.scan(root).gpus == ()
    (device / "class").write_text("0x030200\n")
    assert len(scanner.scan(root).gpus) == 1


def test_bus_ids_as_sysfs_names_them() -> None:
    assert sysfs_bus_id("00000000:3B:00.0") == "0000:3b:00.0"
    assert sysfs_bus_id("0000:3B:00.0") == "0000:3b:00.0"
    assert sysfs_bus_id("00010000:01:00.0") == "00010000:01:00.0"  # not a 0000 prefix
    assert sysfs_bus_id(" 00000000:07:00.0\n") == "0000:07:00.0"


def test_huge_config_space_is_refused_with_a_warning_naming_it(tmp_path: Path) -> None:
    fixture = copy_fixture("vgpu-guest-a10", tmp_path)
    config = fixture / "root/sys/bus/pci/devices/0000:06:00.0/config"
    config.resolve().write_bytes(config.resolve().read_bytes() + bytes(10_000))
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert any("/sys/bus/pci/devices/0000:06:00.0/config: larger than" in w
               for w in result.warnings)
    # without config space, the vGPU answer needs NVML's virtualization mode, which this
    # fixture (a privileged capture) never had to record
    got = values(result)
    assert "nvidia.com/vgpu.host-driver-version" not in got
    assert got["nvidia.com/gpu.product"] == "NVIDIA-A10-12Q"


def test_machine_file_junk_and_absence(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    product = fixture / "root/sys/devices/virtual/dmi/id/product_name"
    product.write_bytes(b"\x00\x01Power\xffEdge R740 (rev 2)\n")
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert values(result)["nvidia.com/gpu.machine"] == "PowerEdge-R740-rev-2"
    assert any("machine type" in w for w in result.warnings)
    product.unlink()
    assert values(run(NvidiaSource(Clock()), replay_host(fixture)))[
        "nvidia.com/gpu.machine"] == "unknown"


def test_machine_type_file_option(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    (fixture / "root/etc/machine-type").write_text("rack-7 GPU node\n")
    got = values(run(NvidiaSource(Clock()), replay_host(fixture),
                     machineTypeFile="/etc/machine-type"))
    assert got["nvidia.com/gpu.machine"] == "rack-7-GPU-node"


def test_a_gpu_node_read_live_through_a_root_prefix(fake_lib) -> None:
    from gpufixtures import fixture_data

    fake_lib(fixture_data("dgx-h100"))
    result = run(NvidiaSource(Clock()), live_host(FIXTURES / "dgx-h100" / "root"))
    assert values(result) == expected_nvidia(FIXTURES / "dgx-h100")
