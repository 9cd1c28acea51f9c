"""network: SR-IOV capable and configured network interfaces (`network-*`)."""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source

NET = "sys/class/net"
SRIOV_FILES = ("sriov_totalvfs", "sriov_numvfs")
# Interface attributes NFD's features carry: all of them for devices, these for virtual.
INTERFACE_FILES = ("operstate", "speed", "mtu")
_ATTRIBUTE_LIMIT = 4096
# A down or virtual interface answers `speed` with EINVAL: no speed, not a problem.
_NO_ANSWER = (errno.EINVAL,)
_COUNT = re.compile(r"[0-9]+")


class NetworkSource(Source):
    name = "network"
    description = "SR-IOV capability and configured virtual functions of network devices"
    catalogue = (
        LabelDoc("sriov.capable", "true",
                 "/sys/class/net/<if>/device/sriov_totalvfs is greater than 0 for any "
                 "interface"),
        LabelDoc("sriov.configured", "true",
                 "/sys/class/net/<if>/device/sriov_numvfs is greater than 0 for any "
                 "interface"),
    )

    def discover(self, ctx: Context) -> Features:
        features = Features()
        features.has_instances("device")
        features.has_instances("virtual")
        for name in ctx.root.listdir(NET):
            if name == "bonding_masters":  # a control file beside the interfaces
                continue
            interface = f"{NET}/{name}"
            device = f"{interface}/device"
            attributes = {"name": name}
            for attribute in INTERFACE_FILES:
                raw = ctx.root.read_bytes(f"{interface}/{attribute}", _ATTRIBUTE_LIMIT,
                                          quiet=_NO_ANSWER)
                if raw is not None:
                    attributes[attribute] = raw.decode("utf-8", errors="replace").strip()
            if not ctx.root.exists(device):
                features.instance("virtual", attributes, ctx.root.display(interface))
                continue
            for attribute in SRIOV_FILES:
                count = _read_count(ctx, f"{device}/{attribute}")
                if count is not None:
                    attributes[attribute] = count
            features.instance("device", attributes, ctx.root.display(device))
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        labels: list[Label] = []
        devices = features.instances.get("device", [])
        for label, attribute in (("sriov.capable", "sriov_totalvfs"),
                                 ("sriov.configured", "sriov_numvfs")):
            for device in devices:
                value = device.attributes.get(attribute)
                if value is not None and int(value) > 0:
                    labels.append(Label(label, "true", f"{device.origin}/{attribute}={value}"))
                    break
        return labels


def _read_count(ctx: Context, path: str) -> str | None:
    """A sysfs count as decimal digits; garbage is reported and ignored."""
    text = ctx.root.read_line(path, limit=64)
    if text is None:
        return None
    if not _COUNT.fullmatch(text):
        ctx.warn(f"{ctx.root.display(path)}: expected a count, found {text!r}")
        return None
    return text
