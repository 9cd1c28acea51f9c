"""Reconcile rules for labels from cluster objects (NodeFeatureRule, NodeFeature) and for
the label namespaces setting: removal only on evidence, precedence, scope."""

from __future__ import annotations

from dataclasses import dataclass

from nodefeatures.cluster.reconcile import (
    ADD,
    KEEP,
    RELEASE,
    REMOVE,
    SKIP,
    Evidence,
    Ledger,
    Scope,
    SourceReport,
    apply_to,
    plan,
)

F = "feature.node.kubernetes.io/"
RULE = "nodefeaturerule/gpu-rules"
GFD = "nodefeature/gpu-operator/nvidia-features-for-node-1"


@dataclass(frozen=True)
class OnlyVendor:
    """A namespaces setting that allows feature.node.kubernetes.io and vendor.io only."""

    def allows(self, key: str) -> bool:
        return key.split("/")[0] in ("feature.node.kubernetes.io", "vendor.io")

    def refusal(self, key: str) -> str | None:
        return None if self.allows(key) else f"namespace {key.split('/')[0]} is denied"


def evidence(*reports: SourceReport, catalogued: frozenset[str] = frozenset()) -> Evidence:
    return Evidence(reports, complete=True, catalogued=catalogued)


def action(result, key: str) -> str:
    return next(c.action for c in result.changes if c.key == key)


def test_an_object_origin_is_kept_in_the_ledger_and_read_back():
    owners = {F + "gpu.fast": RULE, "nvidia.com/gpu.product": GFD, F + "cpu-x": "cpu"}
    encoded = Ledger(owners).encode()
    assert Ledger.parse(encoded).owners == owners


def test_labels_of_a_rule_object_are_added_and_owned_by_it():
    result = plan(evidence(SourceReport(RULE, {F + "gpu.fast": "true"}, True)), {}, {})
    assert action(result, F + "gpu.fast") == ADD
    assert result.ledger.owners[F + "gpu.fast"] == RULE


def test_a_deleted_object_removes_its_labels_only_when_its_kind_was_listed():
    labels = {F + "gpu.fast": "true"}
    annotations = Ledger({F + "gpu.fast": RULE}).encode()
    # The rules could not be listed (CRD absent, RBAC, first list pending): no evidence.
    unknown = plan(evidence(), labels, annotations)
    assert action(unknown, F + "gpu.fast") == KEEP
    assert unknown.patch(None) is None
    # Listed in full and the object is not there: it was deleted.
    listed = plan(evidence(catalogued=frozenset({"nodefeaturerule/"})), labels, annotations)
    assert action(listed, F + "gpu.fast") == REMOVE
    assert "no longer exists" in next(c.reason for c in listed.changes)
    # Another kind being listed says nothing about rules.
    other = plan(evidence(catalogued=frozenset({"nodefeature/"})), labels, annotations)
    assert action(other, F + "gpu.fast") == KEEP


def test_a_rule_object_that_fails_keeps_its_labels_and_their_precedence():
    labels = {F + "gpu.fast": "true"}
    annotations = Ledger({F + "gpu.fast": RULE}).encode()
    failing = SourceReport(RULE, {}, False, "not evaluated: over the per-pass budget")
    lower = SourceReport("local", {F + "gpu.fast": "false"}, True)
    result = plan(evidence(lower, failing, catalogued=frozenset({"nodefeaturerule/"})),
                  labels, annotations)
    assert action(result, F + "gpu.fast") == KEEP
    assert result.patch(None) is None


def test_a_rule_object_that_evaluates_cleanly_and_gives_no_label_removes_it():
    labels = {F + "gpu.fast": "true"}
    annotations = Ledger({F + "gpu.fast": RULE}).encode()
    result = plan(evidence(SourceReport(RULE, {}, True),
                           catalogued=frozenset({"nodefeaturerule/"})), labels, annotations)
    assert action(result, F + "gpu.fast") == REMOVE


def test_rule_labels_override_node_feature_labels_which_override_sources():
    key = "nvidia.com/gpu.product"
    reports = (SourceReport("nvidia", {key: "A100"}, True),
               SourceReport(GFD, {key: "A100-SXM4-40GB"}, True),
               SourceReport(RULE, {key: "renamed"}, True))
    assert apply_to({}, plan(evidence(*reports), {}, {}))[key] == "renamed"
    assert apply_to({}, plan(evidence(*reports[:2]), {}, {}))[key] == "A100-SXM4-40GB"


def test_evidence_problems_join_the_plan():
    ev = Evidence((), problems={"object:" + RULE: "gpu-rules: a rule does not parse"})
    assert plan(ev, {}, {}).problems["object:" + RULE].endswith("does not parse")


def test_a_namespace_scope_publishes_vendor_labels_and_skips_denied_ones():
    scope = Scope((), OnlyVendor())
    reports = (SourceReport("local", {"vendor.io/x": "1", "other.io/y": "2",
                                      F + "z": "3"}, True),)
    result = plan(evidence(*reports), {}, {}, scope)
    assert action(result, "vendor.io/x") == ADD
    assert action(result, F + "z") == ADD
    assert action(result, "other.io/y") == SKIP
    skipped = next(c for c in result.changes if c.key == "other.io/y")
    assert "namespace other.io is denied" in skipped.reason
    # The default prefixes alone would not publish vendor.io.
    assert action(plan(evidence(*reports), {}, {}), "vendor.io/x") == SKIP


def test_prefixes_narrow_a_namespace_scope():
    scope = Scope(("vendor.io/",), OnlyVendor())
    result = plan(evidence(SourceReport("local", {"vendor.io/x": "1", F + "z": "3"}, True)),
                  {}, {}, scope)
    assert action(result, "vendor.io/x") == ADD
    assert action(result, F + "z") == SKIP


def test_a_label_whose_namespace_is_no_longer_allowed_is_released_not_removed():
    labels = {"other.io/y": "2"}
    annotations = Ledger({"other.io/y": "local"}).encode()
    result = plan(evidence(SourceReport("local", {"other.io/y": "2"}, True)), labels,
                  annotations, Scope((), OnlyVendor()))
    assert action(result, "other.io/y") == RELEASE
    assert "other.io/y" not in (result.patch("1") or {}).get("metadata", {}).get("labels", {})
