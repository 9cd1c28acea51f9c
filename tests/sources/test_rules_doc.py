"""Every example in docs/rules.md gives exactly the labels the document says."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from testpaths import FIXTURES

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import load_sources, run_pass

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
EXAMPLE = re.compile(r"<!-- example ([^\n]*?) -->\n```yaml\n(.*?)```", re.DOTALL)
BUILT_IN = {"feature.node.kubernetes.io/rdma.capable", "feature.node.kubernetes.io/rdma.available"}


def examples() -> list[tuple[dict[str, str], str]]:
    found = []
    for head, body in EXAMPLE.findall(DOC.read_text()):
        words, _, expect = head.partition(" expect=")
        settings = dict(word.partition("=")[::2] for word in words.split())
        settings["expect"] = expect
        found.append((settings, body))
    return found


def test_the_document_has_examples_and_every_marker_is_read() -> None:
    assert len(examples()) >= 6
    assert DOC.read_text().count("<!-- example ") == len(examples())


@pytest.mark.parametrize(("settings", "body"), examples(),
                         ids=lambda v: v.get("fixture", "") if isinstance(v, dict) else "")
def test_example_gives_the_documented_labels(tmp_path: Path, settings: dict[str, str],
                                             body: str) -> None:
    fixture = FIXTURES / settings["fixture"]
    if "modules" in settings:  # the example names the modules its node has loaded
        fixture = tmp_path / "fixture"
        shutil.copytree(FIXTURES / settings["fixture"], fixture, symlinks=True)
        (fixture / "root/proc/modules").write_text("".join(
            f"{name} 16384 0 - Live 0x0000000000000000\n"
            for name in settings["modules"].split(",")))
    sources, _ = load_sources()
    data = yaml.safe_load(body)
    config = build(data if "config" in settings else {"sources": {"custom": data}}, sources)
    discovery = run_pass(replay_host(fixture), sources, config)
    custom = next(r for r in discovery.results if r.name == "custom")
    got = {k: v.value for k, v in custom.labels.items()}
    expected = json.loads(settings["expect"])
    built_in = {k for k in BUILT_IN if k not in expected}
    assert {k: v for k, v in got.items() if k not in built_in} == expected, custom.warnings
    assert custom.error is None
