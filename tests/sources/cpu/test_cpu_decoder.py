"""The x86 decoder on hand-written CPUID leaves: gating, vendors, derived flags."""

from __future__ import annotations

import csv
import re

import pytest
from cpu_testing import (
    MODERN_ECX1,
    MODERN_EDX1,
    X86_TSV,
    bits,
    intel,
    reader,
    text_regs,
    vendor_leaf,
)

from nodefeatures.sources.cpu.cpuid import DumpCpuid
from nodefeatures.sources.cpu.x86 import BITS, DERIVED, decode, family_model

AVX512_EBX7 = bits(16, 17, 28, 30, 31)  # F DQ CD BW VL
AMX_EDX7 = bits(22, 24, 25)  # AMX-BF16, AMX-TILE, AMX-INT8


def flags_of(leaves, xcr0=None) -> set[str]:
    return set(decode(reader(leaves, xcr0)).flags)


def test_avx_needs_the_os_to_save_ymm_state() -> None:
    leaves = intel()
    assert {"AVX", "AVX2", "FMA3", "X86_64_V3"} <= flags_of(leaves, xcr0=0x7)
    without_ymm = flags_of(leaves, xcr0=0x3)
    assert "AVX" not in without_ymm and "AVX2" not in without_ymm
    assert "FMA3" in without_ymm  # FMA on XMM registers needs only OSXSAVE
    assert "X86_64_V2" in without_ymm and "X86_64_V3" not in without_ymm


def test_avx_needs_osxsave_even_when_xcr0_would_allow_it() -> None:
    leaves = intel({(1, 0): (0x000806F8, 0, MODERN_ECX1 & ~bits(27), MODERN_EDX1)})
    found = flags_of(leaves, xcr0=0xE7)
    assert not {"AVX", "OSXSAVE", "FMA3", "AVX2"} & found
    assert "XSAVE" in found


def test_avx512_and_amx_need_opmask_and_zmm_state() -> None:
    leaves = intel({(7, 0): (0, bits(3, 5, 8) | AVX512_EBX7, 0, AMX_EDX7)})
    full = flags_of(leaves, xcr0=0xE7)
    assert {"AVX512F", "AVX512BW", "AMXTILE", "AMXINT8", "AMXBF16", "X86_64_V4"} <= full
    for partial in (0x7, 0x67, 0xA7, 0xE3):  # one of XCR0[7:5] or YMM missing
        found = flags_of(leaves, xcr0=partial)
        assert not {"AVX512F", "AMXTILE", "X86_64_V4"} & found, hex(partial)


def test_bmi2_only_counts_with_bmi1() -> None:
    assert "BMI2" not in flags_of(intel({(7, 0): (0, bits(5, 8), 0, 0)}), xcr0=0x7)
    assert "BMI2" in flags_of(intel({(7, 0): (0, bits(3, 8), 0, 0)}), xcr0=0x7)


def test_leaves_above_the_maximum_are_never_read() -> None:
    class Strict(DumpCpuid):
        def cpuid(self, leaf: int, subleaf: int = 0):
            limit = 0x80000001 if leaf >= 0x80000000 else 1
            assert leaf <= limit, f"read leaf 0x{leaf:X}"
            return super().cpuid(leaf, subleaf)

    leaves = {(0, 0): vendor_leaf(1, "GenuineIntel"),
              (1, 0): (0x00000633, 0, 0, bits(0, 8, 15, 23, 24, 25)),
              (0x80000000, 0): (0x80000001, 0, 0, 0),
              (0x80000001, 0): (0, 0, 0, bits(11))}
    facts = decode(Strict(leaves=leaves))
    assert {"X87", "CMPXCHG8", "CMOV", "MMX", "FXSR", "SSE", "SYSCALL"} <= set(facts.flags)
    assert "X86_64_V1" not in facts.flags  # no SSE2


def test_amd_only_leaves_are_ignored_on_other_vendors() -> None:
    sev_leaves = {(0x80000000, 0): (0x80000021, 0, 0, 0),
                  (0x8000001F, 0): (bits(0, 1, 3, 4), 0, 0, 0),
                  (0x80000021, 0): (bits(29), 0, bits(1, 2), 0)}
    for vendor, expected in (("AuthenticAMD", True), ("HygonGenuine", False),
                             ("GenuineIntel", False)):
        leaves = intel({**sev_leaves, (0, 0): vendor_leaf(0x16, vendor),
                        (1, 0): (0x00A10F11, 0, MODERN_ECX1, MODERN_EDX1)})
        found = flags_of(leaves, xcr0=0x7)
        assert ({"SME", "SEV", "SEV_ES", "SEV_SNP", "SRSO_NO", "TSA_L1_NO"} <= found) is expected
        assert bool({"SME", "SEV", "SRSO_NO", "TSA_SQ_NO"} & found) is expected


