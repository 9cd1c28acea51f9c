"""Entry-point discovery agrees with importlib.metadata and survives broken plugins."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from nodefeatures.discovery import registry
from nodefeatures.discovery.run import load_sources


def test_same_entry_points_as_importlib_metadata() -> None:
    expected = {ep.name: ep.value for ep in entry_points(group=registry.GROUP)}
    assert {n: e.target for n, e in registry.installed().items()} == expected
    assert "system" in expected


def make_plugin(tmp_path: Path, body: str, target: str) -> None:
    (tmp_path / "toyplugin.py").write_text(body)
    meta = tmp_path / "toyplugin-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text(f"[nodefeatures.sources]\ntoy = {target}\n")


PLUGIN = '''
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Features, Source

class Toy(Source):
    name = "toy"
    description = "a third-party plugin"

    def discover(self, ctx):
        return Features()

    def labels(self, features, options):
        return [Label("example.com/toy", "yes", "plugin")]
'''


def test_third_party_plugin_is_found_and_runs(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(tmp_path, PLUGIN, "toyplugin:Toy")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.installed()["toy"].distribution == "toyplugin"
    sources, errors = load_sources(["toy"])
    assert errors == [] and sources["toy"].description == "a third-party plugin"
    sys.modules.pop("toyplugin", None)


def test_broken_plugin_is_reported_not_fatal(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(tmp_path, "raise RuntimeError('boom')\n", "toyplugin:Toy")
    monkeypatch.syspath_prepend(str(tmp_path))
    sources, errors = load_sources()
    assert "toy" not in sources and "system" in sources
    assert any("'toy'" in e and "boom" in e for e in errors)
    sys.modules.pop("toyplugin", None)


def test_plugin_that_is_not_a_source_is_rejected(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(tmp_path, "class Toy:\n    pass\n", "toyplugin:Toy")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, errors = load_sources(["toy"])
    assert errors == ["source 'toy' (toyplugin:Toy) is not a Source subclass"]
    sys.modules.pop("toyplugin", None)
