"""deploy/ against a real kube-apiserver: strict validation, RBAC, and the own-node policy.

Every object of both install paths is submitted with dryRun=All and fieldValidation=Strict
first, then created for real. The admission policy is then exercised with the server
itself evaluating its CEL: as the agent bound to one node, through impersonation (which
sets the token's node-name extra directly) and through a real node-bound token.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from manifests import DEPLOY, find, render

pytestmark = pytest.mark.integration

NAMESPACE = "nodefeatures"
AGENT = f"system:serviceaccount:{NAMESPACE}:nodefeatures"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
POLICY = "nodefeatures-own-node"
LEDGER = "nodefeatures.dev/labels"
SOURCES_LEDGER = "nodefeatures.dev/sources"
FIELD_MANAGER = "nodefeatures-deploy-test"
POLICY_WAIT_S = 30.0


def submit(dynamic: DynamicClient, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """Create `obj` with strict field validation; server-side apply it if it exists already.

    Other integration tests share the server and may have created the agent's namespace
    or RBAC before; apply keeps this test independent of their order.
    """
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    options: dict[str, Any] = {"query_params": [("fieldValidation", "Strict")]}
    if dry_run:
        options["dry_run"] = "All"
    try:
        return resource.create(body=obj, namespace=namespace, **options).to_dict()
    except ApiException as err:
        if err.status != 409:
            raise
    return resource.server_side_apply(
        body=obj, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True,
        **options).to_dict()


@pytest.fixture(scope="module")
def admin(apiserver) -> Iterator[client.ApiClient]:
    with apiserver.admin_client() as api:
        yield api


@pytest.fixture(scope="module")
def installed(admin) -> list[dict[str, Any]]:
    """Everything in deploy/gpu/ (a superset of deploy/) and the optional
    deploy/nfd-crds/, validated and then created."""
    dynamic = DynamicClient(admin)
    cpu_only, with_gpu = render(DEPLOY), render(DEPLOY / "gpu")
    with_gpu += render(DEPLOY / "nfd-crds")
    for obj in with_gpu:
        accepted = submit(dynamic, obj, dry_run=True)
        assert accepted["metadata"]["name"] == obj["metadata"]["name"]
        submit(dynamic, obj, dry_run=False)
    # The CPU-only DaemonSet differs from the GPU render's (no affinity): validate it too.
    submit(dynamic, find(cpu_only, "DaemonSet", "nodefeatures"), dry_run=True)
    return with_gpu


def test_every_manifest_is_accepted_strictly_and_created(installed, admin) -> None:
    dynamic = DynamicClient(admin)
    for obj in installed:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        stored = resource.get(name=obj["metadata"]["name"],
                              namespace=obj["metadata"].get("namespace")).to_dict()
        assert stored["metadata"]["uid"]
    stored_ds = client.AppsV1Api(admin).read_namespaced_daemon_set("nodefeatures", NAMESPACE)
    # Fields the server would drop if it did not know them survived the round trip.
    mounts = stored_ds.spec.template.spec.containers[0].volume_mounts
    assert {m.name: m.recursive_read_only for m in mounts}["host-root"] == "IfPossible"


def test_strict_validation_is_really_on(installed, admin) -> None:
    """A misspelt field is rejected, so the acceptance above means something."""
    broken = copy.deepcopy(find(installed, "DaemonSet", "nodefeatures"))
    broken["metadata"]["name"] = "nodefeatures-typo"
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"] = True
    with pytest.raises(ApiException) as caught:
        submit(DynamicClient(admin), broken, dry_run=True)
    assert caught.value.status == 400
    assert "readOnlyRootFileSystem" in str(caught.value.body)


def _pod_from(daemonset: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = copy.deepcopy(daemonset["spec"]["template"])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{daemonset['metadata']['name']}-probe",
                         "namespace": namespace, "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


@pytest.fixture(scope="module")
def nvidia_runtime_class(admin) -> None:
    """What the NVIDIA container toolkit installs; Pods naming it are rejected otherwise."""
    body = client.V1RuntimeClass(metadata=client.V1ObjectMeta(name="nvidia"), handler="nvidia")
    try:
        client.NodeV1Api(admin).create_runtime_class(body)
    except ApiException as err:
        if err.status != 409:
            raise


QUOTA = "nodefeatures-critical-pods"


def set_quota_usage(admin: client.ApiClient, pods_used: str) -> None:
    """Fill in the quota's status as kube-controller-manager would (none runs here)."""
    core = client.CoreV1Api(admin)
    hard = core.read_namespaced_resource_quota(QUOTA, NAMESPACE).spec.hard
    core.patch_namespaced_resource_quota_status(
        QUOTA, NAMESPACE, {"status": {"hard": hard, "used": {"pods": pods_used}}})


