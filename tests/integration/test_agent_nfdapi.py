"""NFD's API on the node against the real API server: NodeFeatureRules and NodeFeatures
reach the Node through the agent's watches, leave only on evidence, and cost nothing
while stable."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from agentkit import (
    SA_USER,
    Switchable,
    acting_user,
    events_about,
    labels_of,
    owned_on,
    start,
    wait_until,
    writes_to,
)
from nfdkit import (
    GROUP,
    VERSION,
    custom,
    delete_rules,
    nfd_agent,
    node_feature,
    replace_rules,
    rule_object,
)

from nodefeatures.cluster.agent import MAX_OBJECT_EVENTS, POKE_SPACING
from nodefeatures.cluster.kube import ObjectApi
from nodefeatures.cluster.nfdapi import node_features_kind
from nodefeatures.cluster.objectcache import ObjectCache, wait_all

F = "feature.node.kubernetes.io/"


def agent_requests(apiserver: Any) -> list[dict[str, Any]]:
    """Every audited request of the agents' ServiceAccount: Nodes and NFD's objects."""
    return [e for e in apiserver.audit_events() if acting_user(e) == SA_USER]


def always(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A rule with no match terms: it always matches."""
    return {"name": name, "labels": labels}


def on_fake(name: str, value: str, labels: dict[str, str]) -> dict[str, Any]:
    """A rule on the test source's `env.fake` attribute `gpu`."""
    return {"name": name, "labels": labels, "matchFeatures": [
        {"feature": "env.fake", "matchExpressions": {"gpu": {"op": "In", "value": [value]}}}]}


def timed(predicate: Any, what: str, timeout: float = 5.0) -> float:
    started = time.monotonic()
    wait_until(predicate, timeout, what, every=0.02)
    return time.monotonic() - started


def test_a_rule_created_changed_and_deleted_reaches_the_node_within_2_s(
        apiserver, nfd_crds, node, tmp_path):
    source = Switchable("env", {"gpu": "a100"})
    agent, objects = nfd_agent(apiserver, node, [source], tmp_path, interval=300.0)
    running = start(agent)
    try:
        wait_until(lambda: agent.ready, 10, "the first pass")
        key = F + f"nfr-{node[-6:]}"
        with rule_object(apiserver, [always("r1", {key: "one"})]) as name:
            created = timed(lambda: labels_of(apiserver, node).get(key) == "one", "created")
            assert owned_on(apiserver, node)[key] == f"nodefeaturerule/{name}"
            replace_rules(apiserver, name, [always("r1", {key: "two"})])
            changed = timed(lambda: labels_of(apiserver, node).get(key) == "two", "changed")
            delete_rules(apiserver, name)
            deleted = timed(lambda: key not in labels_of(apiserver, node), "deleted")
        # The interval is 5 minutes: only the watch can have brought these.
        assert max(created, changed, deleted) < 2.0, (created, changed, deleted)
        assert key not in owned_on(apiserver, node)
    finally:
        running.stop()
        objects.stop()


def test_a_rule_on_a_discovered_feature_follows_the_feature(apiserver, nfd_crds, node,
                                                          tmp_path):
    source = Switchable("env", {"gpu": "a100"})
    agent, objects = nfd_agent(apiserver, node, [source], tmp_path)
    key = F + f"fast-gpu-{node[-6:]}"
    with rule_object(apiserver, [on_fake("fast", "a100", {key: "true"})]):
        running = start(agent)
        try:
            wait_until(lambda: labels_of(apiserver, node).get(key) == "true", 10, "the label")
            source.current = {"gpu": "t4"}  # the next pass no longer matches
            wait_until(lambda: key not in labels_of(apiserver, node), 10, "its removal")
        finally:
            running.stop()
            objects.stop()


def test_a_rule_object_that_stops_evaluating_keeps_its_labels_and_is_reported(
        apiserver, nfd_crds, node, tmp_path):
    source = Switchable("env", {"gpu": "a100"})
    agent, objects = nfd_agent(apiserver, node, [source], tmp_path)
    key = F + f"kept-{node[-6:]}"
    with rule_object(apiserver, [always("ok", {key: "true"})]) as name:
        running = start(agent)
        try:
            wait_until(lambda: labels_of(apiserver, node).get(key) == "true", 10, "the label")
            # Valid to the CRD's schema, but its template does not parse.
            replace_rules(apiserver, name, [{"name": "broken", "labelsTemplate": "{{ .x "}])
            wait_until(lambda: any(e.reason == "NodeFeatureRuleProblem"
                                   for e in events_about(apiserver, node)), 10, "the Event")
            time.sleep(1.5)  # more passes: still there
            assert labels_of(apiserver, node).get(key) == "true"
            assert owned_on(apiserver, node)[key] == f"nodefeaturerule/{name}"
        finally:
            running.stop()
            objects.stop()


