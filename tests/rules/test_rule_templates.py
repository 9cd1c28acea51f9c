"""labelsTemplate / varsTemplate in rules: NFD's data shape, merging and every template
example of NFD's customization guide (v0.19.0), with NFD's result."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import yaml

from nodefeatures.discovery.rules import engine
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import Rule, parse_rule, parse_rules


def node() -> FeatureSet:
    features = FeatureSet()
    features.set_instances("pci.device", [
        {"vendor": "0fff", "class": "0200", "device": "1234"},
        {"vendor": "0fff", "class": "0207", "device": "abcd"},
        {"vendor": "0fff", "class": "0300", "device": "9999"},
        {"vendor": "8086", "class": "0200", "device": "1533"},
        {"vendor": "8086", "class": "0200", "device": "1521"},
    ])
    features.update_attributes("system.osrelease", {
        "ID": "ubuntu", "VERSION_ID": "22.04", "VERSION_ID.major": "22",
        "VERSION_ID.minor": "04"})
    features.set_flags("kernel.loadedmodule", ["nvidia", "ib_uverbs"])
    features.update_attributes("kernel.version", {"major": "5", "minor": "15"})
    return features


def one(text: str) -> Rule:
    data = yaml.safe_load(text)
    parsed, problems = parse_rule(data, "")
    assert problems == [], problems
    assert parsed is not None
    return parsed


def with_template(text: str, template: str) -> Rule:
    return one(yaml.safe_dump({**yaml.safe_load(text), "labelsTemplate": template}))


def run(text: str) -> list[engine.Outcome]:
    rules, problems = parse_rules(yaml.safe_load(text))
    assert problems == [], problems
    return engine.run(rules, node())


# -- the examples of NFD's customization guide, section "Templating" ----------------------

def test_guide_instance_template_makes_a_label_per_matched_device() -> None:
    outcome = engine.evaluate(one("""
    name: guide 1
    labelsTemplate: |
      {{ range .pci.device }}vendor-{{ .class }}-{{ .device }}.present=true
      {{ end }}
    matchFeatures:
      - feature: pci.device
        matchExpressions:
          class: {op: InRegexp, value: ["^02"]}
          vendor: ["0fff"]
    """), node())
    assert outcome.error is None
    # The 0300 device of 0fff and the 8086 devices did not match: no label for them.
    assert outcome.labels == {"vendor-0200-1234.present": "true",
                              "vendor-0207-abcd.present": "true"}


def test_guide_attribute_template_as_written_fails_as_in_nfd() -> None:
    # The guide writes `feature: system.osRelease` and reads `.system.osrelease`. NFD
    # keys the template data by the feature name as written (it lowercases it only to
    # look the feature up), so v0.19.0 fails this rule with a missing map key.
    outcome = engine.evaluate(one("""
    name: guide 2
    labelsTemplate: |
      {{ range .system.osrelease }}system-{{ .Name }}={{ .Value }}
      {{ end }}
    matchFeatures:
      - feature: system.osRelease
        matchExpressions:
          ID: {op: Exists}
          VERSION_ID.major: {op: Exists}
    """), node())
    assert not outcome.matched and outcome.labels == {}
    assert outcome.error is not None
    assert 'map has no entry for key "osrelease"' in outcome.error


def test_guide_attribute_template_with_the_name_spelled_alike() -> None:
    outcome = engine.evaluate(one("""
    name: guide 2 fixed
    labelsTemplate: |
      {{ range .system.osrelease }}system-{{ .Name }}={{ .Value }}
      {{ end }}
    matchFeatures:
      - feature: system.osrelease
        matchExpressions:
          ID: {op: Exists}
          VERSION_ID.major: {op: Exists}
    """), node())
    assert outcome.error is None
    # Only the matched elements, not every attribute of the feature.
    assert outcome.labels == {"system-ID": "ubuntu", "system-VERSION_ID.major": "22"}


def test_guide_len_first_trim_substr() -> None:
    outcome = engine.evaluate(one("""
    name: guide 3
    labelsTemplate: |
      num-intel-network-controllers={{ .pci.device | len }}
      first-intel-network-controllers={{ (.pci.device | first).class | trim | substr 0 63 }}
    matchFeatures:
      - feature: pci.device
        matchExpressions:
          vendor: {op: In, value: ["8086"]}
          class: {op: In, value: ["0200"]}
    """), node())
    assert outcome.error is None
    assert outcome.labels == {"num-intel-network-controllers": "2",
                              "first-intel-network-controllers": "0200"}


MATCH_ANY_RULE = """
name: guide 4
matchFeatures:
  - feature: pci.device
    matchExpressions: {vendor: ["8086"], device: ["1533"]}
