"""NFD's API on the node: NodeFeatureRules and this Node's NodeFeatures, without nfd-master.

`ClusterObjects` follows both kinds (objectcache.py) and, after each discovery pass,
adds what they say to the pass's evidence, as nfd-master would have for this node:

- every NodeFeature labelled `nfd.node.kubernetes.io/node-name=<node>`, in any
  namespace, in NFD's order (the agent's namespace first, then by name): its labels are
  a report of origin `nodefeature/<namespace>/<name>`, and its features join the pass's
  features for the rules;
- every NodeFeatureRule, by name, evaluated over those features (rules/cluster.py): its
  labels are a report of origin `nodefeaturerule/<name>`, trusted only when it
  evaluated cleanly over a complete list of the NodeFeatures, so an object that fails,
  or that ran without the NodeFeatures' features, keeps its labels;
- NFD's precedence: built-in sources, then NodeFeatures, then NodeFeatureRules.

A kind whose objects were listed in full is "catalogued" in the evidence: a label whose
origin object is gone from that list is removed (reconcile._evidence_of_absence). A kind
that could not be listed (CRD absent, RBAC) adds nothing and removes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from nodefeatures.cluster.kube import Kind, KubeError, ObjectApi
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.objectcache import ObjectCache
from nodefeatures.cluster.reconcile import Evidence, SourceReport
from nodefeatures.discovery import nodefeature
from nodefeatures.discovery.namespaces import LabelNamespaces
from nodefeatures.discovery.rules import cluster as cluster_rules
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.run import Discovery

log = logging.getLogger(__name__)

# Objects' labels are read with only the namespaces that are never allowed left out; the
# cluster's setting then decides in reconcile (Scope), so `diff` shows what it holds back.
NEVER_ALLOWED = LabelNamespaces(deny=(), extra=())

RULE_ORIGIN = "nodefeaturerule/"
FEATURE_ORIGIN = "nodefeature/"

RULES = Kind(nodefeature.GROUP, nodefeature.VERSION, "nodefeaturerules", verb="rules")


def node_features_kind(node: str) -> Kind:
    """This Node's NodeFeature objects, in every namespace."""
    return Kind(nodefeature.GROUP, nodefeature.VERSION, "nodefeatures", verb="nodefeatures",
                label_selector=f"{nodefeature.NODE_NAME_LABEL}={node}")