def test_stable_rules_cost_no_request_and_a_restart_writes_nothing(apiserver, nfd_crds, node,
                                                                  tmp_path):
    source = Switchable("env", {"gpu": "a100"})
    key = F + f"stable-{node[-6:]}"
    with rule_object(apiserver, [always("s", {key: "true"})]):
        agent, objects = nfd_agent(apiserver, node, [source], tmp_path)
        running = start(agent)
        try:
            wait_until(lambda: labels_of(apiserver, node).get(key) == "true", 10, "the label")
            time.sleep(1.0)
            before = {e["auditID"] for e in agent_requests(apiserver)}
            time.sleep(3.0)  # three passes
            later = [e for e in agent_requests(apiserver)
                     if e["auditID"] not in before and e["verb"] != "watch"]
            assert later == [], [(e["verb"], e["requestURI"]) for e in later]
        finally:
            running.stop()
            objects.stop()
        writes = len(writes_to(apiserver, node, SA_USER))
        # A new process: it reads the Node, the rules, and finds nothing to do.
        agent, objects = nfd_agent(apiserver, node, [source], tmp_path)
        running = start(agent)
        try:
            wait_until(lambda: agent.ready, 10, "the restarted agent's first pass")
            time.sleep(1.5)
            assert len(writes_to(apiserver, node, SA_USER)) == writes
            assert labels_of(apiserver, node).get(key) == "true"
        finally:
            running.stop()
            objects.stop()


def test_gfd_style_node_feature_labels_are_published_and_leave_with_their_object(
        apiserver, nfd_crds, node, tmp_path):
    agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path)
    gfd = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8"}
    vendor = {"feature.node.kubernetes.io/vendor-x": "1"}
    running = start(agent)
    try:
        wait_until(lambda: agent.ready, 10, "the first pass")
        with node_feature(apiserver, "gpu-operator", f"nvidia-features-for-{node}", node, gfd):
            with node_feature(apiserver, "vendor", f"vendor-{node}", node, vendor):
                wait_until(lambda: labels_of(apiserver, node).get("nvidia.com/gpu.count") == "8"
                           and "feature.node.kubernetes.io/vendor-x" in labels_of(apiserver, node),
                           10, "both objects' labels")
                owners = owned_on(apiserver, node)
                assert owners["nvidia.com/gpu.product"] == \
                    f"nodefeature/gpu-operator/nvidia-features-for-{node}"
            # Deleting one object removes exactly its labels.
            wait_until(lambda: "feature.node.kubernetes.io/vendor-x" not in
                       labels_of(apiserver, node), 10, "the vendor label's removal")
            assert labels_of(apiserver, node).get("nvidia.com/gpu.count") == "8"
        wait_until(lambda: "nvidia.com/gpu.count" not in labels_of(apiserver, node), 10,
                   "the GFD labels' removal")
    finally:
        running.stop()
        objects.stop()


def test_node_feature_features_feed_rules_and_other_nodes_objects_do_not(
        apiserver, nfd_crds, node, tmp_path):
    agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path)
    key = F + f"from-nf-{node[-6:]}"
    rule = {"name": "vendor", "labels": {key: "yes"}, "matchFeatures": [
        {"feature": "vendor.accel", "matchExpressions": {"model": {"op": "In",
                                                                  "value": ["x1"]}}}]}
    features = {"attributes": {"vendor.accel": {"elements": {"model": "x1"}}}}
    running = start(agent)
    try:
        with rule_object(apiserver, [rule]):
            # The same features for another node give this one nothing.
            with node_feature(apiserver, "vendor", f"other-{node}", "some-other-node",
                              {"vendor.io/other": "1"}, features):
                wait_until(lambda: agent.ready, 10, "the first pass")
                time.sleep(1.5)
                assert key not in labels_of(apiserver, node)
                assert "vendor.io/other" not in labels_of(apiserver, node)
            with node_feature(apiserver, "vendor", f"accel-{node}", node, {}, features):
                wait_until(lambda: labels_of(apiserver, node).get(key) == "yes", 10,
                           "the rule over the NodeFeature's features")
            wait_until(lambda: key not in labels_of(apiserver, node), 10,
                       "the rule's label to go with the features")
    finally:
        running.stop()
        objects.stop()


def test_without_permission_to_list_rules_nothing_is_added_or_removed(
        apiserver, nfd_crds, node, tmp_path):
    key = F + f"denied-{node[-6:]}"
    with rule_object(apiserver, [always("d", {key: "true"})]) as name:
        agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path)
        running = start(agent)
        try:
            wait_until(lambda: labels_of(apiserver, node).get(key) == "true", 10, "the label")
        finally:
            running.stop()
            objects.stop()
        # Restarted with a token that may not list rules: the label is no one's to remove.
        agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path,
                                   objects_user="system:serviceaccount:nobody:nobody")
        running = start(agent)
        try:
            wait_until(lambda: agent.ready, 10, "the first pass")
            assert objects.rules is not None and objects.rules.known is False
            time.sleep(1.5)
            assert labels_of(apiserver, node).get(key) == "true"
            assert owned_on(apiserver, node)[key] == f"nodefeaturerule/{name}"
        finally:
            running.stop()
            objects.stop()


