"""The confinement check's second part: the own-node policy and its binding, as read from
the server, must hold the agent's token on every Node, not only on the one the probe
touches. Every way of narrowing them found here is a reason not to write."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodefeatures.cluster.confinement import (
    CONFINED,
    REFUSED,
    UNANSWERED,
    UNCONFINED,
    narrowing,
    prove_confinement,
)
from nodefeatures.cluster.kube import KubeError

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "base" / "admission-policy.yaml"
NAME = "nodefeatures-own-node"


def shipped() -> tuple[dict[str, Any], dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]
    policy = next(d for d in documents if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in documents if d["kind"] == "ValidatingAdmissionPolicyBinding")
    return copy.deepcopy(policy), copy.deepcopy(binding)


def test_the_shipped_policy_and_binding_cover_every_node() -> None:
    assert narrowing(*shipped(), NAME) == []


@pytest.mark.parametrize(("which", "path", "value", "expected"), [
    ("binding", "spec.matchResources", {"objectSelector": {"matchLabels": {"a": "b"}}},
     "matchResources.objectSelector"),
    ("binding", "spec.matchResources", {"objectSelector": {"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}},
     "matchResources.objectSelector"),
    ("binding", "spec.matchResources", {"excludeResourceRules": [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
         "resources": ["nodes"], "resourceNames": ["other"]}]}, "excludeResourceRules"),
    ("binding", "spec.matchResources", {"resourceRules": [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
         "resources": ["nodes"], "resourceNames": ["n1"]}]}, "resourceRules"),
    ("binding", "spec.validationActions", ["Warn"], "Deny"),
    ("binding", "spec.validationActions", ["Audit"], "Deny"),
    ("binding", "spec.policyName", "something-else", "names policy"),
    ("policy", "spec.failurePolicy", "Ignore", "failurePolicy"),
    ("policy", "spec.matchConstraints.objectSelector", {"matchLabels": {"a": "b"}},
     "matchConstraints.objectSelector"),
    ("policy", "spec.matchConstraints.excludeResourceRules", [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
         "resources": ["nodes"]}], "excludeResourceRules"),
    ("policy", "spec.matchConstraints.resourceRules", [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
         "resources": ["nodes/status"]}], "UPDATE of nodes"),
    ("policy", "spec.matchConstraints.resourceRules", [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE"],
         "resources": ["nodes", "nodes/status"]}], "UPDATE of nodes"),
    ("policy", "spec.matchConstraints.resourceRules", [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
         "resources": ["nodes", "nodes/status"], "resourceNames": ["n1"]}], "UPDATE of nodes"),
    # The probe patches nodes, v1: a rule that matches nodes/status in no version the
    # server serves leaves every Node's status open.
    ("policy", "spec.matchConstraints.resourceRules", [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
         "resources": ["nodes"]},
        {"apiGroups": [""], "apiVersions": ["v1beta1"], "operations": ["UPDATE"],
         "resources": ["nodes/status"]}], "UPDATE of nodes/status"),
    # "*" is every resource but no subresource.
    ("policy", "spec.matchConstraints.resourceRules", [
        {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}],
     "UPDATE of nodes/status"),
    ("policy", "spec.matchConditions", [
        {"name": "is-nodefeatures-agent", "expression":
         'request.userInfo.username == "system:serviceaccount:nodefeatures:nodefeatures"'},
        {"name": "only-mine", "expression": "object.metadata.name == 'n1'"}], "only-mine"),
    ("policy", "spec.matchConditions", [
        {"name": "sneaky", "expression":
         'request.userInfo.username == "x" || object.metadata.name == "n1"'}], "sneaky"),
    ("policy", "spec.validations", [{"expression": "true"}], "own-node rule"),
])
def test_each_narrowing_is_found(which: str, path: str, value: Any, expected: str) -> None:
    policy, binding = shipped()
    target = policy if which == "policy" else binding
    *parents, last = path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    found = narrowing(policy, binding, NAME)
    assert found and any(expected in f for f in found), found


def test_a_namespace_selector_is_no_narrowing_for_nodes() -> None:
    # The API server never skips a cluster-scoped object for its namespaceSelector.
    policy, binding = shipped()
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"a": "b"}}}
    policy["spec"]["matchConstraints"]["namespaceSelector"] = {"matchLabels": {"a": "b"}}
    assert narrowing(policy, binding, NAME) == []


def test_a_rule_written_with_wildcards_still_covers_nodes() -> None:
    policy, binding = shipped()
    policy["spec"]["matchConstraints"]["resourceRules"] = [
        {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"],
         "resources": ["*", "*/status"]}]
    assert narrowing(policy, binding, NAME) == []


def test_a_rule_for_all_resources_and_subresources_covers_nodes_and_their_status() -> None:
    # "*/*" is every resource and every subresource: the API server holds the token on
    # every Node and its status with it.
    policy, binding = shipped()
    policy["spec"]["matchConstraints"]["resourceRules"] = [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
         "resources": ["*/*"]}]
    assert narrowing(policy, binding, NAME) == []


def test_the_own_node_variable_changed_is_no_own_node_rule() -> None:
    policy, binding = shipped()
    for variable in policy["spec"]["variables"]:
        if variable["name"] == "tokenNode":
            variable["expression"] = "[object.metadata.name]"  # always "the own node"
    assert any("own-node rule" in f for f in narrowing(policy, binding, NAME))


class Probed:
    """A NodeApi stand-in: the probe is denied by the policy; reads as the test says."""

    def __init__(self, policy: Any, binding: Any) -> None:
        self.objects = {"validatingadmissionpolicies": policy,
                        "validatingadmissionpolicybindings": binding}

    def probe(self) -> None:
        raise KubeError(403, "Forbidden", f"ValidatingAdmissionPolicy '{NAME}' with binding "
                        f"'{NAME}' denied request")

    def read_admission(self, kind: Any, name: str) -> Any:
        found = self.objects[kind.plural]
        if isinstance(found, KubeError):
            raise found
        return found


def test_the_proof_needs_both_parts() -> None:
    policy, binding = shipped()
    assert prove_confinement(Probed(policy, binding)).state == CONFINED
    binding["spec"]["matchResources"] = {"objectSelector": {"matchLabels": {"a": "b"}}}
    proof = prove_confinement(Probed(policy, binding))
    assert proof.state == UNCONFINED and "objectSelector" in proof.message
    # Waived for a harness that binds the policy to some Nodes on purpose.
    assert prove_confinement(Probed(policy, binding), check_reach=False).state == CONFINED


@pytest.mark.parametrize(("error", "state"), [
    (KubeError(403, "Forbidden", "cannot get"), REFUSED),
    (KubeError(404, "NotFound", "no binding"), UNCONFINED),
    (KubeError(None, "unreachable", "connection refused"), UNANSWERED),
])
def test_what_cannot_be_read_proves_nothing(error: KubeError, state: str) -> None:
    policy, _ = shipped()
    proof = prove_confinement(Probed(policy, error))
    assert proof.state == state, proof
