"""deploy/base/rbac.yaml is enough for the agent, and grants nothing it does not use;
with deploy/base/nodefeature-policy.yaml its real, node-bound token may write only its
own node's NodeFeature."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentkit import (
    LABEL_NAMESPACES,
    NODEFEATURE_POLICY_FILE,
    RBAC_FILES,
    SA_NAME,
    SA_NAMESPACE,
    SA_USER,
    F,
    Switchable,
    acting_user,
    ensure_created,
    events_about,
    label_namespaces_configmap,
    labels_of,
    make_agent,
    patch_node,
    start,
    wait_until,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration

AVX = F + "cpu-cpuid.AVX"


NFD = "nfd.k8s-sigs.io"


def allowed(apiserver: Any, verb: str, resource: str, subresource: str = "",
            namespace: str = "", name: str = "", group: str = "") -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=SA_USER,
        groups=["system:serviceaccounts", "system:serviceaccounts:nodefeatures",
                "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, subresource=subresource or None,
            namespace=namespace or None, name=name or None, group=group or None)))
    with apiserver.admin_client() as api:
        result = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(result.status.allowed)


def test_rbac_file_declares_exactly_the_agents_objects() -> None:
    documents = [d for f in RBAC_FILES for d in yaml.safe_load_all(f.read_text())]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert kinds == {("Namespace", "nodefeatures"), ("ServiceAccount", "nodefeatures"),
                     ("ClusterRole", "nodefeatures"), ("ClusterRoleBinding", "nodefeatures"),
                     ("Role", "nodefeatures"), ("RoleBinding", "nodefeatures")}


@pytest.mark.parametrize(("verb", "resource", "subresource", "namespace", "expected"), [
    ("get", "nodes", "", "", True),
    ("watch", "nodes", "", "", True),
    ("patch", "nodes", "", "", True),
    ("create", "events", "", "default", True),
    ("list", "nodes", "", "", False),  # the agent never lists Nodes
    ("update", "nodes", "", "", False),
    ("delete", "nodes", "", "", False),
    ("create", "nodes", "", "", False),
    ("patch", "nodes", "status", "", True),  # GPU condition, extended resources: no more
    ("update", "nodes", "status", "", False),
    ("get", "nodes", "proxy", "", False),
    ("get", "secrets", "", "nodefeatures", False),
    ("list", "pods", "", "", False),
])
def test_service_account_may_do_only_what_the_agent_needs(
        apiserver: Any, rbac: str, verb: str, resource: str, subresource: str, namespace: str,
        expected: bool) -> None:
    assert allowed(apiserver, verb, resource, subresource, namespace) is expected


@pytest.mark.parametrize(("verb", "resource", "namespace", "name", "expected"), [
    # NFD's API, read only, cluster-wide.
    ("get", "nodefeaturerules", "", "", True),
    ("list", "nodefeaturerules", "", "", True),
    ("watch", "nodefeaturerules", "", "", True),
    ("create", "nodefeaturerules", "", "", False),
    ("update", "nodefeaturerules", "", "", False),
    ("delete", "nodefeaturerules", "", "", False),
    ("list", "nodefeatures", "", "", True),  # every namespace
    ("watch", "nodefeatures", "", "", True),
    ("get", "nodefeatures", "gpu-operator", "", True),
    ("create", "nodefeatures", "gpu-operator", "", False),
    ("update", "nodefeatures", "gpu-operator", "", False),
    ("patch", "nodefeatures", "default", "", False),
    # Its own NodeFeature, in its own namespace (the policy picks which one).
    ("create", "nodefeatures", "nodefeatures", "", True),
    ("update", "nodefeatures", "nodefeatures", "", True),
    ("patch", "nodefeatures", "nodefeatures", "", True),
    ("delete", "nodefeatures", "nodefeatures", "", False),
    ("deletecollection", "nodefeatures", "nodefeatures", "", False),
    ("list", "nodefeaturegroups", "", "", False),
])
def test_service_account_reads_nfds_api_and_writes_only_in_its_namespace(
        apiserver: Any, rbac: str, verb: str, resource: str, namespace: str, name: str,
        expected: bool) -> None:
    assert allowed(apiserver, verb, resource, namespace=namespace, name=name,
                   group=NFD) is expected


@pytest.mark.parametrize(("verb", "namespace", "name", "expected"), [
    ("get", "nodefeatures", LABEL_NAMESPACES, True),
    ("list", "nodefeatures", LABEL_NAMESPACES, True),  # with metadata.name= only
    ("watch", "nodefeatures", LABEL_NAMESPACES, True),
    ("update", "nodefeatures", LABEL_NAMESPACES, False),
    ("delete", "nodefeatures", LABEL_NAMESPACES, False),
    ("get", "nodefeatures", "nodefeatures-config", False),  # mounted by the kubelet instead
    ("list", "nodefeatures", "", False),
    ("get", "kube-system", LABEL_NAMESPACES, False),
])
def test_service_account_reads_one_configmap(apiserver: Any, rbac: str, verb: str,
                                             namespace: str, name: str,
                                             expected: bool) -> None:
    assert allowed(apiserver, verb, "configmaps", namespace=namespace, name=name) is expected


# ----- with the agent's real token -------------------------------------------------------


def status_of(call: Any) -> tuple[int, str]:
    """(HTTP status, message) of a call expected to fail."""
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, str(json.loads(caught.value.body).get("message"))


def node_feature(name: str, node: str | None, namespace: str = SA_NAMESPACE,
                 labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A NodeFeature as nfd-worker writes one (and `run --output nodefeature` will)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if node is not None:
        meta["labels"] = {"nfd.node.kubernetes.io/node-name": node}
    return {"apiVersion": f"{NFD}/v1alpha1", "kind": "NodeFeature", "metadata": meta,
            "spec": {"features": {"flags": {"cpu.cpuid": {"elements": {"AVX2": {}}}}},
                     "labels": labels or {"feature.node.kubernetes.io/cpu-cpuid.AVX2": "true"}}}


POLICY = "nodefeatures-own-nodefeature"


@pytest.fixture(scope="module")
def nodefeature_policy(apiserver: Any, rbac: str, nfd_crds: None) -> Iterator[str]:
    """deploy/base's NodeFeature policy and binding, enforced; removed afterwards
    unless another module had installed them."""
    documents = [d for d in yaml.safe_load_all(NODEFEATURE_POLICY_FILE.read_text()) if d]
    with apiserver.admin_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        existed = any(p.metadata.name == POLICY
                      for p in admission.list_validating_admission_policy().items)
        ensure_created(apiserver, documents)
        ensure_created(apiserver, [label_namespaces_configmap()])
        probe = f"probe-{uuid.uuid4().hex[:6]}"
        impostor = client.CustomObjectsApi(apiserver.client_as(
            SA_USER, extra={"authentication.kubernetes.io/node-name": "elsewhere"}))

        def enforced() -> bool:  # a dry run the policy must refuse
            try:
                impostor.create_namespaced_custom_object(
                    NFD, "v1alpha1", SA_NAMESPACE, "nodefeatures",
                    node_feature(probe, probe), dry_run="All")
            except ApiException as error:
                return error.status == 403 and POLICY in str(error.body)
            return False

        wait_until(enforced, 30, "the NodeFeature policy to be enforced", every=0.2)
        try:
            yield POLICY
        finally:
            if not existed:
                admission.delete_validating_admission_policy_binding(POLICY)
                admission.delete_validating_admission_policy(POLICY)


@pytest.fixture
def token_for(apiserver: Any, node: str) -> Iterator[Any]:
    """ApiClients with the agent's real ServiceAccount token, bound to `node`."""
    clients = []

    def make(bound: str = node) -> client.ApiClient:
        token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME, node=bound)
        clients.append(apiserver.client_for_token(token))
        return clients[-1]

    yield make
    for api in clients:
        api.close()


