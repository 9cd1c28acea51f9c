"""Render deploy/ exactly as `kubectl apply -k` does: with the real kustomize.

The binary is built from Go modules by tests/e2e/build.sh (scripts/test.sh does that)
and found here in this order: $NODEFEATURES_KUSTOMIZE, the build cache, `kustomize`
on PATH. Without one the tests that render skip with that reason, and fail under
CI=true.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BUILD_SCRIPT = REPO / "tests" / "e2e" / "build.sh"


class KustomizeUnavailable(Exception):
    """No kustomize binary was found."""


@functools.cache
def kustomize() -> Path:
    """The kustomize executable; raises :class:`KustomizeUnavailable` naming the fix."""
    override = os.environ.get("NODEFEATURES_KUSTOMIZE")
    if override:
        if not os.access(override, os.X_OK):
            raise KustomizeUnavailable(f"NODEFEATURES_KUSTOMIZE={override} is not executable")
        return Path(override)
    cache_dir = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-dir"], check=True,
                               capture_output=True, text=True).stdout.strip()
    cached = Path(cache_dir) / "kustomize"
    if os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("kustomize")
    if on_path:
        return Path(on_path)
    raise KustomizeUnavailable(f"no kustomize: run `bash {BUILD_SCRIPT} kustomize`")


def require_kustomize() -> Path:
    """kustomize, or skip the calling test module (a failure under CI=true)."""
    try:
        return kustomize()
    except KustomizeUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc), allow_module_level=True)


def render(directory: Path = DEPLOY) -> list[dict[str, Any]]:
    """All objects `kustomize build directory` emits, in its order."""
    result = subprocess.run([str(require_kustomize()), "build", str(directory)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of one manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` called `name`."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name!r}, found {len(found)}")
    return found[0]
