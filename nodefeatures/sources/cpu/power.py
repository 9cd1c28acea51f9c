"""Power management labels: `cpu-cstate.*`, `cpu-pstate.*` and `cpu-power.sst_bf.enabled`."""

from __future__ import annotations

from collections.abc import Callable

from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.sources.cpu.cpuinfo import parse_int
from nodefeatures.sources.cpu.topology import CPU_DEVICES

CPUIDLE = "sys/devices/system/cpu/cpuidle"
MAX_CSTATE = "sys/module/intel_idle/parameters/max_cstate"
INTEL_PSTATE = "sys/devices/system/cpu/intel_pstate"
CPUFREQ = "sys/devices/system/cpu/cpufreq"

Value = tuple[str, str]  # (label value, origin)
Warn = Callable[[str], None]


def cstate(root: HostRoot, warn: Warn) -> Value | None:
    """Whether intel_idle may use C-states; no answer under any other idle driver."""
    if not root.is_dir(CPUIDLE):
        return None
    driver = root.read_line(f"{CPUIDLE}/current_driver")
    if driver != "intel_idle":
        return None
    raw = root.read_line(MAX_CSTATE)
    if raw is None:
        return None
    limit = parse_int(raw)
    if limit is None:
        warn(f"{root.display(MAX_CSTATE)}: not a number: {raw[:40]!r}")
        return None
    return ("true" if limit > 0 else "false"), f"{root.display(MAX_CSTATE)}={raw}"


def pstate(root: HostRoot) -> dict[str, Value]:
    """intel_pstate status, turbo and the governor all CPU policies share."""
    if not root.is_dir(INTEL_PSTATE):
        return {}
    status_path = f"{INTEL_PSTATE}/status"
    status = root.read_line(status_path)
    if not status or status == "off":
        return {}
    found = {"status": (status, f"{root.display(status_path)}={status}")}
    no_turbo_path = f"{INTEL_PSTATE}/no_turbo"
    no_turbo = root.read_line(no_turbo_path)
    if no_turbo is not None:
        turbo = "true" if no_turbo[:1] == "0" else "false"
        found["turbo"] = (turbo, f"{root.display(no_turbo_path)}={no_turbo}")
    if status == "active":
        governor = _common_governor(root)
        if governor is not None:
            found["scaling_governor"] = governor
    return found


def _common_governor(root: HostRoot) -> Value | None:
    governors: set[str] = set()
    for policy in root.listdir(CPUFREQ):
        base = f"{CPUFREQ}/{policy}"
        if not root.read_line(f"{base}/affected_cpus"):
            continue  # a policy without CPUs (or not a policy) says nothing
        governor = root.read_line(f"{base}/scaling_governor")
        if not governor:
            return None
        governors.add(governor)
    if len(governors) != 1:
        return None
    (governor,) = governors
    return governor, f"{root.display(CPUFREQ)}/*/scaling_governor={governor} on every policy"


def sst_bf(root: HostRoot, cpus: list[str], nominal_mhz: int, warn: Warn) -> Value | None:
    """Intel SST-BF: some CPU's base frequency is above the nominal one CPUID reports."""
    if nominal_mhz <= 0:
        return None  # nothing to compare with (NFD gives up with an error then, too)
    for cpu in cpus:
        path = f"{CPU_DEVICES}/{cpu}/cpufreq/base_frequency"
        raw = root.read_line(path)
        if raw is None:
            continue
        khz = parse_int(raw)
        if khz is None:
            warn(f"{root.display(path)}: not a number: {raw[:40]!r}")
            continue
        if khz // 1000 > nominal_mhz:
            return "true", f"{root.display(path)}={raw} kHz > CPUID 0x16 base {nominal_mhz} MHz"
    return None
