"""The command line as a user meets it: formats, exit codes, capture and replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


def cli(*args: str, timeout: float = 30, env: dict[str, str] | None = None
        ) -> tuple[int, str, str]:
    """The real command in a real process: exit codes and stderr as a shell sees them."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.run([sys.executable, "-m", "nodefeatures", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=full_env)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_error_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("nodefeatures: error: ")]
    assert len(errors) == 1, err
    assert message in errors[0], err


NESTED_MAPPING = "{a: " * 5000 + "1" + "}" * 5000 + "\n"
NESTED_LIST = "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize(("content", "message"), [
    (NESTED_MAPPING, "nested too deeply"),
    (NESTED_LIST, "nested too deeply"),
    ("1: a\ncore: {}\n", "top level: keys must be strings, got an integer (1)"),
    ("core:\n  sleepInterval: 1" + "0" * 400 + "\n", "core.sleepInterval"),
    ("core:\n  labelWhiteList: 'a{99999999999}'\n", "core.labelWhiteList: not a valid"),
    ("- a\n- b\n", "the top level must be a mapping, not a list"),
    ("plain words\n", "the top level must be a mapping, not a string"),
    ("!!binary AAECAw==\n", "the top level must be a mapping, not bytes"),
])
def test_unusable_configs_fail_with_exit_2_and_one_line(tmp_path: Path, content: str,
                                                        message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content)
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(config))
    assert_one_error_line(code, err, message)


def test_a_huge_sleep_interval_stops_run_before_it_starts(tmp_path: Path) -> None:
    """It used to be accepted; the loop thread then died on an OverflowError and run
    exited 0."""
    config = tmp_path / "c.yaml"
    config.write_text("core:\n  sleepInterval: 1" + "0" * 400 + "\n")
    code, _, err = cli("run", "--root", str(make_host(tmp_path)), "--source", "system",
                       "--config", str(config), "--metrics-port", "0",
                       "--output-file", str(tmp_path / "out"))
    assert_one_error_line(code, err, "core.sleepInterval")
    assert not (tmp_path / "out").exists()


def test_a_binary_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(config))
    assert_one_error_line(code, err, "not UTF-8 text")


def test_a_config_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    config = tmp_path / "bomb.yaml"
    config.write_text("core:\n  labelSources:\n  - all\n  - bomb:\n"
                      + "".join(f"      {line}\n" for line in lines))
    started = time.monotonic()
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(config))
    assert time.monotonic() - started < 20
    assert_one_error_line(code, err, "too large")


def test_a_fifo_config_fails_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(fifo),
                       timeout=20)
    assert_one_error_line(code, err, "not a regular file")


def test_a_directory_config_fails(tmp_path: Path) -> None:
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(tmp_path))
    assert_one_error_line(code, err, "not a regular file")


