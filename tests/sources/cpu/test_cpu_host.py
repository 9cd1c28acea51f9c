"""sysfs-driven cpu labels (SMT, C/P-states, SST-BF, SGX/TDX/SEV), filtering, catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest
from cpu_testing import SOURCE, bits, catalogued, intel, make_fixture, run, short, vendor_leaf

from nodefeatures.discovery.config import ConfigError, build

SIBLINGS = "sys/bus/cpu/devices/{}/topology/thread_siblings_list"


def labels_with(tmp_path: Path, files: dict[str, str | bytes], leaves=None,
                config=None) -> dict[str, str]:
    fixture = make_fixture(tmp_path, leaves=leaves or intel(), xcr0=0x7, files=files)
    return short(run(fixture, config) if config else run(fixture))


@pytest.mark.parametrize(("lists", "expected"), [
    ({"cpu0": "0,2", "cpu1": "1,3"}, "true"),
    ({"cpu0": "0-1", "cpu1": "0-1"}, "true"),
    ({"cpu0": "0", "cpu1": "1"}, "false"),
])
def test_hardware_multithreading(tmp_path: Path, lists: dict[str, str], expected: str) -> None:
    files = {SIBLINGS.format(cpu): f"{value}\n" for cpu, value in lists.items()}
    assert labels_with(tmp_path, files)["hardware_multithreading"] == expected


def test_offline_cpus_are_skipped_but_unreadable_online_ones_cost_the_label(
        tmp_path: Path) -> None:
    nosmt = {SIBLINGS.format("cpu0"): "0\n", "sys/bus/cpu/devices/cpu1/online": "0\n"}
    assert labels_with(tmp_path / "a", nosmt)["hardware_multithreading"] == "false"
    broken = {SIBLINGS.format("cpu0"): "0\n", "sys/bus/cpu/devices/cpu1/online": "1\n"}
    assert "hardware_multithreading" not in labels_with(tmp_path / "b", broken)
    assert "hardware_multithreading" not in labels_with(tmp_path / "c", {})


@pytest.mark.parametrize(("driver", "max_cstate", "expected"), [
    ("intel_idle", "9", "true"),
    ("intel_idle", "0", "false"),
    ("acpi_idle", "9", None),
    ("haltpoll", "9", None),
])
def test_cstate(tmp_path: Path, driver: str, max_cstate: str, expected: str | None) -> None:
    files = {"sys/devices/system/cpu/cpuidle/current_driver": f"{driver}\n",
             "sys/module/intel_idle/parameters/max_cstate": f"{max_cstate}\n"}
    assert labels_with(tmp_path, files).get("cstate.enabled") == expected


def test_cstate_garbage_warns(tmp_path: Path) -> None:
    files = {"sys/devices/system/cpu/cpuidle/current_driver": "intel_idle\n",
             "sys/module/intel_idle/parameters/max_cstate": "lots\n"}
    result = run(make_fixture(tmp_path, leaves=intel(), xcr0=7, files=files))
    assert "cstate.enabled" not in short(result)
    assert any("/sys/module/intel_idle/parameters/max_cstate" in w for w in result.warnings)


def pstate_files(status: str, governors: dict[str, tuple[str, str]]) -> dict[str, str]:
    files = {"sys/devices/system/cpu/intel_pstate/status": f"{status}\n",
             "sys/devices/system/cpu/intel_pstate/no_turbo": "0\n"}
    for policy, (cpus, governor) in governors.items():
        base = f"sys/devices/system/cpu/cpufreq/{policy}"
        files[f"{base}/affected_cpus"] = f"{cpus}\n"
        files[f"{base}/scaling_governor"] = f"{governor}\n"
    return files


def test_pstate(tmp_path: Path) -> None:
    same = pstate_files("active", {"policy0": ("0", "powersave"), "policy1": ("1", "powersave"),
                                   "policy2": ("", "performance")})  # no CPUs: ignored
    labels = labels_with(tmp_path / "a", same)
    assert (labels["pstate.status"], labels["pstate.turbo"],
            labels["pstate.scaling_governor"]) == ("active", "true", "powersave")
    mixed = pstate_files("active", {"policy0": ("0", "powersave"),
                                    "policy1": ("1", "performance")})
    assert "pstate.scaling_governor" not in labels_with(tmp_path / "b", mixed)
    passive = pstate_files("passive", {"policy0": ("0", "schedutil")})
    passive["sys/devices/system/cpu/intel_pstate/no_turbo"] = "1\n"
    labels = labels_with(tmp_path / "c", passive)
    assert (labels["pstate.status"], labels["pstate.turbo"]) == ("passive", "false")
    assert "pstate.scaling_governor" not in labels
    off = labels_with(tmp_path / "d", pstate_files("off", {"policy0": ("0", "powersave")}))
    assert not any(key.startswith("pstate.") for key in off)


def test_sst_bf_compares_base_frequency_with_cpuid_0x16(tmp_path: Path) -> None:
    base = "sys/bus/cpu/devices/{}/cpufreq/base_frequency"
    above = {base.format("cpu0"): "2000000\n", base.format("cpu1"): "2700000\n"}
    assert labels_with(tmp_path / "a", above)["power.sst_bf.enabled"] == "true"
    equal = {base.format("cpu0"): "2000000\n", base.format("cpu1"): "2000999\n"}
    assert "power.sst_bf.enabled" not in labels_with(tmp_path / "b", equal)
    unknown_nominal = intel({(0x16, 0): (0, 0, 0, 0)})
    assert "power.sst_bf.enabled" not in labels_with(tmp_path / "c", above, unknown_nominal)


def test_security_labels(tmp_path: Path) -> None:
    sgx = intel({(7, 0): (0, bits(2, 3, 5, 8), 0, 0), (0x12, 0): (0x3, 0, 0, 0x241F),
                 (0x12, 2): (0x80000001, 0, 0x0C000001, 0)})
    files = {"sys/module/kvm_intel/parameters/tdx": "Y\n",
             "sys/module/kvm_amd/parameters/sev": "1\n",
             "sys/module/kvm_amd/parameters/sev_es": "Y\n",
             "sys/module/kvm_amd/parameters/sev_snp": "N\n"}
    labels = labels_with(tmp_path / "a", files, sgx)
    assert {k: v for k, v in labels.items() if k.startswith("security.")} == {
        "security.sgx.enabled": "true", "security.tdx.enabled": "true",
        "security.sev.enabled": "true", "security.sev.es.enabled": "true"}
    assert "cpuid.SGX" not in labels  # the flag itself stays default-blacklisted
    no_epc = intel({(7, 0): (0, bits(2, 3, 5, 8), 0, 0), (0x12, 0): (0x3, 0, 0, 0)})
    labels = labels_with(tmp_path / "b", {"sys/module/kvm_intel/parameters/tdx": "Y"}, no_epc)
    assert not any(key.startswith("security.") for key in labels)  # tdx needs exactly "Y\n"


def test_blacklist_and_whitelist(tmp_path: Path) -> None:
    leaves = intel({(0, 0): vendor_leaf(0x24, "GenuineIntel"),
                    (7, 1): (0, 0, 0, bits(19)), (0x24, 0): (0, 0x00070001, 0, 0)})
    labels = labels_with(tmp_path / "a", {}, leaves)
    assert "cpuid.SSE2" not in labels and "cpuid.AVX10" not in labels
    assert labels["cpuid.AVX2"] == "true" and labels["cpuid.AVX10_VERSION"] == "1"
    only = build({"sources": {"cpu": {"cpuid": {"attributeWhitelist": ["SSE2", "AVX10"]}}}},
                 {"cpu": SOURCE})
    labels = labels_with(tmp_path / "b", {}, leaves, only)
    assert {k for k in labels if k.startswith("cpuid.")} == {
        "cpuid.SSE2", "cpuid.AVX10", "cpuid.AVX10_VERSION"}  # the version is never filtered
    nothing = build({"sources": {"cpu": {"cpuid": {"attributeBlacklist": []}}}},
                    {"cpu": SOURCE})
    labels = labels_with(tmp_path / "c", {}, leaves, nothing)
    assert {"cpuid.SSE2", "cpuid.CMOV", "cpuid.AVX10", "cpuid.X86_64_V3"} <= set(labels)


def test_option_entries_must_be_strings() -> None:
    with pytest.raises(ConfigError, match=r"sources\.cpu\.cpuid\.attributeWhitelist"):
        build({"sources": {"cpu": {"cpuid": {"attributeWhitelist": [1]}}}}, {"cpu": SOURCE})
    with pytest.raises(ConfigError, match=r"sources\.cpu\.cpuid\.attributeBlacklist"):
        build({"sources": {"cpu": {"cpuid": {"attributeBlacklist": "SSE"}}}}, {"cpu": SOURCE})


def test_every_label_of_a_busy_host_is_catalogued(tmp_path: Path) -> None:
    files = {SIBLINGS.format("cpu0"): "0-1\n",
             "sys/devices/system/cpu/cpuidle/current_driver": "intel_idle\n",
             "sys/module/intel_idle/parameters/max_cstate": "9\n",
             "sys/bus/cpu/devices/cpu0/cpufreq/base_frequency": "2700000\n",
             "sys/module/kvm_intel/parameters/tdx": "Y\n",
             **pstate_files("active", {"policy0": ("0", "powersave")})}
    labels = labels_with(tmp_path, files)
    assert {"hardware_multithreading", "cstate.enabled", "pstate.status", "pstate.turbo",
            "pstate.scaling_governor", "power.sst_bf.enabled", "security.tdx.enabled",
            "model.hypervisor", "cpuid.X86_64_V3"} <= set(labels)
    assert [key for key in labels if not catalogued(key)] == []
    assert not catalogued("cpuid.lower")  # flag placeholders stand for upper-case names
