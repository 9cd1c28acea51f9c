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
    # Which sources publish labels: "all", names, and "-name" to switch one off (NFD's
    # labelSources; the deprecated core.sources, when given, replaces it, as in NFD).
    "labelSources": ["all"],
    # Which sources discover features at all, for labels and for rules (NFD's
    # featureSources): a source off here publishes nothing either.
    "featureSources": ["all"],
    # Unanchored regex on the label name after the '/' (NFD's core.labelWhiteList).
    "labelWhiteList": "",
    # Labels whose full key matches this regex are never published.
    "labelDenyList": "",
    # Time between passes of `nodefeatures run`: seconds, or a Go duration ("60s", "1m30s").
    "sleepInterval": 60,
    # NFD's dry run: `run` discovers and logs, and sends nothing to the API server.
    "noPublish": False,
    # Most labels one source may publish, and most bytes of their keys plus values: a
    # source over either publishes its sorted-first labels that fit (docs/design.md).
    "maxLabelsPerSource": 512,
    "maxLabelBytesPerSource": 32768,
    # nfd-worker's options for its NodeFeature object, which this agent does not create:
    # accepted so that an nfd-worker.conf loads, and ignored with a notice.
    "noPublishFeatures": [],
    "ownerRefs": ["pod", "ds"],
    "noOwnerRefs": False,
    # nfd-worker's logger (klog) options; see KLOG_OPTIONS.
    "klog": {},
}

# nfd-worker's configurable sources: their option names match without regard to case
# there (Go's encoding/json), so they do here; other sources' names are exact.
NFD_SOURCES = frozenset({"cpu", "kernel", "pci", "usb", "local"})

# Options older nfd-worker releases documented and later ones dropped (and ignore).
_RETIRED = {
    "local": {"hooksEnabled": "nfd-worker removed hooks in v0.17; feature files remain"},
}

# nfd-worker's sources with options that have no counterpart here.
NFD_ONLY_SOURCES = {
    "fake": "nfd-worker's test source, which publishes made-up features; not installed here",
}

# The deprecated alias of labelSources (NFD's core.sources): no default, a list when given.
DEPRECATED_SOURCES = "sources"

# klog's options as nfd-worker names them in core.klog, with their defaults there. klog
# reads every value as a string, so any scalar is accepted. Only `v` means something here
# (2 or more turns on debug logging); the rest shape klog's files and headers, and this
# agent logs one line per record to stderr, so they are accepted and ignored.
KLOG_OPTIONS: dict[str, Any] = {
    "addDirHeader": False, "alsologtostderr": False, "logBacktraceAt": "", "logDir": "",
    "logFile": "", "logFileMaxSize": 1800, "logtostderr": True, "oneOutput": False,
    "skipHeaders": False, "skipLogHeaders": False, "stderrthreshold": 2, "v": 0,
    "vmodule": "", "legacyStderrThresholdBehavior": True,
}
KLOG_DEBUG_LEVEL = 2
OWNER_REFS = ("node", "pod", "ds")


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
    # Options accepted but ignored, or mapped, said once each by whoever loads the config.
    notices: list[str] = field(default_factory=list)
    # GFD's --oneshot: `run` labels once and exits.
    oneshot: bool = False

    def options(self, source: str) -> dict[str, Any]:
        return self.sources.get(source, {})

    def enabled(self, names: list[str]) -> list[str]:
        """The source names that core.labelSources switches on, in order."""
        return _selected(names, self.core["labelSources"])

    def discovers(self, names: list[str]) -> list[str]:
        """The source names that core.featureSources switches on, in order: a source
        off here discovers nothing, for labels or for rules (discovery/run.py)."""
        return _selected(names, self.core.get("featureSources", ["all"]))

    def budget(self) -> Budget:
        return Budget(self.core["maxLabelsPerSource"], self.core["maxLabelBytesPerSource"])

    def allows(self, key: str) -> bool:
        white = self.core["labelWhiteList"]
        deny = self.core["labelDenyList"]
        name = key.rpartition("/")[2]
        if white and not re.search(white, name):
            return False
        return not (deny and re.search(deny, key))


def _selected(names: list[str], wanted: list[str]) -> list[str]:
    """NFD's source list: "all", names, and "-name" to switch one off."""
    chosen = list(names) if "all" in wanted else [n for n in names if n in wanted]
    return [n for n in chosen if f"-{n}" not in wanted]


def defaults(sources: Mapping[str, Source]) -> dict[str, Any]:
    """The effective default configuration for the given sources."""
    return {
        "core": copy.deepcopy(CORE_DEFAULTS),
        "sources": {name: copy.deepcopy(s.default_config()) for name, s in sources.items()},
    }


