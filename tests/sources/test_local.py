"""local source: NFD feature files, their directives and hostile contents."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from racing import Flipper

from nodefeatures.discovery import hostroot
from nodefeatures.discovery.config import ConfigError, build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import SourceResult, run_pass, run_source
from nodefeatures.discovery.source import Host
from nodefeatures.sources.local import LocalSource, parse_rfc3339
from nodefeatures.sources.system import SystemSource

DEFAULT_NS = "feature.node.kubernetes.io/"
FEATURES_D = "etc/kubernetes/node-feature-discovery/features.d"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SOURCE = LocalSource(clock=lambda: NOW)


def write(root: Path, name: str, content: str | bytes, directory: str = FEATURES_D) -> Path:
    path = root / directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run(root: Path, source: LocalSource = SOURCE, **options: Any) -> SourceResult:
    config = build({"sources": {"local": options}} if options else {}, {"local": source})
    return run_source(Host(root=HostRoot(root)), source, config)


def labels_of(result: SourceResult) -> dict[str, str]:
    return {k.removeprefix(DEFAULT_NS): v.value for k, v in result.labels.items()}


def test_lines_become_labels_named_as_written(tmp_path: Path) -> None:
    write(tmp_path, "gpu", "\n".join([
        "# set by the provisioning tool",
        "",
        "nvidia.com/gpu.deploy.driver=false",
        "  rack=r12  ",
        "flagged",
        "empty=",
        "equation=a=b",
        "example.com/zone=eu-1\r",
        "\t# indented comment",
        "#+expiry-time=2000-01-01T00:00:00Z",
    ]))
    result = run(tmp_path)
    assert labels_of(result) == {
        "nvidia.com/gpu.deploy.driver": "false",
        "rack": "r12",
        "flagged": "true",
        "empty": "",
        "example.com/zone": "eu-1",
    }
    # Not `local-rack`: local names carry no source prefix.
    assert "feature.node.kubernetes.io/rack" in result.labels
    assert result.labels["feature.node.kubernetes.io/rack"].origin == (
        f"/{FEATURES_D}/gpu:4: rack=r12")
    # `equation=a=b` splits at the first '=': the value `a=b` is invalid, dropped centrally
    assert result.warnings == [
        "dropped label feature.node.kubernetes.io/equation='a=b': invalid value (must be "
        "alphanumeric at both ends with only '-', '_' or '.' inside)"]


def test_files_in_name_order_later_wins_dot_files_ignored(tmp_path: Path) -> None:
    write(tmp_path, "20-site", "zone=b\nsite=x\n")
    write(tmp_path, "10-base", "zone=a\nbase=1\n")
    write(tmp_path, ".10-editor.swp", "zone=hidden\nhidden=1\n")
    write(tmp_path, ".hidden", "hidden=1\n")
    result = run(tmp_path)
    assert labels_of(result) == {"zone": "b", "site": "x", "base": "1"}
    assert result.labels[DEFAULT_NS + "zone"].origin.endswith("/20-site:1: zone=b")


def test_expiry_applies_forward_until_the_next_directive(tmp_path: Path) -> None:
    write(tmp_path, "leases", "\n".join([
        "always=1",
        "# +expiry-time=2026-03-01T11:59:59Z",
        "expired=1",
        "also-expired=1",
        "# +expiry-time=2026-03-01T12:00:00Z",  # exactly now: not yet expired
        "due-now=1",
        "# +expiry-time=2026-03-01T13:30:00+01:00",  # 12:30 UTC
        "later=1",
        "# +expiry-time=2026-03-01T12:30:00-01:00",  # 13:30 UTC
        "much-later=1",
    ]))
    write(tmp_path, "next-file", "fresh=1\n")  # expiry does not carry into the next file
    assert labels_of(run(tmp_path)) == {
        "always": "1", "due-now": "1", "later": "1", "much-later": "1", "fresh": "1",
    }
    one_hour_later = LocalSource(clock=lambda: NOW + timedelta(hours=1))
    assert labels_of(run(tmp_path, one_hour_later)) == {
        "always": "1", "much-later": "1", "fresh": "1",
    }


def test_unparsable_expiry_keeps_the_previous_time_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "leases", "\n".join([
        "# +expiry-time=2020-01-01T00:00:00Z",
        "old=1",
        "# +expiry-time=next tuesday",
        "still-old=1",
        "# +expiry-time=2030-01-01T00:00:00Z",
        "new=1",
        "# +expiry-time=2030-01-01",
        "still-new=1",
        "# +expiry-time",
        "again-new=1",
    ]))
    result = run(tmp_path)
    assert labels_of(result) == {"new": "1", "still-new": "1", "again-new": "1"}
    assert len(result.warnings) == 3
    assert all(w.startswith(f"/{FEATURES_D}/leases:") for w in result.warnings)
    assert "line 3: expiry-time 'next tuesday'" in result.warnings[0]


def test_no_label_and_no_feature_affect_only_the_next_line(tmp_path: Path) -> None:
    write(tmp_path, "a-earlier", "secret=from-earlier-file\n")
    write(tmp_path, "b-file", "\n".join([
        "secret=1",
        "# +no-label",
        "secret=2",  # kept out of labels, and the earlier `secret` of this file too
        "visible=1",
        "# +no-feature",
        "label-only=1",
        "# +no-label=ignored value",
        "feature-only=1",
    ]))
    result = run(tmp_path)
    # Another file's label survives: no-label deletes only within its own file.
    assert labels_of(result) == {
        "secret": "from-earlier-file", "visible": "1", "label-only": "1",
    }
    raw = {k: f.value for k, f in result.features.attributes["feature"].items()}
    assert raw == {"secret": "2", "visible": "1", "feature-only": "1"}


def test_no_label_is_not_used_up_by_an_expired_line(tmp_path: Path) -> None:
    write(tmp_path, "f", "\n".join([
        "# +no-label",
        "# +expiry-time=2000-01-01T00:00:00Z",
        "gone=1",
        "# +expiry-time=2099-01-01T00:00:00Z",
        "hidden=1",
        "shown=1",
    ]))
    assert labels_of(run(tmp_path)) == {"shown": "1"}


def test_unknown_directives_warn_and_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "f", "# +no-labels\n# + no-label\n#+no-label\nkept=1\n")
    result = run(tmp_path)
    assert labels_of(result) == {"kept": "1"}
    assert result.warnings == [
        f"/{FEATURES_D}/f: line 1: unknown directive 'no-labels' ignored",
        f"/{FEATURES_D}/f: line 2: unknown directive ' no-label' ignored",
    ]


def test_size_cap_is_64_kib(tmp_path: Path) -> None:
    line = "padded=1\n"
    exact = line + "#" * (65536 - len(line) - 1) + "\n"
    assert len(exact) == 65536
    write(tmp_path, "exact", exact)
    write(tmp_path, "over", exact + "x")
    write(tmp_path, "huge", "huge=1\n" + "#" * (20 * 1024 * 1024))
    result = run(tmp_path)
    assert labels_of(result) == {"padded": "1"}
    assert sorted(result.warnings) == [
        f"/{FEATURES_D}/huge: larger than the 65536-byte limit",
        f"/{FEATURES_D}/over: larger than the 65536-byte limit",
    ]


def test_binary_junk_costs_only_the_bad_lines(tmp_path: Path) -> None:
    write(tmp_path, "junk", b"good=1\nbad\x00=1\n\xff\xfe=2\nalso-good=2\n\x89PNG\r\n")
    result = run(tmp_path)
    assert labels_of(result) == {"good": "1", "also-good": "2"}
    assert result.warnings == [
        f"/{FEATURES_D}/junk: skipped 3 line(s) that are not UTF-8 text (line 2, 3, 5)"
    ]


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    write(tmp_path, "windows", b"\xef\xbb\xbffirst=1\r\nsecond=2\r\n")
    result = run(tmp_path)
    assert labels_of(result) == {"first": "1", "second": "2"}
    assert result.warnings == []


def test_invalid_names_and_values_fall_to_the_central_rules(tmp_path: Path) -> None:
    write(tmp_path, "f", "a = b\nspaced name=1\n-dash=1\nok=has space\n=novalue\n")
    result = run(tmp_path)
    assert labels_of(result) == {}
    assert len(result.warnings) == 5
    assert any("feature.node.kubernetes.io/ok='has space': invalid value" in w
               for w in result.warnings)
    assert any("'feature.node.kubernetes.io/a '" in w for w in result.warnings)


def test_absolute_symlink_resolves_inside_the_root(tmp_path: Path) -> None:
    write(tmp_path, "passwd", "inside=root\n", directory="etc")
    (tmp_path / FEATURES_D).mkdir(parents=True)
    os.symlink("/etc/passwd", tmp_path / FEATURES_D / "link")
    result = run(tmp_path)
    # The host's own /etc/passwd would give other names, each dropped with a warning.
    assert labels_of(result) == {"inside": "root"}
    assert result.warnings == []


def test_entries_that_are_not_files_give_nothing(tmp_path: Path) -> None:
    write(tmp_path, "real", "real=1\n")
    directory = tmp_path / FEATURES_D
    (directory / "subdir").mkdir()
    write(tmp_path, "nested", "nested=1\n", directory=f"{FEATURES_D}/subdir")
    os.symlink("subdir", directory / "dirlink")
    os.symlink("/nowhere", directory / "dangling")
    os.mkfifo(directory / "fifo")  # reading it would block the pass
    result = run(tmp_path)
    assert labels_of(result) == {"real": "1"}
    assert result.warnings == []


def test_missing_directory_means_no_labels_and_no_warnings(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert (result.labels, result.warnings) == ({}, [])
    write(tmp_path, "features.d", "not a directory", directory=str(Path(FEATURES_D).parent))
    result = run(tmp_path)
    assert (result.labels, result.warnings) == ({}, [])


def test_directory_option(tmp_path: Path) -> None:
    write(tmp_path, "a", "default=1\n")
    write(tmp_path, "b", "elsewhere=1\n", directory="opt/labels")
    assert labels_of(run(tmp_path, directory="/opt/labels")) == {"elsewhere": "1"}
    with pytest.raises(ConfigError, match=r"sources\.local\.directory"):
        build({"sources": {"local": {"directory": ""}}}, {"local": SOURCE})
    with pytest.raises(ConfigError, match=r"sources\.local\.bogus: unknown key"):
        build({"sources": {"local": {"bogus": 1}}}, {"local": SOURCE})
    with pytest.raises(ConfigError, match=r"sources\.local: must be a mapping"):
        build({"sources": {"local": "/opt/labels"}}, {"local": SOURCE})


def test_prefixed_key_wins_over_the_same_bare_key(tmp_path: Path) -> None:
    write(tmp_path, "a", "feature.node.kubernetes.io/zone=prefixed\n")
    write(tmp_path, "b", "zone=bare\n")
    assert labels_of(run(tmp_path)) == {"zone": "prefixed"}


def test_kubernetes_namespaces_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "f", "\n".join([
        "node-role.kubernetes.io/worker=",
        "kubernetes.io/hostname=spoofed",
        "gpu.feature.node.kubernetes.io/model=h100",
        "profile.node.kubernetes.io/tier=gold",
        "nvidia.com/gpu.product=H100",
        "kubernetes.io.example.com/x=1",
    ]))
    result = run(tmp_path)
    assert labels_of(result) == {
        "gpu.feature.node.kubernetes.io/model": "h100",
        "profile.node.kubernetes.io/tier": "gold",
        "nvidia.com/gpu.product": "H100",
        "kubernetes.io.example.com/x": "1",
    }
    assert len(result.warnings) == 2
    assert result.warnings[0].startswith(f"/{FEATURES_D}/f:1: label 'node-role.kubernetes.io")


def test_local_wins_over_built_in_sources(tmp_path: Path) -> None:
    write(tmp_path, "os-release", "ID=debian\n", directory="etc")
    write(tmp_path, "f", "feature.node.kubernetes.io/system-os_release.ID=custom\n")
    sources = {"system": SystemSource(), "local": SOURCE}
    discovery = run_pass(Host(root=HostRoot(tmp_path)), sources, build({}, sources))
    label = discovery.labels["feature.node.kubernetes.io/system-os_release.ID"]
    assert (label.value, label.source) == ("custom", "local")


def test_default_clock_is_timezone_aware() -> None:
    now = LocalSource().clock()
    assert now.tzinfo is not None
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(("text", "expected"), [
    ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2030-01-02T03:04:05.123456789Z", datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
    ("2030-01-02T03:04:05,5+05:30",
     datetime(2030, 1, 2, 3, 4, 5, 500000, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ("2030-01-02T03:04:05-08:00",
     datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-8)))),
])
def test_rfc3339_accepted(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize("text", [
    "2030-01-02", "2030-01-02 03:04:05Z", "2030-01-02t03:04:05Z", "2030-01-02T03:04:05",
    "2030-02-30T00:00:00Z", "2030-01-02T24:00:00Z", "2030-01-02T03:04:05+24:00",
    "2030-01-02T03:04Z", "20300102T030405Z", "",
])
def test_rfc3339_refused(text: str) -> None:
    assert parse_rfc3339(text) is None


def test_live_features_directory() -> None:
    """On this machine: whatever features.d holds, a pass never fails."""
    result = run(Path("/"), LocalSource())
    assert result.error is None
    if not Path("/", FEATURES_D).is_dir():
        assert (result.labels, result.warnings) == ({}, [])


TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZS1hY2NvdW50.c2lnbmF0dXJl"


@pytest.mark.parametrize("resolver", ["kernel", "walk"])
def test_a_feature_file_flipping_to_a_link_never_brings_a_secret_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolver: str) -> None:
    """A file beside the agent's token must never become a label or a warning."""
    if resolver == "walk":
        monkeypatch.setattr(hostroot, "kernel_opener", lambda: None)
    root = tmp_path / "host"
    write(root, "f", "inside=1\n")
    secret = tmp_path / "secrets" / "f"
    secret.parent.mkdir()
    secret.write_text(f"stolen={TOKEN}\n{TOKEN}\n")
    passes = clean = 0
    deadline = time.monotonic() + 1.5
    with Flipper(root / FEATURES_D / "f", secret) as flipper:
        while time.monotonic() < deadline:
            result = run(root)
            shown = " ".join([*result.warnings, *(f"{k}={v.value}" for k, v in
                                                  result.labels.items())])
            assert "stolen" not in shown and TOKEN[:20] not in shown, shown
            passes += 1
            clean += labels_of(result) == {"inside": "1"}
    assert flipper.flips > 50 and passes > 50 and clean > 0
