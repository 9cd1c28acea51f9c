"""Every public CPUID dump decodes into labels that hold what real CPUs must hold."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from cpu_testing import DUMPS, catalogued, make_fixture, run, short

from nodefeatures.discovery.labels import key_error, value_error
from nodefeatures.sources.cpu.cpuid import DumpCpuid
from nodefeatures.sources.cpu.facts import CpuFacts
from nodefeatures.sources.cpu.x86 import LEVELS, decode

# The vendor each dump directory (its leaf-0 signature, `_` for odd characters) maps to.
DIRECTORY_VENDORS = {
    "GenuineIntel": "Intel",
    "AuthenticAMD": "AMD",
    "HygonGenuine": "Hygon",
    "CentaurHauls": "VIA",
    "GenuineTMx86": "Transmeta",
    "Geode_by_NSC": "NSC",
    "Vortex86_SoC": "SiS",
    "SiS_SiS_SiS_": "SiS",
    "RiseRiseRise": "SiS",
    "Genuine__RDC": "RDC",
    "CyrixInstead": "VendorUnknown",
    "Virtual_CPU_": "VendorUnknown",  # x86 emulation on Windows on Arm
}
AMD_ONLY = {"SME", "SEV", "SEV_ES", "SEV_SNP", "MSR_PAGEFLUSH", "VMPL", "SME_COHERENT",
            "SEV_64BIT", "SEV_RESTRICTED", "SEV_ALTERNATIVE", "SEV_DEBUGSWAP",
            "IBS_PREVENTHOST", "VTE", "VMSA_REGPROT", "TSA_VERW_CLEAR", "AVX512BMM", "SBPB",
            "IBPB_BRTYPE", "SRSO_NO", "SRSO_USER_KERNEL_NO", "SRSO_MSR_FIX", "TSA_L1_NO",
            "TSA_SQ_NO"}
PREREQUISITES = {
    "AVX2": "AVX", "AVXVNNI": "AVX", "XOP": "AVX", "FMA4": "AVX", "AVXSLOW": "AVX",
    "FMA3": "OSXSAVE", "AVX": "OSXSAVE", "OSXSAVE": "XSAVE", "BMI2": "BMI1",
    "XSAVEOPT": "XSAVE", "XSAVEC": "XSAVE", "XGETBV1": "XSAVE", "XSAVES": "XSAVE",
    "SVMNP": "SVM", "NRIPS": "SVM", "LBRVIRT": "SVM", "IBSFFV": "IBS", "IBS_ZEN4": "IBS",
    "KEYLOCKERW": "KEYLOCKER", "SGXPQC": "SGX", "AVX10_256": "AVX10",
}


def dumps() -> list[tuple[str, zipfile.ZipInfo]]:
    if not DUMPS.is_file():
        return []
    with zipfile.ZipFile(DUMPS) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
    seen: dict[str, int] = {}
    named = []
    for info in infos:  # the archive holds a few names twice
        base = Path(info.filename).name.removesuffix("_CPUID.txt")
        seen[base] = seen.get(base, 0) + 1
        named.append((base if seen[base] == 1 else f"{base}#{seen[base]}", info))
    return named


DUMP_LIST = dumps()
_decoded: dict[str, tuple[DumpCpuid, CpuFacts]] = {}


def decoded(name: str, info: zipfile.ZipInfo) -> tuple[DumpCpuid, CpuFacts]:
    if name not in _decoded:
        with zipfile.ZipFile(DUMPS) as archive:
            dump = DumpCpuid.parse(archive.read(info).decode("utf-8", errors="replace"))
        _decoded[name] = (dump, decode(dump))
    return _decoded[name]


def find(fragment: str) -> tuple[DumpCpuid, CpuFacts]:
    matches = [(n, i) for n, i in DUMP_LIST if fragment in n]
    if not matches:
        pytest.skip(f"no dump named like {fragment!r} in {DUMPS}")
    return decoded(*matches[0])


def test_the_corpus_is_there() -> None:
    if not DUMP_LIST:
        pytest.skip(f"{DUMPS} is absent (shared reference material); corpus tests skipped")
    assert len(DUMP_LIST) >= 400


@pytest.mark.parametrize(("name", "info"), DUMP_LIST, ids=[n for n, _ in DUMP_LIST])
def test_dump_invariants(name: str, info: zipfile.ZipInfo) -> None:
    dump, facts = decoded(name, info)
    flags = set(facts.flags)
    assert dump.problems == []

    # x86-64 levels: each is its own feature set plus the one below.
    levels = [n for n in range(1, 5) if f"X86_64_V{n}" in flags]
    assert levels == list(range(1, len(levels) + 1))
    level4 = {"AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"}
    assert ("X86_64_V4" in flags) == (level4 <= flags and "X86_64_V3" in flags)
    for n in levels:
        assert set(LEVELS[n - 1]) <= flags
    if levels:
        assert {"SYSEE", "SYSCALL"} & flags
    long_mode = (dump.cpuid(0x80000001)[3] >> 29) & 1 and dump.cpuid(0x80000000)[0] >= 0x80000001
    if long_mode and not name.startswith("Virtual CPU"):  # emulators omit SYSENTER/SYSCALL
        assert "X86_64_V1" in flags

    # Identity: NFD's rule on the leaf-1 signature, which is Linux's for real families.
    signature = dump.cpuid(1)[0]
    base_family, base_model = (signature >> 8) & 0xF, (signature >> 4) & 0xF
    ext_family, ext_model = (signature >> 20) & 0xFF, (signature >> 16) & 0xF
    family = base_family + (ext_family if base_family == 0xF else 0)
    model = base_model + (ext_model << 4 if base_family in (6, 0xF) else 0)
    assert (facts.family, facts.model) == (family, model)
    if base_family <= 6 or base_family == 0xF:
        linux_model = base_model + (ext_model << 4 if family >= 6 else 0)
        assert facts.model == linux_model
    directory = Path(info.filename).parent.name
    assert facts.vendor == DIRECTORY_VENDORS[directory]

    # Flags that only make sense together.
    for flag, needed in PREREQUISITES.items():
        if flag in flags:
            assert needed in flags, f"{flag} without {needed}"
    assert all(f == "AVX512F" or "AVX512F" in flags for f in flags if f.startswith("AVX512")
               and f != "AVX512BMM")
    if facts.vendor != "AMD":
        assert not AMD_ONLY & flags
    if "HTT" in flags:
        assert facts.vendor in ("Intel", "AMD")
    # Our reading of the bits NFD misreads.
    assert ("FXSROPT" in flags) == bool((dump.cpuid(0x80000001)[3] >> 25) & 1
                                         and dump.cpuid(0x80000000)[0] >= 0x80000001)
    assert ("XSAVE" in flags) == bool((dump.cpuid(1)[2] >> 26) & 1)
    if "AMXFP8" in flags:
        assert (dump.cpuid(0x1E, 1)[0] >> 4) & 1
    assert facts.hypervisor == ("none" if "HYPERVISOR" not in flags else facts.hypervisor)


@pytest.mark.parametrize(("name", "info"), DUMP_LIST[::7], ids=[n for n, _ in DUMP_LIST[::7]])
def test_dump_labels_are_valid_and_catalogued(name: str, info: zipfile.ZipInfo,
                                              tmp_path: Path) -> None:
    with zipfile.ZipFile(DUMPS) as archive:
        text = archive.read(info).decode("utf-8", errors="replace")
    result = run(make_fixture(tmp_path, cpuid_text=text))
    labels = short(result)
    assert result.warnings == [] and result.error is None
    assert labels["model.vendor_id"] == DIRECTORY_VENDORS[Path(info.filename).parent.name]
    for key, label in result.labels.items():
        assert key_error(key) is None and value_error(label.value) is None
        assert catalogued(key.removeprefix("feature.node.kubernetes.io/cpu-")), key
    assert not {"cpuid.SSE2", "cpuid.CMOV", "cpuid.HTT"} & set(labels)  # default blacklist


def test_sapphire_rapids() -> None:
    dump, facts = find("SapphireRapids")
    assert {"AMXTILE", "AMXBF16", "AMXINT8", "AVX512F", "AVX512FP16", "AVX512BF16",
            "X86_64_V4", "SERIALIZE", "TSXLDTRK"} <= set(facts.flags)
    assert (dump.cpuid(7, 0)[2] >> 3) & 1  # PKU is set: NFD would claim AMXFP8 here
    assert "AMXFP8" not in facts.flags and "FXSROPT" not in facts.flags
    assert (facts.vendor, facts.family, facts.model) == ("Intel", 6, 143)


def test_haswell() -> None:
    _, facts = find("_Haswell")
    assert {"AVX", "AVX2", "FMA3", "BMI2", "MOVBE", "X86_64_V3"} <= set(facts.flags)
    assert not {"AVX512F", "X86_64_V4"} & set(facts.flags)
    assert (facts.family, facts.model) == (6, 60)


def test_genoa() -> None:
    _, facts = find("Genoa")
    assert {"AVX512F", "AVX512BF16", "X86_64_V4", "SEV", "SEV_ES", "FXSROPT"} <= set(
        facts.flags)
    assert (facts.vendor, facts.family, facts.model) == ("AMD", 25, 17)
    assert "TSA_L1_NO" not in facts.flags  # family 0x19 is not exempted by derivation


def test_knights_landing_has_the_xeon_phi_extensions() -> None:
    _, facts = find("KnightsLanding")
    assert {"AVX512F", "AVX512PF", "AVX512ER", "AVX512CD"} <= set(facts.flags)
    assert "X86_64_V4" not in facts.flags  # no AVX512BW/DQ/VL on Xeon Phi


def test_hygon_gets_no_amd_only_leaves() -> None:
    dump, facts = find("Hygon_01")
    assert facts.vendor == "Hygon"
    assert dump.cpuid(0x8000001F)[0] & 0b11  # the CPU reports SME/SEV ...
    assert not {"SME", "SEV"} & set(facts.flags)  # ... which NFD reads on AMD only


def test_a_hyper_v_guest_dump() -> None:
    _, facts = find("CometLake")
    assert facts.hypervisor == "msvm"


XSAVE_SUBLEAF1 = ("XSAVEOPT", "XSAVEC", "XGETBV1", "XSAVES")  # leaf 0xD.1 EAX bits 0-3
_RECORD_TEXT = re.compile(
    r"CPUID\s+([0-9A-Fa-f]{8})\s*:?\s*([0-9A-Fa-f]{8})(?:.*?\[SL\s*([0-9A-Fa-f]+)\])?")


def _first_cpu_xsave_subleaf1(text: str) -> int | None:
    """Leaf 0xD subleaf 1 EAX of the dump's first CPU, read straight from its text: the
    `[SL 01]` record, or in an untagged dump the record after subleaf 0, unless that one is
    a state component (its EAX, a size, has bits above 4, which subleaf 1 reserves)."""
    records: list[tuple[int, int, int | None]] = []
    for line in text.splitlines():
        match = _RECORD_TEXT.match(line.strip())
        if not match:
            continue
        leaf = int(match.group(1), 16)
        if leaf == 0 and records:
            break  # the second CPU
        tag = int(match.group(3), 16) if match.group(3) else None
        records.append((leaf, int(match.group(2), 16), tag))
    xsave = [(eax, tag) for leaf, eax, tag in records if leaf == 0xD]
    if any(tag is not None for _, tag in xsave):
        return next((eax for eax, tag in xsave if tag == 1), None)
    if len(xsave) >= 2 and xsave[1][0] & ~0x1F == 0:
        return xsave[1][0]
    return None


def test_xsave_subleaf_1_features_come_from_the_record_that_holds_them() -> None:
    if not DUMP_LIST:
        pytest.skip(f"{DUMPS} is absent")
    gained = []
    with zipfile.ZipFile(DUMPS) as archive:
        for name, info in DUMP_LIST:
            text = archive.read(info).decode("utf-8", errors="replace")
            _, facts = decoded(name, info)
            eax = _first_cpu_xsave_subleaf1(text)
            max_leaf = int(_RECORD_TEXT.match(text[text.index("CPUID 00000000"):]).group(2), 16)
            expected = {flag for bit, flag in enumerate(XSAVE_SUBLEAF1)
                        if eax is not None and max_leaf >= 0xD and "XSAVE" in facts.flags
                        and (eax >> bit) & 1}
            assert {f for f in XSAVE_SUBLEAF1 if f in facts.flags} == expected, name
            if expected and "[SL" not in text:
                gained.append(name)
    # The untagged dumps of CPUs known to have every one of them.
    for fragment in ("AlderLake_00", "ICX_04", "Vermeer_00", "ElkhartLake_02"):
        assert any(fragment in name for name in gained), fragment


def test_an_untagged_dump_that_skips_subleaf_1_gets_no_subleaf_1_features() -> None:
    dump, facts = find("K15_Bulldozer")
    assert dump.cpuid(0xD, 2) == (0x100, 0x240, 0, 0)  # the AVX state component
    assert dump.cpuid(0xD, 1) == (0, 0, 0, 0)
    assert "XSAVE" in facts.flags and not set(XSAVE_SUBLEAF1) & set(facts.flags)


def test_alder_lake_untagged_dump_has_xsaves() -> None:
    dump, facts = find("AlderLake_00")
    assert set(XSAVE_SUBLEAF1) <= set(facts.flags)
    assert dump.cpuid(0xD, 1)[2] == 0x19900  # IA32_XSS components: PT, CET, HDC, HWP
