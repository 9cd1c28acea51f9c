"""NVML is unreliable: hangs are bounded, failures cost only their own labels, and one
source instance recovers across passes as the agent runs it."""

from __future__ import annotations

import copy
import os
import threading
import time
from pathlib import Path

import pytest
from gpufixtures import (
    FIXTURES,
    Clock,
    copy_fixture,
    expected_nvidia,
    fixture_data,
    live_host,
    replay,
    run,
    values,
)

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import run_pass
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia import nvml as nvml_module
from nodefeatures.sources.nvidia.nvml import RETRY_FIRST, RETRY_MAX, Session, Worker
from nodefeatures.sources.nvidia.replay import dumps
from nodefeatures.sources.system import SystemSource

T4_ROOT = FIXTURES / "seed-t4-ubuntu2204" / "root"
T4_LABELS = expected_nvidia(FIXTURES / "seed-t4-ubuntu2204")
PRESENT_ONLY = {"nvidia.com/gpu.present": "true"}


def write_nvml(fixture: Path, data: dict) -> None:
    path = fixture / "nvml.json"
    path.write_text(dumps(data))
    stamp = time.time() + 10 * len(str(data))  # a new mtime, whatever the clock's grain
    os.utime(path, (stamp, stamp))


def gpu_node(data: dict, index: int) -> dict:
    return data["nvmlDeviceGetHandleByIndex_v2"][str(index)]


def wait_until_free(worker: Worker) -> None:
    deadline = time.monotonic() + 5
    while worker.stuck_since is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stuck_since is None


# -- hangs ---------------------------------------------------------------------------------


def test_a_hung_call_is_bounded_and_nvml_is_left_alone_until_it_returns(fake_lib) -> None:
    release = threading.Event()

    def block(name: str) -> None:
        if name == "nvmlDeviceGetName":
            release.wait(10)

    fake_lib(fixture_data("seed-t4-ubuntu2204"), block=block)
    clock = Clock()
    source = NvidiaSource(clock)
    host = live_host(T4_ROOT)
    try:
        started = time.monotonic()
        first = run(source, host, nvmlTimeout=0.2)
        assert time.monotonic() - started < 2.0
        assert values(first) == PRESENT_ONLY and not first.complete
        assert any("stopped answering" in w for w in first.warnings)

        started = time.monotonic()
        second = run(source, host, nvmlTimeout=0.2)  # within the backoff: no NVML at all
        assert time.monotonic() - started < 0.2
        assert values(second) == PRESENT_ONLY and not second.complete

        clock.advance(RETRY_FIRST)
        started = time.monotonic()
        third = run(source, host, nvmlTimeout=0.2)  # due, but the call is still hung
        assert time.monotonic() - started < 0.2
        assert any("has not returned" in w for w in third.warnings)
    finally:
        release.set()
    wait_until_free(source.session.worker)
    clock.advance(RETRY_MAX)
    recovered = run(source, host, nvmlTimeout=0.2)
    assert values(recovered) == T4_LABELS
    assert recovered.complete and recovered.warnings == []


def test_a_hung_probe_costs_only_its_own_labels(fake_lib) -> None:
    release = threading.Event()

    def block(name: str) -> None:
        if name == "nvmlDeviceGetGpuFabricInfo":
            release.wait(10)

    fake_lib(fixture_data("seed-t4-ubuntu2204"), block=block)
    source = NvidiaSource(Clock())
    try:
        result = run(source, live_host(T4_ROOT), nvmlTimeout=0.3)
    finally:
        release.set()
    # the vGPU answer needed the virtualization probe, queued behind the hung one
    assert values(result) == {k: v for k, v in T4_LABELS.items()
                              if k != "nvidia.com/vgpu.present"}
    assert not result.complete
    assert any(w.startswith("fabric probe failed: NVML did not answer") for w in result.warnings)
    assert any(w.startswith("virtualization probe failed: not run") for w in result.warnings)
    wait_until_free(source.session.worker)


