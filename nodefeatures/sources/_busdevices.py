"""What the pci and usb sources share: label fields, class whitelists and device labels."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, Instance, Source

HEX = re.compile(r"[0-9A-Fa-f]+")


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


def device_labels(
    devices: Iterable[Instance],
    whitelist: tuple[str, ...],
    fields: Sequence[str],
    extra: Mapping[str, str],
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
        for attribute, suffix in extra.items():
            having = [d for d in members if attribute in d.attributes]
            if having:
                fact = f"{having[0].origin}/{attribute}={having[0].attributes[attribute]}"
                labels.append(Label(f"{name}.{suffix}", "true", fact))
    return labels


class DeviceClassSource(Source):
    """A source labelling bus devices whose class is whitelisted, named by chosen fields.

    Options, as NFD names them: `deviceClassWhitelist` (class prefixes) and
    `deviceLabelFields` (which attributes name the label).
    """

    fields: ClassVar[tuple[str, ...]]  # every label field, in canonical order
    default_fields: ClassVar[tuple[str, ...]]
    class_digits: ClassVar[int]  # hex digits of a class as the source records it
    # Attribute -> label suffix for devices that have the attribute.
    extra_labels: ClassVar[Mapping[str, str]] = {}

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        digits = self.class_digits
        return [
            f"deviceClassWhitelist[{index}]: {entry!r} is not a class prefix of at most "
            f"{digits} hex digits (write e.g. '03', without '0x')"
            for index, entry in enumerate(options["deviceClassWhitelist"])
            if len(entry) > digits or not (entry == "" or HEX.fullmatch(entry))
        ]

    def start_pass(self, ctx: Context) -> tuple[str, ...]:
        """Warn about ignored label fields, so a typo is not silent; the class prefixes."""
        configured = ctx.options.get("deviceLabelFields", self.default_fields)
        fields, unknown = label_fields(configured, self.fields, self.default_fields)
        where = f"sources.{self.name}.deviceLabelFields"
        if unknown:
            ctx.warn(f"{where}: ignoring unknown field(s) {', '.join(unknown)} "
                     f"(known: {', '.join(self.fields)})")
        if not set(configured) & set(self.fields):
            ctx.warn(f"{where}: no known field given; using {', '.join(fields)}")
        return self.whitelist(ctx.options)

    def whitelist(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The class whitelist as lower-case prefixes for `str.startswith`."""
        entries = options.get("deviceClassWhitelist", self.defaults["deviceClassWhitelist"])
        return tuple(entry.lower() for entry in entries)

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        configured = options.get("deviceLabelFields", self.default_fields)
        fields, _ = label_fields(configured, self.fields, self.default_fields)
        devices = features.instances.get("device", [])
        return device_labels(devices, self.whitelist(options), fields, self.extra_labels)
