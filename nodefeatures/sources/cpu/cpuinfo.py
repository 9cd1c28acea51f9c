"""The /proc/cpuinfo fallback for x86, used only when raw CPUID cannot be read.

The kernel names flags its own way (`pni`, `sse4_1`, `sha_ni`); the table maps them to
NFD's names. Some NFD flags have no cpuinfo flag at all (they need raw CPUID), and a few
cpuinfo flags are the kernel's own synthesis, so this view is close to, not identical
with, the CPUID view; docs/labels.md says where.
"""

from __future__ import annotations

import re

from nodefeatures.sources.cpu.facts import VENDOR_UNKNOWN, X86_VENDORS, CpuFacts
from nodefeatures.sources.cpu.x86 import derive

CPUINFO = "proc/cpuinfo"
_DECIMAL = re.compile(r"[0-9]{1,20}")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]{1,16}")
MAX_CPUINFO = 16 * 1024 * 1024  # ~1.5 KiB per CPU; thousands of CPUs still fit

# Linux flag -> NFD names it implies.
LINUX_FLAGS: dict[str, tuple[str, ...]] = {
    "3dnow": ("AMD3DNOW",),
    "3dnowext": ("AMD3DNOWEXT",),
    "abm": ("LZCNT", "POPCNT"),
    "adx": ("ADX",),
    "aes": ("AESNI",),
    "amd_ppin": ("PPIN",),
    "amx_bf16": ("AMXBF16",),
    "amx_int8": ("AMXINT8",),
    "amx_tile": ("AMXTILE",),
    "arch_capabilities": ("IA32_ARCH_CAP",),
    "avx": ("AVX",),
    "avx2": ("AVX2",),
    "avx512_bf16": ("AVX512BF16",),
    "avx512_bitalg": ("AVX512BITALG",),
    "avx512_fp16": ("AVX512FP16",),
    "avx512_vbmi2": ("AVX512VBMI2",),
    "avx512_vnni": ("AVX512VNNI",),
    "avx512_vp2intersect": ("AVX512VP2INTERSECT",),
    "avx512_vpopcntdq": ("AVX512VPOPCNTDQ",),
    "avx512bw": ("AVX512BW",),
    "avx512cd": ("AVX512CD",),
    "avx512dq": ("AVX512DQ",),
    "avx512er": ("AVX512ER",),
    "avx512f": ("AVX512F",),
    "avx512ifma": ("AVX512IFMA",),
    "avx512pf": ("AVX512PF",),
    "avx512vbmi": ("AVX512VBMI",),
    "avx512vl": ("AVX512VL",),
    "avx_vnni": ("AVXVNNI",),
    "bmi1": ("BMI1",),
    "bmi2": ("BMI2",),
    "cldemote": ("CLDEMOTE",),
    "clzero": ("CLZERO",),
    "cmov": ("CMOV",),
    "cpb": ("CPBOOST",),
    "cppc": ("CPPC",),
    "cx16": ("CX16",),
    "cx8": ("CMPXCHG8",),
    "debug_swap": ("SEV_DEBUGSWAP",),
    "decodeassists": ("SVMDA",),
    "enqcmd": ("ENQCMD",),
    "erms": ("ERMS",),
    "f16c": ("F16C",),
    "flush_l1d": ("FLUSH_L1D",),
    "flushbyasid": ("SVMFBASID",),
    "fma": ("FMA3",),
    "fma4": ("FMA4",),
    "fpu": ("X87",),
    "fsrm": ("FSRM",),
    "fxsr": ("FXSR",),
    "fxsr_opt": ("FXSROPT",),
    "gfni": ("GFNI",),
    "hle": ("HLE",),
    "hypervisor": ("HYPERVISOR",),
    "ibpb": ("IBPB",),
    "ibs": ("IBS",),
    "ibt": ("CETIBT",),
    "irperf": ("MSRIRC",),
    "lahf_lm": ("LAHF",),
    "lam": ("LAM",),
    "lbrv": ("LBRVIRT",),
    "md_clear": ("MD_CLEAR",),
    "mmx": ("MMX",),
    "mmxext": ("MMXEXT",),
    "movbe": ("MOVBE",),
    "movdir64b": ("MOVDIR64B",),
    "movdiri": ("MOVDIRI",),
    "mpx": ("MPX",),
    "npt": ("SVMNP",),
    "nrip_save": ("NRIPS",),
    "nx": ("NX",),
    "overflow_recov": ("MCAOVERFLOW",),
    "pausefilter": ("SVMPF",),
    "pclmulqdq": ("CLMUL",),
    "pconfig": ("PCONFIG",),
    "pfthreshold": ("SVMPFT",),
    "pni": ("SSE3",),
    "popcnt": ("POPCNT",),
    "rdpru": ("RDPRU",),
    "rdrand": ("RDRAND",),
    "rdseed": ("RDSEED",),
    "rdtscp": ("RDTSCP",),
    "rtm": ("RTM",),
    "sep": ("SYSEE",),
    "serialize": ("SERIALIZE",),
    "sev": ("SEV",),
    "sev_es": ("SEV_ES",),
    "sev_snp": ("SEV_SNP",),
    "sgx": ("SGX",),
    "sgx_lc": ("SGXLC",),
    "sha_ni": ("SHA",),
    "sme": ("SME",),
    "ssbd": ("SPEC_CTRL_SSBD",),
    "sse": ("SSE",),
    "sse2": ("SSE2",),
    "sse4_1": ("SSE4",),
    "sse4_2": ("SSE42",),
    "sse4a": ("SSE4A",),
    "ssse3": ("SSSE3",),
    "stibp": ("STIBP",),
    "succor": ("SUCCOR",),
    "svm": ("SVM",),
    "svm_lock": ("SVML",),
    "syscall": ("SYSCALL",),
    "tdx_guest": ("TDX_GUEST",),
    "tme": ("TME",),
    "topoext": ("TOPEXT",),
    "tsc_scale": ("TSCRATEMSR",),
    "tsxldtrk": ("TSXLDTRK",),
    "user_shstk": ("CETSS",),
    "vaes": ("VAES",),
    "vmcb_clean": ("VMCBCLEAN",),
    "vmx": ("VMX",),
    "vpclmulqdq": ("VPCLMULQDQ",),
    "waitpkg": ("WAITPKG",),
    "wbnoinvd": ("WBNOINVD",),
    "xgetbv1": ("XGETBV1",),
    "xop": ("XOP",),
    # Linux hides OSXSAVE but sets CR4.OSXSAVE whenever it uses XSAVE.
    "xsave": ("XSAVE", "OSXSAVE"),
    "xsavec": ("XSAVEC",),
    "xsaveopt": ("XSAVEOPT",),
    "xsaves": ("XSAVES",),
}
# Flags whose cpuinfo meaning matches NFD's only for one vendor: Intel's `ibrs` is the
# kernel's synthesis from SPEC_CTRL, NFD's IBRS is AMD's own CPUID bit.
VENDOR_ONLY = {"ibrs": ("AMD", ("IBRS",))}