@pytest.fixture
def other_node(apiserver: Any, rbac: str) -> Iterator[str]:
    name = f"other-{uuid.uuid4().hex[:8]}"
    with apiserver.admin_client() as api:
        client.CoreV1Api(api).create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        yield name
        client.CoreV1Api(api).delete_node(name)


def test_real_token_writes_its_own_nodefeature_and_no_other(
        apiserver: Any, nodefeature_policy: str, node: str, other_node: str,
        token_for: Any) -> None:
    objects = client.CustomObjectsApi(token_for())
    args = (NFD, "v1alpha1", SA_NAMESPACE, "nodefeatures")
    created = objects.create_namespaced_custom_object(*args, node_feature(node, node))
    assert created["metadata"]["labels"]["nfd.node.kubernetes.io/node-name"] == node
    # Update (full replace) and patch of its own object.
    created["spec"]["labels"] = {"feature.node.kubernetes.io/x": "1"}
    objects.replace_namespaced_custom_object(*args, node, created)
    objects.patch_namespaced_custom_object(*args, node, {"spec": {"labels": {"vendor.io/y": "2"}}})
    assert objects.get_namespaced_custom_object(*args, node)["spec"]["labels"] == {
        "feature.node.kubernetes.io/x": "1", "vendor.io/y": "2"}
    # Another node's, by name, by label, or both.
    for obj, says in ((node_feature(other_node, other_node), f"belongs to node {node}"),
                      (node_feature(other_node, node), f"belongs to node {node}"),
                      (node_feature(f"{node}-2", node), f"belongs to node {node}")):
        code, message = status_of(lambda o=obj: objects.create_namespaced_custom_object(*args, o))
        assert code == 403 and f"ValidatingAdmissionPolicy '{POLICY}'" in message, message
        assert says in message, message
    # Its own object relabelled for another node, or for none.
    for value in (other_node, None):
        code, message = status_of(lambda v=value: objects.patch_namespaced_custom_object(
            *args, node, {"metadata": {"labels": {"nfd.node.kubernetes.io/node-name": v}}}))
        assert code == 403 and "nfd.node.kubernetes.io/node-name=" + node in message, message
    # An object someone else made for another node stays out of reach.
    with apiserver.admin_client() as admin:
        client.CustomObjectsApi(admin).create_namespaced_custom_object(
            *args, node_feature(other_node, other_node))
    code, message = status_of(lambda: objects.patch_namespaced_custom_object(
        *args, other_node, {"spec": {"labels": {"vendor.io/evil": "1"}}}))
    assert code == 403 and f"ValidatingAdmissionPolicy '{POLICY}'" in message, message
    # No delete, not even of its own.
    code, _ = status_of(lambda: objects.delete_namespaced_custom_object(*args, node))
    assert code == 403


