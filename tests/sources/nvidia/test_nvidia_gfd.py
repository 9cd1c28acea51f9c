"""GFD's own test expectations (reference §10), label rules (§3, §4, §5) and deviations.

The GFD doubles are rebuilt as facts: FullGPU (MOCKMODEL, CC 8.0, 300 MiB, no MIG),
MigEnabledDevice (CC 0.0, MIG enabled), NewMigDevice(g, c, gb) and a manager with driver
400.300 and CUDA 8.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from nodefeatures.discovery.source import Features
from nodefeatures.discovery.text import excerpt
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia import labels as gfd
from nodefeatures.sources.nvidia.discover import Gpu, add_gpus, add_mig_devices
from nodefeatures.sources.nvidia.mig import (
    ATTRIBUTES,
    GI_PROFILES,
    MigDevice,
    memory_gb,
    profile_name,
)
from nodefeatures.sources.nvidia.pci import VgpuRecord, parse_vgpu_capability

MIB = 1 << 20
GIB = 1 << 30
F = {"gpu.compute.major": "8", "gpu.compute.minor": "0", "gpu.family": "ampere"}
A0 = {"multiprocessors": "0", "engines.copy": "0", "engines.decoder": "0",
      "engines.encoder": "0", "engines.jpeg": "0", "engines.ofa": "0"}


def full_gpu(index: int = 0, bus: str = "") -> Gpu:
    return Gpu(index, "MOCKMODEL", memory_bytes=300 * MIB, compute=(8, 0), mig="unsupported",
               bus_id=bus)


def mig_enabled(index: int = 0) -> Gpu:
    return Gpu(index, "MOCKMODEL", memory_bytes=300 * MIB, compute=(0, 0), mig="enabled")


def mig_device(gpu: int, index: int, g: int, c: int, gb: int, **overrides: int) -> MigDevice:
    values = {"memory": gb, "multiprocessors": 0, "slices.gi": g, "slices.ci": c,
              "engines.copy": 0, "engines.decoder": 0, "engines.encoder": 0,
              "engines.jpeg": 0, "engines.ofa": 0}
    values.update({k.replace("_", "."): v for k, v in overrides.items()})
    return MigDevice(gpu, index, "MOCKMODEL", f"{g}g.{gb}gb",
                     tuple((name, values[name]) for name in ATTRIBUTES))


def node(gpus: list[Gpu], devices: list[MigDevice] = (), machine: str | None = None,
         classes: Mapping[str, int] | None = None, vgpu: VgpuRecord | None = None,
         probes: Mapping[str, str] | None = None) -> Features:
    features = Features()
    features.attribute("node", "gpu.present", "true", "test")
    features.attribute("nvml", "driver", "400.300", "test")
    features.attribute("nvml", "cuda", "8000", "test")
    for name, status in (probes or {"mig": "ok", "fabric": "ok"}).items():
        features.attribute("nvml", f"probe.{name}", status, "test")
    if machine is not None:
        features.attribute("node", "machine", machine, "test")
    for address, code in (classes or {}).items():
        features.instance("pci", {"address": address, "class": f"0x{code:06x}"}, "test")
    if vgpu is not None:
        features.attribute("vgpu", "present", str(vgpu.vgpu).lower(), "test")
        if vgpu.version:
            features.attribute("vgpu", "host-driver-version", vgpu.version, "test")
            features.attribute("vgpu", "host-driver-branch", vgpu.branch, "test")
    add_gpus(features, gpus)
    add_mig_devices(features, list(devices))
    return features


def options(strategy: str = "none", ts: list | None = None, mps: list | None = None,
            rename: bool = False) -> dict[str, Any]:
    block = {"renameByDefault": rename, "failRequestsGreaterThanOne": False}
    return {"migStrategy": strategy,
            "sharing": {"timeSlicing": {**block, "resources": ts or []},
                        "mps": {**block, "resources": mps or []}}}


def gpu_labels(features: Features, opts: Mapping[str, Any]) -> dict[str, str]:
    """The labels of GFD's resource and MIG labelers (nvidia.com/gpu.* and mig-*)."""
    ours = {"gpu.present", "gpu.healthy", "gpu.mode", "gpu.machine", "gpu.whole-count",
            "gpu.mig-partitioned-count"}
    per_model = tuple(f"gpu.{name}." for name in ("count", "memory", "family",
                                                   "compute.major", "compute.minor"))
    labels = {label.key.removeprefix("nvidia.com/"): label.value
              for label in gfd.build(features, opts)}
    return {k: v for k, v in labels.items()
            if (k.startswith(("gpu.", "mig-", "mig.strategy")) and k not in ours
                and not k.startswith(per_model))}


def entry(name: str, replicas: int, rename: str = "") -> dict[str, Any]:
    return {"name": name, "replicas": replicas, **({"rename": rename} if rename else {})}


# -- 10.1 TestGPUResourceLabeler ---------------------------------------------------------