def load(path: str | Path | None, sources: Mapping[str, Source]) -> Config:
    """Read and validate a config file; None or a missing default file gives defaults."""
    data, file = read_data(path)
    if file is None:
        return build({}, sources)
    try:
        config = build({} if data is None else data, sources)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    config.path = str(file)
    return config


def read_data(path: str | Path | None) -> tuple[Any, Path | None]:
    """A config file's parsed YAML and its path; (None, None) when no file was named and
    the default one is absent."""
    explicit = path is not None
    file = Path(path) if explicit else Path(DEFAULT_PATH)
    if not file.exists():
        if explicit:
            raise ConfigError(f"{file}: no such file")
        return None, None
    import yaml  # only when there is a file: it is a noticeable part of a cold start

    text = _read(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML{yaml_problem(exc)}") from exc
    except RecursionError:
        raise ConfigError(f"{file}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        # int() of a literal past Python's digit limit, raised outside PyYAML's own errors.
        raise ConfigError(f"{file}: not usable YAML: {exc}") from None
    return data, file


def yaml_problem(exc: Exception) -> str:
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
    notices: list[str] = []
    core_given = _or_empty(data.get("core"))
    if isinstance(core_given, Mapping):
        core_given = _nfd_core(core_given, problems, notices)
    core = _merge(CORE_DEFAULTS, core_given, "core", problems, fold_case=True)
    for list_key in ("labelSources", "featureSources"):
        value = core.get(list_key)
        if isinstance(value, list) and not value:
            problems.append(f"core.{list_key}: an empty list switches every source off; "
                            "write [all] or name the sources")
    owners = core.get("ownerRefs")
    if isinstance(owners, list):
        problems += [f"core.ownerRefs[{i}]: must be one of {', '.join(OWNER_REFS)}, got "
                     f"{describe(v)}" for i, v in enumerate(owners)
                     if isinstance(v, str) and v not in OWNER_REFS][:MAX_ELEMENT_PROBLEMS]
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
        if name in NFD_ONLY_SOURCES and isinstance(source_data[name] or {}, Mapping):
            notices.append(f"sources.{name} is accepted and ignored: {NFD_ONLY_SOURCES[name]}")
            continue
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
        given = _or_empty(source_data.get(name))
        if isinstance(given, Mapping) and any(k in given for k in _RETIRED.get(name, {})):
            given = dict(given)
            for key, why in _RETIRED[name].items():
                if given.pop(key, None) is not None:
                    notices.append(f"sources.{name}.{key} is accepted and ignored: {why}")
        options = _merge(source.defaults, given, f"sources.{name}", problems,
                         fold_case=name in NFD_SOURCES)
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
    return Config(core=core, sources=merged, notices=notices)


# What the agent does with nfd-worker options that concern nfd-worker's own machinery.
_IGNORED_CORE = {
    "noPublishFeatures": "the agent publishes labels, not NodeFeature objects",
    "ownerRefs": "the agent creates no NodeFeature object to own",
    "noOwnerRefs": "the agent creates no NodeFeature object to own",
}


def _nfd_core(given: Mapping[str, Any], problems: list[str], notices: list[str]
              ) -> dict[str, Any]:
    """nfd-worker's own forms in `core`, made ours: a Go duration for sleepInterval, the
    deprecated `sources` alias, klog options; notices for what is accepted and ignored."""
    core = dict(given)
    canonical = {key.lower(): key for key in (*CORE_DEFAULTS, DEPRECATED_SOURCES)}
    for key in list(core):
        # nfd-worker matches keys without regard to case (Go's encoding/json).
        name = canonical.get(key.lower(), key) if isinstance(key, str) else key
        if name != key:
            if name in core:
                problems.append(f"core.{_key(key)}: given twice, as {name} and {_key(key)}")
            core[name] = core.pop(key)
    interval = core.get("sleepInterval")
    if isinstance(interval, str):
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            problems.append(f"core.sleepInterval: {exc}")
            del core["sleepInterval"]
        else:
            if not SLEEP_MIN <= seconds <= SLEEP_MAX:
                problems.append(f"core.sleepInterval: must be between {SLEEP_MIN}s and "
                                f"{SLEEP_MAX // 3600}h, got {describe(interval)}"
                                + (" (nfd-worker's 'never re-label' is not supported: the "
                                   "periodic pass is the safety net)" if seconds <= 0 else ""))
                del core["sleepInterval"]
            else:
                core["sleepInterval"] = round(seconds)  # whole seconds, as a number
    if DEPRECATED_SOURCES in core:
        alias = core.pop(DEPRECATED_SOURCES)
        if alias is not None:
            if not isinstance(alias, list):
                problems.append(f"core.sources: expected a list of strings, got "
                                f"{describe(alias)}")
            else:
                notices.append("core.sources is deprecated (nfd-worker's name); it is used "
                               "as core.labelSources, which it replaces")
                core["labelSources"] = alias
    klog = core.pop("klog", None)
    if klog is not None and _klog(klog, problems, notices):
        core["klog"] = {k: v for k, v in klog.items() if v is not None}
    for key, why in _IGNORED_CORE.items():
        if key in core and core[key] is not None and core[key] != CORE_DEFAULTS[key]:
            notices.append(f"core.{key} is accepted and ignored: {why}")
    return core


def _klog(given: Any, problems: list[str], notices: list[str]) -> bool:
    """Whether core.klog is usable; its problems and notices are added."""
    if not isinstance(given, Mapping):
        problems.append(f"core.klog: must be a mapping, not {describe(given)}")
        return False
    before = len(problems)
    for key, value in given.items():
        path = f"core.klog.{_key(key)}"
        if key not in KLOG_OPTIONS:
            problems.append(f"{path}: unknown key (klog options: "
                            f"{', '.join(sorted(KLOG_OPTIONS))})")
        elif value is not None and not isinstance(value, str | int | float | bool):
            problems.append(f"{path}: expected a string, number or boolean, got "
                            f"{describe(value)}")
        elif key == "v":
            if value is not None and klog_verbosity({"v": value}) is None:
                problems.append(f"{path}: expected a number of 0 or more, got "
                                f"{describe(value)}")
        elif value is not None and value != KLOG_OPTIONS[key] and value != "":
            notices.append(f"{path} is accepted and ignored: the agent writes its log to "
                           "stderr, one line per record (--log-format)")
    return len(problems) == before


def klog_verbosity(core_or_klog: Mapping[str, Any]) -> int | None:
    """core.klog.v as a number, or None when absent or not a number."""
    klog = core_or_klog.get("klog", core_or_klog)
    value = klog.get("v") if isinstance(klog, Mapping) else None
    if isinstance(value, bool) or value is None:
        return None
    try:
        level = int(str(value).strip())
    except ValueError:
        return None
    return level if 0 <= level <= 1000 else None


# Go's time.ParseDuration units, in seconds.
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]+)")


