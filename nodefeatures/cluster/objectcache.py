"""A live copy of the objects of one Kind: list once, then watch, in one thread.

The agent reads NodeFeatureRules, its Node's NodeFeatures and the label namespaces
ConfigMap this way: a full list (paged), then a watch with bookmarks from the list's
resourceVersion, resumed where it ended; a 410 lists again. A change that matters (the
`content` of an object, by default its spec and labels) calls `on_change`, so a created,
changed or deleted object reaches the agent's loop at once and a stable one costs no
request at all.

`known` becomes true only when a complete list arrived: an object missing from a
complete list, or deleted on the watch, no longer exists. Before that (the list failed,
the resource type is not installed, RBAC denies it) the copy proves nothing about
absence, which is how nfd-master came to wipe labels from a half-synced cache. More than
MAX_OBJECTS objects or MAX_BYTES of them (a list page is read no further than that) is
such a failure too: the copy never grows past them. Once known, the copy stays known
through later failures: it is a real, if stale, state, and its labels stay until the
watch says otherwise.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from nodefeatures.cluster.kube import KubeError, NodeWatch, ObjectApi, version_order

log = logging.getLogger(__name__)

# More objects than this of one Kind for one node is no configuration anyone writes; the
# copy then stops being known rather than grow without bound.
MAX_OBJECTS = 5000
# Nor more than this of JSON (an object may hold 1.5 MB): in memory it takes about ten
# times that, the agent follows two kinds, and its limit is 128 MiB. NFD's own worker
# writes some 50 KB for a node.
MAX_BYTES = 2 << 20
PAGE = 500


def spec_and_labels(obj: Mapping[str, Any]) -> Any:
    """What of an object the agent acts on: a status or managedFields update is no change."""
    meta = obj.get("metadata") or {}
    return (obj.get("spec"), obj.get("data"), meta.get("labels"))


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def object_size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def object_problem(obj: Any) -> str | None:
    """Why `obj` is not an object the cache can hold, or None."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not an object"
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "metadata is not an object"
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        return "metadata.name is not a non-empty string"
    if not isinstance(meta.get("namespace", ""), str):
        return "metadata.namespace is not a string"
    if not isinstance(meta.get("resourceVersion"), str) or not meta["resourceVersion"]:
        return "metadata.resourceVersion is not a non-empty string"
    return None


