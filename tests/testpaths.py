"""Paths the tests share: the fixtures directory and the shared reference material."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
# ../shared beside the repository: read-only reference data, absent on some machines.
SHARED = TESTS.parent.parent / "shared"
