"""Decode raw x86 CPUID leaves and XCR0 into NFD's feature names.

NFD names x86 features after the klauspost/cpuid FeatureID identifiers and applies that
library's usability rules: AVX only when the OS saves YMM state (XCR0[2:1]), the
AVX-512 group and AMX only when it also saves opmask and ZMM state (XCR0[7:5]), AMD-only
leaves only on AMD. The table below is our own statement of which CPUID bit each name
stands for (docs/labels.md lists the few places where we read a different bit on purpose).
"""

from __future__ import annotations

from nodefeatures.sources.cpu.cpuid import CpuidReader
from nodefeatures.sources.cpu.facts import VENDOR_UNKNOWN, X86_VENDORS, CpuFacts, hypervisor_value

EAX, EBX, ECX, EDX = 0, 1, 2, 3
_REG_NAMES = ("EAX", "EBX", "ECX", "EDX")
# Leaves whose subleaf is part of the name in origins (`7.0:EBX[5]`).
_SUBLEAF_LEAVES = frozenset({0x7, 0xD, 0x12, 0x19, 0x1E, 0x24})

# Gates a row may need besides its leaf being in range: another flag already decoded
# (upper case), or one of these conditions.
AVX512_STATE = "avx512-state"  # OS saves opmask, ZMM_Hi256 and Hi16_ZMM state
AMD_ONLY = "amd"
AMX_SUBLEAF = "amx-subleaf"  # leaf 0x1E reports subleaf 1

