"""GPU Feature Discovery's configuration: its config file and environment, in our terms.

GFD shares the device plugin's config file (`version: v1` with `flags`, `sharing`,
`resources`, `imex`) and reads the same settings from `GFD_*` environment variables. What
it means for labels is mapped onto `sources.nvidia` and `core.sleepInterval`; what only
concerns GFD's or the device plugin's own machinery is accepted, and noticed where GFD
itself would have acted on it. Precedence is GFD's: an environment variable over the
file (and our command-line flags over both, applied by the caller).

Nothing here reads a GPU. Problems name the file and the key (`flags.migStrategy`) or the
variable (`GFD_MIG_STRATEGY`), and reject the configuration as a whole.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodefeatures.discovery.config import SLEEP_MAX, SLEEP_MIN, describe, parse_duration

VERSION = "v1"
MIG_STRATEGIES = ("none", "single", "mixed")
DISCOVERY_STRATEGIES = ("auto", "nvml", "tegra", "vfio")
# GFD's "sleep forever after the first labelling".
INFINITE = "infinite"

# Environment variables of each setting, in GFD's order: the first one set wins.
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "migStrategy": ("GFD_MIG_STRATEGY", "MIG_STRATEGY"),
    "failOnInitError": ("GFD_FAIL_ON_INIT_ERROR", "FAIL_ON_INIT_ERROR"),
    "gfd.oneshot": ("GFD_ONESHOT",),
    "gfd.noTimestamp": ("GFD_NO_TIMESTAMP",),
    "gfd.sleepInterval": ("GFD_SLEEP_INTERVAL",),
    "gfd.outputFile": ("GFD_OUTPUT_FILE",),
    "gfd.machineTypeFile": ("GFD_MACHINE_TYPE_FILE",),
    "useNodeFeatureAPI": ("GFD_USE_NODE_FEATURE_API", "USE_NODE_FEATURE_API"),
    "deviceDiscoveryStrategy": ("DEVICE_DISCOVERY_STRATEGY",),
    "plugin.containerDriverRoot": ("DRIVER_ROOT_CTR_PATH", "CONTAINER_DRIVER_ROOT"),
}
# Where GFD finds its config file.
FILE_ENVIRONMENT = ("GFD_CONFIG_FILE", "CONFIG_FILE")

_BOOL, _TEXT, _DURATION, _LIST = "a boolean", "a string", "a duration", "a list"
# Every key of the v1 file, with its type. `plugin` and the roots are the device
# plugin's: they are checked, and GFD ignores them, so they are ignored here quietly.
_FLAGS: dict[str, Any] = {
    "migStrategy": _TEXT, "failOnInitError": _BOOL, "mpsRoot": _TEXT,
    "nvidiaDriverRoot": _TEXT, "nvidiaDevRoot": _TEXT, "gdrcopyEnabled": _BOOL,
    "gdsEnabled": _BOOL, "mofedEnabled": _BOOL, "useNodeFeatureAPI": _BOOL,
    "deviceDiscoveryStrategy": _TEXT,
    "plugin": {"passDeviceSpecs": _BOOL, "deviceListStrategy": "a string or a list",
               "deviceIDStrategy": _TEXT, "cdiAnnotationPrefix": _TEXT,
               "nvidiaCTKPath": _TEXT, "containerDriverRoot": _TEXT,
               "sharedDevicesAllocationPolicy": _TEXT},
    "gfd": {"oneshot": _BOOL, "noTimestamp": _BOOL, "sleepInterval": _DURATION,
            "outputFile": _TEXT, "machineTypeFile": _TEXT},
}
_TOP = ("version", "flags", "resources", "sharing", "imex")
_SHARING_BLOCK = ("renameByDefault", "failRequestsGreaterThanOne", "resources")
SHARING_STRATEGIES = ("timeSlicing", "mps")
# The device plugin's sections whose keys are checked and otherwise left alone.
_SECTIONS = {"resources": ("gpus", "mig"), "imex": ("channelIDs", "required")}

# Settings GFD acts on that mean nothing to this agent, and why.
_IGNORED = {
    "failOnInitError": "the agent never exits when NVML fails: the nvidia source keeps its "
                       "labels, reports the failure (SourceProblem Event, "
                       "nodefeatures_nvml_initialized 0) and tries again each pass",
    "gfd.outputFile": "the agent labels the Node itself (run --output-file writes a "
                      "features.d file instead)",
    "useNodeFeatureAPI": "the agent patches the Node's labels itself, with no NodeFeature "
                         "object",
    "deviceDiscoveryStrategy": "the nvidia source finds PCI, Tegra and WSL2 GPUs by itself",
}


def accepted_keys() -> frozenset[str]:
    """Every leaf key of the v1 file this module reads, dotted (`flags.gfd.oneshot`,
    `sharing.mps.resources`): the keys docs/labels.md must document."""
    def leaves(schema: Mapping[str, Any], where: str) -> set[str]:
        found: set[str] = set()
        for key, kind in schema.items():
            path = f"{where}.{key}"
            found |= leaves(kind, path) if isinstance(kind, Mapping) else {path}
        return found

    keys = {"version"} | leaves(_FLAGS, "flags")
    keys |= {f"{section}.{key}" for section, names in _SECTIONS.items() for key in names}
    keys |= {f"sharing.{strategy}.{key}" for strategy in SHARING_STRATEGIES
             for key in _SHARING_BLOCK}
    return frozenset(keys)


def environment_key(setting: str) -> str:
    """The file key an ENVIRONMENT setting stands for."""
    return f"flags.{setting}"


class GfdConfigError(ValueError):
    """GFD's configuration cannot be used; the message names the key or variable."""


