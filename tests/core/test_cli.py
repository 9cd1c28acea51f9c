"""The command line as a user meets it: formats, exit codes, capture and replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from nodefeatures import __version__
from nodefeatures.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def make_host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    return root


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and __version__ in out


def test_json_is_only_json_on_stdout(tmp_path: Path) -> None:
    code, out, _ = run("dump", "--root", str(make_host(tmp_path)), "--format", "json",
                       "--source", "system")
    assert code == 0
    assert json.loads(out) == {
        "feature.node.kubernetes.io/system-os_release.ID": "ubuntu",
        "feature.node.kubernetes.io/system-os_release.VERSION_ID": "22.04",
        "feature.node.kubernetes.io/system-os_release.VERSION_ID.major": "22",
        "feature.node.kubernetes.io/system-os_release.VERSION_ID.minor": "04",
    }


def test_yaml_and_explain(tmp_path: Path) -> None:
    code, out, _ = run("dump", "--root", str(make_host(tmp_path)), "--format", "yaml",
                       "--explain", "--source", "system")
    assert code == 0
    data = yaml.safe_load(out)
    entry = data["feature.node.kubernetes.io/system-os_release.ID"]
    assert entry == {"value": "ubuntu", "source": "system",
                     "origin": "/etc/os-release: ID=ubuntu"}


def test_text_groups_by_source_and_explains(tmp_path: Path) -> None:
    code, out, _ = run("dump", "--root", str(make_host(tmp_path)), "--explain",
                       "--source", "system")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("system (4 labels, ")
    assert any("system-os_release.ID" in ln and "<- /etc/os-release: ID=ubuntu" in ln
               for ln in lines)


def test_unknown_source_is_an_error() -> None:
    code, _, err = run("dump", "--source", "nosuch")
    assert code == 2 and "no such source 'nosuch'" in err


def test_bad_config_is_an_error_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  system:\n    bogus: 1\n")
    code, _, err = run("dump", "--config", str(config))
    assert code == 2 and "sources.system.bogus: unknown key" in err


def test_missing_fixture_is_an_error(tmp_path: Path) -> None:
    code, _, err = run("dump", "--fixture", str(tmp_path / "absent"))
    assert code == 2 and "not a directory" in err


def test_capture_then_replay_reproduces_dump_exactly(tmp_path: Path) -> None:
    """On this machine, with every installed source: the capture round trip."""
    code, live, _ = run("dump", "--format", "json")
    assert code == 0
    code, out, _ = run("capture", str(tmp_path / "fx"))
    assert code == 0 and "captured" in out
    code, replayed, _ = run("dump", "--format", "json", "--fixture", str(tmp_path / "fx"))
    assert code == 0
    assert json.loads(replayed) == json.loads(live)
    assert json.loads((tmp_path / "fx/labels.json").read_text()) == json.loads(live)


def test_capture_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "fx").mkdir()
    (tmp_path / "fx/keep").write_text("x")
    code, _, err = run("capture", str(tmp_path / "fx"))
    assert code == 2 and "not empty" in err
    assert (tmp_path / "fx/keep").read_text() == "x"


def test_config_defaults_round_trip_as_a_valid_config(tmp_path: Path) -> None:
    code, out, _ = run("config", "--defaults")
    assert code == 0
    config = tmp_path / "defaults.yaml"
    config.write_text(out)
    code, _, err = run("dump", "--config", str(config), "--format", "json")
    assert code == 0, err


def test_sources_lists_builtins() -> None:
    code, out, _ = run("sources")
    assert code == 0 and "nodefeatures.sources.system:SystemSource" in out


def test_python_dash_m_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "nodefeatures", "--version"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_every_listed_command_loads_under_its_own_name() -> None:
    # Commands load lazily from a table; a stale entry would only fail when a user runs it.
    import click

    from nodefeatures.cli import COMMANDS

    context = click.Context(main)
    assert main.list_commands(context) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(context, name)
        assert isinstance(command, click.Command), name
        assert command.name == name
    assert main.get_command(context, "no-such-command") is None
