"""Hand-built host trees for source tests: files, sysfs-style symlinks, one-call runs."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.labels import DEFAULT_PREFIX
from nodefeatures.discovery.run import SourceResult, run_source
from nodefeatures.discovery.source import Host, Source


class HostTree:
    """A host root directory under construction."""

    def __init__(self, root: Path, proc: Path | None = None) -> None:
        self.root = root
        self.proc = proc
        root.mkdir(parents=True, exist_ok=True)

    def file(self, rel: str, content: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def dir(self, rel: str) -> Path:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def link(self, rel: str, target: str) -> None:
        """A symlink at `rel` holding `target` verbatim, as sysfs links are stored."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)

    def host(self) -> Host:
        return Host(root=HostRoot(self.root, proc=self.proc))

    def run(self, source: Source, options: Mapping[str, Any] | None = None,
            host: Host | None = None) -> SourceResult:
        """One discovery pass of `source`, with `options` validated like a config file."""
        data = {"sources": {source.name: dict(options)}} if options else {}
        config = build(data, {source.name: source})
        return run_source(host or self.host(), source, config)

    def labels(self, source: Source, options: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Label values keyed by the name the source returned (prefix removed)."""
        return short_labels(source, self.run(source, options))


def short_labels(source: Source, result: SourceResult) -> dict[str, str]:
    prefix = f"{DEFAULT_PREFIX}/{source.name}-"
    return {key.removeprefix(prefix): label.value for key, label in result.labels.items()}


def uncatalogued(source: Source, names: Iterable[str]) -> list[str]:
    """Label names (prefix removed) that match no catalogue row of `source`."""
    patterns = [_as_glob(doc.name) for doc in source.catalogue]
    return [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _as_glob(catalogue_name: str) -> str:
    # `config.<OPT>` stands for a family of labels: any text in place of `<...>`.
    out, inside = [], False
    for ch in catalogue_name:
        if ch == "<":
            inside = True
            out.append("*")
        elif ch == ">":
            inside = False
        elif not inside:
            out.append(ch)
    return "".join(out)