matchAny:
  - matchFeatures:
      - feature: kernel.loadedmodule
        matchExpressions: {nvidia: {op: Exists}}
  - matchFeatures:
      - feature: kernel.loadedmodule
        matchExpressions: {absent: {op: Exists}}
  - matchFeatures:
      - feature: kernel.loadedmodule
        matchExpressions: {ib_uverbs: {op: Exists}}
"""


def test_guide_match_any_runs_the_template_per_matcher_and_unites_the_results() -> None:
    # `index` yields an empty value for what a matcher did not match, so one template
    # serves every matcher.
    template = ('{{ range index . "kernel" "loadedmodule" }}mod-{{ .Name }}=true\n{{ end }}'
                '{{ range index . "pci" "device" }}dev-{{ .device }}=true\n{{ end }}')
    outcome = engine.evaluate(with_template(MATCH_ANY_RULE, template), node())
    assert outcome.error is None, outcome.error
    # matchAny groups 1 and 3 matched (each expanded on its own), then matchFeatures.
    assert outcome.labels == {"mod-nvidia": "true", "mod-ib_uverbs": "true",
                              "dev-1533": "true"}


def test_each_expansion_sees_only_its_own_matcher() -> None:
    # The data of one expansion is one matcher's: `.pci` is missing while the matchAny
    # groups are expanded, and NFD's missingkey=error makes that an error.
    template = "{{ range .pci.device }}dev-{{ .device }}=true\n{{ end }}"
    outcome = engine.evaluate(with_template(MATCH_ANY_RULE, template), node())
    assert outcome.error == 'labelsTemplate: line 1: map has no entry for key "pci"'


def test_guide_matched_elements_union_of_match_expressions_and_match_name() -> None:
    outcome = engine.evaluate(one("""
    name: guide note 1
    labelsTemplate: "{{ range .kernel.version }}{{ .Name }}={{ .Value }}\\n{{ end }}"
    matchFeatures:
      - feature: kernel.version
        matchExpressions: {major: {op: Exists}}
        matchName: {op: In, value: [minor]}
    """), node())
    assert outcome.error is None
    assert outcome.labels == {"major": "5", "minor": "15"}


# -- merging, precedence and what later rules see ---------------------------------------

def test_static_labels_and_vars_override_the_templates() -> None:
    outcome = engine.evaluate(one("""
    name: precedence
    labels: {a: static}
    vars: {v: static}
    labelsTemplate: "a=templated\\nb=templated"
    varsTemplate: "v=templated\\nw=templated"
    matchFeatures: [{feature: kernel.version}]
    """), node())
    assert outcome.labels == {"a": "static", "b": "templated"}
    assert outcome.vars == {"v": "static", "w": "templated"}


def test_templated_labels_and_vars_feed_rule_matched() -> None:
    outcomes = run("""
    - name: first
      labelsTemplate: "{{ range .kernel.version }}k-{{ .Name }}={{ .Value }}{{ end }}"
      varsTemplate: "{{ range .pci.device }}nic-{{ .device }}=true\\n{{ end }}"
      matchFeatures:
        - feature: kernel.version
          matchExpressions: {major: {op: Gt, value: ["4"]}}
        - feature: pci.device
          matchExpressions: {vendor: ["8086"]}
    - name: second
      labels: {both: "true"}
      matchFeatures:
        - feature: rule.matched
          matchExpressions:
            k-major: {op: In, value: ["5"]}
            nic-1521: {op: IsTrue}
    """)
    assert [o.error for o in outcomes] == [None, None]
    assert outcomes[0].labels == {"k-major": "5"}
    assert outcomes[0].vars == {"nic-1533": "true", "nic-1521": "true"}
    assert outcomes[1].matched and outcomes[1].labels == {"both": "true"}


def test_a_templated_backreference_is_resolved_like_a_static_one() -> None:
    outcome = engine.evaluate(one("""
    name: backref
    labelsTemplate: "kmajor=@kernel.version.major"
    matchFeatures: [{feature: kernel.version}]
    """), node())
    assert outcome.labels == {"kmajor": "5"}


@pytest.mark.parametrize(("template", "labels"), [
    ("\n\n  a=1  \n\t\n b = 2\n", {"a": "1", "b ": " 2"}),  # lines trimmed, not around =
    ("a=1=2", {"a": "1=2"}),  # split at the first =
    ("a=1\na=2", {"a": "2"}),  # a later line wins
    ("a=", {"a": ""}),
])
def test_output_lines_are_read_as_nfd_reads_them(template: str, labels: Mapping[str, str]
                                                 ) -> None:
    outcome = engine.evaluate(one(yaml.safe_dump({
        "name": "lines", "labelsTemplate": template,
        "matchFeatures": [{"feature": "kernel.version"}]})), node())
    assert outcome.error is None and outcome.labels == labels


@pytest.mark.parametrize(("template", "reason"), [
    ("a=1\njust-a-key\n", "missing value in expanded template line 'just-a-key'"),
    ("{{ .kernel.nothing }}", 'map has no entry for key "nothing"'),
    ("{{ range .kernel.version }}{{ .class }}{{ end }}", 'no entry for key "class"'),
    ("{{ index .kernel.version 9 }}", "index out of range: 9"),
    ("{{ substr 0 2 3 }}", "expected string; found 3"),
    ("{{ substr 0 2 (len .kernel.version) }}", "wrong type for value; expected string; got int"),
])
def test_a_template_error_fails_the_rule_with_the_reason(template: str, reason: str) -> None:
    outcomes = engine.run([one(yaml.safe_dump({
        "name": "bad", "labels": {"static": "1"}, "labelsTemplate": template,
        "matchFeatures": [{"feature": "kernel.version",
                           "matchExpressions": {"major": {"op": "Exists"}}}]}))], node())
    outcome = outcomes[0]
    assert outcome.error is not None and reason in outcome.error
    assert outcome.error.startswith("labelsTemplate: ")
    assert not outcome.matched and outcome.labels == {}


@pytest.mark.parametrize("templated", [True, False])
def test_with_a_template_every_match_any_group_is_evaluated(templated: bool) -> None:
    # NFD stops at the first matching group only when the rule has no template; with
    # one, a later group that cannot be evaluated fails the whole rule.
    data = yaml.safe_load("""
    name: later group
    labels: {static: "1"}
    matchAny:
      - matchFeatures: [{feature: kernel.version}]
      - matchFeatures:
          - feature: system.osrelease
            matchExpressions: {ID: {op: Gt, value: ["1"]}}
    """)
    if templated:
        data["labelsTemplate"] = "a=1"
    outcome = engine.evaluate(one(yaml.safe_dump(data)), node())
    if templated:
        assert outcome.error is not None and not outcome.matched
    else:
        assert outcome.error is None and outcome.labels == {"static": "1"}


def test_a_template_that_does_not_parse_is_a_problem_of_the_rule() -> None:
    parsed, problems = parse_rule({"name": "r", "labelsTemplate": "{{ range .x }}"}, "[0]")
    assert parsed is None
    assert [p.path for p in problems] == ["[0].labelsTemplate"]
    assert "unexpected EOF" in problems[0].message
    _, problems = parse_rule({"name": "r", "varsTemplate": "{{ env \"HOME\" }}"}, "")
    assert 'function "env" not defined' in problems[0].message


def test_the_data_is_keyed_by_domain_and_feature_as_nfd_keys_it() -> None:
    outcome = engine.evaluate(one("""
    name: shape
    labelsTemplate: |
      top={{ len . }}
      domains={{ range $d, $f := . }}{{ $d }}:
        {{- range $n, $e := $f }}{{ $n }}/{{ len $e }}{{ end }},{{ end }}
      flag={{ index .kernel.loadedmodule 0 }}
      missing={{ index .kernel "nothing" }}
    matchFeatures:
      - feature: kernel.loadedmodule
        matchExpressions: {nvidia: {op: Exists}}
      - feature: kernel.version
      - feature: kernel.loadedmodule
        matchExpressions: {ib_uverbs: {op: Exists}}
    """), node())
    assert outcome.error is None, outcome.error
    # Two terms on one feature append to one list; a term without expressions adds none.
    assert outcome.labels == {"top": "1", "domains": "kernel:loadedmodule/2version/0,",
                              "flag": "map[Name:nvidia]", "missing": "[]"}


def test_a_rule_without_templates_never_loads_the_evaluator() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nodefeatures.discovery.rules import engine\n"
        "from nodefeatures.discovery.rules.features import FeatureSet\n"
        "from nodefeatures.sources.custom.builtin import BUILTIN_RULES\n"
        "engine.run(BUILTIN_RULES, FeatureSet())\n"
        "assert 'nodefeatures.discovery.rules.gotemplate' not in sys.modules\n"
        "assert 'nodefeatures.discovery.rules.gofuncs' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_remembered_expansions_follow_the_matched_elements() -> None:
    rule = one("""
    name: remembered
    labelsTemplate: "{{ range .kernel.version }}{{ .Name }}={{ .Value }}\\n{{ end }}"
    matchFeatures:
      - feature: kernel.version
        matchExpressions: {major: {op: Exists}}
    """)
    first = node()
    second = node()
    second.update_attributes("kernel.version", {"major": "6"})
    assert engine.evaluate(rule, first).labels == {"major": "5"}
    assert engine.evaluate(rule, second).labels == {"major": "6"}
    assert engine.evaluate(rule, first).labels == {"major": "5"}


def test_a_remembered_failure_fails_again() -> None:
    rule = one("""
    name: fails twice
    labelsTemplate: "{{ .kernel.nothing }}"
    matchFeatures: [{feature: kernel.version}]
    """)
    for _ in range(2):
        outcome = engine.evaluate(rule, node())
        assert outcome.error is not None and not outcome.matched
