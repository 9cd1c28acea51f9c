"""Two agent instances on one Node, each with its own ledger (docs/design.md, rule 10)."""

from __future__ import annotations

import pytest

from nodefeatures.cluster.reconcile import (
    ADD,
    CONFLICT,
    KEEP,
    LEDGER_ANNOTATION,
    LEDGER_MAX_BYTES,
    OTHER,
    REMOVE,
    SOURCES_ANNOTATION,
    Budget,
    Evidence,
    Ledger,
    SourceReport,
    apply_to,
    check_instance,
    describe,
    ledger_annotation,
    missing_instance,
    plan,
    prune_plan,
)

F = "feature.node.kubernetes.io/"
AVX = F + "cpu-cpuid.AVX"
PCI = F + "pci-10de.present"
GPU = "nvidia.com/gpu.count"
PRODUCT = "nvidia.com/gpu.product"
GPU_LEDGER = "nodefeatures.dev/labels-gpu"


def evidence(**sources: dict[str, str]) -> Evidence:
    return Evidence(tuple(SourceReport(n, labels, True) for n, labels in sources.items()),
                    complete=True)


def step(labels: dict[str, str], annotations: dict[str, str], result) -> None:
    """Apply a plan's patch to the Node in place, as the API server's merge patch does."""
    labels.update(apply_to(labels, result))
    for key in [k for k, v in result.labels.items() if v is None]:
        labels.pop(key, None)
    for name, value in result.annotations.items():
        if value is None:
            annotations.pop(name, None)
        else:
            annotations[name] = value


def action_of(result, key: str) -> str:
    return next(c.action for c in result.changes if c.key == key)


def test_instance_ledger_names_keep_the_default_names() -> None:
    assert ledger_annotation("") == LEDGER_ANNOTATION == "nodefeatures.dev/labels"
    assert ledger_annotation("gpu") == GPU_LEDGER
    assert check_instance("") is None and check_instance("gpu") is None
    for bad in ("GPU", "gpu/x", "-gpu", "a" * 41, "gpu_1"):
        assert check_instance(bad) is not None, bad


def test_each_instance_writes_only_its_own_ledger_annotation() -> None:
    base = plan(evidence(cpu={AVX: "true"}), {}, {})
    gpu = plan(evidence(nvidia={GPU: "1"}), {}, {}, instance="gpu")
    assert set(base.annotations) == {LEDGER_ANNOTATION}
    assert set(gpu.annotations) == {GPU_LEDGER}
    assert Ledger.parse({GPU_LEDGER: gpu.annotations[GPU_LEDGER]}, "gpu").owners == {
        GPU: "nvidia"}
    # The default instance does not read the gpu ledger as its own, nor the reverse.
    assert Ledger.parse(gpu.annotations).owners == {}
    assert Ledger.parse(base.annotations, "gpu").owners == {}


def test_named_instance_writes_an_empty_ledger_that_says_it_runs() -> None:
    # A GPU agent without NVML publishes nothing; its ledger still marks it present.
    result = plan(evidence(nvidia={}), {}, {}, instance="gpu")
    assert result.annotations == {GPU_LEDGER: "{}"}
    assert not result.labels
    again = plan(evidence(nvidia={}), {}, {GPU_LEDGER: "{}"}, instance="gpu")
    assert again.patch("1") is None
    # The default instance keeps its old behaviour: no labels, no annotation.
    assert plan(evidence(cpu={}), {}, {}).patch("1") is None


def test_two_instances_converge_and_neither_removes_the_others_labels() -> None:
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    base_ev = evidence(cpu={AVX: "true"}, pci={PCI: "true"})
    gpu_ev = evidence(nvidia={GPU: "1", PRODUCT: "H200"})
    for _ in range(3):
        step(labels, annotations, plan(base_ev, labels, annotations))
        step(labels, annotations, plan(gpu_ev, labels, annotations, instance="gpu"))
    assert labels == {AVX: "true", PCI: "true", GPU: "1", PRODUCT: "H200"}
    # Settled: neither has anything left to write.
    assert plan(base_ev, labels, annotations).patch("1") is None
    assert plan(gpu_ev, labels, annotations, instance="gpu").patch("1") is None
    # Each removal-on-evidence considers only its own ledger: a complete, clean pass of
    # the base agent that reports no nvidia.com/ key removes none of the GPU agent's.
    base_without = plan(evidence(cpu={AVX: "true"}, pci={PCI: "true"}), labels, annotations)
    assert not base_without.labels
    gpu_gone = plan(evidence(nvidia={GPU: "1"}), labels, annotations, instance="gpu")
    assert gpu_gone.labels == {PRODUCT: None}
    assert action_of(gpu_gone, PRODUCT) == REMOVE


