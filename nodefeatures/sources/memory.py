"""memory: NUMA, swap and non-volatile memory (`memory-*`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Fact, Features, LabelDoc, Source

NODE_DEVICES = "sys/bus/node/devices"
SWAPS = "proc/swaps"
ND_DEVICES = "sys/bus/nd/devices"
HUGEPAGES = "sys/kernel/mm/hugepages"
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_SWAPS_LIMIT = 256 * 1024  # the kernel allows at most 32 swap areas
_ATTRIBUTE_LIMIT = 4096


class MemorySource(Source):
    name = "memory"
    description = "NUMA topology, active swap and NVDIMM devices"
    catalogue = (
        LabelDoc("numa", "true", "/sys/bus/node/devices has more than one entry"),
        LabelDoc("swap", "true",
                 "/proc/swaps lists at least one swap area (more than one non-blank line)",
                 "none; NFD's documentation calls it `memory-swap.enabled`, its code and "
                 "this source say `memory-swap`"),
        LabelDoc("nv.present", "true", "/sys/bus/nd/devices has any entry"),
        LabelDoc("nv.dax", "true", "an entry of /sys/bus/nd/devices has devtype `nd_dax`"),
    )

    def discover(self, ctx: Context) -> Features:
        features = Features()
        nodes = ctx.root.listdir(NODE_DEVICES)
        if nodes:
            origin = f"{ctx.root.display(NODE_DEVICES)}: {len(nodes)} entries"
            features.attribute("numa", "node_count", str(len(nodes)), origin)
            features.attribute("numa", "is_numa", str(len(nodes) > 1).lower(), origin)
        swaps = ctx.root.read_text(SWAPS, limit=_SWAPS_LIMIT)
        if swaps is not None:
            # The first line is the column header; every further line is a swap area.
            areas = sum(1 for line in swaps.splitlines() if line.strip()) - 1
            origin = f"{ctx.root.display(SWAPS)}: {max(areas, 0)} swap areas"
            features.attribute("swap", "enabled", str(areas > 0).lower(), origin)
        # As NFD: no NVDIMM bus is no device, not an unknown.
        features.has_instances("nv")
        for name in ctx.root.listdir(ND_DEVICES):
            device = f"{ND_DEVICES}/{name}"
            attributes = {"name": name}
            for attribute in ("devtype", "mode"):
                value = ctx.root.read_line(f"{device}/{attribute}", limit=_ATTRIBUTE_LIMIT)
                if value is not None:
                    attributes[attribute] = value
            features.instance("nv", attributes, ctx.root.display(device))
        _discover_hugepages(ctx, features)
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        labels: list[Label] = []
        numa = features.attributes.get("numa", {}).get("is_numa")
        if numa is not None and numa.value == "true":
            labels.append(Label("numa", "true", numa.origin))
        swap = features.attributes.get("swap", {}).get("enabled")
        if swap is not None and swap.value == "true":
            labels.append(Label("swap", "true", swap.origin))
        devices = features.instances.get("nv", [])
        if devices:
            labels.append(Label("nv.present", "true", devices[0].origin))
        dax = next((d for d in devices if d.attributes.get("devtype") == "nd_dax"), None)
        if dax is not None:
            labels.append(Label("nv.dax", "true", f"{dax.origin}/devtype=nd_dax"))
        return labels


def page_size_name(directory: str) -> str | None:
    """`hugepages-2048kB` -> `hugepages-2Mi`: the size as a Kubernetes quantity, as NFD.

    The largest binary suffix that divides the size exactly, as a resource quantity
    prints it (`hugepages-1048576kB` -> `hugepages-1Gi`, `hugepages-64kB` -> `hugepages-64Ki`).
    """
    digits = directory.removeprefix("hugepages-").rstrip("kB")
    if not digits.isdigit() or int(digits) == 0:
        return None
    size, suffix = int(digits), 0
    while size % 1024 == 0 and suffix + 1 < len(_BINARY_SUFFIXES):
        size //= 1024
        suffix += 1
    return f"hugepages-{size}{_BINARY_SUFFIXES[suffix]}"


def _discover_hugepages(ctx: Context, features: Features) -> None:
    """`memory.hugepages`: each page size's `nr_hugepages`, and whether any is above 0."""
    root = ctx.root
    enabled = ("false", f"{root.display(HUGEPAGES)}: no huge page configured")
    pages = features.has_attributes("hugepages")
    for entry in root.listdir(HUGEPAGES):
        name = page_size_name(entry)
        if name is None:
            continue
        path = f"{HUGEPAGES}/{entry}/nr_hugepages"
        total = root.read_line(path, limit=64)
        # NFD keeps a size whose count it cannot read, with an empty value.
        value = "" if total is None else total
        pages[name] = Fact(value, f"{root.display(path)}={value}")
        if value.isdigit() and int(value) > 0:
            enabled = ("true", f"{root.display(path)}={value}")
    pages["enabled"] = Fact(*enabled)
