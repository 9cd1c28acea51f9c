"""Facts into `nvidia.com/` labels, value by value as GPU Feature Discovery writes them.

Where GFD is nondeterministic or fails the whole pass, the rule here is deterministic
and costs only the labels concerned; the catalogue in `__init__` records each deviation.
Values are formatted as GFD formats them; validity (length, edges) is left to the
central rules in nodefeatures/discovery/labels.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Features

from . import mig as migs
from . import sharing
from .discover import Gpu, gpus_of, mig_devices_of
from .pci import COMPUTE_CLASS, VGA_CLASS

PREFIX = "nvidia.com/"
MIB = 1 << 20
_NOT_IN_GFD_NAMES = re.compile(r"[^A-Za-z0-9\-_. ]")


def gfd_name(*parts: str) -> str:
    """GFD's product/machine form: each part loses characters outside `[A-Za-z0-9-_. ]`,
    whitespace runs become `-`, and the non-empty parts are joined with `-`.

    `NVIDIA TITAN X (Pascal)` -> `NVIDIA-TITAN-X-Pascal`, the value GFD publishes, so
    selectors written for GFD keep matching.
    """
    cleaned = ["-".join(_NOT_IN_GFD_NAMES.sub("", part).split()) for part in parts]
    return "-".join(part for part in cleaned if part)


def dropped_characters(raw: str) -> str:
    """The characters gfd_name removes from `raw` (for the warning that says so)."""
    return "".join(sorted(set(_NOT_IN_GFD_NAMES.findall(raw))))


def family(major: int, minor: int) -> str:
    """GFD's architecture family, from the CUDA compute capability only."""
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    return {1: "tesla", 2: "fermi", 3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper",
            10: "blackwell", 12: "blackwell", 13: "rubin"}.get(major, "undefined")


def driver_parts(version: str) -> list[str] | None:
    """major, minor and revision (maybe "") of a driver version; None when it has not
    two or three dot-separated parts."""
    parts = version.split(".")
    if len(parts) not in (2, 3):
        return None
    return parts + [""] * (3 - len(parts))


def cuda_parts(version: int) -> tuple[int, int]:
    return version // 1000, version % 1000 // 10


class Model(NamedTuple):
    """The GPUs of one NVML name."""

    name: str
    gpus: tuple[Gpu, ...]


def models(gpus: list[Gpu]) -> list[Model]:
    """Models by count, most common first, ties in name order: the first describes
    the node in `gpu.product` and its siblings."""
    grouped: dict[str, list[Gpu]] = {}
    for gpu in gpus:
        grouped.setdefault(gpu.name, []).append(gpu)
    ordered = sorted(grouped.items(), key=lambda item: (-len(item[1]), item[0]))
    return [Model(name, tuple(members)) for name, members in ordered]


def _indices(gpus: list[Gpu] | tuple[Gpu, ...]) -> str:
    return ",".join(str(g.index) for g in gpus)


class _Builder:
    """Labels in GFD's merge order: a later label replaces an earlier one of the same key."""

    def __init__(self) -> None:
        self.labels: dict[str, Label] = {}

    def add(self, suffix: str, value: Any, origin: str) -> None:
        key = PREFIX + suffix
        self.labels[key] = Label(key, str(value), origin)


def build(features: Features, options: Mapping[str, Any]) -> list[Label]:
    """Every nvidia.com label for these facts and options."""
    out = _Builder()
    node = features.attributes.get("node", {})
    present = node.get("gpu.present")
    if present is None:
        return []
    out.add("gpu.present", "true", present.origin)
    _platform(out, features)
    stamp = node.get("timestamp")
    if stamp is not None:
        out.add("gfd.timestamp", stamp.value, stamp.origin)
    _vgpu(out, features)
    gpus = gpus_of(features)
    if not gpus:
        return list(out.labels.values())
    healthy = [g for g in gpus if g.healthy]
    _health(out, gpus, healthy)
    _versions(out, features)
    if healthy:
        _devices(out, features, options, healthy)
    return list(out.labels.values())


def _platform(out: _Builder, features: Features) -> None:
    platform = features.attributes.get("node", {}).get("platform")
    if platform is not None:
        out.add("gpu.platform", platform.value, platform.origin)
    tegra = features.attributes.get("tegra", {})
    for name in ("chip", "release"):
        if name in tegra:
            out.add(f"tegra.{name}", tegra[name].value, tegra[name].origin)
    machine = tegra.get("machine")
    if machine is not None and gfd_name(machine.value):
        out.add("tegra.machine", gfd_name(machine.value), machine.origin)


