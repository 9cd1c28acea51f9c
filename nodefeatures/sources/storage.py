"""storage: block devices (`storage-*`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source

BLOCK = "sys/block"
# The queue attributes NFD's storage.block carries.
QUEUE_FILES = ("dax", "rotational", "nr_zones", "zoned")


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
        features.has_instances("block")
        for name in ctx.root.listdir(BLOCK):
            queue = f"{BLOCK}/{name}/queue"
            attributes = {"name": name}
            for attribute in QUEUE_FILES:
                value = ctx.root.read_line(f"{queue}/{attribute}", limit=64)
                if value is not None:
                    attributes[attribute] = value
            rotational = attributes.get("rotational")
            shown = ctx.root.display(f"{queue}/rotational")
            if rotational is not None and rotational not in ("0", "1"):
                ctx.warn(f"{shown}: expected 0 or 1, found {rotational!r}")
                del attributes["rotational"]
            origin = f"{shown}={rotational}" if "rotational" in attributes else \
                ctx.root.display(f"{BLOCK}/{name}")
            features.instance("block", attributes, origin)
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        for device in features.instances.get("block", []):
            if device.attributes.get("rotational") == "0":
                return [Label("nonrotationaldisk", "true", device.origin)]
        return []
