"""Fixtures: recorded hosts that stand in for real hardware.

A fixture directory holds `root/` (the files as read, at their host paths),
`cpuid.txt` (raw CPUID leaves), `nvml.json` (NVML answers) and `labels.json` (the
expected labels). An absent part means that hardware is absent. docs/fixtures.md
describes the format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.source import Host

ROOT = "root"
LABELS = "labels.json"


class FixtureError(ValueError):
    """The directory is not a usable fixture."""


def replay_host(directory: str | os.PathLike[str]) -> Host:
    """A Host that reads only the fixture: no live file, CPUID or NVML access."""
    path = Path(directory)
    if not path.is_dir():
        raise FixtureError(f"{path}: not a directory")
    known = {ROOT, "cpuid.txt", "nvml.json", LABELS}
    if not any((path / part).exists() for part in known):
        raise FixtureError(f"{path}: no fixture here (expected one of {', '.join(sorted(known))})")
    return Host(root=HostRoot(path / ROOT), fixture_dir=path)


class CaptureRecorder:
    """Writes every file and directory a pass reads under `<fixture>/root/`."""

    def __init__(self, directory: Path) -> None:
        self.base = directory / ROOT
        self.base.mkdir(parents=True, exist_ok=True)

    def _target(self, rel: str) -> Path:
        return self.base / rel if rel else self.base

    def file(self, rel: str, data: bytes) -> None:
        target = self._target(rel)
        if target.is_dir():
            return  # already known as a directory; a file cannot replace it
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def directory(self, rel: str) -> None:
        target = self._target(rel)
        if not target.exists():
            target.mkdir(parents=True, exist_ok=True)

    def entry(self, rel: str, is_dir: bool) -> None:
        target = self._target(rel)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            target.mkdir()
        else:
            target.touch()


def capture_host(
    directory: str | os.PathLike[str], root: str = "/", proc: str | None = None
) -> Host:
    """A live Host whose reads are recorded into a new fixture directory."""
    path = Path(directory)
    if path.exists() and any(path.iterdir()):
        raise FixtureError(f"{path}: exists and is not empty; capture needs a new directory")
    path.mkdir(parents=True, exist_ok=True)
    host_root = HostRoot(root, proc=proc, recorder=CaptureRecorder(path))
    return Host(root=host_root, capture_dir=path)


def write_labels(directory: str | os.PathLike[str], labels: Mapping[str, str]) -> Path:
    """Store expected labels as sorted, indented JSON."""
    target = Path(directory) / LABELS
    target.write_text(json.dumps(dict(sorted(labels.items())), indent=2) + "\n")
    return target


def read_labels(directory: str | os.PathLike[str]) -> dict[str, str]:
    return json.loads((Path(directory) / LABELS).read_text())
