"""The agent against a real kube-apiserver: what it adds, changes, removes and leaves alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    LEDGER,
    SOURCES,
    F,
    Switchable,
    annotations_of,
    events_about,
    labels_of,
    make_agent,
    owned_on,
    patch_node,
    start,
    wait_until,
)

pytestmark = pytest.mark.integration

AVX = F + "cpu-cpuid.AVX"
AVX2 = F + "cpu-cpuid.AVX2"
OS_ID = F + "system-os_release.ID"
GPU_COUNT = "nvidia.com/gpu.count"


def test_labels_and_ledger_applied_to_a_new_node(apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true", AVX2: "true"})
    gpu = Switchable("nvidia", {GPU_COUNT: "8"})
    running = start(make_agent(apiserver, node, [cpu, gpu], tmp_path))
    try:
        wait_until(lambda: GPU_COUNT in labels_of(apiserver, node), what="labels on the node")
        labels = labels_of(apiserver, node)
        assert {k: labels[k] for k in (AVX, AVX2, GPU_COUNT)} == {
            AVX: "true", AVX2: "true", GPU_COUNT: "8"}
        assert labels["kubernetes.io/hostname"] == node  # someone else's label, untouched
        annotations = annotations_of(apiserver, node)
        assert json.loads(annotations[LEDGER]) == {
            "cpu": {F + "cpu-": ["cpuid.AVX", "cpuid.AVX2"]},
            "nvidia": {"nvidia.com/": ["gpu.count"]}}
        assert SOURCES not in annotations  # the first ledger form's second annotation
        wait_until(lambda: running.agent.ready, what="readiness after the first pass")
        assert running.agent.writes == 1  # one patch carried every label and the ledger
    finally:
        running.stop()


def test_stale_owned_label_removed_when_its_source_stops_reporting_it(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true", AVX2: "true"})
    running = start(make_agent(apiserver, node, [cpu], tmp_path))
    try:
        wait_until(lambda: AVX2 in labels_of(apiserver, node), what="AVX2 published")
        del cpu.current[AVX2]  # the cpu source ran cleanly and no longer sees AVX2
        wait_until(lambda: AVX2 not in labels_of(apiserver, node), what="AVX2 removed")
        assert labels_of(apiserver, node)[AVX] == "true"
        assert owned_on(apiserver, node) == {AVX: "cpu"}
    finally:
        running.stop()


def test_failing_source_keeps_its_labels_until_it_reports_again(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    gpu = Switchable("nvidia", {GPU_COUNT: "8"})
    agent = make_agent(apiserver, node, [cpu, gpu], tmp_path)
    agent.discover_now()
    agent.sync()
    assert labels_of(apiserver, node)[GPU_COUNT] == "8"

    gpu.fail = True  # e.g. NVML not ready after a driver upgrade
    agent.discover_now()
    decided = agent.sync()
    assert not decided.needs_write
    assert labels_of(apiserver, node)[GPU_COUNT] == "8"

    gpu.fail, gpu.incomplete = False, True  # ran, but a read failed: still no evidence
    gpu.current = {}
    agent.discover_now()
    assert not agent.sync().needs_write
    assert labels_of(apiserver, node)[GPU_COUNT] == "8"

    gpu.incomplete = False  # a clean run without GPUs is the evidence
    agent.discover_now()
    agent.sync()
    assert GPU_COUNT not in labels_of(apiserver, node)
    assert labels_of(apiserver, node)[AVX] == "true"


def test_disabled_source_is_no_evidence(apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    gpu = Switchable("nvidia", {GPU_COUNT: "8"})
    make_agent(apiserver, node, [cpu, gpu], tmp_path).sync()
    # Restarted with the nvidia source switched off (or uninstalled): nothing to remove.
    without_gpu = make_agent(apiserver, node, [cpu], tmp_path, installed=["cpu", "nvidia"])
    assert not without_gpu.sync().needs_write
    assert labels_of(apiserver, node)[GPU_COUNT] == "8"
    assert owned_on(apiserver, node) == {AVX: "cpu", GPU_COUNT: "nvidia"}


def test_foreign_labels_and_foreign_values_are_left_alone(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    patch_node(apiserver, node, {"metadata": {"labels": {
        "nvidia.com/gpu.product": "Tesla-T4",  # GFD's value, not ours
        F + "usb-fe_1a6e_089a.present": "true",  # an NFD label we never produce
        "team.example.com/owner": "ml",
    }}})
    gpu = Switchable("nvidia", {"nvidia.com/gpu.product": "NVIDIA-A100", GPU_COUNT: "1"})
    agent = make_agent(apiserver, node, [gpu], tmp_path)
    decided = agent.sync()
    labels = labels_of(apiserver, node)
    assert labels["nvidia.com/gpu.product"] == "Tesla-T4"
    assert labels[F + "usb-fe_1a6e_089a.present"] == "true"
    assert labels["team.example.com/owner"] == "ml"
    assert labels[GPU_COUNT] == "1"
    assert owned_on(apiserver, node) == {GPU_COUNT: "nvidia"}
    assert [c.key for c in decided.changes if c.action == "conflict"] == [
        "nvidia.com/gpu.product"]
    # The conflict is reported on the Node, where `kubectl describe node` shows it.
    events = wait_until(lambda: [e for e in events_about(apiserver, node)
                                 if e.reason == "LabelConflict"], what="LabelConflict Event")
    assert events[0].involved_object.kind == "Node"
    assert events[0].type == "Warning"
    assert "nvidia.com/gpu.product=Tesla-T4" in events[0].message
    assert "NVIDIA-A100" in events[0].message


def test_take_over_adopts_nfd_and_gfd_labels_in_one_step(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    nfd_only = F + "usb-fe_1a6e_089a.present"
    patch_node(apiserver, node, {"metadata": {
        "labels": {AVX: "true", "nvidia.com/gpu.product": "Tesla-T4", nfd_only: "true"},
        "annotations": {"nfd.node.kubernetes.io/feature-labels": "cpu-cpuid.AVX"},
    }})
    cpu = Switchable("cpu", {AVX: "true"})
    gpu = Switchable("nvidia", {"nvidia.com/gpu.product": "NVIDIA-A100"})
    agent = make_agent(apiserver, node, [cpu, gpu], tmp_path, take_over=True)
    decided = agent.sync()
    assert {c.key: c.action for c in decided.changes if c.action == "adopt"} == {
        AVX: "adopt", "nvidia.com/gpu.product": "adopt"}
    labels = labels_of(apiserver, node)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100"
    assert labels[nfd_only] == "true"  # not produced by us: no evidence, not touched
    annotations = annotations_of(apiserver, node)
    assert owned_on(apiserver, node) == {AVX: "cpu", "nvidia.com/gpu.product": "nvidia"}
    assert annotations["nfd.node.kubernetes.io/feature-labels"] == "cpu-cpuid.AVX"
    # Take-over is one step: afterwards these are simply ours, and a later writer of a
    # different value is undone like any drift, while new foreign keys stay foreign.
    assert agent._take_over is False
    patch_node(apiserver, node, {"metadata": {"labels": {F + "cpu-cpuid.SSE4": "false"}}})
    cpu.current[F + "cpu-cpuid.SSE4"] = "true"
    agent.discover_now()
    later = agent.sync()
    assert [c.action for c in later.changes if c.key == F + "cpu-cpuid.SSE4"] == ["conflict"]