def parse_duration(text: str) -> float:
    """Seconds of a Go duration (`60s`, `1m30s`, `1.5h`, `500ms`), as nfd-worker and GFD
    read them; ValueError with a message otherwise."""
    shown = describe(text)
    body = text.strip()
    if len(body) > 64:
        raise ValueError(f"not a duration such as 60s, 1m30s or 1h: {shown}")
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:] if body[:1] in "+-" else body
    if body == "0":
        return 0.0
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        whole, fraction, unit = match.groups()
        if match.start() != position or (not whole and not fraction) or unit not in _UNITS:
            break
        total += float(f"{whole or 0}.{fraction or 0}") * _UNITS[unit]
        position = match.end()
    else:
        if position == len(body) and body:
            return sign * total
    raise ValueError(f"not a duration such as 60s, 1m30s or 1h (units ns, us, ms, s, m, "
                     f"h): {shown}")


def _or_empty(value: Any) -> Any:
    """An empty section (`core:` with nothing under it) means the defaults."""
    return {} if value is None else value


def _joined(problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more problems" if more else "")


def shape_problems(data: Any) -> list[str]:
    """Problems no option could accept (see _shape_problems), for any parsed config."""
    return _shape_problems(data)


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


def _merge(default: Mapping[str, Any], given: Any, where: str, problems: list[str],
           fold_case: bool = False) -> dict:
    result = copy.deepcopy(dict(default))
    if not isinstance(given, Mapping):
        problems.append(f"{where}: must be a mapping, not {describe(given)}")
        return result
    canonical = {name.lower(): name for name in default
                 if isinstance(name, str) and fold_case}
    for key, value in given.items():
        path = f"{where}.{_key(key)}"
        if key not in default and isinstance(key, str) and key.lower() in canonical:
            # nfd-worker and GFD match keys without regard to case (Go's encoding/json).
            if canonical[key.lower()] in given:
                problems.append(f"{path}: given twice, as {canonical[key.lower()]} and "
                                f"{_key(key)}")
                continue
            key = canonical[key.lower()]
        if key not in default:
            problems.append(f"{path}: unknown key")
            continue
        if value is None and default[key] is not None:
            continue  # null keeps the default, as in nfd-worker (Go's encoding/json)
        expected = default[key]
        if isinstance(expected, Mapping) and expected:
            result[key] = _merge(expected, value, path, problems, fold_case)
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
