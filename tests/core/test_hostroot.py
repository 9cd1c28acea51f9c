"""HostRoot: reads stay inside the root, are bounded, and report problems."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nodefeatures.discovery.hostroot import HostRoot, Problem


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/os-release").write_text("ID=hostos\n")
    return root


def collect(root: HostRoot) -> list[Problem]:
    seen: list[Problem] = []
    root.problems = seen.append
    return seen


def test_absolute_symlink_resolves_inside_root(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    os.symlink("/usr/lib/os-release", root / "etc/os-release")
    host = HostRoot(root)
    assert host.read_text("/etc/os-release") == "ID=hostos\n"
    assert host.resolve("etc/os-release") == root / "usr/lib/os-release"


def test_relative_symlink_cannot_climb_out_of_root(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (tmp_path / "secret").write_text("outside")
    os.symlink("../../../../secret", root / "etc/leak")
    host = HostRoot(root)
    # '..' stops at the root, so the link points at <root>/secret, which is absent.
    assert host.read_text("etc/leak") is None
    assert host.resolve("etc/leak") == root / "secret"


def test_symlinked_directory_component(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "sys/devices/pci0").mkdir(parents=True)
    (root / "sys/devices/pci0/class").write_text("0x030200\n")
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink("../../../devices/pci0", root / "sys/bus/pci/devices/0000:00:01.0")
    host = HostRoot(root)
    assert host.listdir("sys/bus/pci/devices") == ["0000:00:01.0"]
    assert host.read_line("sys/bus/pci/devices/0000:00:01.0/class") == "0x030200"


def test_symlink_loop_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    os.symlink("/etc/b", root / "etc/a")
    os.symlink("/etc/a", root / "etc/b")
    host = HostRoot(root)
    problems = collect(host)
    assert host.read_text("etc/a") is None
    assert problems and problems[0].path == "/etc/a"
    assert not problems[0].transient


def test_missing_file_is_silent(tmp_path: Path) -> None:
    host = HostRoot(make_root(tmp_path))
    problems = collect(host)
    assert host.read_text("etc/nothing") is None
    assert host.read_text("etc/nothing/below") is None
    assert host.listdir("no/such/dir") == []
    assert problems == []


def test_oversized_file_is_refused_with_a_problem(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "etc/big").write_bytes(b"x" * 5000)
    host = HostRoot(root)
    problems = collect(host)
    assert host.read_bytes("etc/big", limit=4096) is None
    assert "4096-byte limit" in problems[0].reason
    assert host.read_bytes("etc/big", limit=5000) == b"x" * 5000


@pytest.mark.parametrize("error", [errno.EACCES, errno.EIO])
def test_unreadable_file_is_transient_and_marks_the_pass_incomplete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    """Tests run as root, where chmod 0 does not stop a read; fail the open itself."""
    from nodefeatures.discovery.config import build
    from nodefeatures.discovery.run import run_pass
    from nodefeatures.discovery.source import Host
    from nodefeatures.sources.system import SystemSource

    root = make_root(tmp_path)
    (root / "etc/os-release").write_text("ID=locked\n")
    real_open = os.open

    def failing_open(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if str(path).endswith("etc/os-release"):
            raise OSError(error, os.strerror(error))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", failing_open)
    host = HostRoot(root)
    problems = collect(host)
    assert host.read_text("etc/os-release") is None
    assert problems[0].transient and problems[0].path == "/etc/os-release"
    sources = {"system": SystemSource()}
    result = run_pass(Host(root=host), sources, build({}, sources)).results[0]
    assert result.labels == {} and not result.complete
    assert any(os.strerror(error) in w for w in result.warnings)


def test_reading_a_directory_is_reported(tmp_path: Path) -> None:
    host = HostRoot(make_root(tmp_path))
    problems = collect(host)
    assert host.read_text("etc") is None
    assert problems[0].path == "/etc"


def test_glob_matches_one_name_per_star_and_skips_dotfiles(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    for name in ("1-1", "2-1", ".hidden"):
        (root / "sys/bus/usb/devices" / name).mkdir(parents=True)
        (root / "sys/bus/usb/devices" / name / "idProduct").write_text("0001\n")
    (root / "sys/bus/usb/devices/usb3").mkdir()
    host = HostRoot(root)
    assert host.glob("/sys/bus/usb/devices/*/idProduct") == [
        "sys/bus/usb/devices/1-1/idProduct",
        "sys/bus/usb/devices/2-1/idProduct",
    ]


def test_proc_can_come_from_elsewhere(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    proc = tmp_path / "containerproc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/osrelease").write_text("6.1.0\n")
    host = HostRoot(root, proc=proc)
    assert host.read_line("/proc/sys/kernel/osrelease") == "6.1.0"
    assert host.read_text("etc/../usr/lib/os-release") == "ID=hostos\n"


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "etc/junk").write_bytes(b"ID=\xff\xfe\n")
    assert HostRoot(root).read_text("etc/junk") == "ID=\ufffd\ufffd\n"


def test_a_new_pass_sees_links_that_changed(tmp_path: Path) -> None:
    """An agent reuses one HostRoot; a link made after a pass must resolve inside the root."""
    from nodefeatures.discovery.config import build
    from nodefeatures.discovery.run import run_pass
    from nodefeatures.discovery.source import Host

    root = make_root(tmp_path)
    host = HostRoot(root)
    assert host.read_text("etc/later") is None
    (tmp_path / "outside").write_text("outside the root")
    os.symlink("/usr/lib/os-release", root / "etc/later")
    run_pass(Host(root=host), {}, build({}, {}))  # each pass starts from fresh resolutions
    assert host.read_text("etc/later") == "ID=hostos\n"
