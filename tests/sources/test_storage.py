"""storage source: /sys/block devices reached through sysfs-style symlinks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hosttree import HostTree, short_labels, uncatalogued

from nodefeatures.sources.storage import StorageSource

SATA = "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block"
NVME = "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0"


def disk(tree: HostTree, device_dir: str, name: str, rotational: str, *,
         absolute: bool = False) -> None:
    """A disk as sysfs shows it: the device under /sys/devices, linked from /sys/block."""
    tree.file(f"sys/{device_dir}/{name}/queue/rotational", rotational + "\n")
    tree.file(f"sys/{device_dir}/{name}/size", "1953525168\n")
    target = f"/sys/{device_dir}/{name}" if absolute else f"../{device_dir}/{name}"
    tree.link(f"sys/block/{name}", target)


def test_spinning_disk_only_gives_no_label(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, SATA, "sda", "1")
    result = tree.run(StorageSource())
    assert result.labels == {}
    assert result.features is not None
    assert [i.attributes for i in result.features.instances["block"]] == [
        {"name": "sda", "rotational": "1"}]


def test_nvme_beside_a_spinning_disk(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, SATA, "sda", "1")
    disk(tree, NVME, "nvme0n1", "0")
    result = tree.run(StorageSource())
    label = result.labels["feature.node.kubernetes.io/storage-nonrotationaldisk"]
    assert label.value == "true"
    assert label.origin == "/sys/block/nvme0n1/queue/rotational=0"


def test_virtual_devices_count_as_in_nfd(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, SATA, "sda", "1")
    disk(tree, "devices/virtual/block", "zram0", "0")
    assert tree.labels(StorageSource()) == {"nonrotationaldisk": "true"}


def test_absolute_links_resolve_inside_the_root(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, NVME, "nvme0n1", "0", absolute=True)
    assert tree.labels(StorageSource()) == {"nonrotationaldisk": "true"}


def test_dangling_link_and_missing_queue_are_skipped(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.link("sys/block/sdz", "../devices/gone/block/sdz")
    tree.dir("sys/block/md0")  # no queue directory
    disk(tree, SATA, "sda", "1")
    result = tree.run(StorageSource())
    assert result.labels == {}
    assert result.warnings == []


def test_garbage_rotational_is_a_warning_naming_the_file(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, SATA, "sda", "spinning")
    disk(tree, SATA, "sdb", "1")
    result = tree.run(StorageSource())
    assert result.labels == {}
    assert result.warnings == ["/sys/block/sda/queue/rotational: expected 0 or 1, "
                               "found 'spinning'"]
    disk(tree, NVME, "nvme0n1", "0")
    result = tree.run(StorageSource())
    assert short_labels(StorageSource(), result) == {"nonrotationaldisk": "true"}


def test_huge_rotational_file_is_refused(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, SATA, "sda", "0" * 100_000)
    result = tree.run(StorageSource())
    assert result.labels == {}
    assert any(w.startswith("/sys/block/sda/queue/rotational: larger than")
               for w in result.warnings)


def test_no_block_directory(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    result = tree.run(StorageSource())
    assert result.labels == {}
    assert result.warnings == []


def test_every_label_is_catalogued(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    disk(tree, NVME, "nvme0n1", "0")
    source = StorageSource()
    labels = tree.labels(source)
    assert labels and uncatalogued(source, labels) == []


@pytest.mark.skipif(shutil.which("lsblk") is None or not Path("/sys/block").is_dir(),
                    reason="needs Linux with lsblk")
def test_live_machine_agrees_with_lsblk() -> None:
    listing = subprocess.run(["lsblk", "--nodeps", "--all", "--noheadings", "--raw",
                              "--output", "NAME,ROTA"],
                             capture_output=True, text=True, check=True).stdout
    rota = [line.split()[1] for line in listing.splitlines() if len(line.split()) == 2]
    labels = HostTree(Path("/")).labels(StorageSource())
    assert ("nonrotationaldisk" in labels) is ("0" in rota)
