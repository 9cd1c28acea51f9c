"""File notifications: the three inotify system calls, through ctypes.

The standard library has no inotify, and the project takes no new dependency for three
calls that libc already exports (inotify_init1, inotify_add_watch, inotify_rm_watch); the
events are read from the descriptor with os.read and decoded here. Only Linux has
inotify: elsewhere `Inotify()` raises OSError and callers fall back to their periodic
pass.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# What changes a directory's entries, and what ends a watch on it.
ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
SELF = IN_DELETE_SELF | IN_MOVE_SELF
# What changes a file in a watched directory, too.
CONTENT = ENTRIES | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len: struct inotify_event
_BUFFER = 64 * 1024


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str  # the entry's name inside the watched directory; "" for the directory


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class Inotify:
    """One inotify instance: a non-blocking descriptor to select on, and its watches."""

    def __init__(self) -> None:
        try:
            lib = _lib()
            init = lib.inotify_init1
        except (OSError, AttributeError) as exc:
            raise OSError(errno.ENOSYS, f"inotify is not available: {exc}") from None
        self.fd = _check(init(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, path: str, mask: int) -> int:
        """Watch descriptor of `path` (which may be /proc/self/fd/N of an open directory)."""
        return _check(_lib().inotify_add_watch(self.fd, os.fsencode(path), mask),
                      "inotify_add_watch")

    def rm_watch(self, wd: int) -> None:
        # EINVAL: the watch went already (its directory was deleted): nothing to remove.
        if _lib().inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_rm_watch: {os.strerror(code)}")

    def read(self) -> Iterator[Event]:
        """The events queued now; nothing when there are none (never blocks)."""
        try:
            data = os.read(self.fd, _BUFFER)
        except BlockingIOError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset:offset + length].split(b"\0", 1)[0]
            offset += length
            yield Event(wd, mask, os.fsdecode(raw))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