# (name, leaf, subleaf, register, bit, gates). Order matters: a gate flag comes first.
BITS: tuple[tuple[str, int, int, int, int, tuple[str, ...]], ...] = (
    # Leaf 1: the original feature words.
    ("X87", 0x1, 0, EDX, 0, ()),
    ("CMPXCHG8", 0x1, 0, EDX, 8, ()),
    ("SYSEE", 0x1, 0, EDX, 11, ()),
    ("CMOV", 0x1, 0, EDX, 15, ()),
    ("MMX", 0x1, 0, EDX, 23, ()),
    ("FXSR", 0x1, 0, EDX, 24, ()),
    ("SSE", 0x1, 0, EDX, 25, ()),
    ("SSE2", 0x1, 0, EDX, 26, ()),
    ("SSE3", 0x1, 0, ECX, 0, ()),
    ("CLMUL", 0x1, 0, ECX, 1, ()),
    ("VMX", 0x1, 0, ECX, 5, ()),
    ("SSSE3", 0x1, 0, ECX, 9, ()),
    ("CX16", 0x1, 0, ECX, 13, ()),
    ("SSE4", 0x1, 0, ECX, 19, ()),
    ("SSE42", 0x1, 0, ECX, 20, ()),
    ("MOVBE", 0x1, 0, ECX, 22, ()),
    ("POPCNT", 0x1, 0, ECX, 23, ()),
    ("AESNI", 0x1, 0, ECX, 25, ()),
    ("XSAVE", 0x1, 0, ECX, 26, ()),
    ("OSXSAVE", 0x1, 0, ECX, 27, ()),
    ("FMA3", 0x1, 0, ECX, 12, ("OSXSAVE",)),  # FMA on XMM needs no YMM state
    ("F16C", 0x1, 0, ECX, 29, ()),
    ("RDRAND", 0x1, 0, ECX, 30, ()),
    ("HYPERVISOR", 0x1, 0, ECX, 31, ()),
    # Leaf 7 subleaf 0. AVX itself is decoded before this table is walked.
    ("SGX", 0x7, 0, EBX, 2, ()),
    ("BMI1", 0x7, 0, EBX, 3, ()),
    ("HLE", 0x7, 0, EBX, 4, ()),
    ("AVX2", 0x7, 0, EBX, 5, ("AVX",)),
    ("BMI2", 0x7, 0, EBX, 8, ("BMI1",)),
    ("ERMS", 0x7, 0, EBX, 9, ()),
    ("RTM", 0x7, 0, EBX, 11, ()),
    ("MPX", 0x7, 0, EBX, 14, ()),
    ("AVX512F", 0x7, 0, EBX, 16, (AVX512_STATE,)),
    ("AVX512DQ", 0x7, 0, EBX, 17, (AVX512_STATE,)),
    ("RDSEED", 0x7, 0, EBX, 18, ()),
    ("ADX", 0x7, 0, EBX, 19, ()),
    ("AVX512IFMA", 0x7, 0, EBX, 21, (AVX512_STATE,)),
    ("AVX512PF", 0x7, 0, EBX, 26, (AVX512_STATE,)),
    ("AVX512ER", 0x7, 0, EBX, 27, (AVX512_STATE,)),
    ("AVX512CD", 0x7, 0, EBX, 28, (AVX512_STATE,)),
    ("SHA", 0x7, 0, EBX, 29, ()),
    ("AVX512BW", 0x7, 0, EBX, 30, (AVX512_STATE,)),
    ("AVX512VL", 0x7, 0, EBX, 31, (AVX512_STATE,)),
    ("AVX512VBMI", 0x7, 0, ECX, 1, (AVX512_STATE,)),
    ("WAITPKG", 0x7, 0, ECX, 5, ()),
    ("AVX512VBMI2", 0x7, 0, ECX, 6, (AVX512_STATE,)),
    ("CETSS", 0x7, 0, ECX, 7, ()),
    ("GFNI", 0x7, 0, ECX, 8, ()),
    ("VAES", 0x7, 0, ECX, 9, ()),
    ("VPCLMULQDQ", 0x7, 0, ECX, 10, ()),
    ("AVX512VNNI", 0x7, 0, ECX, 11, (AVX512_STATE,)),
    ("AVX512BITALG", 0x7, 0, ECX, 12, (AVX512_STATE,)),
    ("TME", 0x7, 0, ECX, 13, ()),
    ("AVX512VPOPCNTDQ", 0x7, 0, ECX, 14, (AVX512_STATE,)),
    ("KEYLOCKER", 0x7, 0, ECX, 23, ()),
    ("CLDEMOTE", 0x7, 0, ECX, 25, ()),
    ("MOVDIRI", 0x7, 0, ECX, 27, ()),
    ("MOVDIR64B", 0x7, 0, ECX, 28, ()),
    ("ENQCMD", 0x7, 0, ECX, 29, ()),
    ("SGXLC", 0x7, 0, ECX, 30, ()),
    ("FSRM", 0x7, 0, EDX, 4, ()),
    ("AVX512VP2INTERSECT", 0x7, 0, EDX, 8, (AVX512_STATE,)),
    ("SRBDS_CTRL", 0x7, 0, EDX, 9, ()),
    ("MD_CLEAR", 0x7, 0, EDX, 10, ()),
    ("RTM_ALWAYS_ABORT", 0x7, 0, EDX, 11, ()),
    ("SERIALIZE", 0x7, 0, EDX, 14, ()),
    ("HYBRID_CPU", 0x7, 0, EDX, 15, ()),
    ("TSXLDTRK", 0x7, 0, EDX, 16, ()),
    ("PCONFIG", 0x7, 0, EDX, 18, ()),
    ("CETIBT", 0x7, 0, EDX, 20, ()),
    ("AMXBF16", 0x7, 0, EDX, 22, (AVX512_STATE,)),
    ("AVX512FP16", 0x7, 0, EDX, 23, (AVX512_STATE,)),
    ("AMXTILE", 0x7, 0, EDX, 24, (AVX512_STATE,)),
    ("AMXINT8", 0x7, 0, EDX, 25, (AVX512_STATE,)),
    ("IBPB", 0x7, 0, EDX, 26, ()),
    ("STIBP", 0x7, 0, EDX, 27, ()),
    ("FLUSH_L1D", 0x7, 0, EDX, 28, ()),
    ("IA32_ARCH_CAP", 0x7, 0, EDX, 29, ()),
    ("IA32_CORE_CAP", 0x7, 0, EDX, 30, ()),
    ("SPEC_CTRL_SSBD", 0x7, 0, EDX, 31, ()),
    # Leaf 7 subleaf 1.
    ("SM3_X86", 0x7, 1, EAX, 1, ()),
    ("SM4_X86", 0x7, 1, EAX, 2, ()),
    ("AVXVNNI", 0x7, 1, EAX, 4, ("AVX",)),
    ("AVX512BF16", 0x7, 1, EAX, 5, (AVX512_STATE,)),
    ("CMPCCXADD", 0x7, 1, EAX, 7, ()),
    ("MOVSB_ZL", 0x7, 1, EAX, 10, ()),
    ("STOSB_SHORT", 0x7, 1, EAX, 11, ()),
    ("CMPSB_SCADBS_SHORT", 0x7, 1, EAX, 12, ()),
    ("WRMSRNS", 0x7, 1, EAX, 19, (AVX512_STATE,)),
    ("AMXFP16", 0x7, 1, EAX, 21, (AVX512_STATE,)),
    ("HRESET", 0x7, 1, EAX, 22, ()),
    ("AVXIFMA", 0x7, 1, EAX, 23, ()),
    ("LAM", 0x7, 1, EAX, 26, ()),
    ("MSRLIST", 0x7, 1, EAX, 27, (AVX512_STATE,)),
    ("AVXVNNIINT8", 0x7, 1, EDX, 4, ()),
    ("AVXNECONVERT", 0x7, 1, EDX, 5, ()),
    ("AMXCOMPLEX", 0x7, 1, EDX, 8, ()),
    ("AVXVNNIINT16", 0x7, 1, EDX, 10, ()),
    ("PREFETCHI", 0x7, 1, EDX, 14, ()),
    ("AVX10", 0x7, 1, EDX, 19, ()),
    ("APX_F", 0x7, 1, EDX, 21, ()),
    # Leaf 7 subleaf 2.
    ("PSFD", 0x7, 2, EDX, 0, ()),
    ("IDPRED_CTRL", 0x7, 2, EDX, 1, ()),
    ("RRSBA_CTRL", 0x7, 2, EDX, 2, ()),
    ("BHI_CTRL", 0x7, 2, EDX, 4, ()),
    ("MCDT_NO", 0x7, 2, EDX, 5, ()),
    # XSAVE variants, SGX, AMX and AVX10 sub-leaves.
    ("XSAVEOPT", 0xD, 1, EAX, 0, ("XSAVE",)),
    ("XSAVEC", 0xD, 1, EAX, 1, ("XSAVE",)),
    ("XGETBV1", 0xD, 1, EAX, 2, ("XSAVE",)),
    ("XSAVES", 0xD, 1, EAX, 3, ("XSAVE",)),
    ("SGXPQC", 0x12, 0, EAX, 12, ("SGX",)),
    # The documented AMX-FP8/TRANSPOSE/TF32 bits (leaf 0x1E subleaf 1), where NFD reads
    # leaf 7 bits that mean something else or nothing (docs/labels.md, deviations).
    ("AMXFP8", 0x1E, 1, EAX, 4, ("AMXTILE", AMX_SUBLEAF)),
    ("AMXTRANSPOSE", 0x1E, 1, EAX, 5, ("AMXTILE", AMX_SUBLEAF)),
    ("AMXTF32", 0x1E, 1, EAX, 6, ("AMXTILE", AMX_SUBLEAF)),
    ("AVX10_128", 0x24, 0, EBX, 16, ("AVX10",)),
    ("AVX10_256", 0x24, 0, EBX, 17, ("AVX10",)),
    ("AVX10_512", 0x24, 0, EBX, 18, ("AVX10",)),
    # Extended leaves.
    ("LAHF", 0x80000001, 0, ECX, 0, ()),
    ("SVM", 0x80000001, 0, ECX, 2, ()),
    ("LZCNT", 0x80000001, 0, ECX, 5, ()),
    ("POPCNT", 0x80000001, 0, ECX, 5, ()),  # AMD's ABM bit brings both
    ("SSE4A", 0x80000001, 0, ECX, 6, ()),
    ("IBS", 0x80000001, 0, ECX, 10, ()),
    ("XOP", 0x80000001, 0, ECX, 11, ("AVX",)),
    ("FMA4", 0x80000001, 0, ECX, 16, ("AVX",)),
    ("TOPEXT", 0x80000001, 0, ECX, 22, ()),
    ("SYSCALL", 0x80000001, 0, EDX, 11, ()),
    ("NX", 0x80000001, 0, EDX, 20, ()),
    ("MMXEXT", 0x80000001, 0, EDX, 22, ()),
    ("MMX", 0x80000001, 0, EDX, 23, ()),
    ("FXSR", 0x80000001, 0, EDX, 24, ()),
    ("FXSROPT", 0x80000001, 0, EDX, 25, ()),
    ("RDTSCP", 0x80000001, 0, EDX, 27, ()),
    ("AMD3DNOWEXT", 0x80000001, 0, EDX, 30, ()),
    ("AMD3DNOW", 0x80000001, 0, EDX, 31, ()),
    ("MCAOVERFLOW", 0x80000007, 0, EBX, 0, ()),
    ("SUCCOR", 0x80000007, 0, EBX, 1, ()),
    ("HWA", 0x80000007, 0, EBX, 2, ()),
    ("CPBOOST", 0x80000007, 0, EDX, 9, ()),
    ("CLZERO", 0x80000008, 0, EBX, 0, ()),
    ("MSRIRC", 0x80000008, 0, EBX, 1, ()),
    ("INVLPGB", 0x80000008, 0, EBX, 3, ()),
    ("RDPRU", 0x80000008, 0, EBX, 4, ()),
    ("MCOMMIT", 0x80000008, 0, EBX, 8, ()),
    ("WBNOINVD", 0x80000008, 0, EBX, 9, ()),
    ("IBPB", 0x80000008, 0, EBX, 12, ()),
    ("INT_WBINVD", 0x80000008, 0, EBX, 13, ()),
    ("IBRS", 0x80000008, 0, EBX, 14, ()),
    ("STIBP", 0x80000008, 0, EBX, 15, ()),
    ("STIBP_ALWAYSON", 0x80000008, 0, EBX, 17, ()),
    ("IBRS_PREFERRED", 0x80000008, 0, EBX, 18, ()),
    ("IBRS_PROVIDES_SMP", 0x80000008, 0, EBX, 19, ()),
    ("EFER_LMSLE_UNS", 0x80000008, 0, EBX, 20, ()),
    ("TLB_FLUSH_NESTED", 0x80000008, 0, EBX, 21, ()),
    ("PPIN", 0x80000008, 0, EBX, 23, ()),
    ("SPEC_CTRL_SSBD", 0x80000008, 0, EBX, 24, ()),
    ("CPPC", 0x80000008, 0, EBX, 27, ()),
    ("PSFD", 0x80000008, 0, EBX, 28, ()),
    ("SVMNP", 0x8000000A, 0, EDX, 0, ("SVM",)),
    ("LBRVIRT", 0x8000000A, 0, EDX, 1, ("SVM",)),
    ("SVML", 0x8000000A, 0, EDX, 2, ("SVM",)),
    ("NRIPS", 0x8000000A, 0, EDX, 3, ("SVM",)),
    ("TSCRATEMSR", 0x8000000A, 0, EDX, 4, ("SVM",)),
    ("VMCBCLEAN", 0x8000000A, 0, EDX, 5, ("SVM",)),
    ("SVMFBASID", 0x8000000A, 0, EDX, 6, ("SVM",)),
    ("SVMDA", 0x8000000A, 0, EDX, 7, ("SVM",)),
    ("SVMPF", 0x8000000A, 0, EDX, 10, ("SVM",)),
    ("SVMPFT", 0x8000000A, 0, EDX, 12, ("SVM",)),
    ("FP128", 0x8000001A, 0, EAX, 0, ()),
    ("MOVU", 0x8000001A, 0, EAX, 1, ()),
    ("FP256", 0x8000001A, 0, EAX, 2, ()),
    ("IBSFFV", 0x8000001B, 0, EAX, 0, ("IBS",)),
    ("IBSFETCHSAM", 0x8000001B, 0, EAX, 1, ("IBS",)),
    ("IBSOPSAM", 0x8000001B, 0, EAX, 2, ("IBS",)),
    ("IBSRDWROPCNT", 0x8000001B, 0, EAX, 3, ("IBS",)),
    ("IBSOPCNT", 0x8000001B, 0, EAX, 4, ("IBS",)),
    ("IBSBRNTRGT", 0x8000001B, 0, EAX, 5, ("IBS",)),
    ("IBSOPCNTEXT", 0x8000001B, 0, EAX, 6, ("IBS",)),
    ("IBSRIPINVALIDCHK", 0x8000001B, 0, EAX, 7, ("IBS",)),
    ("IBS_OPFUSE", 0x8000001B, 0, EAX, 8, ("IBS",)),
    ("IBS_FETCH_CTLX", 0x8000001B, 0, EAX, 9, ("IBS",)),
    ("IBS_OPDATA4", 0x8000001B, 0, EAX, 10, ("IBS",)),
    ("IBS_ZEN4", 0x8000001B, 0, EAX, 11, ("IBS",)),
    ("SME", 0x8000001F, 0, EAX, 0, (AMD_ONLY,)),
    ("SEV", 0x8000001F, 0, EAX, 1, (AMD_ONLY,)),
    ("MSR_PAGEFLUSH", 0x8000001F, 0, EAX, 2, (AMD_ONLY,)),
    ("SEV_ES", 0x8000001F, 0, EAX, 3, (AMD_ONLY,)),
    ("SEV_SNP", 0x8000001F, 0, EAX, 4, (AMD_ONLY,)),
    ("VMPL", 0x8000001F, 0, EAX, 5, (AMD_ONLY,)),
    ("SME_COHERENT", 0x8000001F, 0, EAX, 10, (AMD_ONLY,)),
    ("SEV_64BIT", 0x8000001F, 0, EAX, 11, (AMD_ONLY,)),
    ("SEV_RESTRICTED", 0x8000001F, 0, EAX, 12, (AMD_ONLY,)),
    ("SEV_ALTERNATIVE", 0x8000001F, 0, EAX, 13, (AMD_ONLY,)),
    ("SEV_DEBUGSWAP", 0x8000001F, 0, EAX, 14, (AMD_ONLY,)),
    ("IBS_PREVENTHOST", 0x8000001F, 0, EAX, 15, (AMD_ONLY,)),
    ("VTE", 0x8000001F, 0, EAX, 16, (AMD_ONLY,)),
    ("VMSA_REGPROT", 0x8000001F, 0, EAX, 24, (AMD_ONLY,)),
    ("TSA_VERW_CLEAR", 0x80000021, 0, EAX, 5, (AMD_ONLY,)),
    ("AVX512BMM", 0x80000021, 0, EAX, 23, (AMD_ONLY,)),
    ("SBPB", 0x80000021, 0, EAX, 27, (AMD_ONLY,)),
    ("IBPB_BRTYPE", 0x80000021, 0, EAX, 28, (AMD_ONLY,)),
    ("SRSO_NO", 0x80000021, 0, EAX, 29, (AMD_ONLY,)),
    ("SRSO_USER_KERNEL_NO", 0x80000021, 0, EAX, 30, (AMD_ONLY,)),
    ("SRSO_MSR_FIX", 0x80000021, 0, EAX, 31, (AMD_ONLY,)),
    ("TSA_L1_NO", 0x80000021, 0, ECX, 1, (AMD_ONLY,)),
    ("TSA_SQ_NO", 0x80000021, 0, ECX, 2, (AMD_ONLY,)),
)

