"""system: the OS release (`system-os_release.*`).

Reads `/etc/os-release` and, when it is absent, `/usr/lib/os-release` as the
os-release specification says (NFD reads only the first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source

OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")
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
            for key, value in parse_os_release(text).items():
                features.attribute("osrelease", key, value, f"{origin}: {key}={value}")
            break
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        release = features.attributes.get("osrelease", {})
        labels = [
            Label(f"os_release.{key}", release[key].value, release[key].origin)
            for key in LABELLED
            if key in release and release[key].value
        ]
        version = release.get("VERSION_ID")
        match = _VERSION.match(version.value) if version else None
        if version and match:
            for part, value in zip(("major", "minor"), match.groups(), strict=True):
                if value:
                    labels.append(Label(f"os_release.VERSION_ID.{part}", value, version.origin))
        return labels
