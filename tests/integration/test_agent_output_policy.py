"""The NodeFeatureRule outputs beyond labels (annotations, taints, extended resources),
enforced by the real API server against the agent's real, node-bound token: the own-node
policy's fixed rules (own Node, keys outside kubernetes.io and nodefeatures.dev, value
and ledger sizes, every other taint, capacity and condition as it was), and the label
namespaces policy's setting (denyLabelNs, extraLabelNs and the three switches, from the
ConfigMap), which decides every key exactly as nodefeatures/discovery/namespaces.py.

Both policies run as renamed copies bound to this module's Nodes and to this module's own
copy of the ConfigMap. The tests share one Node and change the setting as little as they
can: the machine running them is slow, and every edit takes the server a moment to see.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from agentkit import (
    SA_NAME,
    SA_NAMESPACE,
    annotations_of,
    patch_node,
    policed_node,
    put_configmap,
    read_node,
    shipped_policy_as,
    wait_until,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nodefeatures.discovery.namespaces import (
    ANNOTATIONS,
    EXTENDED_RESOURCES,
    TAINTS,
    LabelNamespaces,
)

pytestmark = pytest.mark.integration

POLICY = "nodefeatures-own-node-outputs"
SELECTOR = "nodefeatures.dev/test-output-policy"
PARAMS = "output-policy-under-test"  # this module's copy of the ConfigMap
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
FLIP_WAIT_S = 30.0
KINDS = (ANNOTATIONS, TAINTS, EXTENDED_RESOURCES)
LEDGERS = {ANNOTATIONS: "nodefeatures.dev/annotations", TAINTS: "nodefeatures.dev/taints",
           EXTENDED_RESOURCES: "nodefeatures.dev/extended-resources"}
ALL_ON = {"enableAnnotations": "true", "enableTaints": "true", "enableExtendedResources": "true"}
# Every output off: one switch absent, the others set to what the agent rejects
# (namespaces.py: exactly "true" or "false"), which the policy must take for off.
ALL_OFF = {"enableAnnotations": "True", "enableTaints": "yes"}
DEFAULT_DENY = "k8s.io,*.k8s.io"

# Keys each kind is tried with, under every setting below: NFD's own namespace and a
# look-alike, the reserved ones, the ledgers', vendors', and those the settings deny.
KEYS = [
    "feature.node.kubernetes.io/x",
    "sub.feature.node.kubernetes.io/x",
    "xfeature.node.kubernetes.io/x",
    "feature.node.kubernetes.io.example.com/x",
    "profile.node.kubernetes.io/x",
    "kubernetes.io/x",
    "node.kubernetes.io/x",
    "nodefeatures.dev/x",
    "probe.nodefeatures.dev/x",
    "vendor.io/x",
    "a.vendor.io/x",
    "nvidia.com/gpu",
    "k8s.io/x",
    "a.k8s.io/x",
    "example.com/x",
    "a.example.com/x",
    "b.example.com/x",
]
# NFD's defaults; then a setting that denies vendors, one of them re-allowed by
# extraLabelNs, and tries to deny NFD's own namespace and lift a reserved one.
SETTINGS = {
    "defaults": {"denyLabelNs": DEFAULT_DENY, "extraLabelNs": ""},
    "denying": {"denyLabelNs": "vendor.io,*.example.com,*.feature.node.kubernetes.io,nvidia.com",
                "extraLabelNs": "a.example.com,node.kubernetes.io,nodefeatures.dev"},
}


class Setting:
    """This module's ConfigMap, edited as an administrator does, and waited for."""

    def __init__(self, apiserver: Any) -> None:
        self.apiserver = apiserver
        self.generation = itertools.count()
        self.current: dict[str, str] | None = None

    def put(self, api: client.CoreV1Api, node: str, data: dict[str, str]) -> None:
        """Replace the data with `data` plus a marker namespace in denyLabelNs, and wait
        until the policy denies the marker: then it reads this very version."""
        if data == self.current:
            return
        marker = f"gen{next(self.generation)}-{uuid.uuid4().hex[:6]}.marker.example"
        deny = ",".join(filter(None, [data.get("denyLabelNs", DEFAULT_DENY), marker]))
        put_configmap(self.apiserver, PARAMS, {**data, "denyLabelNs": deny})
        wait_until(lambda: refused(api, node, {"metadata": {"labels": {f"{marker}/x": "1"}}}),
                   FLIP_WAIT_S, f"the policy to read {data}", every=0.2)
        self.current = dict(data)

    def delete(self) -> None:
        with self.apiserver.admin_client() as admin:
            client.CoreV1Api(admin).delete_namespaced_config_map(PARAMS, SA_NAMESPACE)
        self.current = None


