"""The fake native library under the real pynvml: pynvml's own ctypes marshalling,
structs, string decoding and exception classes run against nvml.json answers."""

from __future__ import annotations

import ctypes

import pytest
from gpufixtures import fixture_data

from nodefeatures.sources.nvidia.replay import (
    FixtureFormatError,
    RecordingLib,
    dumps,
    install,
    loads,
    struct_to_json,
)
from nodefeatures.sources.nvidia.structs import FABRIC_INFO_V2, FabricInfo, FabricInfoV2

T4 = fixture_data("seed-t4-ubuntu2204")


def test_calls_before_init_raise_pynvml_uninitialized(nv, fake_lib) -> None:
    fake_lib(T4)
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlSystemGetDriverVersion()


def test_values_come_back_as_pynvml_returns_them(nv, fake_lib) -> None:
    lib = fake_lib(T4)
    nv.nvmlInit()
    assert nv.nvmlSystemGetDriverVersion() == "535.161.08"  # str, decoded by pynvml
    assert nv.nvmlSystemGetCudaDriverVersion() == 12020
    assert nv.nvmlDeviceGetCount() == 2
    handle = nv.nvmlDeviceGetHandleByIndex(1)
    assert isinstance(handle, nv.c_nvmlDevice_t)
    assert nv.nvmlDeviceGetName(handle) == "Tesla T4"
    memory = nv.nvmlDeviceGetMemoryInfo(handle)
    assert isinstance(memory, nv.c_nvmlMemory_t)
    assert (memory.total, memory.used) == (16106127360, 286326784)
    assert nv.nvmlDeviceGetCudaComputeCapability(handle) == (7, 5)
    pci = nv.nvmlDeviceGetPciInfo(handle)
    assert (pci.busId, pci.bus, pci.pciDeviceId) == ("00000000:D8:00.0", 0xD8, 0x1EB810DE)
    assert nv.nvmlDeviceGetVirtualizationMode(handle) == 0
    nv.nvmlShutdown()
    assert lib.callback_errors == [] and lib.unanswered == []


def test_recorded_errors_raise_pynvml_exception_classes(nv, fake_lib) -> None:
    data = fixture_data("gpu-lost-a10g")
    fake_lib(data)
    nv.nvmlInit()
    with pytest.raises(nv.NVMLError_GpuIsLost) as lost:
        nv.nvmlDeviceGetHandleByIndex(2)
    assert lost.value.value == nv.NVML_ERROR_GPU_IS_LOST
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetMigMode(handle)


def test_error_may_be_a_number_or_a_name(nv, fake_lib) -> None:
    fake_lib({**T4, "nvmlSystemGetCudaDriverVersion": {"error": 9},
              "nvmlSystemGetDriverVersion": {"error": "NVML_ERROR_UNKNOWN"}})
    nv.nvmlInit()
    with pytest.raises(nv.NVMLError_DriverNotLoaded):
        nv.nvmlSystemGetCudaDriverVersion()
    with pytest.raises(nv.NVMLError_Unknown):
        nv.nvmlSystemGetDriverVersion()


def test_init_error(nv, fake_lib) -> None:
    fake_lib({**T4, "nvmlInitWithFlags": {"error": "DRIVER_NOT_LOADED"}})
    with pytest.raises(nv.NVMLError_DriverNotLoaded):
        nv.nvmlInit()


def test_missing_symbols_are_function_not_found(nv, fake_lib) -> None:
    fake_lib({**T4, "missing": ["nvmlDeviceGetGpuFabricInfo"]})
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(nv.NVMLError_FunctionNotFound):
        nv.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(FabricInfo()))
    with pytest.raises(nv.NVMLError_FunctionNotFound):
        nv.nvmlDeviceGetBrand(handle)  # never declared by the fake at all


def test_versioned_struct_is_checked(nv, fake_lib) -> None:
    answer = {"clusterUuid": "7b968a6d-c8aa-45e1-9e07-e1e51be99c31", "status": 0,
              "cliqueId": 3, "state": 3, "healthMask": 0}
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetHandleByIndex_v2"]["0"]["nvmlDeviceGetGpuFabricInfoV"] = answer
    fake_lib(data)
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    good = FabricInfoV2(version=FABRIC_INFO_V2)
    nv.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(good))
    assert bytes(good.clusterUuid).hex() == "7b968a6dc8aa45e19e07e1e51be99c31"
    assert (good.cliqueId, good.state) == (3, 3)
    with pytest.raises(nv.NVMLError_ArgumentVersionMismatch):
        nv.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(FabricInfoV2(version=1)))


