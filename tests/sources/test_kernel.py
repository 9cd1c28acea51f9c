"""kernel source: version parsing, the kconfig search order, bounded gunzip, SELinux."""

from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path

import pytest
from hosttree import HostTree, short_labels, uncatalogued

from nodefeatures.discovery.config import ConfigError, build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.kernel import (
    KCONFIG_LIMIT,
    KernelSource,
    gunzip_bounded,
    kconfig_paths,
    parse_kconfig,
    version_parts,
)

KVER = "5.15.0-105-generic"


@pytest.fixture
def tree(tmp_path: Path) -> HostTree:
    host = HostTree(tmp_path / "host")
    host.file("proc/sys/kernel/osrelease", KVER + "\n")
    return host


def version_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("version.")}


def config_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("config.")}


# -- version ---------------------------------------------------------------------------

# Every row of the reference table (nfd-labels.md §4), and what this source emits for it.
# None: no component labels at all. The last two rows are the deliberate improvement.
VERSION_TABLE = [
    ("5.15.0-105-generic", "5.15.0-105-generic", ("5", "15", "0"), True),
    ("6.8.0-rc1", "6.8.0-rc1", ("6", "8", "0"), True),
    ("6.8-rc1", "6.8-rc1", ("6", "8", ""), True),
    ("6.8", "6.8", ("6", "8", ""), True),
    ("6.0.10-100+123.x86_64~", "6.0.10-100_123.x86_64", ("6", "0", "10"), True),
    ("6.1.0+rpt-rpi-v8", "6.1.0_rpt-rpi-v8", ("6", "1", "0"), False),
    ("4.19.0.1", "4.19.0.1", ("4", "19", "0"), False),
]


@pytest.mark.parametrize(("osrelease", "full", "parts", "nfd_matches"), VERSION_TABLE,
                         ids=[row[0] for row in VERSION_TABLE])
def test_reference_version_table(tmp_path: Path, osrelease: str, full: str,
                                 parts: tuple[str, str, str], nfd_matches: bool) -> None:
    host = HostTree(tmp_path)
    host.file("proc/sys/kernel/osrelease", osrelease + "\n")
    labels = version_labels(host.labels(KernelSource()))
    major, minor, revision = parts
    # An empty component is still a label (with an empty value), exactly as NFD emits it.
    assert labels == {"version.full": full, "version.major": major,
                      "version.minor": minor, "version.revision": revision}
    assert version_parts(full) == (parts, nfd_matches)


def test_improved_parse_is_marked_in_the_origin(tree: HostTree) -> None:
    tree.file("proc/sys/kernel/osrelease", "6.1.0+rpt-rpi-v8\n")
    result = tree.run(KernelSource())
    major = result.labels["feature.node.kubernetes.io/kernel-version.major"]
    assert "NFD labels no components" in major.origin
    full = result.labels["feature.node.kubernetes.io/kernel-version.full"]
    assert full.origin == "/proc/sys/kernel/osrelease=6.1.0+rpt-rpi-v8"


@pytest.mark.parametrize(("osrelease", "expected"), [
    ("6", {"version.full": "6", "version.major": "6", "version.minor": "",
           "version.revision": ""}),
    ("  6.6.30-talos \r\n", {"version.full": "6.6.30-talos", "version.major": "6",
                            "version.minor": "6", "version.revision": "30"}),
    ("v6.1-custom", {"version.full": "v6.1-custom"}),  # no leading number: full only
    ("~6.2.1+", {"version.full": "6.2.1", "version.major": "6", "version.minor": "2",
                 "version.revision": "1"}),
    ("._-6.5.0-rc3-.", {"version.full": "6.5.0-rc3", "version.major": "6",
                        "version.minor": "5", "version.revision": "0"}),
    ("6.1.0 ñ", {"version.full": "6.1.0", "version.major": "6", "version.minor": "1",
                 "version.revision": "0"}),  # one '_' per character, then edges stripped
])
def test_more_release_forms(tmp_path: Path, osrelease: str, expected: dict[str, str]) -> None:
    host = HostTree(tmp_path)
    host.file("proc/sys/kernel/osrelease", osrelease)
    assert version_labels(host.labels(KernelSource())) == expected


