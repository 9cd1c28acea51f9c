"""`nodefeatures diff | apply | prune | run` against a real server, as separate processes
authenticated with a real ServiceAccount token (TokenRequest), not impersonation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    LEDGER,
    SA_USER,
    F,
    annotations_of,
    labels_of,
    os_release_root,
    patch_node,
    read_node,
    rv_of,
    service_account_kubeconfig,
    wait_until,
    writes_to,
)
from kubeharness import free_port

pytestmark = pytest.mark.integration

OS_ID = F + "system-os_release.ID"
VERSION = F + "system-os_release.VERSION_ID"
MAJOR = F + "system-os_release.VERSION_ID.major"
EXPECTED = {OS_ID: "debian", VERSION: "12", MAJOR: "12"}
# The ledger: keys grouped by source and by the prefix they share.
EXPECTED_LEDGER = ('{"system":{"feature.node.kubernetes.io/system-":'
                   '["os_release.ID","os_release.VERSION_ID","os_release.VERSION_ID.major"]}}')
# These tests run without the own-node policy (test_agent_confinement.py covers it).
UNCONFINED = "--allow-unconfined"


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.pop("NODE_NAME", None)
    env.pop("KUBECONFIG", None)
    return env


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodefeatures", *args], capture_output=True,
                          text=True, timeout=60, env=environment())


@pytest.fixture
def common(apiserver: Any, node: str, tmp_path: Path) -> list[str]:
    kubeconfig = service_account_kubeconfig(apiserver, tmp_path)
    root = os_release_root(tmp_path)
    return ["--node", node, "--kubeconfig", str(kubeconfig), "--root", str(root),
            "--source", "system"]


def patch_section(output: str) -> dict[str, Any]:
    lines = output.splitlines()
    start = lines.index("patch (application/merge-patch+json):")
    end = next((i for i in range(start + 1, len(lines)) if lines[i] == "}"), len(lines) - 1)
    return json.loads("\n".join(lines[start + 1:end + 1]))


def test_diff_shows_what_apply_would_do_and_the_exact_patch(
        apiserver: Any, node: str, common: list[str]) -> None:
    patch_node(apiserver, node, {"metadata": {"labels": {OS_ID: "ubuntu"}}})  # foreign value
    version = rv_of(apiserver, node)
    result = cli("diff", *common)
    assert result.returncode == 1, result.stderr  # 1: apply would write
    out = result.stdout
    assert out.splitlines()[0] == (
        f"node {node} (resourceVersion {version}): 2 to add; 2 labels owned after this")
    print(out)
    table = out.split("\npatch (")[0].splitlines()[1:]
    rows = {line.split()[1]: line for line in table}
    assert rows[f"{VERSION}=12"].split()[0] == "add"
    assert "[system] newly discovered" in rows[f"{VERSION}=12"]
    assert rows[f"{OS_ID}=ubuntu"].split()[0] == "conflict"
    assert "(ours: debian)" in rows[f"{OS_ID}=ubuntu"]
    assert patch_section(out) == {"metadata": {
        "resourceVersion": version,
        "labels": {VERSION: "12", MAJOR: "12"},
        "annotations": {LEDGER: '{"system":{"feature.node.kubernetes.io/system-":'
                                '["os_release.VERSION_ID","os_release.VERSION_ID.major"]}}'},
    }}
    assert rv_of(apiserver, node) == version  # diff never writes


def test_apply_dry_run_prints_the_patch_and_changes_nothing(
        apiserver: Any, node: str, common: list[str]) -> None:
    version = rv_of(apiserver, node)
    result = cli("apply", "--dry-run", *common)
    assert result.returncode == 0, result.stderr
    assert patch_section(result.stdout) == {"metadata": {
        "resourceVersion": version,
        "labels": EXPECTED,
        "annotations": {LEDGER: EXPECTED_LEDGER},
    }}
    assert "dry run: the API server accepted this patch" in result.stdout
    time.sleep(0.3)
    assert rv_of(apiserver, node) == version
    dry = [e for e in writes_to(apiserver, node, SA_USER) if "dryRun=All" in e["requestURI"]]
    assert len(dry) == 1  # the server validated it, with the agent's own permissions


def test_apply_then_diff_is_clean_then_prune_removes_only_ours(
        apiserver: Any, node: str, common: list[str]) -> None:
    patch_node(apiserver, node, {"metadata": {"labels": {F + "pci-10de.present": "true"}}})
    applied = cli("apply", UNCONFINED, *common)
    assert applied.returncode == 0, applied.stderr
    assert f"node {node} updated" in applied.stdout
    labels = labels_of(apiserver, node)
    assert {k: labels[k] for k in EXPECTED} == EXPECTED

    clean = cli("diff", *common)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.rstrip().endswith("nothing to send: the node already matches")

    again = cli("apply", UNCONFINED, *common)  # idempotent: no second write
    assert again.returncode == 0
    assert len(writes_to(apiserver, node, SA_USER)) == 1

    node_args = common[:4]
    pruned = cli("prune", UNCONFINED, *node_args)
    assert pruned.returncode == 0, pruned.stderr
    labels = labels_of(apiserver, node)
    assert not set(EXPECTED) & set(labels)
    assert labels[F + "pci-10de.present"] == "true"  # never ours
    assert labels["kubernetes.io/hostname"] == node
    assert LEDGER not in annotations_of(apiserver, node)


def test_cli_reports_api_errors_clearly(apiserver: Any, common: list[str]) -> None:
    args = list(common)
    args[1] = "no-such-node"
    result = cli("diff", *args)
    assert result.returncode == 2
    assert "404" in result.stderr and "not found" in result.stderr


def wait_http(port: int, path: str, timeout: float = 15) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def fetch() -> tuple[int, str] | None:
        try:
            with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except OSError:
            return None

    return wait_until(fetch, timeout, f"GET {path}")


def start_run(common: list[str], port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nodefeatures", "run", *common, "--interval", "1s",
         "--metrics-port", str(port), "--metrics-address", "127.0.0.1", UNCONFINED, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())


def terminate(process: subprocess.Popen[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=10)
    return process.returncode, time.monotonic() - started, err


def test_run_labels_serves_health_and_stops_on_sigterm_then_restarts_quietly(
        apiserver: Any, node: str, common: list[str]) -> None:
    port = free_port()
    process = start_run(common, port, "--log-format", "json")
    try:
        wait_until(lambda: labels_of(apiserver, node).get(OS_ID) == "debian", timeout=20,
                   what="labels from nodefeatures run")
        assert wait_http(port, "/healthz") == (200, "ok\n")
        assert wait_http(port, "/readyz") == (200, "ok\n")
        _status, metrics = wait_http(port, "/metrics")
        assert 'nodefeatures_api_requests_total{code="200",verb="patch"} 1.0' in metrics
        assert "nodefeatures_labels_published 3.0" in metrics
        assert 'nodefeatures_source_ok{source="system"} 1.0' in metrics
    finally:
        code, seconds, err = terminate(process)
    assert code == 0, err
    assert seconds < 2, f"took {seconds:.2f} s to stop"
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    updated = [r for r in records if r["msg"].startswith("updated node")]
    assert len(updated) == 1 and updated[0]["node"] == node
    assert set(updated[0]["changes"]) == set(EXPECTED)

    version = rv_of(apiserver, node)
    restarted = start_run(common, port)
    try:
        assert wait_http(port, "/readyz") == (200, "ok\n")
        time.sleep(2.5)  # a couple of passes
    finally:
        code, seconds, _ = terminate(restarted)
    assert code == 0 and seconds < 2
    assert rv_of(apiserver, node) == version
    assert read_node(apiserver, node)["metadata"]["labels"][OS_ID] == "debian"


def test_run_exits_promptly_on_sigterm_while_the_api_is_down(
        apiserver: Any, node: str, common: list[str]) -> None:
    port = free_port()
    process = start_run(common, port)
    try:
        assert wait_http(port, "/readyz") == (200, "ok\n")
        apiserver.stop(graceful=False)
        try:
            time.sleep(2)  # failing, backing off
            assert process.poll() is None
            code, seconds, err = terminate(process)
        finally:
            apiserver.start()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
    assert seconds < 2