@pytest.mark.parametrize("name", ["nodefeatures", "nodefeatures-nvidia"])
def test_agent_pods_are_admitted_in_their_namespace(installed, admin, nvidia_runtime_class,
                                                    name: str) -> None:
    set_quota_usage(admin, "0")
    pod = _pod_from(find(installed, "DaemonSet", name), NAMESPACE)
    created = client.CoreV1Api(admin).create_namespaced_pod(NAMESPACE, pod, dry_run="All")
    # Priority admission resolved system-node-critical outside kube-system.
    assert created.spec.priority == 2000001000
    assert created.spec.security_context.run_as_non_root is True


def test_the_quota_covers_the_agent_pods(installed, admin) -> None:
    """Where critical priority needs a quota (GKE), this one is what admits the agent."""
    hard = client.CoreV1Api(admin).read_namespaced_resource_quota(QUOTA, NAMESPACE).spec.hard
    set_quota_usage(admin, hard["pods"])
    try:
        pod = _pod_from(find(installed, "DaemonSet", "nodefeatures"), NAMESPACE)
        # The quota admission reads usage from its cache, which follows the status update
        # a moment later: ask until it answers from the new usage (10 s at most).
        refused = None
        deadline = time.monotonic() + 10
        while refused is None:
            try:
                client.CoreV1Api(admin).create_namespaced_pod(NAMESPACE, pod, dry_run="All")
            except ApiException as error:
                refused = error
                break
            assert time.monotonic() < deadline, "the quota admitted a pod past its limit"
            time.sleep(0.2)
        assert refused.status == 403
        assert f"exceeded quota: {QUOTA}" in json.loads(refused.body)["message"]
    finally:
        set_quota_usage(admin, "0")


@pytest.mark.parametrize(("level", "hostpath_violation"), [
    ("baseline", "hostPath volumes ("),
    ("restricted", 'restricted volume types ('),
])
def test_host_paths_are_all_that_pod_security_forbids(installed, admin, nvidia_runtime_class,
                                                      level: str, hostpath_violation: str) -> None:
    namespace = f"{level}-{secrets.token_hex(3)}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=namespace, labels={"pod-security.kubernetes.io/enforce": level})))
    for name in ("nodefeatures", "nodefeatures-nvidia"):
        pod = _pod_from(find(installed, "DaemonSet", name), namespace)
        with pytest.raises(ApiException) as caught:
            client.CoreV1Api(admin).create_namespaced_pod(namespace, pod, dry_run="All")
        message = json.loads(caught.value.body)["message"]
        header = f'violates PodSecurity "{level}:latest": '
        assert header in message
        violations = message.split(header, 1)[1].split("; ")
        assert len(violations) == 1, message
        assert violations[0].startswith(hostpath_violation), message
        assert "hostPath" in violations[0]
        # Without its host paths the very same pod is admitted at this level.
        pod["spec"]["volumes"] = []
        pod["spec"]["containers"][0]["volumeMounts"] = []
        client.CoreV1Api(admin).create_namespaced_pod(namespace, pod, dry_run="All")


# ----- the own-node admission policy ------------------------------------------------------


