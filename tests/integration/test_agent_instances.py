"""Two agent instances on one Node of a real kube-apiserver, under the shipped policy.

deploy/gpu runs the base agent (default instance, every source but nvidia) and the GPU
agent (instance gpu, the nvidia source, nvidia.com/) side by side on every GPU node.
Here both run as the agent's ServiceAccount bound to their Node, under a copy of
deploy/base/admission-policy.yaml bound only to Nodes carrying POLICED.
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
    SA_USER,
    F,
    Switchable,
    agent_as,
    annotations_of,
    discoverer,
    labels_of,
    os_release_root,
    patch_node,
    policed_node,
    service_account_kubeconfig,
    shipped_policy_as,
    start,
    wait_until,
    writes_to,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.cluster.reconcile import LEDGER_MAX_BYTES, Ledger

pytestmark = pytest.mark.integration

POLICED = "nodefeatures.test/instances-policy"
POLICY = "nodefeatures-own-node-instances-test"
GPU_LEDGER = "nodefeatures.dev/labels-gpu"
AVX = F + "cpu-cpuid.AVX"
PCI = F + "pci-10de.present"
COUNT = "nvidia.com/gpu.count"
PRODUCT = "nvidia.com/gpu.product"
GPU_OPT_IN = "node-restriction.kubernetes.io/nodefeatures-gpu-agent"


@pytest.fixture(scope="module")
def policy(apiserver: Any, rbac: str) -> Iterator[str]:
    with shipped_policy_as(apiserver, POLICY, POLICED) as name:
        yield name


def agent_client(apiserver: Any, node: str) -> Any:
    return agent_as(apiserver, node)


@pytest.fixture
def policed(apiserver: Any, policy: str) -> Iterator[str]:
    with policed_node(apiserver, policy, POLICED, f"instances-{uuid.uuid4().hex[:8]}") as name:
        yield name


def agent(apiserver: Any, node: str, sources: list[Switchable], root: Path,
          **options: Any) -> Agent:
    return Agent(NodeApi(agent_client(apiserver, node), node), discoverer(sources, root),
                 [s.name for s in sources],
                 Options(node=node, **{**FAST, "confinement_policy": POLICY,
                                          "confinement_reach": False, **options}))


def as_agent(apiserver: Any, node: str, annotations: dict[str, str | None]) -> None:
    client.CoreV1Api(agent_client(apiserver, node)).patch_node(
        node, {"metadata": {"annotations": annotations}},
        _content_type="application/merge-patch+json")


def denial(apiserver: Any, node: str, annotations: dict[str, str | None]) -> str:
    with pytest.raises(ApiException) as denied:
        as_agent(apiserver, node, annotations)
    assert denied.value.status == 403
    return json.loads(denied.value.body)["message"]


def test_two_instances_keep_their_own_labels_and_neither_removes_the_others(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    pci = Switchable("pci", {PCI: "true"})
    # The base agent also runs an nvidia source that (without NVML) says something else
    # about the GPU count: under its prefixes it is never published.
    base_nvidia = Switchable("nvidia", {COUNT: "0"})
    nvidia = Switchable("nvidia", {COUNT: "2", PRODUCT: "H200"})
    base = agent(apiserver, policed, [cpu, pci, base_nvidia], tmp_path / "base",
                 prefixes=(F,), expect_instance="gpu")
    gpu = agent(apiserver, policed, [nvidia], tmp_path / "gpu",
                prefixes=("nvidia.com/",), instance="gpu")
    running = [start(base), start(gpu)]
    try:
        want = {AVX: "true", PCI: "true", COUNT: "2", PRODUCT: "H200"}
        wait_until(lambda: want.items() <= labels_of(apiserver, policed).items(), 15,
                   "both agents' labels")
        wait_until(lambda: base.ready and gpu.ready, what="both first passes")
        annotations = annotations_of(apiserver, policed)
        assert set(Ledger.parse(annotations).owners) == {AVX, PCI}
        assert set(Ledger.parse(annotations, "gpu").owners) == {COUNT, PRODUCT}
        # Settled: three more passes each write nothing (no fight over any key).
        before = len(writes_to(apiserver, policed, SA_USER))
        time.sleep(3.2)
        assert len(writes_to(apiserver, policed, SA_USER)) == before
        # Each removes on its own evidence only: the base agent's sources drop every
        # GPU-ish key, the GPU agent drops the product, the host's CPU flag goes.
        base_nvidia.current = {}
        nvidia.current = {COUNT: "2"}
        cpu.current = {}
        wait_until(lambda: PRODUCT not in labels_of(apiserver, policed)
                   and AVX not in labels_of(apiserver, policed), 10, "both removals")
        time.sleep(2.2)
        labels = labels_of(apiserver, policed)
        assert labels[COUNT] == "2" and labels[PCI] == "true"
        # The GPU agent is there: the base agent reports nothing missing.
        assert base.metrics.instance_missing.labels("gpu")._value.get() == 0
    finally:
        for run in running:
            run.stop()


def test_a_key_both_instances_produce_is_the_first_writers_until_it_lets_go(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    """deploy/gpu's layout: the base agent skips the nvidia source but is not narrowed by
    prefix, so its rules (the GPU Operator's NodeFeatureRules) publish in nvidia.com/
    too, and may name a key the nvidia source also publishes. The first writer holds it;
    the other leaves it alone (OTHER), and takes it once the first lets it go."""
    gdr = "nvidia.com/gdrcopy.capable"
    cpu = Switchable("cpu", {AVX: "true"})
    rules = Switchable("rules", {gdr: "true", COUNT: "0"})
    nvidia = Switchable("nvidia", {COUNT: "2", PRODUCT: "H200"})
    # The base agent's image has the nvidia source installed; it is skipped, not absent.
    base = Agent(NodeApi(agent_client(apiserver, policed), policed),
                 discoverer([cpu, rules], tmp_path / "base"), ["cpu", "rules", "nvidia"],
                 Options(node=policed, expect_instance="gpu",
                         **{**FAST, "confinement_policy": POLICY, "confinement_reach": False}))
    gpu = agent(apiserver, policed, [nvidia], tmp_path / "gpu",
                prefixes=("nvidia.com/",), instance="gpu")
    running = [start(base)]
    try:
        wait_until(lambda: labels_of(apiserver, policed).get(COUNT) == "0", 15,
                   "the base agent's labels")
        running.append(start(gpu))
        wait_until(lambda: PRODUCT in labels_of(apiserver, policed) and gpu.ready, 15,
                   "the GPU agent's first pass")
        annotations = annotations_of(apiserver, policed)
        assert set(Ledger.parse(annotations).owners) == {AVX, gdr, COUNT}
        assert set(Ledger.parse(annotations, "gpu").owners) == {PRODUCT}
        # Settled: neither writes the other's key back.
        before = len(writes_to(apiserver, policed, SA_USER))
        time.sleep(3.2)
        assert len(writes_to(apiserver, policed, SA_USER)) == before
        assert labels_of(apiserver, policed)[COUNT] == "0"
        # The rule stops naming the key: the base agent removes it on its own evidence,
        # and the GPU agent, no longer kept off by a ledger, adds its value.
        rules.current = {gdr: "true"}
        wait_until(lambda: labels_of(apiserver, policed).get(COUNT) == "2", 15,
                   "the GPU agent taking the key")
        annotations = annotations_of(apiserver, policed)
        assert COUNT not in Ledger.parse(annotations).owners
        assert COUNT in Ledger.parse(annotations, "gpu").owners
        assert labels_of(apiserver, policed)[gdr] == "true"
    finally:
        for run in running:
            run.stop()


def test_policy_admits_both_ledgers_and_denies_an_unknown_one(
        apiserver: Any, policed: str) -> None:
    as_agent(apiserver, policed, {LEDGER: "{}", GPU_LEDGER: "{}"})
    assert {LEDGER, GPU_LEDGER} <= set(annotations_of(apiserver, policed))
    for unknown in ("nodefeatures.dev/labels-other", "nodefeatures.dev/other"):
        message = denial(apiserver, policed, {unknown: "{}"})
        assert "may change only its ledger annotations" in message
        assert unknown in message
    # Elsewhere a ledger's name is no ledger, but a rule output, off in the shipped setting.
    message = denial(apiserver, policed, {"example.com/labels-gpu": "{}"})
    assert "annotations are switched off" in message and "example.com/labels-gpu" in message
    # Removing its own ledger is allowed (prune --instance gpu).
    as_agent(apiserver, policed, {GPU_LEDGER: None})
    assert GPU_LEDGER not in annotations_of(apiserver, policed)


def test_policy_bounds_each_ledger_on_its_own(apiserver: Any, policed: str) -> None:
    full = "x" * (LEDGER_MAX_BYTES - 2) + "\u00e9"  # exactly the bound, in bytes
    # Both ledgers at the bound at once: each is within its own.
    as_agent(apiserver, policed, {LEDGER: full, GPU_LEDGER: full})
    annotations = annotations_of(apiserver, policed)
    assert annotations[LEDGER] == annotations[GPU_LEDGER] == full
    message = denial(apiserver, policed, {GPU_LEDGER: full + "x"})
    assert f"may hold at most {LEDGER_MAX_BYTES}" in message
    assert str(LEDGER_MAX_BYTES + 1) in message
    # The default instance's two annotations still count together.
    message = denial(apiserver, policed, {LEDGER: "x" * (LEDGER_MAX_BYTES // 2 + 1),
                                          "nodefeatures.dev/sources":
                                          "y" * (LEDGER_MAX_BYTES // 2)})
    assert f"may hold at most {LEDGER_MAX_BYTES}" in message


def test_no_agent_token_may_opt_its_node_in_to_the_gpu_agent(
        apiserver: Any, policed: str) -> None:
    """deploy/gpu's GPU DaemonSet also runs where an administrator set GPU_OPT_IN
    (Jetson/IGX, WSL2): the shipped policy keeps every agent from setting it."""
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(agent_client(apiserver, policed)).patch_node(
            policed, {"metadata": {"labels": {GPU_OPT_IN: "true"}}},
            _content_type="application/merge-patch+json")
    assert denied.value.status == 403
    assert GPU_OPT_IN in json.loads(denied.value.body)["message"]
    # An administrator may; the agent then may not take it off either.
    patch_node(apiserver, policed, {"metadata": {"labels": {GPU_OPT_IN: "true"}}})
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(agent_client(apiserver, policed)).patch_node(
            policed, {"metadata": {"labels": {GPU_OPT_IN: None}}},
            _content_type="application/merge-patch+json")
    assert denied.value.status == 403
    assert labels_of(apiserver, policed)[GPU_OPT_IN] == "true"


def test_base_agent_reports_the_missing_gpu_agent_and_keeps_the_host_labels(
        apiserver: Any, policed: str, tmp_path: Path) -> None:
    from agentkit import events_about

    base = agent(apiserver, policed, [Switchable("cpu", {AVX: "true"})], tmp_path,
                 prefixes=(F,), expect_instance="gpu", expect_grace=1.0)
    patch_node(apiserver, policed, {"metadata": {"labels": {PCI: "true"}}})  # as admin
    running = start(base)
    try:
        events = wait_until(lambda: [e for e in events_about(apiserver, policed)
                                     if e.reason == "GPUAgentMissing"], 15,
                            "a GPUAgentMissing Event")
        assert GPU_LEDGER in events[0].message and events[0].type == "Warning"
        labels = labels_of(apiserver, policed)
        assert labels[AVX] == "true"
        assert not [k for k in labels if k.startswith("nvidia.com/")]
        assert GPU_LEDGER not in annotations_of(apiserver, policed)
        assert base.metrics.instance_missing.labels("gpu")._value.get() == 1
    finally:
        running.stop()


def test_cli_apply_diff_and_prune_per_instance(apiserver: Any, node: str,
                                               tmp_path: Path) -> None:
    """`apply --instance`, `diff --expect-instance`, `prune --instance` as commands."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KUBERNETES_") and k not in ("NODE_NAME", "KUBECONFIG")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nodefeatures", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    kubeconfig = service_account_kubeconfig(apiserver, tmp_path)
    common = ["--node", node, "--kubeconfig", str(kubeconfig), "--root",
              str(os_release_root(tmp_path)), "--source", "system", "--allow-unconfined"]
    os_id = F + "system-os_release.ID"
    # The same source as two instances: the second finds every key owned by the first.
    assert cli("apply", *common).returncode == 0
    second = cli("apply", *common, "--instance", "gpu")
    assert second.returncode == 0, second.stderr
    assert f"other     {os_id}=debian" in second.stdout
    assert "owned by agent instance default: left alone" in second.stdout
    assert json.loads(annotations_of(apiserver, node)[GPU_LEDGER]) == {}
    patch_node(apiserver, node, {"metadata": {"labels": {PCI: "true"},
                                              "annotations": {GPU_LEDGER: None}}})
    diff = cli("diff", *common[:-1], "--expect-instance", "gpu")
    assert diff.returncode == 0, diff.stdout + diff.stderr  # nothing to write
    assert f"warning: the Node has {PCI}=true but no agent of instance 'gpu'" in diff.stdout
    bad = cli("diff", *common[:-1], "--instance", "GPU/x")
    assert bad.returncode == 2 and "--instance" in bad.stderr
    # prune --instance gpu touches nothing of the default instance.
    patch_node(apiserver, node, {"metadata": {"annotations": {
        GPU_LEDGER: Ledger({"nvidia.com/gpu.count": "nvidia"}, "gpu").encode()[GPU_LEDGER]},
        "labels": {"nvidia.com/gpu.count": "1"}}})
    before = labels_of(apiserver, node)
    pruned = cli("prune", "--node", node, "--kubeconfig", str(kubeconfig),
                 "--allow-unconfined", "--instance", "gpu")
    assert pruned.returncode == 0, pruned.stderr
    after = labels_of(apiserver, node)
    assert set(before) - set(after) == {"nvidia.com/gpu.count"}
    annotations = annotations_of(apiserver, node)
    assert GPU_LEDGER not in annotations and LEDGER in annotations


