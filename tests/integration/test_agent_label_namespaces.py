"""The allowed label namespaces, configured once: the shipped label namespaces policy
reads them from the ConfigMap of deploy/base/label-namespaces.yaml, so editing that one
object changes what the agent's real, node-bound token may write; what it may never
write (kubernetes.io, other Nodes) the own-node policy denies whatever the ConfigMap
says, and without the ConfigMap too. Each request here is judged by the real API server
evaluating the policies' CEL.

The policy runs as a renamed copy bound to this module's Nodes and to this module's
own copy of the ConfigMap, so the edits below reach no other module.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kubeharness
import pytest
import yaml
from agentkit import (
    LABEL_NAMESPACES,
    SA_NAME,
    SA_NAMESPACE,
    label_namespaces_configmap,
    labels_of,
    patch_node,
    policed_node,
    shipped_policy_as,
    wait_until,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nodefeatures.cluster.kube import PROBE_LABEL

pytestmark = pytest.mark.integration

POLICY = "nodefeatures-own-node-label-ns"
SELECTOR = "nodefeatures.dev/test-label-namespaces"
PARAMS = "label-namespaces-under-test"  # this module's copy of the ConfigMap
DEFAULTS = dict(label_namespaces_configmap()["data"])
# Server-side param caches follow a ConfigMap edit within moments; allow for a slow CI.
FLIP_WAIT_S = 30.0

# Under the shipped defaults: NFD's rules, denyLabelNs "k8s.io,*.k8s.io", no extras.
ALLOWED_BY_DEFAULT = [
    "vendor.io/feature",
    "nvidia.com/gpu.product",
    "feature.node.kubernetes.io/cpu-cpuid.AVX",
    "sub.feature.node.kubernetes.io/x",
    "sgx.intel.feature.node.kubernetes.io/epc",
    "profile.node.kubernetes.io/latency",
    "xk8s.io/x",                      # not k8s.io, nor a subdomain of it
    "kubernetes.io.example.com/x",    # not under kubernetes.io
    "nodefeatures.dev/x",
]
DENIED_BY_DEFAULT = [
    "kubernetes.io/hostname",
    "node-role.kubernetes.io/control-plane",
    "topology.kubernetes.io/zone",
    "node.kubernetes.io/exclude-from-external-load-balancers",
    "xfeature.node.kubernetes.io/x",  # a look-alike: a subdomain of kubernetes.io only
    "feature.node.kubernetes.io",     # no namespace at all: the whole key is a name
    "team",
    "k8s.io/x",
    "node.k8s.io/x",
    PROBE_LABEL,
]


@pytest.fixture(scope="module")
def policy(apiserver: Any, rbac: str) -> Iterator[str]:
    with shipped_policy_as(apiserver, POLICY, SELECTOR, params=PARAMS) as name:
        yield name


def set_namespaces(apiserver: Any, data: dict[str, str]) -> None:
    """Replace this module's ConfigMap data, as an administrator's edit does."""
    with apiserver.admin_client() as api:
        client.CoreV1Api(api).replace_namespaced_config_map(
            PARAMS, SA_NAMESPACE, label_namespaces_configmap(PARAMS, data))


@pytest.fixture
def node(apiserver: Any, policy: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Node under the policy, with the defaults in force."""
    set_namespaces(apiserver, DEFAULTS)
    name = f"labelns-{uuid.uuid4().hex[:8]}"
    with policed_node(apiserver, policy, SELECTOR, name) as node:
        yield node


@pytest.fixture
def token_api(apiserver: Any, node: str) -> Iterator[client.CoreV1Api]:
    """The agent's real ServiceAccount token, bound to `node` by the API server."""
    token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME, node=node)
    with apiserver.client_for_token(token) as api:
        yield client.CoreV1Api(api)


def refusal(api: client.CoreV1Api, node: str, labels: dict[str, Any],
            dry_run: bool = True) -> str | None:
    """None when the policy admits this label patch, else its denial message."""
    try:
        api.patch_node(node, {"metadata": {"labels": labels}},
                       _content_type="application/merge-patch+json",
                       dry_run="All" if dry_run else None)
    except ApiException as error:
        body = json.loads(error.body)
        # 403 for a failed validation, from either policy (the second is POLICY-namespaces).
        assert error.status in (403, 422), body
        assert f"ValidatingAdmissionPolicy '{POLICY}" in body["message"], body["message"]
        return str(body["message"])
    return None


def verdicts(api: client.CoreV1Api, node: str, keys: list[str]) -> dict[str, bool]:
    """{key: admitted} for setting each key alone."""
    return {key: refusal(api, node, {key: "true"}) is None for key in keys}


def test_the_default_namespaces_are_nfds(token_api, node) -> None:
    assert verdicts(token_api, node, ALLOWED_BY_DEFAULT) == dict.fromkeys(
        ALLOWED_BY_DEFAULT, True)
    assert verdicts(token_api, node, DENIED_BY_DEFAULT) == dict.fromkeys(
        DENIED_BY_DEFAULT, False)