@dataclass
class GfdSettings:
    """What GFD's file and environment say, in our terms."""

    nvidia: dict[str, Any] = field(default_factory=dict)  # sources.nvidia options
    core: dict[str, Any] = field(default_factory=dict)  # core options (sleepInterval)
    oneshot: bool = False
    notices: list[str] = field(default_factory=list)

    def apply(self, data: Any, installed: Mapping[str, Any]) -> Any:
        """Config data with these settings laid over it (they win); `data` is unchanged.

        The nvidia options are laid over only where the nvidia source is installed.
        """
        if not isinstance(data, Mapping):
            return data
        merged = copy.deepcopy(dict(data))
        if self.core:
            core = merged.get("core")
            if core is None or isinstance(core, Mapping):
                merged["core"] = {**(core or {}), **self.core}
        if self.nvidia and "nvidia" in installed:
            sources = merged.get("sources")
            if sources is None or isinstance(sources, Mapping):
                sources = dict(sources or {})
                nvidia = sources.get("nvidia")
                if nvidia is None or isinstance(nvidia, Mapping):
                    sources["nvidia"] = {**(nvidia or {}), **self.nvidia}
                merged["sources"] = sources
        return merged


def is_gfd_file(data: Any) -> bool:
    """Whether parsed YAML is GFD's (device plugin's) file: it has a `version` key, which
    our and nfd-worker's files never have."""
    return isinstance(data, Mapping) and "version" in data


def settings(data: Any, env: Mapping[str, str], origin: str = "GFD config") -> GfdSettings:
    """GFD's file (`data`, None for none) and environment, merged by GFD's precedence."""
    problems: list[str] = []
    given: dict[str, tuple[Any, str]] = {}  # setting -> (value, where it was said)
    sharing: Any = None
    if data is not None:
        sharing = _file_settings(data, origin, problems, given)
    for name, variables in ENVIRONMENT.items():
        for variable in variables:
            text = env.get(variable)
            if text:
                given[name] = (_from_env(name, text, variable, problems), variable)
                break
    result = GfdSettings()
    for name, (value, where) in given.items():
        if value is not None:
            _map(name, value, where, result, problems)
    if sharing is not None:
        result.nvidia["sharing"] = _sharing(sharing, f"{origin}: sharing", problems,
                                            result.notices)
    if problems:
        raise GfdConfigError("; ".join(problems[:20]) + (
            f"; and {len(problems) - 20} more problems" if len(problems) > 20 else ""))
    return result