RESOURCE_CASES = {
    "none": (options(), "MOCKMODEL", "1", "none"),
    "ts-not-gpu": (options(ts=[entry("not-gpu", 2)]), "MOCKMODEL", "1", "none"),
    "ts-gpu": (options(ts=[entry("gpu", 2)]), "MOCKMODEL-SHARED", "2", "time-slicing"),
    "ts-gpu-renamed": (options(ts=[entry("gpu", 2, "gpu.shared")]), "MOCKMODEL", "2",
                       "time-slicing"),
    "ts-gpu-rename-by-default": (options(ts=[entry("gpu", 2)], rename=True), "MOCKMODEL",
                                 "2", "time-slicing"),
    "mps-not-gpu": (options(mps=[entry("not-gpu", 2)]), "MOCKMODEL", "1", "none"),
    "mps-gpu": (options(mps=[entry("gpu", 2)]), "MOCKMODEL-SHARED", "2", "mps"),
    "mps-gpu-renamed": (options(mps=[entry("gpu", 2, "gpu.shared")]), "MOCKMODEL", "2", "mps"),
}


@pytest.mark.parametrize("case", RESOURCE_CASES)
def test_gpu_resource_labeler(case: str) -> None:
    opts, product, replicas, strategy = RESOURCE_CASES[case]
    assert gpu_labels(node([full_gpu()]), opts) == {
        "gpu.count": "1", "gpu.memory": "300", **F, "gpu.product": product,
        "gpu.replicas": replicas, "gpu.sharing-strategy": strategy}


def test_gpu_resource_labeler_without_devices_is_empty() -> None:
    assert gpu_labels(node([]), options()) == {}


# -- 10.2 TestSanitise -------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    ("Tesla T4", "Tesla-T4"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB"),
    ("Mock NVIDIA A100-SXM4-40GB", "Mock-NVIDIA-A100-SXM4-40GB"),
    ("NVIDIA TITAN X (Pascal)", "NVIDIA-TITAN-X-Pascal"),
    ("NVIDIA H200 141GB HBM3e", "NVIDIA-H200-141GB-HBM3e"),
    ("some [ / thing / ]else", "some-thing-else"),
    ("some-thing.else_new", "some-thing.else_new"),
    ("  two   spaces\ttab ", "two-spacestab"),  # a tab is deleted, not a separator
    ("NVIDIA GeForce RTX 4090 Ti \u2013 \u00fc", "NVIDIA-GeForce-RTX-4090-Ti"),  # non-ASCII
])
def test_sanitise(raw: str, value: str) -> None:
    assert gfd.gfd_name(raw) == value


def test_product_parts_are_sanitised_and_joined() -> None:
    assert gfd.gfd_name("Tesla T4", "MIG", "1g.5gb", "") == "Tesla-T4-MIG-1g.5gb"
    assert gfd.gfd_name("(", "MIG", "INVALID") == "MIG-INVALID"
    assert gfd.dropped_characters("NVIDIA TITAN X (Pascal)") == "()"
    assert gfd.dropped_characters("Tesla T4") == ""


# -- 10.3 TestMigResourceLabeler ----------------------------------------------------------

MIG_RESOURCE_CASES = [
    ("gpu", options(), "MOCKMODEL-MIG-1g.300gb", "1", "none"),
    ("gpu", options(ts=[entry("gpu", 2)]), "MOCKMODEL-MIG-1g.300gb-SHARED", "2",
     "time-slicing"),
    ("gpu", options(ts=[entry("gpu", 2, "gpu.shared")]), "MOCKMODEL-MIG-1g.300gb", "2",
     "time-slicing"),
    ("mig-1g.1gb", options(ts=[entry("gpu", 2, "gpu.shared"), entry("mig-1g.1gb", 2)]),
     "MOCKMODEL-MIG-1g.300gb-SHARED", "2", "time-slicing"),
    ("mig-1g.1gb", options(ts=[entry("mig-1g.1gb", 2, "mig-1g.1gb.shared")]),
     "MOCKMODEL-MIG-1g.300gb", "2", "time-slicing"),
]


@pytest.mark.parametrize(("resource", "opts", "product", "replicas", "strategy"),
                         MIG_RESOURCE_CASES)
def test_mig_resource_labeler(resource: str, opts: dict, product: str, replicas: str,
                              strategy: str) -> None:
    labels = gfd.resource_labels(resource, [mig_device(0, 0, 1, 2, 300)], opts)
    prefix = f"nvidia.com/{resource}."
    assert labels == {prefix + k: v for k, v in {
        "count": "1", "replicas": replicas, "sharing-strategy": strategy, "memory": "300",
        "product": product, "slices.gi": "1", "slices.ci": "2", **A0}.items()}


# -- 10.4 TestMigStrategyNoneLabels ------------------------------------------------------

TS2 = options(ts=[entry("gpu", 2)])
FULL_TS = {**F, "gpu.replicas": "2", "gpu.sharing-strategy": "time-slicing",
           "gpu.product": "MOCKMODEL-SHARED", "gpu.memory": "300"}
