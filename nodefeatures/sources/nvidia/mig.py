"""MIG: naming a MIG device the way GFD and the device plugin do, and the strategies.

A MIG device is named from the *index* of its GPU-instance profile (which fixes the
slice count and attributes such as `+me`) and of its compute-instance profile, plus a
memory size rounded to eighths of the parent GPU. NVML profile ids are not indices on
real hardware, so ids are matched back to the index that reports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

# GPU-instance profile index -> (slices, attribute suffix). Index 17 (3 slices, graphics)
# is newer than GFD's table, where it fails the whole pass; here it is named like the
# other graphics profiles.
GI_PROFILES: dict[int, tuple[int, str]] = {
    0: (1, ""), 7: (1, "+me"), 9: (1, ""), 10: (1, "+gfx"), 13: (1, "-me"), 15: (1, "+me.all"),
    1: (2, ""), 8: (2, "+me"), 11: (2, "+gfx"), 14: (2, "-me"), 16: (2, "+me.all"),
    2: (3, ""), 17: (3, "+gfx"),
    3: (4, ""), 12: (4, "+gfx"),
    6: (6, ""),
    4: (7, ""),
    5: (8, ""),
}
GI_PROFILE_COUNT = 18
# Compute-instance profile index -> slices.
CI_PROFILES: dict[int, int] = {0: 1, 7: 1, 1: 2, 2: 3, 3: 4, 6: 6, 4: 7, 8: 7, 5: 8}
CI_PROFILE_COUNT = 9

MIB = 1 << 20
GIB = 1 << 30

# The attribute labels of a MIG resource and the nvmlDeviceGetAttributes field of each.
ATTRIBUTES: dict[str, str] = {
    "memory": "memorySizeMB",
    "multiprocessors": "multiprocessorCount",
    "slices.gi": "gpuInstanceSliceCount",
    "slices.ci": "computeInstanceSliceCount",
    "engines.copy": "sharedCopyEngineCount",
    "engines.decoder": "sharedDecoderCount",
    "engines.encoder": "sharedEncoderCount",
    "engines.jpeg": "sharedJpegCount",
    "engines.ofa": "sharedOfaCount",
}


def round_half_away(value: float) -> int:
    """Go's math.Round for the non-negative values used here (Python's round() is
    banker's rounding: 70.5 would become 70, not 71)."""
    return math.floor(value + 0.5)


def memory_gb(mig_memory_mib: int, parent_total_bytes: int) -> int:
    """The `<N>gb` of a profile name: the MIG memory as eighths of the parent GPU."""
    if parent_total_bytes <= 0:
        raise ValueError("parent GPU memory is unknown")
    fraction = mig_memory_mib * MIB / parent_total_bytes
    fraction = math.ceil(fraction * 8) / 8
    total_gb = math.ceil(parent_total_bytes / GIB)
    return round_half_away(fraction * total_gb)


def profile_name(gi_index: int, ci_index: int, mig_memory_mib: int,
                 parent_total_bytes: int) -> str:
    """The MIG name as GFD labels it: `1g.5gb`, `1c.7g.40gb`, `1g.10gb.me`, `1g.24gb-me`."""
    if gi_index not in GI_PROFILES:
        raise ValueError(f"unknown GPU instance profile index {gi_index}")
    if ci_index not in CI_PROFILES:
        raise ValueError(f"unknown compute instance profile index {ci_index}")
    slices, suffix = GI_PROFILES[gi_index]
    compute = CI_PROFILES[ci_index]
    gb = memory_gb(mig_memory_mib, parent_total_bytes)
    base = f"{slices}g.{gb}gb" if compute == slices else f"{compute}c.{slices}g.{gb}gb"
    return (base + suffix).replace("+", ".")


class MigDevice(NamedTuple):
    """One MIG device as discovered: where it lives, its name and its attributes."""

    gpu: int  # index of the parent GPU
    index: int  # MIG device index on that GPU
    parent: str  # NVML name of the parent GPU
    profile: str  # GFD name, e.g. 1g.5gb
    attributes: tuple[tuple[str, int], ...]  # (label suffix, value) in ATTRIBUTES order


def group_by_profile(devices: Iterable[MigDevice]) -> dict[str, list[MigDevice]]:
    """MIG devices per profile, each list in (GPU index, MIG index) order."""
    groups: dict[str, list[MigDevice]] = {}
    for device in sorted(devices, key=lambda d: (d.gpu, d.index)):
        groups.setdefault(device.profile, []).append(device)
    return groups


def single_strategy_problem(mig_enabled_gpus: list[int], full_gpus: list[int],
                            devices: list[MigDevice]) -> str | None:
    """Why the single strategy cannot describe this node, or None when it can.

    Only called when at least one GPU has MIG enabled.
    """
    empty = sorted(set(mig_enabled_gpus) - {d.gpu for d in devices})
    if empty:
        return f"MIG is enabled on GPU {empty[0]} but it has no MIG devices"
    if full_gpus:
        return "some GPUs have MIG enabled and others do not"
    profiles = sorted({d.profile for d in devices})
    if len(profiles) > 1:
        return f"the MIG devices have more than one profile ({', '.join(profiles)})"
    return None
