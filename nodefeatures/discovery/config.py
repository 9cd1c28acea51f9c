"""The configuration file: per-source options and label filters, validated as a whole.

A file with an unknown key or a wrong type is rejected entirely, naming the key's
path; it is never half-applied.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodefeatures.discovery.source import Source

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
    # Most labels one source may publish, and most bytes of their keys plus values: a
    # source over either publishes its sorted-first labels that fit (docs/design.md).
    "maxLabelsPerSource": 512,
    "maxLabelBytesPerSource": 32768,
}


@dataclass(frozen=True)
class Budget:
    """How much one source may publish in one pass."""

    labels: int = CORE_DEFAULTS["maxLabelsPerSource"]
    bytes: int = CORE_DEFAULTS["maxLabelBytesPerSource"]  # UTF-8 of each key plus its value


# Whole seconds between passes: at least a second (a busy loop otherwise), at most a day
# (beyond that a pass would no longer notice a change in any useful time, and the clock
# arithmetic of a far deadline overflows).
SLEEP_MIN = 1
SLEEP_MAX = 24 * 3600

# Bounds on the file and on what it may expand to. A real config is a few KiB and a few
# levels deep; YAML aliases can make a small file stand for a huge tree, so the walk
# counts every node it visits, shared or not, and stops at the bound.
MAX_FILE_BYTES = 1 << 20  # a ConfigMap holds at most 1 MiB
MAX_DEPTH = 32
MAX_NODES = 100_000
# Integers beyond this are not exactly representable as floats, and no option needs one.
MAX_NUMBER = 2**53
# A message names at most this many problems; the rest are counted.
MAX_PROBLEMS = 20
MAX_ELEMENT_PROBLEMS = 3


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

    def budget(self) -> Budget:
        return Budget(self.core["maxLabelsPerSource"], self.core["maxLabelBytesPerSource"])

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

    text = _read(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML{_yaml_problem(exc)}") from exc
    except RecursionError:
        raise ConfigError(f"{file}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        # int() of a literal past Python's digit limit, raised outside PyYAML's own errors.
        raise ConfigError(f"{file}: not usable YAML: {exc}") from None
    try:
        config = build({} if data is None else data, sources)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    config.path = str(file)
    return config


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's message on one line: where, and what (its own spans several lines with a
    snippet of the file)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    what = ": ".join(str(p) for p in parts if p) or " ".join(str(exc).split())
    return f"{where}: {' '.join(what.split())}"


def _key(key: str) -> str:
    """A key as it appears in a message path: quoted when it is not a plain name, so a
    newline or a dot inside it cannot forge a line or another path."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return repr(key) if len(key) <= 40 else repr(key[:37]) + "..."


