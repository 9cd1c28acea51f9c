"""kernel: the running kernel's version, chosen kconfig options and SELinux (`kernel-*`).

The version comes from `/proc/sys/kernel/osrelease`, the kernel config from the first
readable file of NFD's search list (`/proc/config.gz` first), and SELinux from
`/sys/fs/selinux/enforce`. Raw features only, for rules, as NFD names them: every
kconfig option (`config`), loaded modules from `/proc/modules` (`loadedmodule`), those
plus the built-in ones of `/lib/modules/<release>/modules.builtin` (`enabledmodule`),
and whether `/sys/devices/virtual/misc/kvm` exists (`kvm`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Fact, Features, LabelDoc, Source

OSRELEASE = "proc/sys/kernel/osrelease"
PROC_KCONFIG = "proc/config.gz"
SELINUX_ENFORCE = "sys/fs/selinux/enforce"
SYSFS_FS = "sys/fs"
KVM_DEVICE = "sys/devices/virtual/misc/kvm"
MODULES = "proc/modules"
BUILTIN_MODULES = "lib/modules/{release}/modules.builtin"
_MODULES_LIMIT = 1024 * 1024
DEFAULT_CONFIG_OPTS = ("NO_HZ", "NO_HZ_IDLE", "NO_HZ_FULL", "PREEMPT")
# Distribution configs are 100-300 KB; anything past this, raw or gunzipped, is not one.
KCONFIG_LIMIT = 4 * 1024 * 1024
_OSRELEASE_LIMIT = 4096

_NOT_IN_VERSION = re.compile(r"[^-A-Za-z0-9_.]")
# NFD's pattern: up to three dotted numbers, then nothing or a '-' suffix.
_NFD_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?(?:-.*)?")
# Ours for the rest: the leading dotted numbers, whatever follows them.
_LEADING_NUMBERS = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")
_VERSION_PARTS = ("major", "minor", "revision")


def sanitize_release(osrelease: str) -> str:
    """`full` as NFD forms it: each disallowed character becomes `_`, `-_.` edges go."""
    return _NOT_IN_VERSION.sub("_", osrelease.strip()).strip("-_.")


def version_parts(full: str) -> tuple[tuple[str, str, str] | None, bool]:
    """(major, minor, revision) of a sanitised release, and whether NFD's pattern matched.

    Missing components are empty strings, as NFD emits them. Where NFD's pattern fails
    (`6.1.0_rpt-rpi-v8`, `4.19.0.1`) the leading dotted numbers are used instead.
    """
    match = _NFD_VERSION.fullmatch(full)
    if match:
        return _three(match), True
    match = _LEADING_NUMBERS.match(full)
    return (_three(match), False) if match else (None, False)


def _three(match: re.Match[str]) -> tuple[str, str, str]:
    major, minor, revision = match.groups()
    return major, minor or "", revision or ""


def kconfig_paths(kver: str | None, kconfig_file: str = "") -> list[str]:
    """Host paths that may hold the running kernel's config, in NFD's search order."""
    paths = [kconfig_file] if kconfig_file else []
    if kver is None:
        return [*paths, PROC_KCONFIG, "usr/src/linux/.config"]
    return [
        *paths,
        PROC_KCONFIG,
        f"usr/src/linux-{kver}/.config",
        f"usr/src/linux-rt-{kver}/.config",
        "usr/src/linux/.config",
        f"usr/lib/modules/{kver}/config",
        # A different file from the line above only where /lib is not merged into /usr;
        # on merged-/usr distributions (Arch, Fedora) the symlink makes them one.
        f"lib/modules/{kver}/config",
        f"usr/lib/ostree-boot/config-{kver}",
        f"usr/lib/kernel/config-{kver}",
        f"usr/src/linux-headers-{kver}/.config",
        f"lib/modules/{kver}/build/.config",
        f"usr/src/linux-rt-headers-{kver}/.config",
        f"boot/config-{kver}",
    ]


def gunzip_bounded(data: bytes, limit: int = KCONFIG_LIMIT) -> bytes:
    """The first gzip member of `data`; ValueError when invalid or over `limit` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"not valid gzip data ({exc})") from None
    if len(out) > limit:
        raise ValueError(f"decompresses to more than the {limit}-byte limit")
    if not inflater.eof:
        raise ValueError("gzip data is truncated")
    return out


