"""ObjectCache against the real API server: list, watch, changes, deletion, restarts,
and no claim of knowing anything it could not list."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from agentkit import wait_until
from kubernetes import client
from nfdkit import GROUP, NODE_NAME_LABEL, VERSION, custom, ensure_namespace

from nodefeatures.cluster.kube import Kind, ObjectApi
from nodefeatures.cluster.nfdapi import node_features_kind
from nodefeatures.cluster.objectcache import MAX_BYTES, ObjectCache


@pytest.fixture
def namespace(apiserver: Any):
    name = f"cache-{uuid.uuid4().hex[:8]}"
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        yield name
        core.delete_namespace(name)


def configmaps(apiserver: Any, namespace: str, **kind: Any) -> Kind:
    return Kind("", "v1", "configmaps", verb="test", namespace=namespace, **kind)


def put(apiserver: Any, namespace: str, name: str, data: dict[str, str],
        labels: dict[str, str] | None = None) -> None:
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels),
                                  data=data)
        try:
            core.replace_namespaced_config_map(name, namespace, body)
        except client.ApiException as error:
            if error.status != 404:
                raise
            core.create_namespaced_config_map(namespace, body)


def delete(apiserver: Any, namespace: str, name: str) -> None:
    with apiserver.admin_client() as api:
        client.CoreV1Api(api).delete_namespaced_config_map(name, namespace)


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.calls += 1


def data_of(cache: ObjectCache) -> dict[str, Any]:
    return {name: obj.get("data") for (_, name), obj in cache.snapshot()[1].items()}


def test_list_then_watch_follows_creates_changes_and_deletes(apiserver, namespace):
    # Seeded before the cache starts: the first list must find it.
    put(apiserver, namespace, "first", {"a": "1"})
    changes = Counter()
    with apiserver.admin_client() as api:
        cache = ObjectCache(ObjectApi(api, configmaps(apiserver, namespace)), changes).start()
        try:
            assert cache.wait(10)
            # Every namespace has kube-root-ca.crt; ours is there too.
            assert data_of(cache)["first"] == {"a": "1"}
            put(apiserver, namespace, "second", {"b": "2"})
            wait_until(lambda: "second" in data_of(cache), 5, "the watch to show an ADDED")
            put(apiserver, namespace, "first", {"a": "changed"})
            wait_until(lambda: data_of(cache)["first"] == {"a": "changed"}, 5, "MODIFIED")
            delete(apiserver, namespace, "second")
            wait_until(lambda: "second" not in data_of(cache), 5, "DELETED")
            assert cache.snapshot()[2] is True
            assert changes.calls >= 4  # the list, ADDED, MODIFIED, DELETED
        finally:
            cache.stop()


def test_an_update_of_what_does_not_matter_is_no_change(apiserver, namespace):
    put(apiserver, namespace, "quiet", {"a": "1"})
    changes = Counter()
    with apiserver.admin_client() as api:
        cache = ObjectCache(ObjectApi(api, configmaps(
            apiserver, namespace, field_selector="metadata.name=quiet")), changes,
            content=lambda obj: obj.get("data")).start()
        try:
            assert cache.wait(10)
            generation = cache.snapshot()[0]
            before = changes.calls
            # An annotation is not what this cache's content() compares.
            with apiserver.admin_client() as admin:
                client.CoreV1Api(admin).patch_namespaced_config_map(
                    "quiet", namespace, {"metadata": {"annotations": {"x": "y"}}})
            wait_until(lambda: cache.snapshot()[1][(namespace, "quiet")]["metadata"]
                       .get("annotations") == {"x": "y"}, 5, "the watch to deliver it")
            assert cache.snapshot()[0] == generation
            assert changes.calls == before
        finally:
            cache.stop()


def test_a_forbidden_list_is_not_knowledge(apiserver, namespace):
    # A user with no RBAC at all: the list is refused, and the cache must not claim
    # that there are no objects.
    put(apiserver, namespace, "secret", {"a": "1"})
    with apiserver.client_as("system:serviceaccount:nobody:nobody") as api:
        cache = ObjectCache(ObjectApi(api, configmaps(apiserver, namespace))).start()
        try:
            assert cache.wait(10) is False
            assert cache.snapshot()[1] == {}
            assert cache.snapshot()[2] is False
            assert "not allowed" in (cache.problem or "")
        finally:
            cache.stop()


def test_an_unserved_resource_is_not_knowledge(apiserver):
    kind = Kind("example.nodefeatures.dev", "v1", "widgets", verb="test")
    with apiserver.admin_client() as api:
        cache = ObjectCache(ObjectApi(api, kind)).start()
        try:
            assert cache.wait(10) is False
            assert cache.snapshot()[2] is False
            assert "does not serve widgets" in (cache.problem or "")
        finally:
            cache.stop()


def test_after_an_api_server_restart_the_copy_stays_known_and_catches_up(apiserver, namespace):
    put(apiserver, namespace, "kept", {"a": "1"})
    with apiserver.admin_client() as api:
        cache = ObjectCache(ObjectApi(api, configmaps(apiserver, namespace)),
                            backoff_cap=0.5).start()
        try:
            assert cache.wait(10)
            apiserver.restart()
            # Known the whole time: the copy is a real, if stale, state.
            assert cache.snapshot()[2] is True
            put(apiserver, namespace, "kept", {"a": "after restart"})
            wait_until(lambda: data_of(cache).get("kept") == {"a": "after restart"}, 30,
                       "the cache to catch up after the restart")
        finally:
            cache.stop()


def test_objects_beyond_the_byte_budget_are_not_followed_and_not_held(apiserver, nfd_crds):
    # Twenty NodeFeatures of 0.9 MB each for one node grew an agent by 188 MiB, over its
    # 128 MiB limit: whoever may write NodeFeatures somewhere could have it OOM-killed.
    elements = {f"e{i:06d}": "v" * 8 for i in range(40_000)}
    node = f"big-{uuid.uuid4().hex[:6]}"
    created = []
    with apiserver.admin_client() as api:
        ensure_namespace(apiserver, "big")
        try:
            for n in range(1 + MAX_BYTES // 900_000):
                body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeFeature",
                        "metadata": {"name": f"{node}-{n}", "namespace": "big",
                                     "labels": {NODE_NAME_LABEL: node}},
                        "spec": {"features": {"attributes": {"x.y": {"elements": elements}}}}}
                custom(api).create_namespaced_custom_object(GROUP, VERSION, "big",
                                                            "nodefeatures", body)
                created.append(f"{node}-{n}")
            cache = ObjectCache(ObjectApi(apiserver.admin_client(), node_features_kind(node)))
            cache.start()
            try:
                assert cache.wait(20.0) is False
                assert "bytes" in (cache.problem or ""), cache.problem
                assert cache.snapshot()[1] == {}
            finally:
                cache.stop()
        finally:
            for name in created:
                custom(api).delete_namespaced_custom_object(GROUP, VERSION, "big",
                                                            "nodefeatures", name)
