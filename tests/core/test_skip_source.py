"""--skip-source: a source that never runs, while the config file keeps serving it.

deploy/gpu runs the base agent with --skip-source=nvidia beside the GPU agent
(--source=nvidia), both reading one config file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nodefeatures.cli import main
from nodefeatures.sources.nvidia import NvidiaSource

OS_ID = "feature.node.kubernetes.io/system-os_release.ID"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def make_host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    features = root / "etc/kubernetes/node-feature-discovery/features.d"
    features.mkdir(parents=True)
    (features / "vendor").write_text("vendor.io/x=1\n")
    return root


@pytest.fixture
def nvidia_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of the nvidia source's discover (where NVML would be asked)."""
    calls: list[str] = []
    original = NvidiaSource.discover

    def discover(self: NvidiaSource, ctx: Any) -> Any:
        calls.append(ctx.source)
        return original(self, ctx)

    monkeypatch.setattr(NvidiaSource, "discover", discover)
    return calls


def test_a_skipped_source_never_runs(tmp_path: Path, nvidia_calls: list[str]) -> None:
    host = str(make_host(tmp_path))
    code, out, err = run("dump", "--root", host, "--format", "json")
    assert code == 0, err
    assert len(nvidia_calls) == 1  # without the option it runs
    code, out, err = run("dump", "--root", host, "--format", "json",
                         "--skip-source", "nvidia")
    assert code == 0, err
    assert len(nvidia_calls) == 1
    labels = json.loads(out)
    # Everything else still runs, vendor namespaces of features.d included.
    assert labels[OS_ID] == "ubuntu" and labels["vendor.io/x"] == "1"


def test_it_combines_with_source_and_repeats(tmp_path: Path, nvidia_calls: list[str]) -> None:
    host = str(make_host(tmp_path))
    code, out, err = run("dump", "--root", host, "--format", "json", "--source", "system",
                         "--source", "local", "--source", "nvidia",
                         "--skip-source", "nvidia", "--skip-source", "local")
    assert code == 0, err
    assert not nvidia_calls
    labels = json.loads(out)
    assert OS_ID in labels and "vendor.io/x" not in labels
    assert {key.split("/")[1].split("-")[0] for key in labels} == {"system"}


def test_skipping_every_chosen_source_is_an_error(tmp_path: Path) -> None:
    code, _, err = run("dump", "--root", str(make_host(tmp_path)), "--source", "system",
                       "--skip-source", "system")
    assert code == 2
    assert err.strip() == ("nodefeatures: error: --skip-source skips every --source: no "
                           "source would run")


@pytest.mark.parametrize("command", [["dump"], ["apply", "--node", "n1"], ["run"]])
def test_an_unknown_name_is_an_error_before_anything_runs(command: list[str]) -> None:
    code, _, err = run(*command, "--skip-source", "nvidai")
    assert code == 2
    assert err.startswith("nodefeatures: error: --skip-source 'nvidai': no such source "
                          "(installed: ")
    assert "nvidia" in err and len(err.strip().splitlines()) == 1


def test_the_config_in_force_switches_it_off_as_nfd_would() -> None:
    from nodefeatures.cli.options import HostChoice

    sources, cfg = HostChoice("/", None, "/dev/null", (), None, None, ("nvidia",)).prepare()
    assert "nvidia" not in sources and "system" in sources
    assert cfg.core["labelSources"] == ["all", "-nvidia"]
    assert "nvidia" not in cfg.enabled(["system", "nvidia"])
    assert "nvidia" not in cfg.discovers(["system", "nvidia"])


def test_the_skipped_sources_config_section_is_still_checked(tmp_path: Path) -> None:
    host = str(make_host(tmp_path))
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("sources:\n  nvidia:\n    migStrategy: single\n")
    bad.write_text("sources:\n  nvidia:\n    migStrategy: sometimes\n")
    code, _, err = run("dump", "--root", host, "--config", str(good), "--skip-source",
                       "nvidia")
    assert code == 0, err
    code, _, err = run("dump", "--root", host, "--config", str(bad), "--skip-source",
                       "nvidia")
    assert code == 2 and "sources.nvidia.migStrategy" in err


def test_one_config_serves_agents_that_run_different_sources(tmp_path: Path) -> None:
    """The GPU agent (--source nvidia) reads the base agent's config, sections of other
    sources included; a wrong key in them is still an error."""
    host = str(make_host(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  system:\n    labelWhiteList: []\n")
    code, _, err = run("dump", "--root", host, "--config", str(config), "--source", "nvidia")
    assert code == 2 and "sources.system" in err  # an unknown key of a known source
    config.write_text("sources:\n  local:\n    hooksEnabled: false\n"
                      "  cpu:\n    cpuid:\n      attributeBlacklist: []\n")
    code, _, err = run("dump", "--root", host, "--config", str(config), "--source", "nvidia")
    assert code == 0, err
    config.write_text("sources:\n  cpux: {}\n")
    code, _, err = run("dump", "--root", host, "--config", str(config), "--source", "nvidia")
    assert code == 2 and "sources.cpux: no such source" in err