class Cluster:
    """Two labelled nodes, A and B, and ways to patch them as someone."""

    def __init__(self, apiserver, admin: client.ApiClient) -> None:
        self.apiserver = apiserver
        self.admin = admin
        suffix = secrets.token_hex(3)
        self.a, self.b, self.bare = (f"node-{n}-{suffix}" for n in ("a", "b", "bare"))
        for name in (self.a, self.b):
            self.create_node(name, labels={
                "kubernetes.io/hostname": name, "team": "blue",
                "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel"},
                annotations={LEDGER: "feature.node.kubernetes.io/cpu-model.vendor_id",
                             "owner.example/contact": "ops"})
        self.create_node(self.bare, labels=None, annotations=None)

    def create_node(self, name: str, labels: dict[str, str] | None,
                     annotations: dict[str, str] | None) -> None:
        meta = client.V1ObjectMeta(name=name, labels=labels, annotations=annotations)
        client.CoreV1Api(self.admin).create_node(client.V1Node(metadata=meta))

    def agent(self, node: str | None) -> client.CoreV1Api:
        """The agent's ServiceAccount as its pod-bound token on `node` presents it."""
        extra = {NODE_NAME_EXTRA: node} if node is not None else None
        return client.CoreV1Api(self.apiserver.client_as(AGENT, extra=extra))

    def labels(self, node: str) -> dict[str, str]:
        return client.CoreV1Api(self.admin).read_node(node).metadata.labels or {}

    def annotations(self, node: str) -> dict[str, str]:
        return client.CoreV1Api(self.admin).read_node(node).metadata.annotations or {}


def merge_patch(api: client.CoreV1Api, node: str, metadata: dict[str, Any],
                dry_run: str | None = None) -> None:
    """A JSON merge patch of the Node's metadata, as the agent sends it."""
    api.patch_node(node, {"metadata": metadata}, _content_type="application/merge-patch+json",
                   dry_run=dry_run)


def denied_by_policy(call: Callable[[], Any]) -> str:
    """Run `call`, expect one of the shipped policies to refuse it (the own-node policy,
    or for a namespace only the setting denies, the label namespaces policy), and return
    its message."""
    with pytest.raises(ApiException) as caught:
        call()
    body = json.loads(caught.value.body)
    assert caught.value.status == 403, body
    assert any(f"ValidatingAdmissionPolicy '{name}'" in body["message"]
               for name in (POLICY, "nodefeatures-label-namespaces")), body["message"]
    return str(body["message"])


@pytest.fixture(scope="module")
def cluster(apiserver, admin, installed) -> Cluster:
    """Nodes A and B, once the server enforces the policy (it loads policies asynchronously)."""
    nodes = Cluster(apiserver, admin)
    deadline = time.monotonic() + POLICY_WAIT_S
    while True:
        try:
            # Known bad and harmless: dry-run, so nothing changes while the policy loads.
            merge_patch(nodes.agent(nodes.a), nodes.b,
                        {"labels": {"feature.node.kubernetes.io/probe": "x"}}, dry_run="All")
        except ApiException as err:
            if err.status == 403 and POLICY in str(err.body):
                return nodes
            if err.status != 403:  # RBAC bindings also propagate asynchronously
                raise
        if time.monotonic() > deadline:
            pytest.fail(f"policy {POLICY} not enforced after {POLICY_WAIT_S:.0f} s")
        time.sleep(0.2)


def test_agent_may_set_and_remove_managed_labels_on_its_own_node(cluster) -> None:
    agent = cluster.agent(cluster.a)
    merge_patch(agent, cluster.a, {
        "labels": {"feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true",
                   "nvidia.com/gpu.count": "8",
                   "feature.node.kubernetes.io/cpu-model.vendor_id": None},
        "annotations": {
            LEDGER: "feature.node.kubernetes.io/cpu-cpuid.AVX512F,nvidia.com/gpu.count"},
    })
    labels = cluster.labels(cluster.a)
    assert labels["feature.node.kubernetes.io/cpu-cpuid.AVX512F"] == "true"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert "feature.node.kubernetes.io/cpu-model.vendor_id" not in labels
    assert labels["team"] == "blue"
    assert cluster.annotations(cluster.a)[LEDGER].endswith("nvidia.com/gpu.count")


