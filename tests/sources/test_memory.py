"""memory source: NUMA nodes, swap areas and NVDIMM devices on hand-built sysfs trees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hosttree import HostTree, short_labels, uncatalogued

from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.source import Host
from nodefeatures.sources.memory import MemorySource

SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def numa_nodes(tree: HostTree, count: int) -> None:
    """Nodes as real sysfs has them: bus entries linking to devices/system/node."""
    for index in range(count):
        tree.file(f"sys/devices/system/node/node{index}/cpulist", f"{index * 8}-{index * 8 + 7}\n")
        tree.link(f"sys/bus/node/devices/node{index}", f"../../../devices/system/node/node{index}")


def nd_device(tree: HostTree, path: str, devtype: str, mode: str | None = None) -> None:
    """An nd bus device under the platform NFIT bus, linked from /sys/bus/nd/devices."""
    device = f"sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/{path}"
    tree.file(f"{device}/devtype", devtype + "\n")
    if mode is not None:
        tree.file(f"{device}/mode", mode + "\n")
    tree.link(f"sys/bus/nd/devices/{path.rsplit('/', 1)[-1]}", f"../../../{device[4:]}")


@pytest.mark.parametrize(("count", "numa"), [(0, False), (1, False), (2, True), (4, True)])
def test_numa_needs_more_than_one_node(tmp_path: Path, count: int, numa: bool) -> None:
    tree = HostTree(tmp_path)
    numa_nodes(tree, count)
    result = tree.run(MemorySource())
    assert ("numa" in short_labels(MemorySource(), result)) is numa
    if count:
        assert result.features is not None
        assert result.features.attributes["numa"]["node_count"].value == str(count)


def test_numa_origin_names_the_directory(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    numa_nodes(tree, 2)
    label = tree.run(MemorySource()).labels["feature.node.kubernetes.io/memory-numa"]
    assert label.origin == "/sys/bus/node/devices: 2 entries"


@pytest.mark.parametrize(("swaps", "swap"), [
    (SWAPS_HEADER, False),
    (SWAPS_HEADER + "\n\n", False),
    (SWAPS_HEADER + "/dev/dm-1                      partition\t8388604\t\t0\t\t-2\n", True),
    (SWAPS_HEADER + "/swapfile file 2097148 0 -2\n/dev/zram0 partition 4194300 0 100\n", True),
    ("", False),
])
def test_swap_needs_a_line_after_the_header(tmp_path: Path, swaps: str, swap: bool) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/swaps", swaps)
    labels = tree.labels(MemorySource())
    # The label is `memory-swap`, not the documented `memory-swap.enabled`.
    assert labels == ({"swap": "true"} if swap else {})


def test_swaps_come_from_the_proc_option(tmp_path: Path) -> None:
    tree = HostTree(tmp_path / "host")
    tree.file("proc/swaps", SWAPS_HEADER)
    procfs = tmp_path / "procfs"
    procfs.mkdir()
    (procfs / "swaps").write_text(SWAPS_HEADER + "/swap.img file 4194300 0 -2\n")
    result = tree.run(MemorySource(), host=Host(root=HostRoot(tree.root, proc=procfs)))
    assert short_labels(MemorySource(), result) == {"swap": "true"}


def test_nvdimm_with_dax(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    nd_device(tree, "region0", "nd_pmem")
    nd_device(tree, "region0/namespace0.0", "nd_namespace_pmem", mode="devdax")
    nd_device(tree, "region0/dax0.0", "nd_dax")
    nd_device(tree, "nmem0", "nvdimm")
    result = tree.run(MemorySource())
    assert short_labels(MemorySource(), result) == {"nv.present": "true", "nv.dax": "true"}
    dax = result.labels["feature.node.kubernetes.io/memory-nv.dax"]
    assert dax.origin == "/sys/bus/nd/devices/dax0.0/devtype=nd_dax"
    assert result.features is not None
    namespace = [i for i in result.features.instances["nv"] if i.attributes["name"] ==
                 "namespace0.0"]
    assert namespace[0].attributes == {"name": "namespace0.0", "devtype": "nd_namespace_pmem",
                                       "mode": "devdax"}


def test_nvdimm_without_dax(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    nd_device(tree, "region0", "nd_pmem")
    nd_device(tree, "region0/namespace0.0", "nd_namespace_pmem", mode="fsdax")
    nd_device(tree, "region0/pfn0.1", "nd_pfn")
    assert tree.labels(MemorySource()) == {"nv.present": "true"}


def test_any_nd_entry_counts_even_without_devtype(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.dir("sys/bus/nd/devices/ndbus0")
    assert tree.labels(MemorySource()) == {"nv.present": "true"}


def test_empty_nd_bus_is_no_nvdimm(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.dir("sys/bus/nd/devices")
    assert tree.labels(MemorySource()) == {}


def test_nd_links_absolute_inside_the_root(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("sys/devices/platform/e820/ndbus0/region0/dax0.0/devtype", "nd_dax\n")
    tree.link("sys/bus/nd/devices/dax0.0", "/sys/devices/platform/e820/ndbus0/region0/dax0.0")
    assert tree.labels(MemorySource()) == {"nv.present": "true", "nv.dax": "true"}


def test_hostile_inputs_cost_only_their_labels(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    numa_nodes(tree, 2)
    tree.file("proc/swaps", SWAPS_HEADER + "x" * (1024 * 1024))
    tree.file("sys/bus/nd/devices/dax0.0/devtype", b"nd_dax" + b"\x00" * 10000)
    result = tree.run(MemorySource())
    assert short_labels(MemorySource(), result) == {"numa": "true", "nv.present": "true"}
    assert any(w.startswith("/proc/swaps: larger than") for w in result.warnings)
    assert any(w.startswith("/sys/bus/nd/devices/dax0.0/devtype: larger than")
               for w in result.warnings)


def test_every_label_is_catalogued(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    numa_nodes(tree, 2)
    tree.file("proc/swaps", SWAPS_HEADER + "/swapfile file 2097148 0 -2\n")
    nd_device(tree, "region0/dax0.0", "nd_dax")
    source = MemorySource()
    labels = tree.labels(source)
    assert sorted(labels) == ["numa", "nv.dax", "nv.present", "swap"]
    assert uncatalogued(source, labels) == []
    assert len(source.catalogue) == len(labels)


def _online_nodes(text: str) -> int:
    count = 0
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="needs Linux")
def test_live_machine() -> None:
    """Checked against other kernel views: /proc/meminfo and the online node list."""
    tree = HostTree(Path("/"))
    labels = tree.labels(MemorySource())
    swap_total = re.search(r"^SwapTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    assert swap_total is not None
    assert ("swap" in labels) is (int(swap_total.group(1)) > 0)
    online = Path("/sys/devices/system/node/online")
    if online.is_file():
        assert ("numa" in labels) is (_online_nodes(online.read_text()) > 1)
    assert ("nv.present" in labels) is (Path("/sys/bus/nd/devices").is_dir() and
                                        any(Path("/sys/bus/nd/devices").iterdir()))
