"""What NodeFeatureRules see in a pass: the worker's features as nfd-master would, not
the custom source's label carrier."""

from __future__ import annotations

from typing import Any

from nodefeatures.cluster.nfdapi import ClusterObjects
from nodefeatures.cluster.reconcile import Evidence
from nodefeatures.discovery.run import Discovery, SourceResult
from nodefeatures.discovery.source import Features


class Listed:
    """A cache that holds `objects` and listed them in full."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {("", o["metadata"]["name"]): o for o in objects}
        self.known, self.problem = True, None

    def snapshot(self) -> tuple[int, dict[tuple[str, str], dict[str, Any]], bool]:
        return 1, self.objects, True


def rule(feature: str, key: str) -> dict[str, Any]:
    return {"metadata": {"name": f"on-{feature}", "resourceVersion": "1"}, "spec": {"rules": [
        {"name": "r", "labels": {key: "true"},
         "matchFeatures": [{"feature": feature, "matchExpressions": {
             "feature.node.kubernetes.io/x": {"op": "Exists"}}}]}]}}


def test_rules_do_not_match_the_custom_sources_labels() -> None:
    custom, local = Features(), Features()
    custom.attribute("label", "feature.node.kubernetes.io/x", "true", "a rule")
    local.attribute("label", "feature.node.kubernetes.io/x", "true", "a file")
    discovery = Discovery([SourceResult("custom", features=custom),
                           SourceResult("local", features=local)])
    objects = ClusterObjects.__new__(ClusterObjects)
    objects.namespace, objects.features, objects._loaded, objects._gauge = "ns", None, {}, None
    from nodefeatures.discovery.rules.cluster import EvalBudget

    objects.budget = EvalBudget()
    objects.rules = Listed([rule("custom.label", "a.io/from-custom"),  # type: ignore[assignment]
                            rule("local.label", "a.io/from-local")])
    evidence = objects.extend(discovery, Evidence(()))
    labels = {k for r in evidence.reports for k in r.labels}
    assert "a.io/from-local" in labels
    assert "a.io/from-custom" not in labels
