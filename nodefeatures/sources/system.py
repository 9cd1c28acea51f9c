"""system: the OS release (`system-os_release.*`).

Reads `/etc/os-release` and, when it is absent, `/usr/lib/os-release` as the
os-release specification says (NFD reads only the first).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source

OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")
DMI_ID = "sys/devices/virtual/dmi/id"
# The files of /sys/devices/virtual/dmi/id that NFD reads, by their own names.
DMI_ATTRIBUTES = (
    "bios_date", "bios_vendor", "bios_version", "board_asset_tag", "board_name",
    "board_vendor", "board_version", "chassis_asset_tag", "chassis_type", "chassis_vendor",
    "chassis_version", "product_family", "product_name", "product_sku", "product_version",
    "sys_vendor",
)
_DMI_LIMIT = 4096
LABELLED = ("ID", "VERSION_ID")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\..*)?$")
_MAX_OS_RELEASE = 64 * 1024


def parse_os_release(text: str) -> dict[str, str]:
    """Variables of an os-release file, unquoted as the specification describes."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            result[match.group(1)] = _unquote(match.group(2).strip())
    return result


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        if raw[0] == '"':
            inner = re.sub(r'\\([$"\\`])', r"\1", inner)
        return inner
    return raw.strip("\"'")


def _node_name(ctx: Context) -> tuple[str, str]:
    """NODE_NAME, as NFD reads it: the pod's environment (never a fixture's host's)."""
    env = ctx.host.env or ({} if ctx.host.fixture_dir is not None else os.environ)
    name = env.get("NODE_NAME", "")
    return name, f"environment NODE_NAME={name}" if name else "NODE_NAME is not set"


class SystemSource(Source):
    name = "system"
    description = "OS release ID and version from os-release"
    catalogue = (
        LabelDoc("os_release.ID", "string", "`ID` of /etc/os-release",
                 "falls back to /usr/lib/os-release when /etc/os-release is absent, as the "
                 "os-release specification says; NFD reads only /etc/os-release"),
        LabelDoc("os_release.VERSION_ID", "string", "`VERSION_ID` of os-release"),
        LabelDoc("os_release.VERSION_ID.major", "decimal",
                 "first dotted number of `VERSION_ID`, only when present"),
        LabelDoc("os_release.VERSION_ID.minor", "decimal",
                 "second dotted number of `VERSION_ID`, only when present"),
    )

    def discover(self, ctx: Context) -> Features:
        features = Features()
        for path in OS_RELEASE_PATHS:
            text = ctx.root.read_text(path, limit=_MAX_OS_RELEASE)
            if text is None:
                if ctx.root.exists(path):
                    break  # present but unusable: the fallback may describe another OS
                continue
            origin = ctx.root.display(path)
            release = parse_os_release(text)
            for key, value in release.items():
                features.attribute("osrelease", key, value, f"{origin}: {key}={value}")
            # NFD adds the version's parts to the feature too, as it labels them.
            match = _VERSION.match(release.get("VERSION_ID", ""))
            if match:
                for part, value in zip(("major", "minor"), match.groups(), strict=True):
                    if value:
                        features.attribute("osrelease", f"VERSION_ID.{part}", value,
                                           f"{origin}: VERSION_ID={release['VERSION_ID']}")
            break
        self._discover_dmi(ctx, features)
        features.attribute("name", "nodename", *_node_name(ctx))
        return features

    @staticmethod
    def _discover_dmi(ctx: Context, features: Features) -> None:
        """`system.dmiid`: exists when at least one DMI attribute can be read, as in NFD."""
        if not ctx.root.is_dir(DMI_ID):
            return  # one lookup instead of sixteen on a host without DMI (arm64, VMs)
        for name in DMI_ATTRIBUTES:
            path = f"{DMI_ID}/{name}"
            value = ctx.root.read_line(path, limit=_DMI_LIMIT)
            if value is not None:
                features.attribute("dmiid", name, value, f"{ctx.root.display(path)}={value}")

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        release = features.attributes.get("osrelease", {})
        labels = [
            Label(f"os_release.{key}", release[key].value, release[key].origin)
            for key in LABELLED
            if key in release and release[key].value
        ]
        for part in ("major", "minor"):
            fact = release.get(f"VERSION_ID.{part}")
            if fact is not None:
                labels.append(Label(f"os_release.VERSION_ID.{part}", fact.value, fact.origin))
        return labels
