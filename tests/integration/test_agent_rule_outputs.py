"""NodeFeatureRule annotations, taints and extended resources on the real API server:
each kind reaches the Node only when the label namespaces setting switches it on, sits
beside everybody else's, costs no write while stable, and leaves on evidence: the object
deleted, or the kind switched off."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from agentkit import (
    FAST,
    SA_NAME,
    SA_NAMESPACE,
    SA_USER,
    Switchable,
    acting_user,
    discoverer,
    events_about,
    label_namespaces_configmap,
    labels_of,
    patch_node,
    policed_node,
    put_configmap,
    read_node,
    shipped_policy_as,
    start,
    wait_until,
    writes_to,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nfdkit import delete_rules, replace_rules, rule_object

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.cluster.namespaces import LabelNamespacesSetting
from nodefeatures.cluster.nfdapi import ClusterObjects
from nodefeatures.cluster.objectcache import wait_all

F = "feature.node.kubernetes.io/"
NAMESPACE = "nodefeatures"
ALL_ON = {"enableAnnotations": "true", "enableTaints": "true",
          "enableExtendedResources": "true"}
FOREIGN_TAINT = {"key": "dedicated", "value": "infra", "effect": "NoSchedule"}
FOREIGN_RESOURCE = {"example.com/dongle": "3"}


@contextlib.contextmanager
def outputs_agent(apiserver: Any, node: str, tmp_path: Any, data: dict[str, str] | None,
                  configmap: str | None = None, own: Any = None,
                  **options: Any) -> Iterator[tuple[Agent, str]]:
    """An agent following NFD's objects and a ConfigMap of the setting: `configmap` (made
    here with `data` when not named; deleted afterwards). It writes and reads NFD's
    objects with `own` (the agent's token), else as an administrator; the setting is
    always read as an administrator, since the agent's RBAC reads only the shipped
    ConfigMap."""
    made = configmap is None
    configmap = configmap or f"outputs-{uuid.uuid4().hex[:8]}"
    if data is not None:
        put_configmap(apiserver, configmap, data)
    with apiserver.admin_client() as admin:
        writer = own if own is not None else apiserver.admin_client()
        box: list[Agent] = []
        poke = (lambda: box[0].refresh() if box else None)  # noqa: E731
        setting = LabelNamespacesSetting(admin, NAMESPACE, configmap, (), poke)
        objects = ClusterObjects(writer, node, NAMESPACE, poke)
        source = Switchable("env", {"gpu": "a100"})
        settings = {**FAST, "allow_unconfined": own is None, **options}
        agent = Agent(NodeApi(writer, node), discoverer([source], tmp_path), [source.name],
                      Options(node=node, **settings), extend=objects.extend, scope=setting)
        setting.post_event = agent.post_event
        box.append(agent)
        setting.start()
        objects.start()
        wait_all([*objects.caches, *setting.caches], 10.0)
        running = start(agent)
        try:
            yield agent, configmap
        finally:
            running.stop()
            objects.stop()
            setting.stop()
            if made:
                with contextlib.suppress(ApiException):
                    client.CoreV1Api(admin).delete_namespaced_config_map(configmap, NAMESPACE)


def outputs_rule(suffix: str, value: str = "a") -> dict[str, Any]:
    return {"name": "gpu-node", "labels": {F + f"gpu-{suffix}": "true"},
            "annotations": {f"gpu-note-{suffix}": f"fits: {value}, ok"},
            "taints": [{"key": f"vendor.io/gpu-{suffix}", "value": value,
                        "effect": "NoSchedule"}],
            "extendedResources": {f"vendor.io/slots-{suffix}": "1000"}}


def state(apiserver: Any, node: str, suffix: str) -> dict[str, Any]:
    found = read_node(apiserver, node)
    meta, spec, status = found["metadata"], found.get("spec") or {}, found.get("status") or {}
    return {
        "label": (meta.get("labels") or {}).get(F + f"gpu-{suffix}"),
        "annotation": (meta.get("annotations") or {}).get(F + f"gpu-note-{suffix}"),
        "taints": spec.get("taints") or [],
        "capacity": (status.get("capacity") or {}).get(f"vendor.io/slots-{suffix}"),
        "allocatable": (status.get("allocatable") or {}).get(f"vendor.io/slots-{suffix}"),
        "ledgers": {k: json.loads(v) for k, v in (meta.get("annotations") or {}).items()
                    if k.startswith("nodefeatures.dev/") and k != "nodefeatures.dev/labels"},
    }


def foreign(apiserver: Any, node: str) -> None:
    """Another writer's taint and extended resource, there before the agent."""
    patch_node(apiserver, node, {"spec": {"taints": [FOREIGN_TAINT]}})
    with apiserver.admin_client() as api:
        client.CoreV1Api(api).patch_node_status(node, {"status": {
            "capacity": FOREIGN_RESOURCE, "allocatable": FOREIGN_RESOURCE}})


def test_switched_on_each_kind_reaches_the_node_beside_the_others_and_leaves_with_its_object(
        apiserver, nfd_crds, node, tmp_path):
    suffix = node[-6:]
    foreign(apiserver, node)
    with outputs_agent(apiserver, node, tmp_path, ALL_ON) as (agent, _):
        wait_until(lambda: agent.ready, 10, "the first pass")
        with rule_object(apiserver, [outputs_rule(suffix)]) as name:
            wait_until(lambda: state(apiserver, node, suffix)["capacity"] is not None, 10,
                       "the extended resource")
            seen = state(apiserver, node, suffix)
            assert seen["label"] == "true"
            assert seen["annotation"] == "fits: a, ok"
            assert seen["taints"] == [FOREIGN_TAINT, {"key": f"vendor.io/gpu-{suffix}",
                                                      "value": "a", "effect": "NoSchedule"}]
            # Stored in the server's own spelling; the same quantity is no change.
            assert seen["capacity"] == seen["allocatable"] == "1k"
            origin = f"nodefeaturerule/{name}"
            assert seen["ledgers"] == {
                "nodefeatures.dev/annotations": {origin: {F: [f"gpu-note-{suffix}"]}},
                "nodefeatures.dev/taints": {origin: {"vendor.io/": [
                    f"gpu-{suffix}:NoSchedule"]}},
                "nodefeatures.dev/extended-resources": {origin: {"vendor.io/": [
                    f"slots-{suffix}"]}},
            }
            # Stable: passes every second, and not one write.
            before = len(writes_to(apiserver, node))
            time.sleep(3.0)
            assert len(writes_to(apiserver, node)) == before
            delete_rules(apiserver, name)
            wait_until(lambda: state(apiserver, node, suffix)["capacity"] is None
                       and not state(apiserver, node, suffix)["ledgers"], 10, "their removal")
        after = state(apiserver, node, suffix)
        assert after["label"] is None and after["annotation"] is None
        assert after["taints"] == [FOREIGN_TAINT]
        status = read_node(apiserver, node)["status"]
        assert status["capacity"]["example.com/dongle"] == "3"
        assert status["allocatable"]["example.com/dongle"] == "3"


def test_off_by_default_only_the_labels_are_published_and_the_rest_is_reported(
        apiserver, nfd_crds, node, tmp_path):
    suffix = node[-6:]
    # The API server's TaintNodesByCondition put node.kubernetes.io/not-ready there.
    initial = state(apiserver, node, suffix)["taints"]
    assert initial, "a new Node without the admission plugin's taint"
    with outputs_agent(apiserver, node, tmp_path, {}) as (_agent, _), \
            rule_object(apiserver, [outputs_rule(suffix)]):
        wait_until(lambda: labels_of(apiserver, node).get(F + f"gpu-{suffix}") == "true", 10,
                   "the label")
        wait_until(lambda: [e for e in events_about(apiserver, node)
                            if e.reason == "NodeFeatureRuleOutputsOff"], 10, "the report")
        seen = state(apiserver, node, suffix)
        assert (seen["annotation"], seen["taints"], seen["capacity"], seen["ledgers"]) == (
            None, initial, None, {})
        messages = {e.message for e in events_about(apiserver, node)
                    if e.reason == "NodeFeatureRuleOutputsOff"}
        assert any("enableTaints" in m for m in messages), messages


def test_switching_a_kind_off_removes_what_the_agent_put_there(apiserver, nfd_crds, node,
                                                             tmp_path):
    suffix = node[-6:]
    foreign(apiserver, node)
    with outputs_agent(apiserver, node, tmp_path, ALL_ON) as (_agent, configmap), \
            rule_object(apiserver, [outputs_rule(suffix)]):
        wait_until(lambda: len(state(apiserver, node, suffix)["taints"]) == 2, 10, "the taint")
        put_configmap(apiserver, configmap, {**ALL_ON, "enableTaints": "false"})
        wait_until(lambda: state(apiserver, node, suffix)["taints"] == [FOREIGN_TAINT], 10,
                   "the taint's removal")
        seen = state(apiserver, node, suffix)
        assert "nodefeatures.dev/taints" not in seen["ledgers"]
        # The other kinds stay.
        assert seen["annotation"] == "fits: a, ok" and seen["capacity"] == "1k"


def test_a_changed_rule_changes_the_taint_in_its_place(apiserver, nfd_crds, node, tmp_path):
    suffix = node[-6:]
    foreign(apiserver, node)
    with outputs_agent(apiserver, node, tmp_path, ALL_ON), \
            rule_object(apiserver, [outputs_rule(suffix, "a")]) as name:
        wait_until(lambda: len(state(apiserver, node, suffix)["taints"]) == 2, 10, "the taint")
        patch_node(apiserver, node, {"spec": {"taints": [
            *state(apiserver, node, suffix)["taints"],
            {"key": "late", "effect": "PreferNoSchedule"}]}})
        replace_rules(apiserver, name, [outputs_rule(suffix, "b")])
        wait_until(lambda: state(apiserver, node, suffix)["annotation"] == "fits: b, ok", 10,
                   "the change")
        assert state(apiserver, node, suffix)["taints"] == [
            FOREIGN_TAINT, {"key": f"vendor.io/gpu-{suffix}", "value": "b",
                            "effect": "NoSchedule"},
            {"key": "late", "effect": "PreferNoSchedule"}]


def test_an_extended_resource_the_rules_pass_is_stored_as_that_amount(apiserver, node):
    # What the rule check lets through must come back from the API server as the same
    # quantity (in its own spelling), or the agent would rewrite it every pass; what the
    # server refuses must not get through, or the status patch fails with all the others.
    from nodefeatures.discovery.quantity import same
    from nodefeatures.discovery.rules.cluster import evaluate, load
    from nodefeatures.discovery.rules.features import FeatureSet

    values = ["1000", "1e3", "2Gi", "1.5", ".5", "100m", "0.0015", "1n", "1e-9",
              "1.23456789", "8Ei", "10000000000000000000000", "1e100"]
    accepted = []
    with apiserver.admin_client() as api:
        core = client.CoreV1Api(api)
        for name in ("vendor.io/r", F + "r"):
            for value in values:
                obj = load({"metadata": {"name": "r"}, "spec": {"rules": [
                    {"name": "r", "extendedResources": {name: value}}]}})
                [outcome] = evaluate([obj], FeatureSet())
                if name not in outcome.outputs.get("extendedResources", {}):
                    continue
                accepted.append((name, value))
                body = {"status": {"capacity": {name: value}, "allocatable": {name: value}}}
                try:
                    stored = core.patch_node_status(node, body).status
                except ApiException as error:
                    raise AssertionError(f"{name}={value}: {error.status} {error.body}") from None
                for field in (stored.capacity, stored.allocatable):
                    assert same(field[name], value), (name, value, field[name])
    assert {("vendor.io/r", "1000"), ("vendor.io/r", "2Gi"), (F + "r", "1.5"),
            (F + "r", "100m")} <= set(accepted)


# -- under the shipped policies, with the agent's own node-bound token -----------------

POLICY = "nodefeatures-own-node-rule-outputs"
SELECTOR = "nodefeatures.dev/test-rule-outputs"
PARAMS = "rule-outputs-under-test"


@pytest.fixture(scope="module")
def policy(apiserver: Any, rbac: str) -> Iterator[str]:
    with shipped_policy_as(apiserver, POLICY, SELECTOR, params=PARAMS) as name:
        yield name


def test_the_agents_own_token_writes_each_kind_and_the_policies_admit_exactly_that(
        apiserver, nfd_crds, policy, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    put_configmap(apiserver, PARAMS, {**label_namespaces_configmap()["data"], **ALL_ON})
    with policed_node(apiserver, policy, SELECTOR, f"outputs-{suffix}") as node:
        foreign(apiserver, node)
        token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME, node=node)
        own = apiserver.client_for_token(token)
        # Confinement is proven by the renamed policy's denial; its binding covers only
        # this module's Nodes on purpose, so its reach is not checked here.
        with outputs_agent(apiserver, node, tmp_path, None, PARAMS, own,
                           confinement_policy=POLICY, confinement_reach=False):
            with rule_object(apiserver, [outputs_rule(suffix)]):
                wait_until(lambda: state(apiserver, node, suffix)["capacity"] is not None
                           and state(apiserver, node, suffix)["annotation"] is not None
                           and len(state(apiserver, node, suffix)["taints"]) == 2, 15,
                           "every kind, written with the agent's own token")
                put_configmap(apiserver, PARAMS, {**label_namespaces_configmap()["data"],
                                                  **ALL_ON, "enableTaints": "false"})
                wait_until(lambda: state(apiserver, node, suffix)["taints"]
                           == [FOREIGN_TAINT], 30, "the taint's removal, admitted")
            ours = [e for e in writes_to(apiserver, node) if acting_user(e) == SA_USER]
            refused = [e for e in ours if e.get("responseStatus", {}).get("code", 200)
                       >= 400 and not e.get("requestURI", "").count("dryRun")]
            assert ours and refused == [], refused
            # The extended resources went through the status subresource.
            assert any(e.get("objectRef", {}).get("subresource") == "status"
                       for e in ours)
        own.close()
