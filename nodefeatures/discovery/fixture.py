"""Fixtures: recorded hosts that stand in for real hardware.

A fixture directory holds `root/` (the files as read, at their host paths),
`cpuid.txt` (raw CPUID leaves), `nvml.json` (NVML answers) and `labels.json` (the
expected labels). An absent part means that hardware is absent. docs/fixtures.md
describes the format.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.source import Host
from nodefeatures.discovery.text import plain, quote

ROOT = "root"
LABELS = "labels.json"


class FixtureError(ValueError):
    """The directory is not a usable fixture."""


PARTS = {ROOT: stat.S_ISDIR, "cpuid.txt": stat.S_ISREG, "nvml.json": stat.S_ISREG,
         LABELS: stat.S_ISREG}


def replay_host(directory: str | os.PathLike[str]) -> Host:
    """A Host that reads only the fixture: no live file, CPUID or NVML access.

    Replay is hermetic: each part of the fixture must be the fixture's own directory or
    file. A `root` that links to `/`, or a cpuid.txt, nvml.json or labels.json that links
    elsewhere (or is a FIFO or a device), is refused, so a fixture from anywhere never
    reads this machine. Inside root/, links resolve inside root/ (HostRoot).
    """
    path = Path(directory)
    if not path.is_dir():
        raise FixtureError(f"{plain(str(path))}: not a directory")
    present = [part for part in PARTS if _checked_part(path, part)]
    if not present:
        raise FixtureError(f"{plain(str(path))}: no fixture here "
                           f"(expected one of {', '.join(sorted(PARTS))})")
    return Host(root=HostRoot(path / ROOT, follow_root=False), fixture_dir=path)


def _checked_part(fixture: Path, part: str) -> bool:
    """Whether a part is present; FixtureError when it is not the fixture's own."""
    try:
        mode = os.lstat(fixture / part).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise FixtureError(f"{plain(str(fixture / part))}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(fixture / part)
        except OSError:
            target = "?"
        raise FixtureError(
            f"{plain(str(fixture / part))}: a symbolic link (to {quote(target)}); a fixture "
            "holds its own files, so replay never reads outside it")
    if not PARTS[part](mode):
        kind = "directory" if part == ROOT else "regular file"
        raise FixtureError(f"{plain(str(fixture / part))}: not a {kind}")
    return True


class CaptureRecorder:
    """Writes every file and directory a pass reads under `<fixture>/root/`."""

    def __init__(self, directory: Path) -> None:
        self.base = directory / ROOT
        self.base.mkdir(parents=True, exist_ok=True)

    def _target(self, rel: str) -> Path:
        # `..` undoes the name before it and stops at the root, as a read does: the recording of
        # `../../x` must not land outside the fixture.
        parts: list[str] = []
        for part in rel.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return self.base.joinpath(*parts)

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
    """A fixture's expected labels; a labels.json that is a link is not followed."""
    fd = os.open(Path(directory) / LABELS, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as handle:
        return json.loads(handle.read())
