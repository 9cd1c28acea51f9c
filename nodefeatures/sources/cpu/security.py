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

# cgroup v2 at the root, or a v1 `misc` hierarchy: `<resource> <capacity>` lines.
MISC_CAPACITY = ("sys/fs/cgroup/misc.capacity", "sys/fs/cgroup/misc/misc.capacity")
# Counts that exist only as features (NFD labels none of them), by the resource they count.
CAPACITIES = {"tdx.enabled": ("tdx.total_keys", "tdx"),
              "sev.enabled": ("sev.asids", "sev"),
              "sev.es.enabled": ("sev.encrypted_state_ids", "sev_es")}

Value = tuple[str, str]


def misc_capacity(root: HostRoot, resource: str) -> Value | None:
    """The capacity of one misc cgroup resource, as NFD reads it (first file found)."""
    for path in MISC_CAPACITY:
        text = root.read_text(path, limit=64 * 1024)
        if text is None:
            continue
        for line in text.splitlines():
            # NFD matches by prefix, so `sev` also finds a `sev_es` line listed first.
            if line.startswith(resource):
                fields = line.split(" ")
                if len(fields) > 1 and fields[1].strip().isdigit():
                    value = str(int(fields[1]))
                    return value, f"{root.display(path)}: {resource} {value}"
                return None
        return None
    return None


def security(root: HostRoot, facts: CpuFacts) -> dict[str, Value]:
    """Only the true cases are labelled, as NFD does."""
    found: dict[str, Value] = {}
    if "SGX" in facts.flags and facts.sgx_epc_bytes:
        found["sgx.enabled"] = ("true", f"{facts.flags['SGX']}; {facts.sgx_origin}: "
                                        f"{facts.sgx_epc_bytes} bytes of EPC")
        found["sgx.epc"] = (str(facts.sgx_epc_bytes), facts.sgx_origin)
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
    for enabled, (name, resource) in CAPACITIES.items():
        if enabled in found:
            capacity = misc_capacity(root, resource)
            if capacity is not None:
                found[name] = capacity
    return found