def test_htt_needs_more_than_one_thread_per_core() -> None:
    ht = MODERN_EDX1 | bits(28)
    smt = intel({(0, 0): vendor_leaf(0xB, "GenuineIntel"),
                 (1, 0): (0x000806F8, 0x00100800, MODERN_ECX1, ht),
                 (0xB, 0): (1, 2, 0x100, 0)})
    assert "HTT" in flags_of(smt, xcr0=0x7)
    smt[(0xB, 0)] = (0, 1, 0x100, 0)  # HTT bit set, but one thread per core (a VM)
    assert "HTT" not in flags_of(smt, xcr0=0x7)
    # Before leaf 0xB: logical processors per package / cores per package.
    old = {(0, 0): vendor_leaf(0xA, "GenuineIntel"), (1, 0): (0x000106A5, 0x00080800, 0, ht),
           (4, 0): (0x1C004121, 0, 0, 0)}  # 8 logical, EAX[31:26]=7 -> 8 cores: no SMT
    assert "HTT" not in flags_of(old)
    old[(4, 0)] = (0x0C004121, 0, 0, 0)  # 4 cores -> 2 threads per core
    assert "HTT" in flags_of(old)
    # Zen without a populated leaf 0xB: 0x8000001E EBX[15:8] is threads per core - 1.
    zen = {(0, 0): vendor_leaf(0xD, "AuthenticAMD"), (1, 0): (0x00800F12, 0, 0, ht),
           (0x80000000, 0): (0x8000001F, 0, 0, 0), (0x8000001E, 0): (0, 0x0100, 0, 0)}
    assert "HTT" in flags_of(zen)
    zen[(0x8000001E, 0)] = (0, 0, 0, 0)
    assert "HTT" not in flags_of(zen)
    # Other vendors never get HTT.
    hygon = {**zen, (0, 0): vendor_leaf(0xD, "HygonGenuine"), (0x8000001E, 0): (0, 0x100, 0, 0)}
    assert "HTT" not in flags_of(hygon)


@pytest.mark.parametrize(("signature", "expected"), [
    (0x000806F8, (6, 143)),  # Sapphire Rapids: extended model added for family 6
    (0x00A10F11, (25, 17)),  # Genoa: base family 0xF + extended 0xA
    (0x00000F4A, (15, 4)),
    (0x00000543, (5, 4)),  # family 5: extended fields reserved
    (0x000307B0, (7, 11)),  # Zhaoxin family 7: NFD adds no extended model (Linux says 59)
])
def test_family_and_model(signature: int, expected: tuple[int, int]) -> None:
    assert family_model(signature) == expected
    leaves = intel({(1, 0): (signature, 0, 0, 0)})
    facts = decode(reader(leaves))
    assert (facts.family, facts.model) == expected


@pytest.mark.parametrize(("signature", "value"), [
    ("KVMKVMKVM", "kvm"),
    ("Linux KVM Hv", "kvm"),
    ("Microsoft Hv", "msvm"),
    ("VMwareVMware", "vmware"),
    ("XenVMMXenVMM", "xenhvm"),
    ("TCGTCGTCGTCG", "qemu"),
    ("bhyve bhyve ", "bhyve"),
    ("ACRNACRNACRN", "acrn"),
    ("QNXQVMBSQG", "qnx"),
    ("Apple VZ", "apple"),
    ("VBoxVBoxVBox", "VBoxVBoxVBox"),
    (" prl hyperv ", "prl_hyperv"),
    ("Odd!!Visor", "Odd_Visor"),
    ("", "unknown"),
    ("\x01\x02", "unknown"),
])
def test_hypervisor_names(signature: str, value: str) -> None:
    leaves = intel({(1, 0): (0x000806F8, 0, MODERN_ECX1 | bits(31), MODERN_EDX1),
                    (0x40000000, 0): (0x40000001, *text_regs(signature))})
    facts = decode(reader(leaves, 0x7))
    assert facts.hypervisor == value
    assert "HYPERVISOR" in facts.flags


def test_no_hypervisor_bit_means_none_whatever_leaf_0x40000000_says() -> None:
    leaves = intel({(0x40000000, 0): (0x40000001, *text_regs("KVMKVMKVM"))})
    assert decode(reader(leaves, 0x7)).hypervisor == "none"


