"""Reading rules: NFD's field names and short forms, and a path for every problem."""

from __future__ import annotations

from typing import Any

import pytest

from nodefeatures.discovery.rules.expressions import MatchExpression
from nodefeatures.discovery.rules.model import parse_rule, parse_rules


def problems_of(data: Any) -> list[str]:
    _, problems = parse_rules(data, "rules")
    return [str(p) for p in problems]


def test_a_full_rule_reads_field_for_field() -> None:
    rule, problems = parse_rule({
        "name": "my rule",
        "labels": {"vendor.io/x": "1"},
        "vars": {"v": "2"},
        "annotations": {"vendor.io/a": "text"},
        "taints": [{"key": "vendor.io/t", "value": "v", "effect": "NoSchedule"}],
        "extendedResources": {"vendor.io/r": "4"},
        "matchFeatures": [{"feature": "pci.device",
                           "matchExpressions": {"vendor": {"op": "In", "value": ["15b3"]}},
                           "matchName": {"op": "Exists"}}],
        "matchAny": [{"matchFeatures": [{"feature": "kernel.loadedmodule",
                                         "matchExpressions": {"nvidia": {"op": "Exists"}}}]}],
    }, "")
    assert problems == []
    assert rule is not None
    assert rule.labels == {"vendor.io/x": "1"} and rule.vars == {"v": "2"}
    assert rule.taints[0].effect == "NoSchedule"
    assert rule.match_features[0].expressions == {"vendor": MatchExpression("In", ("15b3",))}
    assert rule.match_features[0].match_name == MatchExpression("Exists")
    assert rule.match_any[0][0].feature == "kernel.loadedmodule"


@pytest.mark.parametrize(("written", "expected"), [
    (["ib_uverbs", "vendor=15b3"], {"ib_uverbs": MatchExpression("Exists"),
                                    "vendor": MatchExpression("In", ("15b3",))}),
    ({"ib_uverbs": None}, {"ib_uverbs": MatchExpression("Exists")}),
    ({"vendor": "15b3"}, {"vendor": MatchExpression("In", ("15b3",))}),
    ({"vendor": ["15b3", "10de"]}, {"vendor": MatchExpression("In", ("15b3", "10de"))}),
    ({"enabled": True}, {"enabled": MatchExpression("In", ("true",))}),
    ({"major": 5}, {"major": MatchExpression("In", ("5",))}),
    ({"ratio": 1.50}, {"ratio": MatchExpression("In", ("1.5",))}),
    ({"major": {"op": "Gt", "value": 4}}, {"major": MatchExpression("Gt", ("4",))}),
])
def test_nfd_worker_short_forms(written: Any, expected: dict[str, MatchExpression]) -> None:
    rule, problems = parse_rule({"name": "r", "matchFeatures": [
        {"feature": "a.b", "matchExpressions": written}]}, "")
    assert problems == []
    assert rule is not None and dict(rule.match_features[0].expressions or {}) == expected


@pytest.mark.parametrize(("data", "expected"), [
    ([{"name": "a"}, {"name": "b", "matchFeatures": [{"feature": "pci.device",
                                                      "matchExpressions": {
                                                          "vendor": {"op": "Equals"}}}]}],
     "rules[1].matchFeatures[0].matchExpressions.vendor.op (rule 'b'): unknown operator"),
    ([{"name": "a", "matchAny": [{"matchFeatures": [{"feature": "a.b", "matchExpressions": {
        "v": {"op": "In", "value": []}}}]}]}],
     "rules[0].matchAny[0].matchFeatures[0].matchExpressions.v.value (rule 'a'): operator In"),
    ([{"name": "a", "lables": {}}], "rules[0].lables (rule 'a'): unknown field"),
    ([{"labels": {"x": "y"}}], "rules[0].name: required"),
    ([{"name": "a", "labels": {"x": True}}], "rules[0].labels.x (rule 'a'): keys and values"),
    ([{"name": "a", "matchFeatures": [{"matchExpressions": {}}]}],
     "rules[0].matchFeatures[0].feature (rule 'a'): required"),
    ([{"name": "a", "matchFeatures": [{"feature": "a.b", "matchExpressions": {
        "v": {"op": "Gt", "value": ["x"], "type": "version"}}}]}],
     "rules[0].matchFeatures[0].matchExpressions.v.value (rule 'a'): operator Gt: 'x' is not"),
    ([{"name": "a", "matchFeatures": [{"feature": "a.b", "matchExpressions": {
        "v": {"op": "In", "value": ["x"], "type": "version"}}}]}],
     "rules[0].matchFeatures[0].matchExpressions.v.type (rule 'a'): type 'version'"),
    ([{"name": "a", "taints": [{"key": "k", "effect": "Sometimes"}]}],
     "rules[0].taints[0].effect (rule 'a'): must be one of"),
    ({"name": "a"}, "rules: must be a list of rules, not a mapping"),
    (["a"], "rules[0]: a rule must be a mapping, not a string"),
])
def test_every_problem_has_its_path(data: Any, expected: str) -> None:
    found = problems_of(data)
    assert any(p.startswith(expected) for p in found), found


def test_a_bad_rule_costs_only_itself_in_a_list() -> None:
    rules, problems = parse_rules([{"name": "good"}, {"name": "bad", "labels": []}], "r")
    assert [r.name for r in rules] == ["good"]
    assert len(problems) == 1 and problems[0].rule == "bad"


def test_all_problems_of_a_rule_are_reported_at_once() -> None:
    found = problems_of([{"name": "a", "labels": [], "vars": 3, "bogus": 1}])
    assert len(found) == 3
