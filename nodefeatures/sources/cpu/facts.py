"""What the CPU itself says, whichever way it was read (raw CPUID, /proc/cpuinfo, MIDR)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VENDOR_UNKNOWN = "VendorUnknown"

# CPUID vendor signatures (leaf 0, and leaf 0x40000000 for hypervisors) by the vendor
# names NFD publishes; a signature not listed here is VendorUnknown.
X86_VENDORS = {
    "GenuineIntel": "Intel",
    "AuthenticAMD": "AMD",
    "AMDisbetter!": "AMD",
    "HygonGenuine": "Hygon",
    "CentaurHauls": "VIA",
    "VIA VIA VIA ": "VIA",
    "GenuineTMx86": "Transmeta",
    "TransmetaCPU": "Transmeta",
    "Geode by NSC": "NSC",
    "SiS SiS SiS ": "SiS",
    "Vortex86 SoC": "SiS",
    "RiseRiseRise": "SiS",
    "Genuine  RDC": "RDC",
    "KVMKVMKVM": "KVM",
    "Linux KVM Hv": "KVM",
    "TCGTCGTCGTCG": "QEMU",
    "Microsoft Hv": "MSVM",
    "VMwareVMware": "VMware",
    "XenVMMXenVMM": "XenHVM",
    "bhyve bhyve ": "Bhyve",
    "QNXQVMBSQG": "QNX",
    "ACRNACRNACRN": "ACRN",
    "SRESRESRESRE": "SRE",
    "Apple VZ": "Apple",
}

_OUTSIDE_HYPERVISOR_CHARS = re.compile(r"[^-A-Za-z0-9_.]+")
_EDGES = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def hypervisor_value(signature: str) -> str:
    """The `model.hypervisor` value of a leaf-0x40000000 signature."""
    vendor = X86_VENDORS.get(signature)
    if vendor is not None:
        return vendor.lower()
    # Unknown hypervisors keep their own name, made label-safe; edges are trimmed too,
    # since a value such as "_prl_hyperv_" would be rejected as a label value.
    cleaned = _EDGES.sub("", _OUTSIDE_HYPERVISOR_CHARS.sub("_", signature))
    return cleaned or "unknown"


@dataclass
class CpuFacts:
    """The CPU identity and feature flags, each with the fact it came from."""

    arch: str  # "x86_64" or "arm64"
    flags: dict[str, str] = field(default_factory=dict)  # NFD flag name -> origin
    vendor: str | None = VENDOR_UNKNOWN  # None when it cannot be known
    family: int | None = 0  # None when it cannot be known
    model: int | None = 0
    identity_origin: str = ""
    hypervisor: str | None = None  # None when it cannot be known
    hypervisor_origin: str = ""
    avx10_level: int = 0
    avx10_origin: str = ""
    base_mhz: int = 0  # CPUID 0x16 nominal frequency; 0 when unknown
    sgx_epc_bytes: int | None = None  # None when it cannot be known
    sgx_origin: str = ""
    # Intel RDT capabilities by NFD's names (`RDTMON`, `RDTL3CA`, ...) -> origin.
    rdt: dict[str, str] = field(default_factory=dict)
