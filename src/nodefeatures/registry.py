"""Finds installed sources through the `nodefeatures.sources` entry-point group."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points

from nodefeatures.source import Source

GROUP = "nodefeatures.sources"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    """An installed source: its entry point and, once imported, its class."""

    name: str
    target: str  # "module:Class"
    distribution: str


def installed() -> dict[str, Installed]:
    """Every registered source by name, without importing any of them."""
    found: dict[str, Installed] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if ep.name in found and found[ep.name].target != ep.value:
            log.warning(
                "source %r is registered twice (%s and %s); using %s",
                ep.name, found[ep.name].target, ep.value, found[ep.name].target,
            )
            continue
        found[ep.name] = Installed(ep.name, ep.value, dist)
    return dict(sorted(found.items()))


def load(entry: Installed) -> Source:
    """Import a source and instantiate it; raises ImportError with a clear message."""
    module_name, _, attr = entry.target.partition(":")
    try:
        module = __import__(module_name, fromlist=[attr or "_"])
        cls = getattr(module, attr)
    except Exception as exc:
        message = f"source {entry.name!r} ({entry.target}) cannot be loaded: {exc}"
        raise ImportError(message) from exc
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise ImportError(f"source {entry.name!r} ({entry.target}) is not a Source subclass")
    source = cls()
    if getattr(source, "name", None) != entry.name:
        raise ImportError(
            f"source {entry.name!r} ({entry.target}) calls itself {getattr(source, 'name', None)!r}"
        )
    return source