def test_a_key_the_other_instance_owns_is_foreign_never_a_conflict_that_flaps() -> None:
    # Both instances discover the same key with different values (a base agent that
    # still runs the nvidia source on a node where NVML happens to work).
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    gpu_ev = evidence(nvidia={GPU: "8"})
    base_ev = evidence(nvidia={GPU: "1"})
    step(labels, annotations, plan(gpu_ev, labels, annotations, instance="gpu"))
    history = []
    for _ in range(4):
        base = plan(base_ev, labels, annotations, take_over=True)
        assert action_of(base, GPU) == OTHER
        assert base.by_action(CONFLICT) == []
        step(labels, annotations, base)
        step(labels, annotations, plan(gpu_ev, labels, annotations, instance="gpu"))
        history.append(labels[GPU])
    assert history == ["8"] * 4
    assert GPU not in Ledger.parse(annotations).owners
    # The same holds the other way round: the gpu instance leaves a default-ledger key.
    labels2 = {AVX: "true"}
    annotations2 = {LEDGER_ANNOTATION: Ledger({AVX: "cpu"}).encode()[LEDGER_ANNOTATION]}
    gpu = plan(evidence(cpu={AVX: "false"}), labels2, annotations2, instance="gpu")
    assert action_of(gpu, AVX) == OTHER and not gpu.labels


def test_a_key_the_other_instance_owns_and_nobody_has_set_is_not_added() -> None:
    annotations = {GPU_LEDGER: Ledger({GPU: "nvidia"}, "gpu").encode()[GPU_LEDGER]}
    base = plan(evidence(nvidia={GPU: "1"}), {}, annotations)
    assert action_of(base, GPU) == OTHER and not base.labels


def test_old_two_annotation_form_is_still_the_default_instance() -> None:
    annotations = {LEDGER_ANNOTATION: AVX, SOURCES_ANNOTATION: "cpu:cpuid.AVX"}
    labels = {AVX: "true"}
    gpu = plan(evidence(cpu={AVX: "true"}), labels, annotations, instance="gpu")
    assert action_of(gpu, AVX) == OTHER
    assert SOURCES_ANNOTATION not in gpu.annotations  # the gpu instance never touches it
    base = plan(evidence(cpu={AVX: "true"}), labels, annotations)
    assert Ledger.parse(annotations).owners == {AVX: "cpu"}
    assert base.annotations[SOURCES_ANNOTATION] is None  # rewritten once, as before


def test_each_ledger_has_its_own_size_bound() -> None:
    many = {f"nvidia.com/gpu.x{i:05d}": "1" for i in range(6000)}
    full = Ledger({k: "nvidia" for k in many}, "gpu")
    assert full.size() > LEDGER_MAX_BYTES
    base_annotations = {LEDGER_ANNOTATION: "x" * (LEDGER_MAX_BYTES - 10)}
    roomy = Evidence((SourceReport("nvidia", many, True),), complete=True,
                     budget=Budget(labels=10000, bytes=1 << 20))
    gpu = plan(roomy, {}, base_annotations, instance="gpu")
    assert 0 < gpu.ledger.size() <= LEDGER_MAX_BYTES
    assert "ledger-full" in gpu.problems
    assert set(gpu.annotations) == {GPU_LEDGER}


