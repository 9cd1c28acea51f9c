"""Tests of the real-apiserver harness itself: auth, RBAC, persistence, audit, admission."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import kubeharness
import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration

NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
T = TypeVar("T")


def unique(prefix: str) -> str:
    """A fresh name: tests share one server, and without controllers nothing is cleaned up."""
    return f"{prefix}-{secrets.token_hex(4)}"


def eventually(action: Callable[[], T], retry_on: Callable[[Exception], bool], timeout: float) -> T:
    """Retry ``action`` while ``retry_on(exc)`` holds: RBAC and policies apply asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception as exc:
            if not retry_on(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def is_status(*codes: int) -> Callable[[Exception], bool]:
    """A retry predicate matching ApiExceptions with one of ``codes``."""
    return lambda exc: isinstance(exc, ApiException) and exc.status in codes


@pytest.fixture
def core(apiserver: kubeharness.ControlPlane) -> Iterator[client.CoreV1Api]:
    """CoreV1Api as the admin."""
    with apiserver.admin_client() as api:
        yield client.CoreV1Api(api)


def create_node(core: client.CoreV1Api, labels: dict[str, str] | None = None) -> client.V1Node:
    """Create a Node object (no kubelet behind it) with a unique name."""
    body = client.V1Node(metadata=client.V1ObjectMeta(name=unique("node"), labels=labels))
    return core.create_node(body)


def whoami(api: client.ApiClient) -> client.V1UserInfo:
    """The user the server authenticated for ``api``'s requests."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    return review.status.user_info


def test_admin_creates_and_reads_back_a_node(core: client.CoreV1Api) -> None:
    created = create_node(core, labels={"harness.test/origin": "admin"})
    name = created.metadata.name

    fetched = core.read_node(name)

    assert fetched.metadata.uid == created.metadata.uid
    assert fetched.metadata.labels["harness.test/origin"] == "admin"
    assert name in {node.metadata.name for node in core.list_node().items}


def test_server_reports_the_version_it_was_built_as(apiserver: kubeharness.ControlPlane) -> None:
    with apiserver.admin_client() as api:
        served = client.VersionApi(api).get_code().git_version
    printed = subprocess.run(
        [str(apiserver.binaries.kube_apiserver), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]

    assert served == printed
    assert served.startswith("v1.")


def test_kubeconfig_authenticates_as_admin(apiserver: kubeharness.ControlPlane) -> None:
    with config.new_client_from_config(config_file=str(apiserver.kubeconfig_path)) as api:
        user = whoami(api)

    assert user.username == kubeharness.ADMIN_USER
    assert "system:masters" in user.groups


def test_impersonation_sends_user_all_groups_and_extra(
    apiserver: kubeharness.ControlPlane,
) -> None:
    extra = {NODE_NAME_EXTRA: "node-a", "harness.test/multi": ["x", "y"]}
    with apiserver.client_as("alice", groups=["team-a", "team-b"], extra=extra) as api:
        user = whoami(api)

    assert user.username == "alice"
    assert {"team-a", "team-b"} <= set(user.groups)
    assert user.extra == {NODE_NAME_EXTRA: ["node-a"], "harness.test/multi": ["x", "y"]}


def test_service_account_without_rbac_is_denied_patching_nodes(
    apiserver: kubeharness.ControlPlane, core: client.CoreV1Api
) -> None:
    node = create_node(core).metadata.name
    sa_user = f"system:serviceaccount:default:{unique('no-rbac')}"

    with (
        apiserver.client_as(sa_user, extra={NODE_NAME_EXTRA: node}) as api,
        pytest.raises(ApiException) as denied,
    ):
        client.CoreV1Api(api).patch_node(node, {"metadata": {"labels": {"harness.test/x": "1"}}})

    assert denied.value.status == 403
    assert sa_user in denied.value.body
    assert "harness.test/x" not in (core.read_node(node).metadata.labels or {})


def test_service_account_with_rbac_may_patch_nodes(
    apiserver: kubeharness.ControlPlane, core: client.CoreV1Api
) -> None:
    # Positive control for the denial test: same path, but with a binding.
    node = create_node(core).metadata.name
    sa_name = unique("labeler")
    role = unique("node-patcher")
    with apiserver.admin_client() as admin:
        rbac = client.RbacAuthorizationV1Api(admin)
        rbac.create_cluster_role(
            client.V1ClusterRole(
                metadata=client.V1ObjectMeta(name=role),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["nodes"], verbs=["patch"])],
            )
        )
        rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=role),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name=sa_name, namespace="default")
                ],
            )
        )

    patch = {"metadata": {"labels": {"harness.test/x": "1"}}}
    with apiserver.client_as(f"system:serviceaccount:default:{sa_name}") as api:
        patched = eventually(
            lambda: client.CoreV1Api(api).patch_node(node, patch), is_status(403), timeout=10
        )

    assert patched.metadata.labels["harness.test/x"] == "1"


def test_token_request_bound_to_a_node_carries_the_node_name(
    apiserver: kubeharness.ControlPlane, core: client.CoreV1Api
) -> None:
    namespace = unique("ns")
    sa_name = "labeler"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa_name))
    )
    node = create_node(core).metadata.name

    token = apiserver.service_account_token(namespace, sa_name, node=node)
    with apiserver.client_for_token(token) as api:
        user = whoami(api)

    assert user.username == f"system:serviceaccount:{namespace}:{sa_name}"
    assert f"system:serviceaccounts:{namespace}" in user.groups
    assert user.extra[NODE_NAME_EXTRA] == [node]


def test_audit_log_records_each_node_patch(
    apiserver: kubeharness.ControlPlane, core: client.CoreV1Api
) -> None:
    node = create_node(core).metadata.name
    core.patch_node(node, {"metadata": {"labels": {"harness.test/n": "1"}}})
    core.patch_node(node, {"metadata": {"labels": {"harness.test/n": "2"}}})

    def patches() -> list[dict[str, Any]]:
        return apiserver.audit_events(verbs={"patch"}, name=node)

    # The audit entry is written after the response goes out.
    deadline = time.monotonic() + 10
    while len(patches()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    events = patches()
    assert len(events) == 2
    assert {event["user"]["username"] for event in events} == {kubeharness.ADMIN_USER}
    assert [event["responseStatus"]["code"] for event in events] == [200, 200]
    assert {event["objectRef"]["resource"] for event in events} == {"nodes"}


def test_validating_admission_policy_is_enforced(
    apiserver: kubeharness.ControlPlane, core: client.CoreV1Api
) -> None:
    marker = unique("vap")
    node = create_node(core, labels={"harness.test/vap": marker}).metadata.name
    forbid = {"metadata": {"labels": {"harness.test/forbidden": "yes"}}}
    allow_again = {"metadata": {"labels": {"harness.test/forbidden": None}}}

    with apiserver.admin_client() as admin:
        admission = client.AdmissionregistrationV1Api(admin)
        admission.create_validating_admission_policy(
            client.V1ValidatingAdmissionPolicy(
                metadata=client.V1ObjectMeta(name=marker),
                spec=client.V1ValidatingAdmissionPolicySpec(
                    failure_policy="Fail",
                    match_constraints=client.V1MatchResources(
                        resource_rules=[
                            client.V1NamedRuleWithOperations(
                                api_groups=[""],
                                api_versions=["v1"],
                                operations=["UPDATE"],
                                resources=["nodes"],
                            )
                        ]
                    ),
                    validations=[
                        client.V1Validation(
                            expression="!('harness.test/forbidden' in object.metadata.labels)",
                            message="harness.test/forbidden may not be set",
                        )
                    ],
                ),
            )
        )
        # Scoped to this test's node so the policy cannot disturb other tests.
        admission.create_validating_admission_policy_binding(
            client.V1ValidatingAdmissionPolicyBinding(
                metadata=client.V1ObjectMeta(name=marker),
                spec=client.V1ValidatingAdmissionPolicyBindingSpec(
                    policy_name=marker,
                    validation_actions=["Deny"],
                    match_resources=client.V1MatchResources(
                        object_selector=client.V1LabelSelector(
                            match_labels={"harness.test/vap": marker}
                        )
                    ),
                ),
            )
        )
        try:

            def attempt() -> None:
                core.patch_node(node, forbid)
                # Not enforced yet: undo and signal a retry.
                core.patch_node(node, allow_again)
                raise TimeoutError("policy not enforced yet")

            with pytest.raises(ApiException) as denied:
                eventually(attempt, lambda exc: isinstance(exc, TimeoutError), timeout=20)
        finally:
            admission.delete_validating_admission_policy_binding(marker)
            admission.delete_validating_admission_policy(marker)

    assert denied.value.status in (403, 422)
    assert "harness.test/forbidden may not be set" in denied.value.body
    assert "harness.test/forbidden" not in core.read_node(node).metadata.labels


def test_node_survives_a_killed_apiserver(
    apiserver: kubeharness.ControlPlane, core: client.CoreV1Api
) -> None:
    created = create_node(core)
    url = apiserver.url

    apiserver.stop(graceful=False)
    try:
        with pytest.raises(urllib3.exceptions.HTTPError, match="Connection refused"):
            core.read_node(created.metadata.name, _request_timeout=5)
    finally:
        # Other tests share this server: always bring it back.
        apiserver.start()

    assert apiserver.url == url
    # The client made before the kill reconnects to the new process.
    assert core.read_node(created.metadata.name).metadata.uid == created.metadata.uid
