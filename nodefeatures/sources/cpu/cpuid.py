"""Where raw CPUID answers come from: this CPU, a recorded `cpuid.txt`, or a recorder.

Every reader answers `cpuid(leaf, subleaf)` with (EAX, EBX, ECX, EDX) and `xcr0()` with
the OS-enabled XSAVE state components. The decoder (x86.py) is the only caller, and it
asks for XCR0 only when CPUID says the OS set CR4.OSXSAVE.

The live reader runs the `cpuid` and `xgetbv` instructions in this process through a
small machine-code page made executable with mprotect (never writable and executable at
once). No subprocess, no /dev/cpu/N/cpuid (root only), no py-cpuinfo (seconds of work).

`cpuid.txt` is the InstLatx64 text format of public CPUID dumps, plus one `XCR0:` line;
docs/fixtures.md describes it.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Protocol

Regs = tuple[int, int, int, int]
ZERO: Regs = (0, 0, 0, 0)
LEAF1_OSXSAVE = 1 << 27
MAX_DUMP_BYTES = 8 * 1024 * 1024  # the largest public dumps are ~1 MiB
MAX_REPORTED_PROBLEMS = 5


class CpuidReader(Protocol):
    """Answers CPUID queries; the decoder needs nothing else."""

    def cpuid(self, leaf: int, subleaf: int = 0) -> Regs: ...

    def xcr0(self) -> int: ...


class CpuidUnavailable(RuntimeError):
    """This process cannot execute CPUID itself (not x86-64 Linux, or no executable page)."""


# -- live: CPUID and XGETBV executed in this process ------------------------------------

# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4])  (System V AMD64 ABI)
_CPUID_CODE = bytes.fromhex(
    "53"  # push rbx            (callee-saved; cpuid clobbers it)
    "4989d0"  # mov r8, rdx     (out pointer; cpuid clobbers rdx)
    "89f8"  # mov eax, edi      (leaf)
    "89f1"  # mov ecx, esi      (subleaf)
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3"  # ret
)
# uint64 xgetbv(uint32 index)
_XGETBV_CODE = bytes.fromhex(
    "89f9"  # mov ecx, edi
    "0f01d0"  # xgetbv            (edx:eax = XCR[ecx])
    "48c1e220"  # shl rdx, 32
    "4809d0"  # or rax, rdx
    "c3"  # ret
)
_XGETBV_OFFSET = 64
_ARCH_GET_CPUID = 0x1011
_SYS_ARCH_PRCTL = 158


class LiveCpuid:
    """CPUID of the CPU this process runs on; each answer is kept, since none changes."""

    def __init__(self) -> None:
        self._cpuid, self._xgetbv = _build_executor()
        import ctypes

        self._out = (ctypes.c_uint32 * 4)()
        self._answers: dict[tuple[int, int], Regs] = {}
        self._xcr0: int | None = None

    def cpuid(self, leaf: int, subleaf: int = 0) -> Regs:
        key = (leaf & 0xFFFFFFFF, subleaf & 0xFFFFFFFF)
        regs = self._answers.get(key)
        if regs is None:
            self._cpuid(key[0], key[1], self._out)
            regs = (self._out[0], self._out[1], self._out[2], self._out[3])
            self._answers[key] = regs
        return regs

    def xcr0(self) -> int:
        if self._xcr0 is None:
            # XGETBV raises #UD (SIGILL, fatal) unless the OS set CR4.OSXSAVE.
            self._xcr0 = self._xgetbv(0) if self.cpuid(1)[2] & LEAF1_OSXSAVE else 0
        return self._xcr0


def _build_executor():  # -> (cpuid function, xgetbv function)
    machine = os.uname().machine if hasattr(os, "uname") else "?"
    if sys.platform != "linux" or machine.lower() not in ("x86_64", "amd64"):
        raise CpuidUnavailable(f"not x86-64 Linux ({sys.platform}/{machine})")
    import ctypes
    import mmap

    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise CpuidUnavailable("a 32-bit Python cannot run the 64-bit CPUID routine")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long]
    # With arch_prctl(ARCH_SET_CPUID, 0) in force, CPUID would kill us with SIGSEGV.
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_CPUID, 0) == 0:
        raise CpuidUnavailable("CPUID faulting is enabled for this process")
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.restype = ctypes.c_int
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = mmap.PAGESIZE
    page = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if page in (None, ctypes.c_void_p(-1).value):
        raise CpuidUnavailable(f"mmap failed: errno {ctypes.get_errno()}")
    ctypes.memmove(page, _CPUID_CODE, len(_CPUID_CODE))
    ctypes.memmove(page + _XGETBV_OFFSET, _XGETBV_CODE, len(_XGETBV_CODE))
    # W^X: the page is never writable and executable at once; SELinux execmem may refuse.
    if libc.mprotect(page, size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise CpuidUnavailable(f"mprotect(PROT_EXEC) refused: errno {ctypes.get_errno()}")
    # The page lives as long as the process; the functions below keep using it.
    cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                             ctypes.POINTER(ctypes.c_uint32))(page)
    xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(page + _XGETBV_OFFSET)
    return cpuid, xgetbv


_live: LiveCpuid | None = None
_live_error: str | None = None


def live() -> LiveCpuid:
    """The process-wide live reader; raises CpuidUnavailable (every time) when impossible."""
    global _live, _live_error
    if _live is None and _live_error is None:
        try:
            _live = LiveCpuid()
        except CpuidUnavailable as exc:
            _live_error = str(exc)
        except (OSError, AttributeError, ValueError) as exc:  # no libc symbol, odd platform
            _live_error = f"{type(exc).__name__}: {exc}"
    if _live is None:
        raise CpuidUnavailable(_live_error or "unavailable")
    return _live


# -- cpuid.txt: InstLatx64 dumps and our recordings -------------------------------------

_HEX8 = r"([0-9A-Fa-f]{8})"
# Possessive quantifiers: a run of spaces or dashes is consumed once and never re-split,
# so a line that is not a record is rejected in linear time.
_RECORD = re.compile(
    r"CPUID\s++" + _HEX8 + r"\s*+(?::\s*+)?" + _HEX8 + r"[-\s]++" + _HEX8 + r"[-\s]++" + _HEX8
    + r"[-\s]++" + _HEX8 + r"(?![0-9A-Za-z])(.*)"
)
_SUBLEAF = re.compile(r"\[SL\s*+([0-9A-Fa-f]{1,8})\]")
# `CPUID <word with a digit>` is meant as a record; `CPUID Manufacturer : ...` is prose.
_RECORD_ATTEMPT = re.compile(r"CPUID\s++[^\s\d]*+\d")
_XCR0 = re.compile(r"XCR0\s*+[:=]\s*+(?:0x)?([0-9A-Fa-f]{1,16})\s*+")
MAX_LINE = 1024  # the longest line of the public dumps has 199 characters
XSAVE_LEAF = 0xD
# Leaf 0xD subleaf 1 EAX holds feature bits 0-4 only (XSAVEOPT, XSAVEC, XGETBV1, XSAVES,
# XFD); a state component's subleaf has its size there, which sets higher bits.
_XSAVE_SUBLEAF1_EAX = 0x1F


@dataclass
class DumpCpuid:
    """CPUID answers parsed from a dump; leaves it does not list read as zero."""

    leaves: dict[tuple[int, int], Regs] = field(default_factory=dict)
    recorded_xcr0: int | None = None
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, what)
    _listed: set[int] = field(default_factory=set, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> DumpCpuid:
        """Read every record; a dump lists each logical CPU in turn (a leaf-0 record starts
        the next), and the first CPU that lists a leaf gives all of its subleaves.

        A record's `[SL nn]` tag gives its subleaf; untagged records of a leaf are its
        subleaves in order (`_xsave_layout` checks leaf 0xD's against the leaf itself).
        """
        dump = cls()
        cpu: dict[int, list[tuple[int | None, Regs]]] = {}  # this CPU's records by leaf
        for number, raw in enumerate(text.splitlines(), start=1):
            if len(raw) > MAX_LINE:
                dump.problems.append((number, f"line of {len(raw)} characters, longer than "
                                              f"{MAX_LINE}: {_clip(raw.strip())!r}"))
                continue
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if "\x00" in line or "\ufffd" in line:
                dump.problems.append((number, "binary data"))
                continue
            match = _RECORD.fullmatch(line)
            if match:
                leaf = int(match.group(1), 16)
                if leaf == 0 and cpu:
                    dump._add_cpu(cpu)
                    cpu = {}
                tag = _SUBLEAF.search(match.group(6))
                regs: Regs = (int(match.group(2), 16), int(match.group(3), 16),
                              int(match.group(4), 16), int(match.group(5), 16))
                cpu.setdefault(leaf, []).append((int(tag.group(1), 16) if tag else None, regs))
                continue
            if line[:4].upper() == "XCR0":
                xcr0 = _XCR0.fullmatch(line)
                if xcr0 is None:
                    dump.problems.append((number, f"malformed XCR0 line {_clip(line)!r}"))
                elif dump.recorded_xcr0 is None:
                    dump.recorded_xcr0 = int(xcr0.group(1), 16)
                continue
            if _RECORD_ATTEMPT.match(line):
                dump.problems.append((number, f"malformed CPUID record {_clip(line)!r}"))
            # Anything else is the prose around InstLatx64 records (MSRs, cache sizes).
        dump._add_cpu(cpu)
        return dump

    def _add_cpu(self, cpu: dict[int, list[tuple[int | None, Regs]]]) -> None:
        """One CPU's records of the leaves no earlier CPU listed: subleaves of different
        CPUs are never mixed (the cores of a hybrid CPU answer differently)."""
        for leaf, records in cpu.items():
            if leaf in self._listed:
                continue
            self._listed.add(leaf)
            if leaf == XSAVE_LEAF and all(tag is None for tag, _ in records):
                placed = _xsave_layout([regs for _, regs in records])
            else:
                placed = [(position if tag is None else tag, regs)
                          for position, (tag, regs) in enumerate(records)]
            for subleaf, regs in placed:
                self.leaves.setdefault((leaf, subleaf), regs)

    def cpuid(self, leaf: int, subleaf: int = 0) -> Regs:
        return self.leaves.get((leaf, subleaf), ZERO)

    def xcr0(self) -> int:
        """The recorded XCR0, else every state component leaf 0xD says XCR0 supports."""
        if self.recorded_xcr0 is not None:
            return self.recorded_xcr0
        eax, _, _, edx = self.cpuid(0xD, 0)
        return eax | (edx << 32)


def _xsave_layout(records: list[Regs]) -> list[tuple[int, Regs]]:
    """Subleaves of untagged leaf 0xD records, checked against what the leaf says.

    Subleaf 0 comes first. Some dumps omit subleaf 1 and go on with the first state
    component (Bulldozer lists 0, then the AVX component 2), so the next record is
    subleaf 1 only when its EAX could be subleaf 1's. The records after it describe the
    state components that subleaf 0 (XCR0 bits, EDX:EAX) and subleaf 1 (IA32_XSS bits,
    EDX:ECX) say exist, in ascending order; where there are more records than such
    components, the layout is unknown and they are read by position.
    """
    placed = [(0, records[0])]
    rest = records[1:]
    components = records[0][0] | records[0][3] << 32
    if rest and rest[0][0] & ~_XSAVE_SUBLEAF1_EAX == 0:
        placed.append((1, rest[0]))
        components |= rest[0][2] | rest[0][3] << 32
        rest = rest[1:]
    indices = [i for i in range(2, 64) if components >> i & 1]
    if len(rest) > len(indices):
        indices = list(range(len(placed), len(placed) + len(rest)))
    return placed + list(zip(indices, rest, strict=False))


def _clip(line: str, width: int = 60) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


class RecordingCpuid:
    """Passes queries through and remembers every answer, for `cpuid.txt` on capture."""

    def __init__(self, inner: CpuidReader) -> None:
        self.inner = inner
        self.answers: dict[tuple[int, int], Regs] = {}
        self.seen_xcr0: int | None = None

    def cpuid(self, leaf: int, subleaf: int = 0) -> Regs:
        regs = self.inner.cpuid(leaf, subleaf)
        self.answers[(leaf, subleaf)] = regs
        return regs

    def xcr0(self) -> int:
        self.seen_xcr0 = self.inner.xcr0()
        return self.seen_xcr0

    def text(self) -> str:
        return format_dump(self.answers, self.seen_xcr0)


def format_dump(answers: dict[tuple[int, int], Regs], xcr0: int | None) -> str:
    """`cpuid.txt` text: one record per leaf/subleaf in order, then XCR0 if it was read."""
    lines = ["# CPUID answers recorded by nodefeatures capture (docs/fixtures.md)"]
    for (leaf, subleaf), regs in sorted(answers.items()):
        values = "-".join(f"{reg:08X}" for reg in regs)
        lines.append(f"CPUID {leaf:08X}: {values} [SL {subleaf:02X}]")
    if xcr0 is not None:
        lines.append(f"XCR0: {xcr0:016X}")
    return "\n".join(lines) + "\n"
