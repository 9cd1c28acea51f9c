"""Cluster commands without a cluster: options, errors, and staying light."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nodefeatures.cli import main
from nodefeatures.cli_cluster import _Duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("60", 60.0), ("60s", 60.0), ("5m", 300.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert _Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5d", "0s", "0.2s", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(Exception, match=r"duration|at least"):
        _Duration().convert(text, None, None)


def test_node_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    result = CliRunner().invoke(main, ["diff", "--source", "system"])
    assert result.exit_code == 2
    assert "no node given: use --node NAME or set NODE_NAME" in result.output


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
        "from nodefeatures.kube import connect\n"
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
    from nodefeatures import kube

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
