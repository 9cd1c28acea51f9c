"""`run --output-file`: an NFD features.d file kept by the same reconcile rules."""

from __future__ import annotations

import os
from pathlib import Path

from nodefeatures.cluster import featurefile
from nodefeatures.cluster.reconcile import Evidence, SourceReport

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
