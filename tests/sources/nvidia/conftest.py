"""pytest fixtures of the nvidia source tests.

Every test runs with pynvml unable to load a real libnvidia-ml.so.1 (so a developer's
GPU never leaks into results) and with pynvml's module state restored afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from nodefeatures.sources.nvidia.nvml import load_pynvml
from nodefeatures.sources.nvidia.replay import FakeNvmlLib, binding_module, install


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
