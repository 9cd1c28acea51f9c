"""`run --output nodefeature`: this node's features and labels as one NodeFeature object.

For clusters that keep nfd-master, the agent stands in for nfd-worker: each pass builds
the object nfd-worker would write (discovery/nodefeature.py: named after the Node, in
the agent's namespace, labelled `nfd.node.kubernetes.io/node-name`), and writes it only
when its spec, or the labels and annotations it sets, differ from the copy it holds.
That copy is the reply to its own last write, or what a watch on the object shows after
someone else changed or deleted it (then it is put back at once), or a GET after a
conflict: a stable node costs no request beyond the watch. Another writer that keeps
undoing the object (a second agent for the node with other results) is answered with a
backoff, doubling up to the interval, not at the speed of the watch. Others' labels and
annotations on the object are kept. Unlike nfd-worker, no owner reference ties the
object to the pod: a restart or a rolling update never deletes it, so nfd-master never
sees the node's features vanish.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from nodefeatures.cluster.agent import POKE_SPACING, REJECTED, Options, backoff
from nodefeatures.cluster.kube import Kind, KubeError, ObjectApi, clamp_retry_after
from nodefeatures.cluster.loop import PassLoop
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.objectcache import ObjectCache
from nodefeatures.discovery import nodefeature
from nodefeatures.discovery.run import Discovery

log = logging.getLogger(__name__)


def nodefeatures_kind(namespace: str, name: str | None = None) -> Kind:
    return Kind(nodefeature.GROUP, nodefeature.VERSION, "nodefeatures", verb="nodefeature",
                namespace=namespace,
                field_selector=f"metadata.name={name}" if name is not None else None)


def differs(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether `current` lacks what `desired` says: its spec, or one of its labels or
    annotations (others' metadata on the object does not count)."""
    if current is None:
        return True
    if desired.get("spec") != current.get("spec"):
        return True
    for field in ("labels", "annotations"):
        want = desired.get("metadata", {}).get(field) or {}
        have = current.get("metadata", {}).get(field) or {}
        if any(have.get(k) != v for k, v in want.items()):
            return True
    return False


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def updated(desired: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with `desired`'s spec, labels and annotations: the body of a full update."""
    body = copy.deepcopy(dict(current))
    body["spec"] = copy.deepcopy(desired["spec"])
    meta = body.setdefault("metadata", {})
    for field in ("labels", "annotations"):
        want = desired.get("metadata", {}).get(field)
        if want:
            meta[field] = {**(meta.get(field) or {}), **want}
    body.pop("status", None)
    return body


class NodeFeatureAgent(PassLoop):
    """The loop of `run --output nodefeature`; `sync()` is one pass."""

    def __init__(self, client: Any, namespace: str, discover: Callable[[], Discovery],
                 options: Options, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.discover = discover
        self.options = options
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.api = ObjectApi(client, nodefeatures_kind(namespace), self.metrics.request)
        # Our own object, watched: another writer's change or deletion pokes a pass.
        self.cache = ObjectCache(ObjectApi(client, nodefeatures_kind(namespace, options.node),
                                           self.metrics.request), self._changed,
                                 content=lambda obj: obj)
        self.ready = False
        self.writes = 0
        self._current: dict[str, Any] | None = None  # the object as the server last had it
        self._read = False  # _current came from the server (None then means: no object)
        self._stale = False  # the watch showed a change since _current
        self._undone = False  # someone else changed or deleted the object since our write
        self._not_before = 0.0  # no rewrite of another writer's change before this
        self._fight_streak = 0
        self._last_fight_write = -1e9

    @property
    def name(self) -> str:
        return self.options.node

    def run(self) -> None:
        self.cache.start()
        self.cache.wait(5.0)
        try:
            self._loop()
        finally:
            self.cache.stop()

    def _changed(self) -> None:
        self._stale = True
        self.poke()

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            self.heartbeat = time.monotonic()
            started = time.perf_counter()
            try:
                self.sync()
            except KubeError as error:
                failures += 1
                self.metrics.passes.labels("error").inc()
                delay = self._delay(error, failures)
                log.log(logging.ERROR if error.code in REJECTED else logging.WARNING,
                        "cannot write NodeFeature %s/%s: %s; again in %.0f s", self.namespace,
                        self.name, error, delay, extra={"node": self.name, "code": error.code})
                self._stopping.wait(delay)
                continue
            except Exception:  # a bug must not end the loop
                log.exception("unexpected error in a pass")
                self._stopping.wait(self.options.backoff_cap)
                continue
            failures = 0
            self.metrics.passes.labels("ok").inc()
            self.metrics.last_success.set(time.time())
            self.metrics.pass_seconds.observe(time.perf_counter() - started)
            jitter = self.options.jitter
            wait = self.options.interval * self.rng.uniform(1 - jitter, 1 + jitter)
            if self._undone:  # a rewrite is held back: due once the backoff has passed
                wait = min(wait, max(0.0, self._not_before - time.monotonic()))
            took, ended = time.perf_counter() - started, time.perf_counter()
            self._wake.wait(wait)
            # Woken by the watch: as the labeler, no sooner than POKE_SPACING, or the last
            # pass's length, after it ended.
            self._stopping.wait(max(0.0, ended + max(POKE_SPACING, took) - time.perf_counter()))

    def sync(self) -> bool:
        """One pass: discover, and write the object when it differs. True when written."""
        discovery = self.discover()
        desired = nodefeature.node_feature(discovery, self.name, self.namespace)
        for _ in range(self.options.conflict_retries):
            if self._stale:
                self._stale = False
                _, objects, known = self.cache.snapshot()
                if known:
                    seen = objects.get((self.namespace, self.name))
                    if _version(seen) != _version(self._current):
                        self._undone = True  # not the echo of our own write
                    self._current, self._read = seen, True
                else:
                    self._read = False
            if not self._read:
                self._get()
            current = self._current
            if not differs(desired, current):
                self._undone = False
                self.ready = True
                return False
            if self._undone:
                now = time.monotonic()
                if now < self._not_before:
                    return False  # the loop comes back when the backoff has passed
                self._note_fight(now)
            try:
                if current is None:
                    reply = self.api.create(self.namespace, desired)
                else:
                    reply = self.api.replace(self.namespace, self.name,
                                             updated(desired, current))
            except KubeError as error:
                # Gone, changed by someone else, or created meanwhile: read it again.
                if error.code in (404, 409):
                    self._read = False
                    continue
                raise
            self._current, self._read = reply, True
            self._undone = False
            self.writes += 1
            self.ready = True
            log.info("NodeFeature %s/%s %s: %d labels, %d features", self.namespace, self.name,
                     "created" if current is None else "updated",
                     len(desired["spec"].get("labels") or {}),
                     sum(len(v) for v in (desired["spec"].get("features") or {}).values()),
                     extra={"node": self.name})
            return True
        raise KubeError(409, "Conflict", "the NodeFeature kept changing")

    def _note_fight(self, now: float) -> None:
        recent = now - self._last_fight_write < self.options.interval
        self._fight_streak = self._fight_streak + 1 if recent else 1
        self._last_fight_write = now
        cap = min(self.options.backoff_cap, self.options.interval)
        self._not_before = now + min(cap, 2.0 ** (self._fight_streak - 1) - 1)
        if self._fight_streak == 3:
            log.warning("another writer keeps changing or deleting NodeFeature %s/%s; "
                        "writing it again with backoff", self.namespace, self.name,
                        extra={"node": self.name})

    def _get(self) -> None:
        try:
            self._current = self.api.get(self.namespace, self.name)
        except KubeError as error:
            if error.code != 404:
                raise
            self._current = None
        self._read = True

    def _delay(self, error: KubeError, failures: int) -> float:
        if error.code in REJECTED:
            return self.options.rejected_retry * self.rng.uniform(0.9, 1.1)
        delay = backoff(self.options.backoff_base, self.options.backoff_cap, failures)
        hinted = clamp_retry_after(error.retry_after)
        return max(delay * self.rng.uniform(0.5, 1.0), hinted or 0.0)
