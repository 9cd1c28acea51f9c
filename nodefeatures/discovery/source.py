"""What a label source is: raw discovery, kept apart from turning features into labels.

A source discovers raw features (flags, attributes and instances, as NFD models them),
each with the fact it came from, and then turns them into labels. Built-in sources and
third-party plugins alike are registered in the `nodefeatures.sources` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.labels import DEFAULT_PREFIX, Label


@dataclass(frozen=True)
class Fact:
    """A raw value and where it was read."""

    value: str
    origin: str


@dataclass(frozen=True)
class Instance:
    """One discovered thing (a PCI device, a block device) and its attributes."""

    attributes: Mapping[str, str]
    origin: str


@dataclass
class Features:
    """Raw features of one source, keyed by feature name (`cpuid`, `version`, ...)."""

    flags: dict[str, dict[str, Fact]] = field(default_factory=dict)
    attributes: dict[str, dict[str, Fact]] = field(default_factory=dict)
    instances: dict[str, list[Instance]] = field(default_factory=dict)

    def flag(self, feature: str, name: str, origin: str) -> None:
        self.flags.setdefault(feature, {})[name] = Fact("true", origin)

    def attribute(self, feature: str, name: str, value: str, origin: str) -> None:
        self.attributes.setdefault(feature, {})[name] = Fact(value, origin)

    def instance(self, feature: str, attributes: Mapping[str, str], origin: str) -> None:
        self.instances.setdefault(feature, []).append(Instance(dict(attributes), origin))

    # A feature can exist with no element, as in NFD: `DoesNotExist` then matches on it,
    # while a term on a feature that is not there fails whatever it asks.
    def has_flags(self, feature: str) -> dict[str, Fact]:
        return self.flags.setdefault(feature, {})

    def has_attributes(self, feature: str) -> dict[str, Fact]:
        return self.attributes.setdefault(feature, {})

    def has_instances(self, feature: str) -> list[Instance]:
        return self.instances.setdefault(feature, [])

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "flags": {k: sorted(v) for k, v in sorted(self.flags.items())},
            "attributes": {
                k: {n: f.value for n, f in sorted(v.items())}
                for k, v in sorted(self.attributes.items())
            },
            "instances": {
                k: [dict(i.attributes) for i in v] for k, v in sorted(self.instances.items())
            },
        }


@dataclass
class Host:
    """Everything a discovery pass may read about one node."""

    root: HostRoot
    # Replay: hardware answers (cpuid.txt, nvml.json) come from this fixture directory.
    fixture_dir: Path | None = None
    # Capture: sources that talk to hardware record into this directory.
    capture_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class Context:
    """What one source sees during one pass: the host, its options and a warning sink."""

    def __init__(self, host: Host, options: Mapping[str, Any], source: str) -> None:
        self.host = host
        self.root = host.root
        self.options = options
        self.source = source
        self.warnings: list[str] = []
        self.complete = True  # False when a read failed in a way the next pass may not
        # Results of the sources that ran before, for a source with `uses_features`.
        self.others: Sequence[Any] = ()

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass(frozen=True)
class LabelDoc:
    """One row of the label catalogue (docs/labels.md is generated from these)."""

    # Label name as the source returns it; `<FLAG>`-style placeholders stand for a family.
    name: str
    values: str  # e.g. "true", "decimal", "string"; NEVER for a name we refuse to emit
    origin: str  # where the value comes from
    deviation: str = ""  # how and why we differ from NFD/GFD, if we do


# `values` of a catalogue row that documents a reference label we deliberately never emit.
NEVER = "never"


class Source(ABC):
    """A label source. Subclasses set `name` and implement discover and labels."""

    name: ClassVar[str]
    # Later sources win on equal keys (NFD: built-ins 0, local 20).
    priority: ClassVar[int] = 0
    # Options under `sources.<name>` in the config file, with their defaults and types.
    defaults: ClassVar[Mapping[str, Any]] = {}
    description: ClassVar[str] = ""
    # Every label this source can emit, for docs/labels.md and the catalogue test.
    catalogue: ClassVar[tuple[LabelDoc, ...]] = ()
    # True for a source that matches other sources' raw features (rules): it runs after
    # every other source, whatever its priority, and sees their results as `ctx.others`.
    uses_features: ClassVar[bool] = False

    @abstractmethod
    def discover(self, ctx: Context) -> Features:
        """Read the host and return raw features."""

    @abstractmethod
    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        """Turn raw features into labels; names without '/' are qualified by `qualify`."""

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        """Problems with option values beyond their types; empty when fine."""
        return []

    def default_config(self) -> Any:
        """What `config --defaults` shows under `sources.<name>`."""
        return {key: value for key, value in self.defaults.items()}

    def build_options(self, given: Any) -> tuple[dict[str, Any], list[str]] | None:
        """Options from a config value not shaped like `defaults` (a list of rules).

        None means the usual merge over `defaults`; otherwise the options and problems,
        each problem starting with its path below `sources.<name>` (`[2].name: ...`).
        """
        return None

    def config_of(self, options: Mapping[str, Any]) -> Any:
        """`options` as a config file writes them under `sources.<name>`: what
        `config --effective` shows, loadable again as it is."""
        return options

    def qualify(self, name: str) -> str:
        """The full key of a label name this source returned."""
        if "/" in name:
            return name
        return f"{DEFAULT_PREFIX}/{self.name}-{name}"


def flag_labels(features: Features, feature: str, label_prefix: str) -> list[Label]:
    """`<label_prefix>.<FLAG>=true` for every flag of one feature."""
    return [
        Label(f"{label_prefix}.{name}", "true", fact.origin)
        for name, fact in sorted(features.flags.get(feature, {}).items())
    ]
