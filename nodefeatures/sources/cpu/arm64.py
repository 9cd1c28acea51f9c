"""arm64: hwcap flags from /proc/cpuinfo `Features`, identity from MIDR_EL1.

NFD labels the hwcap words of its own fixed table only (HWCAP bits 0-31 and HWCAP2 bits
0-33), upper-cased; newer hwcaps are not labelled. The kernel prints `Features` from the
same hwcaps, so the words read here are the ones NFD sees through getauxval.
"""

from __future__ import annotations

import re

from nodefeatures.sources.cpu.cpuinfo import parse_int
from nodefeatures.sources.cpu.facts import VENDOR_UNKNOWN, CpuFacts

MIDR = "sys/devices/system/cpu/cpu0/regs/identification/midr_el1"

# Kernel `Features` words NFD labels, in hwcap bit order.
HWCAPS = frozenset((
    # AT_HWCAP bits 0-31
    "FP", "ASIMD", "EVTSTRM", "AES", "PMULL", "SHA1", "SHA2", "CRC32", "ATOMICS", "FPHP",
    "ASIMDHP", "CPUID", "ASIMDRDM", "JSCVT", "FCMA", "LRCPC", "DCPOP", "SHA3", "SM3", "SM4",
    "ASIMDDP", "SHA512", "SVE", "ASIMDFHM", "DIT", "USCAT", "ILRCPC", "FLAGM", "SSBS", "SB",
    "PACA", "PACG",
    # AT_HWCAP2 bits 0-33
    "DCPODP", "SVE2", "SVEAES", "SVEPMULL", "SVEBITPERM", "SVESHA3", "SVESM4", "FLAGM2",
    "FRINT", "SVEI8MM", "SVEF32MM", "SVEF64MM", "SVEBF16", "I8MM", "BF16", "DGH", "RNG", "BTI",
    "MTE", "ECV", "AFP", "RPRES", "MTE3", "SME", "SMEI16I64", "SMEF64F64", "SMEI8I32",
    "SMEF16F32", "SMEB16F32", "SMEF32F32", "SMEFA64", "WFXT", "EBF16", "SVEEBF16",
))

# MIDR_EL1 implementer byte -> vendor name as NFD publishes it.
IMPLEMENTERS = {
    0xC0: "Ampere",
    0x41: "ARM",
    0x42: "Broadcom",
    0x43: "Cavium",
    0x44: "DEC",
    0x46: "Fujitsu",
    0x49: "Infineon",
    0x4D: "Motorola",
    0x4E: "NVIDIA",
    0x50: "AMCC",
    0x51: "Qualcomm",
    0x56: "Marvell",
    0x69: "Intel",
}
_MIDR_TEXT = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{1,16})")


def is_arm64(block: dict[str, str]) -> bool:
    """Whether a /proc/cpuinfo block comes from an arm64 kernel."""
    return "CPU implementer" in block or ("Features" in block and "flags" not in block)


def midr_from_cpuinfo(block: dict[str, str]) -> int | None:
    """MIDR_EL1 rebuilt from the cpuinfo fields the kernel prints from it."""
    fields = [parse_int(block.get(key)) for key in
              ("CPU implementer", "CPU variant", "CPU part", "CPU revision")]
    if any(value is None for value in fields):
        return None
    implementer, variant, part, revision = fields  # type: ignore[misc]
    # The architecture field is 0xF ("see ID registers") on every ARMv8 and later CPU.
    return (implementer << 24) | (variant << 20) | (0xF << 16) | (part << 4) | revision


def arm64_facts(block: dict[str, str], origin: str, midr_text: str | None, midr_origin: str,
                warn) -> CpuFacts:
    """arm64 facts from the first cpuinfo block and the MIDR_EL1 sysfs file (if readable)."""
    facts = CpuFacts(arch="arm64", hypervisor="none",
                     hypervisor_origin="arm64: no hypervisor detection, as NFD")
    words = block.get("Features", "").upper().split()
    for word in words:
        if word in HWCAPS:
            facts.flags.setdefault(word, f"{origin}: Features {word.lower()}")
    facts.vendor, facts.family, facts.model = VENDOR_UNKNOWN, 0, 0
    if "CPUID" not in words:
        # Without the cpuid hwcap user space cannot read MIDR_EL1, so NFD reports nothing.
        facts.identity_origin = f"{origin}: no cpuid hwcap, MIDR_EL1 not readable"
        return facts
    midr: int | None = None
    if midr_text is not None:
        match = _MIDR_TEXT.fullmatch(midr_text.strip())
        if match:
            midr = int(match.group(1), 16)
            facts.identity_origin = f"{midr_origin}={midr_text.strip()}"
        else:
            warn(f"{midr_origin}: not a hexadecimal MIDR_EL1 value: {midr_text[:40]!r}")
    if midr is None:
        midr = midr_from_cpuinfo(block)
        facts.identity_origin = f"{origin}: CPU implementer/variant/part/revision"
    if midr is None:
        facts.vendor = facts.family = facts.model = None
        facts.identity_origin = f"{origin}: no MIDR_EL1"
        return facts
    facts.vendor = IMPLEMENTERS.get((midr >> 24) & 0xFF, VENDOR_UNKNOWN)
    facts.family = (midr >> 16) & 0xFF
    facts.model = midr & 0xFFFF
    return facts
