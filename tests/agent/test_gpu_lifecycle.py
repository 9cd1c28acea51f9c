"""GPU Operator pauses (rule 11) and the GPU health condition (rule 12), pure and fast."""

from __future__ import annotations

import pytest
from fakeapi import FakeNodeApi
from testpaths import FIXTURES

from nodefeatures.cluster import health
from nodefeatures.cluster.agent import Agent, Options, _nvml_state
from nodefeatures.cluster.kube import KubeError
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.reconcile import (
    ADD,
    KEEP,
    Evidence,
    Ledger,
    SourceReport,
    paused_sources,
    plan,
)
from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import SourceResult, run_pass, run_source
from nodefeatures.discovery.source import Features
from nodefeatures.sources.nvidia import NvidiaSource

DEPLOY = "nvidia.com/gpu.deploy.gpu-feature-discovery"
COUNT = "nvidia.com/gpu.count"
PRODUCT = "nvidia.com/gpu.product"
OS_ID = "feature.node.kubernetes.io/system-os_release.ID"


def ledger_of(owners: dict[str, str]) -> dict[str, str]:
    return Ledger(owners).encode()


# -- rule 11: paused by the GPU Operator ---------------------------------------------------


@pytest.mark.parametrize(("value", "paused"), [
    ("paused-for-mig-change", True),      # mig-parted during a MIG reconfiguration
    ("paused-for-driver-upgrade", True),  # the driver manager
    ("false", True),                      # GFD turned off on this node
    ("true", False),
    ("", False),
    ("False", False),  # the Operator writes lower case only; anything else is not a pause
])
def test_paused_by_the_gpu_operators_deploy_label(value: str, paused: bool) -> None:
    found = paused_sources({DEPLOY: value})
    assert ("nvidia" in found) is paused
    if paused:
        assert found["nvidia"] == f"{DEPLOY}={value}"
    assert paused_sources({}) == {}


def test_a_paused_source_neither_changes_nor_removes_its_labels() -> None:
    labels = {COUNT: "8", PRODUCT: "NVIDIA-A100-SXM4-40GB", OS_ID: "ubuntu",
              DEPLOY: "paused-for-mig-change"}
    annotations = ledger_of({COUNT: "nvidia", PRODUCT: "nvidia", OS_ID: "system"})
    # The last evidence (before the pause) says the count changed and the product is gone,
    # and a new nvidia key appeared; the system source changed too.
    evidence = Evidence((SourceReport("system", {OS_ID: "debian"}, True),
                         SourceReport("nvidia", {COUNT: "7", "nvidia.com/mig.strategy":
                                                 "single"}, True)), complete=True)
    decided = plan(evidence, labels, annotations)
    assert decided.labels == {OS_ID: "debian"}  # non-GPU labels are still maintained
    for key in (COUNT, PRODUCT):
        change = next(c for c in decided.changes if c.key == key)
        assert change.action == KEEP and "paused by " + DEPLOY in change.reason
    assert set(decided.ledger.owners) == {COUNT, PRODUCT, OS_ID}

    resumed = plan(evidence, {**labels, DEPLOY: "true"}, annotations)
    assert resumed.labels == {OS_ID: "debian", COUNT: "7", PRODUCT: None,
                              "nvidia.com/mig.strategy": "single"}


def test_a_paused_source_keeps_its_keys_against_any_other_source() -> None:
    labels = {COUNT: "8", DEPLOY: "false"}
    annotations = ledger_of({COUNT: "nvidia"})
    evidence = Evidence((SourceReport("local", {COUNT: "1", "nvidia.com/own": "x"}, True),),
                        complete=True)
    decided = plan(evidence, labels, annotations)
    assert decided.labels == {"nvidia.com/own": "x"}  # local's own key is not the GPU's
    assert next(c for c in decided.changes if c.key == COUNT).action == KEEP
    assert decided.ledger.owners[COUNT] == "nvidia"


def test_a_paused_source_label_deleted_by_hand_is_not_restored_until_resumed() -> None:
    annotations = ledger_of({COUNT: "nvidia"})
    evidence = Evidence((SourceReport("nvidia", {COUNT: "8"}, True),), complete=True)
    assert plan(evidence, {DEPLOY: "paused-for-mig-change"}, annotations).labels == {}
    resumed = plan(evidence, {DEPLOY: "true"}, annotations)
    assert resumed.labels == {COUNT: "8"}
    assert next(c for c in resumed.changes if c.key == COUNT).action == ADD


def test_an_unattributed_key_is_kept_while_a_source_is_paused() -> None:
    annotations = ledger_of({"nvidia.com/old": None})  # type: ignore[dict-item]
    evidence = Evidence((SourceReport("system", {}, True),), complete=True)
    labels = {"nvidia.com/old": "1"}
    assert plan(evidence, {**labels, DEPLOY: "paused-for-mig-change"}, annotations).labels == {}
    assert plan(evidence, labels, annotations).labels == {"nvidia.com/old": None}


# -- rule 12: the NVIDIAGPUHealthy condition ---------------------------------------------


def nvidia_result(fixture: str) -> SourceResult:
    source = NvidiaSource()
    return run_source(replay_host(FIXTURES / fixture), source, build({}, {"nvidia": source}))


def test_a_lost_gpu_makes_the_condition_false() -> None:
    found = health.gpu_health([nvidia_result("gpu-lost-a10g")])
    assert found is not None
    assert (found.status, found.reason) == ("False", "GPUUnhealthy")
    assert found.message == ("1 of 4 GPUs lost or unhealthy: GPU 2: handle: "
                             "NVML_ERROR_GPU_IS_LOST")