# Flags decoded by rules rather than single bits (see decode()).
DERIVED = ("AVX", "AVXSLOW", "HTT", "KEYLOCKERW", "TDX_GUEST", "PMU_FIXEDCOUNTER_CYCLES",
           "PMU_FIXEDCOUNTER_INSTRUCTIONS", "PMU_FIXEDCOUNTER_REFCYCLES",
           "PMU_FIXEDCOUNTER_TOPDOWN_SLOTS")

# x86-64 psABI microarchitecture levels, each including the one before.
LEVELS: tuple[tuple[str, ...], ...] = (
    ("CMOV", "CMPXCHG8", "X87", "FXSR", "MMX", "SSE", "SSE2"),
    ("CX16", "LAHF", "POPCNT", "SSE3", "SSE4", "SSE42", "SSSE3"),
    ("AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA3", "LZCNT", "MOVBE", "OSXSAVE"),
    ("AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"),
)
LEVEL_FLAGS = tuple(f"X86_64_V{n}" for n in range(1, len(LEVELS) + 1))

_YMM_STATE = 0b110  # XCR0[2:1]: SSE and AVX state
_ZMM_STATE = 0b111 << 5  # XCR0[7:5]: opmask, ZMM_Hi256, Hi16_ZMM
_AVX_BITS = (1 << 26) | (1 << 27) | (1 << 28)  # XSAVE, OSXSAVE, AVX
_XSAVE_BITS = (1 << 26) | (1 << 27)
_TDX_SIGNATURE = "IntelTDX    "
_HYPERV_TDX_ISOLATION = 0xBE3


