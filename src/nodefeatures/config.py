"""The configuration file: per-source options and label filters, validated as a whole.

A file with an unknown key or a wrong type is rejected entirely, naming the key's
path; it is never half-applied.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodefeatures.source import Source

DEFAULT_PATH = "/etc/nodefeatures/config.yaml"

CORE_DEFAULTS: dict[str, Any] = {
    # Which sources run: "all", names, and "-name" to switch one off (as NFD's labelSources).
    "labelSources": ["all"],
    # Unanchored regex on the label name after the '/' (NFD's core.labelWhiteList).
    "labelWhiteList": "",
    # Labels whose full key matches this regex are never published.
    "labelDenyList": "",
    # Seconds between passes of `nodefeatures run`.
    "sleepInterval": 60,
}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


@dataclass
class Config:
    """Validated configuration with defaults filled in."""

    core: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(CORE_DEFAULTS))
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str | None = None

    def options(self, source: str) -> dict[str, Any]:
        return self.sources.get(source, {})

    def enabled(self, names: list[str]) -> list[str]:
        """The installed source names that the config switches on, in order."""
        wanted = self.core["labelSources"]
        chosen = list(names) if "all" in wanted else [n for n in names if n in wanted]
        return [n for n in chosen if f"-{n}" not in wanted]

    def allows(self, key: str) -> bool:
        white = self.core["labelWhiteList"]
        deny = self.core["labelDenyList"]
        name = key.rpartition("/")[2]
        if white and not re.search(white, name):
            return False
        return not (deny and re.search(deny, key))


def defaults(sources: Mapping[str, Source]) -> dict[str, Any]:
    """The effective default configuration for the given sources."""
    return {
        "core": copy.deepcopy(CORE_DEFAULTS),
        "sources": {name: copy.deepcopy(s.default_config()) for name, s in sources.items()},
    }


def load(path: str | Path | None, sources: Mapping[str, Source]) -> Config:
    """Read and validate a config file; None or a missing default file gives defaults."""
    explicit = path is not None
    file = Path(path) if explicit else Path(DEFAULT_PATH)
    if not file.exists():
        if explicit:
            raise ConfigError(f"{file}: no such file")
        return build({}, sources)
    import yaml  # only when there is a file: it is a noticeable part of a cold start

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    try:
        config = build(data or {}, sources)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    config.path = str(file)
    return config


def build(data: Any, sources: Mapping[str, Source]) -> Config:
    """Validate parsed config data against the defaults of core and each source."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"the top level must be a mapping, not {_kind(data)}")
    problems: list[str] = []
    unknown = sorted(set(data) - {"core", "sources"})
    problems += [f"{k}: unknown key (expected core, sources)" for k in unknown]
    core = _merge(CORE_DEFAULTS, data.get("core") or {}, "core", problems)
    for pattern_key in ("labelWhiteList", "labelDenyList"):
        value = core.get(pattern_key)
        if isinstance(value, str) and value:
            try:
                re.compile(value)
            except re.error as exc:
                problems.append(f"core.{pattern_key}: not a valid regular expression: {exc}")
    source_data = data.get("sources") or {}
    merged: dict[str, dict[str, Any]] = {}
    if not isinstance(source_data, Mapping):
        problems.append(f"sources: must be a mapping, not {_kind(source_data)}")
        source_data = {}
    for name in sorted(set(source_data) - set(sources)):
        problems.append(f"sources.{name}: no such source (installed: {', '.join(sources)})")
    for name, source in sources.items():
        built = source.build_options(source_data.get(name))
        if built is not None:
            merged[name], found = built
            problems += [f"sources.{name}{p}" for p in found]
            continue
        options = _merge(source.defaults, source_data.get(name) or {}, f"sources.{name}", problems)
        problems += [f"sources.{name}.{p}" for p in source.validate_options(options)]
        merged[name] = options
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(core=core, sources=merged)


def _merge(default: Mapping[str, Any], given: Any, where: str, problems: list[str]) -> dict:
    result = copy.deepcopy(dict(default))
    if not isinstance(given, Mapping):
        problems.append(f"{where}: must be a mapping, not {_kind(given)}")
        return result
    for key, value in given.items():
        path = f"{where}.{key}"
        if key not in default:
            problems.append(f"{path}: unknown key")
            continue
        expected = default[key]
        if isinstance(expected, Mapping) and expected:
            result[key] = _merge(expected, value, path, problems)
        elif not _same_kind(expected, value):
            problems.append(f"{path}: expected {_kind(expected)}, got {_kind(value)}")
        else:
            result[key] = value
    return result


def _same_kind(expected: Any, value: Any) -> bool:
    if value is None:
        return expected is None
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool)
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return isinstance(expected, float) or isinstance(value, int)
    if expected is None:
        return True  # an option without a default accepts any value; the source checks it
    if isinstance(expected, list):
        return isinstance(value, list) and all(
            not expected or _same_kind(expected[0], v) for v in value
        )
    if isinstance(expected, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(expected))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