def _vgpu(out: _Builder, features: Features) -> None:
    vgpu = features.attributes.get("vgpu", {})
    for suffix in ("present", "host-driver-version", "host-driver-branch"):
        if suffix in vgpu:
            out.add(f"vgpu.{suffix}", vgpu[suffix].value, vgpu[suffix].origin)


def _health(out: _Builder, gpus: list[Gpu], healthy: list[Gpu]) -> None:
    out.add("gpu.healthy", len(healthy),
            f"NVML GPUs answering normally: {_indices(healthy) or 'none'}")
    sick = [g for g in gpus if not g.healthy]
    if sick:
        out.add("gpu.unhealthy", len(sick),
                "; ".join(f"NVML GPU {g.index}: {g.problem}" for g in sick))


def _versions(out: _Builder, features: Features) -> None:
    nvml = features.attributes.get("nvml", {})
    driver = nvml.get("driver")
    parts = driver_parts(driver.value) if driver else None
    if driver and parts:
        origin = driver.origin
        major, minor, revision = parts
        for old, new, value in (("major", "major", major), ("minor", "minor", minor),
                                ("rev", "revision", revision)):
            out.add(f"cuda.driver.{old}", value, origin)
            out.add(f"cuda.driver-version.{new}", value, origin)
        out.add("cuda.driver-version.full", driver.value, origin)
    cuda = nvml.get("cuda")
    if cuda:
        major, minor = cuda_parts(int(cuda.value))
        for name, value in (("major", major), ("minor", minor)):
            out.add(f"cuda.runtime.{name}", value, cuda.origin)
            out.add(f"cuda.runtime-version.{name}", value, cuda.origin)
        out.add("cuda.runtime-version.full", f"{major}.{minor}", cuda.origin)


def _devices(out: _Builder, features: Features, options: Mapping[str, Any],
             healthy: list[Gpu]) -> None:
    node = features.attributes.get("node", {})
    machine = node.get("machine")
    if machine is not None:
        out.add("gpu.machine", gfd_name(machine.value) or "unknown", machine.origin)
    _mig_capable(out, healthy)
    enabled = [g for g in healthy if g.mig == "enabled"]
    mps = sharing.strategy(options) == "mps"
    if not mps:
        why = "sources.nvidia.sharing.mps replicates nothing"
    elif enabled:
        why = f"MPS sharing configured, but MIG is enabled on GPU {_indices(enabled)}"
    else:
        why = "MPS sharing configured and no GPU has MIG enabled"
    out.add("mps.capable", str(mps and not enabled).lower(), why)
    ranked = models(healthy)
    _full_gpu(out, ranked, options)
    for model in ranked:
        product = gfd_name(model.name)
        out.add(f"gpu.count.{product}", len(model.gpus),
                f"nvmlDeviceGetName={model.name!r} on NVML GPUs {_indices(model.gpus)}")
        _model_facts(out, f".{product}", _answering(model))
    _mig_aware_counts(out, healthy)
    _mode(out, features, healthy)
    probes = features.attributes.get("nvml", {})
    if _probe_ok(probes, "fabric"):
        _clique(out, healthy)
    strategy = options.get("migStrategy", "none")
    if strategy in ("single", "mixed") and _probe_ok(probes, "mig"):
        devices = mig_devices_of(features)
        if strategy == "single":
            _single(out, healthy, devices, options)
        else:
            _mixed(out, devices, options)
    elif strategy == "single" and any(g.mig == "enabled" for g in healthy):
        # these would describe MIG devices that could not be read: better none than the
        # full GPU's values, so the previous ones stay until the probe works again
        for suffix in _SINGLE_OVERRIDES:
            out.labels.pop(PREFIX + suffix, None)


_SINGLE_OVERRIDES = ("gpu.count", "gpu.replicas", "gpu.sharing-strategy", "gpu.product",
                     "gpu.memory")


def _probe_ok(probes: Mapping[str, Any], name: str) -> bool:
    fact = probes.get(f"probe.{name}")
    return fact is not None and fact.value == "ok"


