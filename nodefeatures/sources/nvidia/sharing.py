"""GPU sharing (time-slicing and MPS): replicas, strategy and the `-SHARED` product suffix.

The `sources.nvidia.sharing` option has the shape of the device plugin's and GFD's
`sharing` config:

    sharing:
      timeSlicing:            # or mps
        renameByDefault: false
        failRequestsGreaterThanOne: false
        resources:
          - name: nvidia.com/gpu      # "gpu" is short for nvidia.com/gpu
            replicas: 4
            rename: gpu.shared        # optional
            devices: all              # accepted; every device is shared alike
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RESOURCE_PREFIX = "nvidia.com/"
GPU_RESOURCE = "nvidia.com/gpu"
STRATEGIES = ("timeSlicing", "mps")
_RESOURCE_KEYS = {"name", "replicas", "rename", "devices"}


class Sharing:
    """The replicas of one resource under the active sharing configuration."""

    __slots__ = ("renamed", "replicas", "strategy")

    def __init__(self, replicas: int, strategy: str, renamed: bool) -> None:
        self.replicas = replicas  # per physical device; 1 when not shared
        self.strategy = strategy  # "none", "time-slicing" or "mps"
        self.renamed = renamed  # the shared resource is published under another name

    def __repr__(self) -> str:
        return f"Sharing({self.replicas}, {self.strategy!r}, renamed={self.renamed})"

    @property
    def shared(self) -> bool:
        return self.replicas > 1

    def suffix(self) -> str:
        """`-SHARED` is appended to the product while a shared resource keeps its name."""
        return "SHARED" if self.shared and not self.renamed else ""


NOT_SHARED = Sharing(1, "none", False)
DISABLED = Sharing(0, "none", False)  # MIG-enabled GPUs are never shared as full GPUs


def resource_name(name: str) -> str:
    return name if "/" in name else RESOURCE_PREFIX + name


def strategy(options: Mapping[str, Any]) -> str:
    """mps if MPS replicates anything, else time-slicing if that does, else none."""
    sharing = options.get("sharing") or {}
    for key, label in (("mps", "mps"), ("timeSlicing", "time-slicing")):
        if any(_replicas(r) > 1 for r in (sharing.get(key) or {}).get("resources") or []):
            return label
    return "none"


def lookup(options: Mapping[str, Any], resource: str) -> Sharing:
    """How `resource` (e.g. nvidia.com/gpu, nvidia.com/mig-1g.5gb) is shared.

    As in GFD, the MPS block is the one consulted whenever it lists any resource, and
    time-slicing otherwise.
    """
    sharing = options.get("sharing") or {}
    block = sharing.get("mps") or {}
    if not block.get("resources"):
        block = sharing.get("timeSlicing") or {}
    for entry in block.get("resources") or []:
        if resource_name(str(entry.get("name", ""))) != resource:
            continue
        replicas = _replicas(entry)
        if replicas <= 0:
            return NOT_SHARED
        renamed = bool(entry.get("rename")) or bool(block.get("renameByDefault"))
        active = strategy(options)
        return Sharing(replicas, active if replicas > 1 else "none", renamed)
    return NOT_SHARED


def _replicas(entry: Any) -> int:
    value = entry.get("replicas", 0) if isinstance(entry, Mapping) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def validate(options: Mapping[str, Any]) -> list[str]:
    """Problems with the sharing option that its defaults' types cannot express."""
    problems: list[str] = []
    sharing = options.get("sharing") or {}
    for key in STRATEGIES:
        resources = (sharing.get(key) or {}).get("resources") or []
        for position, entry in enumerate(resources):
            where = f"sharing.{key}.resources[{position}]"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: must be a mapping with name and replicas")
                continue
            unknown = sorted(set(entry) - _RESOURCE_KEYS)
            problems += [f"{where}.{name}: unknown key" for name in unknown]
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                problems.append(f"{where}.name: must be a non-empty string")
            replicas = entry.get("replicas")
            if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 2:
                problems.append(f"{where}.replicas: must be an integer of at least 2")
            rename = entry.get("rename", "")
            if not isinstance(rename, str):
                problems.append(f"{where}.rename: must be a string")
            devices = entry.get("devices", "all")
            if devices != "all" and not (
                isinstance(devices, list)
                and all(isinstance(d, str | int) and not isinstance(d, bool) for d in devices)
            ):
                problems.append(f"{where}.devices: must be 'all' or a list of indices or UUIDs")
    return problems