def parse_kconfig(text: str) -> dict[str, str]:
    """`CONFIG_<NAME>=<value>` lines as {NAME: value} with surrounding quotes removed."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("CONFIG_"):
            continue  # includes "# CONFIG_X is not set": an unset option has no label
        name, sep, value = line[len("CONFIG_"):].partition("=")
        if sep:
            options[name] = value.strip().strip('"')
    return options


def parse_modules(text: str) -> list[str]:
    """The first field of each line of /proc/modules, as NFD reads it."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_builtin(text: str) -> list[str]:
    """Module names of modules.builtin: `kernel/fs/ext4/ext4.ko` is `ext4`."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line.endswith(".ko"):
            names.append(line.rpartition("/")[2][:-3])
    return names


def _usable_kver(osrelease: str | None) -> str | None:
    """The raw release for building paths, unless it could name something else."""
    if not osrelease or "/" in osrelease or "\0" in osrelease or osrelease in (".", ".."):
        return None
    return osrelease


class KernelSource(Source):
    name = "kernel"
    description = "kernel version, selected kconfig options and SELinux enforcement"
    defaults: ClassVar[Mapping[str, Any]] = {
        # A host path read before the built-in search list (NFD's sources.kernel.kconfigFile).
        "kconfigFile": "",
        # Options labelled as kernel-config.<OPT> when the config sets them.
        "configOpts": list(DEFAULT_CONFIG_OPTS),
    }
    catalogue = (
        LabelDoc("version.full", "string",
                 "/proc/sys/kernel/osrelease, each character outside `[-A-Za-z0-9_.]` "
                 "replaced by `_`, leading and trailing `-_.` removed",
                 "an osrelease that sanitises to nothing gives no label and a warning; NFD "
                 "emits an empty value"),
        LabelDoc("version.major", "decimal",
                 "first number of `version.full`",
                 "also parsed from releases NFD's pattern rejects, using their leading "
                 "dotted numbers (`6.1.0+rpt-rpi-v8` -> 6.1.0, `4.19.0.1` -> 4.19.0); "
                 "NFD labels none of the three components there"),
        LabelDoc("version.minor", "decimal or empty",
                 "second dotted number of `version.full`; empty when absent",
                 "parsed from more releases, as for `version.major`"),
        LabelDoc("version.revision", "decimal or empty",
                 "third dotted number of `version.full`; empty when absent (`6.8-rc1`)",
                 "parsed from more releases, as for `version.major`"),
        LabelDoc("config.<OPT>", "`true` (for `y` and `m`) or the raw value",
                 "`CONFIG_<OPT>=` line of the first kernel config found: "
                 "`sources.kernel.kconfigFile`, /proc/config.gz, /usr/src/linux-<kver>/.config, "
                 "/usr/src/linux-rt-<kver>/.config, /usr/src/linux/.config, "
                 "/usr/lib/modules/<kver>/config, /lib/modules/<kver>/config, "
                 "/usr/lib/ostree-boot/config-<kver>, "
                 "/usr/lib/kernel/config-<kver>, /usr/src/linux-headers-<kver>/.config, "
                 "/lib/modules/<kver>/build/.config, /usr/src/linux-rt-headers-<kver>/.config, "
                 "/boot/config-<kver>; only options in `sources.kernel.configOpts` "
                 "(default NO_HZ, NO_HZ_IDLE, NO_HZ_FULL, PREEMPT)",
                 "/lib/modules/<kver>/config is also tried (it differs from "
                 "/usr/lib/modules/<kver>/config only where /lib is not merged into /usr); "
                 "every path, /lib/modules/<kver>/build/.config and `kconfigFile` included, "
                 "is read on the host (NFD reads that one in its own container); configs over "
                 "4 MiB, raw or gunzipped, are refused with a warning and the next path is "
                 "tried"),
        LabelDoc("selinux.enabled", "true",
                 "/sys/fs/selinux/enforce starts with `1` (enforcing; permissive gives no "
                 "label)"),
    )

    def __init__(self) -> None:
        # The parsed config of the last file read, keyed by its path and bytes: the
        # kernel config does not change while the kernel runs, so parsing it once is
        # enough, yet a changed file is still noticed.
        self._kconfig_cache: tuple[str, bytes, dict[str, Fact]] | None = None
        # The same for the module lists, by file: (bytes, flags).
        self._module_cache: dict[str, tuple[bytes, dict[str, Fact]]] = {}

    def discover(self, ctx: Context) -> Features:
        features = Features()
        osrelease = ctx.root.read_text(OSRELEASE, limit=_OSRELEASE_LIMIT)
        if osrelease is not None:
            osrelease = osrelease.strip()
            self._discover_version(ctx, osrelease, features)
        kver = _usable_kver(osrelease)
        self._discover_kconfig(ctx, kver, features)
        self._discover_modules(ctx, kver, features)
        self._discover_selinux(ctx, features)
        kvm = ctx.root.exists(KVM_DEVICE)
        features.attribute("kvm", "enabled", "true" if kvm else "false",
                           f"{ctx.root.display(KVM_DEVICE)} "
                           f"{'exists' if kvm else 'does not exist'}")
        return features

    def _discover_version(self, ctx: Context, osrelease: str, features: Features) -> None:
        origin = f"{ctx.root.display(OSRELEASE)}={osrelease}"
        full = sanitize_release(osrelease)
        if not full:
            ctx.warn(f"{ctx.root.display(OSRELEASE)}: no usable kernel release in "
                     f"{osrelease!r}")
            return
        features.attribute("version", "full", full, origin)
        parts, nfd_compatible = version_parts(full)
        if parts is None:
            return
        part_origin = origin if nfd_compatible else (
            f"{origin} (leading numbers; NFD labels no components for this release)"
        )
        for name, value in zip(_VERSION_PARTS, parts, strict=True):
            features.attribute("version", name, value, part_origin)

    def _discover_kconfig(self, ctx: Context, kver: str | None, features: Features) -> None:
        kconfig_file = ctx.options.get("kconfigFile", "")
        for path in kconfig_paths(kver, kconfig_file):
            options = self._read_kconfig(ctx, path)
            if options is None:
                continue
            # Every option is a feature (NFD's kernel.config); labels pick configOpts.
            features.attributes["config"] = dict(options)
            return

    def _discover_modules(self, ctx: Context, kver: str | None, features: Features) -> None:
        loaded = self._read_modules(ctx, MODULES, parse_modules)
        if loaded is not None:
            features.flags["loadedmodule"] = dict(loaded)
        builtin = None
        if kver is not None:
            builtin = self._read_modules(ctx, BUILTIN_MODULES.format(release=kver),
                                         parse_builtin)
        # As NFD: without modules.builtin there is no enabledmodule feature at all.
        if builtin is not None:
            features.flags["enabledmodule"] = {**(loaded or {}), **builtin}

    def _read_modules(self, ctx: Context, path: str,
                      parse: Callable[[str], list[str]]) -> dict[str, Fact] | None:
        data = ctx.root.read_bytes(path, limit=_MODULES_LIMIT)
        if data is None:
            return None
        cached = self._module_cache.get(path)
        if cached is not None and cached[0] == data:
            return cached[1]
        display = ctx.root.display(path)
        flags = {name: Fact("true", f"{display}: {name}")
                 for name in parse(data.decode("utf-8", errors="replace"))}
        self._module_cache[path] = (data, flags)
        return flags

    def _read_kconfig(self, ctx: Context, path: str) -> dict[str, Fact] | None:
        data = ctx.root.read_bytes(path, limit=KCONFIG_LIMIT)
        if data is None:
            return None  # absent, or a problem already reported by the host root
        cached = self._kconfig_cache
        if cached is not None and cached[0] == path and cached[1] == data:
            return cached[2]
        if path.endswith(".gz"):
            try:
                text = gunzip_bounded(data).decode("utf-8", errors="replace")
            except ValueError as exc:
                ctx.warn(f"{ctx.root.display(path)}: {exc}; kernel config not used")
                return None
        else:
            text = data.decode("utf-8", errors="replace")
        display = ctx.root.display(path)
        options = {name: Fact(value, f"{display}: CONFIG_{name}={value}")
                   for name, value in parse_kconfig(text).items()}
        self._kconfig_cache = (path, data, options)
        return options

    def _discover_selinux(self, ctx: Context, features: Features) -> None:
        enforce = ctx.root.read_bytes(SELINUX_ENFORCE, limit=64)
        if enforce is None:
            if ctx.root.is_dir(SYSFS_FS) and not ctx.root.exists(SELINUX_ENFORCE):
                # NFD: a sysfs without SELinux means SELinux is not enabled.
                features.attribute("selinux", "enabled", "false",
                                   f"{ctx.root.display(SELINUX_ENFORCE)} does not exist")
            return
        enforcing = enforce[:1] == b"1"
        shown = enforce[:1].decode("ascii", errors="replace")
        features.attribute("selinux", "enabled", "true" if enforcing else "false",
                           f"{ctx.root.display(SELINUX_ENFORCE)}={shown}")

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        labels = [
            Label(f"version.{name}", fact.value, fact.origin)
            for name, fact in features.attributes.get("version", {}).items()
        ]
        config = features.attributes.get("config", {})
        wanted = options.get("configOpts", DEFAULT_CONFIG_OPTS)
        for name in sorted(set(wanted)):
            fact = config.get(name)
            if fact is not None:
                value = "true" if fact.value in ("y", "m") else fact.value
                labels.append(Label(f"config.{name}", value, fact.origin))
        selinux = features.attributes.get("selinux", {}).get("enabled")
        if selinux is not None and selinux.value == "true":
            labels.append(Label("selinux.enabled", "true", selinux.origin))
        return labels
