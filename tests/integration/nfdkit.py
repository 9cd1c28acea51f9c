"""Helpers for tests of NFD's API on the real API server: the CRDs, objects, agents that
follow NodeFeatureRules and NodeFeatures."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from agentkit import FAST, SA_USER, discoverer
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.cluster.nfdapi import ClusterObjects
from nodefeatures.cluster.objectcache import wait_all

GROUP, VERSION = "nfd.k8s-sigs.io", "v1alpha1"
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"
REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "deploy" / "nfd-crds"


def crd_documents() -> list[dict[str, Any]]:
    """The CRDs as shipped in deploy/nfd-crds/ (the conftest's `nfd_crds` serves them)."""
    return [d for f in sorted(CRD_DIR.glob("*-crds.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]


def custom(api: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@contextlib.contextmanager
def rule_object(apiserver: Any, rules: list[dict[str, Any]],
                name: str | None = None) -> Iterator[str]:
    """A NodeFeatureRule holding `rules`, deleted afterwards."""
    name = name or f"test-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeFeatureRule",
            "metadata": {"name": name}, "spec": {"rules": rules}}
    with apiserver.admin_client() as api:
        custom(api).create_cluster_custom_object(GROUP, VERSION, "nodefeaturerules", body)
        try:
            yield name
        finally:
            with contextlib.suppress(ApiException):
                custom(api).delete_cluster_custom_object(GROUP, VERSION, "nodefeaturerules",
                                                         name)


def replace_rules(apiserver: Any, name: str, rules: list[dict[str, Any]]) -> None:
    with apiserver.admin_client() as api:
        current = custom(api).get_cluster_custom_object(GROUP, VERSION, "nodefeaturerules",
                                                        name)
        current["spec"] = {"rules": rules}
        custom(api).replace_cluster_custom_object(GROUP, VERSION, "nodefeaturerules", name,
                                                  current)


def delete_rules(apiserver: Any, name: str) -> None:
    with apiserver.admin_client() as api:
        custom(api).delete_cluster_custom_object(GROUP, VERSION, "nodefeaturerules", name)


def ensure_namespace(apiserver: Any, name: str) -> None:
    with apiserver.admin_client() as api:
        try:
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except ApiException as error:
            if error.status != 409:
                raise


@contextlib.contextmanager
def node_feature(apiserver: Any, namespace: str, name: str, node: str,
                 labels: dict[str, str] | None = None,
                 features: dict[str, Any] | None = None) -> Iterator[str]:
    """A NodeFeature for `node` (as GFD or a vendor agent writes one), deleted afterwards."""
    ensure_namespace(apiserver, namespace)
    spec: dict[str, Any] = {"labels": labels or {}}
    if features is not None:
        spec["features"] = features
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeFeature",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {NODE_NAME_LABEL: node}}, "spec": spec}
    with apiserver.admin_client() as api:
        custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "nodefeatures",
                                                    body)
        try:
            yield name
        finally:
            with contextlib.suppress(ApiException):
                custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                            "nodefeatures", name)


def nfd_agent(apiserver: Any, node: str, sources: list[Any], tmp_path: Path, *,
              user: str | None = SA_USER, objects_user: str | None = "same",
              namespace: str = "nodefeatures", **options: Any) -> tuple[Agent, ClusterObjects]:
    """An agent that follows NFD's objects, started caches included (not the loop)."""
    api_client = apiserver.client_as(user) if user else apiserver.admin_client()
    objects_client = api_client if objects_user == "same" else (
        apiserver.client_as(objects_user) if objects_user else apiserver.admin_client())
    settings = {**FAST, "allow_unconfined": True, **options}
    box: list[Agent] = []
    objects = ClusterObjects(objects_client, node, namespace,
                             lambda: box[0].refresh() if box else None)
    agent = Agent(NodeApi(api_client, node), discoverer(sources, tmp_path),
                  [s.name for s in sources], Options(node=node, **settings),
                  extend=objects.extend)
    box.append(agent)
    objects.start()
    wait_all(objects.caches, 10.0)
    return agent, objects
