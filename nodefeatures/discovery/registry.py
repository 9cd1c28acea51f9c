"""Finds installed sources through the `nodefeatures.sources` entry-point group.

`importlib.metadata` costs tens of milliseconds to import (email, zipfile, csv), a large
share of a cold `nodefeatures dump`. Entry points are plain INI files in each
distribution's metadata directory, so this module reads them directly from `sys.path`,
in `sys.path` order, as importlib.metadata does; a test checks both agree.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from nodefeatures.discovery.source import Source

GROUP = "nodefeatures.sources"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    """An installed source: its entry point and the distribution that declares it."""

    name: str
    target: str  # "module:Class"
    distribution: str


def installed() -> dict[str, Installed]:
    """Every registered source by name, without importing any of them."""
    found: dict[str, Installed] = {}
    seen_distributions: set[str] = set()
    for directory in sys.path:
        for meta_dir, dist in _metadata_dirs(directory or "."):
            key = _normalize(dist)
            if key in seen_distributions:
                continue  # the first distribution of a name on sys.path shadows the rest
            seen_distributions.add(key)
            for name, target in _group(os.path.join(meta_dir, "entry_points.txt")):
                if name in found:
                    if found[name].target != target:
                        log.warning("source %r is registered twice (%s and %s); using %s",
                                    name, found[name].target, target, found[name].target)
                    continue
                found[name] = Installed(name, target, dist)
    return dict(sorted(found.items()))


def _metadata_dirs(directory: str) -> list[tuple[str, str]]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    result = []
    for name in names:
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix in ("dist-info", "egg-info"):
            dist = stem.split("-", 1)[0]
            result.append((os.path.join(directory, name), dist))
    return result


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _group(path: str) -> list[tuple[str, str]]:
    """(name, target) pairs of our group in one entry_points.txt file."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return []
    entries: list[tuple[str, str]] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == GROUP and "=" in line:
            name, _, target = line.partition("=")
            entries.append((name.strip(), target.split("[", 1)[0].strip()))
    return entries


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
