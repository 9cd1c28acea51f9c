"""Quiet: a stable node costs no writes (and no reads), and a restart rewrites nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    SA_USER,
    F,
    Switchable,
    make_agent,
    requests_on,
    rv_of,
    start,
    wait_until,
    writes_to,
)

pytestmark = pytest.mark.integration

AVX = F + "cpu-cpuid.AVX"
GPU_COUNT = "nvidia.com/gpu.count"
STABLE_PASSES = 25


def passes(agent: Any) -> float:
    return agent.metrics.passes.labels("ok")._value.get()


def requests(agent: Any, verb: str) -> float:
    total = 0.0
    for metric in agent.metrics.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["verb"] == verb:
                total += sample.value
    return total


def test_zero_writes_and_zero_reads_over_stable_passes(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    gpu = Switchable("nvidia", {GPU_COUNT: "4"})
    running = start(make_agent(apiserver, node, [cpu, gpu], tmp_path, interval=0.1))
    agent = running.agent
    try:
        wait_until(lambda: agent.ready, what="first pass")
        time.sleep(0.5)  # let the audit log catch up with the first write
        version = rv_of(apiserver, node)
        writes_before = len(writes_to(apiserver, node, SA_USER))
        startup = sorted(e["verb"] for e in requests_on(apiserver, node, SA_USER))
        assert startup == ["get", "patch", "watch"]  # read once, follow, write once
        requests_before = len(startup)
        gets, patches = requests(agent, "get"), requests(agent, "patch")
        first = passes(agent)
        wait_until(lambda: passes(agent) >= first + STABLE_PASSES, timeout=20,
                   what=f"{STABLE_PASSES} more passes")
        time.sleep(0.5)
        assert rv_of(apiserver, node) == version
        assert len(writes_to(apiserver, node, SA_USER)) == writes_before
        # Not even reads: each pass compares against the watched copy of the Node.
        assert len(requests_on(apiserver, node, SA_USER)) == requests_before
        assert (requests(agent, "get"), requests(agent, "patch")) == (gets, patches)
    finally:
        running.stop()
    assert writes_before == 1  # the first pass: labels and ledger in one patch


def test_restart_changes_nothing(apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    gpu = Switchable("nvidia", {GPU_COUNT: "4"})
    first = start(make_agent(apiserver, node, [cpu, gpu], tmp_path))
    wait_until(lambda: first.agent.ready, what="first agent's first pass")
    first.stop()
    time.sleep(0.3)
    version = rv_of(apiserver, node)
    writes = len(writes_to(apiserver, node))

    # A new agent (a restarted pod), and on its first pass NVML is not up yet.
    gpu.fail = True
    second = start(make_agent(apiserver, node, [cpu, gpu], tmp_path))
    try:
        wait_until(lambda: second.agent.ready, what="restarted agent's first pass")
        gpu.fail = False
        time.sleep(2.5)  # two more passes
    finally:
        second.stop()
    time.sleep(0.3)
    assert rv_of(apiserver, node) == version
    assert len(writes_to(apiserver, node)) == writes
