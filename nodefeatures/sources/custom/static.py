"""NFD's two static rules, checked directly on the pass's raw features.

A node whose config and custom.d add no rule runs only these two, and they are simple
enough to check without the rules engine: such a pass neither imports the engine nor
builds its feature set, which keeps `dump` and every agent pass on a plain node cheap.
builtin.py holds the same rules as engine objects for passes that run other rules too;
tests/sources/test_custom_static.py keeps the two evaluations equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RDMA_CAPABLE = "RDMA capable static rule"
RDMA_AVAILABLE = "RDMA available static rule"
MELLANOX = "15b3"
RDMA_MODULES = ("ib_uverbs", "rdma_ucm")
ORIGIN = "built-in"
# The sources whose features the two rules read: a failed or incomplete one proves
# nothing about absence, so the custom source's pass is incomplete too.
READS = ("pci", "kernel")


def evaluate(others: Iterable[Any]) -> list[tuple[str, str, str]]:
    """(label, value, why) for each static rule that matches the other sources' results."""
    results = {result.name: result for result in others}
    found = []
    pci = results.get("pci")
    devices = pci.features.instances.get("device") if pci and pci.features else None
    if devices:
        count = sum(1 for device in devices if device.attributes.get("vendor") == MELLANOX)
        if count:
            shown = f"pci.device vendor={MELLANOX}" + (f" (x{count})" if count > 1 else "")
            found.append(("rdma.capable", "true", _why(RDMA_CAPABLE, shown)))
    kernel = results.get("kernel")
    loaded = kernel.features.flags.get("loadedmodule") if kernel and kernel.features else None
    if loaded is not None and all(module in loaded for module in RDMA_MODULES):
        shown = "; ".join(f"kernel.loadedmodule {module}" for module in RDMA_MODULES)
        found.append(("rdma.available", "true", _why(RDMA_AVAILABLE, shown)))
    return found


def incomplete(others: Iterable[Any]) -> bool:
    """Whether a source the static rules read failed or ran incompletely this pass."""
    return any(result.name in READS and (result.error is not None or not result.complete)
               for result in others)


def _why(rule: str, matched: str) -> str:
    return f"rule {rule!r} ({ORIGIN}): {matched}"