def test_worker_runs_jobs_and_reports_a_timeout() -> None:
    worker = Worker()
    assert worker.run(lambda: 41 + 1, time.monotonic() + 1) == 42
    with pytest.raises(ZeroDivisionError):
        worker.run(lambda: 1 / 0, time.monotonic() + 1)
    gate = threading.Event()
    with pytest.raises(nvml_module.Unresponsive):
        worker.run(lambda: gate.wait(5), time.monotonic() + 0.05)
    assert worker.stuck_since is not None
    with pytest.raises(nvml_module.Unresponsive, match="has not returned"):
        worker.run(lambda: 1, time.monotonic() + 1)
    done = []
    worker.later(lambda: done.append(True))
    gate.set()
    wait_until_free(worker)
    assert worker.run(lambda: "again", time.monotonic() + 1) == "again"
    assert done == [True]  # clean-up queued behind the hung call ran first


# -- init failure, missing library, backoff -------------------------------------------------


def test_init_failure_then_recovery_across_passes(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    good = fixture_data("seed-t4-ubuntu2204")
    write_nvml(fixture, {**good, "nvmlInitWithFlags": {"error": "DRIVER_NOT_LOADED"}})
    clock = Clock()
    source = NvidiaSource(clock)

    first = run(source, replay_host(fixture))
    assert values(first) == PRESENT_ONLY and not first.complete
    assert len(first.warnings) == 1 and "DRIVER_NOT_LOADED" in first.warnings[0]
    calls = source.session.fake.calls

    second = run(source, replay_host(fixture))
    assert values(second) == PRESENT_ONLY and not second.complete
    assert "next try in 15 s" in second.warnings[0]
    assert source.session.fake.calls == calls  # NVML not touched while backing off

    write_nvml(fixture, good)
    clock.advance(RETRY_FIRST)
    third = run(source, replay_host(fixture))
    assert values(third) == T4_LABELS
    assert third.complete and third.warnings == []


def test_a_driver_installed_after_start_is_picked_up(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    (fixture / "nvml.json").rename(tmp_path / "later.json")
    clock = Clock()
    source = NvidiaSource(clock)
    first = run(source, replay_host(fixture))
    assert values(first) == PRESENT_ONLY and not first.complete
    assert "without the NVML library" in first.warnings[0]
    (tmp_path / "later.json").rename(fixture / "nvml.json")
    assert values(run(source, replay_host(fixture))) == PRESENT_ONLY  # still backing off
    clock.advance(RETRY_FIRST)
    assert values(run(source, replay_host(fixture))) == T4_LABELS


def test_backoff_doubles_up_to_its_cap() -> None:
    clock = Clock()
    session = Session(clock)
    waits = []
    for _ in range(8):
        session._failed(nvml_module.Outcome("failed", "x"))
        waits.append(session._retry_at - clock.now)
    assert waits == [15, 30, 60, 120, 240, 300, 300, 300]


def test_backoff_stays_at_its_cap_after_days_of_failures() -> None:
    # 2 ** 1024 is past a float: ~85 h of a GPU node without a working driver (a failure
    # per 300 s) made the delay raise OverflowError, and the source failed every pass.
    clock = Clock()
    session = Session(clock)
    session._failures = 5000
    session._failed(nvml_module.Outcome("failed", "x"))
    assert session._retry_at - clock.now == 300


def test_missing_library_on_a_gpu_node_is_a_warning(fake_lib) -> None:
    # no fake installed: pynvml cannot load a library (see conftest)
    result = run(NvidiaSource(Clock()), live_host(T4_ROOT))
    assert values(result) == PRESENT_ONLY and not result.complete
    assert "libnvidia-ml.so.1" in result.warnings[0]


def test_missing_library_and_no_pci_bus_is_no_gpu(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    (tmp_path / "etc").mkdir()
    source = NvidiaSource(Clock())
    for _ in range(2):  # the second pass is within the backoff, and says the same
        result = run(source, live_host(tmp_path))
        assert values(result) == {} and result.complete and result.warnings == []
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("nodefeatures")]
    assert len(notes) == 1 and "libnvidia-ml.so.1" in notes[0]


def test_missing_bindings_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing():
        raise nvml_module.PynvmlMissing("nvidia-ml-py is not installed: test")

    monkeypatch.setattr(nvml_module, "load_pynvml", missing)
    result = run(NvidiaSource(Clock()), live_host(T4_ROOT))
    assert values(result) == PRESENT_ONLY
    assert "nvidia-ml-py is not installed" in result.warnings[0]


def test_garbage_nvml_json_costs_only_gpu_labels(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    (fixture / "nvml.json").write_bytes(b"\x00\xff{ not json")
    sources = {"nvidia": NvidiaSource(Clock()), "system": SystemSource()}
    discovery = run_pass(replay_host(fixture), sources, build({}, sources))
    by_name = {r.name: r for r in discovery.results}
    assert values(by_name["nvidia"]) == PRESENT_ONLY
    assert not by_name["nvidia"].complete
    assert "nvml.json: not valid JSON" in by_name["nvidia"].warnings[0]
    assert by_name["system"].labels  # other sources are unaffected


@pytest.mark.parametrize("count", [2**32 - 1, 65])
def test_an_absurd_device_count_is_rejected_at_once(tmp_path: Path, count: int) -> None:
    # NVML answering 4294967295 devices once cost every pass the full NVML timeout and
    # left the worker probing handle after handle for hours.
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetCount_v2"] = count
    write_nvml(fixture, data)
    source = NvidiaSource(Clock())
    started = time.monotonic()
    result = run(source, replay_host(fixture), nvmlTimeout=3.0)
    assert time.monotonic() - started < 1.0
    assert values(result) == PRESENT_ONLY and not result.complete
    assert any(f"NVML reports {count} GPUs" in w and "more than 64" in w
               for w in result.warnings), result.warnings
    assert source.session.worker.stuck_since is None
    assert source.session.fake.calls < 20  # no handle was asked for


def test_the_largest_sane_device_count_is_probed(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetCount_v2"] = 64  # two answer; the other 62 have no handle
    write_nvml(fixture, data)
    got = values(run(NvidiaSource(Clock()), replay_host(fixture)))
    assert (got["nvidia.com/gpu.healthy"], got["nvidia.com/gpu.unhealthy"]) == ("2", "62")


# -- health --------------------------------------------------------------------------------


def test_a_lost_gpu_is_cleared_when_nvml_recovers(tmp_path: Path) -> None:
    fixture = copy_fixture("gpu-lost-a10g", tmp_path)
    source = NvidiaSource(Clock())
    lost = values(run(source, replay_host(fixture)))
    assert (lost["nvidia.com/gpu.healthy"], lost["nvidia.com/gpu.unhealthy"],
            lost["nvidia.com/gpu.count"]) == ("3", "1", "3")
    data = fixture_data("gpu-lost-a10g")
    back = copy.deepcopy(gpu_node(data, 1))
    back["nvmlDeviceGetPciInfo_v3"].update(busId="00000000:00:1D.0", busIdLegacy="0000:00:1D.0",
                                           device=0x1D)
    data["nvmlDeviceGetHandleByIndex_v2"]["2"] = back
    write_nvml(fixture, data)
    recovered = run(source, replay_host(fixture))
    got = values(recovered)
    assert "nvidia.com/gpu.unhealthy" not in got
    assert (got["nvidia.com/gpu.healthy"], got["nvidia.com/gpu.count"]) == ("4", "4")
    assert recovered.warnings == []


@pytest.mark.parametrize("call", ["nvmlDeviceGetMemoryInfo", "nvmlDeviceGetCudaComputeCapability",
                                  "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetMigMode",
                                  "nvmlDeviceGetName"])
def test_a_gpu_lost_during_a_query_is_unhealthy(tmp_path: Path, call: str) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    gpu_node(data, 1)[call] = {"error": "GPU_IS_LOST"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    got = values(result)
    assert (got["nvidia.com/gpu.healthy"], got["nvidia.com/gpu.unhealthy"],
            got["nvidia.com/gpu.count"]) == ("1", "1", "1")
    assert any("GPU 1" in w and "GPU_IS_LOST" in w for w in result.warnings)


def test_an_inaccessible_gpu_is_unhealthy(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetHandleByIndex_v2"]["0"] = {"error": "NO_PERMISSION"}
    write_nvml(fixture, data)
    got = values(run(NvidiaSource(Clock()), replay_host(fixture)))
    assert got["nvidia.com/gpu.unhealthy"] == "1"
    assert got["nvidia.com/gpu.count.Tesla-T4"] == "1"


def test_a_failed_query_that_is_not_a_loss_costs_one_label(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    for index in (0, 1):
        gpu_node(data, index)["nvmlDeviceGetMemoryInfo"] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    # the node's and the model's memory label: both said the same thing
    assert values(result) == {k: v for k, v in T4_LABELS.items()
                              if k not in ("nvidia.com/gpu.memory",
                                           "nvidia.com/gpu.memory.Tesla-T4")}
    assert "GPU 0: nvmlDeviceGetMemoryInfo failed: NVML_ERROR_UNKNOWN" in result.warnings


@pytest.mark.parametrize(("call", "labels"), [
    ("nvmlDeviceGetCudaComputeCapability",
     ("gpu.family", "gpu.compute.major", "gpu.compute.minor")),
    ("nvmlDeviceGetMemoryInfo", ("gpu.memory",)),
])
def test_a_gpu_that_fails_a_query_leaves_the_model_labels_to_the_others(
        tmp_path: Path, call: str, labels: tuple[str, ...]) -> None:
    # GPU 1, the model's last, once decided these alone: its error dropped them all.
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    gpu_node(data, 1)[call] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert values(result) == T4_LABELS
    for name in labels:
        assert result.labels[f"nvidia.com/{name}"].origin.endswith("on NVML GPU 0")
    assert f"GPU 1: {call} failed: NVML_ERROR_UNKNOWN" in result.warnings
    gpu_node(data, 0)[call] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert values(result) == {k: v for k, v in T4_LABELS.items()
                              if k.removeprefix("nvidia.com/").removesuffix(".Tesla-T4")
                              not in labels}


@pytest.mark.parametrize(("call", "labels"), [
    ("nvmlDeviceGetCudaComputeCapability",
     ("gpu.family", "gpu.compute.major", "gpu.compute.minor")),
    ("nvmlDeviceGetMemoryInfo", ("gpu.memory",)),
])
def test_a_model_whose_every_gpu_fails_a_query_makes_the_pass_incomplete(
        tmp_path: Path, call: str, labels: tuple[str, ...]) -> None:
    # No GPU of the model answered: the value is unknown, not gone, so the agent must
    # keep the last one rather than remove it from the Node.
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    for index in (0, 1):
        gpu_node(data, index)[call] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert not any(f"nvidia.com/{name}" in result.labels for name in labels)
    assert not result.complete
    assert any("Tesla T4" in w and "no GPU of the model answered" in w
               for w in result.warnings)
    # one GPU answering is enough: complete again
    gpu_node(data, 1)[call] = fixture_data("seed-t4-ubuntu2204")[
        "nvmlDeviceGetHandleByIndex_v2"]["1"][call]
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert result.complete and values(result) == T4_LABELS


def test_a_query_the_gpu_does_not_support_leaves_the_pass_complete(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    for index in (0, 1):
        gpu_node(data, index)["nvmlDeviceGetMemoryInfo"] = {"error": "NOT_SUPPORTED"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert "nvidia.com/gpu.memory" not in result.labels
    assert result.complete  # NOT_SUPPORTED is an answer: there is no memory label


def test_mig_capable_is_left_out_while_a_gpu_does_not_answer(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    gpu_node(data, 1)["nvmlDeviceGetMigMode"] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    # GPU 0 cannot do MIG, but GPU 1 did not say: neither true nor false is known, nor
    # whether GPU 1 is whole or partitioned
    assert values(result) == {k: v for k, v in T4_LABELS.items()
                              if k not in ("nvidia.com/mig.capable", "nvidia.com/gpu.whole-count",
                                           "nvidia.com/gpu.mig-partitioned-count")}
    assert not result.complete  # unknown, not gone: the Node keeps the last values


# -- one failing probe ---------------------------------------------------------------------


def test_a_failing_mig_probe_costs_only_mig_labels(tmp_path: Path) -> None:
    fixture = copy_fixture("dgx-a100-mig-mixed", tmp_path)
    data = fixture_data("dgx-a100-mig-mixed")
    gpu_node(data, 3)["nvmlDeviceGetMaxMigDeviceCount"] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture), migStrategy="mixed")
    assert values(result) == expected_nvidia(FIXTURES / "dgx-a100-mig-mixed")
    assert not result.complete
    assert "mig probe failed: MIG devices of GPU 3: NVML_ERROR_UNKNOWN; its labels are " \
           "left out" in result.warnings


def test_a_failing_mig_probe_under_single_leaves_the_mig_dependent_labels_out(
        tmp_path: Path) -> None:
    fixture = copy_fixture("dgx-a100-mig-single", tmp_path)
    data = fixture_data("dgx-a100-mig-single")
    gpu_node(data, 0)["nvmlDeviceGetMaxMigDeviceCount"] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture), migStrategy="single")
    got = values(result)
    # the full GPU's product or memory would be wrong here: the agent keeps the last ones
    for suffix in ("count", "replicas", "sharing-strategy", "product", "memory"):
        assert f"nvidia.com/gpu.{suffix}" not in got
    assert "nvidia.com/mig.strategy" not in got
    assert got["nvidia.com/gpu.family"] == "ampere" and not result.complete


def test_a_gpu_lost_in_the_mig_probe(tmp_path: Path) -> None:
    fixture = copy_fixture("dgx-a100-mig-mixed", tmp_path)
    data = fixture_data("dgx-a100-mig-mixed")
    slots = gpu_node(data, 6)["nvmlDeviceGetMigDeviceHandleByIndex"]
    slots["0"]["nvmlDeviceGetAttributes_v2"] = {"error": "GPU_IS_LOST"}
    write_nvml(fixture, data)
    got = values(run(NvidiaSource(Clock()), replay_host(fixture), migStrategy="mixed"))
    assert (got["nvidia.com/gpu.healthy"], got["nvidia.com/gpu.unhealthy"],
            got["nvidia.com/gpu.count"]) == ("7", "1", "7")
    assert not any(k.startswith("nvidia.com/mig-") for k in got)


def test_a_failing_fabric_probe_costs_only_the_clique(tmp_path: Path) -> None:
    fixture = copy_fixture("dgx-b200", tmp_path)
    data = fixture_data("dgx-b200")
    gpu_node(data, 4)["nvmlDeviceGetGpuFabricInfo"] = {"error": "UNKNOWN"}
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    expected = expected_nvidia(FIXTURES / "dgx-b200")
    del expected["nvidia.com/gpu.clique"]
    assert values(result) == expected and not result.complete


def test_an_older_driver_without_the_v1_fabric_call(tmp_path: Path) -> None:
    fixture = copy_fixture("dgx-b200", tmp_path)
    data = fixture_data("dgx-b200")
    data["missing"] = ["nvmlDeviceGetGpuFabricInfo"]
    for index in range(8):
        node = gpu_node(data, index)
        node["nvmlDeviceGetGpuFabricInfoV"] = {**node.pop("nvmlDeviceGetGpuFabricInfo"),
                                              "healthMask": 0}
    write_nvml(fixture, data)
    source = NvidiaSource(Clock())
    result = run(source, replay_host(fixture))
    assert values(result) == expected_nvidia(FIXTURES / "dgx-b200")
    assert source.session.fake.unanswered == []


def test_cliques_that_disagree_are_left_out_with_a_warning(tmp_path: Path) -> None:
    fixture = copy_fixture("dgx-b200", tmp_path)
    data = fixture_data("dgx-b200")
    gpu_node(data, 7)["nvmlDeviceGetGpuFabricInfo"]["cliqueId"] = 2
    write_nvml(fixture, data)
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    assert "nvidia.com/gpu.clique" not in values(result)
    assert any("disagree on their NVLink clique" in w for w in result.warnings)


def test_a_driver_version_gfd_would_die_on(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    write_nvml(fixture, {**fixture_data("seed-t4-ubuntu2204"),
                         "nvmlSystemGetDriverVersion": "535"})
    result = run(NvidiaSource(Clock()), replay_host(fixture))
    got = values(result)
    assert not any(k.startswith("nvidia.com/cuda.driver") for k in got)
    assert got["nvidia.com/cuda.runtime-version.full"] == "12.2"
    assert got["nvidia.com/gpu.product"] == "Tesla-T4"
    assert any("'535' does not have two or three parts" in w for w in result.warnings)


def test_a_display_gpu_is_not_counted(tmp_path: Path) -> None:
    fixture = copy_fixture("seed-t4-ubuntu2204", tmp_path)
    data = fixture_data("seed-t4-ubuntu2204")
    data["nvmlDeviceGetCount_v2"] = 3
    data["nvmlDeviceGetHandleByIndex_v2"]["2"] = {"nvmlDeviceGetName": "NVIDIA DGX Display"}
    write_nvml(fixture, data)
    assert values(run(NvidiaSource(Clock()), replay_host(fixture))) == T4_LABELS


# -- sharing from the config ----------------------------------------------------------------


def test_time_slicing_from_the_config() -> None:
    sharing = {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}
    got = values(run(NvidiaSource(), replay("dgx-h100"), sharing=sharing))
    assert (got["nvidia.com/gpu.replicas"], got["nvidia.com/gpu.sharing-strategy"],
            got["nvidia.com/gpu.product"], got["nvidia.com/gpu.count"]) == (
        "4", "time-slicing", "NVIDIA-H100-80GB-HBM3-SHARED", "8")


def test_mps_with_mig_enabled_is_false_with_a_warning() -> None:
    sharing = {"mps": {"resources": [{"name": "gpu", "replicas": 2}]}}
    result = run(NvidiaSource(), replay("dgx-a100-mig-mixed"), sharing=sharing)
    assert values(result)["nvidia.com/mps.capable"] == "false"
    assert any("MPS sharing does not work with MIG" in w for w in result.warnings)
    got = values(run(NvidiaSource(), replay("dgx-h100"), sharing=sharing))
    assert got["nvidia.com/mps.capable"] == "true"
    assert got["nvidia.com/gpu.sharing-strategy"] == "mps"


@pytest.mark.parametrize(("options", "problem"), [
    ({"migStrategy": "bogus"}, "sources.nvidia.migStrategy: must be one of none, single, mixed"),
    ({"nvmlTimeout": 0}, "sources.nvidia.nvmlTimeout: must be a positive number"),
    ({"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "replicas": 1}]}}},
     "sources.nvidia.sharing.timeSlicing.resources[0].replicas: must be an integer of at "
     "least 2"),
    ({"sharing": {"mps": {"resources": [{"replicas": 2}]}}},
     "sources.nvidia.sharing.mps.resources[0].name: must be a non-empty string"),
    ({"sharing": {"mps": {"resources": [{"name": "gpu", "replicas": 2, "count": 1}]}}},
     "sources.nvidia.sharing.mps.resources[0].count: unknown key"),
    ({"sharing": {"mps": {"resources": ["gpu"]}}},
     "sources.nvidia.sharing.mps.resources[0]: must be a mapping"),
    ({"sharing": {"mps": {"resources": [{"name": "gpu", "replicas": 2, "devices": "some"}]}}},
     "devices: must be 'all' or a list"),
    ({"sharing": {"timeSlicing": {"renameByDefault": "yes"}}},
     "sources.nvidia.sharing.timeSlicing.renameByDefault: expected a boolean"),
    ({"sharing": {"timeslicing": {}}}, "sources.nvidia.sharing.timeslicing: unknown key"),
])
def test_config_problems_name_the_option(options: dict, problem: str) -> None:
    from nodefeatures.discovery.config import ConfigError

    source = NvidiaSource()
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        build({"sources": {"nvidia": options}}, {"nvidia": source})


def test_a_good_sharing_config_is_accepted() -> None:
    source = NvidiaSource()
    config = build({"sources": {"nvidia": {"migStrategy": "mixed", "sharing": {
        "timeSlicing": {"renameByDefault": True, "resources": [
            {"name": "nvidia.com/gpu", "replicas": 10, "devices": "all"},
            {"name": "mig-1g.5gb", "replicas": 2, "rename": "x", "devices": [0, "GPU-1"]}]}}}}},
        {"nvidia": source})
    assert config.options("nvidia")["sharing"]["mps"]["resources"] == []

