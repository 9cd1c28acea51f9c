"""GPUs against a real kube-apiserver: the health condition, and the GPU Operator's pauses.

The nvidia source runs for real, on real pynvml over a replayed NVML (a copy of the
gpu-lost-a10g fixture whose nvml.json the test swaps between a healthy and a lost GPU 2).
The agent runs confined: the shipped own-node policy is installed and the agent
presents its ServiceAccount with a pod-bound token's node name, so every status patch it
sends is one the policy lets through.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    FAST,
    SA_USER,
    F,
    Switchable,
    events_about,
    labels_of,
    patch_node,
    read_node,
    start,
    wait_until,
    writes_to,
)
from kubernetes import client
from test_agent_confinement import CHECKS, enforced, node_api, policy  # noqa: F401
from testpaths import FIXTURES

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import Discovery, run_pass
from nodefeatures.discovery.source import Context, Features
from nodefeatures.sources.nvidia import NvidiaSource

pytestmark = pytest.mark.integration

CONDITION = "NVIDIAGPUHealthy"
DEPLOY = "nvidia.com/gpu.deploy.gpu-feature-discovery"
OS_ID = F + "system-os_release.ID"


class CountingNvidia(NvidiaSource):
    """The real nvidia source, counting its passes (each one opens NVML)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes = 0

    def discover(self, ctx: Context) -> Features:
        self.passes += 1
        return super().discover(ctx)


class Gpus:
    """A copy of gpu-lost-a10g whose GPU 2 the test can lose and bring back."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "fixture"
        shutil.copytree(FIXTURES / "gpu-lost-a10g", self.dir)
        self.lost = json.loads((self.dir / "nvml.json").read_text())
        self.healthy = json.loads(json.dumps(self.lost))
        devices = self.healthy["nvmlDeviceGetHandleByIndex_v2"]
        gpu = json.loads(json.dumps(devices["1"]))
        gpu["nvmlDeviceGetPciInfo_v3"].update(
            busId="00000000:00:1D.0", busIdLegacy="0000:00:1D.0", device=29)
        devices["2"] = gpu
        self.stamp = time.time()

    def set(self, healthy: bool) -> None:
        path = self.dir / "nvml.json"
        temporary = self.dir / "nvml.json.new"
        temporary.write_text(json.dumps(self.healthy if healthy else self.lost))
        self.stamp += 10  # the replay reloads a file whose mtime changed
        os.utime(temporary, (self.stamp, self.stamp))
        os.replace(temporary, path)


def discoverer(sources: list[Any], fixture: Path) -> Callable[..., Discovery]:
    by_name = {s.name: s for s in sources}
    config = build({}, by_name)
    host = replay_host(fixture)

    def discover(paused: frozenset[str] = frozenset()) -> Discovery:
        return run_pass(host, {n: s for n, s in by_name.items() if n not in paused}, config)

    return discover


def gpu_agent(apiserver: Any, node: str, sources: list[Any], fixture: Path,
              **options: Any) -> Agent:
    settings = {**FAST, **CHECKS, **options}
    return Agent(node_api(apiserver, node), discoverer(sources, fixture),
                 [s.name for s in sources], Options(node=node, **settings))


def condition_of(apiserver: Any, node: str) -> dict[str, Any] | None:
    conditions = (read_node(apiserver, node).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == CONDITION), None)


def status_of(apiserver: Any, node: str) -> str | None:
    found = condition_of(apiserver, node)
    return found["status"] if found else None


def gpu_events(apiserver: Any, node: str) -> list[tuple[str, str]]:
    return sorted((e.reason, e.type) for e in events_about(apiserver, node)
                  if e.reason in ("GPUUnhealthy", "AllGPUsHealthy"))


def agent_writes(apiserver: Any, node: str) -> list[dict[str, Any]]:
    """The agent's real (not dry-run) patches of the Node and of its status."""
    time.sleep(0.3)  # audit events are written just after the response
    return [e for e in writes_to(apiserver, node, SA_USER)
            if "dryRun=All" not in e["requestURI"]]


def gpu_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("nvidia.com/") and k != DEPLOY}


