"""An in-memory stand-in for NodeApi, for fast tests of the agent loop's timing rules.

It applies merge patches with the resourceVersion precondition like the real server
(409 on mismatch), streams watch events, and fails requests on demand. What the real
server does is tested in tests/integration; this only makes loop timing deterministic.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from nodefeatures.cluster.kube import KubeError

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "base" / "admission-policy.yaml"


@functools.cache
def _shipped_policy() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]


class FakeNodeApi:
    def __init__(self, node: str = "n1", labels: dict[str, str] | None = None) -> None:
        self.node = node
        self.on_request = lambda verb, code: None
        self.version = 1
        self.obj: dict[str, Any] = {"metadata": {
            "name": node, "resourceVersion": "1", "labels": dict(labels or {}),
            "annotations": {}}}
        self.history: list[dict[str, Any]] = [copy.deepcopy(self.obj)]
        self.cond = threading.Condition()
        self.fail: dict[str, list[KubeError]] = {"get": [], "patch": [], "watch": [],
                                                 "probe": [], "admission": []}
        # Whether the own-node policy is in force: the confinement probe is then denied.
        self.confined = True
        self.calls: list[tuple[str, float]] = []
        self.events: list[tuple[str, str, str]] = []
        self.patch_gate: threading.Event | None = None
        self.watches: list[FakeWatch] = []
        # Reply to a patch only after the watch delivered its event (a real-world race).
        self.watch_first = False
        self.expire_watches = 0  # this many watches answer 410 Gone at once
        # Called once a patch is applied, before its reply: another writer racing us.
        self.after_patch: Callable[[], None] | None = None
        self.injected: list[dict[str, Any]] = []  # raw events the next watch read yields

    def _enter(self, verb: str) -> None:
        self.calls.append((verb, time.monotonic()))
        if self.fail[verb]:
            error = self.fail[verb].pop(0)
            self.on_request(verb, getattr(error, "kind", "internal"))
            raise error
        self.on_request(verb, "200")

    def times(self, verb: str) -> list[float]:
        return [t for v, t in self.calls if v == verb]

    def get(self) -> dict[str, Any]:
        self._enter("get")
        with self.cond:
            return copy.deepcopy(self.obj)

    def patch(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        self._enter("patch")
        if self.patch_gate is not None:
            self.patch_gate.wait(10)
        meta = body["metadata"]
        with self.cond:
            if meta.get("resourceVersion") not in (None, self.obj["metadata"]["resourceVersion"]):
                self.on_request("patch", "409")
                raise KubeError(409, "Conflict", "the object has been modified")
            updated = self._apply(meta)
        if self.after_patch is not None:
            hook, self.after_patch = self.after_patch, None
            hook()
        if self.watch_first:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not any(
                    w.delivered >= self.version for w in self.watches):
                time.sleep(0.001)
            time.sleep(0.02)  # let the agent handle that event before it sees the reply
        return updated

    def probe(self) -> dict[str, Any]:
        """The dry-run patch the own-node policy must deny (see NodeApi.probe)."""
        self._enter("probe")
        if self.confined:
            raise KubeError(403, "Forbidden", f'nodes "{self.node}" is forbidden: '
                            "ValidatingAdmissionPolicy 'nodefeatures-own-node' with binding "
                            "'nodefeatures-own-node' denied request: not a managed label")
        with self.cond:
            return copy.deepcopy(self.obj)

    def read_admission(self, kind: Any, name: str) -> dict[str, Any]:
        """The shipped policy or binding (deploy/base/admission-policy.yaml), as installed."""
        self._enter("admission")
        wanted = ("ValidatingAdmissionPolicy" if kind.plural == "validatingadmissionpolicies"
                  else "ValidatingAdmissionPolicyBinding")
        for document in _shipped_policy():
            if document["kind"] == wanted and document["metadata"]["name"] == name:
                return copy.deepcopy(document)
        raise KubeError(404, "NotFound", f"{kind.plural} {name!r} not found")

    def external(self, labels: dict[str, str | None]) -> None:
        """Another writer (or a human) changing labels."""
        with self.cond:
            self._apply({"labels": labels})

    def _apply(self, meta: dict[str, Any]) -> dict[str, Any]:
        for field in ("labels", "annotations"):
            target = self.obj["metadata"].setdefault(field, {})
            for key, value in (meta.get(field) or {}).items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        self.version += 1
        self.obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append(copy.deepcopy(self.obj))
        self.cond.notify_all()
        return copy.deepcopy(self.obj)

    def inject(self, event: dict[str, Any]) -> None:
        """Deliver `event` as is on the running watch (a malformed one, say)."""
        with self.cond:
            self.injected.append(event)
            self.cond.notify_all()

    def watch(self, resource_version: str, timeout_seconds: int) -> FakeWatch:
        self._enter("watch")
        watch = FakeWatch(self, int(resource_version), expired=self.expire_watches > 0)
        self.expire_watches = max(0, self.expire_watches - 1)
        self.watches.append(watch)
        return watch

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    @property
    def labels(self) -> dict[str, str]:
        with self.cond:
            return dict(self.obj["metadata"]["labels"])


class FakeWatch:
    def __init__(self, api: FakeNodeApi, since: int, expired: bool = False) -> None:
        self.api = api
        self.expired = expired
        self.since = since
        self.delivered = since
        self.closed = False

    def events(self) -> Iterator[dict[str, Any]]:
        if self.expired:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                               "reason": "Expired", "message": "too old"}}
            return
        while True:
            with self.api.cond:
                while (not self.closed and self.api.version <= self.since
                       and not self.api.injected):
                    self.api.cond.wait(0.5)
                if self.closed:
                    raise KubeError(None, "connection", "watch closed")
                injected, self.api.injected = self.api.injected, []
            yield from injected
            with self.api.cond:
                fresh = [o for o in self.api.history
                         if int(o["metadata"]["resourceVersion"]) > self.since]
            for obj in fresh:
                self.since = int(obj["metadata"]["resourceVersion"])
                yield {"type": "MODIFIED", "object": copy.deepcopy(obj)}
                self.delivered = self.since

    def close(self) -> None:
        with self.api.cond:
            self.closed = True
            self.api.cond.notify_all()
