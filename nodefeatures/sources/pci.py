"""pci: PCI devices of chosen classes (`pci-<class>_<vendor>.present`), named as NFD does.

The GPU Operator finds GPU nodes by `pci-10de.present`, `pci-0302_10de.present` or
`pci-0300_10de.present`, so these names must match NFD's exactly: attribute values
without `0x`, the class cut to base class and subclass (4 hex digits), the fields
joined in a fixed order whatever order the config lists them in.

Every device is read and kept as a raw feature (`pci.device`, for rules), with every
attribute NFD reads; labels name only the whitelisted classes, as NFD's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nodefeatures.discovery.source import Context, Features, Instance, LabelDoc
from nodefeatures.sources._busdevices import HEX, DeviceClassSource

DEVICES = "sys/bus/pci/devices"
# Every device has these; one without them is not a device we can name.
MANDATORY = ("class", "vendor", "device", "subsystem_vendor", "subsystem_device")
FIELDS = MANDATORY  # the canonical order of label fields
# Read when present; `iommu_group` is a link to /sys/kernel/iommu_groups/<n>.
OPTIONAL = ("sriov_totalvfs", "iommu_group/type", "iommu/intel-iommu/version")
DEFAULT_FIELDS = ("class", "vendor")
DEFAULT_WHITELIST = ("03", "0b40", "12")  # display, co-processor, processing accelerator
CLASS_DIGITS = 4  # base class and subclass; the programming interface is dropped
_ATTRIBUTE_LIMIT = 4096  # a sysfs attribute is at most one page
_WHITELISTED = (
    "a device in /sys/bus/pci/devices whose `class` starts with an entry of "
    "sources.pci.deviceClassWhitelist (default 03, 0b40, 12)"
)


def attribute_value(raw: bytes, name: str) -> str:
    """A PCI sysfs attribute as NFD uses it: trimmed, without `0x`, class to 4 digits."""
    value = raw.decode("utf-8", errors="replace").strip().removeprefix("0x")
    return value[:CLASS_DIGITS] if name == "class" else value


class PciSource(DeviceClassSource):
    name = "pci"
    description = "PCI devices of whitelisted classes (GPUs, accelerators) by class and vendor"
    fields = FIELDS
    default_fields = DEFAULT_FIELDS
    class_digits = CLASS_DIGITS
    extra_labels: ClassVar[Mapping[str, str]] = {"sriov_totalvfs": "sriov.capable"}
    defaults: ClassVar[Mapping[str, Any]] = {
        "deviceClassWhitelist": list(DEFAULT_WHITELIST),
        "deviceLabelFields": list(DEFAULT_FIELDS),
    }
    catalogue = (
        LabelDoc("<class>_<vendor>.present", "true",
                 f"{_WHITELISTED}; `<class>` is the first 4 hex digits of `class`, "
                 "`<vendor>` is `vendor`, both without `0x` (NVIDIA datacenter GPU: "
                 "`pci-0302_10de.present`, consumer GPU: `pci-0300_10de.present`)"),
        LabelDoc("<class>_<vendor>.sriov.capable", "true",
                 "such a device has a `sriov_totalvfs` file, whatever its value (even 0)"),
        LabelDoc("<fields>.present", "true",
                 f"{_WHITELISTED}, named by sources.pci.deviceLabelFields: the chosen of "
                 "class, vendor, device, subsystem_vendor, subsystem_device, joined by `_` "
                 "in that order (`[vendor]` gives `pci-10de.present`)"),
        LabelDoc("<fields>.sriov.capable", "true",
                 "as `<fields>.present`, for a device with a `sriov_totalvfs` file"),
    )

    def discover(self, ctx: Context) -> Features:
        features = Features()
        root = ctx.root
        self.start_pass(ctx)
        devices = features.has_instances("device")
        for entry in root.listdir(DEVICES):
            device = f"{DEVICES}/{entry}"
            attributes = self._read_device(ctx, device)
            if attributes is not None:
                devices.append(Instance(attributes, root.display(device)))
        return features

    @staticmethod
    def _read_device(ctx: Context, device: str) -> dict[str, str] | None:
        """A device's attributes as NFD reads them; None for a device without one of
        the mandatory ones."""
        attributes: dict[str, str] = {}
        for name in MANDATORY:
            raw = ctx.root.read_bytes(f"{device}/{name}", _ATTRIBUTE_LIMIT)
            if raw is None:
                ctx.warn(f"{ctx.root.display(device)}: skipped, `{name}` is missing or unreadable")
                return None
            value = attribute_value(raw, name)
            if not HEX.fullmatch(value):
                ctx.warn(f"{ctx.root.display(device)}/{name}: {value!r} is not a hex number")
            attributes[name] = value
        # The presence of sriov_totalvfs alone makes a device SR-IOV capable, even with
        # 0 VFs.
        for name in OPTIONAL:
            raw = ctx.root.read_bytes(f"{device}/{name}", _ATTRIBUTE_LIMIT)
            if raw is not None:
                attributes[name] = attribute_value(raw, name)
        return attributes
