"""Random rules never crash the engine and never produce an invalid label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hosttree import HostTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodefeatures.discovery.config import Config
from nodefeatures.discovery.labels import key_error, value_error
from nodefeatures.discovery.rules import engine
from nodefeatures.discovery.rules.expressions import OPERATORS
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import parse_rules
from nodefeatures.discovery.run import run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.custom import CustomSource

FEATURES = ["pci.device", "kernel.loadedmodule", "kernel.version", "local.label",
            "rule.matched", "no.such", "PCI.Device", "nodot"]
ELEMENTS = ["vendor", "class", "ib_uverbs", "major", "full", "x", "gpu", ""]
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
words = st.sampled_from(["15b3", "10de", "5", "-1", "5.15", "1.2.3-rc1", "true", "false",
                         "^AVX", "(", "@kernel.version.major", "@no.such.x", ""]) | text
scalar = words | st.integers(-10**20, 10**20) | st.booleans() | st.floats() | st.none()
values = scalar | st.lists(scalar, max_size=3)
expression = st.one_of(
    scalar,
    st.lists(st.text(max_size=6), max_size=3),
    st.fixed_dictionaries({}, optional={
        "op": st.sampled_from([*OPERATORS, "", "Bogus"]) | scalar,
        "value": values,
        "type": st.sampled_from(["", "version", "semver"]) | scalar,
    }),
)
expressions = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(ELEMENTS) | text, expression, max_size=3),
    st.lists(st.sampled_from(["ib_uverbs", "vendor=15b3", "x=", "=", "a=b=c"]), max_size=3),
    scalar,
)
term = st.fixed_dictionaries({"feature": st.sampled_from(FEATURES) | text}, optional={
    "matchExpressions": expressions, "matchName": expression, "bogus": scalar})
terms = st.lists(term, max_size=3) | scalar
label_key = st.sampled_from(["rdma.capable", "vendor.io/x", "a/b/c", "Kubernetes.io/x",
                             "sub.kubernetes.io/x", "-bad", "x" * 70, "ok_name"]) | text
rule = st.fixed_dictionaries({"name": text | scalar}, optional={
    "labels": st.dictionaries(label_key, words | scalar, max_size=4) | scalar,
    "vars": st.dictionaries(label_key, words, max_size=2),
    "matchFeatures": terms,
    "matchAny": st.lists(st.fixed_dictionaries({"matchFeatures": terms}), max_size=2) | scalar,
    "annotations": st.dictionaries(text, text, max_size=2),
    "labelsTemplate": st.sampled_from(["", "{{ x }}"]),
})
# Mostly well-formed rules, so that evaluation (not only parsing) is exercised.
number = st.integers(-5, 10).map(str)
good_expression = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["In", "NotIn", "InRegexp"]),
                           "value": st.lists(words, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"op": st.sampled_from(["Exists", "DoesNotExist", "IsTrue",
                                                  "IsFalse"])}),
    st.fixed_dictionaries({"op": st.sampled_from(["Gt", "Ge", "Lt", "Le"]),
                           "value": st.tuples(number).map(list)}),
    st.fixed_dictionaries({"op": st.sampled_from(["Gt", "Lt"]), "type": st.just("version"),
                           "value": st.sampled_from([["5.4"], ["1"], ["v6.1.2"]])}),
    st.fixed_dictionaries({"op": st.sampled_from(["GtLt", "GeLe"]),
                           "value": st.just(["1", "9"])}),
    words,
)
good_term = st.fixed_dictionaries({"feature": st.sampled_from(FEATURES)}, optional={
    "matchExpressions": st.dictionaries(st.sampled_from(ELEMENTS), good_expression,
                                        max_size=3),
    "matchName": good_expression})
good_rule = st.fixed_dictionaries({
    "name": st.text(min_size=1, max_size=8),
    "labels": st.dictionaries(label_key, words, max_size=4),
}, optional={
    "vars": st.dictionaries(st.sampled_from(["x", "gpu"]), words, max_size=2),
    "matchFeatures": st.lists(good_term, max_size=3),
    "matchAny": st.lists(st.fixed_dictionaries({"matchFeatures": st.lists(good_term,
                                                                          max_size=2)}),
                         max_size=2),
})
documents = st.lists(good_rule | rule, max_size=5) | scalar


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    tree = HostTree(Path(tmp_path_factory.mktemp("node")))
    for name, value in (("vendor", "0x15b3"), ("class", "0x020700"), ("device", "0x101b"),
                        ("subsystem_vendor", "0x15b3"), ("subsystem_device", "0x0007")):
        tree.file(f"sys/bus/pci/devices/0000:0c:00.0/{name}", value + "\n")
    tree.file("proc/modules", "ib_uverbs 16384 0 - Live 0x0\nrdma_ucm 16384 0 - Live 0x0\n")
    return tree.host()


def feature_set() -> FeatureSet:
    features = FeatureSet()
    features.set_flags("kernel.loadedmodule", ["ib_uverbs", "5", "true"])
    features.update_attributes("kernel.version", {"major": "5", "full": "5.15.0-91-generic",
                                                  "x": ""})
    features.set_instances("pci.device", [{"vendor": "15b3", "class": "0207"},
                                          {"vendor": "10de", "major": "x"}])
    return features


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_rules_never_crash_the_engine(document: Any) -> None:
    rules, problems = parse_rules(document, "rules")
    assert all(str(p) for p in problems)
    for outcome in engine.run(rules, feature_set()):
        assert outcome.matched or not outcome.labels
        assert outcome.error is None or not outcome.matched


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(documents)
def test_random_rules_never_emit_an_invalid_label(host: Host, document: Any) -> None:
    rules, _ = parse_rules(document, "rules")
    source = CustomSource()
    config = Config(sources={"custom": {"rules": rules}})
    result = run_source(host, source, config)
    assert result.error is None, result.error
    for key, label in result.labels.items():
        assert key_error(key) is None, key
        assert value_error(label.value) is None, (key, label.value)
        assert not key.split("/")[0].endswith("kubernetes.io") or key.startswith(
            "feature.node.kubernetes.io/")