@pytest.fixture(scope="module")
def policy(apiserver: Any, rbac: str) -> Iterator[str]:
    with shipped_policy_as(apiserver, POLICY, SELECTOR, params=PARAMS) as name:
        yield name


@pytest.fixture(scope="module")
def node(apiserver: Any, policy: str) -> Iterator[str]:
    """One Node under the policies for the whole module."""
    with policed_node(apiserver, policy, SELECTOR, f"outputs-{uuid.uuid4().hex[:8]}") as name:
        yield name


@pytest.fixture(scope="module")
def token_api(apiserver: Any, node: str) -> Iterator[client.CoreV1Api]:
    """The agent's real ServiceAccount token, bound to `node` by the API server."""
    token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME, node=node)
    with apiserver.client_for_token(token) as api:
        yield client.CoreV1Api(api)


@pytest.fixture(scope="module")
def setting(apiserver: Any, policy: str) -> Setting:
    return Setting(apiserver)


def refused(api: client.CoreV1Api, node: str, body: dict[str, Any], status: bool = False,
            dry_run: bool = True, content_type: str = MERGE) -> str | None:
    """None when the policies admit this patch (of nodes, or of nodes/status), else the
    denial, which must come from one of them."""
    patch = api.patch_node_status if status else api.patch_node
    try:
        patch(node, body, _content_type=content_type, dry_run="All" if dry_run else None)
    except ApiException as error:
        message = str(json.loads(error.body)["message"])
        assert error.status == 403, message
        assert f"ValidatingAdmissionPolicy '{POLICY}" in message, message
        return message
    return None


def taints_of(apiserver: Any, node: str) -> list[dict[str, Any]]:
    return list(read_node(apiserver, node)["spec"].get("taints") or [])


