"""Per-pass CPU time of the pci, usb and local sources in a running process.

    .venv/bin/python bench/source_devices.py               # this machine's /
    .venv/bin/python bench/source_devices.py --synthetic   # plus a built GPU-server tree

Each source runs through `run_source` (discovery, labelling and the central label
checks) as the agent runs it, after warm-up passes, so the numbers are steady-state
costs, not import or first-read costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.local import LocalSource
from nodefeatures.sources.pci import PciSource
from nodefeatures.sources.usb import UsbSource

SOURCES = {"pci": PciSource(), "usb": UsbSource(), "local": LocalSource()}


def measure(root: str, passes: int, rounds: int) -> None:
    host = Host(root=HostRoot(root))
    config = build({}, SOURCES)
    print(f"root {root}: {passes} passes x {rounds} rounds, CPU time per pass")
    for name, source in SOURCES.items():
        for _ in range(20):
            result = run_source(host, source, config)
        per_pass = []
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(passes):
                run_source(host, source, config)
            per_pass.append((time.process_time() - started) / passes * 1000)
        print(f"  {name:6} median {statistics.median(per_pass):.3f} ms  "
              f"max {max(per_pass):.3f} ms  ({len(result.labels)} labels, "
              f"{len(result.warnings)} warnings)")


def synthetic_tree(base: Path) -> None:
    """8 GPUs, 8 NICs with SR-IOV and 112 other PCI functions; 6 USB devices; 5 files."""
    bus = base / "sys/bus/pci/devices"
    bus.mkdir(parents=True)
    for index in range(128):
        address = f"0000:{index:02x}:00.0"
        relative = f"devices/pci0000:00/{address}"
        directory = base / "sys" / relative
        directory.mkdir(parents=True)
        pci_class, vendor = (("0x030200", "0x10de") if index < 8
                             else ("0x020000", "0x15b3") if index < 16 else ("0x060400", "0x8086"))
        for attribute, value in (("class", pci_class), ("vendor", vendor), ("device", "0x2330"),
                                 ("subsystem_vendor", vendor), ("subsystem_device", "0x16c1")):
            (directory / attribute).write_text(value + "\n")
        if 8 <= index < 16:
            (directory / "sriov_totalvfs").write_text("8\n")
        os.symlink(f"../../../{relative}", bus / address)
    usb = base / "sys/bus/usb/devices"
    usb.mkdir(parents=True)
    for index in range(6):
        name = f"1-{index + 1}"
        relative = f"devices/pci0000:00/0000:00:14.0/usb1/{name}"
        directory = base / "sys" / relative
        (directory / f"{name}:1.0").mkdir(parents=True)
        (directory / f"{name}:1.0/bInterfaceClass").write_text("ff\n")
        for attribute, value in (("bDeviceClass", "00"), ("idVendor", "03e7"),
                                 ("idProduct", f"{index:04x}")):
            (directory / attribute).write_text(value + "\n")
        for entry in range(30):  # the other attributes a real device directory has
            (directory / f"attribute{entry}").write_text("0\n")
        os.symlink(f"../../../{relative}", usb / name)
        os.symlink(f"../../../{relative}/{name}:1.0", usb / f"{name}:1.0")
    features = base / "etc/kubernetes/node-feature-discovery/features.d"
    features.mkdir(parents=True)
    for index in range(5):
        lines = ["# +expiry-time=2099-01-01T00:00:00Z"] + [
            f"example.com/key{index}-{line}=value{line}" for line in range(20)]
        (features / f"file{index}").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true",
                        help="also measure a built tree of a large GPU server")
    args = parser.parse_args()
    measure("/", args.passes, args.rounds)
    if args.synthetic:
        with tempfile.TemporaryDirectory() as directory:
            synthetic_tree(Path(directory))
            measure(directory, max(args.passes // 10, 1), args.rounds)


if __name__ == "__main__":
    main()