def test_fxsropt_comes_only_from_the_amd_bit() -> None:
    assert "FXSROPT" not in flags_of(intel(), xcr0=0x7)  # SSE is set, FFXSR is not
    amd = intel({(0x80000001, 0): (0, 0, bits(0, 5), bits(11, 20, 25, 27, 29))})
    assert "FXSROPT" in flags_of(amd, xcr0=0x7)


def test_amxfp8_is_the_amx_fp8_bit_not_pku() -> None:
    pku = intel({(7, 0): (0, bits(3, 5, 8) | AVX512_EBX7, bits(3), AMX_EDX7)})
    assert "AMXFP8" not in flags_of(pku, xcr0=0xE7)
    fp8 = intel({(0, 0): vendor_leaf(0x1E, "GenuineIntel"),
                 (7, 0): (0, bits(3, 5, 8) | AVX512_EBX7, 0, AMX_EDX7),
                 (0x1E, 0): (1, 0x4010, 0, 0), (0x1E, 1): (bits(4, 5, 6), 0, 0, 0)})
    assert {"AMXFP8", "AMXTRANSPOSE", "AMXTF32"} <= flags_of(fp8, xcr0=0xE7)
    fp8[(0x1E, 0)] = (0, 0x4010, 0, 0)  # subleaf 1 not reported: its bits mean nothing
    assert not {"AMXFP8", "AMXTRANSPOSE", "AMXTF32"} & flags_of(fp8, xcr0=0xE7)


def test_xsave_and_osxsave_are_their_own_bits() -> None:
    # SSE3 without XSAVE (a Core 2): NFD's library would report XSAVE and OSXSAVE here.
    leaves = intel({(1, 0): (0x000006F6, 0, bits(0, 9, 13), MODERN_EDX1)})
    found = flags_of(leaves)
    assert "SSE3" in found and not {"XSAVE", "OSXSAVE"} & found


def test_no_level_without_sysenter_or_syscall() -> None:
    leaves = intel({(1, 0): (0x000806F8, 0, MODERN_ECX1, MODERN_EDX1 & ~bits(11)),
                    (0x80000001, 0): (0, 0, bits(0, 5), 0)})
    assert not {f"X86_64_V{n}" for n in range(1, 5)} & flags_of(leaves, xcr0=0x7)


@pytest.mark.parametrize(("eax", "ebx", "edx", "expected"), [
    (0x08300805, 0, 0x8604, {"INSTRUCTIONS", "CYCLES", "REFCYCLES", "TOPDOWN_SLOTS"}),
    (0x08300805, 0, 0x8603, {"INSTRUCTIONS", "CYCLES", "REFCYCLES"}),
    (0x08300805, 0, 0x8602, set()),
    (0x08300805, bits(1, 3), 0x8604, {"INSTRUCTIONS", "REFCYCLES"}),
    (0x08300801, 0, 0x8604, set()),  # version 1: the fixed-counter count is not valid
    (0x08300800, 0, 0x8604, set()),  # version 0: no architectural PMU
])
def test_fixed_counters_from_leaf_0xa(eax: int, ebx: int, edx: int, expected: set[str]) -> None:
    found = flags_of(intel({(0xA, 0): (eax, ebx, 0, edx)}), xcr0=0x7)
    assert {f.removeprefix("PMU_FIXEDCOUNTER_") for f in found
            if f.startswith("PMU_FIXEDCOUNTER_")} == expected


def test_tdx_guest_from_leaf_0x21_or_hyperv_isolation() -> None:
    hv = MODERN_ECX1 | bits(31)
    ebx, edx, ecx = text_regs("IntelTDX    ")  # the signature reads EBX, EDX, ECX
    tdx = intel({(0, 0): vendor_leaf(0x21, "GenuineIntel"), (0x21, 0): (0, ebx, ecx, edx)})
    assert "TDX_GUEST" in flags_of(tdx, xcr0=0x7)
    hyperv = intel({(0, 0): vendor_leaf(0x20, "GenuineIntel"),
                    (1, 0): (0x000806F8, 0, hv, MODERN_EDX1),
                    (0x4000000C, 0): (0, 0xBE3, 0, 0)})
    assert "TDX_GUEST" in flags_of(hyperv, xcr0=0x7)
    bare = {**hyperv, (1, 0): (0x000806F8, 0, MODERN_ECX1, MODERN_EDX1)}
    assert "TDX_GUEST" not in flags_of(bare, xcr0=0x7)