def test_multibyte_characters_become_one_underscore_each(tmp_path: Path) -> None:
    host = HostTree(tmp_path)
    host.file("proc/sys/kernel/osrelease", "6.1.0-ñé-x")
    assert host.labels(KernelSource())["version.full"] == "6.1.0-__-x"


def test_release_of_only_punctuation_gives_a_warning_not_a_label(tree: HostTree) -> None:
    tree.file("proc/sys/kernel/osrelease", "+++\n")
    result = tree.run(KernelSource())
    assert version_labels(short_labels(KernelSource(), result)) == {}
    assert any("/proc/sys/kernel/osrelease" in w and "'+++'" in w for w in result.warnings)


def test_proc_comes_from_the_proc_option(tmp_path: Path) -> None:
    root = HostTree(tmp_path / "host")
    root.file("proc/sys/kernel/osrelease", "1.0.0-wrong\n")
    procfs = tmp_path / "procfs"
    (procfs / "sys/kernel").mkdir(parents=True)
    (procfs / "sys/kernel/osrelease").write_text("6.8.0-31-generic\n")
    host = Host(root=HostRoot(root.root, proc=procfs))
    result = root.run(KernelSource(), host=host)
    assert short_labels(KernelSource(), result)["version.full"] == "6.8.0-31-generic"


# -- kconfig ---------------------------------------------------------------------------

def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def test_kconfig_values(tree: HostTree) -> None:
    tree.file("proc/config.gz", gz(
        "#\n# Automatically generated file; DO NOT EDIT.\n#\n"
        "CONFIG_NO_HZ_IDLE=y\n"
        "# CONFIG_NO_HZ_FULL is not set\n"
        "CONFIG_NO_HZ=m\n"
        "CONFIG_PREEMPT_VOLUNTARY=y\n"
        "# CONFIG_PREEMPT is not set\n"
        "CONFIG_NR_CPUS=8192\n"
        'CONFIG_DEFAULT_HOSTNAME="none"\n'
    ))
    labels = tree.labels(KernelSource())
    # PREEMPT is not set and NO_HZ_FULL is commented out: neither gets a label.
    assert config_labels(labels) == {"config.NO_HZ": "true", "config.NO_HZ_IDLE": "true"}
    labels = tree.labels(KernelSource(), {"configOpts": ["NR_CPUS", "DEFAULT_HOSTNAME",
                                                         "PREEMPT_VOLUNTARY", "ABSENT"]})
    assert config_labels(labels) == {"config.NR_CPUS": "8192", "config.DEFAULT_HOSTNAME": "none",
                                     "config.PREEMPT_VOLUNTARY": "true"}


def test_parse_kconfig_splits_at_the_first_equals_sign() -> None:
    assert parse_kconfig('CONFIG_CMDLINE="a=b c"\r\nCONFIG_X=\nnot CONFIG_Y=y\n') == {
        "CMDLINE": "a=b c", "X": ""}


SEARCH_ORDER = [
    "etc/custom-kconfig",  # sources.kernel.kconfigFile
    "proc/config.gz",
    f"usr/src/linux-{KVER}/.config",
    f"usr/src/linux-rt-{KVER}/.config",
    "usr/src/linux/.config",
    f"usr/lib/modules/{KVER}/config",
    f"lib/modules/{KVER}/config",  # what the DaemonSet mounts on merged-/usr hosts
    f"usr/lib/ostree-boot/config-{KVER}",
    f"usr/lib/kernel/config-{KVER}",
    f"usr/src/linux-headers-{KVER}/.config",
    f"lib/modules/{KVER}/build/.config",
    f"usr/src/linux-rt-headers-{KVER}/.config",
    f"boot/config-{KVER}",
]


def test_search_order_first_found_wins(tree: HostTree) -> None:
    assert kconfig_paths(KVER, "etc/custom-kconfig") == SEARCH_ORDER
    for index, rel in enumerate(SEARCH_ORDER):
        text = f"CONFIG_MARK=file{index}\n"
        tree.file(rel, gz(text) if rel.endswith(".gz") else text.encode())
    options = {"kconfigFile": "/etc/custom-kconfig", "configOpts": ["MARK"]}
    source = KernelSource()  # one instance across passes, as in the agent
    for index, rel in enumerate(SEARCH_ORDER):
        labels = tree.labels(source, options)
        assert labels["config.MARK"] == f"file{index}", rel
        (tree.root / rel).unlink()
    assert config_labels(tree.labels(source, options)) == {}


