"""Drift, concurrent writers, API outages and rejected writes, against a real server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agentkit import (
    F,
    Switchable,
    events_about,
    labels_of,
    make_agent,
    patch_node,
    start,
    wait_until,
)
from kubernetes import client

pytestmark = pytest.mark.integration

AVX = F + "cpu-cpuid.AVX"
OS_ID = F + "system-os_release.ID"


def count(agent: Any, verb: str, code: str) -> float:
    return agent.metrics.requests.labels(verb, code)._value.get()


def test_label_deleted_or_edited_by_hand_is_restored_within_seconds(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true", OS_ID: "debian"})
    # A long interval: only the watch can explain a quick restore.
    running = start(make_agent(apiserver, node, [cpu], tmp_path, interval=300))
    try:
        wait_until(lambda: running.agent.ready, what="first pass")
        patch_node(apiserver, node, {"metadata": {"labels": {AVX: None}}})
        deleted = time.monotonic()
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", timeout=5,
                   what="the deleted label to come back", every=0.02)
        restored_after = time.monotonic() - deleted

        patch_node(apiserver, node, {"metadata": {"labels": {OS_ID: "hacked"}}})
        wait_until(lambda: labels_of(apiserver, node).get(OS_ID) == "debian", timeout=5,
                   what="the edited label to be set back")
    finally:
        running.stop()
    assert restored_after < 5
    print(f"restored {restored_after * 1000:.0f} ms after the delete")


def test_concurrent_writer_loses_nothing_and_neither_do_we(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    running = start(make_agent(apiserver, node, [cpu], tmp_path, interval=0.2))
    stop = threading.Event()
    written: list[int] = []
    failures: list[BaseException] = []

    def other_writer() -> None:
        # Another controller, patching its own keys (one of them under our prefix) flat out.
        with apiserver.admin_client() as api:
            core = client.CoreV1Api(api)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    core.patch_node(node, {"metadata": {"labels": {
                        "other.example.com/counter": str(i),
                        F + "other-tick": str(i % 2)}}},
                        _content_type="application/merge-patch+json")
                    written.append(i)
                except Exception as error:  # the test fails on any lost write
                    failures.append(error)

    writer = threading.Thread(target=other_writer)
    try:
        wait_until(lambda: running.agent.ready, what="first pass")
        writer.start()
        for step in range(12):  # our features keep changing while the other writer runs
            cpu.current = {AVX: "true", F + f"cpu-step.{step % 3}": str(step)}
            time.sleep(0.25)
        final = {AVX: "true", F + "cpu-step.final": "yes"}
        cpu.current = final
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join(10)
    try:
        wait_until(lambda: all(labels_of(apiserver, node).get(k) == v for k, v in final.items()),
                   what="our final labels")
        time.sleep(1.0)  # a few more passes on a quiet node
        labels = labels_of(apiserver, node)
    finally:
        running.stop()
    assert not failures
    assert labels["other.example.com/counter"] == str(written[-1])
    assert labels[F + "other-tick"] == str(written[-1] % 2)  # under our prefix, not ours
    assert not [k for k in labels if k.startswith(F + "cpu-step.") and k != F + "cpu-step.final"]
    assert len(written) > 50, "the other writer should have been busy"
    print(f"other writer: {len(written)} patches; our 409s: {count(running.agent, 'patch', '409')}")


def test_api_server_killed_mid_run_agent_recovers_and_converges(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    running = start(make_agent(apiserver, node, [cpu], tmp_path, interval=0.5))
    try:
        wait_until(lambda: running.agent.ready, what="first pass")
        apiserver.stop(graceful=False)  # SIGKILL: connections drop mid-stream
        try:
            cpu.current = {AVX: "true", OS_ID: "debian"}
            time.sleep(3)  # several passes fail while the server is gone
            assert running.thread.is_alive()
        finally:
            apiserver.start()
        wait_until(lambda: labels_of(apiserver, node).get(OS_ID) == "debian", timeout=30,
                   what="convergence after the restart")
        # The watch is back too: a hand edit is undone without waiting for a pass.
        patch_node(apiserver, node, {"metadata": {"labels": {AVX: None}}})
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", timeout=5,
                   what="drift restore after the restart")
    finally:
        running.stop()
    errors = sum(count(running.agent, verb, code) for verb in ("get", "patch", "watch")
                 for code in ("connection", "timeout"))
    assert errors >= 1
    assert running.agent.metrics.passes.labels("error")._value.get() >= 1


def test_forbidden_patch_is_reported_and_retried_slowly(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    user = "system:serviceaccount:nodefeatures:read-only"
    role = f"read-only-{node}"
    with apiserver.admin_client() as api:
        rbac_api = client.RbacAuthorizationV1Api(api)
        rbac_api.create_cluster_role(client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=role),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["nodes"],
                                       verbs=["get", "watch"]),
                   client.V1PolicyRule(api_groups=[""], resources=["events"],
                                       verbs=["create"])]))
        rbac_api.create_cluster_role_binding(client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=role),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io",
                                      kind="ClusterRole", name=role),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="read-only",
                                           namespace="nodefeatures")]))
        time.sleep(1)
        cpu = Switchable("cpu", {AVX: "true"})
        running = start(make_agent(apiserver, node, [cpu], tmp_path, user=user))
        try:
            agent = running.agent
            wait_until(lambda: count(agent, "patch", "403") >= 1, what="a 403")
            events = wait_until(lambda: [e for e in events_about(apiserver, node)
                                         if e.reason == "LabelPatchRejected"],
                                what="a LabelPatchRejected Event")
            assert "403" in events[0].message and "forbidden" in events[0].message
            time.sleep(1.0)
            assert count(agent, "patch", "403") == 1  # slow retry (2 s here), not a hot loop
            assert running.thread.is_alive() and not agent.ready
            # Once RBAC is fixed, the next slow retry succeeds.
            rbac_api.patch_cluster_role(role, {"rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]})
            wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", timeout=15,
                       what="labels after the permission was granted")
            assert agent.ready
        finally:
            running.stop()
            rbac_api.delete_cluster_role_binding(role)
            rbac_api.delete_cluster_role(role)


def test_node_deleted_and_recreated_is_labelled_again(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    running = start(make_agent(apiserver, node, [cpu], tmp_path, interval=300))
    try:
        wait_until(lambda: running.agent.ready, what="first pass")
        with apiserver.admin_client() as api:
            core = client.CoreV1Api(api)
            core.delete_node(node)
            time.sleep(1)
            assert running.thread.is_alive()
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
        # The watch sees the new Node; the interval is far away.
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", timeout=10,
                   what="labels on the re-created Node")
    finally:
        running.stop()
