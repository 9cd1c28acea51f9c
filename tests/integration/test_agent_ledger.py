"""The ledger on a real kube-apiserver, with the shipped own-node policy in force.

A copy of deploy/base/admission-policy.yaml is bound only to Nodes carrying POLICED, so
these tests run the agent as its ServiceAccount bound to its Node (impersonated, with the
token's node-name extra) under the very CEL the DaemonSet gets, while other tests'
Nodes stay outside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    FAST,
    LEDGER,
    REPO,
    SA_USER,
    SOURCES,
    F,
    Switchable,
    agent_as,
    annotations_of,
    discoverer,
    events_about,
    labels_of,
    os_release_root,
    owned_on,
    patch_node,
    policed_node,
    service_account_kubeconfig,
    shipped_policy_as,
    start,
    wait_until,
    writes_to,
)

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.sources.local import LocalSource
from nodefeatures.sources.system import SystemSource

pytestmark = pytest.mark.integration

POLICY_FILE = REPO / "deploy" / "base" / "admission-policy.yaml"
POLICED = "nodefeatures.test/own-node-policy"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
FEATURES_D = "etc/kubernetes/node-feature-discovery/features.d"
OS_ID = F + "system-os_release.ID"
# The shipped policy under another name, bound to POLICED Nodes only; the agents here
# take its denials as their proof of confinement, without the check that its binding
# covers every Node (it does not, on purpose: test_agent_confinement.py checks that).
LEDGER_POLICY = "nodefeatures-own-node-ledger-test"


@pytest.fixture(scope="module")
def policy(apiserver: Any, rbac: str) -> Iterator[str]:
    """The shipped policy, renamed and bound to POLICED Nodes only; returns its name."""
    with shipped_policy_as(apiserver, LEDGER_POLICY, POLICED) as name:
        yield name


@pytest.fixture
def policed(apiserver: Any, policy: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh Node under the policy, once the server enforces it."""
    short = request.node.name.replace("_", "-").replace("[", "-").lower()[:36].strip("-]")
    with policed_node(apiserver, policy, POLICED, f"{short}-{uuid.uuid4().hex[:6]}") as name:
        yield name


def agent_client(apiserver: Any, node: str) -> Any:
    """The agent's ServiceAccount as its pod-bound token on `node` presents it."""
    return agent_as(apiserver, node)


def host(tmp_path: Path, files: dict[str, str], os_id: str = "debian") -> Path:
    root = os_release_root(tmp_path, f'ID={os_id}\nVERSION_ID="12"\n')
    directory = root / FEATURES_D
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return root


def real_agent(apiserver: Any, node: str, root: Path, **options: Any) -> Agent:
    """The shipped system and local sources reading `root`, acting as the agent."""
    sources = [SystemSource(), LocalSource()]
    return Agent(NodeApi(agent_client(apiserver, node), node), discoverer(sources, root),
                 ["system", "local"],
                 Options(node=node, **{**FAST, "confinement_policy": LEDGER_POLICY,
                                          "confinement_reach": False, **options}))


