"""No confinement, no writes: the agent proves the own-node policy holds it before writing.

The shipped ValidatingAdmissionPolicy and binding (deploy/base/admission-policy.yaml)
are installed on the real kube-apiserver; the agent runs as its ServiceAccount with the
node-name extra a pod-bound token carries. Deleting the binding leaves the manifests
"installed" but unenforced: the agent must notice, write nothing, fail readiness, post
an Event, and resume once the binding is back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentkit import (
    FAST,
    REPO,
    SA_NAME,
    SA_NAMESPACE,
    SA_USER,
    F,
    Running,
    Switchable,
    discoverer,
    ensure_created,
    events_about,
    label_namespaces_configmap,
    labels_of,
    os_release_root,
    patch_node,
    start,
    wait_until,
    writes_to,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.confinement import CONFINED, UNCONFINED, prove_confinement
from nodefeatures.cluster.kube import KubeError, NodeApi

pytestmark = pytest.mark.integration

POLICY_FILE = REPO / "deploy" / "base" / "admission-policy.yaml"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
AVX = F + "cpu-cpuid.AVX"
SSE = F + "cpu-cpuid.SSE4"
OS_ID = F + "system-os_release.ID"
# Probe often so that losing and regaining confinement shows within a second or two.
CHECKS = {"confinement_every": 1.0, "unconfined_retry": 0.3}


class PolicyObjects:
    """The shipped policy and binding, which a test may take away and give back."""

    def __init__(self, apiserver: Any) -> None:
        self.apiserver = apiserver
        self.documents = list(yaml.safe_load_all(POLICY_FILE.read_text()))
        self.admin = apiserver.admin_client()
        self.dynamic = DynamicClient(self.admin)

    def _resource(self, document: dict[str, Any]) -> Any:
        return self.dynamic.resources.get(api_version=document["apiVersion"],
                                          kind=document["kind"])

    def _document(self, kind: str) -> dict[str, Any]:
        return next(d for d in self.documents if d["kind"] == kind)

    def exists(self, kind: str) -> bool:
        document = self._document(kind)
        try:
            self._resource(document).get(name=document["metadata"]["name"])
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def create(self, kind: str) -> None:
        document = self._document(kind)
        try:
            self._resource(document).create(body=document)
        except ApiException as error:
            if error.status != 409:
                raise

    def delete(self, kind: str) -> None:
        document = self._document(kind)
        try:
            self._resource(document).delete(name=document["metadata"]["name"])
        except ApiException as error:
            if error.status != 404:
                raise


BINDING = "ValidatingAdmissionPolicyBinding"
POLICY = "ValidatingAdmissionPolicy"


@pytest.fixture(scope="module")
def policy(apiserver: Any, rbac: str) -> Iterator[PolicyObjects]:
    """Policy and binding installed for this module; removed afterwards if we made them.

    The other agent tests share this server and run without the policy.
    """
    objects = PolicyObjects(apiserver)
    existed = {kind: objects.exists(kind) for kind in (POLICY, BINDING)}
    # The binding's parameter: without it the policy denies every write of the agent.
    ensure_created(apiserver, [label_namespaces_configmap()])
    for kind in (POLICY, BINDING):
        objects.create(kind)
    yield objects
    for kind in (BINDING, POLICY):
        if not existed[kind]:
            objects.delete(kind)
    objects.admin.close()


def node_api(apiserver: Any, node: str) -> NodeApi:
    """The agent's ServiceAccount as its pod-bound token on `node` presents it."""
    return NodeApi(apiserver.client_as(SA_USER, extra={NODE_NAME_EXTRA: node}), node)


@pytest.fixture
def enforced(policy: PolicyObjects, apiserver: Any, node: str) -> PolicyObjects:
    """Policy and binding in force at the start of the test (policies load asynchronously)."""
    policy.create(POLICY)
    policy.create(BINDING)
    api = node_api(apiserver, node)
    wait_until(lambda: prove_confinement(api).state == CONFINED, timeout=30,
               what="the own-node policy to be enforced", every=0.2)
    return policy


