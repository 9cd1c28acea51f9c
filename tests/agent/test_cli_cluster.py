"""Cluster commands without a cluster: options, errors, and staying light."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nodefeatures.cli import main
from nodefeatures.cli.cluster import _Duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("60", 60.0), ("60s", 60.0), ("5m", 300.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert _Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5d", "0s", "0.2s", "-1s", "99999999h", "25h",
                                  "24h1s", "86401", "1" + "0" * 400, "9" * 400 + "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(Exception, match=r"duration|at least"):
        _Duration().convert(text, None, None)


def test_the_interval_bounds_are_inclusive() -> None:
    assert _Duration().convert("24h", None, None) == 86400.0
    assert _Duration().convert("1s", None, None) == 1.0


def test_a_huge_interval_is_refused_at_parse_time(tmp_path: Path) -> None:
    """It used to be accepted: the loop died after the first pass and run exited 0."""
    result = subprocess.run(
        [sys.executable, "-m", "nodefeatures", "run", "--root", str(tmp_path), "--source",
         "system", "--output-file", str(tmp_path / "out"), "--metrics-port", "0",
         "--interval", "99999999h"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "at most 24h" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_loop_that_dies_makes_run_fail(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from nodefeatures.cluster import agent

    def die(self: object) -> None:
        raise OverflowError("timestamp out of range for platform time_t")

    monkeypatch.setattr(agent.FileAgent, "run", die)
    monkeypatch.delenv("NODEFEATURES_DEBUG", raising=False)
    args = ["run", "--root", str(tmp_path), "--source", "system", "--output-file",
            str(tmp_path / "out"), "--metrics-port", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert ("nodefeatures: error: the agent loop stopped on an unexpected error after 0 "
            "writes: OverflowError: timestamp out of range") in result.stderr
    assert "Traceback" not in result.stderr
    debugged = CliRunner().invoke(main, ["--debug", *args])
    assert debugged.exit_code == 2
    assert "Traceback" in debugged.stderr and "in die" in debugged.stderr


def _diff_with(kubeconfig: Path | str, tmp_path: Path,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items()
                if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    args = [sys.executable, "-m", "nodefeatures", "diff", "--node", "n1", "--root",
            str(tmp_path), "--source", "system"]
    if kubeconfig:
        args += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(args, capture_output=True, text=True, timeout=20,
                          env={**full_env, **(env or {})})


@pytest.mark.parametrize(("content", "message"), [
    ("clusters: [unclosed\n", "malformed kubeconfig (ParserError"),
    ("clusters: 5\n", "malformed kubeconfig (TypeError"),
    ("- just\n- a list\n", "cannot load cluster credentials"),
    ("\x00\x01binary", "cannot load cluster credentials"),
])
def test_a_malformed_kubeconfig_is_exit_2_never_would_write(tmp_path: Path, content: str,
                                                             message: str) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(content)
    result = _diff_with(config, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "nodefeatures: error: cannot load cluster credentials")
    assert message in result.stderr


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 [{name: k, cluster: {server: "https://h"}}, "lol", "lol", "lol", "lol", '
             '"lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "x:\n" + "".join(f"  {line}\n" for line in lines)


@pytest.mark.parametrize(("content", "message"), [
    (_laughs(9) + "clusters: *l8\ncontexts: *l8\nusers: *l8\n",
     "its aliases expand to more than 1000000 values"),
    ("clusters: &c [{name: k, cluster: {server: 'https://h'}}, *c]\n",
     "its aliases expand to more than 1000000 values"),
    ("clusters: " + "[" * 5000 + "]" * 5000 + "\n", "RecursionError"),
])
def test_a_hostile_kubeconfig_is_refused_quickly(tmp_path: Path, content: str,
                                                 message: str) -> None:
    """Nine levels of ten aliases used to take the client's loader past 1.5 GB and 30 s."""
    config = tmp_path / "kubeconfig"
    config.write_text(content)
    started = time.monotonic()
    result = _diff_with(config, tmp_path)
    assert time.monotonic() - started < 15
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot load cluster credentials" in result.stderr and message in result.stderr