def leaf_name(leaf: int, subleaf: int = 0) -> str:
    """A leaf as the origins spell it: `1`, `7.0`, `0xD.1`, `0x80000001`."""
    name = str(leaf) if leaf < 10 else f"0x{leaf:X}"
    return f"{name}.{subleaf}" if leaf in _SUBLEAF_LEAVES else name


def bit_origin(leaf: int, subleaf: int, register: int, bit: int | str) -> str:
    return f"CPUID {leaf_name(leaf, subleaf)}:{_REG_NAMES[register]}[{bit}]"


def register_string(*registers: int) -> str:
    """Registers as the ASCII they hold, up to the first NUL (vendor signatures)."""
    raw = b"".join(reg.to_bytes(4, "little") for reg in registers)
    return raw.split(b"\x00", 1)[0].decode("latin-1")


def family_model(signature: int) -> tuple[int, int]:
    """Family and model of a leaf-1 EAX signature, extended fields added as NFD adds them."""
    family = (signature >> 8) & 0xF
    model = (signature >> 4) & 0xF
    if family in (0x6, 0xF):
        model += ((signature >> 16) & 0xF) << 4
    if family == 0xF:
        family += (signature >> 20) & 0xFF
    return family, model


def microarch_level(flags: dict[str, str] | set[str]) -> int:
    """The highest x86-64 level all of whose features are present; 0 without SYSENTER/SYSCALL."""
    if "SYSEE" not in flags and "SYSCALL" not in flags:
        return 0
    level = 0
    for required in LEVELS:
        if not all(name in flags for name in required):
            break
        level += 1
    return level