def output_patch(kind: str, key: str, value: str | None,
                 taints: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(body, is a status patch) setting `key` to `value` (None: removing it) the way the
    agent writes that kind; `taints` are the Node's, which a merge patch sends whole."""
    if kind == ANNOTATIONS:
        return {"metadata": {"annotations": {key: value}}}, False
    if kind == TAINTS:
        kept = [t for t in taints if t["key"] != key]
        if value is not None:
            kept.append({"key": key, "value": value, "effect": "NoSchedule"})
        return {"spec": {"taints": kept}}, False
    return {"status": {"capacity": {key: value}, "allocatable": {key: value}}}, True


def value_for(kind: str) -> str:
    return "2" if kind == EXTENDED_RESOURCES else "v"


def write(apiserver: Any, api: client.CoreV1Api, node: str, kind: str, key: str,
          value: str | None, dry_run: bool = True) -> str | None:
    body, status = output_patch(kind, key, value, taints_of(apiserver, node))
    return refused(api, node, body, status=status, dry_run=dry_run)


def admin_write(apiserver: Any, node: str, kind: str, key: str, value: str | None) -> None:
    """Another writer (an administrator, a device plugin) sets or removes an output."""
    body, status = output_patch(kind, key, value, taints_of(apiserver, node))
    with apiserver.admin_client() as admin:
        core = client.CoreV1Api(admin)
        (core.patch_node_status if status else core.patch_node)(node, body, _content_type=MERGE)


def outputs_of(apiserver: Any, node: str, kind: str) -> dict[str, str]:
    found = read_node(apiserver, node)
    if kind == ANNOTATIONS:
        return dict(found["metadata"].get("annotations") or {})
    if kind == TAINTS:
        return {t["key"]: t.get("value", "") for t in found["spec"].get("taints") or []}
    return dict(found["status"].get("capacity") or {})


# ----- the namespaces: exactly as namespaces.py decides ------------------------------------


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_output_key_is_decided_as_the_agent_decides(apiserver, setting, token_api,
                                                          node, name: str) -> None:
    data = {**SETTINGS[name], **ALL_ON}
    setting.put(token_api, node, data)
    rules, problems = LabelNamespaces.from_data(data)
    assert problems == []
    taints = taints_of(apiserver, node)
    for kind in KINDS:
        expected = {key: rules.allows(key, kind) for key in KEYS}
        admitted = {}
        for key in KEYS:
            body, status = output_patch(kind, key, value_for(kind), taints)
            admitted[key] = refused(token_api, node, body, status=status) is None
        assert admitted == expected, kind
    # Not only agreement: the rule itself, for one kind, under each setting.
    allowed = {key for key in KEYS if rules.allows(key, TAINTS)}
    if name == "defaults":
        assert allowed == {"feature.node.kubernetes.io/x", "sub.feature.node.kubernetes.io/x",
                           "feature.node.kubernetes.io.example.com/x", "vendor.io/x",
                           "a.vendor.io/x", "nvidia.com/gpu", "example.com/x",
                           "a.example.com/x", "b.example.com/x"}
    else:  # vendors denied, a.example.com re-allowed; NFD's own cannot be denied
        assert allowed == {"feature.node.kubernetes.io/x", "sub.feature.node.kubernetes.io/x",
                           "a.vendor.io/x", "k8s.io/x", "a.k8s.io/x", "example.com/x",
                           "a.example.com/x"}


def test_a_key_without_a_namespace_is_never_an_output(apiserver, setting, token_api,
                                                      node) -> None:
    """namespaces.py reads a bare key as feature.node.kubernetes.io's, because the agent
    prefixes it so before writing; on the Node a bare key is somebody else's (cpu,
    memory, a `dedicated` taint)."""
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_ON})
    taints = taints_of(apiserver, node)
    for kind, key in ((ANNOTATIONS, "owner"), (TAINTS, "dedicated"),
                      (EXTENDED_RESOURCES, "cpu"), (EXTENDED_RESOURCES, "pods")):
        body, status = output_patch(kind, key, value_for(kind), taints)
        message = refused(token_api, node, body, status=status)
        assert message is not None and f"'{POLICY}'" in message, (kind, key)


# ----- enabled: written for real, the rest untouched ---------------------------------------