def _mig_capable(out: _Builder, healthy: list[Gpu]) -> None:
    known = [g for g in healthy if g.mig != "unknown"]
    capable = [g for g in known if g.mig in ("enabled", "disabled")]
    if capable:
        out.add("mig.capable", "true", f"nvmlDeviceGetMigMode succeeds on NVML GPU "
                                       f"{_indices(capable)}")
    elif len(known) == len(healthy):
        out.add("mig.capable", "false", "nvmlDeviceGetMigMode is not supported on any GPU")


def _full_gpu(out: _Builder, ranked: list[Model], options: Mapping[str, Any]) -> None:
    model = ranked[0]
    full = [g for g in model.gpus if g.mig != "enabled"]
    # GFD labels MIG-enabled GPUs as unshared full GPUs; full GPUs of the same model,
    # labelled after them, take over replicas and product.
    share = sharing.lookup(options, sharing.GPU_RESOURCE) if full else sharing.DISABLED
    # GFD describes the model by its last GPU (a full one when there is one). A GPU that
    # failed a query says nothing about the model, so the last one that answered speaks.
    preferred = full or list(model.gpus)
    pool = [g for g in model.gpus if g not in preferred] + preferred
    where = f"NVML GPUs {_indices(model.gpus)}"
    if len(ranked) > 1:
        others = ", ".join(f"{len(m.gpus)} x {m.name!r}" for m in ranked[1:])
        where += f" (most common model; also {others})"
    out.add("gpu.count", len(model.gpus), f"nvmlDeviceGetName={model.name!r} on {where}")
    out.add("gpu.replicas", share.replicas, _sharing_origin(share))
    out.add("gpu.sharing-strategy", share.strategy, _sharing_origin(share))
    product = gfd_name(model.name, share.suffix())
    if product:
        out.add("gpu.product", product, f"nvmlDeviceGetName={model.name!r} on {where}")
    _model_facts(out, "", pool)


def _answering(model: Model) -> list[Gpu]:
    """The model's GPUs, the one that speaks for it last (full GPUs after MIG-enabled
    ones, as for the node's own labels)."""
    full = [g for g in model.gpus if g.mig != "enabled"]
    return [g for g in model.gpus if g not in full] + full


def _model_facts(out: _Builder, suffix: str, pool: list[Gpu]) -> None:
    """Memory, family and compute capability of a model from the last GPU of `pool` that
    answered each: gpu.memory etc. for the node's model (suffix ""), gpu.memory.<PRODUCT>
    etc. for each model."""
    memory = next(((g.memory_bytes, g.index) for g in reversed(pool)
                   if g.memory_bytes is not None), None)
    if memory and memory[0]:
        out.add(f"gpu.memory{suffix}", memory[0] // MIB,
                f"nvmlDeviceGetMemoryInfo.total={memory[0]} B on NVML GPU {memory[1]}")
    compute = next(((g.compute, g.index) for g in reversed(pool) if g.compute is not None),
                   None)
    if compute and compute[0][0] != 0:
        (major, minor), index = compute
        origin = f"nvmlDeviceGetCudaComputeCapability={major}.{minor} on NVML GPU {index}"
        out.add(f"gpu.family{suffix}", family(major, minor), origin)
        out.add(f"gpu.compute.major{suffix}", major, origin)
        out.add(f"gpu.compute.minor{suffix}", minor, origin)


def _mig_aware_counts(out: _Builder, healthy: list[Gpu]) -> None:
    """Healthy GPUs whose current MIG mode is enabled, and the rest: gpu.count counts
    both alike, as GFD does."""
    if any(g.mig == "unknown" for g in healthy):
        return  # a GPU whose MIG mode did not answer could be either
    partitioned = [g for g in healthy if g.mig == "enabled"]
    whole = [g for g in healthy if g.mig != "enabled"]
    out.add("gpu.whole-count", len(whole),
            f"NVML GPUs with MIG disabled or unsupported: {_indices(whole) or 'none'}")
    out.add("gpu.mig-partitioned-count", len(partitioned),
            f"NVML GPUs whose current MIG mode is enabled: {_indices(partitioned) or 'none'}")


def _sharing_origin(share: sharing.Sharing) -> str:
    if share is sharing.DISABLED:
        return "MIG is enabled: the full GPU is not shared"
    if share.shared:
        return f"sources.nvidia.sharing: {share.replicas} replicas ({share.strategy})"
    return "sources.nvidia.sharing: not shared"