def first_block(text: str) -> dict[str, str]:
    """`key: value` pairs of the first processor block (every CPU repeats the same flags)."""
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            block.setdefault(key.strip(), value.strip())
    return block


def parse_int(value: str | None) -> int | None:
    """A decimal or 0x-hex number, or None."""
    if value is None:
        return None
    text = value.strip()
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    return int(text) if _DECIMAL.fullmatch(text) else None


def x86_facts(block: dict[str, str], origin: str, warn) -> CpuFacts:
    """x86 facts from the first block of /proc/cpuinfo."""
    facts = CpuFacts(arch="x86_64")
    raw_vendor = block.get("vendor_id", "")
    facts.vendor = X86_VENDORS.get(raw_vendor, VENDOR_UNKNOWN)
    family, model = parse_int(block.get("cpu family")), parse_int(block.get("model"))
    if family is None or model is None:
        warn(f"{origin}: no numeric 'cpu family'/'model'; CPU model labels skipped")
    elif 6 < family < 0xF:
        # Linux adds the extended model from family 6 up, NFD only for families 6 and
        # 0xF (so Zhaoxin family 7 model 59 is model 11 there).
        model &= 0xF
    facts.family, facts.model = family, model
    facts.identity_origin = (f"{origin}: vendor_id={raw_vendor!r}, cpu family={family}, "
                             f"model={model}")
    present = set(block.get("flags", "").split())
    flags = facts.flags
    for linux in sorted(present):
        for name in LINUX_FLAGS.get(linux, ()):
            flags.setdefault(name, f"{origin}: flag {linux}")
        vendor_only = VENDOR_ONLY.get(linux)
        if vendor_only and vendor_only[0] == facts.vendor:
            for name in vendor_only[1]:
                flags.setdefault(name, f"{origin}: flag {linux} on {facts.vendor}")
    siblings, cores = parse_int(block.get("siblings")), parse_int(block.get("cpu cores"))
    if ("ht" in present and facts.vendor in ("Intel", "AMD") and siblings and cores
            and siblings > cores):
        flags["HTT"] = f"{origin}: flag ht, siblings {siblings} > cpu cores {cores}"
    derive(flags, facts.vendor, family, model)
    if "HYPERVISOR" not in flags:
        facts.hypervisor = "none"
        facts.hypervisor_origin = f"{origin}: no hypervisor flag"
    # Otherwise which hypervisor only CPUID leaf 0x40000000 can tell: no label.
    return facts