MIG_NONE = {"gpu.replicas": "0", "gpu.sharing-strategy": "none", "gpu.memory": "300",
            "gpu.product": "MOCKMODEL"}
NONE_CASES = {
    "no devices": ([], options(), {}),
    "1 full": ([full_gpu()], options(), {**F, "gpu.count": "1", "gpu.replicas": "1",
                                         "gpu.sharing-strategy": "none", "gpu.memory": "300",
                                         "gpu.product": "MOCKMODEL"}),
    "1 full, ts": ([full_gpu()], TS2, {**FULL_TS, "gpu.count": "1"}),
    "2 full, ts": ([full_gpu(0), full_gpu(1)], TS2, {**FULL_TS, "gpu.count": "2"}),
    "1 mig, ts": ([mig_enabled()], TS2, {**MIG_NONE, "gpu.count": "1"}),
    "2 mig, ts": ([mig_enabled(0), mig_enabled(1)], TS2, {**MIG_NONE, "gpu.count": "2"}),
    "mig + full, ts": ([mig_enabled(0), full_gpu(1)], TS2, {**FULL_TS, "gpu.count": "2"}),
}


@pytest.mark.parametrize("case", NONE_CASES)
def test_mig_strategy_none_labels(case: str) -> None:
    gpus, opts, expected = NONE_CASES[case]
    assert gpu_labels(node(gpus), opts) == expected


# -- 10.5 TestMigStrategySingleLabels ----------------------------------------------------

INVALID = {"mig.strategy": "single", "gpu.product": "MOCKMODEL-MIG-INVALID", "gpu.count": "0",
           "gpu.replicas": "0", "gpu.sharing-strategy": "", "gpu.memory": "0"}
FULL_SINGLE = {**F, "mig.strategy": "single", "gpu.replicas": "1",
               "gpu.sharing-strategy": "none", "gpu.memory": "300", "gpu.product": "MOCKMODEL"}
SINGLE_CASES = {
    "no devices": ([], [], {}),
    "1 full": ([full_gpu()], [], {**FULL_SINGLE, "gpu.count": "1"}),
    "2 full": ([full_gpu(0), full_gpu(1)], [], {**FULL_SINGLE, "gpu.count": "2"}),
    "1 mig": ([mig_enabled()], [mig_device(0, 0, 1, 2, 100)], {
        "mig.strategy": "single", "gpu.count": "1", "gpu.replicas": "1",
        "gpu.sharing-strategy": "none", "gpu.memory": "100",
        "gpu.product": "MOCKMODEL-MIG-1g.100gb", "gpu.slices.gi": "1", "gpu.slices.ci": "2",
        **{f"gpu.{k}": v for k, v in A0.items()}}),
    "2 mig with attributes": (
        [mig_enabled(0), mig_enabled(1)],
        [mig_device(g, 0, 1, 2, 100, multiprocessors=12, engines_copy=13,
                    engines_decoder=14, engines_encoder=15, engines_jpeg=16, engines_ofa=17)
         for g in (0, 1)],
        {"mig.strategy": "single", "gpu.count": "2", "gpu.replicas": "1",
         "gpu.sharing-strategy": "none", "gpu.memory": "100",
         "gpu.product": "MOCKMODEL-MIG-1g.100gb", "gpu.multiprocessors": "12",
         "gpu.engines.copy": "13", "gpu.engines.decoder": "14", "gpu.engines.encoder": "15",
         "gpu.engines.jpeg": "16", "gpu.engines.ofa": "17", "gpu.slices.gi": "1",
         "gpu.slices.ci": "2"}),
    "mig without devices": ([mig_enabled()], [], INVALID),
    "mig with two profiles": ([mig_enabled()], [mig_device(0, 0, 1, 1, 100),
                                                mig_device(0, 1, 3, 3, 100)], INVALID),
    "mig + full": ([mig_enabled(0), full_gpu(1)], [mig_device(0, 0, 1, 1, 100)],
                   {**INVALID, **F}),
    "mig + full + empty mig": ([mig_enabled(0), full_gpu(1), mig_enabled(2)],
                               [mig_device(0, 0, 1, 1, 100)], {**INVALID, **F}),
}


@pytest.mark.parametrize("case", SINGLE_CASES)
def test_mig_strategy_single_labels(case: str) -> None:
    gpus, devices, expected = SINGLE_CASES[case]
    assert gpu_labels(node(gpus, devices), options("single")) == expected


# -- 10.6 nvml_test.go ----------------------------------------------------------------------

def capability(features: Features, opts: Mapping[str, Any] | None = None) -> dict[str, str]:
    keys = ("nvidia.com/mig.capable", "nvidia.com/mps.capable")
    return {k.removeprefix("nvidia.com/"): v for k, v in
            ((label.key, label.value) for label in gfd.build(features, opts or options()))
            if k in keys}


