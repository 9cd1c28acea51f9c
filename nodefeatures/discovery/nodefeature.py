"""NFD's NodeFeature object (`nfd.k8s-sigs.io/v1alpha1`, namespaced): written and read.

`node_feature` is the object nfd-worker would write for a pass, for clusters that keep
nfd-master. `read` takes in a third-party object (GFD's, an operator's) as plain data
from the API server and keeps only what is valid and within bounds; `ordered`,
`merge_into` and `merged_labels` combine several as nfd-master's getAndMergeNodeFeatures
does. Our own discovery plays the worker's object: it is the base the others merge onto.

What one object may bring in, each bound costing only its excess, with one problem:
`MAX_LABELS` labels (sorted-first keys kept), `MAX_FEATURES` features (flags, then
attributes, then instances, each by name), `MAX_ELEMENTS` elements in one feature (an
instance counts as one, and so does each of its attributes towards `MAX_ELEMENTS` of
that instance), `MAX_TOTAL_ELEMENTS` elements in all, and `MAX_STRING` characters in any
feature name, element name or value (a longer one drops its element). Problems are
sentences about the object (the caller names its origin); at most `MAX_PROBLEMS` are
kept, then a count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nodefeatures import __version__
from nodefeatures.discovery.labels import DEFAULT_PREFIX, Label, checked
from nodefeatures.discovery.namespaces import DEFAULT, LabelNamespaces, is_subdomain
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.run import Discovery
from nodefeatures.discovery.text import quote

GROUP = "nfd.k8s-sigs.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NodeFeature"
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"
WORKER_VERSION_ANNOTATION = "nfd.node.kubernetes.io/worker.version"
# Sources whose features only carry their own labels: NFD's custom source is a label
# source, and nfd-worker publishes no features for it.
LABEL_ONLY_SOURCES = frozenset({"custom"})

MAX_LABELS = 4096
MAX_FEATURES = 4096
MAX_ELEMENTS = 10_000
MAX_TOTAL_ELEMENTS = 100_000
MAX_STRING = 1024
MAX_PROBLEMS = 20
KINDS = ("flags", "attributes", "instances")


def node_feature(discovery: Discovery, node: str, namespace: str) -> dict[str, Any]:
    """The NodeFeature nfd-worker would write for this pass: every source's raw features
    as `<source>.<feature>` and the pass's labels, all sorted, with no timestamp.

    Labels carry full keys. nfd-worker sends its built-in sources' labels so and local's
    or custom's as written; nfd-master prefixes a bare name with
    `feature.node.kubernetes.io/`, so both reach the same Node label."""
    results = [r for r in discovery.results if r.name not in LABEL_ONLY_SOURCES]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": node,
            "namespace": namespace,
            "labels": {NODE_NAME_LABEL: node},
            "annotations": {WORKER_VERSION_ANNOTATION: __version__},
        },
        "spec": {
            "features": FeatureSet.from_results(results).as_dict(),
            "labels": discovery.values(),
        },
    }


@dataclass(frozen=True)
class Intake:
    """What one third-party NodeFeature brings: valid labels, bounded features."""

    namespace: str
    name: str
    origin: str  # "nodefeature/<namespace>/<name>"
    labels: dict[str, str]  # full keys, valid, in allowed namespaces
    features: dict[str, Any]  # NodeFeatureSpec.features shape, every part checked
    problems: tuple[str, ...]


class _Problems:
    def __init__(self) -> None:
        self.kept: list[str] = []
        self.more = 0

    def add(self, message: str) -> None:
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(message)
        else:
            self.more += 1

    def all(self) -> tuple[str, ...]:
        more = (f"... and {self.more} more problems",) if self.more else ()
        return (*self.kept, *more)


def read(obj: Mapping[str, Any], namespaces: LabelNamespaces = DEFAULT) -> Intake:
    """A NodeFeature as the API server gave it; never raises, whatever it holds.

    Labels in namespaces `namespaces` refuses are dropped here, so a changed setting means
    reading the object again (the caller caches by resourceVersion and setting)."""
    problems = _Problems()
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    if not _object_name(name) or not _object_name(namespace):
        return Intake(namespace if isinstance(namespace, str) else "",
                      name if isinstance(name, str) else "", "nodefeature/?", {},
                      _features({}, _Problems()), (
                          "metadata.name and metadata.namespace must be object names, not "
                          f"{_shown(name)} and {_shown(namespace)}; the object is ignored",))
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    elif not isinstance(spec, Mapping):
        problems.add(f"spec must be a mapping, not {type(spec).__name__}")
        spec = {}
    labels = _labels(spec.get("labels"), namespaces, problems)
    features = spec.get("features")
    if features is not None and not isinstance(features, Mapping):
        problems.add(f"spec.features must be a mapping, not {type(features).__name__}")
    data = _features(features if isinstance(features, Mapping) else {}, problems)
    return Intake(namespace, name, f"nodefeature/{namespace}/{name}", labels, data,
                  problems.all())


def ordered(intakes: Iterable[Intake], own_namespace: str) -> list[Intake]:
    """nfd-master's merge order: objects in its own namespace first, then by name, then
    by namespace. A later object wins."""
    return sorted(intakes, key=lambda i: (i.namespace != own_namespace, i.name, i.namespace))


def merge_into(features: FeatureSet, intakes: Iterable[Intake]) -> None:
    """Merge the objects' features, in the order given (`ordered`), onto a pass's."""
    for intake in intakes:
        features.merge(intake.features)


def merged_labels(intakes: Iterable[Intake]) -> dict[str, dict[str, str]]:
    """origin -> the labels it wins, in the order given (`ordered`): a later object wins
    a key, so each key is under exactly one origin. Every origin is present, with no label
    when it gives none or loses them all, so its old labels can go."""
    given = list(intakes)
    winners: dict[str, tuple[str, str]] = {}
    for intake in given:
        for key, value in intake.labels.items():
            winners[key] = (intake.origin, value)
    result: dict[str, dict[str, str]] = {intake.origin: {} for intake in given}
    for key, (origin, value) in sorted(winners.items()):
        result[origin][key] = value
    return result


def _object_name(value: Any) -> bool:
    return isinstance(value, str) and is_subdomain(value)


def _shown(value: Any) -> str:
    return quote(value) if isinstance(value, str) else type(value).__name__


def _labels(data: Any, namespaces: LabelNamespaces, problems: _Problems) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.add(f"spec.labels must be a mapping, not {type(data).__name__}")
        return {}
    keys = _string_keys(data, "spec.labels", problems)
    if len(keys) > MAX_LABELS:
        problems.add(f"{len(keys) - MAX_LABELS} labels over the limit of {MAX_LABELS} "
                     "dropped (the sorted-first keys are kept)")
        keys = keys[:MAX_LABELS]
    labels: dict[str, str] = {}
    for key in keys:
        value = data[key]
        full = key if "/" in key else f"{DEFAULT_PREFIX}/{key}"
        if full != key and full in data:
            continue  # as nfd-master: the prefixed twin wins
        if not isinstance(value, str):
            problems.add(f"dropped label {quote(key)}: the value must be a string, "
                         f"not {type(value).__name__}")
            continue
        label, message = checked(Label(full, value))
        if label is None:
            problems.add(message or f"dropped label {quote(full)}")
            continue
        refusal = namespaces.refusal(full)
        if refusal is not None:
            problems.add(f"dropped label {quote(full)}: {refusal}")
            continue
        labels[full] = value
    return dict(sorted(labels.items()))


def _string_keys(data: Mapping[Any, Any], where: str, problems: _Problems) -> list[str]:
    odd = [k for k in data if not isinstance(k, str)]
    for key in odd:
        problems.add(f"{where}: a key must be a string, not {type(key).__name__}")
    return sorted(k for k in data if isinstance(k, str))


class _Budget:
    def __init__(self) -> None:
        self.features = 0
        self.features_over = 0
        self.elements = 0
        self.elements_over = 0

    def take(self) -> bool:
        if self.elements >= MAX_TOTAL_ELEMENTS:
            self.elements_over += 1
            return False
        self.elements += 1
        return True


def _features(data: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    result: dict[str, Any] = {kind: {} for kind in KINDS}
    budget = _Budget()
    for kind in KINDS:
        table = data.get(kind)
        if table is None:
            continue
        where = f"spec.features.{kind}"
        if not isinstance(table, Mapping):
            problems.add(f"{where} must be a mapping, not {type(table).__name__}")
            continue
        for name in _string_keys(table, where, problems):
            if budget.features >= MAX_FEATURES:
                budget.features_over += 1
                continue
            if len(name) > MAX_STRING:
                problems.add(f"{where}: feature {quote(name)} dropped: its name is longer "
                             f"than {MAX_STRING} characters")
                continue
            value = table[name]
            if value is not None and not isinstance(value, Mapping):
                problems.add(f"{where}: feature {quote(name)} dropped: it must be a "
                             f"mapping with elements, not {type(value).__name__}")
                continue
            elements = value.get("elements") if value is not None else None
            read = _READERS[kind](elements, f"{kind} feature {quote(name)}", budget, problems)
            if read is not None:
                budget.features += 1
                result[kind][name] = {"elements": read}
    if budget.features_over:
        problems.add(f"{budget.features_over} features over the limit of {MAX_FEATURES} "
                     "dropped (flags, attributes, instances, each by name)")
    if budget.elements_over:
        problems.add(f"{budget.elements_over} elements in all over the limit of "
                     f"{MAX_TOTAL_ELEMENTS} dropped")
    return result


def _cut(items: list[Any], where: str, problems: _Problems) -> list[Any]:
    if len(items) > MAX_ELEMENTS:
        problems.add(f"{len(items) - MAX_ELEMENTS} elements over the limit of {MAX_ELEMENTS} "
                     f"dropped from {where}")
        return items[:MAX_ELEMENTS]
    return items


def _too_long(text: str, what: str, where: str, problems: _Problems) -> bool:
    if len(text) <= MAX_STRING:
        return False
    problems.add(f"{where}: {what} of {len(text)} characters dropped (at most {MAX_STRING})")
    return True


def _mapping(elements: Any, where: str, problems: _Problems) -> Mapping[Any, Any] | None:
    """A feature's elements as a mapping ({} when absent), or None (reported) when not."""
    if elements is None:
        return {}
    if not isinstance(elements, Mapping):
        problems.add(f"{where} dropped: elements must be a mapping, not "
                     f"{type(elements).__name__}")
        return None
    return elements


