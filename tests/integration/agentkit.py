"""Helpers for the agent's integration tests: Nodes, controllable sources, agents in threads.

Test modules import the fixtures they use from here (`from agentkit import node, rbac`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.run import run_pass
from nodefeatures.discovery.source import Context, Features, Host, Source

REPO = Path(__file__).resolve().parents[2]
# The Namespace comes first: the ServiceAccount lives in it.
RBAC_FILES = (REPO / "deploy" / "base" / "namespace.yaml", REPO / "deploy" / "base" / "rbac.yaml")
SA_NAMESPACE = "nodefeatures"
SA_NAME = "nodefeatures"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
LEDGER = "nodefeatures.dev/labels"
SOURCES = "nodefeatures.dev/sources"
F = "feature.node.kubernetes.io/"

# Fast timings: passes every second, quick retries. Production defaults are 60 s etc.
FAST = {"interval": 1.0, "backoff_base": 0.1, "backoff_cap": 1.0, "rejected_retry": 2.0,
        "startup_wait": 2.0, "event_every": 0.0}


class Switchable(Source):
    """A source whose labels, failure and completeness the test controls between passes."""

    def __init__(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.name = name  # type: ignore[misc]  # per instance, so one class serves many
        self.current = dict(labels or {})
        self.fail = False
        self.incomplete = False

    def discover(self, ctx: Context) -> Features:
        if self.fail:
            raise RuntimeError("simulated driver failure")
        if self.incomplete:
            ctx.complete = False
        features = Features()
        for key, value in self.current.items():
            features.attribute("fake", key, value, "set by the test")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return [Label(k, f.value, f.origin) for k, f in features.attributes.get("fake", {}).items()]


def discoverer(sources: list[Source], root: Path) -> Callable[[], Any]:
    by_name = {s.name: s for s in sources}
    config = build({}, by_name)
    host = Host(root=HostRoot(root))
    return lambda: run_pass(host, by_name, config)


@dataclass
class Running:
    """An agent running its loop in a thread."""

    agent: Agent
    thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> float:
        started = time.monotonic()
        self.agent.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not stop"
        return time.monotonic() - started


def make_agent(apiserver: Any, node: str, sources: list[Source], tmp_path: Path, *,
               user: str | None = SA_USER, installed: list[str] | None = None,
               **options: Any) -> Agent:
    api_client = apiserver.client_as(user) if user else apiserver.admin_client()
    # Most tests run without the own-node policy installed, so they waive the proof of
    # confinement; test_agent_confinement.py runs the agent with and without it.
    settings = {**FAST, "allow_unconfined": True, **options}
    names = installed if installed is not None else [s.name for s in sources]
    return Agent(NodeApi(api_client, node), discoverer(sources, tmp_path), names,
                 Options(node=node, **settings))


def start(agent: Agent) -> Running:
    thread = threading.Thread(target=agent.run, daemon=True, name=f"agent-{agent.options.node}")
    thread.start()
    return Running(agent, thread)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def read_node(apiserver: Any, name: str) -> dict[str, Any]:
    """The Node as plain JSON, read as admin."""
    with apiserver.admin_client() as api:
        response = api.call_api(f"/api/v1/nodes/{name}", "GET", auth_settings=["BearerToken"],
                                _preload_content=False)
        return json.loads(response.data)


def labels_of(apiserver: Any, name: str) -> dict[str, str]:
    return read_node(apiserver, name)["metadata"].get("labels") or {}


def annotations_of(apiserver: Any, name: str) -> dict[str, str]:
    return read_node(apiserver, name)["metadata"].get("annotations") or {}


def owned_on(apiserver: Any, name: str) -> dict[str, str | None]:
    """{key: source} of the labels the Node's ledger says the agent owns."""
    from nodefeatures.cluster.reconcile import Ledger

    return dict(Ledger.parse(annotations_of(apiserver, name)).owners)


def rv_of(apiserver: Any, name: str) -> str:
    return read_node(apiserver, name)["metadata"]["resourceVersion"]


