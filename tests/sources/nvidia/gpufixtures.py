"""Helpers of the nvidia source tests: fixture paths, running the source, a test clock."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import SourceResult, run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia.replay import loads

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = Path(__file__).resolve().parent / "expected"
PREFIX = "nvidia.com/"


def gpu_fixtures() -> list[Path]:
    """Fixture directories that describe a node for the nvidia source (all of ours)."""
    return sorted(p for p in FIXTURES.iterdir()
                  if (p / "labels.json").is_file() and (p / "root/sys/bus/pci").is_dir())


def nvml_fixtures() -> list[Path]:
    return [p for p in gpu_fixtures() if (p / "nvml.json").is_file()]


def fixture_data(name: str) -> dict[str, Any]:
    return loads((FIXTURES / name / "nvml.json").read_text())


def expected_nvidia(fixture: Path) -> dict[str, str]:
    labels = json.loads((fixture / "labels.json").read_text())
    return {k: v for k, v in labels.items() if k.startswith(PREFIX)}


def config_for(source: NvidiaSource, **options: Any):
    return build({"sources": {"nvidia": options}} if options else {}, {"nvidia": source})


def run(source: NvidiaSource, host: Host, **options: Any) -> SourceResult:
    return run_source(host, source, config_for(source, **options))


def values(result: SourceResult) -> dict[str, str]:
    return {k: label.value for k, label in result.labels.items()}


def replay(name: str) -> Host:
    return replay_host(FIXTURES / name)


def copy_fixture(name: str, target: Path) -> Path:
    """A writable copy of a fixture (symlinks kept), to change between passes."""
    destination = target / name
    shutil.copytree(FIXTURES / name, destination, symlinks=True)
    return destination


def live_host(root: Path) -> Host:
    """A host read from a tree, with NVML from whatever pynvml has loaded (live mode)."""
    return Host(root=HostRoot(root))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
