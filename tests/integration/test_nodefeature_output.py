"""`run --output nodefeature` against the real API server: one NodeFeature in NFD's
format, written only when something changed, put back when someone deletes it."""

from __future__ import annotations

import time
from typing import Any

from agentkit import FAST, Switchable, discoverer, start, wait_until
from kubernetes.client.exceptions import ApiException
from nfdkit import GROUP, NODE_NAME_LABEL, VERSION, custom, ensure_namespace

from nodefeatures.cluster.agent import POKE_SPACING, Options
from nodefeatures.cluster.nodefeatureout import NodeFeatureAgent

NAMESPACE = "nfd-out"


def read(apiserver: Any, name: str) -> dict[str, Any] | None:
    with apiserver.admin_client() as api:
        try:
            return custom(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                            "nodefeatures", name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise


def writes_of(apiserver: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in apiserver.audit_events(verbs={"create", "update", "patch"}, name=name)
            if e.get("objectRef", {}).get("resource") == "nodefeatures"]


def output_agent(apiserver: Any, name: str, source: Switchable, tmp_path: Any,
                 **options: Any) -> NodeFeatureAgent:
    ensure_namespace(apiserver, NAMESPACE)
    return NodeFeatureAgent(apiserver.admin_client(), NAMESPACE, discoverer([source], tmp_path),
                            Options(node=name, **{**FAST, **options}))


def test_the_object_is_written_once_and_again_only_on_a_change(apiserver, nfd_crds, tmp_path):
    name = "out-node-1"
    source = Switchable("env", {"feature.node.kubernetes.io/env-a": "1"})
    agent = output_agent(apiserver, name, source, tmp_path)
    running = start(agent)  # type: ignore[arg-type]
    try:
        wait_until(lambda: read(apiserver, name) is not None, 10, "the NodeFeature")
        obj = read(apiserver, name)
        assert obj is not None
        assert obj["metadata"]["labels"][NODE_NAME_LABEL] == name
        assert obj["spec"]["labels"]
        assert "env.fake" in obj["spec"]["features"]["attributes"]
        time.sleep(3.0)  # three passes with nothing new
        assert len(writes_of(apiserver, name)) == 1
        source.current = {"feature.node.kubernetes.io/env-a": "2"}
        wait_until(lambda: len(writes_of(apiserver, name)) == 2, 10, "one update")
        obj = read(apiserver, name)
        assert obj is not None
        assert obj["spec"]["features"]["attributes"]["env.fake"]["elements"] == {
            "feature.node.kubernetes.io/env-a": "2"}
    finally:
        running.stop()


def test_a_deleted_object_is_put_back_and_others_metadata_is_kept(apiserver, nfd_crds,
                                                                 tmp_path):
    name = "out-node-2"
    # Five minutes between passes: only the watch can put it back in time.
    agent = output_agent(apiserver, name, Switchable("env", {"k": "v"}), tmp_path,
                         interval=300.0)
    running = start(agent)  # type: ignore[arg-type]
    try:
        wait_until(lambda: read(apiserver, name) is not None, 10, "the NodeFeature")
        with apiserver.admin_client() as api:
            custom(api).patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "nodefeatures", name,
                {"metadata": {"labels": {"team": "infra"}}})
            time.sleep(1.5)
            obj = read(apiserver, name)
            assert obj is not None and obj["metadata"]["labels"]["team"] == "infra"
            custom(api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                        "nodefeatures", name)
        started = time.monotonic()
        wait_until(lambda: read(apiserver, name) is not None, 5, "the object put back")
        assert time.monotonic() - started < 2.0
    finally:
        running.stop()


def test_two_writers_of_one_object_do_not_fight_at_full_speed(apiserver, nfd_crds, tmp_path):
    # Two agents for one node with different results (a second DaemonSet while one is
    # replaced): each rewrite by one pokes the other through its watch. Without a backoff
    # they would write as fast as the server answers.
    name = "out-node-3"
    interval = 30.0
    one = output_agent(apiserver, name, Switchable("env", {"k": "one"}), tmp_path / "one",
                       interval=interval, backoff_cap=interval)
    two = output_agent(apiserver, name, Switchable("env", {"k": "two"}), tmp_path / "two",
                       interval=interval, backoff_cap=interval)
    running = [start(one), start(two)]  # type: ignore[arg-type]
    try:
        wait_until(lambda: read(apiserver, name) is not None, 10, "the NodeFeature")
        time.sleep(6.0)
        # Backing off from 1 s doubling: a handful of rewrites each, not hundreds.
        assert len(writes_of(apiserver, name)) <= 12, len(writes_of(apiserver, name))
    finally:
        for agent in running:
            agent.stop()


def test_an_object_rewritten_as_fast_as_possible_costs_a_bounded_number_of_passes(
        apiserver, nfd_crds, tmp_path):
    name = "out-node-4"
    agent = output_agent(apiserver, name, Switchable("env", {"k": "v"}), tmp_path,
                         interval=300.0)
    passes = [0]
    discover = agent.discover

    def counted() -> Any:
        passes[0] += 1
        return discover()

    agent.discover = counted  # type: ignore[method-assign]
    running = start(agent)  # type: ignore[arg-type]
    try:
        wait_until(lambda: read(apiserver, name) is not None, 10, "the NodeFeature")
        with apiserver.admin_client() as api:
            before, started, changes = passes[0], time.monotonic(), 0
            while time.monotonic() - started < 3.0:
                custom(api).patch_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "nodefeatures", name,
                    {"metadata": {"labels": {"churn": str(changes)}}})
                changes += 1
        assert changes > 100, changes
        assert passes[0] - before <= 3.0 / POKE_SPACING + 5, (passes[0] - before, changes)
    finally:
        running.stop()