def test_a_denial_names_every_refused_key_and_admits_nothing(apiserver, token_api,
                                                             node) -> None:
    # What no setting allows, and what the setting denies: each policy names its keys.
    message = refusal(token_api, node, {"vendor.io/ok": "1", "kubernetes.io/arch": "x",
                                        "node-role.kubernetes.io/gpu": ""}, dry_run=False)
    assert message is not None
    assert "kubernetes.io/arch" in message and "node-role.kubernetes.io/gpu" in message
    assert "vendor.io/ok" not in message
    message = refusal(token_api, node, {"vendor.io/ok": "1", "k8s.io/y": "1",
                                        "a.k8s.io/z": "1"}, dry_run=False)
    assert message is not None and f"'{POLICY}-namespaces'" in message
    assert "k8s.io/y" in message and "a.k8s.io/z" in message
    assert "vendor.io/ok" not in message
    assert "vendor.io/ok" not in labels_of(apiserver, node)
    # Accepted for real, not only in a dry run.
    assert refusal(token_api, node, {"vendor.io/ok": "1",
                                     "sgx.intel.feature.node.kubernetes.io/epc": "1"},
                   dry_run=False) is None
    assert labels_of(apiserver, node)["vendor.io/ok"] == "1"


def test_removing_or_changing_a_denied_label_is_denied_too(apiserver, token_api,
                                                           node) -> None:
    patch_node(apiserver, node, {"metadata": {"labels": {
        "node-role.kubernetes.io/worker": "", "vendor.io/x": "a"}}})
    assert refusal(token_api, node, {"node-role.kubernetes.io/worker": None}) is not None
    assert refusal(token_api, node, {"node-role.kubernetes.io/worker": "x"}) is not None
    assert refusal(token_api, node, {"vendor.io/x": None}) is None
    assert refusal(token_api, node, {"vendor.io/x": "b"}) is None


def wait_for(api: client.CoreV1Api, node: str, expected: dict[str, bool]) -> None:
    wait_until(lambda: verdicts(api, node, list(expected)) == expected, FLIP_WAIT_S,
               f"the policy to enforce {expected}", every=0.2)


def test_editing_the_configmap_flips_what_the_token_may_write(apiserver, token_api,
                                                              node) -> None:
    before = {"vendor.io/x": True, "k8s.io/x": False, "a.vendor.io/x": True,
              "example.com/x": True, "node-role.kubernetes.io/gpu": False,
              "feature.node.kubernetes.io/x": True}
    wait_for(token_api, node, before)
    # Spaces around entries are ignored; "*.vendor.io" is the subdomains, not vendor.io.
    # kubernetes.io's sub-namespaces stay denied: no setting re-allows them.
    set_namespaces(apiserver, {"denyLabelNs": " *.vendor.io , example.com,, ",
                               "extraLabelNs": "k8s.io, node-role.kubernetes.io"})
    wait_for(token_api, node, {"vendor.io/x": True, "k8s.io/x": True, "a.vendor.io/x": False,
                               "example.com/x": False, "node-role.kubernetes.io/gpu": False,
                               "feature.node.kubernetes.io/x": True})
    set_namespaces(apiserver, {"denyLabelNs": "vendor.io", "extraLabelNs": ""})
    wait_for(token_api, node, {"vendor.io/x": False, "a.vendor.io/x": True,
                               "k8s.io/x": True, "node-role.kubernetes.io/gpu": False})
    set_namespaces(apiserver, DEFAULTS)
    wait_for(token_api, node, before)


def test_an_extra_namespace_never_admits_the_confinement_probe(apiserver, token_api,
                                                               node) -> None:
    """Were the probe admitted, every agent would take the policy for missing and stop
    writing: its namespace is denied in the policy itself, beyond the ConfigMap."""
    probe_namespace = PROBE_LABEL.split("/")[0]
    set_namespaces(apiserver, {"denyLabelNs": "", "extraLabelNs": probe_namespace})
    wait_for(token_api, node, {"k8s.io/x": True})  # the edit is in force
    message = refusal(token_api, node, {PROBE_LABEL: "must-be-denied"})
    assert message is not None and PROBE_LABEL in message


def test_without_the_configmap_the_fixed_rules_hold_and_nobody_else_is_refused(
        apiserver, token_api, node) -> None:
    """A missing parameter must not refuse other writers: with parameterNotFoundAction
    Deny, kube-apiserver refuses every request the policy matches before matchConditions
    run, the kubelets' Node status updates included, and every node goes NotReady."""
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        core.delete_namespaced_config_map(PARAMS, SA_NAMESPACE)
        try:
            # The setting's own denial (k8s.io by default) is no longer enforced ...
            wait_for(token_api, node, {"k8s.io/x": True})
            # ... while what no setting may allow stays denied, and other Nodes too.
            wait_for(token_api, node, {"kubernetes.io/x": False, PROBE_LABEL: False,
                                       "node-role.kubernetes.io/gpu": False,
                                       "vendor.io/x": True})
            # Another writer (a kubelet, an administrator) is not refused for the
            # missing parameter, neither on labels nor on the Node's status.
            patch_node(apiserver, node, {"metadata": {"labels": {"team": "a"}}})
            core.patch_node_status(node, {"status": {"conditions": [{
                "type": "ExampleCondition", "status": "True", "reason": "Test",
                "message": "a writer other than the agent"}]}})
        finally:
            core.create_namespaced_config_map(SA_NAMESPACE,
                                              label_namespaces_configmap(PARAMS, DEFAULTS))
    wait_for(token_api, node, {"k8s.io/x": False})