@pytest.fixture
def ready_node(apiserver: Any, node: str) -> str:
    """The test's Node with the kubelet's Ready condition, which must never change."""
    with apiserver.admin_client() as api:
        client.CoreV1Api(api).patch_node_status(node, {"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
            _content_type="application/strategic-merge-patch+json")
    return node


def test_a_lost_gpu_sets_the_condition_and_recovery_clears_it_one_event_each(
        apiserver: Any, ready_node: str, tmp_path: Path, enforced: Any) -> None:  # noqa: F811
    node = ready_node
    gpus = Gpus(tmp_path)
    gpus.set(healthy=True)
    running = start(gpu_agent(apiserver, node, [NvidiaSource()], gpus.dir))
    try:
        wait_until(lambda: status_of(apiserver, node) == "True", what="condition True")
        assert condition_of(apiserver, node)["reason"] == "AllGPUsHealthy"
        assert labels_of(apiserver, node)["nvidia.com/gpu.healthy"] == "4"
        assert gpu_events(apiserver, node) == []  # all well from the start: nothing to say

        gpus.set(healthy=False)
        wait_until(lambda: status_of(apiserver, node) == "False", what="condition False")
        lost = condition_of(apiserver, node)
        assert lost["reason"] == "GPUUnhealthy"
        assert "GPU 2: handle: NVML_ERROR_GPU_IS_LOST" in lost["message"]
        wait_until(lambda: labels_of(apiserver, node).get("nvidia.com/gpu.unhealthy") == "1",
                   what="gpu.unhealthy")
        wait_until(lambda: gpu_events(apiserver, node), what="the Event")

        # Quiet: passes go on every second, and nothing changes, so nothing is written.
        before = {e["auditID"] for e in agent_writes(apiserver, node)}
        version = read_node(apiserver, node)["metadata"]["resourceVersion"]
        time.sleep(3.5)
        assert [e for e in agent_writes(apiserver, node) if e["auditID"] not in before] == []
        assert read_node(apiserver, node)["metadata"]["resourceVersion"] == version
        assert gpu_events(apiserver, node) == [("GPUUnhealthy", "Warning")]

        gpus.set(healthy=True)
        wait_until(lambda: status_of(apiserver, node) == "True", what="recovery")
        wait_until(lambda: "nvidia.com/gpu.unhealthy" not in labels_of(apiserver, node),
                   what="gpu.unhealthy removed")
        time.sleep(2)
        assert gpu_events(apiserver, node) == [("AllGPUsHealthy", "Normal"),
                                               ("GPUUnhealthy", "Warning")]
        recovered = condition_of(apiserver, node)
        assert recovered["lastTransitionTime"] >= lost["lastTransitionTime"]
    finally:
        running.stop()
    ready = next(c for c in read_node(apiserver, node)["status"]["conditions"]
                 if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    failed = {s.labels["code"] for m in running.agent.metrics.requests.collect()
              for s in m.samples if s.name.endswith("_total") and s.labels["verb"] == "status"
              and not s.labels["code"].startswith("2")}
    assert failed == set(), "the policy let every status patch of the agent through"


def test_a_condition_deleted_by_hand_comes_back(
        apiserver: Any, ready_node: str, tmp_path: Path, enforced: Any) -> None:  # noqa: F811
    node = ready_node
    gpus = Gpus(tmp_path)
    running = start(gpu_agent(apiserver, node, [NvidiaSource()], gpus.dir, interval=30.0))
    try:
        wait_until(lambda: status_of(apiserver, node) == "False", what="condition False")
        with apiserver.admin_client() as api:
            client.CoreV1Api(api).patch_node_status(
                node, {"status": {"conditions": [{"$patch": "delete", "type": CONDITION}]}},
                _content_type="application/strategic-merge-patch+json")
        # Well within the 30 s interval: the watch saw it.
        wait_until(lambda: status_of(apiserver, node) == "False", timeout=5,
                   what="condition restored")
        assert gpu_events(apiserver, node) == [("GPUUnhealthy", "Warning")]
    finally:
        running.stop()


def test_while_the_gpu_operator_pauses_gfd_no_gpu_label_changes_and_resume_reconciles(
        apiserver: Any, ready_node: str, tmp_path: Path, enforced: Any) -> None:  # noqa: F811
    node = ready_node
    gpus = Gpus(tmp_path)
    gpus.set(healthy=True)
    nvidia = CountingNvidia()
    system = Switchable("system", {OS_ID: "debian"})
    # A long interval: every pass below is the watch's doing or the test's poke.
    running = start(gpu_agent(apiserver, node, [system, nvidia], gpus.dir, interval=30.0))
    try:
        wait_until(lambda: labels_of(apiserver, node).get("nvidia.com/gpu.count") == "4",
                   what="GPU labels")
        wait_until(lambda: status_of(apiserver, node) == "True", what="condition True")
        before = gpu_labels(labels_of(apiserver, node))
        assert before["nvidia.com/gpu.healthy"] == "4"

        # The MIG manager pauses GFD, as mig-parted does before it repartitions.
        patch_node(apiserver, node, {"metadata": {"labels": {DEPLOY: "paused-for-mig-change"}}})
        time.sleep(0.5)
        passes = nvidia.passes
        gpus.set(healthy=False)  # what NVML would say half-way through
        system.current[OS_ID] = "ubuntu"
        for _ in range(3):
            running.agent.poke()
            time.sleep(0.7)
        wait_until(lambda: labels_of(apiserver, node).get(OS_ID) == "ubuntu",
                   what="non-GPU labels still maintained")
        assert nvidia.passes == passes, "the nvidia source (and NVML) ran while paused"
        assert gpu_labels(labels_of(apiserver, node)) == before
        assert status_of(apiserver, node) == "True"
        assert labels_of(apiserver, node)[DEPLOY] == "paused-for-mig-change"  # not ours

        # "false" (GFD off on this node) holds the GPU labels too.
        patch_node(apiserver, node, {"metadata": {"labels": {DEPLOY: "false"}}})
        running.agent.poke()
        time.sleep(1)
        assert nvidia.passes == passes
        assert gpu_labels(labels_of(apiserver, node)) == before

        # mig-parted sets it back to "true": the watch starts a pass at once.
        resumed = time.monotonic()
        patch_node(apiserver, node, {"metadata": {"labels": {DEPLOY: "true"}}})
        wait_until(lambda: labels_of(apiserver, node).get("nvidia.com/gpu.unhealthy") == "1",
                   timeout=5, what="the pass after resume")
        assert time.monotonic() - resumed < 5  # not the 30 s interval
        after = gpu_labels(labels_of(apiserver, node))
        assert after["nvidia.com/gpu.healthy"] == "3"
        assert after["nvidia.com/gpu.count"] == "3"
        wait_until(lambda: status_of(apiserver, node) == "False", timeout=5,
                   what="the condition after resume")
        assert nvidia.passes > passes
        assert labels_of(apiserver, node)[DEPLOY] == "true"
    finally:
        running.stop()