def test_agent_may_use_json_patch_too(cluster) -> None:
    agent = cluster.agent(cluster.a)
    agent.patch_node(cluster.a, [{"op": "add",
                                  "path": "/metadata/labels/feature.node.kubernetes.io~1json",
                                  "value": "yes"}])
    assert cluster.labels(cluster.a)["feature.node.kubernetes.io/json"] == "yes"
    denied_by_policy(lambda: agent.patch_node(
        cluster.a, [{"op": "replace", "path": "/metadata/labels/team", "value": "red"}]))


def test_agent_may_label_a_node_that_had_no_labels_or_annotations(cluster) -> None:
    merge_patch(cluster.agent(cluster.bare), cluster.bare, {
        "labels": {"feature.node.kubernetes.io/system-os_release.ID": "debian"},
        "annotations": {LEDGER: "feature.node.kubernetes.io/system-os_release.ID"}})
    assert cluster.labels(cluster.bare) == {
        "feature.node.kubernetes.io/system-os_release.ID": "debian"}


def test_policy_copes_with_a_heavily_labelled_node(cluster) -> None:
    """CEL has a per-request cost budget; a node with hundreds of labels stays within it."""
    name = f"{cluster.a}-big"
    labels = {f"team.kubernetes.io/foreign-{i}": "x" * 40 for i in range(300)}
    labels |= {f"feature.node.kubernetes.io/cpu-cpuid.FLAG{i}": "true" for i in range(300)}
    cluster.create_node(name, labels=labels,
                        annotations={f"example.com/a{i}": "y" for i in range(50)})
    update = {f"feature.node.kubernetes.io/cpu-cpuid.FLAG{i}": None for i in range(150)}
    update |= {f"nvidia.com/new-{i}": "1" for i in range(150)}
    merge_patch(cluster.agent(name), name, {"labels": update, "annotations": {LEDGER: "x"}})
    after = cluster.labels(name)
    assert len(after) == 600 and "nvidia.com/new-149" in after
    denied_by_policy(lambda: merge_patch(
        cluster.agent(name), name, {"labels": {"team.kubernetes.io/foreign-299": "changed"}}))


def test_agent_may_not_touch_another_node(cluster) -> None:
    message = denied_by_policy(lambda: merge_patch(
        cluster.agent(cluster.a), cluster.b,
        {"labels": {"feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true"}}))
    assert f"belongs to node {cluster.a}" in message
    assert "feature.node.kubernetes.io/cpu-cpuid.AVX512F" not in cluster.labels(cluster.b)


@pytest.mark.parametrize("labels", [
    {"team": "red"},                                      # change
    {"team": None},                                       # remove
    {"node-role.kubernetes.io/control-plane": ""},        # add
    {"kubernetes.io/hostname": "elsewhere"},
    {"topology.kubernetes.io/zone": "z"},
    # Look-alikes of the allowed kubernetes.io subdomains, and a key with no namespace.
    {"xfeature.node.kubernetes.io/x": "1"},
    {"profile.node.kubernetes.io.kubernetes.io/x": "1"},
    {"feature.node.kubernetes.io": "1"},
    # Denied by the shipped ConfigMap (denyLabelNs k8s.io,*.k8s.io).
    {"k8s.io/x": "1"},
    {"node.k8s.io/x": "1"},
    # One foreign key spoils a patch that is otherwise fine.
    {"feature.node.kubernetes.io/ok": "true", "team": "red"},
], ids=lambda labels: ",".join(labels))
def test_agent_may_not_change_foreign_labels(cluster, labels: dict[str, Any]) -> None:
    before = cluster.labels(cluster.a)
    message = denied_by_policy(lambda: merge_patch(
        cluster.agent(cluster.a), cluster.a, {"labels": labels}))
    assert "may change only labels in the allowed namespaces" in message
    assert set(message.rsplit("not: ", 1)[1].split(", ")) == set(labels) - {
        "feature.node.kubernetes.io/ok"}
    assert cluster.labels(cluster.a) == before