@pytest.mark.parametrize(("gpus", "capable"), [
    ([], None),
    ([full_gpu()], "false"),
    ([full_gpu(0), full_gpu(1)], "false"),
    ([mig_enabled()], "true"),
    ([full_gpu(0), mig_enabled(1)], "true"),
])
def test_mig_capability_labeler(gpus: list[Gpu], capable: str | None) -> None:
    assert capability(node(gpus)).get("mig.capable") == capable


def test_mig_capability_is_left_out_when_unknown() -> None:
    unknown = Gpu(0, "MOCKMODEL", mig="unknown")
    assert "mig.capable" not in capability(node([unknown]))
    assert capability(node([unknown, mig_enabled(1)]))["mig.capable"] == "true"


@pytest.mark.parametrize(("opts", "gpu", "capable"), [
    (options(), full_gpu(), "false"),
    (options(ts=[entry("gpu", 2)]), full_gpu(), "false"),
    (options(mps=[{"name": "gpu", "replicas": 1}]), full_gpu(), "false"),
    (options(mps=[entry("gpu", 2)]), full_gpu(), "true"),
    # GFD fails the whole pass here; we publish false and warn (see the catalogue)
    (options(mps=[entry("gpu", 2)]), mig_enabled(), "false"),
])
def test_sharing_labeler(opts: dict, gpu: Gpu, capable: str) -> None:
    assert capability(node([gpu]), opts)["mps.capable"] == capable


@pytest.mark.parametrize(("classes", "mode"), [
    ([0x030000], "graphics"),
    ([0x030200], "compute"),
    ([0x068000], "unknown"),
    ([0x030200] * 3, "compute"),
    ([0x030000] * 3, "graphics"),
    ([0x030000, 0x030200], "unknown"),
])
def test_gpu_mode_labeler(classes: list[int], mode: str) -> None:
    addresses = [f"0000:{k + 1:02x}:00.0" for k in range(len(classes))]
    gpus = [full_gpu(k, a) for k, a in enumerate(addresses)]
    features = node(gpus, classes=dict(zip(addresses, classes, strict=True)))
    labels = {label.key: label.value for label in gfd.build(features, options())}
    assert labels["nvidia.com/gpu.mode"] == mode


def test_gpu_mode_is_unknown_when_a_class_cannot_be_read() -> None:
    features = node([full_gpu(0, "0000:01:00.0"), full_gpu(1, "0000:02:00.0")],
                    classes={"0000:01:00.0": 0x030200})
    labels = {label.key: label.value for label in gfd.build(features, options())}
    assert labels["nvidia.com/gpu.mode"] == "unknown"


# -- 10.7 main_test.go: one full GPU, the vGPU mock, machine file "product-name" --------

def test_full_label_set_of_a_run() -> None:
    features = node([full_gpu()], machine="product-name",
                    vgpu=VgpuRecord(True, "460.16", "r460_00"))
    labels = {label.key.removeprefix("nvidia.com/"): label.value
              for label in gfd.build(features, options())}
    gfd_labels = {
        "cuda.driver.major": "400", "cuda.driver.minor": "300", "cuda.driver.rev": "",
        "cuda.driver-version.major": "400", "cuda.driver-version.minor": "300",
        "cuda.driver-version.revision": "", "cuda.driver-version.full": "400.300",
        "cuda.runtime.major": "8", "cuda.runtime.minor": "0",
        "cuda.runtime-version.major": "8", "cuda.runtime-version.minor": "0",
        "cuda.runtime-version.full": "8.0",
        "gpu.machine": "product-name", "gpu.count": "1", "gpu.replicas": "1",
        "gpu.sharing-strategy": "none", "gpu.product": "MOCKMODEL", "gpu.memory": "300", **F,
        "gpu.mode": "unknown", "mig.capable": "false", "mps.capable": "false",
        "vgpu.present": "true", "vgpu.host-driver-version": "460.16",
        "vgpu.host-driver-branch": "r460_00",
    }
    ours = {"gpu.present": "true", "gpu.healthy": "1", "gpu.count.MOCKMODEL": "1",
            "gpu.memory.MOCKMODEL": "300", "gpu.family.MOCKMODEL": "ampere",
            "gpu.compute.major.MOCKMODEL": "8", "gpu.compute.minor.MOCKMODEL": "0",
            "gpu.whole-count": "1", "gpu.mig-partitioned-count": "0"}
    assert labels == {**gfd_labels, **ours}


def test_timestamp_only_when_asked_and_constant_across_passes(tmp_path) -> None:
    from gpufixtures import replay, run, values

    source = NvidiaSource()
    assert "nvidia.com/gfd.timestamp" not in values(run(source, replay("seed-t4-ubuntu2204")))
    first = values(run(source, replay("seed-t4-ubuntu2204"), timestampLabel=True))
    second = values(run(source, replay("seed-t4-ubuntu2204"), timestampLabel=True))
    stamp = first["nvidia.com/gfd.timestamp"]
    assert len(stamp) == 10 and stamp.isdigit()
    assert second["nvidia.com/gfd.timestamp"] == stamp