def _mode(out: _Builder, features: Features, healthy: list[Gpu]) -> None:
    classes = {i.attributes["address"]: i.attributes["class"]
               for i in features.instances.get("pci", [])}
    found = [classes.get(g.bus_id) for g in healthy]
    values = {int(c, 16) for c in found if c}
    if None in found or len(values) != 1:
        mode = "unknown"
    else:
        mode = {VGA_CLASS: "graphics", COMPUTE_CLASS: "compute"}.get(values.pop(), "unknown")
    origin = ", ".join(f"/sys/bus/pci/devices/{g.bus_id or '?'}/class="
                       f"{classes.get(g.bus_id) or 'unknown'}" for g in healthy)
    out.add("gpu.mode", mode, origin)


def clique_of(healthy: list[Gpu]) -> tuple[str | None, list[str]]:
    """The one clique all fabric-attached GPUs share, and the distinct cliques seen."""
    cliques = sorted({g.clique for g in healthy if g.clique})
    return (cliques[0] if len(cliques) == 1 else None), cliques


def _clique(out: _Builder, healthy: list[Gpu]) -> None:
    clique, _ = clique_of(healthy)
    if clique:
        attached = [g for g in healthy if g.clique]
        out.add("gpu.clique", clique,
                f"nvmlDeviceGetGpuFabricInfo clusterUuid.cliqueId on NVML GPU "
                f"{_indices(attached)}")


def _mig_resource(out: _Builder, resource: str, devices: list[migs.MigDevice],
                  options: Mapping[str, Any]) -> None:
    first = devices[0]
    share = sharing.lookup(options, PREFIX + resource)
    origin = (f"nvmlDeviceGetAttributes on MIG device {first.index} of NVML GPU {first.gpu} "
              f"(profile {first.profile})")
    on = sorted({d.gpu for d in devices})
    out.add(f"{resource}.count", len(devices),
            f"MIG devices of profile {first.profile} on NVML GPU {','.join(map(str, on))}")
    out.add(f"{resource}.replicas", share.replicas, _sharing_origin(share))
    out.add(f"{resource}.sharing-strategy", share.strategy, _sharing_origin(share))
    out.add(f"{resource}.product", gfd_name(first.parent, "MIG", first.profile, share.suffix()),
            origin)
    for suffix, value in first.attributes:
        out.add(f"{resource}.{suffix}", value, origin)


def resource_labels(resource: str, devices: list[migs.MigDevice],
                    options: Mapping[str, Any]) -> dict[str, str]:
    """The labels of one MIG resource (`gpu` or `mig-<profile>`), as GFD's MIG labeler."""
    out = _Builder()
    _mig_resource(out, resource, devices, options)
    return {key: label.value for key, label in out.labels.items()}


def single_problem(healthy: list[Gpu], devices: list[migs.MigDevice]) -> str | None:
    enabled = [g.index for g in healthy if g.mig == "enabled"]
    if not enabled:
        return None
    full = [g.index for g in healthy if g.mig != "enabled"]
    return migs.single_strategy_problem(enabled, full, devices)


def _single(out: _Builder, healthy: list[Gpu], devices: list[migs.MigDevice],
            options: Mapping[str, Any]) -> None:
    out.add("mig.strategy", "single", "sources.nvidia.migStrategy")
    enabled = [g for g in healthy if g.mig == "enabled"]
    if not enabled:
        return
    problem = single_problem(healthy, devices)
    if problem is None:
        _mig_resource(out, "gpu", devices, options)
        return
    origin = f"single MIG strategy does not fit: {problem}"
    out.add("gpu.product", gfd_name(enabled[0].name, "MIG", "INVALID"), origin)
    out.add("gpu.count", 0, origin)
    out.add("gpu.replicas", 0, origin)
    out.add("gpu.sharing-strategy", "", origin)
    out.add("gpu.memory", 0, origin)


def _mixed(out: _Builder, devices: list[migs.MigDevice], options: Mapping[str, Any]) -> None:
    out.add("mig.strategy", "mixed", "sources.nvidia.migStrategy")
    for profile, group in migs.group_by_profile(devices).items():
        _mig_resource(out, f"mig-{profile}", group, options)
