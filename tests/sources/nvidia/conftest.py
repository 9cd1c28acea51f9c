"""Shared helpers for the nvidia source tests.

Every test runs with pynvml unable to load a real libnvidia-ml.so.1 (so a developer's
GPU never leaks into results) and with pynvml's module state restored afterwards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from nodefeatures.config import build
from nodefeatures.discovery import SourceResult, run_source
from nodefeatures.fixture import replay_host
from nodefeatures.hostroot import HostRoot
from nodefeatures.source import Host
from nodefeatures.sources.nvidia import NvidiaSource
from nodefeatures.sources.nvidia.nvml import load_pynvml
from nodefeatures.sources.nvidia.replay import FakeNvmlLib, binding_module, install, loads

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


@pytest.fixture(autouse=True)
def no_real_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pynvml cannot load the real library, and its globals are put back afterwards."""
    nv = load_pynvml()
    module = binding_module(nv)

    def no_library(*args: Any, **kwargs: Any) -> Any:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file (test)")

    monkeypatch.setattr(module, "CDLL", no_library)
    monkeypatch.setattr(module, "nvmlLib", None)
    monkeypatch.setattr(module, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setattr(module, "_nvmlLib_refcount", 0)
    monkeypatch.setattr(module.NVMLError, "_errcode_to_string",
                        dict(module.NVMLError._errcode_to_string))
    yield


@pytest.fixture
def nv():
    return load_pynvml()


@pytest.fixture
def fake_lib(nv, monkeypatch: pytest.MonkeyPatch):
    """Install a FakeNvmlLib as pynvml's native library: `fake_lib(data, block=None)`."""
    installed = []

    def make(data: Mapping[str, Any], block=None) -> FakeNvmlLib:
        lib = FakeNvmlLib(nv, json.loads(json.dumps(data)), block=block)
        installed.append(install(nv, lib))
        return lib

    yield make
    for item in reversed(installed):
        item.restore()
