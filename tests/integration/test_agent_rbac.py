"""deploy/base/rbac.yaml is enough for the agent, and grants nothing it does not use."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentkit import (
    RBAC_FILES,
    SA_USER,
    F,
    Switchable,
    acting_user,
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


def allowed(apiserver: Any, verb: str, resource: str, subresource: str = "",
            namespace: str = "", name: str = "") -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=SA_USER,
        groups=["system:serviceaccounts", "system:serviceaccounts:nodefeatures",
                "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, subresource=subresource or None,
            namespace=namespace or None, name=name or None)))
    with apiserver.admin_client() as api:
        result = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(result.status.allowed)


def test_rbac_file_declares_exactly_the_agents_objects() -> None:
    documents = [d for f in RBAC_FILES for d in yaml.safe_load_all(f.read_text())]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert kinds == {("Namespace", "nodefeatures"), ("ServiceAccount", "nodefeatures"),
                     ("ClusterRole", "nodefeatures"), ("ClusterRoleBinding", "nodefeatures")}


@pytest.mark.parametrize(("verb", "resource", "subresource", "namespace", "expected"), [
    ("get", "nodes", "", "", True),
    ("watch", "nodes", "", "", True),
    ("patch", "nodes", "", "", True),
    ("create", "events", "", "default", True),
    ("list", "nodes", "", "", False),  # the agent never lists Nodes
    ("update", "nodes", "", "", False),
    ("delete", "nodes", "", "", False),
    ("create", "nodes", "", "", False),
    ("patch", "nodes", "status", "", True),  # its GPU condition; the policy allows no more
    ("update", "nodes", "status", "", False),
    ("get", "nodes", "proxy", "", False),
    ("get", "secrets", "", "nodefeatures", False),
    ("list", "pods", "", "", False),
])
def test_service_account_may_do_only_what_the_agent_needs(
        apiserver: Any, rbac: str, verb: str, resource: str, subresource: str, namespace: str,
        expected: bool) -> None:
    assert allowed(apiserver, verb, resource, subresource, namespace) is expected


def test_agent_works_as_its_service_account_with_only_that_role(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    started = time.time()
    cpu = Switchable("cpu", {AVX: "true"})
    gpu = Switchable("nvidia", {"nvidia.com/gpu.product": "A100"})
    patch_node(apiserver, node, {"metadata": {"labels": {"nvidia.com/gpu.product": "T4"}}})
    running = start(make_agent(apiserver, node, [cpu, gpu], tmp_path))  # as SA_USER
    try:
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", what="labels")
        patch_node(apiserver, node, {"metadata": {"labels": {AVX: None}}})  # needs the watch
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", timeout=5,
                   what="drift restored")
        # The conflict Event needed events/create in namespace default.
        wait_until(lambda: [e for e in events_about(apiserver, node)
                            if e.reason == "LabelConflict"], what="an Event")
    finally:
        running.stop()
    agent = running.agent
    failed = {s.labels["code"] for m in agent.metrics.requests.collect() for s in m.samples
              if s.name.endswith("_total") and not s.labels["code"].startswith("2")}
    assert failed == set(), "no request of the agent was refused"
    time.sleep(0.5)
    mine = [e for e in apiserver.audit_events() if acting_user(e) == SA_USER
            and e["stageTimestamp"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
            and e.get("objectRef", {}).get("name") == node]
    assert {e["verb"] for e in mine} == {"get", "watch", "patch"}
    for event in mine:
        if event["verb"] == "watch":
            assert f"fieldSelector=metadata.name%3D{node}" in event["requestURI"]
    assert not [e for e in apiserver.audit_events(verbs={"list"}) if acting_user(e) == SA_USER]