@pytest.mark.parametrize("key", [
    "vendor.io/x", "sgx.intel.feature.node.kubernetes.io/epc",
    "profile.node.kubernetes.io/latency", "nvidia.com/gpu.product",
    "feature.node.kubernetes.io.example.com/x",
])
def test_agent_may_write_every_namespace_nfd_allows(cluster, key: str) -> None:
    """The shipped label-namespaces ConfigMap: NFD's defaults (what was denied under
    the fixed prefixes before)."""
    merge_patch(cluster.agent(cluster.a), cluster.a, {"labels": {key: "true"}})
    assert cluster.labels(cluster.a)[key] == "true"
    merge_patch(cluster.agent(cluster.a), cluster.a, {"labels": {key: None}})
    assert key not in cluster.labels(cluster.a)


def test_agent_may_change_only_its_ledger_annotations(cluster) -> None:
    agent = cluster.agent(cluster.a)
    merge_patch(agent, cluster.a, {"annotations": {LEDGER: "feature.node.kubernetes.io/x",
                                                   SOURCES_LEDGER: "cpu:cpuid.AVX"}})
    assert cluster.annotations(cluster.a)[LEDGER] == "feature.node.kubernetes.io/x"
    assert cluster.annotations(cluster.a)[SOURCES_LEDGER] == "cpu:cpuid.AVX"
    # Outside the output namespaces, never; in them, not while the shipped setting keeps
    # annotations off (removing one there is allowed: the agent takes back its own
    # outputs when they are switched off, test_agent_output_policy.py).
    for foreign, says in (({"owner.example/contact": "mallory"}, "annotations are switched off"),
                          ({"node.alpha.kubernetes.io/ttl": "0"},
                           "may change only its ledger annotations"),
                          ({"nodefeatures.dev/other": "x"},
                           "may change only its ledger annotations")):
        message = denied_by_policy(
            lambda a=foreign: merge_patch(agent, cluster.a, {"annotations": a}))
        assert says in message
    assert cluster.annotations(cluster.a)["owner.example/contact"] == "ops"


