"""What the pci and usb sources share: picking label fields and matching device classes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nodefeatures.labels import Label
from nodefeatures.source import Instance

_HEX = re.compile(r"[0-9A-Fa-f]*")


def label_fields(
    configured: Iterable[str], canonical: Sequence[str], default: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(fields in canonical order, unknown names); the default when no name is known.

    The order in the config does not matter, so `[vendor, class]` and `[class, vendor]`
    name the same label, as NFD does.
    """
    wanted = set(configured)
    fields = [name for name in canonical if name in wanted]
    unknown = sorted(wanted - set(canonical))
    return (fields or list(default)), unknown


def field_warnings(
    options: Mapping[str, Any], canonical: Sequence[str], default: Sequence[str], where: str
) -> list[str]:
    """Messages for `deviceLabelFields` names that are ignored, so a typo is not silent."""
    configured = options.get("deviceLabelFields", default)
    fields, unknown = label_fields(configured, canonical, default)
    messages = []
    if unknown:
        messages.append(
            f"{where}.deviceLabelFields: ignoring unknown field(s) {', '.join(unknown)} "
            f"(known: {', '.join(canonical)})"
        )
    if not set(configured) & set(canonical):
        messages.append(
            f"{where}.deviceLabelFields: no known field given; using {', '.join(fields)}"
        )
    return messages


def whitelist_problems(entries: Iterable[str], digits: int) -> list[str]:
    """Whitelist entries that can never match a class of `digits` hex digits."""
    return [
        f"deviceClassWhitelist: {entry!r} is not a class prefix of at most {digits} hex "
        f"digits (write e.g. '03', without '0x')"
        for entry in entries
        if len(entry) > digits or not _HEX.fullmatch(entry)
    ]


def whitelist_prefixes(options: Mapping[str, Any], default: Sequence[str]) -> tuple[str, ...]:
    """The class whitelist as lower-case prefixes for `str.startswith`."""
    return tuple(entry.lower() for entry in options.get("deviceClassWhitelist", default))


def device_labels(
    devices: Iterable[Instance],
    whitelist: tuple[str, ...],
    fields: Sequence[str],
    extra: Mapping[str, str] | None = None,
) -> list[Label]:
    """`<f1>_<f2>....present` for each device whose class starts with a `whitelist` prefix.

    `extra` maps an attribute to a further label suffix given to devices that have it
    (PCI: `sriov_totalvfs` -> `sriov.capable`). A field a device lacks stays an empty
    part of the name, as in NFD. Devices with the same name collapse into one label,
    whose origin names the first device and how many more there are.
    """
    groups: dict[str, list[Instance]] = {}
    for device in devices:
        if device.attributes.get("class", "").startswith(whitelist):
            name = "_".join(device.attributes.get(field, "") for field in fields)
            groups.setdefault(name, []).append(device)
    labels: list[Label] = []
    for name, members in groups.items():
        first = members[0]
        shown = " ".join(f"{field}={first.attributes.get(field, '')}" for field in fields)
        more = f" (+{len(members) - 1} more)" if len(members) > 1 else ""
        labels.append(Label(f"{name}.present", "true", f"{first.origin}: {shown}{more}"))
        for attribute, suffix in (extra or {}).items():
            having = [d for d in members if attribute in d.attributes]
            if having:
                fact = f"{having[0].origin}/{attribute}={having[0].attributes[attribute]}"
                labels.append(Label(f"{name}.{suffix}", "true", fact))
    return labels
