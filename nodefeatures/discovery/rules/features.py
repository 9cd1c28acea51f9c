"""The feature set rules match against: `<source>.<feature>` -> flags, attributes, instances.

It is NFD's NodeFeatureSpec shape without the objects: flags are a set of names,
attributes a name -> value mapping, instances a list of attribute mappings. Features of
a source are converted only when a rule first asks for one of them, so a pass that
evaluates only the two built-in rules converts two features, not hundreds. Features merged
from NodeFeature objects (`merge`) wait the same way, and join a feature when it is
converted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from nodefeatures.discovery.source import Features


class _HasFeatures(Protocol):
    name: str
    features: Features | None


class FeatureSet:
    """Raw features by full name, as rules see them."""

    def __init__(self) -> None:
        self._flags: dict[str, Collection[str]] = {}
        self._attributes: dict[str, dict[str, str]] = {}
        self._instances: dict[str, list[Mapping[str, str]]] = {}
        self._sources: dict[str, Features] = {}
        self._converted: set[str] = set()
        self._providers: dict[str, Callable[[FeatureSet], None]] = {}
        # NodeFeature data merged in, by feature name, waiting for the feature's conversion.
        self._merged: dict[str, list[tuple[str, Any]]] = {}

    @classmethod
    def from_results(cls, results: Iterable[_HasFeatures]) -> FeatureSet:
        """The features of discovery results (`SourceResult`s), by source name."""
        features = cls()
        for result in results:
            if result.features is not None:
                features.add_source(result.name, result.features)
        return features

    def add_source(self, name: str, features: Features) -> None:
        self._sources[name] = features

    def merge(self, features: Mapping[str, Any]) -> None:
        """NFD's `Features.MergeInto` of NodeFeatureSpec-shaped `features` (as
        nodefeature.read validates them) onto these: flags are a union, attribute
        elements overwrite, instances are appended; a feature with no element is created."""
        for kind in ("flags", "attributes", "instances"):
            for name, feature in features.get(kind, {}).items():
                self._merged.setdefault(name, []).append((kind, feature.get("elements")))
                if name in self._converted:
                    self._apply_merged(name)

    def provide(self, name: str, provider: Callable[[FeatureSet], None]) -> None:
        """Run `provider` (which sets feature `name`) only when a rule first asks for it."""
        self._providers[name] = provider

    # -- what rules ask -----------------------------------------------------------

    def flags(self, name: str) -> Collection[str] | None:
        self._convert(name)
        return self._flags.get(name)

    def attributes(self, name: str) -> Mapping[str, str] | None:
        self._convert(name)
        return self._attributes.get(name)

    def instances(self, name: str) -> list[Mapping[str, str]] | None:
        self._convert(name)
        return self._instances.get(name)

    # -- what the host and the engine set ------------------------------------------

    def set_flags(self, name: str, names: Iterable[str]) -> None:
        self._convert(name)
        self._flags[name] = set(names)

    def set_instances(self, name: str, instances: Iterable[Mapping[str, str]]) -> None:
        self._convert(name)
        self._instances[name] = [dict(i) for i in instances]

    def update_attributes(self, name: str, values: Mapping[str, str]) -> None:
        """Add attributes, creating the feature even when `values` is empty (as NFD does)."""
        self._convert(name)
        self._attributes.setdefault(name, {}).update(values)

    def replace_attributes(self, name: str, values: Mapping[str, str] | None) -> None:
        """Set a feature's attributes to `values`, or remove them (None): how an
        evaluation puts `rule.matched` back as it found it."""
        self._convert(name)
        if values is None:
            self._attributes.pop(name, None)
        else:
            self._attributes[name] = dict(values)

    def asked(self) -> set[str]:
        """The feature names rules asked for so far (present or not)."""
        return set(self._converted)

    def names(self) -> list[str]:
        """Every feature name, converting everything (for dumps, not for rule passes)."""
        for name in [*self._providers, *self._merged]:
            self._convert(name)
        for source, features in self._sources.items():
            for table in (features.flags, features.attributes, features.instances):
                for feature in table:
                    self._convert(f"{source}.{feature}")
        return sorted(set(self._flags) | set(self._attributes) | set(self._instances))

    def as_dict(self) -> dict[str, Any]:
        """NodeFeatureSpec-shaped plain data."""
        names = self.names()
        return {
            "flags": {n: {"elements": {k: {} for k in sorted(self._flags[n])}}
                      for n in names if n in self._flags},
            "attributes": {n: {"elements": dict(sorted(self._attributes[n].items()))}
                           for n in names if n in self._attributes},
            "instances": {n: {"elements": [{"attributes": dict(sorted(i.items()))}
                                           for i in self._instances[n]]}
                          for n in names if n in self._instances},
        }

    def _convert(self, name: str) -> None:
        if name in self._converted:
            return
        self._converted.add(name)
        provider = self._providers.pop(name, None)
        if provider is not None:
            provider(self)
        else:
            self._convert_source(name)
        self._apply_merged(name)

    def _apply_merged(self, name: str) -> None:
        for kind, elements in self._merged.pop(name, ()):
            if kind == "flags":
                self._flags[name] = {*self._flags.get(name, ()), *(elements or ())}
            elif kind == "attributes":
                self._attributes[name] = {**self._attributes.get(name, {}), **(elements or {})}
            else:
                self._instances[name] = [*self._instances.get(name, ()),
                                         *(dict(i["attributes"]) for i in elements or ())]

    def _convert_source(self, name: str) -> None:
        source, dot, feature = name.partition(".")
        features = self._sources.get(source) if dot else None
        if features is None:
            return
        flags = features.flags.get(feature)
        if flags is not None:
            self._flags[name] = flags.keys()
        attributes = features.attributes.get(feature)
        if attributes is not None:
            self._attributes[name] = {k: fact.value for k, fact in attributes.items()}
        instances = features.instances.get(feature)
        if instances is not None:
            self._instances[name] = [i.attributes for i in instances]
