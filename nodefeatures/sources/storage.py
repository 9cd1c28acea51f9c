"""storage: block devices (`storage-*`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source

BLOCK = "sys/block"


class StorageSource(Source):
    name = "storage"
    description = "whether any block device is non-rotational"
    catalogue = (
        LabelDoc("nonrotationaldisk", "true",
                 "/sys/block/<dev>/queue/rotational is `0` for any block device, virtual "
                 "ones (loop, zram, dm) included as in NFD"),
    )

    def discover(self, ctx: Context) -> Features:
        features = Features()
        for name in ctx.root.listdir(BLOCK):
            path = f"{BLOCK}/{name}/queue/rotational"
            rotational = ctx.root.read_line(path, limit=64)
            if rotational is None:
                continue
            shown = ctx.root.display(path)
            if rotational not in ("0", "1"):
                ctx.warn(f"{shown}: expected 0 or 1, found {rotational!r}")
                continue
            features.instance("block", {"name": name, "rotational": rotational},
                              f"{shown}={rotational}")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        for device in features.instances.get("block", []):
            if device.attributes.get("rotational") == "0":
                return [Label("nonrotationaldisk", "true", device.origin)]
        return []
