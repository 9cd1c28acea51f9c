"""NodeFeatureRule objects evaluated as nfd-master evaluates them, within a per-pass budget."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nodefeatures.discovery.namespaces import LabelNamespaces
from nodefeatures.discovery.rules import cluster, gotemplate
from nodefeatures.discovery.rules.cluster import EvalBudget, RuleObject, evaluate, load
from nodefeatures.discovery.rules.features import FeatureSet

CPU = {"feature": "cpu.cpuid", "matchExpressions": {"AVX": {"op": "Exists"}}}
MISSING = {"feature": "cpu.cpuid", "matchExpressions": {"SGX": {"op": "Exists"}}}


def features(value: str = "ab") -> FeatureSet:
    result = FeatureSet()
    result.set_flags("cpu.cpuid", ["AVX", "AVX2"])
    result.update_attributes("third.party", {"text": value})
    return result


def nfr(name: str, rules: Any) -> dict[str, Any]:
    return {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeatureRule",
            "metadata": {"name": name, "resourceVersion": "7"}, "spec": {"rules": rules}}


def loaded(name: str, *rules: dict[str, Any]) -> RuleObject:
    obj = load(nfr(name, list(rules)))
    assert obj.usable, obj.problems
    return obj


def test_load_gives_rules_with_their_place() -> None:
    obj = load(nfr("gpu", [{"name": "a", "labels": {"x": "1"}, "matchFeatures": [CPU]}]))
    assert (obj.name, obj.origin, obj.usable, obj.problems) == (
        "gpu", "nodefeaturerule/gpu", True, ())
    assert [r.name for r in obj.rules] == ["a"]
    assert obj.rules[0].origin == "nodefeaturerule/gpu spec.rules[0]"


@pytest.mark.parametrize(("obj", "expected"), [
    ("x", "must be a mapping"),
    ({"metadata": {}, "spec": {"rules": []}}, "metadata.name"),
    ({"metadata": {"name": "a\nb"}, "spec": {"rules": []}}, r"'a\nb'"),
    (nfr("a", None) | {"spec": None}, "spec"),
    (nfr("a", "rules"), "spec.rules"),
    (nfr("a", [{"name": "ok", "labels": {"x": "1"}}, {"name": "bad", "bogus": 1}]),
     "spec.rules[1].bogus"),
    (nfr("a", [{"name": "r", "matchFeatures": [{"feature": "x.y", "matchExpressions": {
        "k": {"op": "InRegexp", "value": ["("]}}}]}]), "spec.rules[0].matchFeatures"),
    (nfr("a", []) | {"kind": "NodeFeature"}, "kind"),
])
def test_an_object_that_cannot_be_parsed_is_not_usable(obj: Any, expected: str) -> None:
    result = load(obj)
    assert not result.usable and result.rules == ()
    assert any(expected in p for p in result.problems), result.problems
    assert all("\n" not in p for p in result.problems)


def test_objects_by_name_rules_in_order_rule_matched_shared_across_them() -> None:
    # "b" builds on "a"'s output (as nfd-master shares rule.matched), though given first.
    b = loaded("b", {"name": "uses-a", "labels": {"both": "true"}, "matchFeatures": [
        {"feature": "rule.matched", "matchExpressions": {"base": {"op": "In", "value": ["1"]}}}]})
    a = loaded("a", {"name": "base", "labels": {"base": "1"}, "matchFeatures": [CPU]},
               {"name": "later", "labels": {"base": "2"}, "matchFeatures": [CPU]})
    outcomes = evaluate([b, a], features())
    assert [o.name for o in outcomes] == ["a", "b"]
    # A later rule in an object overrides an earlier one's key; rule.matched saw "1" first
    # only within "a", and "2" by the time "b" ran.
    assert outcomes[0].labels == {"feature.node.kubernetes.io/base": "2"}
    assert outcomes[1].labels == {} and outcomes[1].ok


def test_rule_matched_starts_from_the_features_given_and_is_restored() -> None:
    given = features()
    given.update_attributes("rule.matched", {"from-nodefeature": "yes"})
    obj = loaded("a", {"name": "r", "labels": {"seen": "true"}, "matchFeatures": [
        {"feature": "rule.matched", "matchExpressions": {"from-nodefeature": {"op": "Exists"}}}]},
        {"name": "s", "labels": {"mine": "true"}})
    first = evaluate([obj], given)
    assert first[0].labels == {"feature.node.kubernetes.io/seen": "true",
                               "feature.node.kubernetes.io/mine": "true"}
    assert given.attributes("rule.matched") == {"from-nodefeature": "yes"}
    assert evaluate([obj], given) == first


def test_no_rule_matched_leaks_from_one_pass_into_the_next() -> None:
    given = features()
    once = loaded("a", {"name": "r", "labels": {"x": "1"}})
    reader = loaded("b", {"name": "r", "labels": {"y": "1"}, "matchFeatures": [
        {"feature": "rule.matched", "matchExpressions": {"x": {"op": "Exists"}}}]})
    assert evaluate([once, reader], given)[1].labels == {"feature.node.kubernetes.io/y": "1"}
    assert given.attributes("rule.matched") is None
    # Without "a" this pass, "b" must not see last pass's x.
    assert evaluate([reader], given)[0].labels == {}


def test_labels_are_qualified_validated_and_namespaces_applied() -> None:
    obj = loaded("a", {"name": "r", "matchFeatures": [CPU], "labels": {
        "bare": "1", "dup": "bare", "feature.node.kubernetes.io/dup": "prefixed",
        "vendor.io/ok": "1", "kubernetes.io/hostname": "evil", "k8s.io/x": "1",
        "vendor.io/bad": "not valid", "vendor.io/ref": "@third.party.text",
        "vendor.io/noref": "@third.party.absent"}})
    [outcome] = evaluate([obj], features())
    assert outcome.labels == {"feature.node.kubernetes.io/bare": "1",
                              "feature.node.kubernetes.io/dup": "prefixed",
                              "vendor.io/ok": "1", "vendor.io/ref": "ab"}
    assert outcome.ok  # every drop is what the rule says, not a failure to evaluate
    text = " ".join(outcome.problems)
    assert "'kubernetes.io'" in text and "'k8s.io'" in text and "vendor.io/bad" in text
    assert "noref" in text
    cleared = evaluate([obj], features(), namespaces=LabelNamespaces(deny=(), extra=()))
    assert cleared[0].labels["k8s.io/x"] == "1"


def test_a_rule_that_fails_keeps_the_object_from_being_clean() -> None:
    obj = loaded("a", {"name": "bad", "labels": {"x": "1"}, "matchFeatures": [
        {"feature": "third.party", "matchExpressions": {"text": {"op": "Gt", "value": ["1"]}}}]},
        {"name": "good", "labels": {"y": "1"}, "matchFeatures": [CPU]},
        {"name": "sees", "labels": {"z": "1"}, "matchFeatures": [
            {"feature": "rule.matched", "matchExpressions": {"x": {"op": "Exists"}}}]})
    [outcome] = evaluate([obj], features())
    assert not outcome.ok
    assert outcome.labels == {"feature.node.kubernetes.io/y": "1"}
    assert any("'bad'" in p and "cannot be evaluated" in p for p in outcome.problems)


def test_an_unusable_object_keeps_its_labels_and_others_still_run() -> None:
    broken = load(nfr("a", [{"name": "x", "bogus": True}]))
    fine = loaded("b", {"name": "r", "labels": {"y": "1"}})
    outcomes = evaluate([broken, fine], features())
    assert not outcomes[0].ok and outcomes[0].labels == {}
    assert any("cannot be used" in p for p in outcomes[0].problems)
    assert outcomes[1].ok and outcomes[1].labels == {"feature.node.kubernetes.io/y": "1"}


def test_a_rule_that_does_not_match_gives_no_outputs_but_they_are_known() -> None:
    obj = loaded("a", {"name": "r", "labels": {"y": "1"}, "annotations": {"a.io/n": "v"},
                       "taints": [{"key": "a.io/t", "effect": "NoSchedule"}],
                       "extendedResources": {"a.io/r": "1"}, "matchFeatures": [MISSING]})
    [outcome] = evaluate([obj], features())
    assert outcome.kinds == ("annotations", "taints", "extendedResources")
    assert outcome.ok and outcome.labels == {} and outcome.outputs == {}


def test_a_matching_rule_gives_its_outputs_checked_and_prefixed_as_nfd_master() -> None:
    obj = loaded("a", {
        "name": "r", "matchFeatures": [CPU],
        "annotations": {"note": "long text, any characters: ok!", "vendor.io/x": "1",
                        "feature.node.kubernetes.io/note": "twin wins"},
        "taints": [{"key": "vendor.io/gpu", "value": "", "effect": "NoSchedule"},
                   {"key": "vendor.io/gpu", "value": "busy", "effect": "NoExecute"}],
        "extendedResources": {"widgets": "4", "vendor.io/mem": "2Gi",
                              "vendor.io/text": "@third.party.text"}})
    [outcome] = evaluate([obj], features("12"))
    assert outcome.ok, outcome.problems
    assert outcome.outputs == {
        "annotations": {"feature.node.kubernetes.io/note": "twin wins", "vendor.io/x": "1"},
        "taints": {"vendor.io/gpu:NoSchedule": "", "vendor.io/gpu:NoExecute": "busy"},
        "extendedResources": {"feature.node.kubernetes.io/widgets": "4",
                              "vendor.io/mem": "2Gi", "vendor.io/text": "12"},
    }
    assert outcome.problems == []


@pytest.mark.parametrize(("kind", "rule", "expected"), [
    ("annotations", {"annotations": {"x": "v" * 1025}}, "1025 bytes"),
    ("annotations", {"annotations": {"x": "é" * 513}}, "1026 bytes"),  # 513 characters
    ("annotations", {"annotations": {"Bad Key": "v"}}, "annotation"),
    ("annotations", {"annotations": {"node.kubernetes.io/x": "v"}}, "reserved"),
    ("annotations", {"annotations": {"profile.node.kubernetes.io/x": "v"}}, "reserved"),
    ("annotations", {"annotations": {"nodefeatures.dev/labels": "{}"}}, "ledgers"),
    ("taints", {"taints": [{"key": "no-namespace", "effect": "NoSchedule"}]}, "no namespace"),
    ("taints", {"taints": [{"key": "a.io/t", "value": "not ok!", "effect": "NoSchedule"}]},
     "invalid value"),
    ("taints", {"taints": [{"key": "kubernetes.io/t", "effect": "NoSchedule"}]}, "reserved"),
    ("extendedResources", {"extendedResources": {"r": "four"}}, "not a quantity"),
    ("extendedResources", {"extendedResources": {"r": "-1"}}, "not a quantity"),
    ("extendedResources", {"extendedResources": {"r": "@third.party.none"}}, "no element"),
    ("extendedResources", {"extendedResources": {"r": "@third.party.text"}}, "not a quantity"),
    ("extendedResources", {"extendedResources": {"kubernetes.io/r": "1"}}, "reserved"),
    # The API server refuses a fraction of a resource outside kubernetes.io (422, and the
    # status patch with all the others fails), rounds finer amounts up to 1m and caps
    # binary ones at 2^63 - 1: stored differently, each would be rewritten every pass.
    ("extendedResources", {"extendedResources": {"vendor.io/r": "1500m"}}, "whole number"),
    ("extendedResources", {"extendedResources": {"r": "0.0015"}}, "1m"),
    ("extendedResources", {"extendedResources": {"r": "1n"}}, "1m"),
    ("extendedResources", {"extendedResources": {"r": "8Ei"}}, "more than"),
])
def test_an_output_nfd_master_would_refuse_is_dropped_with_a_problem(
        kind: str, rule: dict[str, Any], expected: str) -> None:
    obj = loaded("a", {"name": "r", "labels": {"y": "1"}, **rule})
    [outcome] = evaluate([obj], features())
    assert outcome.outputs.get(kind, {}) == {}
    assert outcome.labels == {"feature.node.kubernetes.io/y": "1"}  # the rest still holds
    assert outcome.ok  # a dropped item is not a failed rule: nfd-master drops it too
    assert any(expected in p for p in outcome.problems), outcome.problems


def test_sub_namespaces_of_feature_node_kubernetes_io_are_own_for_outputs() -> None:
    obj = loaded("a", {"name": "r", "annotations": {"gpu.feature.node.kubernetes.io/x": "1"},
                       "taints": [{"key": "gpu.feature.node.kubernetes.io/t",
                                   "effect": "PreferNoSchedule"}]})
    [outcome] = evaluate([obj], features())
    assert outcome.outputs == {
        "annotations": {"gpu.feature.node.kubernetes.io/x": "1"},
        "taints": {"gpu.feature.node.kubernetes.io/t:PreferNoSchedule": ""}}


def test_a_later_object_wins_an_output_key_as_it_wins_a_label() -> None:
    a = loaded("a", {"name": "r", "taints": [{"key": "v.io/t", "value": "a",
                                              "effect": "NoSchedule"}]})
    b = loaded("b", {"name": "r", "taints": [{"key": "v.io/t", "value": "b",
                                              "effect": "NoSchedule"}]})
    assert cluster.merged(evaluate([a, b], features()), "taints") == {
        "nodefeaturerule/a": {}, "nodefeaturerule/b": {"v.io/t:NoSchedule": "b"}}


def test_an_object_cut_by_the_budget_gives_no_outputs() -> None:
    rules = [{"name": f"r{i}", "annotations": {"a.io/n": str(i)}} for i in range(50)]
    obj = loaded("a", *rules)
    [outcome] = evaluate([obj], features(), EvalBudget(rules=10))
    assert not outcome.ok and outcome.outputs == {}


def test_merged_gives_each_key_to_the_last_object() -> None:
    a = loaded("a", {"name": "r", "labels": {"k": "a", "only-a": "1"}})
    b = loaded("b", {"name": "r", "labels": {"k": "b"}})
    assert cluster.merged(evaluate([a, b], features())) == {
        "nodefeaturerule/a": {"feature.node.kubernetes.io/only-a": "1"},
        "nodefeaturerule/b": {"feature.node.kubernetes.io/k": "b"},
    }


# -- hostile objects: bounded, and the others still evaluate ---------------------------

FINE = {"name": "fine", "labels": {"fine": "true"}, "matchFeatures": [CPU]}


def timed(objects: list[RuleObject], given: FeatureSet,
          budget: EvalBudget | None = None) -> tuple[list[cluster.ObjectOutcome], float]:
    started = time.monotonic()
    outcomes = evaluate(objects, given, budget or EvalBudget())
    return outcomes, time.monotonic() - started


def assert_others_fine(outcomes: list[cluster.ObjectOutcome], hostile: str) -> None:
    for outcome in outcomes:
        if outcome.name == hostile:
            assert not outcome.ok and outcome.labels == {}
            assert any("not evaluated: over the per-pass budget" in p
                       for p in outcome.problems), outcome.problems
        else:
            assert outcome.ok, outcome.problems
            assert outcome.labels == {"feature.node.kubernetes.io/fine": "true"}


def test_twenty_thousand_rules_cost_nothing_beyond_parsing_and_starve_no_one() -> None:
    rules = [{"name": f"r{i}", "labels": {f"l{i}": "1"}, "matchFeatures": [CPU]}
             for i in range(20_000)]
    started = time.monotonic()
    huge = load(nfr("aaa", rules))
    assert time.monotonic() - started < 5
    assert not huge.usable and any("rules" in p for p in huge.problems)
    # Within what load takes but over what a pass may evaluate: skipped without a cost.
    big = RuleObject("aab", "nodefeaturerule/aab", loaded("x", *rules[:6000]).rules, (), True)
    outcomes, seconds = timed([huge, big, loaded("zzz", FINE)], features())
    assert seconds < 0.5
    assert not outcomes[0].ok
    assert_others_fine(outcomes[1:], "aab")


def test_a_catastrophic_regexp_is_linear_and_bounded() -> None:
    regexp = {"name": "r", "labels": {"x": "1"}, "matchFeatures": [{
        "feature": "third.party", "matchExpressions": {"text": {
            "op": "InRegexp", "value": ["(a+)+$", "^(a|aa)+$", "(x+x+)+y"]}}}]}
    rules = [dict(regexp, name=f"r{i}") for i in range(1000)]
    outcomes, seconds = timed([loaded("aaa", *rules), loaded("zzz", FINE)],
                              features("a" * 1000 + "!"))
    assert seconds < 2  # the budget, one rule over it, and a loaded machine
    assert_others_fine(outcomes, "aaa")


def test_templates_that_loop_are_step_bounded_and_cut_by_the_budget() -> None:
    nested = ("{{range .cpu.cpuid}}{{range $.cpu.cpuid}}{{range $.cpu.cpuid}}"
              "{{range $.cpu.cpuid}}{{range $.cpu.cpuid}}{{.Name}}{{end}}{{end}}{{end}}{{end}}"
              "{{end}}")
    given = FeatureSet()
    given.set_flags("cpu.cpuid", [f"F{i}" for i in range(60)] + ["AVX"])
    rules = [{"name": f"t{i}", "labelsTemplate": nested + f"{i}",
              "matchFeatures": [{"feature": "cpu.cpuid", "matchName": {"op": "Exists"}}]}
             for i in range(50)]
    gotemplate.forget_expansions()  # each pass below pays for every template
    outcomes, seconds = timed([loaded("aaa", *rules), loaded("zzz", FINE)], given)
    assert seconds < 2
    assert_others_fine(outcomes, "aaa")
    # Cut after a rule or two: the first one over half the budget ends the object.
    assert outcomes[0].problems[-1].startswith("not evaluated: over the per-pass budget")


def test_the_budget_counts_rules_across_objects() -> None:
    objects = [loaded(f"o{i}", *[dict(FINE, name=f"r{j}") for j in range(3)])
               for i in range(4)]
    outcomes = evaluate(objects, features(), EvalBudget(rules=7))
    assert [o.ok for o in outcomes] == [True, True, False, False]
    assert "7 rules" in outcomes[2].problems[0]


def test_an_object_too_costly_to_read_is_not_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "LOAD_SECONDS", 0.05)
    rules = [{"name": f"r{i}", "labels": {"x": "1"}, "matchFeatures": [{
        "feature": "third.party", "matchExpressions": {"text": {
            "op": "InRegexp", "value": [f"(a{i}+)+$", f"^(b|bb{i})+$"]}}}]} for i in range(2000)]
    started = time.thread_time()
    obj = load(nfr("aaa", rules))
    assert time.thread_time() - started < 0.5
    assert not obj.usable and "took more than 0.05 s CPU" in obj.problems[-1]


def test_an_unexpected_error_in_one_rule_costs_only_that_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = cluster.engine.run

    def failing(rules: Any, given: FeatureSet) -> Any:
        if rules[0].name == "boom":
            raise RecursionError("deep")
        return real(rules, given)

    monkeypatch.setattr(cluster.engine, "run", failing)
    obj = loaded("a", {"name": "boom", "labels": {"x": "1"}}, dict(FINE))
    [outcome] = evaluate([obj], features())
    assert not outcome.ok and outcome.labels == {"feature.node.kubernetes.io/fine": "true"}
    assert any("'boom'" in p and "RecursionError" in p for p in outcome.problems)


def test_a_reader_of_rule_matched_after_an_object_that_failed_is_not_clean() -> None:
    # "b" gives its label only on "a"'s output. When "a" cannot be used this pass, "b"'s
    # silence says nothing about the node: its label must not be removed as gone.
    reader = loaded("b", {"name": "uses-a", "labels": {"both": "true"}, "matchFeatures": [
        {"feature": "rule.matched", "matchExpressions": {"base": {"op": "Exists"}}}]})
    other = loaded("c", {"name": "plain", "labels": {"c": "1"}})
    a = loaded("a", {"name": "base", "labels": {"base": "1"}, "matchFeatures": [CPU]})
    fine = evaluate([a, reader, other], features())
    assert [o.ok for o in fine] == [True, True, True]
    assert fine[1].labels == {"feature.node.kubernetes.io/both": "true"}
    broken = load(nfr("a", [{"name": "base", "bogus": 1}]))
    for failed in (broken, loaded("a", {"name": "base", "labels": {"base": "1"},
                                        "matchFeatures": [{"feature": "third.party",
                                        "matchExpressions": {"text": {"op": "Gt",
                                                                      "value": ["1"]}}}]})):
        outcomes = evaluate([failed, reader, other], features())
        assert not outcomes[0].ok
        assert not outcomes[1].ok and outcomes[1].labels == {}
        assert any("nodefeaturerule/a" in p for p in outcomes[1].problems), outcomes[1].problems
        assert outcomes[2].ok  # an object that does not read rule.matched is not affected


def test_a_reader_of_rule_matched_after_a_cut_object_is_not_clean() -> None:
    slow = loaded("a", *({"name": f"r{i}", "labels": {"base": "1"}} for i in range(3)))
    reader = loaded("b", {"name": "uses-a", "labels": {"both": "true"}, "matchAny": [
        {"matchFeatures": [{"feature": "rule.matched",
                            "matchExpressions": {"base": {"op": "Exists"}}}]}]})
    outcomes = evaluate([slow, reader], features(), EvalBudget(rules=2))
    assert not outcomes[0].ok
    assert not outcomes[1].ok


def test_what_a_cut_object_is_told_does_not_change_from_pass_to_pass() -> None:
    # Its problems become a log line and an Event each time they read differently: CPU
    # times and counts of how far it got would make one of each every pass.
    regexp = {"name": "r", "labels": {"x": "1"}, "matchFeatures": [{
        "feature": "third.party", "matchExpressions": {"text": {
            "op": "InRegexp", "value": ["(a+)+$", "^(a|aa)+$", "(x+x+)+y"]}}}]}
    objects = [loaded("aaa", *[dict(regexp, name=f"r{i}") for i in range(1000)]),
               loaded("bbb", *[dict(regexp, name=f"r{i}") for i in range(1000)]),
               loaded("zzz", *[dict(FINE, name=f"f{i}") for i in range(3)])]
    given = features("a" * 1000 + "!")
    budget = EvalBudget(seconds=0.05, rules=1500)
    passes = [evaluate(objects, given, budget) for _ in range(3)]
    assert not passes[0][0].ok and not passes[0][1].ok
    for outcomes in passes[1:]:
        assert [o.problems for o in outcomes] == [o.problems for o in passes[0]]
