"""NVIDIA GPUs on the PCI bus and the vGPU record in their config space.

This is all a node without an NVIDIA GPU ever runs of the nvidia source, so it stays
small and imports nothing heavy (no ctypes, no pynvml, no dataclasses).
"""

from __future__ import annotations

from nodefeatures.discovery.hostroot import HostRoot

PCI_DEVICES = "sys/bus/pci/devices"
NVIDIA_VENDOR = "0x10de"
DISPLAY_CLASS = 0x03  # PCI base class of VGA, 3D and other display controllers
VGA_CLASS = 0x030000
COMPUTE_CLASS = 0x030200
CONFIG_SPACE = 256  # what GFD needs; an unprivileged read returns 64 bytes
CONFIG_LIMIT = 4096


class PciGpu:
    """An NVIDIA display-class function under /sys/bus/pci/devices."""

    __slots__ = ("address", "class_code", "device")

    def __init__(self, address: str, class_code: int, device: str) -> None:
        self.address = address  # 0000:3b:00.0
        self.class_code = class_code  # 0x030200
        self.device = device  # 0x1eb8

    def __repr__(self) -> str:
        return f"PciGpu({self.address!r}, 0x{self.class_code:06x}, {self.device!r})"


class PciScan:
    """What the PCI bus says about NVIDIA GPUs."""

    __slots__ = ("gpus", "listed")

    def __init__(self, listed: int, gpus: tuple[PciGpu, ...]) -> None:
        self.listed = listed  # entries under /sys/bus/pci/devices (0: not visible here)
        self.gpus = gpus

    @property
    def addresses(self) -> str:
        return ", ".join(g.address for g in self.gpus)


class PciScanner:
    """Finds NVIDIA GPUs on the PCI bus, reading vendor files again only when the set of
    devices changed: a DGX has a few hundred PCI functions and passes come every minute.
    Call scan() once per pass before vgpu()."""

    def __init__(self) -> None:
        self._key: tuple[str, str, tuple[str, ...]] | None = None
        self._scan = PciScan(0, ())
        self._vgpu: tuple[dict[str, VgpuRecord], list[str]] | None = None

    def scan(self, root: HostRoot) -> PciScan:
        self._vgpu = None
        names = tuple(root.listdir(PCI_DEVICES))
        key = (str(root.root), str(root.proc), names)
        if key == self._key and root.recorder is None:
            return self._scan
        gpus, unsure = [], False
        for name in names:
            base = f"{PCI_DEVICES}/{name}"
            vendor = root.read_line(f"{base}/vendor", limit=64)
            if vendor is None or vendor.lower() != NVIDIA_VENDOR:
                unsure = unsure or vendor is None
                continue
            class_code = _hex(root.read_line(f"{base}/class", limit=64))
            if class_code is None or class_code >> 16 != DISPLAY_CLASS:
                unsure = unsure or class_code is None
                continue
            device = root.read_line(f"{base}/device", limit=64) or ""
            gpus.append(PciGpu(name.lower(), class_code, device.lower()))
        # a file that could not be read is read again next pass
        self._key = None if unsure else key
        self._scan = PciScan(len(names), tuple(gpus))
        return self._scan

    def vgpu(self, root: HostRoot) -> tuple[dict[str, VgpuRecord], list[str]]:
        """read_vgpu of this pass's scan, read once however often it is asked for."""
        if self._vgpu is None:
            self._vgpu = read_vgpu(root, self._scan)
        return self._vgpu


def _hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """NVML's `00000000:3B:00.0` as sysfs names it: `0000:3b:00.0`."""
    bus_id = nvml_bus_id.strip().lower()
    domain, sep, rest = bus_id.partition(":")
    if sep and len(domain) == 8 and domain.startswith("0000") and all(
            c in "0123456789abcdef" for c in domain):
        return f"{domain[4:]}:{rest}"
    return bus_id


# -- vGPU: the vendor-specific capability in PCI config space ---------------------------


class VgpuRecord:
    """What one GPU's config space says about vGPU."""

    __slots__ = ("branch", "version", "vgpu")

    def __init__(self, vgpu: bool, version: str = "", branch: str = "") -> None:
        self.vgpu = vgpu
        self.version = version  # of the vGPU manager on the hypervisor host
        self.branch = branch

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VgpuRecord) and (self.vgpu, self.version, self.branch) == (
            other.vgpu, other.version, other.branch)

    def __repr__(self) -> str:
        return f"VgpuRecord({self.vgpu}, {self.version!r}, {self.branch!r})"


def parse_vgpu_capability(config: bytes) -> VgpuRecord | None:
    """The vGPU signature and host driver record of a config space; None when the file is
    too short to tell (reading past 64 bytes needs privileges)."""
    if len(config) < CONFIG_SPACE:
        return None
    if not config[0x06] & 0x10:  # status register: no capability list
        return VgpuRecord(False)
    capability = b""
    position, seen = config[0x34], set()
    while position and position not in seen and position + 2 < len(config):
        cap_id = config[position]
        if cap_id == 0xFF:
            break
        if cap_id == 0x09:  # vendor specific: id, next, length, then vendor data
            capability = config[position:position + config[position + 2]]
            break
        seen.add(position)
        position = config[position + 1]
    if len(capability) < 5 or capability[3:5] != b"VF":
        return VgpuRecord(False)
    position = 5
    while position + 1 < len(capability):
        record, length = capability[position], capability[position + 1]
        if record == 0:  # host driver record: 10 bytes version, 10 bytes branch
            data = capability[position + 2:position + 22]
            if len(data) < 20:
                break
            return VgpuRecord(True, _text(data[:10]), _text(data[10:]))
        if length < 2:
            break  # malformed: a record cannot be shorter than its own header
        position += length
    return VgpuRecord(True)


def _text(data: bytes) -> str:
    return data.strip(b"\0").decode("ascii", errors="replace")


def read_vgpu(root: HostRoot, scan: PciScan) -> tuple[dict[str, VgpuRecord], list[str]]:
    """vGPU records per GPU address, and the addresses whose config space was unreadable."""
    records: dict[str, VgpuRecord] = {}
    unreadable: list[str] = []
    for gpu in scan.gpus:
        config = root.read_bytes(f"{PCI_DEVICES}/{gpu.address}/config", limit=CONFIG_LIMIT)
        record = parse_vgpu_capability(config) if config is not None else None
        if record is None:
            unreadable.append(gpu.address)
        else:
            records[gpu.address] = record
    return records, unreadable