# -- 10.8 mig_test.go ------------------------------------------------------------------------

def test_mig_strategy_none_ignores_mig_devices() -> None:
    devices = [mig_device(0, k, 3, 3, 20000) for k in range(2)]
    labels = gpu_labels(node([mig_enabled()], devices), options("none"))
    assert (labels["gpu.count"], labels["gpu.product"], labels["gpu.memory"]) == (
        "1", "MOCKMODEL", "300")


def test_mig_strategy_single_ignores_devices_of_a_gpu_with_mig_disabled() -> None:
    devices = [mig_device(0, k, 3, 3, 20) for k in range(2)]
    labels = gpu_labels(node([full_gpu()], devices), options("single"))
    assert (labels["mig.strategy"], labels["gpu.count"], labels["gpu.product"],
            labels["gpu.memory"]) == ("single", "1", "MOCKMODEL", "300")


def test_mig_strategy_single() -> None:
    devices = [mig_device(0, k, 3, 3, 20) for k in range(2)]
    labels = gpu_labels(node([mig_enabled()], devices), options("single"))
    assert (labels["mig.strategy"], labels["gpu.count"], labels["gpu.product"],
            labels["gpu.memory"]) == ("single", "2", "MOCKMODEL-MIG-3g.20gb", "20")


def test_mig_strategy_mixed() -> None:
    devices = [mig_device(0, 0, 3, 3, 20), mig_device(0, 1, 1, 1, 5)]
    labels = gpu_labels(node([mig_enabled()], devices), options("mixed"))
    assert (labels["mig.strategy"], labels["gpu.count"], labels["gpu.product"],
            labels["gpu.memory"]) == ("mixed", "1", "MOCKMODEL", "300")
    assert labels["mig-3g.20gb.count"] == "1" and labels["mig-1g.5gb.count"] == "1"


def test_failed_mig_probe_costs_only_mig_labels() -> None:
    devices = [mig_device(0, 0, 3, 3, 20)]
    failed = node([mig_enabled()], devices, probes={"mig": "GPU 0: NVML_ERROR_UNKNOWN",
                                                    "fabric": "ok"})
    labels = gpu_labels(failed, options("mixed"))
    assert "mig.strategy" not in labels and not any(k.startswith("mig-") for k in labels)
    assert labels["gpu.count"] == "1"


# -- 10.9 TestFailOnInitError: never an error here ------------------------------------------

def test_bogus_strategy_is_a_config_error_not_a_failed_pass() -> None:
    source = NvidiaSource()
    assert source.validate_options({**source.defaults, "migStrategy": "bogus"}) == [
        "migStrategy: must be one of none, single, mixed"]


# -- 10.10 vgpu_test.go ---------------------------------------------------------------------

def config_with_capability(capability: bytes, at: int = 0xD0) -> bytes:
    space = bytearray(256)
    space[0:2] = b"\xde\x10"
    space[0x06] = 0x10  # capability list present
    space[0x34] = 0x60
    space[0x60:0x62] = bytes([0x01, at])  # a power management capability first
    space[at:at + len(capability)] = capability
    return bytes(space)


def vgpu_capability(version: bytes, branch: bytes) -> bytes:
    record = bytes([0x00, 0x16]) + version.ljust(10, b"\0") + branch.ljust(10, b"\0")
    return bytes([0x09, 0x00, 5 + len(record)]) + b"VF" + record


def test_vgpu_capability_gives_host_driver() -> None:
    capability = vgpu_capability(b"460.16", b"r460_00")
    assert len(capability) == 27
    assert parse_vgpu_capability(config_with_capability(capability)) == VgpuRecord(
        True, "460.16", "r460_00")


def test_passthrough_capability_is_not_a_vgpu() -> None:
    capability = bytes([0x09, 0x00, 0x14, 0x01, 0x00]) + bytes(15)
    assert parse_vgpu_capability(config_with_capability(capability)) == VgpuRecord(False)


def test_unknown_records_are_skipped() -> None:
    capability = bytes([0x09, 0x00, 0x1E]) + b"VF" + bytes([0x01, 0x03, 0xFF]) \
        + bytes([0x00, 0x16]) + b"460.16".ljust(10, b"\0") + b"r460_00".ljust(10, b"\0")
    assert parse_vgpu_capability(config_with_capability(capability)) == VgpuRecord(
        True, "460.16", "r460_00")


@pytest.mark.parametrize("capability", [
    bytes([0x09, 0x00, 0x05]) + b"VF",  # no record
    bytes([0x09, 0x00, 0x06]) + b"VF" + bytes([0x01]),  # truncated header
    bytes([0x09, 0x00, 0x07]) + b"VF" + bytes([0x01, 0x00]),  # zero-length record
    bytes([0x09, 0x00, 0x07]) + b"VF" + bytes([0x00, 0x16]),  # driver record cut short
])
def test_malformed_records_still_say_vgpu_without_versions(capability: bytes) -> None:
    assert parse_vgpu_capability(config_with_capability(capability)) == VgpuRecord(True)


