"""`run --output-file`: an NFD features.d file kept by the same reconcile rules."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nodefeatures.cluster import featurefile
from nodefeatures.cluster.reconcile import Evidence, SourceReport
from nodefeatures.discovery import ownoutput
from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import Discovery, run_pass
from nodefeatures.discovery.source import Host
from nodefeatures.sources.local import LocalSource
from nodefeatures.sources.system import SystemSource

F = "feature.node.kubernetes.io/"
AVX = F + "cpu-cpuid.AVX"
GPU = "nvidia.com/gpu.count"


def evidence(cpu: dict[str, str], gpu: dict[str, str], gpu_ok: bool = True) -> Evidence:
    return Evidence((SourceReport("cpu", cpu, True),
                     SourceReport("nvidia", gpu, gpu_ok, "" if gpu_ok else "NVML failed")))


def test_file_is_written_grouped_by_source(tmp_path: Path) -> None:
    target = tmp_path / "features.d" / "nodefeatures"
    _, written = featurefile.sync(target, evidence({AVX: "true"}, {GPU: "8"}))
    assert written
    assert target.read_text() == (
        featurefile.HEADER
        + f"# source: cpu\n{AVX}=true\n"
        + f"# source: nvidia\n{GPU}=8\n"
    )
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_unchanged_labels_do_not_touch_the_file(tmp_path: Path) -> None:
    target = tmp_path / "nodefeatures"
    featurefile.sync(target, evidence({AVX: "true"}, {GPU: "8"}))
    before = target.stat().st_mtime_ns, target.stat().st_ino
    _, written = featurefile.sync(target, evidence({AVX: "true"}, {GPU: "8"}))
    assert not written
    assert (target.stat().st_mtime_ns, target.stat().st_ino) == before


def test_failed_source_keeps_its_lines_and_clean_absence_removes_them(tmp_path: Path) -> None:
    target = tmp_path / "nodefeatures"
    featurefile.sync(target, evidence({AVX: "true"}, {GPU: "8"}))
    featurefile.sync(target, evidence({AVX: "true"}, {}, gpu_ok=False))
    assert f"{GPU}=8" in target.read_text()
    featurefile.sync(target, evidence({AVX: "true"}, {}))
    assert GPU not in target.read_text()
    assert f"{AVX}=true" in target.read_text()


def test_replacement_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "nodefeatures"
    featurefile.sync(target, evidence({AVX: "true"}, {}))
    inode = target.stat().st_ino
    featurefile.sync(target, evidence({AVX: "false"}, {}))
    assert target.stat().st_ino != inode  # a new file renamed over the old one
    assert os.listdir(tmp_path) == ["nodefeatures"]


def test_reads_back_lines_nfd_style(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text(f"# source: cpu\n{AVX}=true\n\n# a comment\nbare\n")
    labels, ledger = featurefile.read(target)
    assert labels == {AVX: "true", "bare": ""}
    assert ledger.owners == {AVX: "cpu", "bare": "cpu"}
    assert featurefile.read(tmp_path / "missing") == ({}, featurefile.Ledger({}))


def test_a_line_of_unknown_origin_goes_once_every_source_ran_cleanly(tmp_path: Path) -> None:
    """`# source: unknown` is how keys without a recorded source are written back."""
    target = tmp_path / "nodefeatures"
    target.write_text(featurefile.HEADER + f"# source: unknown\n{F}old.flag=true\n"
                      + f"# source: cpu\n{AVX}=true\n")
    _, ledger = featurefile.read(target)
    assert ledger.owners[F + "old.flag"] is None
    featurefile.sync(target, evidence({AVX: "true"}, {GPU: "8"}))
    assert "old.flag" in target.read_text()  # not every installed source vouched for it
    complete = Evidence(evidence({AVX: "true"}, {GPU: "8"}).reports, complete=True)
    featurefile.sync(target, complete)
    assert "old.flag" not in target.read_text()


FEATURES_D = "etc/kubernetes/node-feature-discovery/features.d"
OS_ID = F + "system-os_release.ID"


def run_file_agent(root: Path, output: Path, passes: int,
                   between: Callable[[int], None] = lambda done: None) -> list[Discovery]:
    """`run --output-file` with the system and local sources for a number of passes."""
    from nodefeatures.cluster.agent import FileAgent, Options

    sources = {"system": SystemSource(), "local": LocalSource()}
    config = build({}, sources)
    host = Host(root=HostRoot(root))
    seen: list[Discovery] = []

    def discover() -> Discovery:
        between(len(seen))
        seen.append(run_pass(host, sources, config))
        if len(seen) == passes:
            runner.stop()
        return seen[-1]

    runner = FileAgent(str(output), discover, list(sources), Options(node="", interval=0.01))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(seen) == passes
    return seen


def local_labels(discovery: Discovery) -> dict[str, str]:
    result = next(r for r in discovery.results if r.name == "local")
    return {k: v.value for k, v in result.labels.items()}


def test_output_file_in_features_d_is_never_read_back(tmp_path: Path) -> None:
    """The default features.d is where NFD and the local source read; we write there too."""
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / FEATURES_D).mkdir(parents=True)
    (root / FEATURES_D / "site").write_text("rack=r1\n")
    output = root / FEATURES_D / "nodefeatures"

    def upgrade(done: int) -> None:
        if done == 2:
            (root / "etc/os-release").write_text("ID=ubuntu\n")

    passes = run_file_agent(root, output, 4, upgrade)
    text = output.read_text()
    assert f"{OS_ID}=ubuntu\n" in text and "debian" not in text
    # The local source saw the admin's file only, never the agent's own lines.
    assert all(local_labels(d) == {F + "rack": "r1"} for d in passes)

    # Another name for the same file (a hard link) is the same output.
    os.link(output, root / FEATURES_D / "copy")
    again = run_file_agent(root, output, 1)
    assert local_labels(again[0]) == {F + "rack": "r1"}
    (root / FEATURES_D / "copy").unlink()


def test_output_left_by_an_earlier_process_is_not_input_either(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=ubuntu\n")
    output = root / FEATURES_D / "nodefeatures"
    output.parent.mkdir(parents=True)
    # What a process that saw debian wrote before it stopped.
    output.write_text(featurefile.HEADER + f"# source: system\n{OS_ID}=debian\n")
    ownoutput._outputs.clear()  # a new process knows nothing of the file yet
    passes = run_file_agent(root, output, 2)
    assert local_labels(passes[0]) == {}
    assert f"{OS_ID}=ubuntu\n" in output.read_text()


def test_a_link_at_the_output_path_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(f"{F}stolen=token\n")
    target = tmp_path / "features.d" / "nodefeatures"
    target.parent.mkdir()
    target.symlink_to(secret)
    assert featurefile.read(target) == ({}, featurefile.Ledger({}))
    featurefile.sync(target, evidence({AVX: "true"}, {}))
    assert not target.is_symlink() and "stolen" not in target.read_text()
    assert secret.read_text() == f"{F}stolen=token\n"


def test_feature_file_labels_outside_the_managed_prefixes_are_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "host"
    (root / FEATURES_D).mkdir(parents=True)
    (root / FEATURES_D / "site").write_text(
        "profile.node.kubernetes.io/tier=gold\nrack=r1\nkubernetes.io/hostname=spoofed\n")
    output = tmp_path / "out" / "nodefeatures"
    with caplog.at_level("WARNING"):
        run_file_agent(root, output, 2)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    skipped = [m for m in messages if "profile.node.kubernetes.io/tier" in m]
    assert len(skipped) == 1 and "managed prefixes" in skipped[0]  # once, not every pass
    assert any("'kubernetes.io/hostname' refused" in m for m in messages)
    assert "rack=r1" in output.read_text() and "tier" not in output.read_text()