def unenforce(policy: PolicyObjects, apiserver: Any, node: str) -> None:
    policy.delete(BINDING)
    api = node_api(apiserver, node)
    wait_until(lambda: prove_confinement(api).state == UNCONFINED, timeout=30,
               what="the binding's removal to take effect", every=0.2)


def confined_agent(apiserver: Any, node: str, sources: list[Any], tmp_path: Path,
                   **options: Any) -> Agent:
    settings = {**FAST, **CHECKS, **options}
    return Agent(node_api(apiserver, node), discoverer(sources, tmp_path),
                 [s.name for s in sources], Options(node=node, **settings))


def real_writes(apiserver: Any, node: str, since: set[str]) -> list[dict[str, Any]]:
    """The agent's audited patches of `node`, not dry runs, other than those in `since`."""
    time.sleep(0.3)  # audit events are written just after the response
    return [e for e in writes_to(apiserver, node, SA_USER)
            if "dryRun=All" not in e["requestURI"] and e["auditID"] not in since]


def audit_now(apiserver: Any, node: str) -> set[str]:
    """What the audit log holds about `node` so far, to tell later requests apart."""
    time.sleep(0.3)
    return {e["auditID"] for e in writes_to(apiserver, node)}


def test_confined_agent_writes_and_its_probes_are_denied_dry_runs(
        apiserver: Any, node: str, tmp_path: Path, enforced: PolicyObjects) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    earlier = {e["auditID"] for e in writes_to(apiserver, node, SA_USER)}  # the fixture's
    running = start(confined_agent(apiserver, node, [cpu], tmp_path))
    try:
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", what="labels")
        wait_until(lambda: running.agent.ready, what="ready")
        assert running.agent.readiness() is True
        assert running.agent.metrics.confined._value.get() == 1
        time.sleep(2.5)  # a few re-checks
    finally:
        running.stop()
    checks = running.agent.metrics.confinement_checks
    assert checks.labels(CONFINED)._value.get() >= 3
    assert checks.labels(UNCONFINED)._value.get() == 0
    requests = {s.labels["verb"]: s.labels["code"] for m in running.agent.metrics.requests
                .collect() for s in m.samples if s.name.endswith("_total")
                and s.labels["verb"] == "probe"}
    assert requests == {"probe": "403"}  # every probe was denied by the policy
    time.sleep(0.5)
    patches = [e for e in writes_to(apiserver, node, SA_USER) if e["auditID"] not in earlier]
    dry = [e for e in patches if "dryRun=All" in e["requestURI"]]
    assert len(dry) >= 3 and all(e["responseStatus"]["code"] == 403 for e in dry)
    assert len(patches) - len(dry) == 1  # one real write: the labels


def test_without_the_binding_nothing_is_written_until_it_is_back(
        apiserver: Any, node: str, tmp_path: Path, enforced: PolicyObjects) -> None:
    cpu = Switchable("cpu", {AVX: "true"})
    running = start(confined_agent(apiserver, node, [cpu], tmp_path))
    try:
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", what="labels")
        unenforce(enforced, apiserver, node)
        since = audit_now(apiserver, node)
        wait_until(lambda: not running.agent.ready, timeout=10, what="readiness to fail")
        # Work for the agent: a new label from discovery, and drift on an owned one.
        cpu.current[SSE] = "true"
        running.agent.poke()
        patch_node(apiserver, node, {"metadata": {"labels": {AVX: None}}})
        time.sleep(3)
        assert real_writes(apiserver, node, since) == []
        labels = labels_of(apiserver, node)
        assert AVX not in labels and SSE not in labels
        why = running.agent.readiness()
        assert isinstance(why, str) and "accepted a dry-run patch" in why
        assert "deploy/base/admission-policy.yaml" in why
        unconfined = [e for e in events_about(apiserver, node) if e.reason == "Unconfined"]
        assert unconfined and unconfined[0].type == "Warning"
        assert "--allow-unconfined" in unconfined[0].message
        assert running.agent.metrics.confined._value.get() == 0

        enforced.create(BINDING)  # the fix: writes resume by themselves
        wait_until(lambda: {AVX, SSE} <= set(labels_of(apiserver, node)), timeout=30,
                   what="writes to resume")
        wait_until(lambda: running.agent.ready, what="ready again")
        assert [e for e in events_about(apiserver, node) if e.reason == "Confined"]
    finally:
        running.stop()
        enforced.create(BINDING)