def test_prune_instance_removes_only_that_instances_labels_and_ledger() -> None:
    labels = {AVX: "true", GPU: "1"}
    annotations = {LEDGER_ANNOTATION: Ledger({AVX: "cpu"}).encode()[LEDGER_ANNOTATION],
                   GPU_LEDGER: Ledger({GPU: "nvidia"}, "gpu").encode()[GPU_LEDGER]}
    gpu = prune_plan(labels, annotations, instance="gpu")
    assert gpu.labels == {GPU: None}
    assert gpu.annotations == {GPU_LEDGER: None}
    base = prune_plan(labels, annotations)
    assert base.labels == {AVX: None}
    assert base.annotations == {LEDGER_ANNOTATION: None}
    # An empty gpu ledger ("{}") is removed too; none at all means nothing to send.
    assert prune_plan({}, {GPU_LEDGER: "{}"}, instance="gpu").annotations == {GPU_LEDGER: None}
    assert prune_plan({}, {}, instance="gpu").patch("1") is None


@pytest.mark.parametrize("pci", [PCI, F + "pci-0300_10de.present", F + "pci-0302_10de.present",
                                 "node-restriction.kubernetes.io/nodefeatures-gpu-agent"])
def test_missing_gpu_instance_is_a_problem_of_the_base_plan(pci: str) -> None:
    labels = {pci: "true"}
    result = plan(evidence(cpu={}), labels, {}, expect="gpu")
    assert "instance-missing:gpu" in result.problems
    assert GPU_LEDGER in result.problems["instance-missing:gpu"]
    assert not result.labels and not result.annotations  # no GPU label written for it
    text = describe(result, "n1", "1", result.patch("1"))
    assert "warning: the Node has " + pci + "=true" in text
    # Present (even empty), or no NVIDIA PCI label, or not expected: no problem.
    assert missing_instance(labels, {GPU_LEDGER: "{}"}, "gpu") is None
    assert missing_instance({pci: "false"}, {}, "gpu") is None
    assert "instance-missing:gpu" not in plan(evidence(cpu={}), labels, {}).problems


def test_keep_of_own_keys_is_unaffected_by_the_other_ledger() -> None:
    labels = {GPU: "1"}
    annotations = {GPU_LEDGER: Ledger({GPU: "nvidia"}, "gpu").encode()[GPU_LEDGER]}
    failed = Evidence((SourceReport("nvidia", {}, False, "NVML: boom"),))
    assert action_of(plan(failed, labels, annotations, instance="gpu"), GPU) == KEEP
    assert action_of(plan(evidence(nvidia={PRODUCT: "H200"}), {}, {}, instance="gpu"),
                     PRODUCT) == ADD


# -- the base agent reports a missing GPU agent ------------------------------------------


def test_base_agent_reports_a_missing_gpu_agent_after_the_grace_period(tmp_path) -> None:
    import time

    from fakeapi import FakeNodeApi
    from test_agent_loop import agent_for

    api = FakeNodeApi(labels={PCI: "true"})
    agent = agent_for(api, tmp_path, expect_instance="gpu", expect_grace=0.3)
    agent.sync()
    missing = [e for e in api.events if e[1] == "GPUAgentMissing"]
    assert missing == []  # within the grace period: the GPU agent may be starting
    gauge = agent.metrics.instance_missing.labels("gpu")
    assert gauge._value.get() == 0
    time.sleep(0.35)
    agent.sync()
    missing = [e for e in api.events if e[1] == "GPUAgentMissing"]
    assert len(missing) == 1 and missing[0][0] == "Warning"
    assert GPU_LEDGER in missing[0][2]
    assert gauge._value.get() == 1
    # The host labels are still published, and no GPU label is written by the base agent.
    labels = api.obj["metadata"]["labels"]
    assert labels[AVX] == "true" and not any(k.startswith("nvidia.com/") for k in labels)
    # The GPU agent arrives (an empty ledger: no NVML): the report clears.
    api.obj["metadata"]["annotations"][GPU_LEDGER] = "{}"
    agent.sync()
    assert gauge._value.get() == 0
    # The base agent never touched the GPU ledger.
    assert api.obj["metadata"]["annotations"][GPU_LEDGER] == "{}"


def test_agent_without_expect_instance_reports_nothing(tmp_path) -> None:
    from fakeapi import FakeNodeApi
    from test_agent_loop import agent_for

    api = FakeNodeApi(labels={PCI: "true"})
    agent = agent_for(api, tmp_path, expect_grace=0.0)
    agent.sync()
    assert not [e for e in api.events if e[1] == "GPUAgentMissing"]
