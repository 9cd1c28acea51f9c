"""HostRoot: reads stay inside the root, are bounded, and report problems."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from racing import Flipper

from nodefeatures.discovery import hostroot
from nodefeatures.discovery.hostroot import HostRoot, Problem

RACE_SECONDS = 1.5
SECRET = b"eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.outside-the-root"


@pytest.fixture(autouse=True, params=["kernel", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test runs with openat2(RESOLVE_IN_ROOT) and with the component walk."""
    if request.param == "walk":
        monkeypatch.setattr(hostroot, "kernel_opener", lambda: None)
    elif hostroot.kernel_opener() is None:
        pytest.skip("this kernel or sandbox refuses openat2")
    yield request.param


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
    real_open = HostRoot._open

    def failing_open(self: HostRoot, path: str, flags: int) -> int:
        if path.endswith("etc/os-release") and not flags & os.O_PATH:  # stat still works
            raise OSError(error, os.strerror(error))
        return real_open(self, path, flags)

    monkeypatch.setattr(HostRoot, "_open", failing_open)
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


def race_root(tmp_path: Path) -> tuple[Path, Path]:
    """A root whose features.d/f says `inside`, and a secret file beside the root."""
    root = make_root(tmp_path)
    features = root / "etc/features.d"
    features.mkdir()
    (features / "f").write_bytes(b"inside=1\n")
    secret = tmp_path / "outside" / "f"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    (secret.parent / "token").write_bytes(SECRET)  # a name a listing must never show
    return root, secret


def race(host: HostRoot, path: str, seconds: float = RACE_SECONDS) -> tuple[int, int]:
    """Read `path` every way a source can until time is up: (reads, reads that saw it)."""
    reads = seen = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        host.refresh()  # each read as the first of a new pass
        for data in (host.read_bytes(path), (host.read_regular(path) or (None,))[0]):
            assert data is None or SECRET not in data, "read outside the root"
            reads += 1
            seen += data == b"inside=1\n"
        directory = path.rpartition("/")[0]
        assert set(host.listdir(directory)) <= {"f", ".keep", ".spare"}
        host.is_file(path)
        host.exists(path)
    return reads, seen


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_a_file_swapped_for_a_link_mid_read_never_leads_outside(
        tmp_path: Path, link: str) -> None:
    root, secret = race_root(tmp_path)
    target = secret if link == "absolute" else Path("../../../outside/f")
    host = HostRoot(root)
    with Flipper(root / "etc/features.d/f", target) as flipper:
        reads, seen = race(host, "etc/features.d/f")
    # The race really ran: both states were met, many times.
    assert flipper.flips > 100 and reads > 100 and 0 < seen < reads


def test_a_directory_swapped_for_a_link_mid_walk_never_leads_outside(tmp_path: Path) -> None:
    root, secret = race_root(tmp_path)
    host = HostRoot(root)
    with Flipper(root / "etc/features.d", secret.parent) as flipper:
        reads, seen = race(host, "etc/features.d/f")
    assert flipper.flips > 100 and reads > 100 and seen > 0


def test_display_quotes_and_escapes_names_that_need_it(tmp_path: Path) -> None:
    host = HostRoot(tmp_path)
    assert host.display("sys/bus/pci/devices/0000:3b:00.0/class") == (
        "/sys/bus/pci/devices/0000:3b:00.0/class")
    for name, shown in [("a\nb", "'/etc/a\\nb'"), ("x\u2028y", "'/etc/x\\u2028y'"),
                        ("it's", '"/etc/it\'s"'), ("tab\there", "'/etc/tab\\there'"),
                        ("bidi\u202etxt", "'/etc/bidi\\u202etxt'")]:
        assert host.display(f"etc/{name}") == shown
    long = host.display("etc/" + "\n" * 1000)
    assert long.endswith("... (1005 characters)") and "\n" not in long


def test_a_path_with_a_nul_reads_as_absent_and_never_as_its_prefix(tmp_path: Path) -> None:
    # No file name holds a NUL. A path built from file content may: the kernel call must
    # not read it as the part before the NUL, and the walk must not raise.
    root = make_root(tmp_path)
    host = HostRoot(root)
    problems = collect(host)
    path = "usr/lib/os-release\0/../../etc/shadow"
    assert host.read_text(path) is None
    assert host.read_regular(path) is None
    assert host.listdir("usr\0x") == []
    assert not host.exists(path) and not host.is_file(path) and not host.is_dir("usr\0")
    assert host.glob("usr/lib/os-rel*\0") == []
    assert host.resolve(path) is not None
    assert problems == []


def test_read_regular_never_opens_what_is_not_a_regular_file(tmp_path: Path) -> None:
    # Opening is itself an act on a FIFO (it releases a waiting writer) or a device (a
    # watchdog starts, a tape rewinds): a features.d entry linked to one must not be opened.
    import threading

    root = make_root(tmp_path)
    fifo = root / "etc/fifo"
    os.mkfifo(fifo)
    (root / "etc/link").symlink_to("/etc/fifo")
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        opened.set()
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        host = HostRoot(root)
        assert host.read_regular("etc/link") is None
        assert host.read_regular("etc/fifo") is None
        assert not opened.wait(0.3)
        assert host.read_regular("usr/lib/os-release") is not None
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
        thread.join(2)
