"""cpuid.txt: reading InstLatx64 dumps and our own recordings, and writing recordings."""

from __future__ import annotations

import time

from cpu_testing import intel, reader

from nodefeatures.sources.cpu import cpuid
from nodefeatures.sources.cpu.cpuid import DumpCpuid, RecordingCpuid, format_dump
from nodefeatures.sources.cpu.x86 import decode

INSTLATX64 = """\
------[ CPUID Registers / Logical CPU #0 ]------

allcpu: Package 0 / Core 0 / Thread 0: Valid

CPUID 00000000: 00000020-756E6547-6C65746E-49656E69 [GenuineIntel]
CPUID 00000001: 000806F8-00800800-7FFEFBFF-BFEBFBFF
CPUID 00000007: 00000002-F3BFBFFB-BB417FEE-FFDD4430 [SL 00]
CPUID 00000007: 00001C30-00000000-00000000-00000000 [SL 01]
CPUID 0000000D: 000602E7-00002B00-00002B00-00000000 [SL 00] [x87]
MSR 00000017: 0000-0000-0000-0000 [PlatID = 0]
CPUID Manufacturer : GenuineIntel
CPUID CPU Name    : Intel(R) Xeon(R) w7-2475X

------[ CPUID Registers / Logical CPU #1 ]------

CPUID 00000000: 00000020-756E6547-6C65746E-49656E69 [GenuineIntel]
CPUID 00000001: 000806F8-01800800-7FFEFBFF-BFEBFBFF
"""


def test_instlatx64_records_subleaves_and_first_cpu() -> None:
    dump = DumpCpuid.parse(INSTLATX64)
    assert dump.problems == []
    assert dump.cpuid(1) == (0x000806F8, 0x00800800, 0x7FFEFBFF, 0xBFEBFBFF)  # CPU #0's
    assert dump.cpuid(7, 0)[1] == 0xF3BFBFFB
    assert dump.cpuid(7, 1)[0] == 0x00001C30
    assert dump.cpuid(7, 2) == (0, 0, 0, 0)  # not listed: reads as zero
    assert dump.cpuid(0x80000000) == (0, 0, 0, 0)


def test_without_an_xcr0_line_every_supported_state_is_enabled() -> None:
    dump = DumpCpuid.parse(INSTLATX64)
    assert dump.xcr0() == 0x602E7
    assert {"AVX512F", "AMXTILE"} <= set(decode(dump).flags)
    recorded = DumpCpuid.parse(INSTLATX64 + "XCR0: 0000000000000007\n")
    assert recorded.xcr0() == 0x7
    assert not {"AVX512F", "AMXTILE"} & set(decode(recorded).flags)


def test_older_dump_layouts() -> None:
    text = (
        "CPUID 00000000  \t00000005-68747541-444D4163-69746E65\n"  # tab, no colon
        "CPUID 00000001 :00100F42-00040800-00802009-178BFBFF\n"  # colon after a space
        "CPUID 80000000: 8000001B 68747541 444D4163 69746E65\n"  # spaces, no dashes
        "CPUID 80000001 00100F42-10001B9A-000037FF-EFD3FBFF\n"  # no separator at all
        "CPUID Registers (CPU #1):\n"
    )
    dump = DumpCpuid.parse(text)
    assert dump.problems == []
    assert dump.cpuid(0)[0] == 5
    assert dump.cpuid(1)[0] == 0x00100F42
    assert dump.cpuid(0x80000000)[0] == 0x8000001B
    assert dump.cpuid(0x80000001)[3] == 0xEFD3FBFF
    facts = decode(dump)
    assert (facts.vendor, facts.family, facts.model) == ("AMD", 16, 4)


def test_garbage_lines_are_reported_with_their_line_numbers() -> None:
    text = (
        "CPUID 00000000: 00000001-756E6547-6C65746E-49656E69\n"
        "CPUID 0000000Z: 00000000-00000000-00000000-00000000\n"
        "CPUID 00000001: 000806F8-00800800\n"
        "XCR0: not-a-number\n"
        "\x00\x01\x02 binary\n"
        "CPUID 00000001: 000806F8-00000000-00000000-00000001\n"
        "random prose is fine\n"
    )
    dump = DumpCpuid.parse(text)
    assert [number for number, _ in dump.problems] == [2, 3, 4, 5]
    assert "0000000Z" in dump.problems[0][1]
    assert dump.cpuid(1) == (0x000806F8, 0, 0, 1)  # the good record after the bad ones
    assert dump.recorded_xcr0 is None