def derive(flags: dict[str, str], vendor: str | None, family: int | None,
           model: int | None) -> None:
    """Flags NFD computes rather than reads: AVXSLOW, TSA immunity and x86-64 levels."""
    if family is not None and model is not None:
        # AVX that splits 256-bit work in two: Intel before Haswell, AMD before Zen 2.
        slow = (vendor == "Intel" and family == 6 and model < 60) or (
            vendor == "AMD" and (family < 23 or (family == 23 and model < 49)))
        if slow and "AVX" in flags:
            flags["AVXSLOW"] = f"derived: AVX on {vendor} family {family} model {model}"
        # AMD parts not affected by TSA although CPUID does not say so.
        if vendor == "AMD" and (family < 0x19 or (family == 0x1A and (
                model <= 0x4F or 0x60 <= model <= 0x7F))):
            note = f"derived: AMD family 0x{family:X} model 0x{model:X} is not affected"
            flags.setdefault("TSA_L1_NO", note)
            flags.setdefault("TSA_SQ_NO", note)
    level = microarch_level(flags)
    for n in range(1, level + 1):
        flags[f"X86_64_V{n}"] = f"derived: x86-64 level {level} (all of its features present)"


def decode(reader: CpuidReader) -> CpuFacts:
    """Every NFD x86 fact that CPUID (and XCR0) can tell."""
    facts = CpuFacts(arch="x86_64")
    max_basic, vendor_b, vendor_c, vendor_d = reader.cpuid(0)
    signature = register_string(vendor_b, vendor_d, vendor_c)
    facts.vendor = X86_VENDORS.get(signature, VENDOR_UNKNOWN)
    facts.identity_origin = f"CPUID 0: {signature!r}"
    if max_basic < 1:
        return facts
    max_ext = reader.cpuid(0x80000000)[EAX]
    if max_ext < 0x80000000:
        max_ext = 0
    eax1, ebx1, ecx1, edx1 = reader.cpuid(1)
    facts.family, facts.model = family_model(eax1)
    facts.identity_origin += f", CPUID 1:EAX=0x{eax1:08X}"
    flags = facts.flags

    def in_range(leaf: int) -> bool:
        return leaf <= (max_ext if leaf >= 0x80000000 else max_basic)

    xcr0 = reader.xcr0() if ecx1 & _XSAVE_BITS == _XSAVE_BITS else 0
    if ecx1 & _AVX_BITS == _AVX_BITS and xcr0 & _YMM_STATE == _YMM_STATE:
        flags["AVX"] = f"CPUID 1:ECX[26,27,28], XCR0=0x{xcr0:X} (XCR0[2:1]=11)"
    zmm_usable = (ecx1 & _XSAVE_BITS == _XSAVE_BITS and xcr0 & _YMM_STATE == _YMM_STATE
                  and xcr0 & _ZMM_STATE == _ZMM_STATE)
    conditions = {
        AVX512_STATE: zmm_usable,
        AMD_ONLY: facts.vendor == "AMD",
        AMX_SUBLEAF: in_range(0x1E) and reader.cpuid(0x1E, 0)[EAX] >= 1,
    }
    gate_notes = {AVX512_STATE: f"XCR0=0x{xcr0:X} (XCR0[7:5]=111)", AMD_ONLY: "AMD",
                  AMX_SUBLEAF: "CPUID 0x1E.0:EAX>=1"}
    for name, leaf, subleaf, register, bit, gates in BITS:
        if name in flags or not in_range(leaf):
            continue
        if not all(flags.get(g) is not None if g.isupper() else conditions[g] for g in gates):
            continue
        if (reader.cpuid(leaf, subleaf)[register] >> bit) & 1:
            origin = bit_origin(leaf, subleaf, register, bit)
            if gates:
                origin += ", with " + ", ".join(gate_notes.get(g, g) for g in gates)
            flags[name] = origin

    if facts.vendor in ("Intel", "AMD") and (edx1 >> 28) & 1 and max_basic >= 4:
        threads = _threads_per_core(reader, facts, max_basic, max_ext, ebx1, edx1)
        if threads > 1:
            flags["HTT"] = f"CPUID 1:EDX[28], {threads} threads per core"
    if "KEYLOCKER" in flags and max_basic >= 0x19 and reader.cpuid(0x19)[EBX] & 0b101 == 0b101:
        flags["KEYLOCKERW"] = bit_origin(0x19, 0, EBX, "0,2")
    if "AVX10" in flags and max_basic >= 0x24:
        facts.avx10_level = reader.cpuid(0x24)[EBX] & 0xFF
        facts.avx10_origin = bit_origin(0x24, 0, EBX, "7:0")
    if max_basic >= 0xA:
        _decode_fixed_counters(reader.cpuid(0xA), flags)
    _decode_tdx_guest(reader, flags, max_basic)
    derive(flags, facts.vendor, facts.family, facts.model)

    if "HYPERVISOR" in flags:
        _, hb, hc, hd = reader.cpuid(0x40000000)
        hv_signature = register_string(hb, hc, hd)
        facts.hypervisor = hypervisor_value(hv_signature)
        facts.hypervisor_origin = f"CPUID 0x40000000: {hv_signature!r}"
    else:
        facts.hypervisor = "none"
        facts.hypervisor_origin = "CPUID 1:ECX[31]=0"
    facts.base_mhz = reader.cpuid(0x16)[EAX] & 0xFFFF if max_basic >= 0x16 else 0
    if "SGX" in flags and max_basic >= 0x12:
        facts.sgx_epc_bytes = _sgx_epc_bytes(reader)
        facts.sgx_origin = "CPUID 0x12.2-9 EPC sections"
    if max_basic >= 7:
        _decode_rdt(reader, facts.rdt, max_basic)
    return facts


