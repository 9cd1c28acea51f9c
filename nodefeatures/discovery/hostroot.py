"""Every file a source reads goes through one HostRoot.

The root is `/` on a node, `--root /host` in the DaemonSet, or a fixture's `root/`
directory in tests. Symlinks are resolved *inside* the root, so an absolute link such
as `etc/os-release -> /usr/lib/os-release` under `/host` reads `/host/usr/lib/os-release`
and never the container's own file. Reads are bounded: a file larger than its limit is a
problem, not a memory spike.

Problems are never raised to the caller: a missing file reads as None, and anything
else (permission denied, I/O error, oversized file, link loop) is reported to the
`problems` sink so the source that asked loses only the labels depending on it.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_READ_LIMIT = 4 * 1024 * 1024
_MAX_LINK_DEPTH = 40
_ABSENT = (errno.ENOENT, errno.ENOTDIR)


@dataclass(frozen=True)
class Problem:
    """A read that failed for a reason other than absence."""

    path: str
    reason: str
    transient: bool  # an I/O error may succeed next pass; bad content will not


class Recorder(Protocol):
    """Receives what was read, so `capture` can rebuild the same view elsewhere."""

    def file(self, rel: str, data: bytes) -> None: ...
    def directory(self, rel: str) -> None: ...
    def entry(self, rel: str, is_dir: bool) -> None: ...


class HostRoot:
    """Read-only access to a host's files under a root directory."""

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        proc: str | os.PathLike[str] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        # /proc can come from elsewhere (the container's own procfs shows the host
        # kernel), so the DaemonSet need not mount the host's /proc.
        self.proc = Path(os.path.abspath(proc)) if proc is not None else None
        self.recorder = recorder
        self.problems: Callable[[Problem], None] = lambda problem: None
        self._resolved: dict[str, Path | None] = {}

    def refresh(self) -> None:
        """Forget resolved paths: links and devices change between passes."""
        self._resolved.clear()

    def __repr__(self) -> str:
        return f"HostRoot({str(self.root)!r})"

    # -- path resolution -------------------------------------------------------

    @staticmethod
    def normalize(path: str) -> str:
        """A host path as a relative, slash-separated path without `.` parts."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        return "/".join(parts)

    def display(self, path: str) -> str:
        """The host path as a user knows it (`/etc/os-release`)."""
        return "/" + self.normalize(path)

    def _base(self, rel: str) -> tuple[Path, str]:
        if self.proc is not None and (rel == "proc" or rel.startswith("proc/")):
            return self.proc, rel[len("proc") :].lstrip("/")
        return self.root, rel

    def resolve(self, path: str) -> Path | None:
        """The real path of a host path, following symlinks inside the root."""
        rel = self.normalize(path)
        base, inner = self._base(rel)
        if str(base) == "/":
            return Path("/" + inner)  # the OS resolves links correctly at the real root
        key = f"{base}\0{inner}"
        if key not in self._resolved:
            self._resolved[key] = self._walk(base, inner)
        return self._resolved[key]

    def _walk(self, base: Path, inner: str) -> Path | None:
        pending = [p for p in inner.split("/") if p][::-1]
        current: list[str] = []
        links = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if current:
                    current.pop()
                continue
            candidate = base.joinpath(*current, part)
            try:
                target = os.readlink(candidate)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # not a link
                    current.append(part)
                    continue
                if exc.errno in _ABSENT:
                    return base.joinpath(*current, part, *pending[::-1])
                raise
            links += 1
            if links > _MAX_LINK_DEPTH:
                raise OSError(errno.ELOOP, "too many levels of symbolic links")
            if target.startswith("/"):
                current = []
            pending.extend([p for p in target.split("/") if p][::-1])
        return base.joinpath(*current)

    def _real(self, path: str) -> Path | None:
        try:
            return self.resolve(path)
        except OSError as exc:
            self._report(path, exc)
            return None

    # -- reads -----------------------------------------------------------------

    def read_bytes(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> bytes | None:
        """The file's bytes, or None when it is absent, unreadable or over `limit`."""
        real = self._real(path)
        if real is None:
            return None
        try:
            data = _read_bounded(real, limit)
        except OSError as exc:
            self._report(path, exc)
            return None
        if len(data) > limit:
            self.problems(
                Problem(self.display(path), f"larger than the {limit}-byte limit", False)
            )
            return None
        if self.recorder is not None:
            self.recorder.file(self.normalize(path), data)
        return data

    def read_text(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> str | None:
        """The file decoded as UTF-8 (undecodable bytes replaced), or None."""
        data = self.read_bytes(path, limit)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_line(self, path: str, limit: int = 64 * 1024) -> str | None:
        """The file's content with surrounding whitespace removed (sysfs attributes)."""
        text = self.read_text(path, limit)
        return None if text is None else text.strip()

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names of a directory; empty when it is absent or unreadable."""
        real = self._real(path)
        if real is None:
            return []
        try:
            names = sorted(os.listdir(real))
        except OSError as exc:
            self._report(path, exc)
            return []
        if self.recorder is not None:
            rel = self.normalize(path)
            self.recorder.directory(rel)
            for name in names:
                self.recorder.entry(f"{rel}/{name}" if rel else name,
                                    os.path.isdir(os.path.join(real, name)))
        return names

    def exists(self, path: str) -> bool:
        return self._stat(path) is not None

    def is_dir(self, path: str) -> bool:
        mode = self._stat(path)
        return mode is not None and stat.S_ISDIR(mode)

    def is_file(self, path: str) -> bool:
        mode = self._stat(path)
        return mode is not None and stat.S_ISREG(mode)

    def _stat(self, path: str) -> int | None:
        real = self._real(path)
        if real is None:
            return None
        try:
            mode = os.stat(real).st_mode
        except OSError as exc:
            self._report(path, exc)
            return None
        if self.recorder is not None:
            self.recorder.entry(self.normalize(path), stat.S_ISDIR(mode))
        return mode

    def glob(self, pattern: str) -> list[str]:
        """Host paths matching a pattern whose `*`/`?` parts match one name each."""
        matches = [""]
        for part in self.normalize(pattern).split("/"):
            if not any(ch in part for ch in "*?["):
                matches = [f"{m}/{part}" if m else part for m in matches]
                continue
            grown = []
            for match in matches:
                for name in self.listdir(match):
                    if fnmatch.fnmatchcase(name, part) and not name.startswith("."):
                        grown.append(f"{match}/{name}" if match else name)
            matches = grown
        return [m for m in matches if self.exists(m)]

    def _report(self, path: str, exc: OSError) -> None:
        if exc.errno in _ABSENT:
            return
        reason = exc.strerror or str(exc)
        self.problems(Problem(self.display(path), reason, exc.errno != errno.ELOOP))


_CHUNK = 64 * 1024


def _read_bounded(real: Path, limit: int) -> bytes:
    """At most limit+1 bytes, read in chunks: procfs and sysfs report no useful size."""
    # O_NONBLOCK: a FIFO planted where a file is expected must not hang discovery.
    fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