class ObjectCache:
    """The objects of one Kind as the API server has them, kept current by a watch."""

    def __init__(self, api: ObjectApi, on_change: Callable[[], None] = lambda: None, *,
                 content: Callable[[Mapping[str, Any]], Any] = spec_and_labels,
                 watch_timeout: float = 600.0, backoff_cap: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self.api = api
        self.on_change = on_change
        self.content = content
        self.watch_timeout = watch_timeout
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self.generation = 0  # grows with every change that matters
        self.known = False
        self.problem: str | None = None  # why the copy is not current, None when it is
        self.problem_code: int | None = None
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._sizes: dict[tuple[str, str], int] = {}  # of each object, in JSON bytes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listed = threading.Event()  # a list completed or definitely failed once
        self._watch: NodeWatch | None = None
        self._thread: threading.Thread | None = None

    # -- what the agent asks -------------------------------------------------------

    def snapshot(self) -> tuple[int, dict[tuple[str, str], dict[str, Any]], bool]:
        """(generation, {(namespace, name): object}, known); the mapping is never changed
        afterwards, so it may be read without the lock."""
        with self._lock:
            return self.generation, self._objects, self.known

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for the first list (or its failure); True when known."""
        self._listed.wait(timeout)
        return self.known

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ObjectCache:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cache-{self.api.kind.verb}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.close()

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                    failures = 0
                version = self._follow(version)
                failures = 0
            except Exception as error:
                if self._stopping.is_set():
                    break
                if not isinstance(error, KubeError):
                    log.exception("unexpected error following %s", self.api.kind.plural)
                    error = KubeError(None, "internal", f"{type(error).__name__}: {error}")
                if error.code == 410 or error.reason in ("invalid", "internal", "decode"):
                    version = None
                failures += 1
                self._failed(error)
                delay = min(self.backoff_cap, 0.5 * 2.0 ** min(failures - 1, 16))
                self._stopping.wait(delay * self.rng.uniform(0.5, 1.0))
            finally:
                self._watch = None

    def _list(self) -> str:
        objects: dict[tuple[str, str], dict[str, Any]] = {}
        sizes: dict[tuple[str, str], int] = {}
        token: str | None = None
        while True:
            page = self.api.list(PAGE, token, max_bytes=MAX_BYTES - sum(sizes.values()))
            items = page.get("items")
            meta = page.get("metadata")
            if not isinstance(items, list) or not isinstance(meta, dict):
                raise KubeError(None, "invalid", "list response without items or metadata")
            for item in items:
                problem = object_problem(item)
                if problem is not None:
                    # Left out, it would read as deleted: the list is not complete.
                    raise KubeError(None, "invalid", f"malformed object in the list: {problem}")
                objects[object_key(item)] = item
                sizes[object_key(item)] = object_size(item)
            if sum(sizes.values()) > MAX_BYTES:
                raise KubeError(None, "too-many", f"more than {MAX_BYTES} bytes of "
                                f"{self.api.kind.plural}: not following them")
            if len(objects) > MAX_OBJECTS:
                raise KubeError(None, "too-many", f"more than {MAX_OBJECTS} "
                                f"{self.api.kind.plural}: not following them")
            token = meta.get("continue") or None
            if token is None:
                version = meta.get("resourceVersion")
                if not isinstance(version, str) or not version:
                    raise KubeError(None, "invalid", "list without a resourceVersion")
                break
        with self._lock:
            changed = self._differs(objects)
            self._objects = objects
            self._sizes = sizes
            if changed or not self.known:
                self.generation += 1
            self.known = True
            self.problem = None
            self.problem_code = None
        self._listed.set()
        if changed:
            self._changed()
        return version

    def _follow(self, version: str) -> str:
        """Watch from `version` until the server ends the watch; the last version seen."""
        timeout = int(self.watch_timeout * self.rng.uniform(0.8, 1.0))
        watch = self._watch = self.api.watch(version, max(timeout, 1))
        if self._stopping.is_set():
            watch.close()
        for event in watch.events():
            kind, obj = event.get("type"), event.get("object")
            if kind == "ERROR":
                code = obj.get("code") if isinstance(obj, dict) else None
                raise KubeError(code if isinstance(code, int) else None,
                                str(obj.get("reason", "Error")) if isinstance(obj, dict)
                                else "Error",
                                str(obj.get("message", "")) if isinstance(obj, dict) else "")
            if kind == "BOOKMARK":
                meta = obj.get("metadata") if isinstance(obj, dict) else None
                mark = meta.get("resourceVersion") if isinstance(meta, dict) else None
                if isinstance(mark, str) and mark:
                    version = mark
                continue
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                raise KubeError(None, "invalid", f"watch event of type {kind!r}"[:100])
            problem = object_problem(obj)
            if problem is not None:
                raise KubeError(None, "invalid", f"malformed object on the watch: {problem}")
            assert isinstance(obj, dict)
            version = obj["metadata"]["resourceVersion"]
            self._apply(kind, obj)
        return version

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        with self._lock:
            old = self._objects.get(key)
            if kind == "DELETED":
                if old is None:
                    return
                objects = dict(self._objects)
                del objects[key]
                sizes = {k: v for k, v in self._sizes.items() if k != key}
            else:
                if old is not None and version_order(
                        obj["metadata"]["resourceVersion"],
                        old["metadata"]["resourceVersion"]) == -1:
                    return  # older than what we hold
                objects = {**self._objects, key: obj}
                sizes = {**self._sizes, key: object_size(obj)}
                if len(objects) > MAX_OBJECTS or sum(sizes.values()) > MAX_BYTES:
                    raise KubeError(None, "too-many", f"more than {MAX_OBJECTS} "
                                    f"{self.api.kind.plural} or {MAX_BYTES} bytes of them: "
                                    "not following them")
            changed = old is None or kind == "DELETED" or self.content(old) != self.content(obj)
            self._objects = objects
            self._sizes = sizes
            if changed:
                self.generation += 1
        if changed:
            self._changed()

    def _differs(self, objects: Mapping[tuple[str, str], dict[str, Any]]) -> bool:
        if objects.keys() != self._objects.keys():
            return True
        return any(self.content(objects[k]) != self.content(self._objects[k]) for k in objects)

    def _changed(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("error in the change callback of %s", self.api.kind.plural)

    def _failed(self, error: KubeError) -> None:
        if error.code == 404:
            problem = (f"the API server does not serve {self.api.kind.plural}."
                       f"{self.api.kind.group or 'core'} (is the CRD installed?)")
        elif error.code == 403:
            problem = f"not allowed to list and watch {self.api.kind.plural}: {error.message}"
        else:
            problem = f"cannot follow {self.api.kind.plural}: {error}"
        problem = " ".join(problem.split())[:300]
        with self._lock:
            self.problem = problem
            self.problem_code = error.code
        # Whoever owns the cache reports `problem` (the agent: a log line and an Event).
        if error.code in (403, 404) or error.reason == "too-many":
            self._listed.set()  # a definite answer: a first pass need not wait for it
        log.debug("%s: %s", self.api.kind.plural, error)


def wait_all(caches: list[ObjectCache], timeout: float) -> None:
    """Wait for each cache's first list, `timeout` for all of them together."""
    deadline = time.monotonic() + timeout
    for cache in caches:
        cache.wait(max(0.0, deadline - time.monotonic()))