@pytest.mark.parametrize(("fixture", "status"), [
    ("dgx-h100", "True"),
    ("jetson-agx-thor", "True"),   # NVML answers on Thor
    ("wsl2-rtx4090", "True"),
    ("jetson-agx-orin", "no word"),  # no NVML: nobody asked the GPU
    ("gpu-driver-missing", "no word"),  # NVML unusable: the pass is incomplete
    ("cpu-only-rocky9", None),  # ran cleanly, no NVIDIA GPU: the condition goes
])
def test_condition_from_replayed_nodes(fixture: str, status: str | None) -> None:
    found = health.gpu_health([nvidia_result(fixture)])
    if status == "no word":
        assert found is None
    else:
        assert found is not None and found.status == status


def test_an_incomplete_or_failed_pass_says_nothing_about_health() -> None:
    lost = nvidia_result("gpu-lost-a10g")
    lost.complete = False
    assert health.gpu_health([lost]) is None
    assert health.gpu_health([SourceResult("nvidia", error="RuntimeError: x",
                                           complete=False)]) is None
    assert health.gpu_health([SourceResult("cpu", features=Features())]) is None


def node_with(condition: dict[str, str] | None) -> dict:
    return {"metadata": {"name": "n", "resourceVersion": "1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]
                       + ([condition] if condition else [])}}


def test_condition_patch_only_when_it_differs_and_transition_time_only_on_a_flip() -> None:
    sick = health.GpuHealth("False", health.UNHEALTHY, "1 of 4 GPUs lost")
    body = health.patch(sick, node_with(None), "2026-01-01T00:00:00Z")
    assert body == {"status": {"conditions": [{
        "type": "NVIDIAGPUHealthy", "status": "False", "reason": "GPUUnhealthy",
        "message": "1 of 4 GPUs lost", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    held = body["status"]["conditions"][0]
    assert health.patch(sick, node_with(held), "2026-01-02T00:00:00Z") is None
    worse = health.GpuHealth("False", health.UNHEALTHY, "2 of 4 GPUs lost")
    again = health.patch(worse, node_with(held), "2026-01-02T00:00:00Z")
    assert again is not None
    assert again["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    well = health.GpuHealth("True", health.HEALTHY, "NVML answers for all 4 GPUs")
    flipped = health.patch(well, node_with(held), "2026-01-03T00:00:00Z")
    assert flipped["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    gone = health.patch(health.GpuHealth(None), node_with(held), "2026-01-03T00:00:00Z")
    assert gone == {"status": {"conditions": [{"$patch": "delete",
                                               "type": "NVIDIAGPUHealthy"}]}}
    assert health.patch(health.GpuHealth(None), node_with(None), "x") is None


def test_one_event_per_change_of_status() -> None:
    sick = health.GpuHealth("False", health.UNHEALTHY, "1 of 4 GPUs lost")
    well = health.GpuHealth("True", health.HEALTHY, "NVML answers for all 4 GPUs")
    assert health.transition(sick, None)[:2] == ("Warning", "GPUUnhealthy")
    assert health.transition(sick, "True")[:2] == ("Warning", "GPUUnhealthy")
    assert health.transition(well, "False")[:2] == ("Normal", "AllGPUsHealthy")
    assert health.transition(well, None) is None  # the first word, all well
    worse = health.GpuHealth("False", health.UNHEALTHY, "2 of 4 GPUs lost")
    assert health.transition(worse, "False") is None  # no flip


# -- NVML's gauge on a Jetson without NVML ------------------------------------------------


def test_nvml_is_not_applicable_on_a_jetson_without_it() -> None:
    assert _nvml_state(nvidia_result("jetson-agx-orin")) is None
    assert _nvml_state(nvidia_result("jetson-agx-thor")) is True
    metrics = Metrics()
    metrics.nvml_initialized(True)
    assert b"nodefeatures_nvml_initialized 1.0" in metrics.render()
    metrics.nvml_initialized(None)  # went away: neither 0 (failed) nor a stale 1
    assert b"nodefeatures_nvml_initialized" not in metrics.render()
    metrics.nvml_initialized(False)
    assert b"nodefeatures_nvml_initialized 0.0" in metrics.render()


# -- the agent: a refused status patch costs only the condition ---------------------------


class NoStatusRight(FakeNodeApi):
    """A cluster whose ClusterRole predates nodes/status: every status patch is a 403."""

    def __init__(self) -> None:
        super().__init__()
        self.status_patches = 0

    def patch_status(self, body: dict) -> dict:
        self.status_patches += 1
        raise KubeError(403, "Forbidden", 'nodes "n1" is forbidden: cannot patch '
                        'resource "nodes/status"')


def test_a_refused_condition_is_reported_and_retried_slowly_and_labels_still_land() -> None:
    api = NoStatusRight()
    source = NvidiaSource()
    sources = {"nvidia": source}
    host = replay_host(FIXTURES / "gpu-lost-a10g")
    agent = Agent(api, lambda: run_pass(host, sources, build({}, sources)), ["nvidia"],
                  Options(node="n1", allow_unconfined=True, rejected_retry=300.0))
    agent.sync()
    assert api.labels["nvidia.com/gpu.unhealthy"] == "1"
    assert api.status_patches == 1
    assert "ConditionRejected" in [e[1] for e in api.events if e[0] == "Warning"]
    agent.discover_now()
    agent.sync()  # within the slow retry period: not asked again
    assert api.status_patches == 1
