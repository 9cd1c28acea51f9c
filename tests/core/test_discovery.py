"""One pass: a failing source costs only its own labels, and labels are validated."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.run import run_pass
from nodefeatures.discovery.source import Context, Features, Host, Source


class Reads(Source):
    name = "reads"

    def discover(self, ctx: Context) -> Features:
        features = Features()
        text = ctx.root.read_text("etc/value", limit=16)
        if text is not None:
            features.attribute("file", "value", text.strip(), "/etc/value")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        facts = features.attributes.get("file", {})
        return [Label("value", f.value, f.origin) for f in facts.values()] + [
            Label("other.io/kept", "yes"),
            Label("bad key", "x"),
        ]


class Broken(Source):
    name = "broken"

    def discover(self, ctx: Context) -> Features:
        raise RuntimeError("driver exploded")

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return []


class Late(Source):
    name = "late"
    priority = 20

    def discover(self, ctx: Context) -> Features:
        return Features()

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return [Label("other.io/kept", "overridden")]


SOURCES = {"late": Late(), "reads": Reads(), "broken": Broken()}


def host_with(tmp_path: Path, content: bytes) -> Host:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/value").write_bytes(content)
    return Host(root=HostRoot(tmp_path))


def test_broken_source_is_contained(tmp_path: Path) -> None:
    discovery = run_pass(host_with(tmp_path, b"ok\n"), SOURCES, build({}, SOURCES))
    by_name = {r.name: r for r in discovery.results}
    assert by_name["broken"].error == "RuntimeError: driver exploded"
    assert not by_name["broken"].complete
    assert by_name["reads"].complete
    assert discovery.values()["feature.node.kubernetes.io/reads-value"] == "ok"


def test_priority_orders_merging(tmp_path: Path) -> None:
    discovery = run_pass(host_with(tmp_path, b"ok\n"), SOURCES, build({}, SOURCES))
    assert [r.name for r in discovery.results] == ["broken", "reads", "late"]
    assert discovery.values()["other.io/kept"] == "overridden"


def test_invalid_key_is_dropped_with_a_warning(tmp_path: Path) -> None:
    discovery = run_pass(host_with(tmp_path, b"ok\n"), SOURCES, build({}, SOURCES))
    assert "bad key" not in discovery.values()
    assert any("bad key" in w for w in discovery.warnings)


def test_oversized_input_costs_only_its_label(tmp_path: Path) -> None:
    discovery = run_pass(host_with(tmp_path, b"x" * 100), SOURCES, build({}, SOURCES))
    values = discovery.values()
    assert "feature.node.kubernetes.io/reads-value" not in values
    assert "other.io/kept" in values
    assert any("/etc/value: larger than the 16-byte limit" in w for w in discovery.warnings)
    reads = next(r for r in discovery.results if r.name == "reads")
    assert reads.complete  # bad content is no transient error


def test_disabled_sources_do_not_run(tmp_path: Path) -> None:
    config = build({"core": {"labelSources": ["reads"]}}, SOURCES)
    discovery = run_pass(host_with(tmp_path, b"ok\n"), SOURCES, config)
    assert [r.name for r in discovery.results] == ["reads"]