def test_recording_round_trips() -> None:
    source = reader(intel({(7, 1): (0x10, 0, 0, 0x80000)}), xcr0=0x2E7)
    recorder = RecordingCpuid(source)
    facts = decode(recorder)
    text = recorder.text()
    assert "XCR0: 00000000000002E7" in text
    assert "CPUID 00000007: 00000010-00000000-00000000-00080000 [SL 01]" in text
    replayed = DumpCpuid.parse(text)
    assert replayed.problems == []
    assert replayed.leaves == recorder.answers
    assert decode(replayed) == facts


def test_format_lists_leaves_in_order() -> None:
    text = format_dump({(0x80000000, 0): (1, 2, 3, 4), (7, 1): (5, 6, 7, 8),
                        (7, 0): (0, 0, 0, 0)}, None)
    records = [line for line in text.splitlines() if line.startswith("CPUID")]
    assert records == [
        "CPUID 00000007: 00000000-00000000-00000000-00000000 [SL 00]",
        "CPUID 00000007: 00000005-00000006-00000007-00000008 [SL 01]",
        "CPUID 80000000: 00000001-00000002-00000003-00000004 [SL 00]",
    ]
    assert "XCR0" not in text


def test_a_hostile_long_line_is_read_in_linear_time() -> None:
    # 200 KB of spaces between a leaf and garbage once took a minute to reject.
    hostile = "CPUID 00000000" + " " * 200_000 + "Z\n"
    text = "CPUID 00000000: 00000001-756E6547-6C65746E-49656E69\n" + hostile * 3
    started = time.perf_counter()
    dump = DumpCpuid.parse(text)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"{elapsed:.2f} s for {len(text)} characters"
    assert [number for number, _ in dump.problems] == [2, 3, 4]
    assert all(len(problem) < 120 for _, problem in dump.problems)  # no 200 KB echo
    assert dump.cpuid(0)[0] == 1
    spaced = "CPUID 00000000:" + " " * 200_000 + "00000001-756E6547-6C65746E-49656E69\n"
    started = time.perf_counter()
    DumpCpuid.parse(spaced * 3 + "CPUID 00000001" + "-" * 100_000 + "\n")
    assert time.perf_counter() - started < 0.5
    # The record pattern itself does not backtrack either, whatever the line length.
    started = time.perf_counter()
    for line in (hostile, spaced, "CPUID 00000000 " + "0" * 8 + " -" * 100_000 + "Z"):
        assert cpuid._RECORD.fullmatch(line.strip()) is None or line is spaced
        assert cpuid._RECORD_ATTEMPT.match(line.strip())
    assert time.perf_counter() - started < 0.5


# Untagged dumps (older InstLatx64 tools): each leaf's subleaves in order, CPU after CPU.
UNTAGGED = """\
CPUID Registers (CPU #1):
CPUID 00000000: 0000000D-756E6547-6C65746E-49656E69
CPUID 00000001: 000306A9-00100800-7FBAE3FF-BFEBFBFF
CPUID 00000004: 1C004121-01C0003F-0000003F-00000000
CPUID 00000004: 1C004122-01C0003F-0000003F-00000000
CPUID 00000004: 1C004143-01C0003F-000001FF-00000000
CPUID 0000000D: 00000007-00000340-00000340-00000000
CPUID 0000000D: 00000001-00000000-00000000-00000000
CPUID 0000000D: 00000100-00000240-00000000-00000000

CPUID Registers (CPU #2):
CPUID 00000000: 0000000D-756E6547-6C65746E-49656E69
CPUID 00000001: 000306A9-01100800-7FBAE3FF-BFEBFBFF
CPUID 00000004: 00000000-00000000-00000000-00000000
CPUID 0000000D: 0000000F-00000000-00000000-00000000
CPUID 0000000D: 0000000F-00000000-00000000-00000000
CPUID 0000000D: 0000000F-00000000-00000000-00000000
CPUID 0000000D: 0000000F-00000000-00000000-00000000
"""