def test_short_or_listless_config_space() -> None:
    assert parse_vgpu_capability(bytes(64)) is None  # unprivileged read
    assert parse_vgpu_capability(bytes(256)) == VgpuRecord(False)  # no capability list
    looping = bytearray(config_with_capability(bytes([0x05, 0x60, 0x00]), at=0x70))
    looping[0x60:0x62] = bytes([0x01, 0x70])
    assert parse_vgpu_capability(bytes(looping)) == VgpuRecord(False)


# -- §4 family, §2.3 versions ---------------------------------------------------------------

@pytest.mark.parametrize(("cc", "family"), [
    ((1, 3), "tesla"), ((2, 1), "fermi"), ((3, 7), "kepler"), ((5, 2), "maxwell"),
    ((6, 1), "pascal"), ((7, 0), "volta"), ((7, 2), "volta"), ((7, 5), "turing"),
    ((8, 0), "ampere"), ((8, 6), "ampere"), ((8, 7), "ampere"), ((8, 9), "ada-lovelace"),
    ((9, 0), "hopper"), ((10, 0), "blackwell"), ((12, 0), "blackwell"), ((13, 0), "rubin"),
    ((4, 0), "undefined"), ((11, 0), "undefined"), ((14, 0), "undefined"),
    ((-1, -1), "undefined"),
])
def test_family(cc: tuple[int, int], family: str) -> None:
    assert gfd.family(*cc) == family


def test_compute_capability_zero_drops_the_architecture_labels() -> None:
    labels = gpu_labels(node([Gpu(0, "X", memory_bytes=MIB, compute=(0, 0), mig="unsupported")]),
                        options())
    assert not {"gpu.family", "gpu.compute.major", "gpu.compute.minor"} & set(labels)


@pytest.mark.parametrize(("cuda", "parts"), [
    (12020, (12, 2)), (12040, (12, 4)), (12060, (12, 6)), (11080, (11, 8)), (13000, (13, 0)),
    (8000, (8, 0)),
])
def test_cuda_version(cuda: int, parts: tuple[int, int]) -> None:
    assert gfd.cuda_parts(cuda) == parts


@pytest.mark.parametrize(("driver", "parts"), [
    ("550.54.15", ["550", "54", "15"]), ("560.28.03", ["560", "28", "03"]),
    ("400.300", ["400", "300", ""]), ("550", None), ("1.2.3.4", None),
])
def test_driver_version(driver: str, parts: list[str] | None) -> None:
    assert gfd.driver_parts(driver) == parts


# -- §5.3 / §9.3 MIG names ------------------------------------------------------------------

@pytest.mark.parametrize(("total_mib", "memory", "gi", "name"), [
    # A100 40GB
    (40960, 4864, 0, "1g.5gb"), (40960, 4864, 7, "1g.5gb.me"), (40960, 9856, 9, "1g.10gb"),
    (40960, 9856, 1, "2g.10gb"), (40960, 19968, 2, "3g.20gb"), (40960, 19968, 3, "4g.20gb"),
    (40960, 40192, 4, "7g.40gb"),
    # A100 80GB
    (81920, 9856, 0, "1g.10gb"), (81920, 9856, 7, "1g.10gb.me"), (81920, 19968, 9, "1g.20gb"),
    (81920, 19968, 1, "2g.20gb"), (81920, 40192, 2, "3g.40gb"), (81920, 40192, 3, "4g.40gb"),
    (81920, 80384, 4, "7g.80gb"),
    # A30 24GB
    (24576, 5836, 0, "1g.6gb"), (24576, 5836, 7, "1g.6gb.me"), (24576, 11672, 1, "2g.12gb"),
    (24576, 11672, 8, "2g.12gb.me"), (24576, 23344, 3, "4g.24gb"),
    # H100 80GB
    (81920, 10240, 0, "1g.10gb"), (81920, 10240, 7, "1g.10gb.me"), (81920, 20480, 9, "1g.20gb"),
    (81920, 20480, 1, "2g.20gb"), (81920, 40960, 2, "3g.40gb"), (81920, 40960, 3, "4g.40gb"),
    (81920, 81920, 4, "7g.80gb"),
    # H200 141GB with the mock's memory sizes: GFD's formula, not the mock's comments
    (144384, 18432, 0, "1g.35gb"), (144384, 18432, 7, "1g.35gb.me"),
    (144384, 35840, 9, "1g.35gb"), (144384, 35840, 1, "2g.35gb"), (144384, 72704, 2, "3g.88gb"),
    (144384, 72704, 3, "4g.88gb"), (144384, 144384, 4, "7g.141gb"),
    # B200 180GB likewise
    (184320, 23552, 0, "1g.45gb"), (184320, 23552, 7, "1g.45gb.me"),
    (184320, 46080, 9, "1g.45gb"), (184320, 46080, 1, "2g.45gb"), (184320, 92160, 2, "3g.90gb"),
    (184320, 92160, 3, "4g.90gb"), (184320, 184320, 4, "7g.180gb"),
    # just under the eighth boundaries: the names NVIDIA sells, half away from zero
    (184320, 22784, 0, "1g.23gb"), (144384, 71936, 2, "3g.71gb"), (144384, 17920, 0, "1g.18gb"),
])
def test_profile_names(total_mib: int, memory: int, gi: int, name: str) -> None:
    full_compute = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4}[GI_PROFILES[gi][0]]
    assert profile_name(gi, full_compute, memory, total_mib * MIB) == name


