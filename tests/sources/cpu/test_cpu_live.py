"""The in-process CPUID executor on this machine, against /proc/cpuinfo; capture and replay."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from cpu_testing import X86_TSV, run, short

import nodefeatures.sources.cpu as cpu_source
from nodefeatures.discovery.fixture import capture_host, replay_host
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.source import Host
from nodefeatures.sources.cpu import cpuid, cpuinfo
from nodefeatures.sources.cpu.facts import X86_VENDORS

# Flags whose cpuinfo counterpart says something else than the CPUID bit, on purpose:
# NFD maps `sse` to FXSROPT (we read the AMD bit) and never detects TBM.
NOT_COMPARABLE = {"FXSROPT", "TBM"}


@pytest.fixture(scope="module")
def live() -> cpuid.LiveCpuid:
    try:
        return cpuid.live()
    except cpuid.CpuidUnavailable as exc:
        pytest.skip(f"raw CPUID cannot run here: {exc}")


@pytest.fixture(scope="module")
def proc_cpuinfo() -> dict[str, str]:
    text = Path("/proc/cpuinfo").read_text()
    block = cpuinfo.first_block(text)
    if "flags" not in block:
        pytest.skip("/proc/cpuinfo has no x86 flags line")
    return block


def test_identity_matches_proc_cpuinfo(live: cpuid.LiveCpuid,
                                       proc_cpuinfo: dict[str, str]) -> None:
    facts = cpu_source.live_facts()
    assert facts.vendor == X86_VENDORS.get(proc_cpuinfo["vendor_id"], "VendorUnknown")
    assert facts.family == int(proc_cpuinfo["cpu family"])
    model = int(proc_cpuinfo["model"])
    assert facts.model == (model & 0xF if 6 < facts.family < 0xF else model)


def high_confidence_rows() -> list[tuple[str, list[str]]]:
    if not X86_TSV.is_file():
        pytest.skip(f"reference table {X86_TSV} is absent")
    with open(X86_TSV, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [(row["nfd_name"], row["linux_flag"].split("|")) for row in rows
            if row["confidence"] == "high" and row["linux_flag"] != "-"
            and row["nfd_name"] not in NOT_COMPARABLE]


# Flags Linux hides from /proc/cpuinfo on purpose although CPUID sets them, by the
# (vendor, family) whose erratum makes it do so. On AMD family 1Ah (Zen 5) the kernel
# logs "RDSEED32 is broken. Disabling the corresponding CPUID bit." and clears
# X86_FEATURE_RDSEED; raw CPUID, which is what NFD (and we) read, may still report it.
KERNEL_CLEARED = {("AMD", 0x1A): {"RDSEED"}}


def test_flags_agree_with_proc_cpuinfo(live: cpuid.LiveCpuid,
                                       proc_cpuinfo: dict[str, str]) -> None:
    present = set(proc_cpuinfo["flags"].split())
    facts = cpu_source.live_facts()
    decoded = set(facts.flags)
    cleared = KERNEL_CLEARED.get((facts.vendor, facts.family), set())
    rows = high_confidence_rows()
    disagree = [(name, linux) for name, linux in rows
                if (name in decoded) != any(flag in present for flag in linux)
                and not (name in cleared and name in decoded)]
    assert disagree == []
    assert len(rows) > 80


def test_the_cpuinfo_fallback_differs_only_where_cpuinfo_cannot_see(
        live: cpuid.LiveCpuid, proc_cpuinfo: dict[str, str]) -> None:
    facts = cpu_source.live_facts()
    decoded = set(facts.flags)
    fallback = set(cpuinfo.x86_facts(proc_cpuinfo, "/proc/cpuinfo", [].append).flags)
    comparable = {name for name, _ in high_confidence_rows()}
    cleared = KERNEL_CLEARED.get((facts.vendor, facts.family), set())
    assert not ((decoded ^ fallback) & comparable) - (cleared & (decoded - fallback))


def test_decoding_happens_once_per_process(live: cpuid.LiveCpuid, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(Host(root=HostRoot("/")))
    facts = cpu_source.live_facts()

    def no_more_cpuid(*args: object) -> None:
        raise AssertionError("CPUID executed again")

    monkeypatch.setattr(live, "_cpuid", no_more_cpuid)
    monkeypatch.setattr(live, "_answers", {})
    again = run(Host(root=HostRoot("/")))
    assert cpu_source.live_facts() is facts
    assert short(again) == short(first)


def test_capture_then_replay_gives_the_same_labels(live: cpuid.LiveCpuid,
                                                   tmp_path: Path) -> None:
    fixture = tmp_path / "captured"
    captured = run(capture_host(fixture))
    recorded = (fixture / "cpuid.txt").read_text()
    assert "CPUID 00000000:" in recorded and "XCR0:" in recorded
    replayed = run(replay_host(fixture))
    assert short(replayed) == short(captured)
    assert short(captured)["model.vendor_id"] == cpu_source.live_facts().vendor
    assert replayed.warnings == []
    assert short(captured) == short(run(Host(root=HostRoot("/"))))
