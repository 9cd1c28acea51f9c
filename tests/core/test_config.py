"""Config files are validated whole: a bad one is rejected, never half-applied."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from nodefeatures.discovery.config import ConfigError, build, load
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, Source


class Toy(Source):
    name = "toy"
    defaults: Mapping[str, Any] = {
        "attributeBlacklist": ["A", "B"],
        "attributeWhitelist": [],
        "nested": {"depth": 3, "enabled": True},
    }

    def discover(self, ctx: Context) -> Features:
        return Features()

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return []

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        return ["nested.depth: must be positive"] if options["nested"]["depth"] <= 0 else []


SOURCES = {"toy": Toy()}


def test_defaults_fill_in_everything() -> None:
    config = build({}, SOURCES)
    assert config.options("toy")["attributeBlacklist"] == ["A", "B"]
    assert config.core["labelSources"] == ["all"]


def test_user_values_replace_defaults() -> None:
    config = build({"sources": {"toy": {"attributeBlacklist": [], "nested": {"depth": 5}}}},
                   SOURCES)
    assert config.options("toy")["attributeBlacklist"] == []
    assert config.options("toy")["nested"] == {"depth": 5, "enabled": True}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sources": {"toy": {"atributeBlacklist": []}}},
         "sources.toy.atributeBlacklist: unknown key"),
        ({"sources": {"toy": {"attributeBlacklist": "A"}}}, "expected a list, got a string"),
        ({"sources": {"toy": {"attributeBlacklist": [1]}}}, "sources.toy.attributeBlacklist"),
        ({"sources": {"toy": {"nested": {"enabled": "yes"}}}}, "sources.toy.nested.enabled"),
        ({"sources": {"toy": {"nested": {"depth": 0}}}}, "sources.toy.nested.depth: must be"),
        ({"sources": {"gpu": {}}}, "sources.gpu: no such source"),
        ({"core": {"labelWhiteList": "("}}, "core.labelWhiteList: not a valid regular"),
        ({"cor": {}}, "cor: unknown key"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_bad_config_names_the_key(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(data, SOURCES)
    assert message in str(error.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        build({"sources": {"toy": {"x": 1, "y": 2}}}, SOURCES)
    assert "sources.toy.x" in str(error.value) and "sources.toy.y" in str(error.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.yaml", SOURCES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad, SOURCES)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load(empty, SOURCES).options("toy")["attributeWhitelist"] == []


def test_source_selection_and_label_filters() -> None:
    config = build({"core": {"labelSources": ["all", "-toy"], "labelWhiteList": "^cpu-",
                             "labelDenyList": "AVX512"}}, SOURCES)
    assert config.enabled(["toy", "cpu"]) == ["cpu"]
    assert config.allows("feature.node.kubernetes.io/cpu-cpuid.AVX2")
    assert not config.allows("feature.node.kubernetes.io/cpu-cpuid.AVX512F")
    assert not config.allows("feature.node.kubernetes.io/kernel-version.full")


def test_source_budget_is_configurable_and_must_be_positive() -> None:
    from nodefeatures.discovery.config import Budget

    assert build({}, SOURCES).budget() == Budget(512, 32768)
    config = build({"core": {"maxLabelsPerSource": 10, "maxLabelBytesPerSource": 900}}, SOURCES)
    assert config.budget() == Budget(10, 900)
    with pytest.raises(ConfigError, match=r"core\.maxLabelsPerSource: must be at least 1"):
        build({"core": {"maxLabelsPerSource": 0}}, SOURCES)
    with pytest.raises(ConfigError, match=r"core\.maxLabelBytesPerSource: expected"):
        build({"core": {"maxLabelBytesPerSource": "lots"}}, SOURCES)