def patch_node(apiserver: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch as admin (another writer, or a human with kubectl)."""
    with apiserver.admin_client() as api:
        node = client.CoreV1Api(api).patch_node(
            name, body, _content_type="application/merge-patch+json")
        return api.sanitize_for_serialization(node)


def acting_user(event: dict[str, Any]) -> str:
    """Who a request was authorised as (the impersonated user, when there is one)."""
    return str((event.get("impersonatedUser") or event["user"])["username"])


def writes_to(apiserver: Any, name: str, user: str | None = None) -> list[dict[str, Any]]:
    """Audited write requests on one existing Node (optionally by one user)."""
    events = apiserver.audit_events(verbs={"update", "patch", "delete"}, name=name)
    return [e for e in events if user is None or acting_user(e) == user]


def requests_on(apiserver: Any, name: str, user: str) -> list[dict[str, Any]]:
    """Every audited request by `user` about one Node: get, watch (field selector), patch."""
    found: dict[str, dict[str, Any]] = {}
    for event in apiserver.audit_events():
        # A watch is audited when it starts and when it ends: count it once.
        if acting_user(event) == user and event.get("objectRef", {}).get("name") == name:
            found.setdefault(event["auditID"], event)
    return list(found.values())


def events_about(apiserver: Any, node: str) -> list[Any]:
    with apiserver.admin_client() as api:
        found = client.CoreV1Api(api).list_namespaced_event(
            "default", field_selector=f"involvedObject.name={node}")
        return list(found.items)


@pytest.fixture(scope="session")
def rbac(apiserver: Any) -> str:
    """The shipped namespace and RBAC applied as admin; returns the agent's user name."""
    documents = [d for f in RBAC_FILES for d in yaml.safe_load_all(f.read_text())]
    with apiserver.admin_client() as api:
        for document in documents:
            try:
                utils.create_from_dict(api, document)
            except utils.FailToCreateError as error:
                if any(e.status != 409 for e in error.api_exceptions):
                    raise
    # Authorizer caches follow new bindings within a moment.
    with apiserver.client_as(SA_USER) as api:
        def allowed() -> bool:
            review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(verb="patch", resource="nodes")))
            result = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
            return bool(result.status.allowed)

        wait_until(allowed, 10, "the agent's ClusterRoleBinding to take effect", every=0.2)
    return SA_USER


@pytest.fixture
def node(apiserver: Any, rbac: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh Node named after the test, with one label of its own."""
    short = request.node.name.replace("_", "-").lower()[:40].strip("-")
    name = f"{short}-{uuid.uuid4().hex[:6]}"
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
            name=name, labels={"kubernetes.io/hostname": name})))
        yield name
        try:
            core.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise


def service_account_kubeconfig(apiserver: Any, directory: Path) -> Path:
    """A kubeconfig holding a real (TokenRequest) token of the agent's ServiceAccount."""
    token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "agent",
        "clusters": [{"name": "test", "cluster": {
            "server": apiserver.url, "certificate-authority": str(apiserver.ca_path)}}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [{"name": "agent", "context": {"cluster": "test", "user": "agent"}}],
    }
    path = directory / "agent.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def os_release_root(directory: Path, text: str = 'ID=debian\nVERSION_ID="12"\n') -> Path:
    """A host root whose only file is etc/os-release (the `system` source's input)."""
    root = directory / "host"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "os-release").write_text(text)
    return root


POLICY_FILE = REPO / "deploy" / "base" / "admission-policy.yaml"
NAMESPACES_POLICY_FILE = REPO / "deploy" / "base" / "label-namespaces-policy.yaml"
NODEFEATURE_POLICY_FILE = REPO / "deploy" / "base" / "nodefeature-policy.yaml"
LABEL_NAMESPACES_FILE = REPO / "deploy" / "base" / "label-namespaces.yaml"
NFD_CRDS_DIR = REPO / "deploy" / "nfd-crds"
LABEL_NAMESPACES = "nodefeatures-label-namespaces"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"


def agent_as(apiserver: Any, node: str) -> Any:
    """An API client as the agent's ServiceAccount, its token bound to `node`."""
    return apiserver.client_as(SA_USER, extra={NODE_NAME_EXTRA: node})


def ensure_created(apiserver: Any, documents: list[dict[str, Any]]) -> None:
    """Create each object as admin unless it exists (other modules share the server)."""
    with apiserver.admin_client() as api:
        for document in documents:
            try:
                utils.create_from_dict(api, copy.deepcopy(document))
            except utils.FailToCreateError as error:
                if any(e.status != 409 for e in error.api_exceptions):
                    raise


def label_namespaces_configmap(name: str = LABEL_NAMESPACES,
                               data: Mapping[str, str] | None = None) -> dict[str, Any]:
    """deploy/base's label-namespaces ConfigMap, optionally renamed or with other data."""
    configmap: dict[str, Any] = yaml.safe_load(LABEL_NAMESPACES_FILE.read_text())
    configmap["metadata"]["name"] = name
    if data is not None:
        configmap["data"] = dict(data)
    return configmap


def put_configmap(apiserver: Any, name: str, data: Mapping[str, str],
                  namespace: str = SA_NAMESPACE) -> None:
    """Create or replace ConfigMap `namespace`/`name` with `data`, as an administrator."""
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=dict(data))
        try:
            core.replace_namespaced_config_map(name, namespace, body)
        except ApiException as error:
            if error.status != 404:
                raise
            core.create_namespaced_config_map(namespace, body)