def _decode_rdt(reader: CpuidReader, rdt: dict[str, str], max_basic: int) -> None:
    """Intel RDT monitoring (CPUID 7:EBX[12], 0xF) and allocation (7:EBX[15], 0x10)."""
    ebx7 = reader.cpuid(7)[EBX]
    if (ebx7 >> 12) & 1 and max_basic >= 0xF and (reader.cpuid(0xF)[EDX] >> 1) & 1:
        rdt["RDTMON"] = f"{bit_origin(7, 0, EBX, 12)}, {bit_origin(0xF, 0, EDX, 1)}"
        l3 = reader.cpuid(0xF, 1)[EDX]
        if l3 & 1:
            rdt["RDTCMT"] = bit_origin(0xF, 1, EDX, 0)
        if l3 & 0b110 == 0b110:
            rdt["RDTMBM"] = bit_origin(0xF, 1, EDX, "1,2")
    if (ebx7 >> 15) & 1 and max_basic >= 0x10:
        allocation = reader.cpuid(0x10)[EBX]
        for bit, name in ((1, "RDTL3CA"), (2, "RDTL2CA"), (3, "RDTMBA")):
            if (allocation >> bit) & 1:
                rdt[name] = bit_origin(0x10, 0, EBX, bit)


def _threads_per_core(reader: CpuidReader, facts: CpuFacts, max_basic: int, max_ext: int,
                      ebx1: int, edx1: int) -> int:
    """Logical processors per core as NFD counts them (leaf 0xB, else older leaves)."""
    if max_basic < 0xB:
        if facts.vendor != "Intel":
            return 1
        logical = (ebx1 >> 16) & 0xFF
        if logical <= 1:
            return 1
        cores = (reader.cpuid(4, 0)[EAX] >> 26) + 1
        return logical // cores
    smt_width = reader.cpuid(0xB, 0)[EBX] & 0xFFFF
    if smt_width:
        return smt_width
    # Zen before leaf 0xB: 0x8000001E EBX[15:8] is threads per core minus one.
    if facts.vendor == "AMD" and (edx1 >> 28) & 1 and facts.family >= 23:
        if max_ext >= 0x8000001E:
            return ((reader.cpuid(0x8000001E)[EBX] >> 8) & 0xFF) + 1
        return 2
    return 1


