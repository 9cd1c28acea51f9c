"""Shared test helpers: paths to fixtures and the shared reference material.

Its presence also puts tests/ on sys.path, so helper modules such as kubeharness import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
# ../shared beside the repository: read-only reference data, absent on some machines.
SHARED = TESTS.parent.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared reference material not found at {SHARED}")
    return SHARED