class ClusterObjects:
    """The NFD objects that concern one Node, and what they add to a discovery pass."""

    def __init__(self, client: Any, node: str, namespace: str,
                 on_change: Callable[[], None], *, rules: bool = True, features: bool = True,
                 on_request: Callable[[str, str], None] | None = None,
                 budget: cluster_rules.EvalBudget | None = None,
                 metrics: Metrics | None = None) -> None:
        self.node = node
        self.namespace = namespace
        self.budget = budget or cluster_rules.EvalBudget()
        self.rules = ObjectCache(ObjectApi(client, RULES, on_request), on_change) \
            if rules else None
        self.features = ObjectCache(ObjectApi(client, node_features_kind(node), on_request),
                                    on_change) if features else None
        # Parsed objects by (namespace, name, resourceVersion): a stable object is parsed
        # once, not every pass.
        self._loaded: dict[tuple[str, str, str], Any] = {}
        self.outcomes: dict[str, str] = {}  # origin -> "ok" / "failed", of the last pass
        self._gauge = metrics.export(metrics.nfd_objects) if metrics is not None else None

    @property
    def caches(self) -> list[ObjectCache]:
        return [c for c in (self.features, self.rules) if c is not None]

    def start(self) -> ClusterObjects:
        for cache in self.caches:
            cache.start()
        return self

    def stop(self) -> None:
        for cache in self.caches:
            cache.stop()

    def problems(self) -> dict[str, str]:
        """{kind: why} for each kind that cannot be followed now."""
        return {f"objects:{cache.api.kind.plural}": cache.problem + (
                    "; the copy from the last list stays in force" if cache.known
                    else "; their labels are neither added nor removed")
                for cache in self.caches if cache.problem is not None}

    def extend(self, discovery: Discovery, evidence: Evidence) -> Evidence:
        """`evidence` with the reports of this Node's NFD objects after its own."""
        problems = dict(evidence.problems)
        problems.update(self.problems())
        catalogued = set(evidence.catalogued)
        reports = list(evidence.reports)
        # What nfd-master would see: the worker's features, without the custom source's,
        # which only carry its own labels (as node_feature leaves them out).
        features = FeatureSet.from_results(
            r for r in discovery.results if r.name not in nodefeature.LABEL_ONLY_SOURCES)
        seen: dict[tuple[str, str, str], Any] = {}
        outcomes: dict[str, str] = {}

        # The rules read the NodeFeatures' features too: without a complete list of them a
        # rule that no longer matches may only be missing them.
        inputs = ""
        if self.features is not None:
            _, objects, known = self.features.snapshot()
            if known:
                catalogued.add(FEATURE_ORIGIN)
            else:
                inputs = ("evaluated without this node's NodeFeatures, which could not be "
                          "listed: the labels it gave before are kept")
            intakes = [self._load(obj, seen, _read) for obj in objects.values()]
            intakes = nodefeature.ordered(intakes, self.namespace)
            nodefeature.merge_into(features, intakes)
            for intake in intakes:
                reports.append(SourceReport(intake.origin, dict(intake.labels), True))
                outcomes[intake.origin] = "ok"
                if intake.problems:
                    problems[f"object:{intake.origin}"] = _joined(intake.origin,
                                                                  intake.problems)
        if self.rules is not None:
            _, objects, known = self.rules.snapshot()
            if known:
                catalogued.add(RULE_ORIGIN)
            loaded = sorted((self._load(obj, seen, cluster_rules.load)
                             for obj in objects.values()), key=lambda r: r.name)
            for outcome in cluster_rules.evaluate(loaded, features, self.budget,
                                                  NEVER_ALLOWED):
                trusted = outcome.ok and not inputs
                reports.append(SourceReport(outcome.origin, dict(outcome.labels), trusted,
                                            "" if trusted else
                                            _first(outcome.problems) if not outcome.ok
                                            else inputs,
                                            outputs={k: dict(v) for k, v
                                                     in outcome.outputs.items()}))
                outcomes[outcome.origin] = "ok" if outcome.ok else "failed"
                shown = list(outcome.problems)
                if shown:
                    problems[f"object:{outcome.origin}"] = _joined(outcome.origin, shown)
        self._loaded = seen
        self.outcomes = outcomes
        self._count(outcomes)
        return replace(evidence, reports=tuple(reports), catalogued=frozenset(catalogued),
                       problems=problems)

    def _count(self, outcomes: Mapping[str, str]) -> None:
        if self._gauge is None:
            return
        for cache, kind in ((self.rules, "nodefeaturerule"), (self.features, "nodefeature")):
            if cache is None:
                continue
            for state in ("ok", "failed"):
                self._gauge.labels(kind, state).set(sum(
                    1 for origin, s in outcomes.items()
                    if origin.startswith(kind + "/") and s == state))
            self._gauge.labels(kind, "unknown").set(0 if cache.known else 1)

    def _load(self, obj: Mapping[str, Any], seen: dict[tuple[str, str, str], Any],
              loader: Callable[[Mapping[str, Any]], Any]) -> Any:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"], meta["resourceVersion"])
        loaded = self._loaded.get(key)
        if loaded is None:
            loaded = loader(obj)
        seen[key] = loaded
        return loaded


def _read(obj: Mapping[str, Any]) -> nodefeature.Intake:
    return nodefeature.read(obj, NEVER_ALLOWED)


def _first(problems: Any) -> str:
    return next(iter(problems), "not evaluated")


def _joined(origin: str, problems: Any) -> str:
    items = list(problems)
    shown = "; ".join(items[:5]) + (f"; and {len(items) - 5} more" if len(items) > 5 else "")
    return f"{origin}: {shown}"


def list_all(api: ObjectApi, limit: int = 500, most: int = 50_000) -> list[dict[str, Any]]:
    """Every object `api` lists, page by page (`rules test --from-cluster`).

    A test of the cluster's rules over part of them would say "ok" about rules it never
    saw: a page without its items, an item that is not an object, or more than `most`
    objects raise KubeError (reason "invalid" or "too-many") rather than return less.
    """
    found: list[dict[str, Any]] = []
    token: str | None = None
    plural = api.kind.plural
    while True:
        page = api.list(limit, token)
        items = page.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise KubeError(None, "invalid", f"a page of the {plural} list holds no list of "
                            "objects: not testing part of them")
        found += items
        if len(found) > most:
            raise KubeError(None, "too-many", f"more than {most} {plural}: not testing them")
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return found