def _decode_fixed_counters(leaf_a: tuple[int, int, int, int], flags: dict[str, str]) -> None:
    """Architectural fixed-function performance counters from leaf 0xA."""
    eax, ebx, _, edx = leaf_a
    version = eax & 0xFF
    if version == 0:
        return
    count = edx & 0x1F if version > 1 else 0
    origin = f"CPUID 0xA: version {version}, EBX=0x{ebx:X}, {count} fixed counters"
    names = ("PMU_FIXEDCOUNTER_INSTRUCTIONS", "PMU_FIXEDCOUNTER_CYCLES",
             "PMU_FIXEDCOUNTER_REFCYCLES", "PMU_FIXEDCOUNTER_TOPDOWN_SLOTS")
    if ebx == 0:
        present = names[:3] if count == 3 else names if count == 4 else ()
    else:
        # A set EBX bit says the matching event is unavailable.
        present = tuple(name for index, name in enumerate(names) if not (ebx >> index) & 1)
    for name in present:
        flags[name] = origin


def _decode_tdx_guest(reader: CpuidReader, flags: dict[str, str], max_basic: int) -> None:
    # Hyper-V hides the TDX leaf from its guests and reports isolation in 0x4000000C.
    # Only a hypervisor answers that leaf; bare metal repeats its last basic leaf there.
    if ("HYPERVISOR" in flags and max_basic >= 0x20
            and reader.cpuid(0x4000000C)[EBX] == _HYPERV_TDX_ISOLATION):
        flags["TDX_GUEST"] = "CPUID 0x4000000C:EBX=0xBE3 (Hyper-V TDX isolation)"
        return
    if max_basic >= 0x21:
        _, ebx, ecx, edx = reader.cpuid(0x21)
        if register_string(ebx, edx, ecx) == _TDX_SIGNATURE:
            flags["TDX_GUEST"] = f"CPUID 0x21: {_TDX_SIGNATURE!r}"


def _sgx_epc_bytes(reader: CpuidReader) -> int:
    """Total size of the EPC sections that leaf 0x12 subleaves 2 and up describe."""
    total = 0
    for subleaf in range(2, 10):
        eax, _, ecx, edx = reader.cpuid(0x12, subleaf)
        kind = eax & 0xF
        if kind == 0:
            break
        if kind == 1:
            total += (ecx & 0xFFFFF000) + ((edx & 0xFFFFF) << 32)
    return total
