"""Raw GPU facts from NVML (pci.py has those of the PCI bus).

Everything here records what the node says; labels.py decides what to publish. The NVML
queries run on the worker thread (nvml.py), grouped so that one probe that fails or
hangs (MIG, fabric, virtualization) costs only its own labels.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from nodefeatures.discovery.source import Features

from . import mig as migs
from .nvml import (
    FUNCTION_NOT_FOUND,
    INVALID_ARGUMENT,
    LOST,
    NOT_FOUND,
    UNSUPPORTED,
    code_of,
    describe,
)
from .pci import sysfs_bus_id
from .structs import FABRIC_STATE_COMPLETED, uuid_text

# GFD skips these NVML devices everywhere: the display GPU of DGX Stations.
DISPLAY_NAMES = frozenset({"DGX Display", "NVIDIA DGX Display"})
# More GPUs than any node holds (DGX-2 and HGX-2 have 16, the largest PCIe servers 20):
# a count above it is garbage, and probing it device by device would never end.
MAX_GPUS = 64


class Gpu:
    """One NVML device (display devices excluded) and what NVML said about it."""

    __slots__ = ("bus_id", "clique", "compute", "failed", "index", "memory_bytes", "mig",
                 "name", "problem", "virtualization")

    def __init__(self, index: int, name: str = "", problem: str = "",
                 memory_bytes: int | None = None, compute: tuple[int, int] | None = None,
                 bus_id: str = "", mig: str = "unknown", clique: str = "",
                 virtualization: int | None = None, failed: frozenset[str] = frozenset(),
                 ) -> None:
        self.index = index
        self.name = name
        self.problem = problem  # why NVML cannot use this GPU now; "" when healthy
        self.memory_bytes = memory_bytes
        self.compute = compute
        self.bus_id = bus_id  # sysfs form
        self.mig = mig  # enabled, disabled, unsupported or unknown
        self.clique = clique  # "<cluster uuid>.<clique id>" when on an NVLink fabric
        self.virtualization = virtualization
        # queries that failed with an error other than "not supported" or "lost": their
        # answer is unknown this pass, not absent (a NOT_SUPPORTED memory is absent)
        self.failed = failed

    def __repr__(self) -> str:
        return f"Gpu({self.to_attributes()})"

    @property
    def healthy(self) -> bool:
        return not self.problem

    def to_attributes(self) -> dict[str, str]:
        return {
            "index": str(self.index),
            "name": self.name,
            "health": self.problem or "ok",
            "memory.bytes": "" if self.memory_bytes is None else str(self.memory_bytes),
            "compute": "" if self.compute is None else f"{self.compute[0]}.{self.compute[1]}",
            "bus": self.bus_id,
            "mig": self.mig,
            "clique": self.clique,
            "virtualization": "" if self.virtualization is None else str(self.virtualization),
            "failed": ",".join(sorted(self.failed)),
        }

    @classmethod
    def from_attributes(cls, attributes: dict[str, str]) -> Gpu:
        compute = attributes.get("compute", "")
        major, _, minor = compute.partition(".")
        memory = attributes.get("memory.bytes", "")
        virtualization = attributes.get("virtualization", "")
        health = attributes.get("health", "ok")
        return cls(
            index=int(attributes["index"]),
            name=attributes.get("name", ""),
            problem="" if health == "ok" else health,
            memory_bytes=int(memory) if memory else None,
            compute=(int(major), int(minor)) if compute else None,
            bus_id=attributes.get("bus", ""),
            mig=attributes.get("mig", "unknown"),
            clique=attributes.get("clique", ""),
            virtualization=int(virtualization) if virtualization else None,
            failed=frozenset(f for f in attributes.get("failed", "").split(",") if f),
        )


class Snapshot:
    """Everything one pass learned from NVML."""

    def __init__(self) -> None:
        self.driver: str | None = None
        self.cuda: int | None = None
        self.gpus: list[Gpu] = []
        self.mig_devices: list[migs.MigDevice] = []
        # Each optional probe: "ok", "skipped" or why it failed (its labels are omitted).
        self.probes: dict[str, str] = {}
        self.warnings: list[str] = []


class _GpuLost(Exception):
    """A probe found the GPU lost; the rest of its probes are skipped."""


_UNSUPPORTED = object()  # the answer of a probe the GPU does not support


class ProbeFailed(Exception):
    """A probe found something it cannot make sense of."""


class Probe:
    """The NVML queries of one pass, NVML already initialised; each public method runs as
    one job on the worker thread."""

    def __init__(self, nv: ModuleType, profiles: dict[tuple, dict[int, int]] | None = None,
                 ) -> None:
        self.nv = nv
        self.snapshot = Snapshot()
        self.handles: dict[int, Any] = {}
        # profile id -> profile index tables, which depend only on the GPU model and the
        # driver: kept across passes by the caller, so a MIG node pays for them once
        self.profiles = profiles if profiles is not None else {}
        # an integrated (Tegra) GPU answers NOT_SUPPORTED to much of NVML by design:
        # that costs the labels, not a warning every pass
        self.partial = False

    # -- jobs --------------------------------------------------------------------------

    def devices(self) -> int:
        """The system facts and each GPU's core facts; returns NVML's device count."""
        nv = self.nv
        snapshot = self.snapshot
        snapshot.driver = self._system("nvmlSystemGetDriverVersion", nv.nvmlSystemGetDriverVersion)
        cuda = self._system("nvmlSystemGetCudaDriverVersion", nv.nvmlSystemGetCudaDriverVersion)
        snapshot.cuda = cuda if isinstance(cuda, int) else None
        count = int(nv.nvmlDeviceGetCount())
        if not 0 <= count <= MAX_GPUS:
            raise ProbeFailed(f"NVML reports {count} GPUs, more than {MAX_GPUS}, the most a node "
                              "holds; the count is not used")
        for index in range(count):
            gpu = self._core(index)
            if gpu is not None:
                snapshot.gpus.append(gpu)
        return count

    def mig(self) -> None:
        """MIG devices of every GPU whose current MIG mode is enabled."""
        for gpu in self.snapshot.gpus:
            if gpu.healthy and gpu.mig == "enabled":
                try:
                    self.snapshot.mig_devices += self._mig_devices(gpu)
                except Exception as exc:
                    self._lost(gpu, "MIG devices", exc)
                    raise ProbeFailed(f"MIG devices of GPU {gpu.index}: {describe(exc)}") from exc

    def fabric(self) -> None:
        """NVLink fabric (IMEX clique) membership of every GPU."""
        for gpu in self._healthy():
            try:
                info = self._fabric_info(self.handles[gpu.index])
            except Exception as exc:
                if code_of(exc) in UNSUPPORTED:
                    continue
                self._lost(gpu, "fabric", exc)
                raise ProbeFailed(f"fabric of GPU {gpu.index}: {describe(exc)}") from exc
            cluster = bytes(info.clusterUuid)
            if info.state == FABRIC_STATE_COMPLETED and info.status == 0 and any(cluster):
                gpu.clique = f"{uuid_text(cluster)}.{int(info.cliqueId)}"

    def virtualization(self) -> None:
        """Virtualization mode of every GPU (vGPU guest or not)."""
        for gpu in self._healthy():
            try:
                gpu.virtualization = int(
                    self.nv.nvmlDeviceGetVirtualizationMode(self.handles[gpu.index]))
            except Exception as exc:
                if code_of(exc) in UNSUPPORTED:
                    continue
                self._lost(gpu, "virtualization mode", exc)
                raise ProbeFailed(f"virtualization mode of GPU {gpu.index}: "
                                  f"{describe(exc)}") from exc

    # -- helpers -------------------------------------------------------------------------

    def _healthy(self) -> list[Gpu]:
        return [g for g in self.snapshot.gpus if g.healthy and g.index in self.handles]

    def _system(self, call: str, function: Callable[[], Any]) -> Any:
        try:
            return function()
        except Exception as exc:
            self.snapshot.warnings.append(f"{call} failed: {describe(exc)}")
            return None

    def _lost(self, gpu: Gpu, what: str, exc: BaseException) -> bool:
        """Mark the GPU unhealthy when the error says it is gone; True if it was."""
        if code_of(exc) in LOST:
            gpu.problem = f"{what}: {describe(exc)}"
            self.handles.pop(gpu.index, None)
            return True
        return False

    def _core(self, index: int) -> Gpu | None:
        nv = self.nv
        gpu = Gpu(index)
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            gpu.problem = f"handle: {describe(exc)}"
            return gpu
        try:
            gpu.name = nv.nvmlDeviceGetName(handle)
        except Exception as exc:
            gpu.problem = f"name: {describe(exc)}"
            return gpu
        if gpu.name in DISPLAY_NAMES:
            return None
        self.handles[index] = handle
        try:
            memory = self._ask(gpu, "memory", "nvmlDeviceGetMemoryInfo", handle)
            if memory is not None:
                gpu.memory_bytes = int(memory.total)
            compute = self._ask(gpu, "compute capability",
                                "nvmlDeviceGetCudaComputeCapability", handle)
            if compute is not None:
                gpu.compute = (int(compute[0]), int(compute[1]))
            pci = self._ask(gpu, "PCI info", "nvmlDeviceGetPciInfo", handle)
            if pci is not None:
                gpu.bus_id = sysfs_bus_id(pci.busId)
            mig = self._ask(gpu, "MIG mode", "nvmlDeviceGetMigMode", handle, unsupported=True)
        except _GpuLost:
            return gpu
        if mig is _UNSUPPORTED:
            gpu.mig = "unsupported"
        elif mig is not None:
            gpu.mig = "enabled" if mig[0] == 1 else "disabled"
        return gpu

    def _ask(self, gpu: Gpu, what: str, call: str, *args: Any,
             unsupported: bool = False) -> Any:
        """One probe of a GPU: its answer, or None with a warning when the probe failed.

        Raises _GpuLost when the error says the GPU is gone, which ends its probing.
        """
        try:
            return getattr(self.nv, call)(*args)
        except Exception as exc:
            if unsupported and code_of(exc) in UNSUPPORTED:
                return _UNSUPPORTED
            if self._lost(gpu, what, exc):
                raise _GpuLost from exc
            if code_of(exc) not in UNSUPPORTED:
                gpu.failed |= {what}
            elif self.partial:
                return None
            self.snapshot.warnings.append(f"GPU {gpu.index}: {call} failed: {describe(exc)}")
            return None

    def _mig_devices(self, gpu: Gpu) -> list[migs.MigDevice]:
        nv = self.nv
        handle = self.handles[gpu.index]
        if not gpu.memory_bytes:
            raise ProbeFailed("the GPU's memory size, which MIG names need, is unknown")
        found: list[migs.MigDevice] = []
        instances: dict[int, tuple[Any, int]] = {}
        # the tables depend on the GPU model and the driver; asking each GPU once keeps a
        # capture a record of every GPU
        model = (gpu.index, gpu.bus_id, gpu.name, gpu.memory_bytes, self.snapshot.driver)
        for position in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                device = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, position)
            except Exception as exc:
                if code_of(exc) in (NOT_FOUND, INVALID_ARGUMENT):
                    continue  # an empty slot
                raise
            if not nv.nvmlDeviceIsMigDeviceHandle(device).value:
                raise ProbeFailed(f"MIG slot {position} is not a MIG device handle")
            attributes = nv.nvmlDeviceGetAttributes(device)
            gi_id = nv.nvmlDeviceGetGpuInstanceId(device)
            ci_id = nv.nvmlDeviceGetComputeInstanceId(device)
            if gi_id not in instances:
                instance = nv.nvmlDeviceGetGpuInstanceById(handle, gi_id)
                instances[gi_id] = (instance, nv.nvmlGpuInstanceGetInfo(instance).profileId)
            instance, gi_profile_id = instances[gi_id]
            compute = nv.nvmlGpuInstanceGetComputeInstanceById(instance, ci_id)
            ci_profile_id = nv.nvmlComputeInstanceGetInfo(compute).profileId
            gi_indices = self._profile_indices(
                (*model, "gi"), migs.GI_PROFILE_COUNT,
                lambda i: nv.nvmlDeviceGetGpuInstanceProfileInfo(handle, i, version=1))
            ci_indices = self._profile_indices(
                (*model, "ci", gi_profile_id), migs.CI_PROFILE_COUNT,
                lambda j, gi=instance: nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi, j, 0, version=1))
            gi_index = gi_indices.get(gi_profile_id)
            ci_index = ci_indices.get(ci_profile_id)
            if gi_index is None or ci_index is None:
                raise ProbeFailed(f"MIG slot {position}: no profile matches GPU instance "
                                  f"profile {gi_profile_id} / compute instance profile "
                                  f"{ci_profile_id}")
            try:
                profile = migs.profile_name(gi_index, ci_index, int(attributes.memorySizeMB),
                                            gpu.memory_bytes)
            except ValueError as exc:
                raise ProbeFailed(f"MIG slot {position}: {exc}") from exc
            values = tuple((label, int(getattr(attributes, name)))
                           for label, name in migs.ATTRIBUTES.items())
            found.append(migs.MigDevice(gpu.index, position, gpu.name, profile, values))
        return found

    def _profile_indices(self, key: tuple, count: int,
                         info: Callable[[int], Any]) -> dict[int, int]:
        """Profile id -> profile index, for the indices this GPU supports."""
        if key in self.profiles:
            return self.profiles[key]
        indices: dict[int, int] = {}
        for index in range(count):
            try:
                profile = info(index)
            except Exception as exc:
                if code_of(exc) in (*UNSUPPORTED, INVALID_ARGUMENT):
                    continue
                raise
            indices.setdefault(int(profile.id), index)
        self.profiles[key] = indices
        return indices

    def _fabric_info(self, handle: Any) -> Any:
        """GFD's order: the v1 call where the driver has it, else the versioned one.

        The structs are ours, laid out as the C header has them: nvidia-ml-py 12.x
        declares the v1 cluster UUID as an 80-byte string, which would misplace every
        field after it, and lacks the versioned wrapper altogether.
        """
        import ctypes

        from .structs import FABRIC_INFO_V2, FabricInfo, FabricInfoV2

        nv = self.nv
        try:
            info: Any = FabricInfo()
            nv.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))
        except Exception as exc:
            versioned = getattr(nv, "nvmlDeviceGetGpuFabricInfoV", None)
            if code_of(exc) != FUNCTION_NOT_FOUND or versioned is None:
                raise
            info = FabricInfoV2(version=FABRIC_INFO_V2)
            versioned(handle, ctypes.byref(info))
        return info


# -- facts into Features ------------------------------------------------------------------


def add_gpus(features: Features, gpus: list[Gpu]) -> None:
    for gpu in gpus:
        where = f" ({gpu.bus_id})" if gpu.bus_id else ""
        features.instance("gpu", gpu.to_attributes(), f"NVML GPU {gpu.index}{where}")


def add_mig_devices(features: Features, devices: list[migs.MigDevice]) -> None:
    for device in devices:
        attributes = {"gpu": str(device.gpu), "index": str(device.index),
                      "parent": device.parent, "profile": device.profile}
        attributes.update({k: str(v) for k, v in device.attributes})
        features.instance("mig", attributes,
                          f"NVML GPU {device.gpu} MIG device {device.index}")


def mig_devices_of(features: Features) -> list[migs.MigDevice]:
    devices = []
    labels = tuple(migs.ATTRIBUTES)
    for instance in features.instances.get("mig", []):
        a = instance.attributes
        values = tuple(zip(labels, map(int, (a.get(label) or "0" for label in labels)),
                           strict=True))
        devices.append(migs.MigDevice(int(a["gpu"]), int(a["index"]), a.get("parent", ""),
                                      a["profile"], values))
    return devices


def gpus_of(features: Features) -> list[Gpu]:
    return [Gpu.from_attributes(dict(i.attributes)) for i in features.instances.get("gpu", [])]
