"""GPUs that are no PCI function of the node: Tegra SoCs (Jetson Orin, Thor) and WSL2.

The golden labels of jetson-agx-orin, jetson-agx-thor and wsl2-rtx4090 are checked by
test_nvidia_golden.py; these tests vary the inputs around them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from gpufixtures import (
    FIXTURES,
    copy_fixture,
    expected_nvidia,
    fixture_data,
    replay,
    run,
    values,
)

from nodefeatures.cli import main
from nodefeatures.discovery.fixture import read_labels, replay_host
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia.platform import TEGRA, WSL2, detect
from nodefeatures.sources.nvidia.replay import dumps

P = "nvidia.com/"

# What a Jetson AGX Orin's NVML answers (JetPack 6): the integrated GPU's name with its
# `(nvgpu)` marker, little else.
ORIN_NVML = {
    "format": 1,
    "nvmlInitWithFlags": 0,
    "nvmlShutdown": 0,
    "nvmlSystemGetDriverVersion": "540.4.0",
    "nvmlSystemGetCudaDriverVersion": 12060,
    "nvmlDeviceGetCount_v2": 1,
    "nvmlDeviceGetHandleByIndex_v2": {"0": {
        "nvmlDeviceGetName": "Orin (nvgpu)",
        "nvmlDeviceGetMemoryInfo": {"error": "NOT_SUPPORTED"},
        "nvmlDeviceGetCudaComputeCapability": {"error": "NOT_SUPPORTED"},
        "nvmlDeviceGetPciInfo_v3": {"error": "NOT_SUPPORTED"},
        "nvmlDeviceGetMigMode": [0, 0],
        "nvmlDeviceGetGpuFabricInfo": {"error": "NOT_SUPPORTED"},
    }},
}


def with_nvml(tmp_path: Path, name: str, data: dict) -> Path:
    fixture = copy_fixture(name, tmp_path)
    (fixture / "nvml.json").write_text(dumps(data))
    return fixture


def test_orin_without_nvml_is_labelled_from_the_soc() -> None:
    result = run(NvidiaSource(), replay("jetson-agx-orin"))
    got = values(result)
    assert got == expected_nvidia(FIXTURES / "jetson-agx-orin")
    assert result.complete and result.warnings == []
    # GFD's values on Tegra, where its CUDA manager answers
    assert got[P + "cuda.driver-version.full"] == "unknown.unknown.unknown"
    assert got[P + "gpu.product"] == "Orin"
    assert (got[P + "gpu.compute.major"], got[P + "gpu.compute.minor"]) == ("8", "7")


def test_orin_with_partial_nvml_gets_gfds_names_and_the_socs_compute(tmp_path: Path) -> None:
    fixture = with_nvml(tmp_path, "jetson-agx-orin", ORIN_NVML)
    source = NvidiaSource()
    result = run(source, replay_host(fixture))
    got = values(result)
    assert result.complete and result.warnings == []
    assert source.session.fake.unanswered == []
    assert got[P + "gpu.product"] == "Orin"  # CUDA's name, as GFD publishes it
    assert got[P + "gpu.count.Orin"] == "1"
    assert got[P + "mig.capable"] == "false"  # GFD: no MIG on an integrated GPU
    assert got[P + "cuda.driver-version.full"] == "unknown.unknown.unknown"
    assert got[P + "cuda.runtime-version.full"] == "12.6"  # NVML answered it
    assert got[P + "gpu.family"] == "ampere"  # NVML did not: the SoC did
    assert P + "gpu.memory" not in got


@pytest.mark.parametrize("error", ["DRIVER_NOT_LOADED", "UNKNOWN"])
def test_tegra_nvml_that_fails_costs_only_its_labels(tmp_path: Path, error: str) -> None:
    fixture = with_nvml(tmp_path, "jetson-agx-thor",
                        {**fixture_data("jetson-agx-thor"), "nvmlInitWithFlags": {"error": error}})
    source = NvidiaSource()
    for _ in range(3):  # and again on later passes, in backoff
        result = run(source, replay_host(fixture))
        assert result.error is None
        got = values(result)
        assert got[P + "gpu.present"] == "true"
        assert got[P + "tegra.chip"] == "tegra264"
        assert got[P + "gpu.product"] == "NVIDIA-Thor"
        # Thor's compute capability depends on the CUDA version: unknown without NVML
        assert P + "gpu.compute.major" not in got and P + "cuda.runtime.major" not in got
        assert not result.complete  # the labels NVML gave stay until it answers again
        assert any("NVML cannot be used" in w for w in result.warnings)


def test_tegra_nvml_whose_device_list_fails_keeps_the_socs_labels(tmp_path: Path) -> None:
    data = {**fixture_data("jetson-agx-thor"), "nvmlDeviceGetCount_v2": {"error": "UNKNOWN"}}
    result = run(NvidiaSource(), replay_host(with_nvml(tmp_path, "jetson-agx-thor", data)))
    assert result.error is None and not result.complete
    assert values(result)[P + "tegra.release"] == "38.2.0"


def test_thor_nvml_answers_only_what_it_supports_without_warnings() -> None:
    result = run(NvidiaSource(), replay("jetson-agx-thor"))
    got = values(result)
    assert result.complete and result.warnings == []
    assert P + "gpu.memory" not in got  # NOT_SUPPORTED: absent, not unknown
    assert got[P + "gpu.family"] == "undefined"  # GFD: CC 11 has no family


def tree(tmp_path: Path, files: dict[str, bytes | str]) -> HostRoot:
    for path, content in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return HostRoot(tmp_path)


@pytest.mark.parametrize("files", [
    {"sys/devices/soc0/family": "Tegra\n", "sys/devices/soc0/soc_id": "35\n"},
    {"sys/firmware/devicetree/base/compatible": b"nvidia,p3768-0000+p3767-0005\0"
                                                b"nvidia,p3767-0005\0nvidia,tegra234\0"},
    {"proc/device-tree/compatible": b"nvidia,p3767-0005\0nvidia,tegra234\0"},
], ids=["soc0-family", "device-tree", "proc-device-tree"])
def test_tegra_is_found_without_the_release_file(tmp_path: Path, files: dict) -> None:
    platform = detect(tree(tmp_path, files))
    assert platform is not None and platform.kind == TEGRA
    assert platform.chip == "tegra234"
    assert platform.soc_gpu is not None and platform.soc_gpu.name == "Orin"


@pytest.mark.parametrize("files", [
    {},
    {"sys/firmware/devicetree/base/compatible": b"raspberrypi,4-model-b\0brcm,bcm2711\0"},
    {"sys/devices/soc0/family": "Freescale i.MX\n"},
    {"proc/sys/kernel/osrelease": "6.8.0-1019-aws\n"},
], ids=["nothing", "raspberry-pi", "imx", "aws-kernel"])
def test_other_nodes_are_neither(tmp_path: Path, files: dict) -> None:
    assert detect(tree(tmp_path, files)) is None


@pytest.mark.parametrize("files", [
    {"proc/sys/kernel/osrelease": "5.15.153.1-microsoft-standard-WSL2\n"},
    {"proc/sys/kernel/osrelease": "6.6.36-custom\n", "dev/dxg": ""},
    {"usr/lib/wsl/lib/libdxcore.so": ""},
], ids=["kernel-release", "dxg", "dxcore"])
def test_wsl2_is_found(tmp_path: Path, files: dict) -> None:
    platform = detect(tree(tmp_path, files))
    assert platform is not None and platform.kind == WSL2


def test_wsl2_without_nvidia_nvml_is_a_node_without_gpu(tmp_path: Path) -> None:
    # an AMD or Intel GPU on the Windows host: /dev/dxg but no NVIDIA library
    fixture = copy_fixture("wsl2-rtx4090", tmp_path)
    (fixture / "nvml.json").unlink()
    result = run(NvidiaSource(), replay_host(fixture))
    assert values(result) == {} and result.complete


def test_an_integrated_gpu_name_means_tegra_even_without_its_files(tmp_path: Path) -> None:
    fixture = copy_fixture("jetson-agx-thor", tmp_path)
    for path in ("etc/nv_tegra_release", "sys/devices/soc0", "sys/firmware", "sys/bus/pci"):
        target = fixture / "root" / path
        if target.is_dir():
            for child in sorted(target.rglob("*"), reverse=True):
                child.unlink() if not child.is_dir() or child.is_symlink() else child.rmdir()
            target.rmdir()
        else:
            target.unlink()
    got = values(run(NvidiaSource(), replay_host(fixture)))
    assert got[P + "cuda.driver-version.full"] == "unknown.unknown.unknown"
    assert got[P + "mig.capable"] == "false"
    assert P + "gpu.platform" not in got  # no host file says which platform


@pytest.mark.parametrize("name", ["jetson-agx-orin", "jetson-agx-thor", "wsl2-rtx4090"])
def test_capture_of_a_replayed_platform_node_replays_to_its_labels(name: str, fake_lib,
                                                                   tmp_path: Path) -> None:
    fixture = FIXTURES / name
    if (fixture / "nvml.json").is_file():
        fake_lib(fixture_data(name))
    target = tmp_path / "captured"
    captured = CliRunner().invoke(main, ["capture", "--root", str(fixture / "root"),
                                         "--source", "nvidia", str(target)])
    assert captured.exit_code == 0, captured.output
    nvidia = {k: v for k, v in read_labels(fixture).items() if k.startswith(P)}
    assert read_labels(target) == nvidia
    assert (target / "nvml.json").is_file() == (fixture / "nvml.json").is_file()
    # what the platform path read was recorded: the capture alone replays to the labels
    assert values(run(NvidiaSource(), replay_host(target))) == nvidia
    recorded = {str(p.relative_to(target / "root")) for p in (target / "root").rglob("*")
                if p.is_file()}
    assert ("etc/nv_tegra_release" in recorded) == name.startswith("jetson")
    assert "proc/sys/kernel/osrelease" in recorded
    assert os.path.getsize(target / "labels.json") > 2
    json.loads((target / "labels.json").read_text())


def test_mig_enabled_on_thor_is_not_probed_as_gfd_sees_no_mig_there(tmp_path: Path) -> None:
    data = fixture_data("jetson-agx-thor")
    data["nvmlDeviceGetHandleByIndex_v2"]["0"]["nvmlDeviceGetMigMode"] = [1, 1]
    source = NvidiaSource()
    result = run(source, replay_host(with_nvml(tmp_path, "jetson-agx-thor", data)),
                 migStrategy="mixed")
    got = values(result)
    assert result.complete, result.warnings
    assert got[P + "mig.capable"] == "false" and got[P + "gpu.whole-count"] == "1"
    assert not [k for k in got if k.startswith(P + "mig-")]
    assert source.session.fake.unanswered == []  # no MIG device was asked for


def test_a_failing_mig_mode_on_tegra_costs_nothing(tmp_path: Path) -> None:
    # GFD asks no MIG mode of an integrated GPU: NVML's error there says nothing
    data = fixture_data("jetson-agx-thor")
    data["nvmlDeviceGetHandleByIndex_v2"]["0"]["nvmlDeviceGetMigMode"] = {"error": "UNKNOWN"}
    result = run(NvidiaSource(), replay_host(with_nvml(tmp_path, "jetson-agx-thor", data)))
    assert values(result) == expected_nvidia(FIXTURES / "jetson-agx-thor")
    assert result.complete, result.warnings


@pytest.mark.parametrize("soc_id", ["\u00b2\n", "\u0663\u0665\n", "35\u200b\n", "\xff\xfe\n"])
def test_a_soc_id_that_is_no_ascii_number_is_no_soc_id(tmp_path: Path, soc_id: str) -> None:
    # str.isdigit() accepts superscripts (which int() refuses) and other scripts' digits.
    platform = detect(tree(tmp_path, {"sys/devices/soc0/family": "Tegra\n",
                                      "sys/devices/soc0/soc_id": soc_id}))
    assert platform is not None and platform.kind == TEGRA
    assert platform.soc_id is None and platform.chip == ""
