"""Helpers for the cpu source tests: hand-built CPUID leaves, fixtures and label runs."""

from __future__ import annotations

import re
from pathlib import Path

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import SourceResult, run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.cpu import CpuSource
from nodefeatures.sources.cpu.cpuid import DumpCpuid, Regs, format_dump

SHARED = Path(__file__).resolve().parents[4] / "shared"
DUMPS = SHARED / "reference/cpuid-dumps.zip"
X86_TSV = SHARED / "reference/cpuid-x86-map.tsv"
PREFIX = "feature.node.kubernetes.io/cpu-"
SOURCE = CpuSource()
CONFIG = build({}, {"cpu": SOURCE})


def bits(*positions: int) -> int:
    value = 0
    for position in positions:
        value |= 1 << position
    return value


def text_regs(text: str) -> tuple[int, int, int]:
    """A signature of up to 12 characters as three registers, NUL-padded."""
    raw = text.encode("latin-1").ljust(12, b"\x00")
    return tuple(int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))  # type: ignore


def vendor_leaf(max_leaf: int, signature: str) -> Regs:
    """Leaf 0: the maximum basic leaf and the vendor, which reads EBX, EDX, ECX."""
    ebx, edx, ecx = text_regs(signature)
    return (max_leaf, ebx, ecx, edx)


def reader(leaves: dict[tuple[int, int], Regs], xcr0: int | None = None) -> DumpCpuid:
    return DumpCpuid(leaves=dict(leaves), recorded_xcr0=xcr0)


# Leaf-1 ECX bits of a modern CPU: SSE3 PCLMUL SSSE3 FMA CX16 SSE4.1 SSE4.2 MOVBE POPCNT
# AES XSAVE OSXSAVE AVX F16C RDRAND; EDX: FPU CX8 SEP CMOV MMX FXSR SSE SSE2.
MODERN_ECX1 = bits(0, 1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 27, 28, 29, 30)
MODERN_EDX1 = bits(0, 8, 11, 15, 23, 24, 25, 26)


def intel(extra: dict[tuple[int, int], Regs] | None = None) -> dict[tuple[int, int], Regs]:
    """A plain Intel family 6 model 143 CPU with AVX2 but no AVX-512 bits."""
    leaves = {
        (0, 0): vendor_leaf(0x16, "GenuineIntel"),
        (1, 0): (0x000806F8, 0x00010800, MODERN_ECX1, MODERN_EDX1),
        (7, 0): (0, bits(3, 5, 8), 0, 0),
        (0xD, 0): (0x7, 0, 0, 0),
        (0x16, 0): (2000, 3500, 100, 0),
        (0x80000000, 0): (0x80000008, 0, 0, 0),
        (0x80000001, 0): (0, 0, bits(0, 5), bits(11, 20, 27, 29)),
    }
    leaves.update(extra or {})
    return leaves


def write(root: Path, rel: str, content: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def make_fixture(directory: Path, leaves: dict[tuple[int, int], Regs] | None = None,
                 xcr0: int | None = None, files: dict[str, str | bytes] | None = None,
                 cpuid_text: str | None = None) -> Path:
    """A fixture directory: `cpuid.txt` from leaves (or given text) and files under root/."""
    (directory / "root").mkdir(parents=True, exist_ok=True)
    if cpuid_text is not None:
        (directory / "cpuid.txt").write_text(cpuid_text)
    elif leaves is not None:
        (directory / "cpuid.txt").write_text(format_dump(leaves, xcr0))
    for rel, content in (files or {}).items():
        write(directory / "root", rel, content)
    return directory


def run(host_or_fixture: Host | Path, config=CONFIG) -> SourceResult:
    host = host_or_fixture if isinstance(host_or_fixture, Host) else replay_host(host_or_fixture)
    return run_source(host, SOURCE, config)


def short(result: SourceResult) -> dict[str, str]:
    """Labels without the `feature.node.kubernetes.io/cpu-` prefix."""
    return {key.removeprefix(PREFIX): label.value for key, label in result.labels.items()}


def catalogued(name: str) -> bool:
    """Whether a label name (without prefix) is covered by a catalogue row."""
    for row in SOURCE.catalogue:
        pattern = re.escape(row.name)
        pattern = re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", pattern.replace(r"\<", "<").replace(
            r"\>", ">"))
        if re.fullmatch(pattern, name):
            return True
    return False
