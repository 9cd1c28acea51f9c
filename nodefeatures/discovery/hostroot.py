"""Every file a source reads goes through one HostRoot.

The root is `/` on a node, `--root /host` in the DaemonSet, or a fixture's `root/`
directory in tests. Symlinks are resolved *inside* the root, so an absolute link such
as `etc/os-release -> /usr/lib/os-release` under `/host` reads `/host/usr/lib/os-release`
and never the container's own file, and `..` stops at the root. Reads are bounded: a file
larger than its limit is a problem, not a memory spike.

Confinement holds while the files change under us. Nothing is opened by a path that the
kernel could resolve on its own: either the kernel resolves the whole path inside the
root (openat2 with RESOLVE_IN_ROOT, Linux 5.6 and later), or the path is walked one
component at a time from directory descriptors with O_NOFOLLOW, and a symlink is followed
only by reading its text and walking that from the root again. A link swapped in between
two steps is then either seen and re-rooted, or not followed at all; it can never lead
outside the root. Directory listings, stat and reads all take the same way.

Problems are never raised to the caller: a missing file reads as None, and anything
else (permission denied, I/O error, oversized file, link loop) is reported to the
`problems` sink so the source that asked loses only the labels depending on it.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import os
import stat
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nodefeatures.discovery.text import plain

DEFAULT_READ_LIMIT = 4 * 1024 * 1024
_MAX_LINK_DEPTH = 40
_ABSENT = (errno.ENOENT, errno.ENOTDIR)

# O_NONBLOCK: a FIFO planted where a file is expected must not hang discovery.
_O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_O_LIST = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY
_PATH_BIT = getattr(os, "O_PATH", 0)
_O_PATH = (_PATH_BIT or os.O_RDONLY) | os.O_CLOEXEC
_O_STEP = _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW


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


# -- openat2(RESOLVE_IN_ROOT) --------------------------------------------------------------
#
# The standard library has no openat2, and the kernel does exactly what a root needs: absolute
# links and `..` stay inside the directory descriptor, in one system call. Only that call is
# wrapped here; without it (old kernel, seccomp profile refusing it) the component walk below
# gives the same answers, more slowly.

_SYS_OPENAT2 = 437  # one number on every architecture: it came after the syscall table merge
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_KERNEL_RETRIES = 8  # EAGAIN: a rename raced the lookup of a `..`
_UNSUPPORTED = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP)

Opener = Callable[[int, str, int], int]
_kernel_opener: Opener | bool | None = False  # False: not probed yet


def _make_kernel_opener() -> Opener | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError, ImportError):
        return None

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                    ("resolve", ctypes.c_uint64)]

    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                        ctypes.POINTER(OpenHow), ctypes.c_size_t]
    size = ctypes.sizeof(OpenHow)
    resolve = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS

    def openat2(dir_fd: int, path: str, flags: int) -> int:
        how = OpenHow(flags, 0, resolve)
        name = os.fsencode(path or ".")
        for _ in range(_KERNEL_RETRIES):
            fd = syscall(_SYS_OPENAT2, dir_fd, name, ctypes.byref(how), size)
            if fd >= 0:
                return int(fd)
            code = ctypes.get_errno()
            if code not in (errno.EAGAIN, errno.EINTR):
                raise OSError(code, os.strerror(code))
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    # Probe once: a seccomp filter or an old kernel refuses the call itself.
    try:
        probe_dir = os.open("/", _O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        os.close(openat2(probe_dir, ".", _O_PATH))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
    finally:
        os.close(probe_dir)
    return openat2


def kernel_opener() -> Opener | None:
    """openat2 with RESOLVE_IN_ROOT, or None where this kernel or sandbox refuses it."""
    global _kernel_opener
    if _kernel_opener is False:
        _kernel_opener = _make_kernel_opener()
    return _kernel_opener  # type: ignore[return-value]


# -- the component walk ------------------------------------------------------------------


def walk_open(base_fd: int, inner: str, flags: int, trail: list[str] | None = None) -> int:
    """A descriptor for `inner` under the directory `base_fd`, never leaving it.

    Each component is opened relative to the descriptor of the one before with
    O_NOFOLLOW, so the kernel follows no link; a link's text is read and walked here,
    from the root when it is absolute, and `..` pops a descriptor this walk holds, never
    above the root. `trail` receives the names walked (and, when something is absent,
    the names that were still to come), for `HostRoot.resolve`.
    """
    pending = [p for p in inner.split("/") if p][::-1]
    held: list[int] = []  # descriptors of the directories below the root, deepest last
    names: list[str] = [] if trail is None else trail
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if held:
                    os.close(held.pop())
                    names.pop()
                continue
            here = held[-1] if held else base_fd
            last = not pending
            try:
                fd = os.open(part, (flags if last else _O_STEP) | os.O_NOFOLLOW, dir_fd=here)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    if exc.errno in _ABSENT:
                        names.extend([part, *pending[::-1]])
                    raise
                failure: OSError | None = exc
            else:
                failure = None
                if not last:
                    held.append(fd)
                    names.append(part)
                    continue
                if not (flags & _PATH_BIT and stat.S_ISLNK(os.fstat(fd).st_mode)):
                    names.append(part)
                    return fd
                os.close(fd)  # O_PATH with O_NOFOLLOW opened the link itself
            try:
                target = os.readlink(part, dir_fd=here)
            except OSError as again:
                if again.errno != errno.EINVAL:
                    raise
                if failure is not None and failure.errno == errno.ENOTDIR:
                    names.extend([part, *pending[::-1]])
                    raise failure from None  # a file where a directory should be
                target = part  # a link a moment ago and not now: look at it again
            links += 1
            if links > _MAX_LINK_DEPTH:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            if not target:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
            if target.startswith("/"):
                while held:
                    os.close(held.pop())
                names.clear()
            pending.extend([p for p in target.split("/") if p][::-1])
        # The path ended at a directory (the root, a `..`, a link to a directory).
        return os.open(".", flags, dir_fd=held[-1] if held else base_fd)
    finally:
        for fd in held:
            os.close(fd)


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


class HostRoot:
    """Read-only access to a host's files under a root directory."""

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        proc: str | os.PathLike[str] | None = None,
        recorder: Recorder | None = None,
        kernel: bool = True,
        follow_root: bool = True,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        # /proc can come from elsewhere (the container's own procfs shows the host
        # kernel), so the DaemonSet need not mount the host's /proc.
        self.proc = Path(os.path.abspath(proc)) if proc is not None else None
        self.recorder = recorder
        self.problems: Callable[[Problem], None] = lambda problem: None
        # kernel=False walks components even where openat2 works (tests of the walk).
        self._kernel = kernel
        # A fixture's root/ must be the fixture's own directory, not a link to '/'.
        self._root_flags = _O_PATH | os.O_DIRECTORY | (0 if follow_root else os.O_NOFOLLOW)
        self._opener: Opener | bool | None = False
        self._bases: dict[str, int] = {}
        weakref.finalize(self, _close_all, self._bases)

    def refresh(self) -> None:
        """Open the root afresh: mounts and links change between passes."""
        _close_all(self._bases)

    def __repr__(self) -> str:
        return f"HostRoot({str(self.root)!r})"

    # -- path resolution -------------------------------------------------------

    @staticmethod
    @functools.lru_cache(maxsize=8192)  # the same few hundred paths, every pass
    def normalize(path: str) -> str:
        """A host path as a relative, slash-separated path without `.` parts."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        return "/".join(parts)

    def display(self, path: str) -> str:
        """The host path as a user knows it (`/etc/os-release`), safe for one log line.

        A name with a newline, a quote or anything unusual is shown quoted and escaped.
        """
        return plain("/" + self.normalize(path))

    def _base(self, rel: str) -> tuple[Path, str]:
        if self.proc is not None and (rel == "proc" or rel.startswith("proc/")):
            return self.proc, rel[len("proc") :].lstrip("/")
        return self.root, rel

    def _base_fd(self, base: Path) -> int:
        key = str(base)
        fd = self._bases.get(key)
        if fd is None:
            # The root itself is the operator's choice (--root, --proc), so a link there
            # is followed unless follow_root is off; nothing below it is followed.
            fd = self._bases[key] = os.open(base, self._root_flags)
        return fd

    def _open(self, path: str, flags: int) -> int:
        """A descriptor for a host path, resolved inside its root whatever changes meanwhile."""
        if "\0" in path:
            # No name holds a NUL; openat2 would read the part before it, os.open raises.
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        base, inner = self._base(self.normalize(path))
        if str(base) == "/":
            # At the real root the OS resolves links correctly and nothing is outside.
            return os.open("/" + inner, flags)
        dir_fd = self._base_fd(base)
        if self._opener is False:
            self._opener = kernel_opener() if self._kernel else None
        if self._opener is not None:
            return self._opener(dir_fd, inner, flags)  # type: ignore[operator]
        return walk_open(dir_fd, inner, flags)

    def open_directory(self, path: str) -> int:
        """An O_PATH descriptor of a host directory, resolved inside the root as every read
        is (for a file watch on /proc/self/fd/N); the caller closes it. Raises OSError."""
        if not self.normalize(path):
            return os.open(self.root, self._root_flags)
        return self._open(path, _O_PATH | os.O_DIRECTORY)

    def resolve(self, path: str) -> Path | None:
        """Where a host path leads, following symlinks inside the root (for diagnostics).

        Reads never open this path: it may have changed by the time anyone would.
        """
        rel = self.normalize(path)
        base, inner = self._base(rel)
        if str(base) == "/" or "\0" in inner:
            return base / inner
        trail: list[str] = []
        try:
            os.close(walk_open(self._base_fd(base), inner, _O_PATH, trail))
        except OSError as exc:
            if exc.errno not in _ABSENT:
                raise
        return base.joinpath(*trail)

    # -- reads -----------------------------------------------------------------

    def read_bytes(self, path: str, limit: int = DEFAULT_READ_LIMIT,
                   quiet: tuple[int, ...] = ()) -> bytes | None:
        """The file's bytes, or None when it is absent, unreadable or over `limit`.

        An error whose errno is in `quiet` is an answer, not a problem: a sysfs attribute
        such as a down interface's `speed` fails with EINVAL by design.
        """
        read = self._read(path, limit, regular=False, quiet=quiet)
        return None if read is None else read[0]

    def read_regular(self, path: str, limit: int = DEFAULT_READ_LIMIT
                     ) -> tuple[bytes, os.stat_result] | None:
        """A regular file's bytes and status from one open; None (quietly) for anything else.

        One descriptor answers both "is it a file" and "what does it hold", so nothing can
        be swapped in between the two.
        """
        return self._read(path, limit, regular=True)

    def _read(self, path: str, limit: int, regular: bool, quiet: tuple[int, ...] = ()
              ) -> tuple[bytes, os.stat_result] | None:
        try:
            fd = self._open_regular(path) if regular and _PATH_BIT else self._open(path, _O_READ)
        except OSError as exc:
            if exc.errno not in quiet:
                self._report(path, exc)
            return None
        if fd is None:
            return None
        try:
            status = os.fstat(fd)
            if regular and not stat.S_ISREG(status.st_mode):
                return None
            data = _read_bounded(fd, limit)
        except OSError as exc:
            if exc.errno not in quiet:
                self._report(path, exc)
            return None
        finally:
            os.close(fd)
        if len(data) > limit:
            self.problems(
                Problem(self.display(path), f"larger than the {limit}-byte limit", False)
            )
            return None
        if self.recorder is not None:
            self.recorder.file(self.normalize(path), data)
        return data, status

    def _open_regular(self, path: str) -> int | None:
        """A read descriptor for a regular file, or None; anything else is never opened.

        Opening is an act on a FIFO (a waiting writer goes on) or a device (a watchdog
        starts), so the file is first reached with O_PATH, which opens nothing, and only a
        regular file is then opened for reading: through its descriptor, so that nothing
        swapped in meanwhile is opened instead.
        """
        probe = self._open(path, _O_PATH)
        try:
            before = os.fstat(probe)
            if not stat.S_ISREG(before.st_mode):
                return None
            try:
                return os.open(f"/proc/self/fd/{probe}", _O_READ)
            except FileNotFoundError:  # no procfs here: open again, keep it if it is the same
                fd = self._open(path, _O_READ)
                after = os.fstat(fd)
                if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                    os.close(fd)
                    return None
                return fd
        finally:
            os.close(probe)

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
        try:
            fd = self._open(path, _O_LIST)
        except OSError as exc:
            self._report(path, exc)
            return []
        try:
            names = sorted(os.listdir(fd))
        except OSError as exc:
            self._report(path, exc)
            return []
        finally:
            os.close(fd)
        if self.recorder is not None:
            rel = self.normalize(path)
            self.recorder.directory(rel)
            for name in names:
                entry = f"{rel}/{name}" if rel else name
                mode = self._mode(entry)
                self.recorder.entry(entry, mode is not None and stat.S_ISDIR(mode))
        return names

    def exists(self, path: str) -> bool:
        return self._stat(path) is not None

    def is_dir(self, path: str) -> bool:
        mode = self._stat(path)
        return mode is not None and stat.S_ISDIR(mode)

    def is_file(self, path: str) -> bool:
        mode = self._stat(path)
        return mode is not None and stat.S_ISREG(mode)

    def _mode(self, path: str) -> int | None:
        try:
            fd = self._open(path, _O_PATH)
        except OSError as exc:
            self._report(path, exc)
            return None
        try:
            return os.fstat(fd).st_mode
        except OSError as exc:
            self._report(path, exc)
            return None
        finally:
            os.close(fd)

    def _stat(self, path: str) -> int | None:
        mode = self._mode(path)
        if mode is not None and self.recorder is not None:
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
        if exc.errno == errno.ELOOP:  # one wording, whether the kernel or the walk found it
            self.problems(Problem(self.display(path), "too many levels of symbolic links", False))
            return
        self.problems(Problem(self.display(path), exc.strerror or str(exc), True))


_CHUNK = 64 * 1024


def _read_bounded(fd: int, limit: int) -> bytes:
    """At most limit+1 bytes, read in chunks: procfs and sysfs report no useful size."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