def test_an_enabled_output_is_written_and_everything_else_stays(apiserver, setting, token_api,
                                                                 node) -> None:
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_ON})
    # Other writers' taints (the apiserver's not-ready one is there already), capacity,
    # conditions and annotations.
    with apiserver.admin_client() as admin:
        core = client.CoreV1Api(admin)
        taints = [*taints_of(apiserver, node),
                  {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                  {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
        core.patch_node(node, {"spec": {"taints": taints}, "metadata": {"annotations": {
            "node.alpha.kubernetes.io/ttl": "0"}}}, _content_type=MERGE)
        core.patch_node_status(node, {"status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3", "memory": "7Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}]}},
            _content_type=MERGE)
    before = read_node(apiserver, node)
    foreign = before["spec"]["taints"]
    mine = {"key": "feature.node.kubernetes.io/gpu", "value": "a100", "effect": "NoSchedule"}
    # As the agent writes: each output with its ledger, in one patch; labels may come along.
    assert refused(token_api, node, {"metadata": {
        "labels": {"feature.node.kubernetes.io/x": "1"},
        "annotations": {"vendor.io/model": "x" * 1024, LEDGERS[ANNOTATIONS]: "vendor.io/model"}}},
        dry_run=False) is None
    assert refused(token_api, node, {"spec": {"taints": [*foreign, mine]}, "metadata": {
        "annotations": {LEDGERS[TAINTS]: mine["key"]}}}, dry_run=False) is None
    assert refused(token_api, node, {
        "status": {"capacity": {"vendor.io/accel": "2"}, "allocatable": {"vendor.io/accel": "2"}},
        "metadata": {"annotations": {LEDGERS[EXTENDED_RESOURCES]: "vendor.io/accel"}}},
        status=True, dry_run=False) is None
    after = read_node(apiserver, node)
    assert after["metadata"]["annotations"]["vendor.io/model"] == "x" * 1024
    assert after["spec"]["taints"] == [*foreign, mine]
    assert after["status"]["capacity"] == {**before["status"]["capacity"], "vendor.io/accel": "2"}
    assert after["status"]["allocatable"] == {**before["status"]["allocatable"],
                                              "vendor.io/accel": "2"}
    assert after["status"]["conditions"] == before["status"]["conditions"]
    assert after["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] == "0"
    # Each ledger landed with its outputs, the extended resources' through nodes/status.
    assert {k: after["metadata"]["annotations"].get(k) for k in LEDGERS.values()} == {
        LEDGERS[ANNOTATIONS]: "vendor.io/model", LEDGERS[TAINTS]: mine["key"],
        LEDGERS[EXTENDED_RESOURCES]: "vendor.io/accel"}
    # Its own outputs it may change and remove, as long as everything else stays.
    assert refused(token_api, node, {"spec": {"taints": [*foreign, {**mine, "value": "h100"}]}}) \
        is None
    assert refused(token_api, node, {"spec": {"taints": foreign}}) is None
    assert refused(token_api, node, {"status": {"capacity": {"vendor.io/accel": None},
                                                "allocatable": {"vendor.io/accel": None}}},
                   status=True) is None
    # Other writers' taints: not dropped, changed, moved, nor added to.
    dedicated, unschedulable = foreign[-2], foreign[-1]
    for taints in ([t for t in foreign if t != dedicated] + [mine],
                   [t if t != dedicated else {**t, "value": "cpu"} for t in foreign],
                   [t if t != dedicated else {**t, "effect": "NoExecute"} for t in foreign],
                   [*foreign[:-2], unschedulable, dedicated, mine],
                   [*foreign, {"key": "node.kubernetes.io/x", "effect": "NoSchedule"}]):
        message = refused(token_api, node, {"spec": {"taints": taints}})
        assert message is not None and "must leave every other taint" in message, taints
    # Nor the rest of the spec while taints change.
    message = refused(token_api, node, {"spec": {"taints": [*foreign, {**mine, "value": "h"}],
                                                 "unschedulable": True}})
    assert message is not None and "unschedulable" in message
    # Other writers' capacity and allocatable, and conditions.
    for status in ({"capacity": {"cpu": "8"}}, {"allocatable": {"pods": None}},
                   {"capacity": {"kubernetes.io/x": "1"}},
                   {"capacity": {"vendor.io/b": "1", "memory": "16Gi"}}):
        message = refused(token_api, node, {"status": status}, status=True)
        assert message is not None and "may change the capacity and allocatable only" in message
    message = refused(token_api, node, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "X", "message": "x"}]}}, status=True,
        content_type=STRATEGIC)
    assert message is not None and "may change only its condition" in message
    assert read_node(apiserver, node)["spec"]["taints"] == [*foreign, mine]


def test_outputs_on_another_node_are_refused(apiserver, policy, setting, token_api,
                                             node) -> None:
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_ON})
    with policed_node(apiserver, policy, SELECTOR, f"outputs-other-{uuid.uuid4().hex[:6]}") \
            as other:
        for kind in KINDS:
            message = write(apiserver, token_api, other, kind, "feature.node.kubernetes.io/x",
                            value_for(kind))
            assert message is not None and f"belongs to node {node}" in message, kind


# ----- sizes ------------------------------------------------------------------------------