def test_without_osrelease_only_release_free_paths_are_tried(tmp_path: Path) -> None:
    host = HostTree(tmp_path)
    host.file("usr/src/linux/.config", "CONFIG_PREEMPT=y\n")
    assert host.labels(KernelSource()) == {"config.PREEMPT": "true"}
    assert kconfig_paths(None) == ["proc/config.gz", "usr/src/linux/.config"]


def test_a_release_with_a_slash_builds_no_paths(tree: HostTree) -> None:
    tree.file("proc/sys/kernel/osrelease", "../../etc\n")
    tree.file("etc/build/.config", "CONFIG_PREEMPT=y\n")  # lib/modules/../../etc/build/.config
    assert config_labels(tree.labels(KernelSource())) == {}


def test_huge_config_is_refused_and_costs_only_kconfig(tree: HostTree) -> None:
    tree.file(f"boot/config-{KVER}", b"CONFIG_PREEMPT=y\n" + b"#" * (20 * 1024 * 1024))
    tree.file("sys/fs/selinux/enforce", "1")
    result = tree.run(KernelSource())
    labels = short_labels(KernelSource(), result)
    assert config_labels(labels) == {}
    assert labels["version.full"] == KVER
    assert labels["selinux.enabled"] == "true"
    assert any(w.startswith(f"/boot/config-{KVER}: larger than") for w in result.warnings)


def test_gzip_bomb_is_refused_and_the_next_path_is_used(tree: HostTree) -> None:
    bomb = gzip.compress(b"CONFIG_NO_HZ=y\n" * (64 * 1024 * 1024 // 15), compresslevel=9)
    assert len(bomb) < KCONFIG_LIMIT  # small on disk, 64 MiB inflated
    tree.file("proc/config.gz", bomb)
    tree.file(f"boot/config-{KVER}", "CONFIG_NO_HZ=m\nCONFIG_NO_HZ_FULL=y\n")
    started = time.process_time()
    result = tree.run(KernelSource())
    assert time.process_time() - started < 1.0  # inflating stopped at the limit
    assert config_labels(short_labels(KernelSource(), result)) == {
        "config.NO_HZ": "true", "config.NO_HZ_FULL": "true"}
    assert any(w.startswith("/proc/config.gz: decompresses to more than") for w in
               result.warnings)


@pytest.mark.parametrize(("content", "reason"), [
    (b"CONFIG_NO_HZ=y\n", "not valid gzip data"),
    (gz("CONFIG_NO_HZ=y\n" * 1000)[:-40], "truncated"),
    (b"", "truncated"),
])
def test_broken_gzip_is_a_warning(tree: HostTree, content: bytes, reason: str) -> None:
    tree.file("proc/config.gz", content)
    result = tree.run(KernelSource())
    labels = short_labels(KernelSource(), result)
    assert config_labels(labels) == {}
    assert labels["version.major"] == "5"
    assert any(w.startswith("/proc/config.gz: ") and reason in w for w in result.warnings)


def test_gunzip_bounded_limits() -> None:
    data = gz("x" * 1000)
    assert gunzip_bounded(data, limit=1000) == b"x" * 1000
    with pytest.raises(ValueError, match="more than the 999-byte limit"):
        gunzip_bounded(data, limit=999)


def test_a_changed_config_is_noticed_by_the_same_instance(tree: HostTree) -> None:
    source = KernelSource()
    tree.file("proc/config.gz", gz("CONFIG_PREEMPT=y\n"))
    assert config_labels(tree.labels(source)) == {"config.PREEMPT": "true"}
    tree.file("proc/config.gz", gz("CONFIG_NO_HZ=y\n"))
    assert config_labels(tree.labels(source)) == {"config.NO_HZ": "true"}
    # A different file with equal bytes is parsed as itself, not taken from the cache.
    (tree.root / "proc/config.gz").unlink()
    tree.file("usr/src/linux/.config", "CONFIG_NO_HZ_IDLE=y\n")
    assert config_labels(tree.labels(source)) == {"config.NO_HZ_IDLE": "true"}


def test_kconfig_file_is_a_host_path_through_absolute_links(tree: HostTree) -> None:
    tree.file("opt/kernel/config.gz", gz("CONFIG_PREEMPT=y\n"))
    tree.link("etc/kconfig.gz", "/opt/kernel/config.gz")
    labels = tree.labels(KernelSource(), {"kconfigFile": "/etc/kconfig.gz"})
    assert config_labels(labels) == {"config.PREEMPT": "true"}


def test_boot_config_through_an_absolute_symlink(tree: HostTree) -> None:
    tree.file(f"usr/lib/kernels/{KVER}/config", "CONFIG_NO_HZ_FULL=y\n")
    tree.link(f"boot/config-{KVER}", f"/usr/lib/kernels/{KVER}/config")
    assert config_labels(tree.labels(KernelSource())) == {"config.NO_HZ_FULL": "true"}


def test_options_are_validated_with_nfd_names() -> None:
    sources = {"kernel": KernelSource()}
    config = build({"sources": {"kernel": {"kconfigFile": "/boot/x", "configOpts": ["KVM"]}}},
                   sources)
    assert config.options("kernel") == {"kconfigFile": "/boot/x", "configOpts": ["KVM"]}
    with pytest.raises(ConfigError, match=r"sources\.kernel\.configOpts: expected a list"):
        build({"sources": {"kernel": {"configOpts": "NO_HZ"}}}, sources)
    with pytest.raises(ConfigError, match=r"sources\.kernel\.kconfig: unknown key"):
        build({"sources": {"kernel": {"kconfig": "/boot/x"}}}, sources)


# -- SELinux ---------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "enforcing"), [
    (b"1", True), (b"1\n", True), (b"0", False), (b"0\n", False), (b"\x00\xff", False),
    (b"", False),
])
def test_selinux_label_means_enforcing(tree: HostTree, content: bytes, enforcing: bool) -> None:
    tree.file("sys/fs/selinux/enforce", content)
    labels = tree.labels(KernelSource())
    assert ("selinux.enabled" in labels) is enforcing
    if enforcing:
        assert labels["selinux.enabled"] == "true"


