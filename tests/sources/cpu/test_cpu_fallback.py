"""Without raw CPUID: /proc/cpuinfo on x86 and arm64, and hostile fixture inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cpu_testing import SOURCE, intel, make_fixture, run, short

from nodefeatures.discovery.config import build
from nodefeatures.sources.cpu import cpuid
from nodefeatures.sources.cpu.cpuid import MAX_DUMP_BYTES, format_dump

EPYC_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7502P 32-Core Processor
siblings\t: 64
cpu cores\t: 32
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 \
clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc \
rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 \
sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic \
cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core \
cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 \
cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero \
irperf xsaveerptr rdpru wbnoinvd amd_ppin arat npt lbrv svm_lock nrip_save tsc_scale \
vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic umip rdpid overflow_recov \
succor smca sme sev sev_es pku
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu
"""

N1_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid \
asimdrdm lrcpc dcpop asimddp ssbs gcs sve2p1
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
Features\t: fp
"""


def test_x86_cpuinfo_flags_map_to_nfd_names(tmp_path: Path) -> None:
    result = run(make_fixture(tmp_path, files={"proc/cpuinfo": EPYC_CPUINFO}))
    labels = short(result)
    assert result.warnings == []
    assert {labels[f"model.{key}"] for key in ("vendor_id", "family", "id")} == {
        "AMD", "23", "49"}
    flags = {key.removeprefix("cpuid.") for key in labels if key.startswith("cpuid.")}
    # renamed Linux flags, derivations, and NFD's default blacklist
    assert {"SHA", "FMA3", "LAHF", "SYSEE", "X87", "CMPXCHG8", "OSXSAVE", "FXSROPT", "SVMNP",
            "NRIPS", "CPBOOST", "MSRIRC", "PPIN", "MCAOVERFLOW", "SEV", "SEV_ES", "IBRS",
            "TSA_L1_NO", "TSA_SQ_NO", "X86_64_V3"} <= flags
    assert "X86_64_V4" not in flags and "AVXSLOW" not in flags  # Zen 2 (model 49)
    assert not {"SSE3", "SSE42", "LZCNT", "POPCNT", "HTT", "CMOV"} & flags  # blacklisted
    assert "AMXFP8" not in flags  # `pku` is not AMX-FP8
    assert "model.hypervisor" in labels and labels["model.hypervisor"] == "none"
    assert "security.sgx.enabled" not in labels


def test_x86_cpuinfo_threads_and_hidden_hypervisor(tmp_path: Path) -> None:
    guest = EPYC_CPUINFO.replace("succor smca", "succor smca hypervisor")
    config = build({"sources": {"cpu": {"cpuid": {"attributeWhitelist": ["HTT"]}}}},
                   {"cpu": SOURCE})
    labels = short(run(make_fixture(tmp_path, files={"proc/cpuinfo": guest}), config))
    assert labels["cpuid.HTT"] == "true"  # 64 siblings on 32 cores
    assert "model.hypervisor" not in labels  # only CPUID leaf 0x40000000 could name it
    one_thread = guest.replace("siblings\t: 64", "siblings\t: 32")
    labels = short(run(make_fixture(tmp_path / "b", files={"proc/cpuinfo": one_thread}),
                       config))
    assert "cpuid.HTT" not in labels


def test_zhaoxin_model_follows_nfd_not_linux(tmp_path: Path) -> None:
    zhaoxin = ("vendor_id\t: CentaurHauls\ncpu family\t: 7\nmodel\t\t: 59\n"
               "flags\t\t: fpu cx8 sep cmov mmx fxsr sse sse2 syscall lm\n")
    labels = short(run(make_fixture(tmp_path, files={"proc/cpuinfo": zhaoxin})))
    assert (labels["model.vendor_id"], labels["model.family"], labels["model.id"]) == (
        "VIA", "7", "11")
    assert labels["cpuid.X86_64_V1"] == "true"


def test_arm64_neoverse_n1(tmp_path: Path) -> None:
    midr = "sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
    fixture = make_fixture(tmp_path, files={"proc/cpuinfo": N1_CPUINFO,
                                            midr: "0x00000000413fd0c1\n"})
    result = run(fixture)
    labels = short(result)
    assert result.warnings == []
    assert (labels["model.vendor_id"], labels["model.family"], labels["model.id"]) == (
        "ARM", "63", "53441")
    assert labels["model.hypervisor"] == "none"
    flags = {key.removeprefix("cpuid.") for key in labels if key.startswith("cpuid.")}
    assert flags == {"FP", "ASIMD", "EVTSTRM", "AES", "PMULL", "SHA1", "SHA2", "CRC32",
                     "ATOMICS", "FPHP", "ASIMDHP", "CPUID", "ASIMDRDM", "LRCPC", "DCPOP",
                     "ASIMDDP", "SSBS"}  # gcs and sve2p1 are newer than NFD's table
    assert not any(key.startswith(("cstate", "pstate", "security", "power")) for key in labels)


def test_arm64_without_midr_file_or_cpuid_hwcap(tmp_path: Path) -> None:
    labels = short(run(make_fixture(tmp_path / "a", files={"proc/cpuinfo": N1_CPUINFO})))
    assert (labels["model.vendor_id"], labels["model.family"], labels["model.id"]) == (
        "ARM", "63", "53441")  # rebuilt from the implementer/variant/part/revision lines
    no_cpuid = N1_CPUINFO.replace(" cpuid ", " ")
    labels = short(run(make_fixture(tmp_path / "b", files={"proc/cpuinfo": no_cpuid})))
    assert (labels["model.vendor_id"], labels["model.family"], labels["model.id"]) == (
        "VendorUnknown", "0", "0")


def test_arm64_garbage_midr_warns_and_uses_cpuinfo(tmp_path: Path) -> None:
    midr = "sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
    result = run(make_fixture(tmp_path, files={"proc/cpuinfo": N1_CPUINFO,
                                               midr: b"\xff\x00garbage"}))
    assert short(result)["model.id"] == "53441"
    assert any(w.startswith("/" + midr) for w in result.warnings)


def test_missing_cpuinfo_costs_only_cpu_identity(tmp_path: Path) -> None:
    topology = "sys/bus/cpu/devices/cpu0/topology/thread_siblings_list"
    result = run(make_fixture(tmp_path, files={topology: "0-1\n"}))
    assert result.error is None
    assert short(result) == {"hardware_multithreading": "true"}
    assert any("/proc/cpuinfo" in warning for warning in result.warnings)


def test_binary_cpuinfo_is_harmless(tmp_path: Path) -> None:
    result = run(make_fixture(tmp_path, files={"proc/cpuinfo": b"\x00\xff\xfe" * 1000}))
    assert result.error is None and short(result) == {}
    assert any("/proc/cpuinfo" in warning for warning in result.warnings)


def test_garbage_cpuinfo_numbers(tmp_path: Path) -> None:
    text = "vendor_id\t: GenuineIntel\ncpu family\t: six\nmodel\t\t: 1_0\nflags\t: fpu sse\n"
    result = run(make_fixture(tmp_path, files={"proc/cpuinfo": text}))
    labels = short(result)
    assert labels["model.vendor_id"] == "Intel"
    assert "model.family" not in labels and "model.id" not in labels
    assert any("/proc/cpuinfo" in warning and "cpu family" in warning
               for warning in result.warnings)


def test_garbage_cpuid_lines_warn_with_file_and_line(tmp_path: Path) -> None:
    text = format_dump(intel(), 0x7).replace(
        "CPUID 00000007:", "CPUID 0000000G: junk\nCPUID 00000007:", 1) + "XCR0: banana\n"
    fixture = make_fixture(tmp_path, cpuid_text=text)
    result = run(fixture)
    labels = short(result)
    assert labels["cpuid.AVX2"] == "true" and labels["model.id"] == "143"
    path = str(fixture / "cpuid.txt")
    lines = text.splitlines()
    bad = [n for n, line in enumerate(lines, 1) if "0000000G" in line or "banana" in line]
    assert [w for w in result.warnings if w.startswith(path)] == [
        f"{path}: line {bad[0]}: malformed CPUID record 'CPUID 0000000G: junk'; line ignored",
        f"{path}: line {bad[1]}: malformed XCR0 line 'XCR0: banana'; line ignored",
    ]


def test_many_garbage_lines_are_summarised(tmp_path: Path) -> None:
    text = format_dump(intel(), 0x7) + "CPUID 1234: x\n" * 50
    result = run(make_fixture(tmp_path, cpuid_text=text))
    assert len(result.warnings) == 6
    assert result.warnings[-1].endswith("45 more unusable lines ignored")
    assert short(result)["model.vendor_id"] == "Intel"


def test_cpuid_file_without_leaf_0_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    fixture = make_fixture(tmp_path, cpuid_text="CPUID 00000001: 1-2-3-4\n",
                           files={"proc/cpuinfo": EPYC_CPUINFO})
    result = run(fixture)
    assert short(result)["model.vendor_id"] == "AMD"
    assert any("no record of CPUID leaf 0" in warning for warning in result.warnings)


def test_oversized_cpuid_file_is_refused(tmp_path: Path) -> None:
    fixture = make_fixture(tmp_path, files={"proc/cpuinfo": EPYC_CPUINFO})
    with open(fixture / "cpuid.txt", "wb") as handle:
        handle.write(format_dump(intel(), 0x7).encode())
        handle.write(b"#" * (MAX_DUMP_BYTES + 1))
    result = run(fixture)
    assert short(result)["model.vendor_id"] == "AMD"
    assert any("larger than" in warning for warning in result.warnings)


def test_fixture_without_cpuid_file_never_runs_cpuid(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("live CPUID used during replay")

    monkeypatch.setattr(cpuid, "live", refuse)
    labels = short(run(make_fixture(tmp_path, files={"proc/cpuinfo": EPYC_CPUINFO})))
    assert labels["model.vendor_id"] == "AMD"
