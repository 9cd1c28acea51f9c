"""GFD's config file and environment variables work as they are, with GFD's precedence."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from testpaths import FIXTURES

from nodefeatures.cli import main
from nodefeatures.discovery.config import ConfigError
from nodefeatures.discovery.effective import load
from nodefeatures.discovery.run import load_sources

HERE = Path(__file__).parent
GFD_CONF = HERE / "gfd-config.yaml"
SOURCES, _ = load_sources()


def _load(env: dict[str, str], path: Path | str | None = None, **kw: Any):
    return load(path, SOURCES, env=env, **kw)


def _nvidia(env: dict[str, str], path: Path | str | None = None) -> dict[str, Any]:
    return _load(env, path).options("nvidia")


def _problem(env: dict[str, str], path: Path | str | None = None, **kw: Any) -> str:
    with pytest.raises(ConfigError) as error:
        _load(env, path, **kw)
    return str(error.value)


def _check_fixture(config: Any) -> None:
    nvidia = config.options("nvidia")
    assert nvidia["migStrategy"] == "single"
    assert nvidia["timestampLabel"] is False  # flags.gfd.noTimestamp: true
    assert config.core["sleepInterval"] == 120
    assert nvidia["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}]
    noticed = sorted(n.split(": ")[1].split(" ")[0] for n in config.notices)
    assert noticed == ["flags.failOnInitError", "flags.gfd.outputFile",
                       "flags.useNodeFeatureAPI"]


def test_gfd_config_file_given_as_config_is_recognised_by_its_version() -> None:
    _check_fixture(_load({}, GFD_CONF))


def test_gfd_config_file_beside_our_config(tmp_path: Path) -> None:
    ours = tmp_path / "config.yaml"
    ours.write_text("core:\n  labelWhiteList: '^nvidia|^cpu'\nsources:\n  nvidia:\n"
                    "    migStrategy: mixed\n    nvmlTimeout: 5\n")
    config = _load({}, ours, gfd_path=GFD_CONF)
    _check_fixture(config)  # GFD's file wins for what it says ...
    assert config.core["labelWhiteList"] == "^nvidia|^cpu"  # ... and the rest stays
    assert config.options("nvidia")["nvmlTimeout"] == 5


@pytest.mark.parametrize("variable", ["GFD_CONFIG_FILE", "CONFIG_FILE"])
def test_gfd_config_file_from_gfds_environment(variable: str) -> None:
    _check_fixture(_load({variable: str(GFD_CONF)}))


def test_two_gfd_files_are_refused() -> None:
    assert "name one of them" in _problem({}, GFD_CONF, gfd_path=GFD_CONF)


@pytest.mark.parametrize(("env", "key", "value"), [
    ({"GFD_MIG_STRATEGY": "single"}, "migStrategy", "single"),
    ({"MIG_STRATEGY": "mixed"}, "migStrategy", "mixed"),
    ({"GFD_MIG_STRATEGY": "single", "MIG_STRATEGY": "mixed"}, "migStrategy", "single"),
    ({"GFD_NO_TIMESTAMP": "true"}, "timestampLabel", False),
    ({"GFD_NO_TIMESTAMP": "false"}, "timestampLabel", True),
    ({"GFD_NO_TIMESTAMP": "0"}, "timestampLabel", True),
    ({"GFD_MACHINE_TYPE_FILE": "/etc/machine-type"}, "machineTypeFile", "/etc/machine-type"),
    ({}, "migStrategy", "none"),
])
def test_each_gfd_variable_sets_its_option(env: dict[str, str], key: str, value: Any) -> None:
    assert _nvidia(env)[key] == value


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("90s", 90), ("1h", 3600),
                                              ("infinite", 86400)])
def test_gfd_sleep_interval(text: str, seconds: int) -> None:
    config = _load({"GFD_SLEEP_INTERVAL": text})
    assert config.core["sleepInterval"] == seconds
    assert any("label once" in n for n in config.notices) == (text == "infinite")


def test_gfd_oneshot() -> None:
    assert _load({"GFD_ONESHOT": "true"}).oneshot is True
    assert _load({"GFD_ONESHOT": "false"}).oneshot is False
    assert _load({}).oneshot is False


@pytest.mark.parametrize(("env", "noticed"), [
    ({"GFD_FAIL_ON_INIT_ERROR": "false"}, "GFD_FAIL_ON_INIT_ERROR"),
    ({"FAIL_ON_INIT_ERROR": "true"}, "FAIL_ON_INIT_ERROR"),
    ({"GFD_USE_NODE_FEATURE_API": "true"}, "GFD_USE_NODE_FEATURE_API"),
    ({"USE_NODE_FEATURE_API": "false"}, "USE_NODE_FEATURE_API"),
    ({"GFD_OUTPUT_FILE": "/tmp/gfd"}, "GFD_OUTPUT_FILE"),
    ({"DEVICE_DISCOVERY_STRATEGY": "tegra"}, "DEVICE_DISCOVERY_STRATEGY=tegra"),
])
def test_variables_without_meaning_here_are_noticed(env: dict[str, str], noticed: str) -> None:
    notices = _load(env).notices
    assert [n for n in notices if n.startswith(f"{noticed} is accepted and ignored")], notices


def test_an_automatic_device_discovery_strategy_needs_no_notice() -> None:
    assert _load({"DEVICE_DISCOVERY_STRATEGY": "auto"}).notices == []


@pytest.mark.parametrize(("env", "message"), [
    ({"GFD_MIG_STRATEGY": "bogus"}, "GFD_MIG_STRATEGY: must be one of none, single, mixed"),
    ({"GFD_ONESHOT": "yes"}, "GFD_ONESHOT: expected a boolean"),
    ({"GFD_SLEEP_INTERVAL": "60"}, "GFD_SLEEP_INTERVAL: not a duration"),
    ({"GFD_SLEEP_INTERVAL": "0s"}, "GFD_SLEEP_INTERVAL: must be between 1s and 24h"),
    ({"GFD_SLEEP_INTERVAL": "48h"}, "GFD_SLEEP_INTERVAL: must be between 1s and 24h"),
    ({"DEVICE_DISCOVERY_STRATEGY": "magic"}, "DEVICE_DISCOVERY_STRATEGY: must be one of"),
])
def test_bad_variables_are_refused_naming_the_variable(env: dict[str, str],
                                                       message: str) -> None:
    assert message in _problem(env)


def test_environment_wins_over_the_file_as_in_gfd() -> None:
    env = {"GFD_MIG_STRATEGY": "mixed", "GFD_NO_TIMESTAMP": "false",
           "GFD_SLEEP_INTERVAL": "3m"}
    config = _load(env, GFD_CONF)
    assert config.options("nvidia")["migStrategy"] == "mixed"
    assert config.options("nvidia")["timestampLabel"] is True
    assert config.core["sleepInterval"] == 180


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gfd.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("version: v2\n", "version: must be v1"),
    ("version: v1\nflags:\n  gfd:\n    sleepIntervall: 60s\n",
     "flags.gfd.sleepIntervall: unknown key"),
    ("version: v1\nflags:\n  migStrategy: [single]\n",
     "flags.migStrategy: expected a string, got a list"),
    ("version: v1\nflags:\n  gfd:\n    sleepInterval: 60\n", "a number is nanoseconds there"),
    ("version: v1\nsharing:\n  timeslicing: {}\n", "sharing.timeslicing: unknown key"),
    ("version: v1\nsharing:\n  mps:\n    renameByDefault: true\n",
     "sharing.mps.resources: GFD needs a non-empty list"),
    ("version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: gpu\n      "
     "replicas: 1\n", "sharing.timeSlicing.resources[0].replicas: must be an integer of at "
     "least 2"),
    ("version: v1\nbogus: 1\n", "bogus: unknown key"),
    ("version: v1\nimex:\n  channels: [0]\n", "imex.channels: unknown key"),
])
def test_bad_gfd_files_are_refused_with_the_path(tmp_path: Path, text: str,
                                                 message: str) -> None:
    message_seen = _problem({}, _write(tmp_path, text))
    assert message in message_seen
    assert "gfd.yaml" in message_seen


def test_sharing_takes_gfds_defaults_and_limits(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: v1\nsharing:\n  mps:\n    resources:\n"
                            "    - name: nvidia.com/gpu\n      replicas: 2\n"
                            "      rename: gpu.shared\n      devices: [0]\n")
    config = _load({}, path)
    mps = config.options("nvidia")["sharing"]["mps"]
    assert mps["failRequestsGreaterThanOne"] is True  # GFD's default for MPS
    assert mps["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert sorted(n.split(" ")[0] for n in config.notices) == [
        f"{path}:", f"{path}:"]
    assert all("as GFD ignores it" in n for n in config.notices)


def _dump(env: dict[str, str], *args: str) -> dict[str, str]:
    result = CliRunner(env=env).invoke(main, ["dump", "--format", "json", "--source",
                                              "nvidia", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_gfd_mig_strategy_reaches_the_labels_and_a_flag_still_wins() -> None:
    fixture = str(FIXTURES / "dgx-a100-mig-single")
    assert "nvidia.com/mig.strategy" not in _dump({}, "--fixture", fixture)
    single = _dump({"GFD_MIG_STRATEGY": "single"}, "--fixture", fixture)
    assert single["nvidia.com/mig.strategy"] == "single"
    assert single["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    flagged = _dump({"GFD_MIG_STRATEGY": "single"}, "--fixture", fixture,
                    "--mig-strategy", "mixed")
    assert flagged["nvidia.com/mig.strategy"] == "mixed"
    shared = _dump({}, "--fixture", fixture, "--config", str(GFD_CONF))
    assert shared["nvidia.com/gpu.replicas"] == "4"
    assert shared["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED"


def test_oneshot_run_labels_once_and_exits(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_ID=12\n")
    target = tmp_path / "out" / "nodefeatures"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nodefeatures", "run", "--root", str(root), "--source", "system",
         "--output-file", str(target), "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"GFD_ONESHOT": "true", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    assert "system-os_release.ID=debian" in target.read_text()
    assert "oneshot" in done.stderr


def test_config_effective_prints_the_merged_configuration_in_force(tmp_path: Path) -> None:
    import yaml

    result = CliRunner(env={"GFD_SLEEP_INTERVAL": "3m"}).invoke(
        main, ["config", "--effective", "--config", str(HERE / "nfd-worker.conf"),
               "--gfd-config", str(GFD_CONF)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["core"]["sleepInterval"] == 180  # GFD's variable over both files
    assert shown["core"]["featureSources"] == ["all", "-memory"]
    assert shown["sources"]["nvidia"]["migStrategy"] == "single"
    # The rules as the config file writes them: a list, the names as given.
    assert "uses the rule above" in [rule["name"] for rule in shown["sources"]["custom"]]
    bad = tmp_path / "bad.yaml"
    bad.write_text("core:\n  sleepInterval: soon\n")
    failed = CliRunner().invoke(main, ["config", "--effective", "--config", str(bad)])
    assert failed.exit_code == 2
    assert "core.sleepInterval: not a duration" in failed.output
    assert CliRunner().invoke(main, ["config"]).exit_code == 2


def test_gfd_files_have_the_same_bounds_as_ours(tmp_path: Path) -> None:
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    body = "\n".join(f"    {line}" for line in lines)
    bomb = _write(tmp_path, f"version: v1\nimex:\n  channelIDs:\n{body}\n")
    assert "too large: more than 100000 values" in _problem({}, bomb)
    big = _write(tmp_path, "version: v1\n" + "#" * (1 << 20))
    assert "larger than 1048576 bytes" in _problem({}, big)
    deep = _write(tmp_path, "version: v1\nflags: " + "[" * 40 + "]" * 40 + "\n")
    assert "nested too deeply" in _problem({}, deep)


def test_config_effective_output_loads_again_as_the_same_configuration(tmp_path: Path) -> None:
    import yaml

    first = CliRunner().invoke(main, ["config", "--effective", "--config",
                                      str(HERE / "nfd-worker.conf")])
    assert first.exit_code == 0, first.output
    assert yaml.safe_load(first.stdout)["sources"]["custom"], "the file has custom rules"
    again = tmp_path / "effective.yaml"
    again.write_text(first.stdout)
    second = CliRunner().invoke(main, ["config", "--effective", "--config", str(again)])
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
    # --defaults and --effective write sources.custom in the same shape.
    defaults = yaml.safe_load(CliRunner().invoke(main, ["config", "--defaults"]).stdout)
    effective = yaml.safe_load(CliRunner().invoke(main, ["config", "--effective"]).stdout)
    assert defaults["sources"]["custom"] == effective["sources"]["custom"] == []
