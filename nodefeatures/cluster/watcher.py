"""React at once to changed inputs: file notifications on a few directories, batched.

A `ChangeWatcher` watches directories (features.d, custom.d, the config file's
directory) with inotify and calls back, once per burst, with the kinds of what changed.
It never reads a file: the sources read through their HostRoot as on every pass, so the
watch only decides *when* a pass runs. Each directory is opened through the same
HostRoot, resolved inside the root, and watched through /proc/self/fd/N, so a link under
/host leads where the sources' reads lead and never outside.

A directory that does not exist yet, or is deleted, renamed or replaced by a link swap
(a ConfigMap update replaces `..data`), is handled by watching its ancestors for the next
component's name: when that entry changes, the watches are set up again and a pass runs.
The kernel queues the events; the thread blocks on the descriptor and does no polling of
its own. Where inotify is unavailable (not Linux, no instances left) the periodic pass
is all there is, and the start says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from nodefeatures.discovery import inotify
from nodefeatures.discovery.hostroot import HostRoot

log = logging.getLogger(__name__)

MAX_WATCHES = 256  # directories watched at most, subdirectories included
MAX_SUBDIRS = 64  # subdirectories of one target (custom.d holds ConfigMaps in some)


@dataclass(frozen=True)
class Target:
    """A directory whose changes matter, and what kind of change they are."""

    root: HostRoot
    path: str  # a path under the root
    kind: str  # passed to the callback: "features", "config", ...
    subdirectories: bool = False  # one level of subdirectories matters too
    # Only these entry names matter (and ConfigMap's `..` entries); None: every name
    # except hidden scratch files (`.name`).
    names: frozenset[str] | None = None

    def matters(self, name: str) -> bool:
        if name.startswith(".."):
            return True  # a ConfigMap's ..data swap, its timestamped directories
        if self.names is not None:
            return name in self.names
        return not name.startswith(".")


@dataclass(frozen=True)
class _Role:
    target: Target
    next_name: str | None  # an ancestor: the one entry that leads on; None: the target


class ChangeWatcher:
    """Calls `on_change(kinds)` within `settle` to `latest` seconds of a burst of changes."""

    def __init__(self, on_change: Callable[[set[str]], None], *, settle: float = 0.15,
                 latest: float = 0.5) -> None:
        self.on_change = on_change
        self.settle = settle  # quiet time that ends a burst
        self.latest = latest  # a burst that never goes quiet is reported after this
        self._targets: tuple[Target, ...] = ()
        self._notify: inotify.Inotify | None = None
        self._roles: dict[int, list[_Role]] = {}
        self._wake_read, self._wake_write = -1, -1
        self._rearm = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.armed = threading.Event()  # set once the first set of watches is in place

    def start(self, targets: Iterable[Target]) -> bool:
        """Start watching; False (and a warning) when the system has no inotify."""
        self._targets = tuple(targets)
        try:
            self._notify = inotify.Inotify()
        except OSError as exc:
            log.warning("cannot watch for changes (%s); changes are seen on the next "
                        "periodic pass", exc)
            return False
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="change-watcher", daemon=True)
        self._thread.start()
        return True

    def retarget(self, targets: Iterable[Target]) -> None:
        """Watch these directories instead (a new config moved features.d)."""
        targets = tuple(targets)
        if targets != self._targets:
            self._targets = targets
            self._rearm.set()
            self._wake()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    def _wake(self) -> None:
        if self._wake_write >= 0:
            with contextlib.suppress(OSError):  # a full pipe wakes the thread as well
                os.write(self._wake_write, b"x")

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        notify = self._notify
        assert notify is not None
        pending: set[str] = set()
        first = deadline = 0.0
        try:
            self._arm()
            self.armed.set()
            while not self._stopping.is_set():
                timeout = None if not pending else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([notify.fd, self._wake_read], [], [], timeout)
                if self._wake_read in ready:
                    _drain(self._wake_read)
                kinds, rearm = self._events(notify) if notify.fd in ready else (set(), False)
                if self._rearm.is_set():
                    self._rearm.clear()
                    rearm = True
                    kinds |= {t.kind for t in self._targets}
                if rearm:
                    self._arm()
                now = time.monotonic()
                if kinds:
                    if not pending:
                        first = now
                    pending |= kinds
                    deadline = min(first + self.latest, now + self.settle)
                if pending and now >= deadline:
                    batch, pending = pending, set()
                    try:
                        self.on_change(batch)
                    except Exception:  # the callback's failure must not end the watch
                        log.exception("reacting to a change failed")
        except Exception:
            log.exception("the change watcher stopped; changes are seen on the next "
                          "periodic pass")
        finally:
            notify.close()
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)
            self._wake_read = self._wake_write = -1

    def _events(self, notify: inotify.Inotify) -> tuple[set[str], bool]:
        """The kinds of target that changed, and whether the watches must be set again."""
        kinds: set[str] = set()
        rearm = False
        for event in notify.read():
            if event.mask & inotify.IN_Q_OVERFLOW:
                return {t.kind for t in self._targets}, True  # events lost: assume all
            for role in self._roles.get(event.wd, ()):
                target = role.target
                gone = event.mask & (inotify.SELF | inotify.IN_IGNORED)
                if gone:
                    kinds.add(target.kind)
                    rearm = True
                elif role.next_name is not None:
                    if event.name == role.next_name:  # the way to the target changed
                        kinds.add(target.kind)
                        rearm = True
                elif target.matters(event.name):
                    kinds.add(target.kind)
                    if event.mask & inotify.IN_ISDIR and target.subdirectories:
                        rearm = True  # a new subdirectory to watch
        return kinds, rearm

    def _arm(self) -> None:
        """Watch every target, or the ancestors of those that do not exist (yet)."""
        notify = self._notify
        assert notify is not None
        for wd in list(self._roles):
            notify.rm_watch(wd)
        self._roles = {}
        for root in {id(t.root): t.root for t in self._targets}.values():
            root.refresh()  # resolve from the root afresh, as a pass does
        for target in self._targets:
            parts = [p for p in HostRoot.normalize(target.path).split("/") if p]
            for depth in range(len(parts) + 1):
                here = "/".join(parts[:depth])
                if depth < len(parts):
                    role = _Role(target, parts[depth])
                    mask = inotify.ENTRIES | inotify.SELF
                else:
                    role = _Role(target, None)
                    mask = inotify.CONTENT | inotify.SELF
                if not self._watch(target.root, here, mask, role):
                    break  # absent: its parent's watch sees it appear
            else:
                if target.subdirectories:
                    self._watch_subdirectories(target, "/".join(parts))

    def _watch_subdirectories(self, target: Target, path: str) -> None:
        names = [n for n in target.root.listdir(path) if target.matters(n)]
        for name in names[:MAX_SUBDIRS]:
            if target.root.is_dir(f"{path}/{name}"):
                self._watch(target.root, f"{path}/{name}",
                            inotify.CONTENT | inotify.SELF, _Role(target, None))

    def _watch(self, root: HostRoot, path: str, mask: int, role: _Role) -> bool:
        notify = self._notify
        assert notify is not None
        if len(self._roles) >= MAX_WATCHES:
            return False
        try:
            fd = root.open_directory(path)
        except OSError:
            return False
        try:
            wd = notify.add_watch(f"/proc/self/fd/{fd}",
                                  mask | inotify.IN_ONLYDIR | inotify.IN_MASK_ADD)
        except OSError as exc:
            log.debug("cannot watch %s: %s", root.display(path), exc)
            return False
        finally:
            os.close(fd)
        self._roles.setdefault(wd, []).append(role)
        return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
