"""Random templates never crash the evaluator and never publish an invalid label."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hosttree import HostTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodefeatures.discovery.config import Config
from nodefeatures.discovery.labels import key_error, value_error
from nodefeatures.discovery.rules import engine, gotemplate
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.gofuncs import FUNCTIONS, TemplateError
from nodefeatures.discovery.rules.model import parse_rules
from nodefeatures.discovery.run import run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.custom import CustomSource

# Pieces of templates: enough of the grammar that many random sequences parse and run.
PIECES = [
    "{{", "}}", "{{- ", " -}}", "{{ end }}", "{{ else }}", "{{ range ", "{{ if ", "{{ with ",
    "{{ else if ", "{{ break }}", "{{ continue }}", "{{/* c */}}", " ", "\n", "=", "-", ".",
    "x", "a=1\n", "$", "$x", "$i", ", ", " := ", " = ", " | ", "(", ")", "nil", "true",
    "0", "1", "-1", "3", "1.5", "'a'", '"s"', '"a=b"', '"%s"', '"%d"', '"^[a-z]+$"',
    "`raw`", ".pci", ".pci.device", ".kernel.loadedmodule", ".Name", ".Value", ".vendor",
    ".class", "$.pci", "and", "or", "not", *FUNCTIONS, "define", "template", "env", "{{ .",
]
templates = st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=24).map("".join)
# Well-formed skeletons with random holes, so execution (not only parsing) is exercised.
COMMON = ["$i", "(len $.pci.device)", "(add $i 1)", "(eq $i 0)", "(printf \"%d-x\" $i)",
          "(index $.pci.device 0).vendor", "nil", "$.pci", "(list 1 \"a\")", "\"v w\""]
ON_DEVICE = [".vendor", ".class", "$e.vendor", "(upper .vendor)", "(substr 0 2 .class)",
             "(trunc 3 .class)", "(replace \"0\" \"\" .class)", "(quote .vendor)",
             "(regexReplaceAll \"[^a-z0-9]\" (toString .) \"-\")", "(index . \"vendor\")",
             "(default \"d\" .nothing)", "(cat .vendor .class)"]
ON_FLAG = [".Name", "(.Name | upper)", "(printf \"%s-%v\" .Name $i)", "(title .Name)",
           "(trimPrefix \"ib_\" .Name)", ".Value"]


def _skeleton(over: str, holes: list[str]) -> Any:
    expression = st.sampled_from(holes + COMMON)
    body = st.tuples(st.sampled_from(["", "k", "vendor.io/", "x" * 70, "-", "a b"]),
                     expression, st.sampled_from(["=", "=", ""]), expression,
                     st.sampled_from(["\n", "", " "]))
    return st.lists(body, min_size=1, max_size=3).map(
        lambda parts: "{{ range $i, $e := " + over + " }}" + "".join(
            f"{k}{{{{ {a} }}}}{eq}{{{{ {b} }}}}{end}" for k, a, eq, b, end in parts)
        + "{{ end }}")


skeleton = _skeleton(".pci.device", ON_DEVICE) | _skeleton(".kernel.loadedmodule", ON_FLAG)
any_template = templates | skeleton


def data() -> Any:
    return gotemplate.matched_data([
        ("pci.device", [{"vendor": "15b3", "class": "0207"}, {"vendor": "10de",
                                                               "class": "0302"}]),
        ("kernel.loadedmodule", [{"Name": "ib_uverbs"}]),
    ])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_template)
def test_random_templates_never_crash(template: str) -> None:
    started = time.process_time()
    try:
        gotemplate.expand_map(template, data())
    except TemplateError as exc:
        assert str(exc)
    assert time.process_time() - started < 2


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    tree = HostTree(Path(tmp_path_factory.mktemp("node")))
    for name, value in (("vendor", "0x15b3"), ("class", "0x020700"), ("device", "0x101b")):
        tree.file(f"sys/bus/pci/devices/0000:0c:00.0/{name}", value + "\n")
    tree.file("proc/modules", "ib_uverbs 16384 0 - Live 0x0\nrdma_ucm 16384 0 - Live 0x0\n")
    return tree.host()


rule = st.fixed_dictionaries({
    "name": st.text(min_size=1, max_size=6),
    "labelsTemplate": any_template,
}, optional={
    "varsTemplate": any_template,
    "labels": st.dictionaries(st.sampled_from(["a", "x"]), st.sampled_from(["1", "@x.y.z"]),
                              max_size=1),
    "matchFeatures": st.just([{"feature": "pci.device",
                               "matchExpressions": {"vendor": {"op": "Exists"}}}]),
    "matchAny": st.just([{"matchFeatures": [{"feature": "kernel.loadedmodule"}]},
                         {"matchFeatures": [{"feature": "pci.device"}]}]),
})
follower = {"name": "follower", "labelsTemplate": (
    "{{ range .rule.matched }}seen-{{ .Name | trunc 20 }}={{ .Value | trunc 20 }}\n{{ end }}"),
    "matchFeatures": [{"feature": "rule.matched", "matchName": {"op": "InRegexp",
                                                                 "value": ["."]}}]}


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(rule, max_size=3))
def test_random_template_rules_never_publish_an_invalid_label(host: Host,
                                                              document: list[Any]) -> None:
    rules, _ = parse_rules([*document, follower], "rules")
    outcomes = engine.run(rules, FeatureSet())  # no features at all: never a crash
    assert all(o.error is None or not o.matched for o in outcomes)
    result = run_source(host, CustomSource(), Config(sources={"custom": {"rules": rules}}))
    assert result.error is None, result.error
    for key, label in result.labels.items():
        assert key_error(key) is None, key
        assert value_error(label.value) is None, (key, label.value)