def test_the_ledger_is_bounded_by_the_policy(cluster) -> None:
    """A ledger past LEDGER_MAX_BYTES would crowd out other writers' annotations."""
    from nodefeatures.cluster.reconcile import LEDGER_MAX_BYTES

    agent = cluster.agent(cluster.a)
    # Exactly at the bound is accepted, counted in bytes (a 2-byte character counts twice).
    at_bound = "x" * (LEDGER_MAX_BYTES - 2) + "\u00e9"
    merge_patch(agent, cluster.a, {"annotations": {LEDGER: at_bound, SOURCES_LEDGER: None}})
    assert cluster.annotations(cluster.a)[LEDGER] == at_bound
    for too_big in ({LEDGER: at_bound + "x"},
                    {LEDGER: "x" * (LEDGER_MAX_BYTES // 2 + 1),
                     SOURCES_LEDGER: "y" * (LEDGER_MAX_BYTES // 2)}):
        message = denied_by_policy(
            lambda a=too_big: merge_patch(agent, cluster.a, {"annotations": a}))
        assert f"at most {LEDGER_MAX_BYTES} bytes" in message
    # A patch that leaves the ledger as it is is no loophole for one already too big.
    merge_patch(client.CoreV1Api(cluster.admin), cluster.a,
                {"annotations": {SOURCES_LEDGER: "z" * LEDGER_MAX_BYTES}})
    denied_by_policy(lambda: merge_patch(
        agent, cluster.a, {"labels": {"feature.node.kubernetes.io/x": "1"}}))
    # The agent's way out: it rewrites the ledger, and the old annotation goes.
    merge_patch(agent, cluster.a, {"annotations": {LEDGER: "{}", SOURCES_LEDGER: None}})
    assert SOURCES_LEDGER not in cluster.annotations(cluster.a)


@pytest.mark.parametrize("change", [
    {"spec": {"unschedulable": True}},
    {"spec": {"taints": [{"key": "evil", "effect": "NoSchedule"}]}},
    {"spec": {"podCIDR": "10.9.0.0/24"}},
    {"metadata": {"finalizers": ["example.com/hold"]}},
    {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "x",
                                       "uid": "6a3c5ce8-1f64-4f1e-9d4b-0e8a52d2a111"}]}},
], ids=["unschedulable", "taint", "podCIDR", "finalizer", "owner"])
def test_agent_may_not_change_the_rest_of_the_node(cluster, change: dict[str, Any]) -> None:
    agent = cluster.agent(cluster.a)
    denied_by_policy(lambda: agent.patch_node(
        cluster.a, change, _content_type="application/merge-patch+json"))


GPU_CONDITION = "NVIDIAGPUHealthy"
STRATEGIC = "application/strategic-merge-patch+json"


def condition(kind: str, status: str = "False", reason: str = "GPUUnhealthy") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": "test",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def status_patch(api: client.CoreV1Api, node: str, body: dict[str, Any]) -> None:
    """A strategic merge patch of nodes/status, as the agent sends its condition."""
    api.patch_node_status(node, body, _content_type=STRATEGIC)


def conditions_of(cluster: Cluster, node: str) -> dict[str, dict[str, Any]]:
    node_obj = client.CoreV1Api(cluster.admin).read_node(node)
    found = node_obj.status.conditions if node_obj.status else None
    return {c.type: c.to_dict() for c in found or []}


@pytest.fixture
def kubelet_ready(cluster) -> Callable[[str], None]:
    """Give a node the kubelet's Ready condition and some capacity, as admin."""
    def give(node: str) -> None:
        status_patch(client.CoreV1Api(cluster.admin), node, {"status": {
            "conditions": [condition("Ready", "True", "KubeletReady")],
            "capacity": {"cpu": "8"}}})
    return give


def test_agent_may_set_change_and_remove_its_gpu_condition(cluster, kubelet_ready) -> None:
    kubelet_ready(cluster.a)
    agent = cluster.agent(cluster.a)
    status_patch(agent, cluster.a, {"status": {"conditions": [condition(GPU_CONDITION)]}})
    found = conditions_of(cluster, cluster.a)
    assert found[GPU_CONDITION]["status"] == "False"
    assert found["Ready"]["status"] == "True"  # merged by type: the kubelet's stays
    status_patch(agent, cluster.a, {"status": {"conditions": [
        condition(GPU_CONDITION, "True", "AllGPUsHealthy")]}})
    assert conditions_of(cluster, cluster.a)[GPU_CONDITION]["reason"] == "AllGPUsHealthy"
    status_patch(agent, cluster.a, {"status": {"conditions": [
        {"$patch": "delete", "type": GPU_CONDITION}]}})
    assert set(conditions_of(cluster, cluster.a)) == {"Ready"}


OTHER_STATUS = "may change only its condition"
# Extended resources: the kubelet's never, rule outputs not while the shipped setting
# keeps them off (test_agent_output_policy.py has them on).
SWITCHED_OFF = "extended resources are switched off"
KUBELETS = "capacity and allocatable only of extended resources"


@pytest.mark.parametrize(("body", "says"), [
    ({"status": {"conditions": [condition("MemoryPressure")]}}, OTHER_STATUS),  # another type
    ({"status": {"conditions": [condition("NVIDIAGPUHealthyX")]}}, OTHER_STATUS),
    ({"status": {"conditions": [condition("Ready", "False", "KubeletNotReady")]}}, OTHER_STATUS),
    ({"status": {"conditions": [{"$patch": "delete", "type": "Ready"}]}}, OTHER_STATUS),
    # Ours is fine, but it does not carry anything else with it.
    ({"status": {"conditions": [condition(GPU_CONDITION)], "capacity": {"nvidia.com/gpu": "9"}}},
     SWITCHED_OFF),
    ({"status": {"conditions": [condition(GPU_CONDITION)], "allocatable": {"cpu": "64"}}},
     KUBELETS),
    ({"status": {"capacity": {"example.com/widgets": "9"}}}, SWITCHED_OFF),
    ({"status": {"addresses": [{"type": "InternalIP", "address": "10.6.6.6"}]}}, OTHER_STATUS),
    ({"status": {"conditions": [condition(GPU_CONDITION)]},
      "metadata": {"labels": {"feature.node.kubernetes.io/x": "1"}}}, OTHER_STATUS),
    ({"status": {"conditions": [condition(GPU_CONDITION)]},
      "metadata": {"annotations": {LEDGER: "{\"changed\":{}}"}}}, OTHER_STATUS),
], ids=["other-type", "look-alike", "ready-changed", "ready-deleted", "with-capacity",
        "with-allocatable", "capacity", "addresses", "with-label", "with-ledger"])
def test_agent_may_change_no_other_status(cluster, kubelet_ready, body: dict[str, Any],
                                          says: str) -> None:
    kubelet_ready(cluster.a)
    before = client.CoreV1Api(cluster.admin).read_node(cluster.a)
    message = denied_by_policy(lambda: status_patch(cluster.agent(cluster.a), cluster.a, body))
    assert says in message
    after = client.CoreV1Api(cluster.admin).read_node(cluster.a)
    assert after.metadata.resource_version == before.metadata.resource_version


def test_agent_may_not_set_its_gpu_condition_on_another_node(cluster, kubelet_ready) -> None:
    kubelet_ready(cluster.b)
    ours = {"status": {"conditions": [condition(GPU_CONDITION)]}}
    message = denied_by_policy(lambda: status_patch(cluster.agent(cluster.a), cluster.b, ours))
    assert f"belongs to node {cluster.a}" in message
    assert GPU_CONDITION not in conditions_of(cluster, cluster.b)
    # nor with a token bound to no node
    denied_by_policy(lambda: status_patch(cluster.agent(None), cluster.a, ours))


def test_a_token_without_a_node_is_refused(cluster) -> None:
    message = denied_by_policy(lambda: merge_patch(
        cluster.agent(None), cluster.a, {"labels": {"feature.node.kubernetes.io/x": "1"}}))
    assert "is not bound to a node" in message


def test_admin_and_other_users_are_unaffected(cluster, apiserver) -> None:
    api = client.CoreV1Api(cluster.admin)
    merge_patch(api, cluster.b, {"labels": {"team": "green"},
                                 "annotations": {"owner.example/contact": "admin"}})
    assert cluster.labels(cluster.b)["team"] == "green"
    # A different identity with the same node-name extra is not the agent.
    other = client.CoreV1Api(apiserver.client_as(
        "someone", groups=["system:masters"], extra={NODE_NAME_EXTRA: cluster.a}))
    merge_patch(other, cluster.b, {"labels": {"team": "yellow"}})
    assert cluster.labels(cluster.b)["team"] == "yellow"


def test_real_node_bound_token_is_held_to_its_node(cluster, apiserver) -> None:
    """No impersonation: the server's own authenticator supplies the node-name extra."""
    token = apiserver.service_account_token(NAMESPACE, "nodefeatures", node=cluster.a)
    with apiserver.client_for_token(token) as api:
        agent = client.CoreV1Api(api)
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview())
        assert review.status.user_info.username == AGENT
        assert review.status.user_info.extra[NODE_NAME_EXTRA] == [cluster.a]
        merge_patch(agent, cluster.a, {"labels": {"nvidia.com/gpu.present": "true"}})
        assert cluster.labels(cluster.a)["nvidia.com/gpu.present"] == "true"
        denied_by_policy(lambda: merge_patch(
            agent, cluster.b, {"labels": {"nvidia.com/gpu.present": "true"}}))
        denied_by_policy(lambda: merge_patch(agent, cluster.a, {"labels": {"team": "red"}}))
        with pytest.raises(ApiException) as caught:
            agent.delete_node(cluster.b)
        assert caught.value.status == 403
