"""Golden fixtures: every GPU fixture replays to the nvidia.com labels of its labels.json,
and the MIG strategies to their hand-worked expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpufixtures import EXPECTED, FIXTURES, expected_nvidia, gpu_fixtures, replay, run, values

from nodefeatures.discovery.labels import key_error, value_error
from nodefeatures.sources.nvidia import NvidiaSource


@pytest.mark.parametrize("fixture", gpu_fixtures(), ids=lambda p: p.name)
def test_fixture_replays_to_its_nvidia_labels(fixture: Path) -> None:
    source = NvidiaSource()
    result = run(source, replay(fixture.name))
    assert result.error is None
    assert values(result) == expected_nvidia(fixture)
    for key, value in values(result).items():
        assert key_error(key) is None and value_error(value) is None
    fake = source.session.fake if (fixture / "nvml.json").is_file() else None
    if fake is not None:
        assert fake.callback_errors == []
        assert fake.unanswered == [], "the fixture lacks answers the source asks for"


def test_there_are_the_promised_fixtures() -> None:
    names = {p.name for p in gpu_fixtures()}
    assert {"seed-t4-ubuntu2204", "dgx-a100-mig-mixed", "dgx-a100-mig-single", "dgx-h100",
            "hgx-h200-mig", "dgx-b200", "mixed-gpu-models", "gpu-lost-a10g",
            "gpu-driver-missing", "cpu-only-rocky9", "vgpu-guest-a10"} <= names


def test_seed_node_has_the_labels_of_the_seed_notes() -> None:
    got = values(run(NvidiaSource(), replay("seed-t4-ubuntu2204")))
    seed = {"cuda.runtime.major": "12", "cuda.runtime.minor": "2", "cuda.driver.major": "535",
            "cuda.driver.minor": "161", "gpu.product": "Tesla-T4", "gpu.memory": "15360",
            "gpu.count": "2"}
    assert {k: got["nvidia.com/" + k] for k in seed} == seed


# (fixture, strategy): hand-worked labels that the strategy adds to or changes in labels.json
STRATEGY_CASES = [
    ("dgx-a100-mig-mixed", "mixed"),
    ("dgx-a100-mig-mixed", "single"),
    ("dgx-a100-mig-single", "single"),
    ("dgx-a100-mig-single", "mixed"),
    ("hgx-h200-mig", "mixed"),
    ("hgx-h200-mig", "single"),
]


@pytest.mark.parametrize(("fixture", "strategy"), STRATEGY_CASES,
                         ids=[f"{f}-{s}" for f, s in STRATEGY_CASES])
def test_mig_strategy(fixture: str, strategy: str) -> None:
    expected = expected_nvidia(FIXTURES / fixture)
    changes = json.loads((EXPECTED / f"{fixture}.{strategy}.json").read_text())
    expected.update({"nvidia.com/" + k: v for k, v in changes.items()})
    source = NvidiaSource()
    result = run(source, replay(fixture), migStrategy=strategy)
    assert values(result) == expected
    assert source.session.fake.unanswered == []
    invalid = expected.get("nvidia.com/gpu.product", "").endswith("-MIG-INVALID")
    assert any("single MIG strategy" in w for w in result.warnings) == invalid
    assert result.complete


def test_h200_profile_needs_half_away_rounding() -> None:
    got = values(run(NvidiaSource(), replay("hgx-h200-mig"), migStrategy="mixed"))
    # 71936 MiB of 141 GiB is 4 eighths: 70.5 GB, which Go rounds to 71 and round() to 70
    assert "nvidia.com/mig-3g.71gb.count" in got
    assert "nvidia.com/mig-3g.70gb.count" not in got


def test_lost_gpu_is_counted_apart_and_warned_about() -> None:
    result = run(NvidiaSource(), replay("gpu-lost-a10g"))
    assert [w for w in result.warnings if "unhealthy" in w] == [
        "GPU 2 (no PCI address) is unhealthy: handle: NVML_ERROR_GPU_IS_LOST"]
    assert result.complete  # NVML answered: a lost GPU is a fact, not a failed pass


def test_names_that_lose_characters_are_warned_about() -> None:
    result = run(NvidiaSource(), replay("mixed-gpu-models"))
    assert any("'NVIDIA TITAN X (Pascal)'" in w and "NVIDIA-TITAN-X-Pascal" in w
               for w in result.warnings)
    assert any("'X9SRA/X9SRA-3'" in w and "X9SRAX9SRA-3" in w for w in result.warnings)


def test_driver_missing_keeps_previous_labels_and_says_why() -> None:
    result = run(NvidiaSource(), replay("gpu-driver-missing"))
    assert values(result) == {"nvidia.com/gpu.present": "true"}
    assert not result.complete
    assert len(result.warnings) == 1
    assert "0000:00:04.0" in result.warnings[0] and "NVML" in result.warnings[0]


def test_no_nvidia_device_is_positive_evidence(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    result = run(NvidiaSource(), replay("cpu-only-rocky9"))
    assert values(result) == {}
    assert result.complete and result.warnings == []
    notes = [r.getMessage() for r in caplog.records if "nvidia" in r.getMessage()]
    assert len(notes) == 1 and "no NVIDIA GPU on the PCI bus" in notes[0]


def test_the_nvswitch_and_audio_functions_are_not_gpus() -> None:
    source = NvidiaSource()
    run(source, replay("dgx-a100-mig-mixed"))
    scan = source.pci.scan(replay("dgx-a100-mig-mixed").root)
    assert len(scan.gpus) == 8  # two NVSwitches (class 0x068000) left out
    scan = source.pci.scan(replay("mixed-gpu-models").root)
    assert [g.address for g in scan.gpus] == ["0000:02:00.0", "0000:03:00.0", "0000:04:00.0"]
