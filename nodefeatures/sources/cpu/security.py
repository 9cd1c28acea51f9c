"""`cpu-security.*`: SGX, TDX and SEV, from CPUID and the KVM module parameters."""

from __future__ import annotations

from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.sources.cpu.facts import CpuFacts

KVM_INTEL = "sys/module/kvm_intel"
KVM_AMD = "sys/module/kvm_amd"
TDX_PARAM = f"{KVM_INTEL}/parameters/tdx"
SEV_PARAMS = {
    "sev.enabled": f"{KVM_AMD}/parameters/sev",
    "sev.es.enabled": f"{KVM_AMD}/parameters/sev_es",
    "sev.snp.enabled": f"{KVM_AMD}/parameters/sev_snp",
}

Value = tuple[str, str]


def security(root: HostRoot, facts: CpuFacts) -> dict[str, Value]:
    """Only the true cases are labelled, as NFD does."""
    found: dict[str, Value] = {}
    if "SGX" in facts.flags and facts.sgx_epc_bytes:
        found["sgx.enabled"] = ("true", f"{facts.flags['SGX']}; {facts.sgx_origin}: "
                                        f"{facts.sgx_epc_bytes} bytes of EPC")
    # Each KVM module is checked once, so a host without it costs one lookup, not four.
    if root.is_dir(KVM_INTEL) and root.read_bytes(TDX_PARAM, limit=64) == b"Y\n":
        found["tdx.enabled"] = ("true", f"{root.display(TDX_PARAM)}=Y")
    if "TDX_GUEST" in facts.flags:
        found["tdx.protected"] = ("true", facts.flags["TDX_GUEST"])
    if root.is_dir(KVM_AMD):
        for name, path in SEV_PARAMS.items():
            value = root.read_bytes(path, limit=64)
            if value is not None and value[:1] in (b"1", b"Y"):
                found[name] = ("true", f"{root.display(path)}={value[:1].decode()}")
    return found