def test_no_selinux_no_label(tree: HostTree) -> None:
    tree.dir("sys/fs/cgroup")
    assert "selinux.enabled" not in tree.labels(KernelSource())


# -- catalogue and the live machine ----------------------------------------------------

def test_every_label_is_catalogued(tree: HostTree) -> None:
    tree.file("proc/config.gz", gz("CONFIG_NO_HZ=y\nCONFIG_PREEMPT=y\n"))
    tree.file("sys/fs/selinux/enforce", "1")
    source = KernelSource()
    labels = tree.labels(source)
    assert len(labels) == 7
    assert uncatalogued(source, labels) == []
    assert uncatalogued(source, ["cpu-foo", "config"]) == ["cpu-foo", "config"]


@pytest.mark.skipif(not Path("/proc/sys/kernel/osrelease").is_file(), reason="needs Linux")
def test_live_machine() -> None:
    source = KernelSource()
    config = build({}, {"kernel": source})
    result = run_source(Host(root=HostRoot("/")), source, config)
    labels = short_labels(source, result)
    release = os.uname().release
    assert labels["version.full"] == re.sub(r"[^-A-Za-z0-9_.]", "_", release).strip("-_.")
    numbers = re.match(r"(\d+)\.(\d+)", release)
    if numbers:
        assert (labels["version.major"], labels["version.minor"]) == numbers.groups()
    if os.access("/proc/config.gz", os.R_OK):
        options = {}
        for line in gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines():
            name, _, value = line.partition("=")
            if name.startswith("CONFIG_"):
                options[name[7:]] = "true" if value in ("y", "m") else value.strip('"')
        expected = {f"config.{o}": options[o] for o in ("NO_HZ", "NO_HZ_IDLE", "NO_HZ_FULL",
                                                        "PREEMPT") if o in options}
        assert config_labels(labels) == expected
    enforce = Path("/sys/fs/selinux/enforce")
    assert ("selinux.enabled" in labels) is (enforce.is_file() and
                                             enforce.read_bytes()[:1] == b"1")
