"""Raw features as NFD names them: feature names, element names and value formats.

Each family is checked on a fixture tree or a hand-built host, through the feature set
rules match against (NFD's NodeFeatureSpec shape), so a renamed feature or element, or
a value in another format, fails here before a user's rule silently stops matching.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hosttree import HostTree
from testpaths import FIXTURES

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.run import Discovery, load_sources, run_pass
from nodefeatures.discovery.source import Host

SPR = FIXTURES / "intel-spr-rhel9"
DGX = FIXTURES / "dgx-h100"

# Every feature NFD v0.19.0's customization guide lists for the built-in sources
# ("Available features"), and its kind there.
NFD_FEATURES = {
    "cpu.cpuid": "flags", "cpu.cstate": "attributes", "cpu.model": "attributes",
    "cpu.pstate": "attributes", "cpu.rdt": "attributes", "cpu.security": "attributes",
    "cpu.sst": "attributes", "cpu.topology": "attributes", "cpu.coprocessor": "attributes",
    "kernel.config": "attributes", "kernel.loadedmodule": "flags",
    "kernel.enabledmodule": "flags", "kernel.selinux": "attributes",
    "kernel.kvm": "attributes", "kernel.version": "attributes",
    "local.label": "attributes", "local.feature": "attributes",
    "memory.nv": "instances", "memory.numa": "attributes", "memory.swap": "attributes",
    "memory.hugepages": "attributes", "network.device": "instances",
    "network.virtual": "instances", "pci.device": "instances", "storage.block": "instances",
    "system.osrelease": "attributes", "system.dmiid": "attributes",
    "system.name": "attributes", "usb.device": "instances",
}
BOOL = {"true", "false"}
INT = re.compile(r"-?[0-9]+")
HEX4 = re.compile(r"[0-9a-f]{4}")


def discover(host: Host) -> Discovery:
    sources, _ = load_sources()
    return run_pass(host, sources, build({}, sources))


def spec(host: Host) -> dict[str, Any]:
    return FeatureSet.from_results(discover(host).results).as_dict()


def attrs(data: dict[str, Any], name: str) -> dict[str, str]:
    return data["attributes"][name]["elements"]


def flags(data: dict[str, Any], name: str) -> set[str]:
    return set(data["flags"][name]["elements"])


def instances(data: dict[str, Any], name: str) -> list[dict[str, str]]:
    return [e["attributes"] for e in data["instances"][name]["elements"]]


@pytest.fixture(scope="module")
def spr() -> dict[str, Any]:
    return spec(replay_host(SPR))


@pytest.fixture(scope="module")
def dgx() -> dict[str, Any]:
    return spec(replay_host(DGX))


def test_every_nfd_feature_is_there_under_its_name_and_kind(spr: dict[str, Any]) -> None:
    for name, kind in NFD_FEATURES.items():
        assert name in spr[kind], f"{name} missing from {kind}"


def test_cpu_features(spr: dict[str, Any]) -> None:
    assert {"AVX512F", "AMXTILE", "AVX2"} <= flags(spr, "cpu.cpuid")
    model = attrs(spr, "cpu.model")
    assert set(model) == {"vendor_id", "family", "id", "hypervisor"}
    assert model["vendor_id"] == "Intel" and model["hypervisor"] == "none"
    assert INT.fullmatch(model["family"]) and INT.fullmatch(model["id"])
    assert attrs(spr, "cpu.cstate") == {"enabled": "true"}
    assert set(attrs(spr, "cpu.pstate")) <= {"status", "turbo", "scaling_governor"}
    assert attrs(spr, "cpu.pstate")["turbo"] in BOOL
    # CPUID 7:EBX[12,15], 0xF and 0x10 of the fixture: NFD's RDT flag names.
    assert attrs(spr, "cpu.rdt") == {"RDTMON": "true", "RDTCMT": "true", "RDTMBM": "true",
                                     "RDTL3CA": "true", "RDTL2CA": "true", "RDTMBA": "true"}
    topology = attrs(spr, "cpu.topology")
    assert topology["hardware_multithreading"] in BOOL
    assert topology["socket_count"] == "1"
    assert attrs(spr, "cpu.security") == {"tdx.enabled": "true"}
    # No SST-BF, no coprocessor: the features exist, empty, as in NFD.
    assert attrs(spr, "cpu.sst") == {} and attrs(spr, "cpu.coprocessor") == {}
    assert "cpu.power" not in spr["attributes"]


def test_cpu_features_on_a_host_without_cpuid_or_cpuinfo_still_exist(
        dgx: dict[str, Any]) -> None:
    assert flags(dgx, "cpu.cpuid") == set()
    for name in ("cpu.rdt", "cpu.sst", "cpu.security", "cpu.coprocessor"):
        assert attrs(dgx, name) == {}


def _cpu_host(tmp_path: Path) -> Host:
    """The Sapphire Rapids fixture with resctrl, a TDX key count and SST-BF."""
    fixture = tmp_path / "fixture"
    shutil.copytree(SPR, fixture, symlinks=True)
    tree = HostTree(fixture / "root")
    tree.file("sys/fs/resctrl/info/L3/num_closids", "15\n")
    tree.file("sys/fs/cgroup/misc.capacity", "tdx 31\n")
    tree.file("sys/bus/cpu/devices/cpu0/cpufreq/base_frequency", "2900000\n")
    return replay_host(fixture)


def test_cpu_counts_are_features_and_never_labels(tmp_path: Path) -> None:
    discovery = discover(_cpu_host(tmp_path))
    data = FeatureSet.from_results(discovery.results).as_dict()
    # num_closids less the default group, as NFD counts it.
    assert attrs(data, "cpu.rdt")["RDTL3CA_NUM_CLOSID"] == "14"
    assert attrs(data, "cpu.security")["tdx.total_keys"] == "31"
    labels = discovery.labels
    assert not any("total_keys" in key or "rdt" in key for key in labels)


def test_sst_bf_is_cpu_sst_and_its_label_keeps_its_name(tmp_path: Path) -> None:
    discovery = discover(_cpu_host(tmp_path))
    data = FeatureSet.from_results(discovery.results).as_dict()
    # 2900 MHz base frequency above CPUID 0x16's 2600 MHz nominal one.
    assert attrs(data, "cpu.sst") == {"bf.enabled": "true"}
    assert discovery.labels["feature.node.kubernetes.io/cpu-power.sst_bf.enabled"].value == "true"


def test_kernel_features(spr: dict[str, Any]) -> None:
    config = attrs(spr, "kernel.config")
    # Every option, with its raw value: y and m stay as written, values unquoted.
    assert config["64BIT"] == "y" and INT.fullmatch(config["NR_CPUS"])
    # Options outside configOpts (NO_HZ_COMMON, PREEMPT_VOLUNTARY) are features too.
    assert {"NO_HZ", "NO_HZ_FULL", "NO_HZ_COMMON", "PREEMPT_VOLUNTARY"} <= set(config)
    loaded = flags(spr, "kernel.loadedmodule")
    assert {"irdma", "ib_uverbs", "kvm_intel"} <= loaded
    enabled = flags(spr, "kernel.enabledmodule")
    assert loaded <= enabled and {"configfs", "zlib_inflate", "rng-core"} <= enabled
    assert "configfs" not in loaded
    assert attrs(spr, "kernel.selinux") == {"enabled": "true"}
    assert attrs(spr, "kernel.kvm")["enabled"] in BOOL
    version = attrs(spr, "kernel.version")
    assert version == {"full": "5.14.0-427.13.1.el9_4.x86_64", "major": "5", "minor": "14",
                       "revision": "0"}


def test_kernel_config_labels_still_only_the_configured_options(tmp_path: Path) -> None:
    labels = discover(replay_host(SPR)).labels
    config = {k for k in labels if k.startswith("feature.node.kubernetes.io/kernel-config.")}
    assert config <= {f"feature.node.kubernetes.io/kernel-config.{o}"
                      for o in ("NO_HZ", "NO_HZ_IDLE", "NO_HZ_FULL", "PREEMPT")}


def test_enabledmodule_needs_modules_builtin_as_in_nfd(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/sys/kernel/osrelease", "6.8.0-31-generic\n")
    tree.file("proc/modules", "nvidia 16384 0 - Live 0x0\n")
    data = spec(tree.host())
    assert flags(data, "kernel.loadedmodule") == {"nvidia"}
    assert "kernel.enabledmodule" not in data["flags"]


def test_selinux_is_false_on_a_sysfs_without_it(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.dir("sys/fs/cgroup")
    tree.dir("sys/devices/virtual/misc/kvm")
    data = spec(tree.host())
    assert attrs(data, "kernel.selinux") == {"enabled": "false"}
    assert attrs(data, "kernel.kvm") == {"enabled": "true"}


def test_memory_features(spr: dict[str, Any], dgx: dict[str, Any]) -> None:
    assert attrs(spr, "memory.numa") == {"is_numa": "true", "node_count": "2"}
    assert attrs(spr, "memory.swap")["enabled"] in BOOL
    # Page sizes as Kubernetes quantities, as NFD names them.
    assert attrs(spr, "memory.hugepages") == {"enabled": "true", "hugepages-2Mi": "0",
                                              "hugepages-1Gi": "8"}
    assert attrs(dgx, "memory.hugepages") == {"enabled": "false", "hugepages-2Mi": "0",
                                              "hugepages-1Gi": "0"}
    assert instances(spr, "memory.nv") == []


@pytest.mark.parametrize(("directory", "name"), [
    ("hugepages-2048kB", "hugepages-2Mi"), ("hugepages-1048576kB", "hugepages-1Gi"),
    ("hugepages-64kB", "hugepages-64Ki"), ("hugepages-32768kB", "hugepages-32Mi"),
    ("hugepages-16777216kB", "hugepages-16Gi"), ("hugepages-1000kB", "hugepages-1000Ki"),
    ("hugepages-xkB", None), ("other", None),
])
def test_huge_page_sizes_are_named_as_kubernetes_quantities(directory: str,
                                                            name: str | None) -> None:
    from nodefeatures.sources.memory import page_size_name

    assert page_size_name(directory) == name


def test_network_features(spr: dict[str, Any]) -> None:
    (device,) = instances(spr, "network.device")
    assert device == {"name": "ens1f0", "operstate": "up", "speed": "100000", "mtu": "1500",
                      "sriov_numvfs": "8", "sriov_totalvfs": "128"}
    (virtual,) = instances(spr, "network.virtual")
    assert virtual == {"name": "lo", "operstate": "unknown", "mtu": "65536"}


def test_pci_features(spr: dict[str, Any], dgx: dict[str, Any]) -> None:
    devices = instances(dgx, "pci.device")
    assert len(devices) == 20  # every function, labelled class or not
    for device in devices:
        assert {"class", "vendor", "device", "subsystem_vendor", "subsystem_device"} <= set(device)
        assert set(device) <= {"class", "vendor", "device", "subsystem_vendor",
                               "subsystem_device", "sriov_totalvfs", "iommu_group/type",
                               "iommu/intel-iommu/version"}
        assert HEX4.fullmatch(device["class"]) and HEX4.fullmatch(device["vendor"])
    assert any(d["vendor"] == "15b3" for d in devices)


def test_pci_iommu_attributes(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    device = "sys/devices/pci0000:00/0000:00:02.0"
    for name, value in (("class", "0x030000"), ("vendor", "0x8086"), ("device", "0x46a6"),
                        ("subsystem_vendor", "0x17aa"), ("subsystem_device", "0x22e4"),
                        ("iommu/intel-iommu/version", "1:0"), ("sriov_totalvfs", "7")):
        tree.file(f"{device}/{name}", value + "\n")
    tree.file("sys/kernel/iommu_groups/0/type", "DMA-FQ\n")
    tree.link(f"{device}/iommu_group", "../../../kernel/iommu_groups/0")
    tree.link("sys/bus/pci/devices/0000:00:02.0", "../../../devices/pci0000:00/0000:00:02.0")
    (found,) = instances(spec(tree.host()), "pci.device")
    assert found == {"class": "0300", "vendor": "8086", "device": "46a6",
                     "subsystem_vendor": "17aa", "subsystem_device": "22e4",
                     "sriov_totalvfs": "7", "iommu_group/type": "DMA-FQ",
                     "iommu/intel-iommu/version": "1:0"}


def test_storage_features(spr: dict[str, Any]) -> None:
    blocks = {b["name"]: b for b in instances(spr, "storage.block")}
    assert set(blocks) == {"nvme0n1", "sda"}
    assert blocks["nvme0n1"] == {"name": "nvme0n1", "rotational": "0", "dax": "0",
                                 "nr_zones": "0", "zoned": "none"}


def test_usb_features(spr: dict[str, Any]) -> None:
    devices = instances(spr, "usb.device")
    assert devices
    for device in devices:
        assert set(device) <= {"class", "vendor", "device", "serial"}
        assert re.fullmatch(r"[0-9a-f]{2}", device["class"])
        assert re.fullmatch(r"[0-9a-f]{4}", device["vendor"])


def test_system_features(spr: dict[str, Any], dgx: dict[str, Any]) -> None:
    release = attrs(spr, "system.osrelease")
    assert release["ID"] == "rhel" and {"NAME", "PRETTY_NAME", "PLATFORM_ID"} <= set(release)
    assert release["VERSION_ID.major"] == release["VERSION_ID"].split(".")[0]
    assert attrs(spr, "system.dmiid")["sys_vendor"] == "Supermicro"
    assert attrs(dgx, "system.dmiid") == {
        "product_name": "DGXH100", "product_family": "DGX", "sys_vendor": "NVIDIA",
        "board_vendor": "NVIDIA", "chassis_vendor": "NVIDIA", "chassis_type": "23",
        "bios_vendor": "American Megatrends International, LLC."}
    # A fixture carries no node name; the replaying machine's NODE_NAME is not its own.
    assert attrs(dgx, "system.name") == {"nodename": ""}


def test_system_name_is_node_name_from_the_environment(tmp_path: Path) -> None:
    host = HostTree(tmp_path).host()
    host.env = {"NODE_NAME": "gpu-node-7"}
    assert attrs(spec(host), "system.name") == {"nodename": "gpu-node-7"}


def test_local_features(spr: dict[str, Any], dgx: dict[str, Any]) -> None:
    assert "power-domain" in attrs(spr, "local.label")
    assert "hidden" in attrs(spr, "local.feature")
    assert attrs(dgx, "local.label") == {} and attrs(dgx, "local.feature") == {}


def test_an_empty_feature_exists_for_rules(tmp_path: Path) -> None:
    # NFD: DoesNotExist on an element of an empty feature matches; a term on a missing
    # feature fails. So `cpu.rdt` with no element must still be a feature.
    from nodefeatures.discovery.rules import engine
    from nodefeatures.discovery.rules.model import parse_rules

    rules, problems = parse_rules([
        {"name": "no rdt", "labels": {"no.rdt": "true"}, "matchFeatures": [
            {"feature": "cpu.rdt", "matchExpressions": {"RDTMON": {"op": "DoesNotExist"}}}]},
        {"name": "no such feature", "labels": {"never": "true"}, "matchFeatures": [
            {"feature": "cpu.nothing", "matchExpressions": {"x": {"op": "DoesNotExist"}}}]},
    ], origin="test")
    assert not problems
    features = FeatureSet.from_results(discover(replay_host(DGX)).results)
    outcomes = engine.run(rules, features)
    assert [o.matched for o in outcomes] == [True, False]


def test_capture_records_what_the_features_read_and_replay_gives_the_same_features(
        tmp_path: Path) -> None:
    from nodefeatures.discovery.fixture import capture_host

    node = tmp_path / "node"
    shutil.copytree(SPR / "root", node, symlinks=True)
    live = spec(HostTree(node).host())
    spec(capture_host(tmp_path / "fixture", root=str(node)))
    replayed = spec(replay_host(tmp_path / "fixture"))
    for name, kind in NFD_FEATURES.items():
        if name.startswith("cpu.") or name == "system.name":
            continue  # CPUID and NODE_NAME come from this machine, not from the tree
        assert replayed[kind].get(name) == live[kind].get(name), name
    assert "system.dmiid" in replayed["attributes"]
    assert "kernel.enabledmodule" in replayed["flags"]