def test_other_nodes_stay_denied_whatever_the_namespaces(apiserver, policy, token_api,
                                                         node) -> None:
    set_namespaces(apiserver, {"denyLabelNs": "", "extraLabelNs": ""})
    other = f"labelns-other-{uuid.uuid4().hex[:6]}"
    with policed_node(apiserver, policy, SELECTOR, other):
        wait_for(token_api, node, {"k8s.io/x": True})  # the edit is in force
        for labels in ({"vendor.io/x": "1"}, {"feature.node.kubernetes.io/x": "1"}):
            message = refusal(token_api, other, labels)
            assert message is not None and f"belongs to node {node}" in message


@pytest.mark.xfail(strict=True, reason=(
    "kube-apiserver stops its ConfigMap param informer once no binding uses ConfigMap "
    "params (kubernetes/kubernetes#130887, #133827); docs/install.md says what to do. "
    "Passing here means the pinned release has the fix: update the docs and drop this."))
def test_reinstalling_the_binding_keeps_the_namespaces_in_force() -> None:
    """`kubectl delete -k deploy/ && kubectl apply -k deploy/`, or helm uninstall and
    install, on one API server process: the policy must then read the ConfigMap again.
    On 1.34 it keeps enforcing the content the ConfigMap had when the binding went
    (here: vendor.io still admitted, k8s.io still denied), while the agents read the
    new one. A fresh control plane: the session's keeps its informer alive
    (agentkit.keep_configmap_params)."""
    from agentkit import (
        NAMESPACES_POLICY_FILE,
        NODE_NAME_EXTRA,
        RBAC_FILES,
        SA_USER,
        ensure_created,
    )

    with kubeharness.control_plane() as plane:
        documents = [d for f in (*RBAC_FILES, NAMESPACES_POLICY_FILE) for d in
                     yaml.safe_load_all(f.read_text()) if d]
        ensure_created(plane, [*documents[:-2], label_namespaces_configmap()])
        shipped_policy, shipped_binding = documents[-2:]
        node = "reinstalled"
        with plane.admin_client() as admin:
            admission = client.AdmissionregistrationV1Api(admin)
            core = client.CoreV1Api(admin)
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
            admission.create_validating_admission_policy(shipped_policy)
            admission.create_validating_admission_policy_binding(shipped_binding)
            agent = client.CoreV1Api(plane.client_as(SA_USER, extra={NODE_NAME_EXTRA: node}))

            def verdict(key: str) -> str:
                try:
                    agent.patch_node(node, {"metadata": {"labels": {key: "1"}}}, dry_run="All",
                                     _content_type="application/merge-patch+json")
                except ApiException as error:
                    return "no params" if "no params found" in str(error.body) else "denied"
                return "admitted"

            wait_until(lambda: verdict("k8s.io/x") == "denied", FLIP_WAIT_S, "the policy")
            # The binding goes (the policy may stay), then comes back.
            admission.delete_validating_admission_policy_binding(shipped_binding["metadata"]["name"])
            time.sleep(3)  # the server's policy refresh runs every second
            admission.create_validating_admission_policy_binding(shipped_binding)
            core.replace_namespaced_config_map(LABEL_NAMESPACES, SA_NAMESPACE,
                                               label_namespaces_configmap(data={
                                                   "denyLabelNs": "vendor.io",
                                                   "extraLabelNs": ""}))
            wanted = {"vendor.io/x": "denied", "k8s.io/x": "admitted"}
            try:
                wait_until(lambda: {k: verdict(k) for k in wanted} == wanted, 15,
                           "the policy to enforce the edited ConfigMap")
            except AssertionError:
                raise AssertionError({k: verdict(k) for k in wanted}) from None


def test_long_lists_and_many_labels_stay_within_the_policys_cost_budget(
        apiserver, token_api, node) -> None:
    """CEL has a per-request cost budget: 100 entries in each list and a 300-label patch
    are judged, not refused for cost."""
    deny = [f"deny{i}.example.com" for i in range(50)] + [f"*.wild{i}.example" for i in range(50)]
    # Each re-allows one namespace the wildcard *.wild0.example denies.
    extra = [f"x{i}.wild0.example" for i in range(100)]
    set_namespaces(apiserver, {"denyLabelNs": ",".join(deny), "extraLabelNs": ",".join(extra)})
    wait_for(token_api, node, {"deny7.example.com/x": False, "a.wild9.example/x": False,
                               "x99.wild0.example/x": True, "x100.wild0.example/x": False})
    labels = {f"vendor{i}.io/feature-{i}": "true" for i in range(300)}
    assert refusal(token_api, node, labels, dry_run=False) is None
    labels["a.wild49.example/x"] = "1"
    message = refusal(token_api, node, labels)
    assert message is not None and "a.wild49.example/x" in message