def _read(file: Path) -> str:
    """The file's text; a FIFO, device or directory is refused without blocking on it."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        # /dev/null is the usual way to say "no configuration"; other devices are refused.
        if not (stat.S_ISREG(info.st_mode) or _is_null_device(info)):
            raise ConfigError(f"{file}: not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{file}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _is_null_device(info: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == null.st_rdev


def build(data: Any, sources: Mapping[str, Source]) -> Config:
    """Validate parsed config data against the defaults of core and each source."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"the top level must be a mapping, not {describe(data)}")
    # The shape comes first: the checks after it may sort keys, compare numbers and
    # recurse, which a non-string key, an infinite number or a huge tree would break.
    problems = _shape_problems(data)
    if problems:
        raise ConfigError(_joined(problems))
    unknown = sorted(set(data) - {"core", "sources"})
    problems += [f"{_key(k)}: unknown key (expected core, sources)" for k in unknown]
    core = _merge(CORE_DEFAULTS, _or_empty(data.get("core")), "core", problems)
    for pattern_key in ("labelWhiteList", "labelDenyList"):
        value = core.get(pattern_key)
        if isinstance(value, str) and value:
            try:
                re.compile(value)
            except (re.error, OverflowError, RecursionError) as exc:
                problems.append(f"core.{pattern_key}: not a valid regular expression: {exc}")
    for budget_key in ("maxLabelsPerSource", "maxLabelBytesPerSource"):
        value = core.get(budget_key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(f"core.{budget_key}: must be at least 1, got {value}")
    source_data = data.get("sources") or {}
    interval = core["sleepInterval"]
    if _same_kind(CORE_DEFAULTS["sleepInterval"], interval) and not (
            SLEEP_MIN <= interval <= SLEEP_MAX):
        problems.append(f"core.sleepInterval: must be between {SLEEP_MIN} and {SLEEP_MAX} "
                        f"seconds (24 h), got {describe(interval)}")
    source_data = _or_empty(data.get("sources"))
    merged: dict[str, dict[str, Any]] = {}
    if not isinstance(source_data, Mapping):
        problems.append(f"sources: must be a mapping, not {describe(source_data)}")
        source_data = {}
    for name in sorted(set(source_data) - set(sources)):
        problems.append(f"sources.{_key(name)}: no such source (installed: "
                        f"{', '.join(sources)})")
    for name, source in sources.items():
        # A source whose options are not a mapping of defaults (the custom source's list
        # of rules) parses them itself.
        built = source.build_options(source_data.get(name))
        if built is not None:
            merged[name], found = built
            problems += [f"sources.{name}{p}" for p in found]
            continue
        options = _merge(source.defaults, _or_empty(source_data.get(name)), f"sources.{name}",
                         problems)
        try:
            problems += [f"sources.{name}.{p}" for p in source.validate_options(options)]
        except Exception as exc:
            # A plugin's own check is code we did not write: its failure is this source's
            # config problem, named as such, not a crash of the command.
            problems.append(f"sources.{name}: the source's option check failed "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
        merged[name] = options
    if problems:
        raise ConfigError(_joined(problems))
    return Config(core=core, sources=merged)


def _or_empty(value: Any) -> Any:
    """An empty section (`core:` with nothing under it) means the defaults."""
    return {} if value is None else value


def _joined(problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more problems" if more else "")


def _shape_problems(data: Any) -> list[str]:
    """Problems no option could accept: non-string keys, numbers out of range, a tree too
    deep or too large. Iterative and bounded, whatever the aliases make the tree."""
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    visited = 1  # counted when pushed: a list holding itself 100,000 times stops at once
    while stack and len(problems) < MAX_PROBLEMS:
        value, where, depth = stack.pop()
        if isinstance(value, Mapping | list):
            visited += len(value)
        if visited > MAX_NODES:
            return [f"too large: more than {MAX_NODES} values (counting what aliases "
                    "repeat)"]
        if depth > MAX_DEPTH:
            problems.append(f"{where}: nested too deeply (at most {MAX_DEPTH} levels)")
            continue
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.append(f"{where or 'top level'}: keys must be strings, got "
                                    f"{describe(key)}")
                    continue
                stack.append((item, f"{where}.{_key(key)}" if where else _key(key),
                              depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: {describe(value)} is not a finite number")
        elif isinstance(value, int | float) and not isinstance(value, bool) and \
                abs(value) > MAX_NUMBER:
            problems.append(f"{where}: {describe(value)} is out of range (at most 2**53)")
    return problems


def _merge(default: Mapping[str, Any], given: Any, where: str, problems: list[str]) -> dict:
    result = copy.deepcopy(dict(default))
    if not isinstance(given, Mapping):
        problems.append(f"{where}: must be a mapping, not {describe(given)}")
        return result
    for key, value in given.items():
        path = f"{where}.{_key(key)}"
        if key not in default:
            problems.append(f"{path}: unknown key")
            continue
        expected = default[key]
        if isinstance(expected, Mapping) and expected:
            result[key] = _merge(expected, value, path, problems)
        elif not _same_kind(expected, value):
            problems.append(f"{path}: expected {_expected(expected)}, got {describe(value)}")
        elif isinstance(expected, list) and expected and (
                wrong := [i for i, v in enumerate(value) if not _same_kind(expected[0], v)]):
            problems += [f"{path}[{i}]: expected {_expected(expected[0])}, got "
                         f"{describe(value[i])}" for i in wrong[:MAX_ELEMENT_PROBLEMS]]
            if len(wrong) > MAX_ELEMENT_PROBLEMS:
                problems.append(f"{path}: and {len(wrong) - MAX_ELEMENT_PROBLEMS} more "
                                "elements of the wrong type")
        else:
            result[key] = value
    return result


def _same_kind(expected: Any, value: Any) -> bool:
    """Whether value has the type of the default (for a list: is a list; its elements
    are checked one by one, so that the message can name the index)."""
    if value is None:
        return expected is None
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool)
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return isinstance(expected, float) or isinstance(value, int)
    if expected is None:
        return True  # an option without a default accepts any value; the source checks it
    if isinstance(expected, list):
        return isinstance(value, list)
    if isinstance(expected, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(expected))


def _expected(default: Any) -> str:
    """What a default's type asks for, in words, without its value."""
    if isinstance(default, list) and default:
        return f"a list of {_plural(default[0])}"
    return _kind(default)


def _plural(default: Any) -> str:
    return {"a boolean": "booleans", "an integer": "integers", "a number": "numbers",
            "a string": "strings", "a list": "lists", "a mapping": "mappings"
            }.get(_kind(default), "values")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, datetime.date):
        return "a date"  # YAML reads an unquoted 2024-01-01 as one
    return type(value).__name__


def describe(value: Any) -> str:
    """A value's type in words and, for a scalar, a short escaped excerpt of it:
    `an integer (5)`, `a string ('x')`. Containers are never shown (they may be huge)."""
    kind = _kind(value)
    if isinstance(value, bool):
        return f"{kind} ({str(value).lower()})"
    if isinstance(value, int):
        if abs(value) < 10**20:
            return f"{kind} ({value})"
        # str() of a huge integer is slow and refused past 4300 digits: give its size.
        return f"{kind} (about {'-' if value < 0 else ''}10**{int(value.bit_length() * 0.30103)})"
    if isinstance(value, datetime.date):
        return f"{kind} ({value.isoformat()})"
    if isinstance(value, float | str | bytes):
        text = repr(value)
        return f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"
    return kind
