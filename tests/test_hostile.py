"""A new user's hostile fixtures: every one exits 0 with only valid labels and a warning."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner
from testpaths import FIXTURES

from nodefeatures.cli import main
from nodefeatures.discovery.fixture import read_labels
from nodefeatures.discovery.labels import key_error, value_error

HOSTILE = FIXTURES / "hostile-inputs"
BIG = 20 * 1024 * 1024


def dump(fixture: Path) -> tuple[int, dict[str, str], str]:
    result = CliRunner().invoke(main, ["dump", "--format", "json", "--fixture", str(fixture)])
    return result.exit_code, json.loads(result.stdout or "{}"), result.stderr


def test_hostile_fixture_warns_and_emits_only_valid_labels() -> None:
    code, labels, err = dump(HOSTILE)
    assert code == 0
    assert labels == read_labels(HOSTILE)
    assert all(key_error(k) is None and value_error(v) is None for k, v in labels.items())
    for named in ("/proc/cpuinfo", "/boot/config-6.5.0 custom build #1",
                  "/sys/class/net/eth0/device/sriov_totalvfs", "/sys/block/sda/queue/rotational",
                  "features.d/00-junk", "'debian\\x00junk'"):
        assert named in err, named


def test_twenty_megabyte_files_where_small_ones_belong(tmp_path: Path) -> None:
    fixture = tmp_path / "big"
    shutil.copytree(HOSTILE, fixture, symlinks=True)
    root = fixture / "root"
    for rel in ("proc/cpuinfo", "proc/swaps",
                "etc/kubernetes/node-feature-discovery/features.d/big",
                "sys/devices/virtual/block/sda/queue/rotational"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"flags\t: sse sse2\n" * (BIG // 16))
    code, labels, err = dump(fixture)
    assert code == 0
    assert labels == read_labels(HOSTILE)  # the big files cost nothing that was there before
    assert "/proc/cpuinfo: larger than" in err
    assert "features.d/big" in err


def test_absolute_symlinks_never_leave_the_fixture(tmp_path: Path) -> None:
    fixture = tmp_path / "links"
    shutil.copytree(HOSTILE, fixture, symlinks=True)
    root = fixture / "root"
    (root / "usr/lib/os-release").unlink()
    (root / "etc/os-release").unlink()
    # This machine has /etc/os-release; inside the fixture the link points at itself.
    (root / "etc/os-release").symlink_to("/etc/os-release")
    code, labels, err = dump(fixture)
    assert code == 0
    assert not any("system-os_release" in k for k in labels)
    assert "/etc/os-release: too many levels of symbolic links" in err


FEATURES_D = "root/etc/kubernetes/node-feature-discovery/features.d"


def test_a_newline_in_a_file_name_cannot_forge_a_log_line(tmp_path: Path) -> None:
    fixture = tmp_path / "names"
    shutil.copytree(HOSTILE, fixture, symlinks=True)
    forged = "x\nnodefeatures: ERROR: local: credentials rotated, call 555-0100"
    (fixture / FEATURES_D / forged).write_text("# +bogus\nok=1\n")
    (fixture / FEATURES_D / "big\r\n\x1b[31mred").write_bytes(b"#" * 70000)
    code, _, err = dump(fixture)
    assert code == 0
    assert not [line for line in err.splitlines() if line.startswith("nodefeatures: ERROR")]
    assert "\x1b" not in err and "\r" not in err
    # The names still show, escaped, in the warnings about them.
    assert "x\\nnodefeatures: ERROR: local: credentials rotated" in err
    assert "unknown directive 'bogus'" in err
    assert "big\\r\\n\\x1b[31mred': larger than the 65536-byte limit" in err


def test_a_rejected_line_comes_back_only_as_a_short_excerpt(tmp_path: Path) -> None:
    fixture = tmp_path / "token"
    shutil.copytree(HOSTILE, fixture, symlinks=True)
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ." + "A" * 600 + ".signature-part"
    (fixture / FEATURES_D / "token").write_text(f"{token}\nvalue={token}\n# +{token}\n")
    code, labels, err = dump(fixture)
    assert code == 0
    assert "signature-part" not in err and "A" * 100 not in err
    assert err.count("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.") >= 3  # each line is named
    assert f"... ({len(token)} characters)" in err  # a cut says how long the whole was
    assert not any("signature-part" in v for v in labels.values())


def test_replay_never_reads_outside_the_fixture(tmp_path: Path) -> None:
    """`dump --fixture` from anywhere must not report this machine or files beside it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cpuid.txt").write_text((HOSTILE / "cpuid.txt").read_text()
                                         if (HOSTILE / "cpuid.txt").exists() else "")
    (elsewhere / "labels.json").write_text("{}")
    cases = {"root": "/", "cpuid.txt": str(elsewhere / "cpuid.txt"),
             "nvml.json": "/proc/self/environ", "labels.json": str(elsewhere / "labels.json")}
    for part, target in cases.items():
        fixture = tmp_path / part
        fixture.mkdir()
        (fixture / "root/etc").mkdir(parents=True)
        (fixture / "root/etc/os-release").write_text("ID=fixture\n")
        if part == "root":
            shutil.rmtree(fixture / "root")
        (fixture / part).symlink_to(target)
        result = CliRunner().invoke(main, ["dump", "--format", "json", "--fixture", str(fixture)])
        assert result.exit_code == 2, (part, result.output)
        assert f"{fixture / part}: a symbolic link" in result.stderr
        assert result.stdout == ""
    fifo = tmp_path / "fifo"
    (fifo / "root").mkdir(parents=True)
    os.mkfifo(fifo / "cpuid.txt")  # would block the cpu source's read
    result = CliRunner().invoke(main, ["dump", "--fixture", str(fifo)])
    assert result.exit_code == 2 and "cpuid.txt: not a regular file" in result.stderr