def test_real_token_writes_no_nodefeature_outside_its_namespace(
        apiserver: Any, nodefeature_policy: str, node: str, token_for: Any) -> None:
    objects = client.CustomObjectsApi(token_for())
    for namespace in ("default", "gpu-operator"):
        obj = node_feature(node, node, namespace=namespace)
        code, message = status_of(
            lambda o=obj, n=namespace: objects.create_namespaced_custom_object(
                NFD, "v1alpha1", n, "nodefeatures", o))
        assert code == 403 and "forbidden" in message, message  # RBAC, before admission


def test_real_token_reads_rules_and_nodefeatures_but_deletes_no_rule(
        apiserver: Any, nodefeature_policy: str, node: str, token_for: Any) -> None:
    rule = {"apiVersion": f"{NFD}/v1alpha1", "kind": "NodeFeatureRule",
            "metadata": {"name": f"rbac-{node}"},
            "spec": {"rules": [{"name": "r", "labels": {"vendor.io/r": "true"}, "matchFeatures": [
                {"feature": "cpu.cpuid", "matchExpressions": {"AVX": {"op": "Exists"}}}]}]}}
    gfd = node_feature(f"gfd-{node}", node, namespace="default",
                       labels={"nvidia.com/gpu.product": "A100"})
    with apiserver.admin_client() as admin:
        admin_objects = client.CustomObjectsApi(admin)
        admin_objects.create_cluster_custom_object(NFD, "v1alpha1", "nodefeaturerules", rule)
        admin_objects.create_namespaced_custom_object(NFD, "v1alpha1", "default",
                                                      "nodefeatures", gfd)
        try:
            objects = client.CustomObjectsApi(token_for())
            rules = objects.list_cluster_custom_object(NFD, "v1alpha1", "nodefeaturerules")
            assert rule["metadata"]["name"] in {r["metadata"]["name"] for r in rules["items"]}
            # NodeFeatures of every namespace, selected by this node's label.
            found = objects.list_cluster_custom_object(
                NFD, "v1alpha1", "nodefeatures",
                label_selector=f"nfd.node.kubernetes.io/node-name={node}")
            assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in found["items"]] \
                == [("default", gfd["metadata"]["name"])]
            code, _ = status_of(lambda: objects.delete_cluster_custom_object(
                NFD, "v1alpha1", "nodefeaturerules", rule["metadata"]["name"]))
            assert code == 403
            changed = copy.deepcopy(rule)
            changed["spec"]["rules"][0]["labels"] = {"kubernetes.io/evil": "x"}
            code, _ = status_of(lambda: objects.patch_cluster_custom_object(
                NFD, "v1alpha1", "nodefeaturerules", rule["metadata"]["name"], changed))
            assert code == 403
        finally:
            admin_objects.delete_cluster_custom_object(NFD, "v1alpha1", "nodefeaturerules",
                                                       rule["metadata"]["name"])
            admin_objects.delete_namespaced_custom_object(NFD, "v1alpha1", "default",
                                                          "nodefeatures", gfd["metadata"]["name"])


def test_real_token_reads_the_label_namespaces_and_no_other_configmap(
        apiserver: Any, nodefeature_policy: str, node: str, token_for: Any) -> None:
    core = client.CoreV1Api(token_for())
    config = core.read_namespaced_config_map(LABEL_NAMESPACES, SA_NAMESPACE)
    assert set(config.data) == {"denyLabelNs", "extraLabelNs", "enableAnnotations",
                                "enableTaints", "enableExtendedResources"}
    listed = core.list_namespaced_config_map(
        SA_NAMESPACE, field_selector=f"metadata.name={LABEL_NAMESPACES}")
    assert [c.metadata.name for c in listed.items] == [LABEL_NAMESPACES]
    with apiserver.admin_client() as admin:
        other = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"secretish-{node}"),
                                   data={"token": "x"})
        client.CoreV1Api(admin).create_namespaced_config_map(SA_NAMESPACE, other)
    for call in (lambda: core.read_namespaced_config_map(f"secretish-{node}", SA_NAMESPACE),
                 lambda: core.list_namespaced_config_map(SA_NAMESPACE),
                 lambda: core.read_namespaced_config_map(LABEL_NAMESPACES, "kube-system"),
                 lambda: core.patch_namespaced_config_map(
                     LABEL_NAMESPACES, SA_NAMESPACE, {"data": {"extraLabelNs": "kubernetes.io"}})):
        code, _ = status_of(call)
        assert code == 403


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
    # It never lists Nodes (it does list NFD's objects and its ConfigMap, then watches).
    assert not [e for e in apiserver.audit_events(verbs={"list"}) if acting_user(e) == SA_USER
                and e.get("objectRef", {}).get("resource") == "nodes"]
