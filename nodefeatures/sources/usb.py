"""usb: USB devices of chosen classes (`usb-<class>_<vendor>_<device>.present`), as NFD.

A device whose own class is `00` declares its function per interface, so it counts
once per interface, with that interface's class (a webcam with a video interface is
class `0e`). Every device is kept as a raw feature (`usb.device`, for rules); labels
name only the whitelisted classes, as NFD's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nodefeatures.discovery.source import Context, Features, Instance, LabelDoc
from nodefeatures.sources._busdevices import HEX, DeviceClassSource

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
_WHITELISTED = (
    "a device in /sys/bus/usb/devices whose class starts with an entry of "
    "sources.usb.deviceClassWhitelist (default 0e, ef, fe, ff); the class is "
    "`bDeviceClass`, or each interface's `bInterfaceClass` when that is `00`"
)


class UsbSource(DeviceClassSource):
    name = "usb"
    description = "USB devices of whitelisted classes by class, vendor and product"
    fields = FIELDS
    default_fields = DEFAULT_FIELDS
    class_digits = CLASS_DIGITS
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

    def discover(self, ctx: Context) -> Features:
        features = Features()
        root = ctx.root
        self.start_pass(ctx)
        devices = features.has_instances("device")
        for entry in root.listdir(DEVICES):
            # Interfaces (`<device>:<config>.<interface>`) share the bus directory
            # with devices but have no product ID; skipping them by name spares reads.
            if ":" in entry:
                continue
            device = f"{DEVICES}/{entry}"
            product = self._read(ctx, device, "device")
            if product is None and not root.exists(f"{device}/idProduct"):
                continue  # not a device
            attributes = {"device": product} if product else {}
            for field in ("class", "vendor", "serial"):
                value = self._read(ctx, device, field)
                if value:
                    attributes[field] = value
            if attributes.get("class") != PER_INTERFACE:
                devices.append(Instance(attributes, root.display(device)))
                continue
            # As NFD: one instance per interface, each with the interface's class.
            for interface, usb_class in self._interface_classes(ctx, device):
                devices.append(Instance({**attributes, "class": usb_class}, interface))
        return features

    @staticmethod
    def _read(ctx: Context, device: str, field: str) -> str | None:
        """One attribute, trimmed; None when absent, unreadable or empty."""
        path = f"{device}/{ATTRIBUTE_FILES[field]}"
        raw = ctx.root.read_bytes(path, _ATTRIBUTE_LIMIT)
        value = "" if raw is None else raw.decode("utf-8", errors="replace").strip()
        if value and field in HEX_FIELDS and not HEX.fullmatch(value):
            ctx.warn(f"{ctx.root.display(path)}: {value!r} is not a hex number")
        return value or None

    @staticmethod
    def _interface_classes(ctx: Context, device: str) -> list[tuple[str, str]]:
        """(interface as displayed, its class) for every interface of a device."""
        classes: list[tuple[str, str]] = []
        for name in ctx.root.listdir(device):
            if ":" not in name:  # not an interface; spares a read of each other entry
                continue
            path = f"{device}/{name}/bInterfaceClass"
            raw = ctx.root.read_bytes(path, _ATTRIBUTE_LIMIT)
            if raw is not None:
                value = raw.decode("utf-8", errors="replace").strip()
                classes.append((ctx.root.display(f"{device}/{name}"), value))
        return classes
