"""docs/labels.md stays generated from code, and every emitted label is documented."""

from __future__ import annotations

from pathlib import Path

from testpaths import FIXTURES

from nodefeatures.discovery import catalogue
from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import load_sources, run_pass
from nodefeatures.discovery.source import Host

DOCS = Path(__file__).resolve().parents[1] / "docs" / "labels.md"


def test_docs_labels_md_is_generated_from_the_catalogue() -> None:
    sources, errors = load_sources()
    assert errors == []
    expected = catalogue.render(sources)
    assert DOCS.read_text() == expected, (
        "docs/labels.md is stale: run `python -m nodefeatures.discovery.catalogue > docs/labels.md`"
    )


def test_every_label_on_this_machine_and_in_fixtures_is_documented() -> None:
    sources, _ = load_sources()
    config = build({}, sources)
    hosts = [Host(root=HostRoot("/"))]
    hosts += [replay_host(d) for d in sorted(FIXTURES.iterdir()) if d.is_dir()]
    keys = sorted({k for h in hosts for k in run_pass(h, sources, config).labels})
    assert keys, "no labels at all: the sources are not running"
    assert catalogue.undocumented(sources, keys) == []


def test_placeholders_match_one_family_only() -> None:
    sources, _ = load_sources()
    system = sources["system"]
    assert catalogue.undocumented({"system": system}, [
        "feature.node.kubernetes.io/system-os_release.ID",
        "feature.node.kubernetes.io/system-os_release.NAME",
    ]) == ["feature.node.kubernetes.io/system-os_release.NAME"]


def test_refused_names_document_nothing_and_are_listed_apart() -> None:
    sources, _ = load_sources()
    cpu = {"cpu": sources["cpu"]}
    assert catalogue.undocumented(cpu, ["feature.node.kubernetes.io/cpu-cpu_atom"]) == [
        "feature.node.kubernetes.io/cpu-cpu_atom"]
    text = catalogue.render(cpu)
    table, refused = text.split("## Reference labels we never emit")
    assert "cpu-cpu_atom" not in table and "cpu-cpu_atom" in refused