def test_an_annotation_value_and_each_ledger_are_bounded(apiserver, setting, token_api,
                                                         node) -> None:
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_ON})
    key = "vendor.io/long"
    # 1024 bytes is NFD's limit, counted as nfd-master and the agent count it: in UTF-8,
    # so 512 two-byte characters reach it and 1024 of them (2048 bytes) exceed it.
    assert refused(token_api, node, {"metadata": {"annotations": {key: "\u00e9" * 512}}}) is None
    for value in ("x" * 1025, "\u00e9" * 513, "\u00e9" * 1024):
        message = refused(token_api, node, {"metadata": {"annotations": {key: value}}})
        assert message is not None and "at most 1024 bytes, not: " + key in message
    # One ledger per kind and instance, each at most 16384 bytes (a 2-byte character
    # counts twice), through nodes, and the extended resources' through nodes/status too.
    at_bound = "x" * 16382 + "\u00e9"
    for kind, instance in itertools.product(KINDS, ("", "-gpu")):
        ledger = LEDGERS[kind] + instance
        assert refused(token_api, node, {"metadata": {"annotations": {ledger: at_bound}}}) \
            is None, ledger
        message = refused(token_api, node, {"metadata": {"annotations": {
            ledger: at_bound + "x"}}})
        assert message is not None and "at most 16384 bytes, not: " + ledger in message
        if kind == EXTENDED_RESOURCES:
            assert refused(token_api, node, {"metadata": {"annotations": {ledger: at_bound}}},
                           status=True) is None, ledger
            assert refused(token_api, node, {"metadata": {"annotations": {
                ledger: at_bound + "x"}}}, status=True) is not None
    # A ledger already too big refuses every write until the agent rewrites it.
    patch_node(apiserver, node, {"metadata": {"annotations": {LEDGERS[TAINTS]: at_bound + "x"}}})
    try:
        assert refused(token_api, node, {"metadata": {"labels": {"vendor.io/y": "1"}}})
        assert refused(token_api, node, {"metadata": {"annotations": {
            LEDGERS[TAINTS]: "{}"}}}) is None
    finally:
        patch_node(apiserver, node, {"metadata": {"annotations": {LEDGERS[TAINTS]: None}}})


# ----- what a status patch may carry --------------------------------------------------------


@pytest.mark.parametrize("metadata", [
    {"labels": {"vendor.io/x": "from-status"}},
    {"labels": {"feature.node.kubernetes.io/x": "from-status"}},
    {"annotations": {"vendor.io/x": "from-status"}},
    {"annotations": {"feature.node.kubernetes.io/x": "from-status"}},
    {"annotations": {"nodefeatures.dev/labels": "from-status"}},
    {"annotations": {LEDGERS[ANNOTATIONS]: "from-status"}},
    {"annotations": {LEDGERS[TAINTS] + "-gpu": "from-status"}},
], ids=lambda m: ",".join(f"{k}:{next(iter(v))}" for k, v in m.items()))
def test_a_status_patch_changes_no_label_and_no_other_annotation(setting, token_api, node,
                                                                 metadata) -> None:
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_ON})
    resources = {"capacity": {"vendor.io/accel": "1"}, "allocatable": {"vendor.io/accel": "1"}}
    assert refused(token_api, node, {"status": resources, "metadata": {"annotations": {
        LEDGERS[EXTENDED_RESOURCES] + "-gpu": "vendor.io/accel"}}}, status=True) is None
    message = refused(token_api, node, {"status": resources, "metadata": metadata}, status=True)
    assert message is not None and "in the Node's status" in message


# ----- switched off: removal only -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_switched_off_output_may_only_be_removed(apiserver, setting, token_api, node,
                                                   kind: str) -> None:
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_OFF})
    rules, _ = LabelNamespaces.from_data({"denyLabelNs": DEFAULT_DENY})
    assert not rules.enabled(kind)
    value = value_for(kind)
    mine, denied, reserved = "vendor.io/off", "k8s.io/off", "node.kubernetes.io/off"
    for key in (mine, denied, reserved):
        admin_write(apiserver, node, kind, key, value)
    switch = {ANNOTATIONS: "enableAnnotations", TAINTS: "enableTaints",
              EXTENDED_RESOURCES: "enableExtendedResources"}[kind]
    # Neither a new one nor a change, even in NFD's own namespace.
    for key, new in (("vendor.io/new", value), ("feature.node.kubernetes.io/new", value),
                     (mine, "3" if kind == EXTENDED_RESOURCES else "w")):
        message = write(apiserver, token_api, node, kind, key, new)
        assert message is not None and f"switched off ({switch}" in message, key
        assert key in message
    # Removing stays within the namespaces: neither a denied nor a reserved one.
    message = write(apiserver, token_api, node, kind, denied, None)
    assert message is not None and f"'{POLICY}-namespaces'" in message and denied in message
    assert write(apiserver, token_api, node, kind, reserved, None) is not None
    # In them, the agent takes back what it wrote before the switch went off.
    assert write(apiserver, token_api, node, kind, mine, None, dry_run=False) is None
    assert mine not in outputs_of(apiserver, node, kind)
    assert {denied, reserved} <= set(outputs_of(apiserver, node, kind))
    for key in (denied, reserved):
        admin_write(apiserver, node, kind, key, None)