def _file_settings(data: Any, origin: str, problems: list[str],
                   given: dict[str, tuple[Any, str]]) -> Any:
    """The flags of the file into `given`; its sharing section, unchecked."""
    if not isinstance(data, Mapping):
        problems.append(f"{origin}: the top level must be a mapping, not {describe(data)}")
        return None
    for key in data:
        if key not in _TOP:
            problems.append(f"{origin}: {key!s:.40}: unknown key (expected "
                            f"{', '.join(_TOP)})")
    version = data.get("version")
    if version not in (None, "", VERSION):
        problems.append(f"{origin}: version: must be {VERSION}, got {describe(version)}")
    flags = data.get("flags")
    if flags is not None:
        _walk_flags(flags, _FLAGS, "flags", origin, problems, given)
    for section, keys in _SECTIONS.items():
        value = data.get(section)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{origin}: {section}: must be a mapping, not {describe(value)}")
            continue
        problems += [f"{origin}: {section}.{key!s:.40}: unknown key (expected "
                     f"{', '.join(keys)})" for key in value if key not in keys]
        if section == "resources" and any(value.get(k) for k in keys):
            # GFD says so and drops them: resource renaming is not supported there.
            given["resources"] = (True, f"{origin}: {section}")
    return data.get("sharing")


def _walk_flags(flags: Any, schema: Mapping[str, Any], where: str, origin: str,
                problems: list[str], given: dict[str, tuple[Any, str]]) -> None:
    if not isinstance(flags, Mapping):
        problems.append(f"{origin}: {where}: must be a mapping, not {describe(flags)}")
        return
    for key, value in flags.items():
        path = f"{where}.{key!s:.40}"
        if key not in schema:
            problems.append(f"{origin}: {path}: unknown key")
            continue
        kind = schema[key]
        if isinstance(kind, Mapping):
            if value is not None:
                _walk_flags(value, kind, path, origin, problems, given)
            continue
        if value is None:
            continue  # null: GFD's default
        if not _is_kind(kind, value):
            problems.append(f"{origin}: {path}: expected {kind}, got {describe(value)}")
            continue
        given[path.removeprefix("flags.")] = (value, f"{origin}: {path}")


def _is_kind(kind: str, value: Any) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _DURATION:
        # A number is nanoseconds there, as Go's time.Duration; checked by _map.
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if kind == "a string or a list":
        return isinstance(value, str | list)
    return isinstance(value, str)


# strconv.ParseBool, which GFD's flags use for environment values.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _from_env(name: str, text: str, variable: str, problems: list[str]) -> Any:
    kind = _FLAGS.get(name) or _FLAGS["gfd"].get(name.removeprefix("gfd."), _TEXT)
    if name.startswith("plugin."):
        return None  # the device plugin's: nothing for GFD or us
    if kind == _BOOL:
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        problems.append(f"{variable}: expected a boolean (true or false), got "
                        f"{describe(text)}")
        return None
    return text


def _map(name: str, value: Any, where: str, result: GfdSettings,
         problems: list[str]) -> None:
    """One GFD setting in our terms."""
    if name == "migStrategy":
        if value not in MIG_STRATEGIES:
            problems.append(f"{where}: must be one of {', '.join(MIG_STRATEGIES)}, got "
                            f"{describe(value)}")
        else:
            result.nvidia["migStrategy"] = value
    elif name == "gfd.noTimestamp":
        result.nvidia["timestampLabel"] = not value
    elif name == "gfd.machineTypeFile":
        if not value.strip("/ "):
            problems.append(f"{where}: must name a file, got {describe(value)}")
        else:
            result.nvidia["machineTypeFile"] = value
    elif name == "gfd.oneshot":
        result.oneshot = bool(value)
    elif name == "gfd.sleepInterval":
        seconds = _interval(value, where, problems, result.notices)
        if seconds is not None:
            result.core["sleepInterval"] = seconds
    elif name == "deviceDiscoveryStrategy":
        if value not in DISCOVERY_STRATEGIES:
            problems.append(f"{where}: must be one of {', '.join(DISCOVERY_STRATEGIES)}, "
                            f"got {describe(value)}")
        elif value != "auto":
            result.notices.append(f"{where}={value} is accepted and ignored: "
                                  f"{_IGNORED[name]}")
    elif name in _IGNORED:
        result.notices.append(f"{where} is accepted and ignored: {_IGNORED[name]}")
    elif name == "resources":
        result.notices.append(f"{where}: resources is ignored, as GFD ignores it (resource "
                              "renaming is not supported there)")