def test_untagged_records_are_subleaves_in_order_for_each_cpu() -> None:
    dump = DumpCpuid.parse(UNTAGGED)
    assert dump.problems == []
    assert [dump.cpuid(4, n)[0] for n in range(4)] == [0x1C004121, 0x1C004122, 0x1C004143, 0]
    assert dump.cpuid(0xD, 0)[0] == 7
    assert dump.cpuid(0xD, 1) == (1, 0, 0, 0)
    assert dump.cpuid(0xD, 2) == (0x100, 0x240, 0, 0)
    assert dump.cpuid(0xD, 3) == (0, 0, 0, 0)  # CPU #2's fourth record does not count
    assert dump.cpuid(1)[1] == 0x00100800  # CPU #1's
    flags = decode(dump).flags
    assert "XSAVEOPT" in flags and "0xD.1:EAX[0]" in flags["XSAVEOPT"]
    assert not {"XSAVEC", "XGETBV1", "XSAVES"} & set(flags)


def test_an_untagged_dump_that_skips_xsave_subleaf_1() -> None:
    # Bulldozer-era dumps list leaf 0xD subleaf 0, then the AVX component (subleaf 2):
    # 0x100 bytes at 0x240. Subleaf 1's EAX holds only feature bits 0-4, so it is not that.
    text = """\
CPUID 00000000: 0000000D-68747541-444D4163-69746E65
CPUID 00000001: 00600F01-00040800-1E98220B-178BFBFF
CPUID 0000000D: 00000007-00000340-000003C0-40000000
CPUID 0000000D: 00000100-00000240-00000000-00000000
CPUID 80000000: 8000001E-68747541-444D4163-69746E65
"""
    dump = DumpCpuid.parse(text)
    assert dump.cpuid(0xD, 1) == (0, 0, 0, 0)
    assert dump.cpuid(0xD, 2) == (0x100, 0x240, 0, 0)
    assert dump.cpuid(0x80000000)[0] == 0x8000001E
    assert not {"XSAVEOPT", "XSAVEC", "XGETBV1", "XSAVES"} & set(decode(dump).flags)


def test_xsave_components_follow_the_supported_state_bits() -> None:
    # Subleaf 0 EAX 0x207 (x87, SSE, AVX, PKRU) and subleaf 1 ECX 0x100 (PT, in IA32_XSS):
    # the component records after subleaf 1 are components 2, 8 and 9, not 2, 3 and 4.
    text = """\
CPUID 00000000: 0000000D-756E6547-6C65746E-49656E69
CPUID 0000000D: 00000207-00000340-00000A88-00000000
CPUID 0000000D: 0000000F-000003D0-00000100-00000000
CPUID 0000000D: 00000100-00000240-00000000-00000000
CPUID 0000000D: 00000080-00000000-00000001-00000000
CPUID 0000000D: 00000008-00000A80-00000000-00000000
"""
    dump = DumpCpuid.parse(text)
    assert dump.cpuid(0xD, 1)[0] == 0xF
    assert dump.cpuid(0xD, 2) == (0x100, 0x240, 0, 0)
    assert dump.cpuid(0xD, 8) == (0x80, 0, 1, 0)
    assert dump.cpuid(0xD, 9) == (8, 0xA80, 0, 0)
    assert dump.cpuid(0xD, 3) == (0, 0, 0, 0)


def test_tags_win_over_positions() -> None:
    text = """\
CPUID 00000000: 0000000D-756E6547-6C65746E-49656E69
CPUID 0000000D: 000002E7-00000980-00000988-00000000 [SL 00]
CPUID 0000000D: 0000000F-00000990-00001800-00000000 [SL 01]
CPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]
CPUID 0000000D: 00000040-00000340-00000000-00000000 [SL 05]
"""
    dump = DumpCpuid.parse(text)
    assert dump.cpuid(0xD, 5)[0] == 0x40
    assert dump.cpuid(0xD, 3) == (0, 0, 0, 0)
