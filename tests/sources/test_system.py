"""system source: os-release parsing against the real corpus and hostile files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import distro
import pytest

from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.system import SystemSource, parse_os_release

PREFIX = "feature.node.kubernetes.io/system-os_release."
SOURCE = SystemSource()
CONFIG = build({}, {"system": SOURCE})


def labels_of(root: Path) -> dict[str, str]:
    result = run_source(Host(root=HostRoot(root)), SOURCE, CONFIG)
    return {k.removeprefix(PREFIX): v.value for k, v in result.labels.items()}


def restore_symlinks(tree: Path) -> None:
    """The corpus stores links as files holding the target; make them real links again."""
    for path in tree.rglob("*"):
        if path.is_file() and path.stat().st_size < 64:
            target = path.read_text().strip()
            if "=" not in target and (path.parent / target).is_file():
                path.unlink()
                os.symlink(target, path)


def corpus_distros() -> list[Path]:
    corpus = Path(__file__).resolve().parents[3] / "shared/corpus/os-release"
    return sorted(corpus.iterdir()) if corpus.is_dir() else []


@pytest.mark.parametrize("distro_dir", corpus_distros(), ids=lambda p: p.name)
def test_corpus_matches_the_distro_library(distro_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / distro_dir.name
    shutil.copytree(distro_dir, root, symlinks=True)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    restore_symlinks(root)
    oracle = distro.LinuxDistribution(
        root_dir=str(root), include_lsb=False, include_uname=False, include_oslevel=False
    )
    labels = labels_of(root)
    expected_id = oracle.os_release_attr("id")
    assert labels.get("ID", "") == expected_id
    version = oracle.os_release_attr("version_id")
    assert labels.get("VERSION_ID", "") == version
    if version:
        assert labels["VERSION_ID.major"] == version.split(".")[0]
        if "." in version:
            assert labels["VERSION_ID.minor"] == version.split(".")[1]


def test_no_corpus_is_a_clear_skip() -> None:
    if not corpus_distros():
        pytest.skip("../shared/corpus/os-release is absent on this machine")
    assert len(corpus_distros()) >= 50


def write(root: Path, rel: str, content: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def test_usr_lib_fallback_when_etc_is_missing(tmp_path: Path) -> None:
    write(tmp_path, "usr/lib/os-release", 'ID=flatcar\nVERSION_ID=3815.2.0\n')
    assert labels_of(tmp_path) == {
        "ID": "flatcar", "VERSION_ID": "3815.2.0",
        "VERSION_ID.major": "3815", "VERSION_ID.minor": "2",
    }


def test_absolute_symlink_stays_in_root(tmp_path: Path) -> None:
    write(tmp_path, "usr/lib/os-release", "ID=inside\n")
    (tmp_path / "etc").mkdir()
    os.symlink("/usr/lib/os-release", tmp_path / "etc/os-release")
    assert labels_of(tmp_path) == {"ID": "inside"}


def test_version_forms() -> None:
    cases = {"22.04": ("22", "04"), "9": ("9", None), "1.2.3": ("1", "2"),
             "12.1-beta": ("12", None), "rolling": (None, None)}
    for version, (major, minor) in cases.items():
        from nodefeatures.sources.system import _VERSION

        match = _VERSION.match(version)
        got = (match.group(1), match.group(2)) if match else (None, None)
        assert got == (major, minor), version


def test_quoting_and_escapes() -> None:
    parsed = parse_os_release(
        'ID="ubuntu"\nNAME=\'Debian GNU\'\nPRETTY="say \\"hi\\""\n# ID=comment\n  VERSION_ID=1 \n'
    )
    assert parsed == {"ID": "ubuntu", "NAME": "Debian GNU", "PRETTY": 'say "hi"',
                      "VERSION_ID": "1"}


def test_garbage_costs_only_labels_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", b"\x00\xff garbage\nID=has space\nVERSION_ID=\n")
    result = run_source(Host(root=HostRoot(tmp_path)), SOURCE, CONFIG)
    assert result.labels == {}  # NFD drops an invalid value; nobody wrote `has_space`
    assert any(f"dropped label {PREFIX}ID='has space'" in w for w in result.warnings)


def test_huge_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", "ID=x\n" + "#" * (20 * 1024 * 1024))
    write(tmp_path, "usr/lib/os-release", "ID=fallback\n")
    result = run_source(Host(root=HostRoot(tmp_path)), SOURCE, CONFIG)
    assert result.labels == {}
    assert any("/etc/os-release: larger than" in w for w in result.warnings)
