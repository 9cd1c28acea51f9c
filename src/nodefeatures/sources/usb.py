"""usb: USB devices of chosen classes (`usb-<class>_<vendor>_<device>.present`), as NFD.

A device whose own class is `00` declares its function per interface, so it counts
once per interface class (a webcam with a video interface is class `0e`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from nodefeatures.labels import Label
from nodefeatures.source import Context, Features, LabelDoc, Source
from nodefeatures.sources._busdevices import (
    device_labels,
    field_warnings,
    label_fields,
    whitelist_problems,
)

DEVICES = "sys/bus/usb/devices"
# Label field -> sysfs attribute file, in the canonical order of label fields.
ATTRIBUTE_FILES = {
    "class": "bDeviceClass",
    "vendor": "idVendor",
    "device": "idProduct",
    "serial": "serial",
}
FIELDS = tuple(ATTRIBUTE_FILES)
HEX_FIELDS = ("class", "vendor", "device")  # the serial is free text
DEFAULT_FIELDS = ("class", "vendor", "device")
# Video, miscellaneous, application specific, vendor specific: where accelerators sit.
DEFAULT_WHITELIST = ("0e", "ef", "fe", "ff")
CLASS_DIGITS = 2
PER_INTERFACE = "00"
_ATTRIBUTE_LIMIT = 4096
_HEX = re.compile(r"[0-9a-fA-F]+")
_WHITELISTED = (
    "a device in /sys/bus/usb/devices whose class starts with an entry of "
    "sources.usb.deviceClassWhitelist (default 0e, ef, fe, ff); the class is "
    "`bDeviceClass`, or each interface's `bInterfaceClass` when that is `00`"
)


class UsbSource(Source):
    name = "usb"
    description = "USB devices of whitelisted classes by class, vendor and product"
    defaults: ClassVar[Mapping[str, Any]] = {
        "deviceClassWhitelist": list(DEFAULT_WHITELIST),
        "deviceLabelFields": list(DEFAULT_FIELDS),
    }
    catalogue = (
        LabelDoc("<class>_<vendor>_<device>.present", "true",
                 f"{_WHITELISTED}; `<vendor>` is `idVendor`, `<device>` is `idProduct`"),
        LabelDoc("<fields>.present", "true",
                 f"{_WHITELISTED}, named by sources.usb.deviceLabelFields: the chosen of "
                 "class, vendor, device, serial joined by `_` in that order; a field the "
                 "device lacks (often `serial`) is an empty part, as in NFD"),
    )

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        return whitelist_problems(options["deviceClassWhitelist"], CLASS_DIGITS)

    def discover(self, ctx: Context) -> Features:
        features = Features()
        root = ctx.root
        for warning in field_warnings(ctx.options, FIELDS, DEFAULT_FIELDS, "sources.usb"):
            ctx.warn(warning)
        for entry in root.listdir(DEVICES):
            device = f"{DEVICES}/{entry}"
            attributes: dict[str, str] = {}
            for field, file in ATTRIBUTE_FILES.items():
                raw = root.read_bytes(f"{device}/{file}", _ATTRIBUTE_LIMIT)
                value = "" if raw is None else raw.decode("utf-8", errors="replace").strip()
                if value and field in HEX_FIELDS and not _HEX.fullmatch(value):
                    ctx.warn(f"{root.display(device)}/{file}: {value!r} is not a hex number")
                if value:
                    attributes[field] = value
            # Interfaces and other entries of the bus have no product ID: not devices.
            if "device" not in attributes and not root.exists(f"{device}/idProduct"):
                continue
            origin = root.display(device)
            if attributes.get("class") != PER_INTERFACE:
                features.instance("device", attributes, origin)
                continue
            # Interfaces are named `<device>:<config>.<interface>`; looking only at names
            # with ':' spares a stat of each of a device's ~40 other entries.
            for name in root.listdir(device):
                if ":" not in name:
                    continue
                raw = root.read_bytes(f"{device}/{name}/bInterfaceClass", _ATTRIBUTE_LIMIT)
                if raw is None:
                    continue
                interface = dict(attributes)
                interface["class"] = raw.decode("utf-8", errors="replace").strip()
                features.instance("device", interface, f"{origin}/{name}")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        configured = options.get("deviceLabelFields", DEFAULT_FIELDS)
        fields, _ = label_fields(configured, FIELDS, DEFAULT_FIELDS)
        return device_labels(
            features.instances.get("device", []),
            options.get("deviceClassWhitelist", DEFAULT_WHITELIST),
            fields,
        )