def test_a_kubeconfig_with_ordinary_aliases_still_loads(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from nodefeatures.cluster.kube import connect

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: &srv {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: 't*t'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nextra: *srv\n")
    assert connect(str(config)).configuration.host == "https://127.0.0.1:1"


@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_kubeconfig_that_is_a_directory_or_fifo_fails_without_hanging(
        tmp_path: Path, via: str) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        if via == "flag":
            result = _diff_with(path, tmp_path)
        else:
            result = _diff_with("", tmp_path, env={"KUBECONFIG": str(path)})
        assert result.returncode == 2, result.stderr
        assert f"cannot load cluster credentials: {path}: not a regular file" in result.stderr


def test_node_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    result = CliRunner().invoke(main, ["diff", "--source", "system"])
    assert result.exit_code == 2
    assert "no node given: use --node NAME or set NODE_NAME" in result.output


@pytest.mark.parametrize("name", ["a\nb", "../x", "Node1", "a" * 254, "-a", "a_b"])
@pytest.mark.parametrize("command", ["diff", "apply", "prune", "run"])
def test_an_impossible_node_name_is_refused_before_any_request(name: str,
                                                               command: str) -> None:
    result = CliRunner().invoke(main, [command, "--node", name, "--source", "system",
                                       "--kubeconfig", "/nonexistent"]
                                if command != "prune" else
                                [command, "--node", name, "--kubeconfig", "/nonexistent"])
    assert result.exit_code == 2
    assert "not a valid Node name" in result.stderr
    assert "credentials" not in result.stderr
    assert "\n" not in result.stderr.rstrip("\n")


def test_bad_managed_prefix_is_refused() -> None:
    result = CliRunner().invoke(main, ["prune", "--node", "n1", "--managed-prefix", "Bad"])
    assert result.exit_code == 2
    assert "--managed-prefix 'Bad'" in result.output


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(main, ["prune", "--node", "n1", "--kubeconfig",
                                       str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "cannot load cluster credentials" in result.output


def test_dump_never_imports_kubernetes() -> None:
    code = ("import sys; from nodefeatures.cli import main\n"
            "try:\n    main(['dump', '--source', 'system'])\nexcept SystemExit: pass\n"
            "assert 'kubernetes' not in sys.modules, 'dump imported kubernetes'\n"
            "assert 'prometheus_client' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_agent_loads_the_client_without_its_generated_models(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    code = (
        "import sys\n"
        "from nodefeatures.cluster.kube import connect\n"
        f"client = connect({str(config)!r})\n"
        "assert client.configuration.host == 'https://127.0.0.1:1'\n"
        "assert 'kubernetes.client.models.v1_node' not in sys.modules\n"
        "status = open('/proc/self/status').read()\n"
        "rss = int(status.split('VmRSS:')[1].split()[0]) // 1024\n"
        "print(rss)\n"
        # Anything else in the process may still use the full client afterwards.
        "from kubernetes import client as full\n"
        "assert full.V1Node(metadata=full.V1ObjectMeta(name='x')).metadata.name == 'x'\n"
        "assert full.CoreV1Api\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 45  # MiB; the whole package would be ~68


def test_output_file_mode_runs_without_a_cluster(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=debian\nVERSION_ID=12\n")
    target = tmp_path / "features.d" / "nodefeatures"
    process = subprocess.Popen(
        [sys.executable, "-m", "nodefeatures", "run", "--root", str(root), "--source", "system",
         "--output-file", str(target), "--metrics-port", "0", "--interval", "1s"],
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not target.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no file written"
            time.sleep(0.05)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=5)
    assert process.returncode == 0, err
    assert "feature.node.kubernetes.io/system-os_release.ID=debian\n" in target.read_text()
    assert "# source: system\n" in target.read_text()
    # The start-up line names the sources that run, not every installed one.
    assert "(sources: system)" in err, err


@pytest.mark.parametrize("command", [["apply"], ["prune"], ["run", "--output-file", "x"]])
def test_writing_commands_take_the_confinement_flags(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "--allow-unconfined" in result.output and "--confinement-policy" in result.output


def test_in_cluster_credentials_are_used_inside_a_pod(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from nodefeatures.cluster import kube

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("pod-token")
    ca.write_text("not checked until a request is made\n")
    incluster = kube._client_modules().incluster
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api = kube.connect(None)
    assert api.configuration.host == "https://10.0.0.1:443"
    auth = api.configuration.auth_settings()["BearerToken"]
    assert auth["key"] == "authorization"
    assert auth["value"].lower() == "bearer pod-token"
