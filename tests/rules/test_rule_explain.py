"""Why a rule missed: the expression, element and value named must be the ones that failed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodefeatures.discovery.rules import engine, explain
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import Rule, parse_rule


def node() -> FeatureSet:
    features = FeatureSet()
    features.set_flags("kernel.loadedmodule", ["nvidia", "ib_uverbs"])
    features.update_attributes("kernel.version", {"major": "5", "full": "5.15.0-91-generic"})
    features.update_attributes("kernel.selinux", {"enabled": "false"})
    features.update_attributes("system.osrelease", {"ID": "ubuntu", "VERSION_ID": "22.04"})
    features.set_instances("pci.device", [
        {"vendor": "8086", "class": "0600", "device": "1234"},
        {"vendor": "10de", "class": "0302", "device": "2330"},
        {"vendor": "15b3", "class": "0207", "device": "101b"},
    ])
    return features


def rule(data: Mapping[str, Any]) -> Rule:
    parsed, problems = parse_rule({"name": "r", "labels": {"x": "y"}, **data}, "")
    assert problems == [], problems
    assert parsed is not None
    return parsed


def miss_of(data: Mapping[str, Any]) -> tuple[engine.Miss, ...]:
    (outcome,) = explain.run([rule(data)], node())
    assert outcome.error is None and not outcome.matched
    return outcome.misses


def one(feature: str, expressions: Any) -> dict[str, Any]:
    return {"matchFeatures": [{"feature": feature, "matchExpressions": expressions}]}


# (feature, expressions: the first passes, the second fails, expression, element, value)
FAMILIES = [
    ("kernel.version", {"major": {"op": "In", "value": ["5"]},
                        "full": {"op": "In", "value": ["6.1"]}},
     "full In [6.1]", "full", "5.15.0-91-generic"),
    ("kernel.version", {"major": {"op": "Exists"}, "major2": {"op": "NotIn", "value": ["1"]}},
     "major2 NotIn [1]", "major2", None),
    ("system.osrelease", {"ID": {"op": "InRegexp", "value": ["^ubu"]},
                          "VERSION_ID": {"op": "InRegexp", "value": ["^24"]}},
     "VERSION_ID InRegexp [^24]", "VERSION_ID", "22.04"),
    ("kernel.loadedmodule", {"nvidia": {"op": "Exists"}, "rdma_ucm": {"op": "Exists"}},
     "rdma_ucm Exists", "rdma_ucm", None),
    ("kernel.loadedmodule", {"rdma_ucm": {"op": "DoesNotExist"},
                             "ib_uverbs": {"op": "DoesNotExist"}},
     "ib_uverbs DoesNotExist", "ib_uverbs", None),
    ("kernel.version", {"major": {"op": "Ge", "value": ["5"]},
                        "full": {"op": "Gt", "type": "version", "value": ["6.0"]}},
     "full Gt [6.0] (version)", "full", "5.15.0-91-generic"),
    ("kernel.version", {"major": {"op": "GtLt", "value": ["4", "6"]},
                        "full": {"op": "GeLe", "type": "version", "value": ["6.1", "6.9"]}},
     "full GeLe [6.1, 6.9] (version)", "full", "5.15.0-91-generic"),
    ("kernel.version", {"major": {"op": "Le", "value": ["5"]},
                        "minor": {"op": "Lt", "value": ["3"]}},
     "minor Lt [3]", "minor", None),
    ("kernel.selinux", {"enabled": {"op": "IsFalse"}, "enforcing": {"op": "IsTrue"}},
     "enforcing IsTrue", "enforcing", None),
    ("kernel.selinux", {"enabled": {"op": "IsTrue"}},
     "enabled IsTrue", "enabled", "false"),
    ("kernel.loadedmodule", {"nvidia": {"op": "In", "value": ["x"]}},
     "nvidia In [x]", "nvidia", None),
]


@pytest.mark.parametrize(("feature", "expressions", "shown", "element", "value"), FAMILIES,
                         ids=[f[2] for f in FAMILIES])
def test_a_miss_names_the_failing_expression_its_element_and_value(
        feature: str, expressions: dict[str, Any], shown: str, element: str,
        value: str | None) -> None:
    (miss,) = miss_of(one(feature, expressions))
    assert (miss.where, miss.feature, miss.expression, miss.element, miss.value) == (
        "matchFeatures[0]", feature, shown, element, value)
    if value is not None:
        assert f"{element} is {value!r}" in miss.reason
    assert shown in miss.reason


def test_of_two_failing_expressions_the_first_written_is_named() -> None:
    (miss,) = miss_of(one("kernel.version", {"major": {"op": "In", "value": ["6"]},
                                             "full": {"op": "In", "value": ["6.1"]}}))
    assert (miss.element, miss.value) == ("major", "5")
    (miss,) = miss_of(one("pci.device", {"class": {"op": "In", "value": ["0b40"]},
                                         "vendor": {"op": "In", "value": ["1002"]}}))
    assert miss.element == "class"


def test_a_flag_is_said_to_have_no_value() -> None:
    (miss,) = miss_of(one("kernel.loadedmodule", {"nvidia": {"op": "In", "value": ["x"]}}))
    assert miss.present and "is a flag" in miss.reason


def test_an_absent_element_is_said_to_be_absent() -> None:
    (miss,) = miss_of(one("kernel.version", {"minor": {"op": "NotIn", "value": ["1"]}}))
    assert not miss.present and "has no element 'minor'" in miss.reason


def test_a_missing_feature_is_named_as_missing() -> None:
    (miss,) = miss_of(one("cpu.cpuid", {"AVX": {"op": "DoesNotExist"}}))
    assert miss.feature == "cpu.cpuid" and miss.element is None
    assert "does not exist" in miss.reason


def test_the_first_failing_term_is_named() -> None:
    (miss,) = miss_of({"matchFeatures": [
        {"feature": "kernel.loadedmodule", "matchExpressions": {"nvidia": {"op": "Exists"}}},
        {"feature": "system.osrelease", "matchExpressions": {"ID": {"op": "In",
                                                                   "value": ["rhel"]}}},
        {"feature": "no.such"},
    ]})
    assert (miss.where, miss.element, miss.value) == ("matchFeatures[1]", "ID", "ubuntu")


def test_instances_name_the_nearest_instance_and_the_values_seen() -> None:
    # Device 10de/0302 passes vendor and fails on class; 8086 fails at once.
    (miss,) = miss_of(one("pci.device", {"vendor": {"op": "In", "value": ["10de"]},
                                         "class": {"op": "InRegexp", "value": ["^03(00)?$"]}}))
    assert (miss.expression, miss.element, miss.value) == (
        "class InRegexp [^03(00)?$]", "class", "0302")
    assert "none of the 3 instances" in miss.reason and "#1" in miss.reason
    assert "'0207', '0302', '0600'" in miss.reason


def test_an_element_no_instance_has_is_said_so() -> None:
    (miss,) = miss_of(one("pci.device", {"sriov_totalvfs": {"op": "Gt", "value": ["0"]}}))
    assert miss.element == "sriov_totalvfs" and miss.value is None
    assert "no instance has 'sriov_totalvfs'" in miss.reason


def test_match_name_miss_lists_the_names() -> None:
    (miss,) = miss_of({"matchFeatures": [{"feature": "kernel.loadedmodule", "matchName": {
        "op": "InRegexp", "value": ["^mlx"]}}]})
    assert miss.expression == "matchName InRegexp [^mlx]"
    assert "ib_uverbs, nvidia" in miss.reason


def test_match_any_explains_every_group_and_match_features_only_when_reached() -> None:
    misses = miss_of({"matchAny": [
        {"matchFeatures": [{"feature": "kernel.loadedmodule",
                            "matchExpressions": {"gdrdrv": {"op": "Exists"}}}]},
        {"matchFeatures": [{"feature": "system.osrelease",
                            "matchExpressions": {"ID": {"op": "In", "value": ["rhel"]}}}]},
    ], "matchFeatures": [{"feature": "no.such"}]})
    assert [(m.where, m.element) for m in misses] == [
        ("matchAny[0].matchFeatures[0]", "gdrdrv"), ("matchAny[1].matchFeatures[0]", "ID")]
    # A group matched: the miss is then matchFeatures'.
    misses = miss_of({"matchAny": [{"matchFeatures": [{"feature": "kernel.loadedmodule"}]}],
                      "matchFeatures": [{"feature": "no.such"}]})
    assert [(m.where, m.feature) for m in misses] == [("matchFeatures[0]", "no.such")]


def test_a_miss_is_explained_against_rule_matched_as_that_rule_saw_it() -> None:
    first = rule({"name": "a", "labels": {"a": "1"}, **one(
        "kernel.loadedmodule", {"nvidia": {"op": "Exists"}})})
    # Before `a` ran, rule.matched had no `a`; explained after it would differ.
    before = rule({"name": "b", **one("rule.matched", {"a": {"op": "In", "value": ["2"]}})})
    outcomes = explain.run([first, before], node())
    assert outcomes[0].matched
    (miss,) = outcomes[1].misses
    assert (miss.element, miss.value) == ("a", "1")


def test_the_agent_pass_explains_nothing() -> None:
    (outcome,) = engine.run([rule(one("no.such", {"x": {"op": "Exists"}}))], node())
    assert not outcome.matched and outcome.misses == ()


def test_matched_elements_show_what_the_expressions_named_counted() -> None:
    features = node()
    features.set_instances("pci.device", [{"vendor": "15b3", "class": "0207", "device": d}
                                          for d in ("1", "2", "3")])
    (outcome,) = explain.run([rule(one("pci.device", {"vendor": ["15b3"]}))], features)
    assert engine.matched_elements(outcome) == [("pci.device", "vendor=15b3", 3)]


# The explanation must agree with the engine: a missed rule always gets a miss naming a
# failing part, and a matched rule none. Random expressions over the node above.
OPS = st.sampled_from(["In", "NotIn", "InRegexp", "Exists", "DoesNotExist", "IsTrue"])
NAMES = st.sampled_from(["nvidia", "rdma_ucm", "major", "full", "ID", "vendor", "class",
                         "enabled", "none"])
FEATURES = st.sampled_from(["kernel.loadedmodule", "kernel.version", "system.osrelease",
                            "pci.device", "kernel.selinux", "no.such"])
VALUES = st.sampled_from(["5", "ubuntu", "10de", "^1", "0207", "false", "nvidia"])


@st.composite
def expression(draw: Any) -> dict[str, Any]:
    op = draw(OPS)
    if op in ("In", "NotIn", "InRegexp"):
        return {"op": op, "value": draw(st.lists(VALUES, min_size=1, max_size=2))}
    return {"op": op}


TERMS = st.lists(st.fixed_dictionaries({
    "feature": FEATURES,
    "matchExpressions": st.dictionaries(NAMES, expression(), min_size=1, max_size=3)}),
    min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(TERMS, st.lists(TERMS, max_size=2))
def test_every_miss_is_explained_and_no_match_is(terms: list[Any], groups: list[Any]) -> None:
    data: dict[str, Any] = {"matchFeatures": terms}
    if groups:
        data["matchAny"] = [{"matchFeatures": g} for g in groups]
    (outcome,) = explain.run([rule(data)], node())
    assert outcome.error is None
    if outcome.matched:
        assert outcome.misses == ()
    else:
        assert outcome.misses, data
        for miss in outcome.misses:
            assert miss.where.startswith(("matchFeatures[", "matchAny[")) and miss.reason