@pytest.mark.parametrize(("signature", "immune"), [
    (0x00800F12, True),  # family 0x17
    (0x00A10F11, False),  # family 0x19
    (0x00B40F40, True),  # family 0x1A model 0x44
    (0x00B50F00, False),  # family 0x1A model 0x50
    (0x00B70F00, True),  # family 0x1A model 0x70
])
def test_tsa_immunity_is_derived_for_older_amd(signature: int, immune: bool) -> None:
    leaves = intel({(0, 0): vendor_leaf(0xD, "AuthenticAMD"), (1, 0): (signature, 0, 0, 0)})
    found = flags_of(leaves)
    assert ({"TSA_L1_NO", "TSA_SQ_NO"} <= found) is immune
    assert bool({"TSA_L1_NO", "TSA_SQ_NO"} & found) is immune


@pytest.mark.parametrize(("vendor", "signature", "slow"), [
    ("GenuineIntel", 0x000206A7, True),  # Sandy Bridge, model 42
    ("GenuineIntel", 0x000306C3, False),  # Haswell, model 60
    ("AuthenticAMD", 0x00800F82, True),  # Zen+, family 23 model 8
    ("AuthenticAMD", 0x00870F10, False),  # Zen 2, family 23 model 113
])
def test_avxslow(vendor: str, signature: int, slow: bool) -> None:
    leaves = intel({(0, 0): vendor_leaf(0x16, vendor),
                    (1, 0): (signature, 0, MODERN_ECX1, MODERN_EDX1)})
    assert ("AVXSLOW" in flags_of(leaves, xcr0=0x7)) is slow
    assert "AVXSLOW" not in flags_of(leaves, xcr0=0x3)  # no AVX, nothing slow about it


def test_avx10_version_and_vector_lengths() -> None:
    leaves = intel({(0, 0): vendor_leaf(0x24, "GenuineIntel"),
                    (7, 1): (0, 0, 0, bits(19)), (0x24, 0): (0, 0x00070002, 0, 0)})
    facts = decode(reader(leaves, 0xE7))
    assert facts.avx10_level == 2
    assert {"AVX10", "AVX10_128", "AVX10_256", "AVX10_512"} <= set(facts.flags)
    leaves[(7, 1)] = (0, 0, 0, 0)
    facts = decode(reader(leaves, 0xE7))
    assert facts.avx10_level == 0 and "AVX10_512" not in facts.flags


def test_sgx_epc_sections_are_summed() -> None:
    leaves = intel({(0, 0): vendor_leaf(0x16, "GenuineIntel"), (7, 0): (0, bits(2), 0, 0),
                    (0x12, 2): (0x80000001, 0, 0x0C000001, 0x1),  # 4 GiB + 192 MiB
                    (0x12, 3): (0x10000001, 0, 0x00200001, 0),  # 2 MiB
                    (0x12, 4): (0, 0, 0x7FFFF001, 0),  # type 0 ends the list
                    (0x12, 5): (0x1, 0, 0x7FFFF001, 0)})
    facts = decode(reader(leaves))
    assert facts.sgx_epc_bytes == (1 << 32) + 0x0C000000 + 0x00200000


def tsv_rows() -> list[dict[str, str]]:
    if not X86_TSV.is_file():
        pytest.skip(f"reference table {X86_TSV} is absent")
    with open(X86_TSV, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# Where our table reads another bit than NFD on purpose (docs/labels.md, deviations), or
# NFD detects nothing at all.
DELIBERATE = {"AMXFP8", "AMXTRANSPOSE", "AMXTF32", "TBM"}
_BIT = re.compile(r"(0x[0-9A-Fa-f]+|\d+)(?:\.(\d+))?:(EAX|EBX|ECX|EDX)\[(\d+)\]")


def test_decode_table_matches_the_reference_bits() -> None:
    ours = {(name, leaf, sub, reg, bit) for name, leaf, sub, reg, bit, _ in BITS}
    gates = {name: set(row_gates) for name, *_, row_gates in BITS}
    names = {row[0] for row in BITS} | set(DERIVED)
    regs = {"EAX": 0, "EBX": 1, "ECX": 2, "EDX": 3}
    checked = 0
    for row in tsv_rows():
        name, where = row["nfd_name"], row["cpuid_leaf_bit"]
        if name in DELIBERATE or name.startswith(("X86_64_V", "AVX10_VERSION")):
            continue
        assert name in names, name
        if name in DERIVED:
            continue  # decoded by rule (decoder tests above), not by one table bit
        for leaf, sub, reg, bit in _BIT.findall(where):
            source = (name, int(leaf, 0), int(sub or 0), regs[reg], int(bit))
            if name == "FXSROPT" and source[1] == 1:
                continue  # NFD's second source is the SSE bit; we do not read it
            # A second bit may be a prerequisite flag (FMA3 needs OSXSAVE's bit 27).
            assert source in ours or any((gate, *source[1:]) in ours for gate in gates[name]), \
                (name, where)
            checked += 1
    assert checked > 180