def test_5000_feature_file_labels_cost_only_their_own_surplus(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    # Ten files of 500 lines: each under the local source's 64 KiB file limit.
    names = [f"vendor-accelerator-capability-{i:04d}-with-a-long-descriptive-name"
             for i in range(5000)]
    files = {f"{n:02d}-generated": "".join(f"{name}=true\n" for name in names[n::10])
             for n in range(10)}
    root = host(tmp_path, files)
    agent = real_agent(apiserver, policed, root)
    agent.discover_now()
    agent.sync()  # raises if the server or the policy refuses the patch
    labels = labels_of(apiserver, policed)
    assert labels[OS_ID] == "debian"
    assert labels[F + "system-os_release.VERSION_ID"] == "12"
    from nodefeatures.cluster.reconcile import LEDGER_MAX_BYTES
    from nodefeatures.discovery.config import Budget

    published = sorted(k for k in labels if k.startswith(F + "vendor-"))
    # The sorted-first labels, as many as fit both the count and the bytes of key=value.
    budget, expected, used = Budget(), [], 0
    for key in sorted(F + name for name in names):
        used += len(key) + len("true")
        if len(expected) == budget.labels or used > budget.bytes:
            break
        expected.append(key)
    assert published == expected
    assert 300 < len(published) <= budget.labels
    annotations = annotations_of(apiserver, policed)
    assert len(annotations[LEDGER].encode()) <= LEDGER_MAX_BYTES
    assert set(owned_on(apiserver, policed)) == {k for k in labels if k.startswith(F)}
    # The surplus is reported where `kubectl describe node` shows it.
    events = wait_until(lambda: [e for e in events_about(apiserver, policed)
                                 if e.reason == "SourceProblem" and "budget" in e.message],
                        what="a SourceProblem Event about the budget")
    assert "source local" in events[0].message
    assert f"{5000 - len(expected)} labels not published" in events[0].message
    # Another writer can still annotate the Node.
    patch_node(apiserver, policed, {"metadata": {"annotations": {
        f"example.com/note-{i}": "n" * 1000 for i in range(100)}}})
    # And the next pass changes nothing.
    agent.discover_now()
    assert not agent.sync().needs_write


def test_an_incomplete_feature_file_source_keeps_its_correction_without_a_write(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    key = F + "kernel-version.full"
    kernel = Switchable("kernel", {key: "6.1.0"})
    local = Switchable("local", {key: "6.1.0-vendor"})  # a feature file corrects it
    local.priority = 20  # type: ignore[misc]  # as the shipped local source
    agent = Agent(NodeApi(agent_client(apiserver, policed), policed),
                  discoverer([kernel, local], tmp_path), ["kernel", "local"],
                  Options(node=policed, confinement_policy=LEDGER_POLICY,
                                  confinement_reach=False, **FAST))
    running = start(agent)
    try:
        wait_until(lambda: labels_of(apiserver, policed).get(key) == "6.1.0-vendor",
                   what="the corrected value")
        wait_until(lambda: agent.ready, what="the first pass")
        before = len(writes_to(apiserver, policed, SA_USER))
        local.current, local.incomplete = {}, True  # the file is unreadable for 4 s
        seen: set[tuple[str | None, str | None]] = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            seen.add((labels_of(apiserver, policed).get(key), owned_on(apiserver, policed)[key]))
            time.sleep(0.2)
        local.current, local.incomplete = {key: "6.1.0-vendor"}, False
        time.sleep(2.5)  # two more passes, the first one clean again
        assert seen == {("6.1.0-vendor", "local")}
        assert labels_of(apiserver, policed)[key] == "6.1.0-vendor"
        assert len(writes_to(apiserver, policed, SA_USER)) == before
    finally:
        running.stop()


@pytest.mark.parametrize("damage", [
    {LEDGER: None, SOURCES: None},
    {LEDGER: "{this is not json"},
    {LEDGER: json.dumps({"cpu": {F + "cpu-": ["cpuid.AVX"]}})},
], ids=["deleted", "mangled", "replaced"])
def test_a_damaged_ledger_is_restored_from_what_the_agent_wrote(
        apiserver: Any, policed: str, tmp_path: Path, damage: dict[str, Any]) -> None:
    root = host(tmp_path, {"vendor": "vendor-thing=1\nvendor-other=2\n"})
    running = start(real_agent(apiserver, policed, root))
    try:
        wait_until(lambda: F + "vendor-thing" in owned_on(apiserver, policed),
                   what="the first pass")
        patch_node(apiserver, policed, {"metadata": {"annotations": damage}})
        # Then the host changes: an outdated label and a withdrawn one.
        (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="12"\n')
        (root / FEATURES_D / "vendor").write_text("vendor-other=2\n")
        time.sleep(5 * FAST["interval"])  # five passes
        labels = labels_of(apiserver, policed)
        assert labels[OS_ID] == "ubuntu"
        assert F + "vendor-thing" not in labels
        assert labels[F + "vendor-other"] == "2"
        assert owned_on(apiserver, policed)[OS_ID] == "system"
        assert owned_on(apiserver, policed)[F + "vendor-other"] == "local"
        events = [e for e in events_about(apiserver, policed) if e.reason == "LedgerProblem"]
        assert events and "restored" in events[0].message
        assert running.agent.metrics.ledger_restores._value.get() >= 1
    finally:
        running.stop()


def test_after_a_restart_a_lost_ledger_adopts_nothing_until_take_over(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    root = host(tmp_path, {"vendor": "vendor-thing=1\n"})
    first = real_agent(apiserver, policed, root)
    first.discover_now()
    first.sync()
    patch_node(apiserver, policed, {"metadata": {"annotations": {LEDGER: None}}})
    (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="12"\n')
    # A new process remembers nothing it wrote: the labels are not known to be ours.
    restarted = real_agent(apiserver, policed, root)
    restarted.discover_now()
    decided = restarted.sync()
    assert not decided.needs_write
    assert {c.key: c.action for c in decided.changes if c.key in (OS_ID, F + "vendor-thing")} \
        == {OS_ID: "conflict", F + "vendor-thing": "unowned"}
    assert labels_of(apiserver, policed)[OS_ID] == "debian"
    # Adopting them again is the explicit, documented step.
    adopting = real_agent(apiserver, policed, root, take_over=True)
    adopting.discover_now()
    adopting.sync()
    assert labels_of(apiserver, policed)[OS_ID] == "ubuntu"
    assert owned_on(apiserver, policed)[F + "vendor-thing"] == "local"


def test_upgrade_from_the_two_annotation_ledger_keeps_ownership(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    # What an older agent left: full keys twice, in two annotations.
    patch_node(apiserver, policed, {"metadata": {
        "labels": {OS_ID: "debian", F + "vendor-thing": "1", F + "vendor-old": "1"},
        "annotations": {
            LEDGER: f"{OS_ID},{F}vendor-old,{F}vendor-thing",
            SOURCES: f"local:{F}vendor-old,{F}vendor-thing;system:os_release.ID"}}})
    root = host(tmp_path, {"vendor": "vendor-thing=1\n"})  # vendor-old was withdrawn
    agent = real_agent(apiserver, policed, root)
    agent.discover_now()
    agent.sync()
    labels = labels_of(apiserver, policed)
    assert F + "vendor-old" not in labels  # still known to be ours, so removed on evidence
    assert labels[F + "vendor-thing"] == "1"
    annotations = annotations_of(apiserver, policed)
    assert SOURCES not in annotations
    assert json.loads(annotations[LEDGER])["local"] == {F: ["vendor-thing"]}
    assert owned_on(apiserver, policed)[OS_ID] == "system"


def test_diff_shows_a_source_over_its_budget(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    root = host(tmp_path, {"many": "".join(f"flag-{i:03d}=true\n" for i in range(30))})
    config = tmp_path / "config.yaml"
    config.write_text("core:\n  maxLabelsPerSource: 20\n")
    kubeconfig = service_account_kubeconfig(apiserver, tmp_path)
    args = ["--node", node, "--kubeconfig", str(kubeconfig), "--root", str(root),
            "--config", str(config), "--source", "local", "--source", "system"]
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("KUBERNETES_") and k not in ("NODE_NAME", "KUBECONFIG")}
    result = subprocess.run([sys.executable, "-m", "nodefeatures", "diff", *args],
                            capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("warning: source local reported 30 labels")
               and "10 labels not published" in line for line in lines), result.stdout
    drops = [line.split()[1] for line in lines if line.split()[:1] == ["drop"]]
    assert drops == [f"{F}flag-{i:03d}=true" for i in range(20, 30)]
    assert any(line.split()[:2] == ["add", f"{OS_ID}=debian"] for line in lines)
