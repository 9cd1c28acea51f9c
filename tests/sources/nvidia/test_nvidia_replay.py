"""Capture and replay go through the same boundary: capturing a node whose native library
is a replayed fixture writes back the fixture's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from gpufixtures import FIXTURES, expected_nvidia, fixture_data, nvml_fixtures, run, values

from nodefeatures.cli import main
from nodefeatures.discovery.fixture import read_labels, replay_host
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.source import Host
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia.replay import loads


@pytest.mark.parametrize("fixture", nvml_fixtures(), ids=lambda p: p.name)
def test_capture_of_a_replayed_node_gives_the_same_answers(fixture: Path, fake_lib,
                                                           tmp_path: Path) -> None:
    lib = fake_lib(fixture_data(fixture.name))
    host = Host(root=HostRoot(fixture / "root"), capture_dir=tmp_path)
    captured = run(NvidiaSource(), host)
    assert lib.unanswered == [] and lib.callback_errors == []
    recorded = loads((tmp_path / "nvml.json").read_text())
    assert recorded == fixture_data(fixture.name)
    assert values(captured) == expected_nvidia(fixture)


def test_capture_on_a_node_without_the_library_writes_no_nvml_json(tmp_path: Path) -> None:
    host = Host(root=HostRoot(FIXTURES / "seed-t4-ubuntu2204" / "root"), capture_dir=tmp_path)
    result = run(NvidiaSource(), host)
    assert values(result) == {"nvidia.com/gpu.present": "true"}
    assert not (tmp_path / "nvml.json").exists()  # absent nvml.json replays as no library


def test_capture_records_a_failed_init(fake_lib, tmp_path: Path) -> None:
    data = {**fixture_data("seed-t4-ubuntu2204"),
            "nvmlInitWithFlags": {"error": "DRIVER_NOT_LOADED"}}
    fake_lib(data)
    host = Host(root=HostRoot(FIXTURES / "seed-t4-ubuntu2204" / "root"), capture_dir=tmp_path)
    run(NvidiaSource(), host)
    assert json.loads((tmp_path / "nvml.json").read_text()) == {
        "format": 1, "nvmlInitWithFlags": {"error": "DRIVER_NOT_LOADED"}}


def test_cli_capture_then_dump_replays_the_node(fake_lib, tmp_path: Path) -> None:
    name = "dgx-a100-mig-mixed"
    fake_lib(fixture_data(name))
    target = tmp_path / "captured"
    runner = CliRunner()
    captured = runner.invoke(main, ["capture", "--root", str(FIXTURES / name / "root"),
                                    "--source", "nvidia", "--source", "system", str(target)])
    assert captured.exit_code == 0, captured.output
    assert loads((target / "nvml.json").read_text()) == fixture_data(name)
    # the two captured sources' share of the golden labels
    assert read_labels(target) == {
        key: value for key, value in read_labels(FIXTURES / name).items()
        if key.startswith(("nvidia.com/", "feature.node.kubernetes.io/system-"))
    }
    # the recorded tree alone (root/ and nvml.json) replays to the same labels, any strategy
    for strategy in ("none", "mixed", "single"):
        fresh = run(NvidiaSource(), replay_host(target), migStrategy=strategy)
        original = run(NvidiaSource(), replay_host(FIXTURES / name), migStrategy=strategy)
        assert values(fresh) == values(original)
    dumped = runner.invoke(main, ["dump", "--fixture", str(target), "--format", "json",
                                  "--mig-strategy", "mixed"])
    assert dumped.exit_code == 0
    assert json.loads(dumped.stdout)["nvidia.com/mig-4c.7g.40gb.count"] == "1"


@pytest.mark.parametrize("kind", ["nested", "oversized"])
def test_an_unusable_nvml_json_is_a_named_failure_not_a_crash_or_a_memory_spike(
        tmp_path: Path, kind: str) -> None:
    import shutil

    fixture = tmp_path / "fixture"
    shutil.copytree(FIXTURES / "seed-t4-ubuntu2204", fixture)
    nvml = fixture / "nvml.json"
    if kind == "nested":
        nvml.write_text("[" * 200_000 + "]" * 200_000)
    else:
        with nvml.open("wb") as stream:
            stream.truncate(3 << 30)  # sparse: 3 GiB read whole before
    result = run(NvidiaSource(), replay_host(fixture))
    assert result.error is None
    assert any("nvml.json" in w and ("nested too deeply" in w or "larger than" in w)
               for w in result.warnings), result.warnings