def test_allow_unconfined_writes_without_the_policy(
        apiserver: Any, node: str, tmp_path: Path, enforced: PolicyObjects) -> None:
    unenforce(enforced, apiserver, node)
    running: Running | None = None
    try:
        cpu = Switchable("cpu", {AVX: "true"})
        running = start(confined_agent(apiserver, node, [cpu], tmp_path,
                                       allow_unconfined=True))
        wait_until(lambda: labels_of(apiserver, node).get(AVX) == "true", what="labels")
        wait_until(lambda: running.agent.ready, what="ready")
        assert running.agent.metrics.confinement_checks.labels(UNCONFINED)._value.get() == 0
    finally:
        if running is not None:
            running.stop()
        enforced.create(BINDING)


def kubeconfig_bound_to(apiserver: Any, node: str, directory: Path) -> Path:
    """A kubeconfig with a real ServiceAccount token bound to `node` (as a pod's is)."""
    token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME, node=node)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "agent",
        "clusters": [{"name": "test", "cluster": {
            "server": apiserver.url, "certificate-authority": str(apiserver.ca_path)}}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [{"name": "agent", "context": {"cluster": "test", "user": "agent"}}],
    }
    path = directory / "bound.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KUBERNETES_") and k not in ("NODE_NAME", "KUBECONFIG")}
    return subprocess.run([sys.executable, "-m", "nodefeatures", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_apply_and_prune_refuse_to_write_unconfined(
        apiserver: Any, node: str, tmp_path: Path, enforced: PolicyObjects) -> None:
    kubeconfig = kubeconfig_bound_to(apiserver, node, tmp_path)
    root = os_release_root(tmp_path)
    target = ["--node", node, "--kubeconfig", str(kubeconfig)]
    host = ["--root", str(root), "--source", "system"]

    applied = cli("apply", *target, *host)  # confined: a real node-bound token writes
    assert applied.returncode == 0, applied.stderr
    assert labels_of(apiserver, node)[OS_ID] == "debian"

    unenforce(enforced, apiserver, node)
    try:
        since = audit_now(apiserver, node)
        pruned = cli("prune", *target)
        assert pruned.returncode == 2, pruned.stdout + pruned.stderr
        assert "nodefeatures: error: the API server accepted a dry-run patch" in pruned.stderr
        assert "deploy/base/admission-policy.yaml" in pruned.stderr
        assert "--allow-unconfined" in pruned.stderr
        (root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
        refused = cli("apply", *target, *host)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "accepted a dry-run patch" in refused.stderr
        time.sleep(0.5)
        assert real_writes(apiserver, node, since) == []
        assert labels_of(apiserver, node)[OS_ID] == "debian"

        waived = cli("apply", "--allow-unconfined", *target, *host)
        assert waived.returncode == 0, waived.stderr
        assert labels_of(apiserver, node)[OS_ID] == "ubuntu"
        waived = cli("prune", "--allow-unconfined", *target)
        assert waived.returncode == 0, waived.stderr
        assert OS_ID not in labels_of(apiserver, node)
    finally:
        enforced.create(BINDING)


@pytest.mark.parametrize("actions", [["Warn"], ["Audit"], ["Warn", "Audit"]])
def test_a_binding_that_only_warns_or_audits_is_no_confinement(
        apiserver: Any, node: str, enforced: PolicyObjects, actions: list[str]) -> None:
    # The policy then lets every patch through (with a warning header or an audit note):
    # the token could change any Node, so the agent must not count it as confined.
    binding = enforced._document(BINDING)
    resource = enforced._resource(binding)
    api = node_api(apiserver, node)
    try:
        resource.patch(body={"spec": {"validationActions": actions}},
                       name=binding["metadata"]["name"],
                       content_type="application/merge-patch+json")
        wait_until(lambda: prove_confinement(api).state != CONFINED, timeout=30,
                   what="the binding's change to take effect", every=0.2)
        time.sleep(1)  # the state is stable, not a moment of reload
        assert prove_confinement(api).state == UNCONFINED
    finally:
        enforced.delete(BINDING)
        enforced.create(BINDING)


def test_a_policy_of_another_name_is_not_taken_for_ours(
        apiserver: Any, node: str, enforced: PolicyObjects) -> None:
    api = node_api(apiserver, node)
    proof = prove_confinement(api, "nodefeatures-own-node-renamed")
    assert proof.state == "refused" and "not by ValidatingAdmissionPolicy" in proof.detail
    assert prove_confinement(api).state == CONFINED


def test_a_binding_narrowed_to_the_own_node_is_no_confinement(
        apiserver: Any, node: str, enforced: PolicyObjects) -> None:
    from kubernetes import client

    other = node + "-other"
    with apiserver.admin_client() as admin:
        client.CoreV1Api(admin).create_node(
            client.V1Node(metadata=client.V1ObjectMeta(name=other)))
    binding = enforced._document(BINDING)
    try:
        patch_node(apiserver, node, {"metadata": {"labels": {"scope.example.com/x": "mine"}}})
        enforced._resource(binding).patch(
            body={"spec": {"matchResources": {"objectSelector": {
                "matchLabels": {"scope.example.com/x": "mine"}}}}},
            name=binding["metadata"]["name"], content_type="application/merge-patch+json")
        time.sleep(3)  # policies and bindings load asynchronously
        foreign = NodeApi(apiserver.client_as(SA_USER, extra={NODE_NAME_EXTRA: node}), other)
        foreign.probe()  # accepted: this token may change the other Node
        assert prove_confinement(node_api(apiserver, node)).state != CONFINED
    finally:
        enforced.delete(BINDING)
        enforced.create(BINDING)
        patch_node(apiserver, node, {"metadata": {"labels": {"scope.example.com/x": None}}})
        with apiserver.admin_client() as admin:
            client.CoreV1Api(admin).delete_node(other)


@pytest.mark.parametrize("rules", [
    [{"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
      "resources": ["nodes"]},
     {"apiGroups": [""], "apiVersions": ["v1beta1"], "operations": ["UPDATE"],
      "resources": ["nodes/status"]}],
    # "*" is every resource, but no subresource.
    [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}],
], ids=["status-in-another-version", "star"])
def test_a_policy_that_misses_the_status_is_no_confinement(
        apiserver: Any, node: str, enforced: PolicyObjects, rules: list[Any]) -> None:
    # The probe patches the Node itself, so it is still denied; the status of every other
    # Node (capacity, conditions) is open to this token.
    from kubernetes import client

    other = node + "-other"
    with apiserver.admin_client() as admin:
        client.CoreV1Api(admin).create_node(
            client.V1Node(metadata=client.V1ObjectMeta(name=other)))
    policy = enforced._document(POLICY)
    foreign = NodeApi(apiserver.client_as(SA_USER, extra={NODE_NAME_EXTRA: node}), other)
    status = {"status": {"capacity": {"example.com/stolen": "1"}}}
    try:
        enforced._resource(policy).patch(
            body={"spec": {"matchConstraints": {"resourceRules": rules}}},
            name=policy["metadata"]["name"], content_type="application/merge-patch+json")

        def open_status() -> bool:
            try:
                foreign.patch_status(status, dry_run=True)
            except KubeError:
                return False
            return True

        wait_until(open_status, 30, "the policy's change to take effect", every=0.2)
        proof = prove_confinement(node_api(apiserver, node))
        assert proof.state == UNCONFINED, proof
        assert "nodes/status" in proof.detail
    finally:
        enforced.delete(BINDING)
        enforced.delete(POLICY)
        enforced.create(POLICY)
        enforced.create(BINDING)
        with apiserver.admin_client() as admin:
            client.CoreV1Api(admin).delete_node(other)