def test_a_rule_over_node_features_that_cannot_be_listed_keeps_its_label(
        apiserver, nfd_crds, node, tmp_path):
    key = F + f"over-nf-{node[-6:]}"
    rule = {"name": "vendor", "labels": {key: "yes"}, "matchFeatures": [
        {"feature": "vendor.accel", "matchExpressions": {"model": {"op": "In",
                                                                  "value": ["x1"]}}}]}
    features = {"attributes": {"vendor.accel": {"elements": {"model": "x1"}}}}
    with rule_object(apiserver, [rule]) as name, \
            node_feature(apiserver, "vendor", f"accel-{node}", node, {}, features):
        agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path,
                                   objects_user=None)
        running = start(agent)
        try:
            wait_until(lambda: labels_of(apiserver, node).get(key) == "yes", 10, "the label")
        finally:
            running.stop()
            objects.stop()
        # Restarted where the rules can be listed but the NodeFeatures cannot: the rule
        # runs without the features it reads, which is no evidence that they are gone.
        agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path,
                                   objects_user=None)
        objects.stop()
        denied = ObjectApi(apiserver.client_as("system:serviceaccount:nobody:nobody"),
                           node_features_kind(node))
        objects.features = ObjectCache(denied, agent.poke)
        objects.rules = ObjectCache(objects.rules.api, agent.poke)
        objects.start()
        wait_all(objects.caches, 10.0)
        running = start(agent)
        try:
            wait_until(lambda: agent.ready, 10, "the first pass")
            assert objects.rules.known and not objects.features.known
            time.sleep(1.5)
            assert labels_of(apiserver, node).get(key) == "yes"
            assert owned_on(apiserver, node)[key] == f"nodefeaturerule/{name}"
        finally:
            running.stop()
            objects.stop()


def test_a_node_feature_rewritten_as_fast_as_possible_costs_a_bounded_number_of_passes(
        apiserver, nfd_crds, node, tmp_path):
    # Anyone who may write a NodeFeature for this node in some namespace can change it
    # hundreds of times a second; each change must not cost a discovery pass of its own.
    agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path,
                               interval=300.0, objects_user=None)
    passes = [0]
    discover = agent.discover

    def counted(*args: Any) -> Any:
        passes[0] += 1
        return discover(*args)

    agent.discover = counted  # type: ignore[method-assign]
    key = F + f"churn-{node[-6:]}"
    running = start(agent)
    try:
        wait_until(lambda: agent.ready, 10, "the first pass")
        with node_feature(apiserver, "churn", f"churn-{node}", node, {}) as name, \
                apiserver.admin_client() as api:
            before, started, changes = passes[0], time.monotonic(), 0
            while time.monotonic() - started < 3.0:
                custom(api).patch_namespaced_custom_object(
                    GROUP, VERSION, "churn", "nodefeatures", name,
                    {"spec": {"labels": {key: str(changes)}}})
                changes += 1
            # The last value still arrives at once.
            wait_until(lambda: labels_of(apiserver, node).get(key) == str(changes - 1), 2,
                       "the last change")
            spent = passes[0] - before
            assert changes > 100, changes
            assert spent <= 3.0 / POKE_SPACING + 5, (spent, changes)
    finally:
        running.stop()
        objects.stop()


def test_many_broken_rule_objects_cost_a_bounded_number_of_events(
        apiserver, nfd_crds, node, tmp_path):
    # Every agent on every node would otherwise post one Event per broken object.
    agent, objects = nfd_agent(apiserver, node, [Switchable("env", {})], tmp_path,
                               objects_user=None)
    broken = [{"name": "broken", "labelsTemplate": "{{ .x "}]
    tag = node[-6:]
    with contextlib.ExitStack() as stack:
        for index in range(3 * MAX_OBJECT_EVENTS):
            stack.enter_context(rule_object(apiserver, broken, f"broken-{tag}-{index:02d}"))
        running = start(agent)
        try:
            wait_until(lambda: agent.ready, 10, "the first pass")
            time.sleep(2.0)
            events = [e for e in events_about(apiserver, node)
                      if e.reason == "NodeFeatureRuleProblem"]
            assert len(events) == MAX_OBJECT_EVENTS + 1, [e.message for e in events]
            assert any(f"{2 * MAX_OBJECT_EVENTS} more" in e.message for e in events)
        finally:
            running.stop()
            objects.stop()