def test_round_half_away_from_zero_not_to_even() -> None:
    assert memory_gb(22784, 184320 * MIB) == 23  # 1/8 of 180 = 22.5
    assert memory_gb(71936, 144384 * MIB) == 71  # 4/8 of 141 = 70.5
    assert round(22.5) == 22 and round(70.5) == 70  # what Python's round() would publish


@pytest.mark.parametrize(("gi", "ci", "name"), [
    (4, 0, "1c.7g.40gb"), (4, 3, "4c.7g.40gb"), (4, 8, "7g.40gb"), (2, 1, "2c.3g.5gb"),
    (13, 0, "1g.5gb-me"), (15, 0, "1g.5gb.me.all"), (10, 0, "1g.5gb.gfx"),
    (16, 1, "2g.5gb.me.all"), (14, 1, "2g.5gb-me"), (12, 3, "4g.5gb.gfx"),
    (17, 2, "3g.5gb.gfx"), (6, 6, "6g.5gb"), (5, 5, "8g.5gb"),
])
def test_profile_suffixes_and_compute_slices(gi: int, ci: int, name: str) -> None:
    memory = 4864 if gi != 4 else 40192
    assert profile_name(gi, ci, memory, 40 * GIB) == name


def test_unknown_profile_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="GPU instance profile index 18"):
        profile_name(18, 0, 4864, 40 * GIB)
    with pytest.raises(ValueError, match="compute instance profile index 9"):
        profile_name(0, 9, 4864, 40 * GIB)


# -- deviations: mixed models, health --------------------------------------------------------

def model(name: str, count: int, start: int, mib: int, cc=(8, 0)) -> list[Gpu]:
    return [Gpu(start + k, name, memory_bytes=mib * MIB, compute=cc, mig="unsupported")
            for k in range(count)]


def test_majority_model_describes_the_node_with_per_model_counts() -> None:
    gpus = model("Tesla V100-SXM2-32GB", 1, 0, 32510) + model("Tesla V100-SXM2-16GB", 3, 1,
                                                              16160, (7, 0))
    labels = {label.key: label.value for label in gfd.build(node(gpus), options())}
    assert labels["nvidia.com/gpu.product"] == "Tesla-V100-SXM2-16GB"
    assert labels["nvidia.com/gpu.memory"] == "16160"
    assert labels["nvidia.com/gpu.count"] == "3"
    assert labels["nvidia.com/gpu.family"] == "volta"
    assert labels["nvidia.com/gpu.count.Tesla-V100-SXM2-16GB"] == "3"
    assert labels["nvidia.com/gpu.count.Tesla-V100-SXM2-32GB"] == "1"


def test_a_tie_goes_to_the_name_that_sorts_first_whatever_the_order() -> None:
    a = model("NVIDIA L4", 2, 0, 23034)
    b = model("NVIDIA A10", 2, 2, 23028)
    for gpus in (a + b, b + a):
        labels = {label.key: label.value for label in gfd.build(node(gpus), options())}
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-A10"
        assert labels["nvidia.com/gpu.memory"] == "23028"


def test_health_counts_and_no_confident_labels_when_every_gpu_is_lost() -> None:
    lost = [Gpu(0, problem="handle: NVML_ERROR_GPU_IS_LOST"),
            Gpu(1, problem="handle: NVML_ERROR_GPU_IS_LOST")]
    labels = {label.key: label.value for label in gfd.build(node(lost), options())}
    assert labels["nvidia.com/gpu.healthy"] == "0"
    assert labels["nvidia.com/gpu.unhealthy"] == "2"
    assert not {"nvidia.com/gpu.product", "nvidia.com/gpu.count",
                "nvidia.com/gpu.memory"} & set(labels)
    healthy = {label.key for label in gfd.build(node([full_gpu()]), options())}
    assert "nvidia.com/gpu.unhealthy" not in healthy