def _explode(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom\nsecond line")


def test_an_unexpected_exception_is_exit_2_and_one_line(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from nodefeatures.discovery import run as discovery

    monkeypatch.delenv("NODEFEATURES_DEBUG", raising=False)
    monkeypatch.setattr(discovery, "run_pass", _explode)
    result = CliRunner().invoke(main, ["dump", "--root", str(make_host(tmp_path))])
    assert result.exit_code == 2
    assert result.stderr == "nodefeatures: error: RuntimeError: boom second line\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   how: str, capfd: pytest.CaptureFixture[str]) -> None:
    from nodefeatures.discovery import run as discovery

    monkeypatch.setattr(discovery, "run_pass", _explode)
    args = ["dump", "--root", str(make_host(tmp_path))]
    if how == "flag":
        args.insert(0, "--debug")
    else:
        monkeypatch.setenv("NODEFEATURES_DEBUG", "1")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Traceback" in result.stderr + capfd.readouterr().err
    assert "nodefeatures: error: RuntimeError: boom" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--root", "{tmp}/absent"], "--root '{tmp}/absent': no such directory"),
    (["--root", "{tmp}/file"], "--root '{tmp}/file': not a directory"),
    (["--root", ""], "--root: the path is empty"),
    (["--proc", "{tmp}/file"], "--proc '{tmp}/file': not a directory"),
    (["--root", "{tmp}/a\nb"], "--root '{tmp}/a\\nb': no such directory"),
    (["--config", ""], "--config: the path is empty"),
])
def test_a_bad_root_proc_or_config_path_is_an_error(tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    """A root that is not a directory used to give a node almost no labels, and exit 0."""
    (tmp_path / "file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run("dump", "--source", "system", *args)
    assert code == 2 and out == ""
    assert err == f"nodefeatures: error: {message.replace('{tmp}', str(tmp_path))}\n"


def test_dev_null_is_an_empty_config(tmp_path: Path) -> None:
    code, out, err = run("dump", "--root", str(make_host(tmp_path)), "--source", "system",
                         "--format", "json", "--config", os.devnull)
    assert code == 0, err
    assert json.loads(out)["feature.node.kubernetes.io/system-os_release.ID"] == "ubuntu"


def test_capture_with_a_bad_root_creates_nothing(tmp_path: Path) -> None:
    code, _, err = run("capture", "--root", str(tmp_path / "absent"), str(tmp_path / "fx"))
    assert code == 2 and "--root" in err and "no such directory" in err
    assert not (tmp_path / "fx").exists()


def test_capture_into_an_impossible_directory_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = cli("capture", "--root", str(make_host(tmp_path)), "--source", "system",
                       str(tmp_path / "file" / "fx"))
    assert_one_error_line(code, err, f"{tmp_path}/file/fx: cannot create the fixture "
                                     "directory: Not a directory")


def _shell(command: str, tmp_path: Path) -> int:
    proc = subprocess.run(["sh", "-c", command], capture_output=False, timeout=30,
                          check=False, cwd=tmp_path, stdin=subprocess.DEVNULL)
    return proc.returncode


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_error_is_exit_2_even_when_stderr_cannot_be_written(tmp_path: Path) -> None:
    """diff's error used to come out as exit 1 ("would write") when stderr was full."""
    (tmp_path / "kubeconfig").write_text("clusters: [unclosed\n")
    root = make_host(tmp_path)
    command = (f"{sys.executable} -m nodefeatures diff --node n1 --source system "
               f"--root {root} --kubeconfig kubeconfig 2>/dev/full >/dev/null")
    assert _shell(command, tmp_path) == 2


def test_a_closed_stdout_is_an_error_not_silence(tmp_path: Path) -> None:
    root = make_host(tmp_path)
    command = (f"{sys.executable} -m nodefeatures dump --source system --root {root} "
               ">&- 2>err")
    assert _shell(command, tmp_path) == 2
    assert "nodefeatures: error: standard output is closed" in (tmp_path / "err").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_config_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("core: {}\n")
    config.chmod(0)
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(config))
    assert_one_error_line(code, err, "cannot read: Permission denied")


def test_a_misspelt_label_source_is_warned_about(tmp_path: Path) -> None:
    """It used to select nothing in silence: no label, no message, exit 0."""
    config = tmp_path / "c.yaml"
    config.write_text("core:\n  labelSources: [sytem, -kernal]\n")
    code, out, err = run("dump", "--root", str(make_host(tmp_path)), "--config", str(config),
                         "--format", "json")
    assert code == 0 and json.loads(out) == {}
    assert "core.labelSources[0]: no such source 'sytem' (installed: " in err
    assert "core.labelSources[1]: no such source '-kernal'" in err
    assert "core.labelSources selects no source: no label will be published" in err


def test_known_label_sources_give_no_warning(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("core:\n  labelSources: [all, -kernel, -cpu]\n")
    code, _, err = run("dump", "--root", str(make_host(tmp_path)), "--config", str(config))
    assert code == 0 and "labelSources" not in err


def test_an_error_message_is_one_line_whatever_it_holds(tmp_path: Path) -> None:
    missing = tmp_path / "a\nnodefeatures: error: forged"
    code, _, err = cli("dump", "--root", str(make_host(tmp_path)), "--config", str(missing))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("nodefeatures: error: ") and "a\\nnodefeatures: error: forged" in err


def test_dump_nodefeature_is_the_object_nfd_worker_would_write() -> None:
    from testpaths import FIXTURES

    fixture = str(FIXTURES / "intel-spr-rhel9")
    code, out, _ = run("dump", "--fixture", fixture, "--format", "nodefeature",
                       "--node", "gpu-1", "--namespace", "nfd")
    assert code == 0
    obj = yaml.safe_load(out)
    assert (obj["apiVersion"], obj["kind"]) == ("nfd.k8s-sigs.io/v1alpha1", "NodeFeature")
    assert obj["metadata"]["name"] == "gpu-1" and obj["metadata"]["namespace"] == "nfd"
    assert obj["metadata"]["labels"] == {"nfd.node.kubernetes.io/node-name": "gpu-1"}
    code, labels, _ = run("dump", "--fixture", fixture, "--format", "json")
    assert code == 0 and obj["spec"]["labels"] == json.loads(labels)
    flags = obj["spec"]["features"]["flags"]["cpu.cpuid"]["elements"]
    prefix = "feature.node.kubernetes.io/cpu-cpuid."
    shown = {k[len(prefix):] for k in obj["spec"]["labels"] if k.startswith(prefix)}
    assert "AVX512F" in shown and shown <= set(flags) and flags["AVX512F"] == {}
    assert obj["spec"]["features"]["instances"]["pci.device"]["elements"]


def test_dump_nodefeature_names_from_the_environment_then_the_host() -> None:
    import socket

    from testpaths import FIXTURES

    args = ["dump", "--fixture", str(FIXTURES / "dgx-h100"), "--format", "nodefeature"]
    result = CliRunner().invoke(main, args, env={"NODE_NAME": "from-env",
                                                 "POD_NAMESPACE": "agents"})
    metadata = yaml.safe_load(result.stdout)["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("from-env", "agents")
    result = CliRunner().invoke(main, args, env={"NODE_NAME": None, "POD_NAMESPACE": None})
    metadata = yaml.safe_load(result.stdout)["metadata"]
    assert metadata["name"] == socket.gethostname().lower()
    assert metadata["namespace"] == "nodefeatures"


def test_dump_nodefeature_refuses_a_name_no_object_can_have() -> None:
    from testpaths import FIXTURES

    code, _, err = run("dump", "--fixture", str(FIXTURES / "dgx-h100"), "--format",
                       "nodefeature", "--node", "Bad\nName")
    assert code != 0 and "'Bad\\nName'" in err and "\n" not in err.strip()


def test_help_imports_neither_the_api_client_nor_the_cluster_side() -> None:
    """`--help` pays for the command line only (bench/startup.py measures the time)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "nodefeatures", "--help"],
                          capture_output=True, text=True, check=True)
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:")}
    heavy = {m for m in modules if m == "kubernetes" or m.startswith("kubernetes.")
             or m in ("nodefeatures.cluster.kube", "nodefeatures.cluster.reconcile",
                      "nodefeatures.cluster.agent", "pynvml", "prometheus_client")}
    assert "nodefeatures.cli" in modules
    assert heavy == set()
