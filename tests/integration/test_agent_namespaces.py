"""The label namespaces setting as the agent reads it from its ConfigMap on the real API
server: what it publishes follows the ConfigMap, a bad version is rejected whole, and
nothing is written before a valid one is known."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from agentkit import (
    FAST,
    Switchable,
    discoverer,
    events_about,
    labels_of,
    owned_on,
    put_configmap,
    start,
    wait_until,
    writes_to,
)

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.cluster.namespaces import LabelNamespacesSetting

F = "feature.node.kubernetes.io/"
NAMESPACE = "nodefeatures"


@contextlib.contextmanager
def setting_agent(apiserver: Any, node: str, source: Switchable, tmp_path: Any,
                  configmap: str) -> Iterator[tuple[Agent, LabelNamespacesSetting]]:
    # Admin reads the ConfigMap here: the agent's RBAC for it is tested with the deploy.
    with apiserver.admin_client() as admin:
        box: list[Agent] = []
        setting = LabelNamespacesSetting(admin, NAMESPACE, configmap, (),
                                         lambda: box[0].poke() if box else None)
        agent = Agent(NodeApi(apiserver.admin_client(), node), discoverer([source], tmp_path),
                      [source.name], Options(node=node, **{**FAST, "allow_unconfined": True}),
                      scope=setting)
        setting.post_event = agent.post_event
        box.append(agent)
        setting.start()
        running = start(agent)
        try:
            yield agent, setting
        finally:
            running.stop()
            setting.stop()


def test_published_namespaces_follow_the_configmap(apiserver, node, tmp_path):
    name = f"ns-{uuid.uuid4().hex[:8]}"
    put_configmap(apiserver, name, {"denyLabelNs": "k8s.io,*.k8s.io", "extraLabelNs": ""})
    source = Switchable("local", {"vendor.io/accel": "x1", F + "plain": "1",
                                  "node-role.kubernetes.io/gpu": "", "tools.k8s.io/x": "1"})
    with setting_agent(apiserver, node, source, tmp_path, name):
        wait_until(lambda: labels_of(apiserver, node).get("vendor.io/accel") == "x1", 10,
                   "a vendor namespace label, published by default")
        labels = labels_of(apiserver, node)
        assert labels.get(F + "plain") == "1"
        assert "node-role.kubernetes.io/gpu" not in labels  # always denied
        assert "tools.k8s.io/x" not in labels  # denied by the default denyLabelNs
        # Re-allow k8s.io's subdomain, deny vendor.io: the agent follows at once.
        put_configmap(apiserver, name, {"denyLabelNs": "vendor.io,k8s.io",
                                        "extraLabelNs": "tools.k8s.io"})
        wait_until(lambda: labels_of(apiserver, node).get("tools.k8s.io/x") == "1", 5,
                   "the re-allowed namespace")
        # A namespace that is no longer allowed is not the agent's to touch: released.
        wait_until(lambda: "vendor.io/accel" not in owned_on(apiserver, node), 5,
                   "vendor.io released from the ledger")
        assert labels_of(apiserver, node).get("vendor.io/accel") == "x1"


def test_nothing_is_written_until_the_setting_exists(apiserver, node, tmp_path):
    name = f"ns-{uuid.uuid4().hex[:8]}"
    source = Switchable("local", {F + "waiting": "1"})
    with setting_agent(apiserver, node, source, tmp_path, name) as (agent, _):
        time.sleep(2.0)
        assert writes_to(apiserver, node) == []
        why = agent.readiness()
        assert isinstance(why, str) and "does not exist" in why
        put_configmap(apiserver, name, {"denyLabelNs": "", "extraLabelNs": ""})
        wait_until(lambda: labels_of(apiserver, node).get(F + "waiting") == "1", 5,
                   "the first write once the setting exists")
        # Ready once the agent has the reply to that write, a moment after the server.
        wait_until(lambda: agent.readiness() is True, 5, "readiness")


def test_an_invalid_setting_is_rejected_whole_and_the_previous_stays(apiserver, node,
                                                                    tmp_path):
    name = f"ns-{uuid.uuid4().hex[:8]}"
    put_configmap(apiserver, name, {"denyLabelNs": "", "extraLabelNs": ""})
    source = Switchable("local", {"vendor.io/accel": "x1"})
    with setting_agent(apiserver, node, source, tmp_path, name) as (_, setting):
        wait_until(lambda: labels_of(apiserver, node).get("vendor.io/accel") == "x1", 10,
                   "the label")
        # One good entry and one bad one: rejected as a whole, vendor.io stays allowed.
        put_configmap(apiserver, name, {"denyLabelNs": "vendor.io,not a namespace!",
                                        "extraLabelNs": ""})
        wait_until(lambda: any(e.reason == "LabelNamespacesRejected"
                               for e in events_about(apiserver, node)), 10, "the Event")
        assert setting.rejected is not None
        time.sleep(1.5)
        assert "vendor.io/accel" in owned_on(apiserver, node)
