"""How rules combine and what they see, one case per place where NFD's reading is easy to miss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from nodefeatures.discovery.rules import engine
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import Rule, parse_rule


def node(flags: Mapping[str, list[str]] | None = None,
         attributes: Mapping[str, Mapping[str, str]] | None = None,
         instances: Mapping[str, list[Mapping[str, str]]] | None = None) -> FeatureSet:
    features = FeatureSet()
    for name, names in (flags or {}).items():
        features.set_flags(name, names)
    for name, values in (attributes or {}).items():
        features.update_attributes(name, values)
    for name, items in (instances or {}).items():
        features.set_instances(name, items)
    return features


def rule(data: Mapping[str, Any]) -> Rule:
    parsed, problems = parse_rule({"name": "r", "labels": {"x": "y"}, **data}, "")
    assert problems == [], problems
    assert parsed is not None
    return parsed


def matches(data: Mapping[str, Any], features: FeatureSet) -> bool:
    outcome = engine.evaluate(rule(data), features)
    assert outcome.error is None, outcome.error
    return outcome.matched


def term(feature: str, expressions: Any = None, **more: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"feature": feature, **more}
    if expressions is not None:
        result["matchExpressions"] = expressions
    return result


MODULES = node(flags={"kernel.loadedmodule": ["ib_uverbs", "nvidia"]})
DEVICES = node(instances={"pci.device": [
    {"vendor": "15b3", "class": "0300"},
    {"vendor": "10de", "class": "0207"},
]})


def test_does_not_exist_on_a_missing_element_of_a_present_feature_matches() -> None:
    assert matches({"matchFeatures": [term("kernel.loadedmodule",
                                           {"rdma_ucm": {"op": "DoesNotExist"}})]}, MODULES)


def test_a_missing_feature_fails_the_term_even_for_does_not_exist() -> None:
    assert not matches({"matchFeatures": [term("kernel.enabledmodule",
                                               {"rdma_ucm": {"op": "DoesNotExist"}})]}, MODULES)


def test_a_term_without_expressions_asks_only_whether_the_feature_exists() -> None:
    assert matches({"matchFeatures": [term("kernel.loadedmodule")]}, MODULES)
    assert not matches({"matchFeatures": [term("kernel.config")]}, MODULES)


def test_every_term_of_match_features_must_match() -> None:
    both = node(flags={"kernel.loadedmodule": ["nvidia"]},
                attributes={"kernel.version": {"major": "5"}})
    ok = term("kernel.loadedmodule", ["nvidia"])
    assert matches({"matchFeatures": [ok, term("kernel.version", {"major": "5"})]}, both)
    assert not matches({"matchFeatures": [ok, term("kernel.version", {"major": "6"})]}, both)


def test_all_expressions_must_hold_on_one_and_the_same_instance() -> None:
    # vendor 15b3 is one device and class 0207 another: no single device has both.
    assert not matches({"matchFeatures": [term("pci.device", {
        "vendor": "15b3", "class": "0207"})]}, DEVICES)
    assert matches({"matchFeatures": [term("pci.device", {
        "vendor": "10de", "class": "0207"})]}, DEVICES)


def test_an_instance_term_records_every_matching_instance() -> None:
    outcome = engine.evaluate(rule({"matchFeatures": [term("pci.device", {
        "class": {"op": "Exists"}})]}), DEVICES)
    assert outcome.elements["pci.device"] == [
        {"vendor": "15b3", "class": "0300"}, {"vendor": "10de", "class": "0207"}]


def test_empty_expressions_on_instances_need_at_least_one_instance() -> None:
    assert matches({"matchFeatures": [term("pci.device", {})]}, DEVICES)
    assert not matches({"matchFeatures": [term("usb.device", {})]},
                       node(instances={"usb.device": []}))


def test_empty_expressions_on_a_flag_feature_match() -> None:
    assert matches({"matchFeatures": [term("kernel.loadedmodule", {})]}, MODULES)


def test_does_not_exist_must_hold_on_both_flags_and_attributes_of_one_feature() -> None:
    both = node(flags={"cpu.cpuid": ["AVX"]}, attributes={"cpu.cpuid": {"AVX10_VERSION": "1"}})
    assert not matches({"matchFeatures": [term("cpu.cpuid", {
        "AVX10_VERSION": {"op": "DoesNotExist"}})]}, both)
    assert matches({"matchFeatures": [term("cpu.cpuid", {
        "AMX": {"op": "DoesNotExist"}})]}, both)
    # Other operators need to hold on one of them only.
    assert matches({"matchFeatures": [term("cpu.cpuid", {
        "AVX": {"op": "Exists"}, "AVX10_VERSION": {"op": "Gt", "value": ["0"]}})]}, both)


def test_value_operators_never_match_a_flag() -> None:
    assert not matches({"matchFeatures": [term("kernel.loadedmodule", {
        "nvidia": {"op": "In", "value": ["true"]}})]}, MODULES)


def test_feature_names_ignore_case() -> None:
    assert matches({"matchFeatures": [term("Kernel.LoadedModule", ["nvidia"])]}, MODULES)


def test_match_any_needs_one_group_and_match_features_all_terms() -> None:
    features = node(attributes={"a.x": {"v": "1"}, "a.y": {"v": "2"}})

    def data(any_values: list[str], all_value: str) -> dict[str, Any]:
        return {
            "matchAny": [{"matchFeatures": [term("a.x", {"v": v})]} for v in any_values],
            "matchFeatures": [term("a.y", {"v": all_value})],
        }
    assert matches(data(["9", "1"], "2"), features)  # second group, and matchFeatures
    assert not matches(data(["9", "8"], "2"), features)  # no group
    assert not matches(data(["1"], "3"), features)  # a group, but not matchFeatures


def test_a_rule_without_matchers_always_matches() -> None:
    assert matches({}, node())


def test_a_comparison_on_an_unreadable_value_makes_the_rule_unevaluable() -> None:
    features = node(attributes={"kernel.version": {"full": "5.15.0-91-generic"}})
    outcome = engine.evaluate(rule({"matchFeatures": [term("kernel.version", {
        "full": {"op": "Gt", "value": ["5"]}})]}), features)
    assert outcome.error is not None and "not a number" in outcome.error
    assert not outcome.matched and outcome.labels == {}


def test_a_comparison_on_a_missing_element_is_just_a_miss() -> None:
    features = node(attributes={"kernel.version": {"major": "5"}})
    outcome = engine.evaluate(rule({"matchFeatures": [term("kernel.version", {
        "minor": {"op": "Gt", "value": ["5"]}})]}), features)
    assert outcome.error is None and not outcome.matched


def test_match_name_matches_element_names() -> None:
    features = node(flags={"cpu.cpuid": ["AVX", "AVX2", "AVX512F", "SSE4"]})
    outcome = engine.evaluate(rule({"matchFeatures": [term(
        "cpu.cpuid", matchName={"op": "InRegexp", "value": ["^AVX5"]})]}), features)
    assert outcome.matched
    assert outcome.elements["cpu.cpuid"] == [{"Name": "AVX512F"}]
    assert not matches({"matchFeatures": [term(
        "cpu.cpuid", matchName={"op": "In", "value": ["AMX"]})]}, features)


def test_match_name_on_instances_records_whole_instances() -> None:
    outcome = engine.evaluate(rule({"matchFeatures": [term(
        "pci.device", matchName={"op": "In", "value": ["class"]})]}), DEVICES)
    assert outcome.elements["pci.device"] == [
        {"vendor": "15b3", "class": "0300"}, {"vendor": "10de", "class": "0207"}]


def test_match_name_is_checked_after_match_expressions() -> None:
    features = node(flags={"cpu.cpuid": ["AVX"]})
    assert not matches({"matchFeatures": [term(
        "cpu.cpuid", ["AMX"], matchName={"op": "In", "value": ["AVX"]})]}, features)
    assert matches({"matchFeatures": [term(
        "cpu.cpuid", ["AVX"], matchName={"op": "In", "value": ["AVX"]})]}, features)


def test_later_rules_see_earlier_labels_and_vars_through_rule_matched() -> None:
    rules = [
        rule({"name": "first", "labels": {"gpu.node": "true"}, "vars": {"tier": "gold"}}),
        rule({"name": "second", "labels": {"second": "true"}, "matchFeatures": [
            term("rule.matched", {"gpu.node": {"op": "IsTrue"}, "tier": "gold"})]}),
    ]
    outcomes = engine.run(rules, node())
    assert [o.matched for o in outcomes] == [True, True]
    assert outcomes[1].labels == {"second": "true"}
    assert outcomes[0].labels == {"gpu.node": "true"}  # vars never become labels


def test_an_unmatched_rule_still_creates_rule_matched_so_does_not_exist_works() -> None:
    rules = [
        rule({"name": "never", "labels": {"a": "1"},
              "matchFeatures": [term("no.such")]}),
        rule({"name": "fallback", "labels": {"b": "1"},
              "matchFeatures": [term("rule.matched", {"a": {"op": "DoesNotExist"}})]}),
    ]
    assert [o.matched for o in engine.run(rules, node())] == [False, True]


def test_rules_do_not_see_later_rules() -> None:
    rules = [
        rule({"name": "early", "labels": {"early": "1"},
              "matchFeatures": [term("rule.matched", ["late"])]}),
        rule({"name": "late", "labels": {"late": "1"}}),
    ]
    assert [o.matched for o in engine.run(rules, node())] == [False, True]


def test_a_backreference_takes_the_attribute_value() -> None:
    features = node(attributes={"kernel.version": {"major": "5"}})
    outcome = engine.evaluate(rule({"labels": {"kmajor": "@kernel.version.major",
                                               "plain": "x"}}), features)
    assert outcome.labels == {"kmajor": "5", "plain": "x"}


@pytest.mark.parametrize("value", ["@kernel.version.minor", "@kernel.nothing.major",
                                   "@kernel.version", "@"])
def test_an_unresolvable_backreference_drops_only_that_label(value: str) -> None:
    features = node(attributes={"kernel.version": {"major": "5"}})
    outcome = engine.evaluate(rule({"labels": {"bad": value, "plain": "x"}}), features)
    assert outcome.matched and outcome.labels == {"plain": "x"}
    assert set(outcome.dropped) == {"bad"}


def test_a_template_runs_only_over_a_matcher_as_in_nfd() -> None:
    # NFD expands templates inside matchFeatures / matchAny only: a rule with neither
    # matches and gives its static labels, and its template produces nothing.
    outcome = engine.evaluate(rule({"labelsTemplate": "{{ range .pci.device }}x=1{{ end }}"}),
                              DEVICES)
    assert outcome.error is None and outcome.matched
    assert outcome.labels == {"x": "y"}


def test_a_template_rule_that_does_not_match_is_simply_a_miss() -> None:
    outcome = engine.evaluate(rule({"varsTemplate": "x", "matchFeatures": [
        term("no.such")]}), DEVICES)
    assert outcome.error is None and not outcome.matched


def test_a_rule_that_fails_to_evaluate_does_not_feed_rule_matched() -> None:
    features = node(attributes={"a.b": {"v": "text"}})
    rules = [
        rule({"name": "bad", "labels": {"bad": "1"},
              "matchFeatures": [term("a.b", {"v": {"op": "Gt", "value": ["1"]}})]}),
        rule({"name": "next", "labels": {"next": "1"},
              "matchFeatures": [term("rule.matched", {"bad": {"op": "DoesNotExist"}})]}),
    ]
    outcomes = engine.run(rules, features)
    assert outcomes[0].error is not None
    # rule.matched never came to exist: the first rule produced nothing.
    assert outcomes[1].matched is False


def test_the_engine_stays_on_the_discovery_side() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import nodefeatures.discovery.rules.engine, nodefeatures.discovery.rules.model\n"
        "import nodefeatures.sources.custom\n"
        "bad = [m for m in ('click', 'kubernetes', 'yaml', 'nodefeatures.cluster.agent',\n"
        "       'nodefeatures.cluster.kube', 'nodefeatures.cluster.reconcile',\n"
        "       'nodefeatures.cli')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
