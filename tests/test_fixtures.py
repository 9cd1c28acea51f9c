"""Golden labels: every fixture under tests/fixtures replays to exactly its labels.json."""

from __future__ import annotations

from pathlib import Path

import pytest
from testpaths import FIXTURES

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import read_labels, replay_host
from nodefeatures.discovery.labels import key_error, value_error
from nodefeatures.discovery.run import load_sources, run_pass


def fixture_dirs() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if (p / "labels.json").is_file())


def test_there_are_fixtures() -> None:
    assert len(fixture_dirs()) >= 1


@pytest.mark.parametrize("fixture", fixture_dirs(), ids=lambda p: p.name)
def test_fixture_replays_to_its_golden_labels(fixture: Path) -> None:
    sources, errors = load_sources()
    assert errors == []
    discovery = run_pass(replay_host(fixture), sources, build({}, sources))
    got = discovery.values()
    expected = read_labels(fixture)
    missing = {k: v for k, v in expected.items() if got.get(k) != v}
    extra = {k: v for k, v in got.items() if k not in expected}
    assert (missing, extra) == ({}, {}), "labels differ from labels.json"
    for key, value in got.items():
        assert key_error(key) is None and value_error(value) is None