@contextlib.contextmanager
def shipped_policy_as(apiserver: Any, name: str, selector: str,
                      params: str = LABEL_NAMESPACES) -> Iterator[str]:
    """deploy/base's policies and bindings, renamed `name` (the own-node policy) and
    `name`-namespaces (the label namespaces policy) and bound only to Nodes labelled
    `selector=on`, so a module can run agents under the real policies without touching
    the other modules' Nodes; removed afterwards.

    The second binding reads the allowed label namespaces from ConfigMap
    nodefeatures/`params`:
    by default the shipped one (the only one the agent's RBAC lets it read), created
    from deploy/base when missing and left in place. Another name gives the module its
    own copy, made here and deleted afterwards, to edit without affecting other modules.
    """
    documents = []
    names = (name, f"{name}-namespaces")
    for path, renamed in zip((POLICY_FILE, NAMESPACES_POLICY_FILE), names, strict=True):
        for document in copy.deepcopy(list(yaml.safe_load_all(path.read_text()))):
            document["metadata"]["name"] = renamed
            if document["kind"] == "ValidatingAdmissionPolicyBinding":
                document["spec"]["policyName"] = renamed
                if "paramRef" in document["spec"]:
                    document["spec"]["paramRef"]["name"] = params
                document["spec"]["matchResources"] = {
                    "objectSelector": {"matchLabels": {selector: "on"}}}
            documents.append(document)
    namespace = yaml.safe_load(RBAC_FILES[0].read_text())
    ensure_created(apiserver, [namespace, label_namespaces_configmap(params)])
    with apiserver.admin_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        for document in documents:
            if document["kind"] == "ValidatingAdmissionPolicy":
                admission.create_validating_admission_policy(document)
            else:
                admission.create_validating_admission_policy_binding(document)
        try:
            yield name
        finally:
            for renamed in names:
                admission.delete_validating_admission_policy_binding(renamed)
                admission.delete_validating_admission_policy(renamed)
            if params != LABEL_NAMESPACES:
                client.CoreV1Api(api).delete_namespaced_config_map(params, SA_NAMESPACE)


PARAMS_KEEPER = "nodefeatures-test-configmap-params-keeper"


def keep_configmap_params(apiserver: Any) -> None:
    """A policy and binding that name ConfigMap as their paramKind and match nothing,
    created once when the server starts.

    kube-apiserver (1.34 and others; kubernetes/kubernetes#130887, #133827) stops its
    ConfigMap parameter informer for good once no binding uses that paramKind for a
    moment; a policy bound later then finds no params ("no params found") or stale
    ones, until the server restarts. Modules here delete and recreate the shipped
    policy and binding, so without this keeper the order of modules would decide
    whether the next module's policy can read its ConfigMap.
    """
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": PARAMS_KEEPER},
        "spec": {"failurePolicy": "Ignore",
                 "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": ["nodefeatures.test"], "apiVersions": ["*"],
                     "operations": ["CREATE"], "resources": ["nothing"]}]},
                 "validations": [{"expression": "true"}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": PARAMS_KEEPER},
        "spec": {"policyName": PARAMS_KEEPER, "validationActions": ["Deny"],
                 "paramRef": {"name": PARAMS_KEEPER, "namespace": "default",
                              "parameterNotFoundAction": "Allow"}}}
    with apiserver.admin_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        for create, body in ((admission.create_validating_admission_policy, policy),
                             (admission.create_validating_admission_policy_binding, binding)):
            try:
                create(body)
            except ApiException as error:
                if error.status != 409:
                    raise


@pytest.fixture(scope="session")
def nfd_crds(apiserver: Any) -> None:
    """deploy/nfd-crds/ created (unless some module did already) and served. Left in
    place: deleting a CRD deletes every object of its kind, other modules' too."""
    documents = [d for f in sorted(NFD_CRDS_DIR.glob("*-crds.yaml"))
                 for d in yaml.safe_load_all(f.read_text()) if d]
    ensure_created(apiserver, documents)
    plurals = {(d["spec"]["group"], d["spec"]["names"]["plural"]) for d in documents}

    def served() -> bool:
        with apiserver.admin_client() as api:
            found = client.ApisApi(api).get_api_versions()
            if not any(g.name == "nfd.k8s-sigs.io" for g in found.groups):
                return False
            resources = api.call_api("/apis/nfd.k8s-sigs.io/v1alpha1", "GET",
                                     auth_settings=["BearerToken"], _preload_content=False)
            names = {r["name"] for r in json.loads(resources.data)["resources"]}
        return {p for _, p in plurals} <= names

    wait_until(served, 30, "NFD's CRDs to be served", every=0.2)


@contextlib.contextmanager
def policed_node(apiserver: Any, policy: str, selector: str, name: str) -> Iterator[str]:
    """A fresh Node under `policy`, yielded once the server enforces the policy on it
    (policies load asynchronously); deleted afterwards."""
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
            name=name, labels={"kubernetes.io/hostname": name, selector: "on"})))
        agent = client.CoreV1Api(agent_as(apiserver, name))

        def enforced() -> bool:
            try:  # harmless: a dry run the policy must refuse
                agent.patch_node(name, {"metadata": {"labels": {"team": "x"}}},
                                 _content_type="application/merge-patch+json", dry_run="All")
            except ApiException as error:
                return error.status == 403 and policy in str(error.body)
            return False

        try:
            wait_until(enforced, 30, "the own-node policy to be enforced", every=0.2)
            yield name
        finally:
            core.delete_node(name)
