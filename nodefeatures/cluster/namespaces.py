"""The label namespaces the agent may write, from the one object the admission policy reads.

`--label-namespaces NAMESPACE/NAME` names a ConfigMap (deploy/base/label-namespaces.yaml)
with NFD master's `denyLabelNs` and `extraLabelNs` (discovery/namespaces.py). The
ValidatingAdmissionPolicy takes the same ConfigMap as its parameter, so changing it
changes both what the agent tries and what the API server lets through.

The agent follows the ConfigMap with a watch (objectcache.py). Until a valid one has
been read nothing is written: without it the agent cannot tell which of the labels it
owns it may still touch, and forgetting them would lose them. A new version that does
not parse is rejected as a whole and the previous one stays in force, reported as a log
line, a `LabelNamespacesRejected` Event and `nodefeatures_label_namespaces_rejected` 1.
A deleted ConfigMap leaves the last one in force (the policy then denies every write,
which the agent reports as it does any rejected write).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from nodefeatures.cluster.kube import Kind, ObjectApi
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.objectcache import ObjectCache
from nodefeatures.cluster.reconcile import Scope
from nodefeatures.discovery.namespaces import LabelNamespaces
from nodefeatures.discovery.text import quote

log = logging.getLogger(__name__)


def configmap_kind(namespace: str, name: str) -> Kind:
    return Kind("", "v1", "configmaps", verb="namespaces", namespace=namespace,
                field_selector=f"metadata.name={name}")


def parse_reference(text: str) -> tuple[str, str] | None:
    """`NAMESPACE/NAME` as a pair, or None when it is not one (both DNS labels/subdomains)."""
    import re

    match = re.fullmatch(r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)/"
                         r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)", text)
    return (match.group(1), match.group(3)) if match else None


class LabelNamespacesSetting:
    """The allowed label namespaces in force, kept current from their ConfigMap."""

    def __init__(self, client: Any, namespace: str, name: str, prefixes: tuple[str, ...],
                 on_change: Callable[[], None] = lambda: None,
                 metrics: Metrics | None = None,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        self.reference = f"{namespace}/{name}"
        self.prefixes = prefixes  # the instance's own narrowing (--managed-prefix), or ()
        self.on_change = on_change
        self.post_event: Callable[[str, str, str], None] = lambda kind, reason, msg: None
        self.current: LabelNamespaces | None = None
        self.changed_at = float("-inf")  # monotonic time `current` last changed
        self.rejected: str | None = None
        self._seen: Any = object()  # the data last parsed
        self._lock = threading.Lock()
        self.cache = ObjectCache(ObjectApi(client, configmap_kind(namespace, name), on_request),
                                 self._changed, content=lambda obj: obj.get("data"))
        self._gauge = None
        if metrics is not None:
            self._gauge = metrics.export(metrics.label_namespaces_rejected)
            self._gauge.set(0)

    @property
    def caches(self) -> list[ObjectCache]:
        return [self.cache]

    def start(self) -> LabelNamespacesSetting:
        self.cache.start()
        return self

    def stop(self) -> None:
        self.cache.stop()

    def scope(self) -> Scope | None:
        """What the agent may touch now; None until a valid setting has been read."""
        namespaces = self.current
        return None if namespaces is None else Scope(self.prefixes, namespaces)

    def why(self) -> str:
        """Why there is no scope yet (for /readyz and the log)."""
        _, objects, known = self.cache.snapshot()
        if self.rejected is not None:
            return f"the label namespaces ConfigMap {self.reference} is invalid: {self.rejected}"
        if known and not objects:
            return (f"the label namespaces ConfigMap {self.reference} does not exist "
                    "(deploy/base/label-namespaces.yaml)")
        problem = self.cache.problem
        return (f"the label namespaces ConfigMap {self.reference} has not been read"
                + (f": {problem}" if problem else " yet"))

    def _changed(self) -> None:
        _, objects, _ = self.cache.snapshot()
        if not objects:
            if self.current is not None:
                log.warning("the label namespaces ConfigMap %s was deleted; the last one "
                            "read stays in force", self.reference)
            return
        obj = next(iter(objects.values()))
        data = obj.get("data") or {}
        with self._lock:
            if data == self._seen:
                return
            self._seen = data
        if not isinstance(data, dict):
            problems = [f"data is a {type(data).__name__}, not a mapping"]
            namespaces = None
        else:
            namespaces, problems = LabelNamespaces.from_data(data)
        if problems:
            self.rejected = "; ".join(quote(p) if "\n" in p else p for p in problems)[:600]
            message = (f"the label namespaces ConfigMap {self.reference} is rejected as a "
                       f"whole: {self.rejected}; "
                       + ("the previous setting stays in force" if self.current is not None
                          else "nothing is written until it is fixed"))
            log.error("%s", message, extra={"code": "LabelNamespacesRejected"})
            self.post_event("Warning", "LabelNamespacesRejected", message[:1000])
            if self._gauge is not None:
                self._gauge.set(1)
            return
        self.rejected = None
        if self._gauge is not None:
            self._gauge.set(0)
        changed = namespaces != self.current
        self.current = namespaces
        if changed:
            self.changed_at = time.monotonic()
            log.info("label namespaces from %s: denied %s, re-allowed %s", self.reference,
                     ", ".join(namespaces.deny) or "none beyond kubernetes.io",
                     ", ".join(namespaces.extra) or "none")
            self.on_change()


def read_once(client: Any, namespace: str, name: str, prefixes: tuple[str, ...]) -> Scope:
    """The scope from one GET of the ConfigMap (apply, diff, prune); ValueError or
    KubeError when it cannot be read or is invalid."""
    from nodefeatures.cluster.kube import KubeError

    api = ObjectApi(client, configmap_kind(namespace, name))
    try:
        obj = api.get(namespace, name)
    except KubeError as error:
        if error.code == 404:
            raise ValueError(f"the label namespaces ConfigMap {namespace}/{name} does not "
                             "exist (deploy/base/label-namespaces.yaml)") from None
        raise
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError(f"the label namespaces ConfigMap {namespace}/{name}: data is not a "
                         "mapping")
    namespaces, problems = LabelNamespaces.from_data(data)
    if problems:
        raise ValueError(f"the label namespaces ConfigMap {namespace}/{name} is invalid: "
                         + "; ".join(problems)[:600])
    return Scope(prefixes, namespaces)
