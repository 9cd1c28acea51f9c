"""NVIDIA GPUs that are not PCI functions of this node: Tegra SoCs and WSL2.

A Jetson or IGX SoC's GPU is integrated and never appears on the PCI bus; under WSL2
the GPU belongs to the Windows host and NVML reaches it through /dev/dxg. On both the
PCI scan finds no NVIDIA display function, so these host files decide whether NVML is
worth asking. Like pci.py, this runs on every node and imports nothing heavy.
"""

from __future__ import annotations

import re

from nodefeatures.discovery.hostroot import HostRoot

TEGRA = "tegra"
WSL2 = "wsl2"

TEGRA_RELEASE = "/etc/nv_tegra_release"
SOC = "/sys/devices/soc0"
DEVICE_TREE = ("/sys/firmware/devicetree/base", "/proc/device-tree")
OSRELEASE = "/proc/sys/kernel/osrelease"
DXG = "/dev/dxg"
DXCORE = "/usr/lib/wsl/lib/libdxcore.so"

# Tegra chip id (/sys/devices/soc0/soc_id, the fuse's chip id) -> device tree name
CHIPS = {0x18: "tegra186", 0x19: "tegra194", 0x21: "tegra210", 0x23: "tegra234",
         0x26: "tegra264"}


class SocGpu:
    """What the CUDA driver reports for a Tegra SoC's one integrated GPU, as GFD labels
    it there; compute is None where it depends on the CUDA version (Thor: 10.1 before
    CUDA 13, 11.0 since)."""

    __slots__ = ("compute", "name")

    def __init__(self, name: str, compute: tuple[int, int] | None) -> None:
        self.name = name
        self.compute = compute


SOC_GPUS = {
    "tegra210": SocGpu("NVIDIA Tegra X1", (5, 3)),
    "tegra186": SocGpu("NVIDIA Tegra X2", (6, 2)),
    "tegra194": SocGpu("Xavier", (7, 2)),
    "tegra234": SocGpu("Orin", (8, 7)),
    "tegra264": SocGpu("NVIDIA Thor", None),
}

# NVML names of integrated GPUs (what go-nvlib also takes for a Tegra GPU): `Orin
# (nvgpu)` is the NVML name of the GPU that CUDA, and so GFD, calls `Orin`.
_NVGPU = " (nvgpu)"
_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_CHIP = re.compile(r"^nvidia,(tegra\d+)$")


def is_integrated_name(name: str) -> bool:
    return _NVGPU.strip() in name or "NVIDIA Thor" in name


def cuda_name(name: str) -> str:
    """The CUDA driver's name of an integrated GPU from NVML's (GFD labels it so)."""
    return name.replace(_NVGPU, "").replace(_NVGPU.strip(), "").strip()


class Platform:
    """A node whose NVIDIA GPU is not on its PCI bus, and the host facts that say so."""

    __slots__ = ("chip", "evidence", "kind", "machine", "release", "soc_id")

    def __init__(self, kind: str, evidence: str) -> None:
        self.kind = kind
        self.evidence = evidence  # which file decided, for the label origins
        self.chip = ""  # tegra234
        self.soc_id: int | None = None
        self.release = ""  # Jetson Linux (L4T) release: 36.4.3
        self.machine = ""  # the device tree model

    @property
    def soc_gpu(self) -> SocGpu | None:
        return SOC_GPUS.get(self.chip)


def detect(root: HostRoot) -> Platform | None:
    """Tegra or WSL2 from host files; None for any other node."""
    return _wsl2(root) or _tegra(root)


def _wsl2(root: HostRoot) -> Platform | None:
    release = root.read_line(OSRELEASE, limit=256) or ""
    if "microsoft-standard-wsl2" in release.lower():
        return Platform(WSL2, f"{OSRELEASE}={release!r}")
    # a custom WSL2 kernel need not say so in its release: the paravirtual GPU does
    for path in (DXG, DXCORE):
        if root.exists(path):
            return Platform(WSL2, f"{path} exists")
    return None


def _tegra(root: HostRoot) -> Platform | None:
    release = root.read_text(TEGRA_RELEASE, limit=4096)
    family = root.read_line(f"{SOC}/family", limit=64) or ""
    compatible = _device_tree(root, "compatible")
    chips = [m.group(1) for c in compatible if (m := _CHIP.match(c))]
    if release is not None:
        platform = Platform(TEGRA, f"{TEGRA_RELEASE} exists")
    elif family.lower().startswith("tegra"):
        platform = Platform(TEGRA, f"{SOC}/family={family!r}")
    elif chips:
        platform = Platform(TEGRA, f"device tree compatible {chips[0]!r}")
    else:
        return None
    soc_id = root.read_line(f"{SOC}/soc_id", limit=64) or ""
    if soc_id.isascii() and soc_id.isdigit():
        platform.soc_id = int(soc_id)
    platform.chip = chips[0] if chips else CHIPS.get(platform.soc_id or -1, "")
    if release is not None:
        found = _RELEASE.search(release)
        if found:
            platform.release = f"{found.group(1)}.{found.group(2)}"
    model = _device_tree(root, "model")
    platform.machine = (model[0] if model else "") or root.read_line(f"{SOC}/machine",
                                                                     limit=256) or ""
    return platform


def _device_tree(root: HostRoot, name: str) -> list[str]:
    """A device tree string-list property of the root node (NUL-separated)."""
    for base in DEVICE_TREE:
        data = root.read_bytes(f"{base}/{name}", limit=4096)
        if data is not None:
            text = data.decode("utf-8", errors="replace")
            return [part.strip() for part in text.split("\0") if part.strip()]
    return []
