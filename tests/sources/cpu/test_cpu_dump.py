"""cpuid.txt: reading InstLatx64 dumps and our own recordings, and writing recordings."""

from __future__ import annotations

from cpu_testing import intel, reader

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
