"""A captured fixture of the pci, usb and local sources replays to the same labels."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from test_pci import add_device as add_pci
from test_usb import CONTROLLER
from test_usb import add_device as add_usb

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import capture_host, replay_host
from nodefeatures.discovery.run import run_pass
from nodefeatures.sources.local import LocalSource
from nodefeatures.sources.pci import PciSource
from nodefeatures.sources.usb import UsbSource

SOURCES = {
    "pci": PciSource(),
    "usb": UsbSource(),
    "local": LocalSource(clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)),
}


def test_capture_then_replay(tmp_path: Path) -> None:
    host = tmp_path / "host"
    add_pci(host, "0000:3b:00.0", "0x030200", "0x10de", sriov_totalvfs="0")
    add_pci(host, "0000:3c:00.0", "0x060400", "0x8086")
    add_usb(host, "1-1", CONTROLLER, "00", "03e7", "2485", interfaces=("03", "ff"))
    features = host / "etc/kubernetes/node-feature-discovery/features.d"
    features.mkdir(parents=True)
    (features / "site").write_text("# +expiry-time=2027-01-01T00:00:00Z\nvendor.io/rack=r1\n")
    config = build({}, SOURCES)
    live = run_pass(capture_host(tmp_path / "fixture", root=str(host)), SOURCES, config)
    assert live.values() == {
        "feature.node.kubernetes.io/pci-0302_10de.present": "true",
        "feature.node.kubernetes.io/pci-0302_10de.sriov.capable": "true",
        "feature.node.kubernetes.io/usb-ff_03e7_2485.present": "true",
        "vendor.io/rack": "r1",
    }
    replayed = run_pass(replay_host(tmp_path / "fixture"), SOURCES, config)
    assert replayed.values() == live.values()
    assert replayed.warnings == []


def test_capture_writes_only_inside_the_fixture_whatever_path_is_read(tmp_path: Path) -> None:
    # A path with `..` (a kconfigFile option, a path built from file content) reads inside
    # the root; its recording must land inside the fixture's root/ as well.
    host_dir = tmp_path / "host"
    (host_dir / "boot").mkdir(parents=True)
    (host_dir / "boot/config").write_text("CONFIG_X=y\n")
    fixture = tmp_path / "deep/fixture"
    host = capture_host(fixture, root=str(host_dir))
    for path in ("../../../../boot/config", "boot/../../../../boot/config"):
        assert host.root.read_text(path) == "CONFIG_X=y\n"
    host.root.listdir("../../..")
    host.root.exists("../../../../escaped-entry")
    outside = [p for p in tmp_path.rglob("*")
               if fixture not in p.parents and p != fixture and host_dir not in p.parents
               and p not in (host_dir, tmp_path / "deep")]
    assert outside == []
    assert (fixture / "root/boot/config").read_text() == "CONFIG_X=y\n"