def test_mig_handles_and_instances(nv, fake_lib) -> None:
    fake_lib(fixture_data("dgx-a100-mig-mixed"))
    nv.nvmlInit()
    gpu = nv.nvmlDeviceGetHandleByIndex(5)
    assert nv.nvmlDeviceGetMigMode(gpu) == [1, 1]
    assert nv.nvmlDeviceGetMaxMigDeviceCount(gpu) == 7
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 1)
    flag = nv.nvmlDeviceIsMigDeviceHandle(mig)
    assert isinstance(flag, ctypes.c_uint) and flag.value == 1
    attributes = nv.nvmlDeviceGetAttributes(mig)
    assert (attributes.gpuInstanceSliceCount, attributes.computeInstanceSliceCount,
            attributes.memorySizeMB) == (7, 3, 40192)
    instance = nv.nvmlDeviceGetGpuInstanceById(gpu, nv.nvmlDeviceGetGpuInstanceId(mig))
    assert nv.nvmlGpuInstanceGetInfo(instance).profileId == 0
    compute = nv.nvmlGpuInstanceGetComputeInstanceById(
        instance, nv.nvmlDeviceGetComputeInstanceId(mig))
    info = nv.nvmlComputeInstanceGetInfo(compute)
    assert (info.profileId, info.placement.start, info.placement.size) == (2, 4, 3)
    profile = nv.nvmlDeviceGetGpuInstanceProfileInfo(gpu, 0, version=1)
    assert (profile.id, profile.memorySizeMB) == (19, 4864)
    with pytest.raises(nv.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetGpuInstanceProfileInfo(gpu, 17, version=1)
    with pytest.raises(nv.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 2)
    # a GPU instance handle is not a device handle
    with pytest.raises(nv.NVMLError_InvalidArgument):
        nv.nvmlDeviceGetName(ctypes.cast(instance, nv.c_nvmlDevice_t))


def test_unanswered_calls_are_listed_not_invented(nv, fake_lib) -> None:
    lib = fake_lib(T4)
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetMaxMigDeviceCount(handle)
    assert lib.unanswered == [
        "nvmlDeviceGetMaxMigDeviceCount()@system/nvmlDeviceGetHandleByIndex_v2(0)"]


def test_a_string_longer_than_the_buffer(nv, fake_lib) -> None:
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetHandleByIndex_v2"]["0"]["nvmlDeviceGetName"] = "T" * 200
    fake_lib(data)
    nv.nvmlInit()
    with pytest.raises(nv.NVMLError_InsufficientSize):
        nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(0))


def test_a_bad_struct_field_is_a_callback_error_not_garbage(nv, fake_lib) -> None:
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetHandleByIndex_v2"]["0"]["nvmlDeviceGetMemoryInfo"] = {"totl": 1}
    lib = fake_lib(data)
    nv.nvmlInit()
    with pytest.raises(nv.NVMLError_Unknown):
        nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(0))
    assert [(name, str(exc)) for name, exc in lib.callback_errors] == [
        ("nvmlDeviceGetMemoryInfo", "c_nvmlMemory_t has no field 'totl'")]


def test_error_text_comes_from_the_fake_and_is_not_left_behind(nv) -> None:
    from nodefeatures.sources.nvidia.replay import FakeNvmlLib

    installed = install(nv, FakeNvmlLib(nv, loads(dumps(T4))))
    # pynvml asks the library for texts it does not know, and caches them class-wide
    assert str(nv.NVMLError(nv.NVML_ERROR_IN_USE)) == "IN_USE"
    assert nv.NVML_ERROR_IN_USE in nv.NVMLError._errcode_to_string
    installed.restore()
    assert nv.NVML_ERROR_IN_USE not in nv.NVMLError._errcode_to_string


def test_install_restores_pynvml(nv) -> None:
    from nodefeatures.sources.nvidia.replay import FakeNvmlLib, binding_module

    module = binding_module(nv)
    before = module.nvmlLib
    installed = install(nv, FakeNvmlLib(nv, loads(dumps(T4))))
    nv.nvmlInit()
    assert "nvmlInitWithFlags" in module._nvmlGetFunctionPointer_cache
    installed.restore()
    assert module.nvmlLib is before
    assert module._nvmlGetFunctionPointer_cache == {}
    with pytest.raises(nv.NVMLError_LibraryNotFound):
        nv.nvmlInit()  # the test's stand-in for a node without the library


def test_recorder_writes_what_the_library_answered(nv, fake_lib) -> None:
    lib = fake_lib(T4)
    recorder = RecordingLib(nv, lib)
    install(nv, recorder)
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    nv.nvmlDeviceGetName(handle)
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetMigMode(handle)
    with pytest.raises(nv.NVMLError_FunctionNotFound):
        nv.nvmlDeviceGetBrand(handle)
    assert recorder.snapshot() == {
        "format": 1, "missing": ["nvmlDeviceGetBrand"], "nvmlInitWithFlags": 0,
        "nvmlDeviceGetHandleByIndex_v2": {"0": {
            "nvmlDeviceGetName": "Tesla T4",
            "nvmlDeviceGetMigMode": {"error": "NOT_SUPPORTED"}}}}


def test_struct_json_round_trip(nv) -> None:
    info = nv.c_nvmlGpuInstanceInfo_t()
    info.id, info.profileId, info.placement.start, info.placement.size = 7, 19, 0, 1
    as_json = struct_to_json(info)
    assert as_json == {"id": 7, "profileId": 19, "placement": {"start": 0, "size": 1}}
    fabric = FabricInfo()
    fabric.clusterUuid[:] = list(range(16))
    assert struct_to_json(fabric)["clusterUuid"] == "00010203-0405-0607-0809-0a0b0c0d0e0f"


@pytest.mark.parametrize(("text", "problem"), [
    ("{", "not valid JSON"),
    ("[]", "top level must be an object"),
    ('{"format": 2}', "format must be 1"),
    ('{"format": 1, "missing": "nvmlShutdown"}', "missing must be a list"),
])
def test_bad_nvml_json(text: str, problem: str) -> None:
    with pytest.raises(FixtureFormatError, match=problem):
        loads(text)


def test_dumps_is_stable_and_readable() -> None:
    text = dumps(T4)
    assert loads(text) == T4
    assert dumps(loads(text)) == text
    assert '"nvmlDeviceGetCudaComputeCapability": [7, 5],' in text
