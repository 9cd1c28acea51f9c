"""Raw features rules need that the other sources do not expose yet, read through HostRoot.

- `pci.device`: NFD lists every PCI function; the pci source keeps only the classes it
  labels (GPUs, accelerators), so a Mellanox NIC would be invisible to rules. Every
  device is read here with the pci source's own attribute reader, so values are
  formatted the same way.
- `kernel.loadedmodule`: the first field of each line of /proc/modules, as NFD reads it.
- `kernel.enabledmodule`: loaded modules plus those built into the kernel
  (`/lib/modules/<release>/modules.builtin`).

Each is read only when a rule asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from nodefeatures.discovery.source import Context
from nodefeatures.sources.pci import DEVICES, PciSource

MODULES = "proc/modules"
RELEASE = "proc/sys/kernel/osrelease"
BUILTIN = "lib/modules/{release}/modules.builtin"
_MODULES_LIMIT = 1024 * 1024
_EVERY_CLASS = ("",)


def pci_devices(ctx: Context, known: Mapping[str, Mapping[str, str]] | None = None
                ) -> list[Mapping[str, str]]:
    """Every PCI device; `known` (device path as displayed -> attributes) is not read again.

    The pci source has already read the devices of its classes in this pass, with the
    same reader, so only the others cost reads here.
    """
    devices = []
    for entry in ctx.root.listdir(DEVICES):
        device = f"{DEVICES}/{entry}"
        attributes = (known or {}).get(ctx.root.display(device))
        if attributes is None:
            attributes = PciSource._read_device(ctx, device, _EVERY_CLASS)
        if attributes is not None:
            devices.append(attributes)
    return devices


def loaded_modules(ctx: Context) -> list[str] | None:
    """Names of loaded kernel modules; None when /proc/modules cannot be read."""
    text = ctx.root.read_text(MODULES, limit=_MODULES_LIMIT)
    if text is None:
        return None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def builtin_modules(ctx: Context) -> list[str] | None:
    """Modules built into the running kernel; None when that list cannot be read."""
    release = ctx.root.read_line(RELEASE)
    if not release or "/" in release:
        return None
    text = ctx.root.read_text(BUILTIN.format(release=release.strip()), limit=_MODULES_LIMIT)
    if text is None:
        return None
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line.endswith(".ko"):
            names.append(line.rpartition("/")[2].removesuffix(".ko"))
    return names
