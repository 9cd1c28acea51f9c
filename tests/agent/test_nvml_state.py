"""The NVML gauge follows what the nvidia source reports on replayed nodes."""

from __future__ import annotations

import pytest
from testpaths import FIXTURES

from nodefeatures.cluster.agent import _nvml_state
from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import run_source
from nodefeatures.sources.nvidia import NvidiaSource


@pytest.mark.parametrize(("fixture", "state"), [
    ("dgx-h100", True),             # NVML answered
    ("gpu-driver-missing", False),  # an NVIDIA GPU, but no library to talk to it
    ("cpu-only-rocky9", None),      # no NVIDIA GPU on the bus: NVML never tried
])
def test_nvml_state_from_replayed_nodes(fixture: str, state: bool | None) -> None:
    source = NvidiaSource()
    result = run_source(replay_host(FIXTURES / fixture), source, build({}, {"nvidia": source}))
    assert _nvml_state(result) is state