def test_cli_a_skipped_source_keeps_its_labels_and_the_rest_is_published(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    """deploy/gpu's base agent: --skip-source leaves a source's labels as they are (no
    pass of it says a feature is gone), while every other source, vendor namespaces
    included, publishes as without it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KUBERNETES_") and k not in ("NODE_NAME", "KUBECONFIG")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nodefeatures", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    root = os_release_root(tmp_path)
    features = root / "etc/kubernetes/node-feature-discovery/features.d"
    features.mkdir(parents=True)
    kubeconfig = service_account_kubeconfig(apiserver, tmp_path)
    common = ["apply", "--node", node, "--kubeconfig", str(kubeconfig), "--root", str(root),
              "--source", "system", "--source", "local", "--allow-unconfined",
              "--managed-prefix", F, "--managed-prefix", "vendor.io/"]
    os_id = F + "system-os_release.ID"
    first = cli(*common)
    assert first.returncode == 0, first.stderr
    assert labels_of(apiserver, node)[os_id] == "debian"
    # The host changes under both sources; system is skipped from now on.
    (root / "etc/os-release").write_text('ID=arch\n')
    (features / "vendor").write_text("vendor.io/x=1\n")
    skipped = cli(*common, "--skip-source", "system")
    assert skipped.returncode == 0, skipped.stderr
    assert ("source system did not run (disabled or not installed): kept"
            in skipped.stdout), skipped.stdout
    labels = labels_of(apiserver, node)
    assert labels[os_id] == "debian" and labels["vendor.io/x"] == "1"
    owners = Ledger.parse(annotations_of(apiserver, node)).owners
    assert owners[os_id] == "system" and owners["vendor.io/x"] == "local"
    # Without the option the source runs again and its evidence counts.
    again = cli(*common)
    assert again.returncode == 0, again.stderr
    assert labels_of(apiserver, node)[os_id] == "arch"