def _flags(elements: Any, where: str, budget: _Budget, problems: _Problems
           ) -> dict[str, Any] | None:
    elements = _mapping(elements, where, problems)
    if elements is None:
        return None
    kept: dict[str, Any] = {}
    for key in _cut(_string_keys(elements, where, problems), where, problems):
        if elements[key] is not None and not isinstance(elements[key], Mapping):
            problems.add(f"{where}: element {quote(key)} dropped: a flag holds nothing, not "
                         f"{type(elements[key]).__name__}")
        elif not _too_long(key, "an element name", where, problems) and budget.take():
            kept[key] = {}
    return kept


def _attributes(elements: Any, where: str, budget: _Budget, problems: _Problems
                ) -> dict[str, str] | None:
    elements = _mapping(elements, where, problems)
    return None if elements is None else _string_map(elements, where, budget, problems)


def _string_map(elements: Mapping[Any, Any], where: str, budget: _Budget,
                problems: _Problems) -> dict[str, str]:
    kept: dict[str, str] = {}
    for key in _cut(_string_keys(elements, where, problems), where, problems):
        value = elements[key]
        if not isinstance(value, str):
            problems.add(f"{where}: element {quote(key)} dropped: the value must be a "
                         f"string, not {type(value).__name__}")
        elif (not _too_long(key, "an element name", where, problems)
              and not _too_long(value, f"the value of {quote(key)}", where, problems)
              and budget.take()):
            kept[key] = value
    return kept


def _instances(elements: Any, where: str, budget: _Budget, problems: _Problems
               ) -> list[dict[str, Any]] | None:
    if elements is None:
        return []
    if not isinstance(elements, list):
        problems.add(f"{where} dropped: elements must be a list, not "
                     f"{type(elements).__name__}")
        return None
    kept: list[dict[str, Any]] = []
    for index, item in enumerate(_cut(elements, where, problems)):
        attributes = item.get("attributes") if isinstance(item, Mapping) else None
        if not isinstance(item, Mapping) or not isinstance(attributes, Mapping | None):
            problems.add(f"{where}: instance [{index}] dropped: it must be a mapping with "
                         "attributes")
            continue
        shown = f"{where} instance [{index}]"
        if budget.take():
            kept.append({"attributes": _string_map(attributes or {}, shown, budget, problems)})
    return kept


_READERS: dict[str, Any] = {"flags": _flags, "attributes": _attributes,
                            "instances": _instances}