# ----- without the ConfigMap ---------------------------------------------------------------


def test_without_the_configmap_only_the_fixed_rules_hold(apiserver, setting, token_api,
                                                         node) -> None:
    """The switches and denyLabelNs live in the ConfigMap; while it is missing the label
    namespaces policy is skipped (parameterNotFoundAction Allow, see its comments), and
    what no setting may allow is all that holds."""
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_OFF})
    setting.delete()
    try:
        wait_until(lambda: refused(token_api, node, {"metadata": {"labels": {"k8s.io/x": "1"}}})
                   is None, FLIP_WAIT_S, "the label namespaces policy to be skipped", every=0.2)
        for kind in KINDS:
            for key in ("vendor.io/x", "k8s.io/x"):  # off, and denied, but no longer refused
                assert write(apiserver, token_api, node, kind, key, value_for(kind)) is None
            for key in ("kubernetes.io/x", "profile.node.kubernetes.io/x", "nodefeatures.dev/x"):
                message = write(apiserver, token_api, node, kind, key, value_for(kind))
                assert message is not None and f"'{POLICY}'" in message, (kind, key)
        assert annotations_of(apiserver, node).get("vendor.io/x") is None  # dry runs only
    finally:
        setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_OFF})


# ----- cost -------------------------------------------------------------------------------


def test_a_crowded_node_stays_within_the_policies_cost_budget(apiserver, policy, setting,
                                                               token_api, node) -> None:
    """CEL has a per-request cost budget, and the taint comparisons are quadratic: a Node
    with many taints, resources and annotations of others' is judged, not refused for
    cost."""
    setting.put(token_api, node, {"denyLabelNs": DEFAULT_DENY, **ALL_ON})
    crowded = f"outputs-crowded-{uuid.uuid4().hex[:6]}"
    with policed_node(apiserver, policy, SELECTOR, crowded):
        foreign = [{"key": f"team{i}", "value": "x" * 40, "effect": "NoSchedule"}
                   for i in range(100)]
        capacity = {f"device{i}.example.com/unit": "1" for i in range(200)}
        with apiserver.admin_client() as admin:
            core = client.CoreV1Api(admin)
            core.patch_node(crowded, {"spec": {"taints": taints_of(apiserver, crowded) + foreign},
                                      "metadata": {"annotations": {
                                          f"team{i}.example.com/note": "y" * 100
                                          for i in range(300)}}}, _content_type=MERGE)
            core.patch_node_status(crowded, {"status": {"capacity": capacity,
                                                        "allocatable": capacity}},
                                   _content_type=MERGE)
        token = apiserver.service_account_token(SA_NAMESPACE, SA_NAME, node=crowded)
        with apiserver.client_for_token(token) as api:
            agent = client.CoreV1Api(api)
            taints = taints_of(apiserver, crowded)
            mine = [{"key": f"feature.node.kubernetes.io/t{i}", "effect": "NoSchedule"}
                    for i in range(50)]
            assert refused(agent, crowded, {"spec": {"taints": taints + mine}}) is None
            resources = {f"vendor{i}.io/r": "1" for i in range(100)}
            assert refused(agent, crowded, {"status": {"capacity": resources,
                                                       "allocatable": resources}},
                           status=True) is None
            assert refused(agent, crowded, {"metadata": {"annotations": {
                f"vendor{i}.io/a": "z" * 1024 for i in range(100)}}}) is None
            # Judged, not waved through: one foreign taint changed among them all.
            changed = [*taints[:-1], {**taints[-1], "value": "changed"}, *mine]
            message = refused(agent, crowded, {"spec": {"taints": changed}})
            assert message is not None and "must leave every other taint" in message