def _interval(value: Any, where: str, problems: list[str], notices: list[str]) -> int | None:
    """GFD's sleep interval in whole seconds, within our bounds."""
    if value == INFINITE:
        notices.append(f"{where}: {INFINITE} (label once) runs a pass every "
                       f"{SLEEP_MAX // 3600}h instead: the periodic pass is the safety net, "
                       "and changes on the Node and in features.d are still seen at once")
        return SLEEP_MAX
    if isinstance(value, int | float):
        seconds = value / 1e9  # GFD's file reads a number as nanoseconds
    else:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            return None
    if not SLEEP_MIN <= seconds <= SLEEP_MAX:
        hint = " (a number is nanoseconds there; write 60s)" if isinstance(
            value, int | float) else ""
        problems.append(f"{where}: must be between {SLEEP_MIN}s and {SLEEP_MAX // 3600}h, or "
                        f"{INFINITE}, got {describe(value)}{hint}")
        return None
    return round(seconds)


def _sharing(sharing: Any, where: str, problems: list[str], notices: list[str]
             ) -> dict[str, Any]:
    """GFD's sharing section as sources.nvidia.sharing, with GFD's own limits applied:
    per-resource `rename` and `devices` are not supported there, so they are dropped."""
    empty = {"renameByDefault": False, "failRequestsGreaterThanOne": False, "resources": []}
    result = {strategy: dict(empty) for strategy in SHARING_STRATEGIES}
    if not isinstance(sharing, Mapping):
        problems.append(f"{where}: must be a mapping, not {describe(sharing)}")
        return result
    for key in sharing:
        if key not in result:
            problems.append(f"{where}.{key!s:.40}: unknown key (expected timeSlicing, mps)")
    dropped: set[str] = set()
    for strategy in SHARING_STRATEGIES:
        block = sharing.get(strategy)
        path = f"{where}.{strategy}"
        if block is None:
            continue
        if not isinstance(block, Mapping):
            problems.append(f"{path}: must be a mapping, not {describe(block)}")
            continue
        problems += [f"{path}.{key!s:.40}: unknown key (expected {', '.join(_SHARING_BLOCK)})"
                     for key in block if key not in _SHARING_BLOCK]
        resources = block.get("resources")
        if not isinstance(resources, list) or not resources:
            problems.append(f"{path}.resources: GFD needs a non-empty list of resources")
            continue
        out = result[strategy]
        for flag in ("renameByDefault", "failRequestsGreaterThanOne"):
            value = block.get(flag)
            if value is not None and not isinstance(value, bool):
                problems.append(f"{path}.{flag}: expected a boolean, got {describe(value)}")
            elif value is not None:
                out[flag] = value
        if strategy == "mps" and block.get("failRequestsGreaterThanOne") is None:
            out["failRequestsGreaterThanOne"] = True  # GFD's default for MPS
        entries = []
        for entry in resources:
            if isinstance(entry, Mapping):
                entry = dict(entry)
                for unsupported in ("rename", "devices"):
                    if entry.pop(unsupported, None) not in (None, "", "all"):
                        dropped.add(f"{strategy}.{unsupported}")
            entries.append(entry)
        out["resources"] = entries
    for name in sorted(dropped):
        notices.append(f"{where}.{name.replace('.', '.resources[].')} is ignored, as GFD "
                       "ignores it (not supported in GFD's config)")
    from nodefeatures.sources.nvidia.sharing import validate

    origin = where.removesuffix(": sharing")
    problems += [f"{origin}: {problem}" for problem in validate({"sharing": result})]
    return result