def test_cliques_must_agree() -> None:
    def clique_of(*cliques: str) -> str | None:
        gpus = [Gpu(k, "X", memory_bytes=MIB, compute=(10, 0), mig="disabled", clique=c)
                for k, c in enumerate(cliques)]
        labels = {label.key: label.value for label in gfd.build(node(gpus), options())}
        return labels.get("nvidia.com/gpu.clique")

    uuid = "7b968a6d-c8aa-45e1-9e07-e1e51be99c31"
    assert clique_of(f"{uuid}.1", f"{uuid}.1") == f"{uuid}.1"
    assert clique_of(f"{uuid}.1", "") == f"{uuid}.1"  # unattached GPUs do not count
    assert clique_of(f"{uuid}.1", f"{uuid}.2") is None
    assert clique_of("", "") is None


def test_a_long_mig_product_is_dropped_not_cut_into_its_shared_twin() -> None:
    # Cut to 63 characters, the unshared (67) and the shared (74) product were one value.
    from nodefeatures.discovery.labels import Label, checked

    name = "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    device = MigDevice(0, 0, name, "1g.24gb", tuple((k, 1) for k in ATTRIBUTES))
    products = [gfd.resource_labels("gpu", [device], opts)["nvidia.com/gpu.product"]
                for opts in (options(), options(ts=[entry("gpu", 2)]))]
    assert [len(p) for p in products] == [67, 74]
    for product in products:
        fixed, message = checked(Label("nvidia.com/gpu.product", product))
        assert fixed is None
        assert message is not None and excerpt(product) in message
        assert "longer than 63 characters" in message


# -- per-model facts and MIG-aware counts (not in GFD) ----------------------------------

def test_every_model_of_a_mixed_node_has_its_memory_family_and_compute() -> None:
    # the majority model describes the node; a selector for "at least one H100" needs
    # the minority's facts too
    gpus = (model("NVIDIA H100 80GB HBM3", 1, 0, 81559, (9, 0))
            + model("NVIDIA A100-SXM4-40GB", 3, 1, 40960, (8, 0)))
    labels = {label.key.removeprefix("nvidia.com/"): label.value
              for label in gfd.build(node(gpus), options())}
    assert labels["gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    for product, memory, family, major, minor in (
            ("NVIDIA-H100-80GB-HBM3", "81559", "hopper", "9", "0"),
            ("NVIDIA-A100-SXM4-40GB", "40960", "ampere", "8", "0")):
        assert labels[f"gpu.memory.{product}"] == memory
        assert labels[f"gpu.family.{product}"] == family
        assert labels[f"gpu.compute.major.{product}"] == major
        assert labels[f"gpu.compute.minor.{product}"] == minor


def test_a_model_that_did_not_answer_lacks_only_its_own_facts() -> None:
    gpus = (model("NVIDIA H100 80GB HBM3", 1, 0, 81559, (9, 0))
            + model("NVIDIA A100-SXM4-40GB", 2, 1, 40960, (8, 0)))
    gpus[0].memory_bytes = None
    gpus[0].compute = None
    labels = {label.key.removeprefix("nvidia.com/"): label.value
              for label in gfd.build(node(gpus), options())}
    h100 = [k for k in labels if k.endswith(".NVIDIA-H100-80GB-HBM3")]
    assert h100 == ["gpu.count.NVIDIA-H100-80GB-HBM3"]
    assert labels["gpu.memory.NVIDIA-A100-SXM4-40GB"] == "40960"


def test_per_model_facts_ignore_the_single_mig_strategy() -> None:
    # gpu.memory describes the MIG device under single; the model's facts stay physical
    labels = {label.key.removeprefix("nvidia.com/"): label.value for label in
              gfd.build(node([mig_enabled()], [mig_device(0, 0, 1, 2, 100)]),
                        options("single"))}
    assert labels["gpu.memory"] == "100"
    assert labels["gpu.memory.MOCKMODEL"] == "300"


def test_whole_and_mig_partitioned_gpus_are_counted_apart() -> None:
    lost = Gpu(4, "MOCKMODEL", problem="handle: NVML_ERROR_GPU_IS_LOST")
    disabled = Gpu(3, "MOCKMODEL", memory_bytes=300 * MIB, compute=(8, 0), mig="disabled")
    gpus = [mig_enabled(0), full_gpu(1), full_gpu(2), disabled, lost]
    for strategy in ("none", "single", "mixed"):
        labels = {label.key.removeprefix("nvidia.com/"): label.value
                  for label in gfd.build(node(gpus), options(strategy))}
        assert labels["gpu.whole-count"] == "3"
        assert labels["gpu.mig-partitioned-count"] == "1"
    # gpu.count keeps GFD's meaning: every GPU of the model, partitioned or not
    assert {label.key: label.value for label in gfd.build(node(gpus), options())}[
        "nvidia.com/gpu.count"] == "4"


def test_mig_aware_counts_are_left_out_while_a_mig_mode_is_unknown() -> None:
    unknown = Gpu(1, "MOCKMODEL", memory_bytes=300 * MIB, compute=(8, 0), mig="unknown")
    keys = {label.key for label in gfd.build(node([full_gpu(0), unknown]), options())}
    assert not {"nvidia.com/gpu.whole-count", "nvidia.com/gpu.mig-partitioned-count"} & keys
