"""Render deploy/ exactly as `kubectl apply -k` does, with the real kustomize, and the
Helm chart under deploy/helm/ as `helm install` does, with the real helm.

The binary is built from Go modules by tests/e2e/build.sh (scripts/test.sh does that)
and found here in this order: $NODEFEATURES_KUSTOMIZE, the build cache, `kustomize`
on PATH. helm comes from tests/helm/build.sh, found likewise ($NODEFEATURES_HELM, the
cache, PATH). Without one the tests that render skip with that reason, and fail under
CI=true.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BUILD_SCRIPT = REPO / "tests" / "e2e" / "build.sh"
HELM_BUILD_SCRIPT = REPO / "tests" / "helm" / "build.sh"
CHART = DEPLOY / "helm" / "nodefeatures"
RELEASE = "nodefeatures"


class KustomizeUnavailable(Exception):
    """No kustomize (or helm) binary was found."""


def _tool(name: str, override_env: str, build_script: Path, build_hint: str) -> Path:
    """A tool's executable: the override, else our cache, else the PATH; raises
    :class:`KustomizeUnavailable` naming the fix."""
    override = os.environ.get(override_env)
    if override:
        if not os.access(override, os.X_OK):
            raise KustomizeUnavailable(f"{override_env}={override} is not executable")
        return Path(override)
    cache_dir = subprocess.run(["bash", str(build_script), "--print-dir"], check=True,
                               capture_output=True, text=True).stdout.strip()
    cached = Path(cache_dir) / name
    if os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise KustomizeUnavailable(f"no {name}: run `{build_hint}`")


def _required(find: Callable[[], Path]) -> Path:
    """The tool, or skip the calling test module (a failure under CI=true)."""
    try:
        return find()
    except KustomizeUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc), allow_module_level=True)


@functools.cache
def kustomize() -> Path:
    return _tool("kustomize", "NODEFEATURES_KUSTOMIZE", BUILD_SCRIPT,
                 f"bash {BUILD_SCRIPT} kustomize")


@functools.cache
def helm() -> Path:
    return _tool("helm", "NODEFEATURES_HELM", HELM_BUILD_SCRIPT, f"bash {HELM_BUILD_SCRIPT}")


def require_kustomize() -> Path:
    return _required(kustomize)


def require_helm() -> Path:
    return _required(helm)


def helm_env() -> dict[str, str]:
    """The environment for helm: its own empty home (no repositories, plugins or user
    settings of whoever runs the tests)."""
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"nodefeatures-helm-{os.getuid()}"
    return {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm with its own empty home."""
    result = subprocess.run([str(require_helm()), *args], capture_output=True, text=True,
                            timeout=120, env=helm_env())
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render_chart(*values: str) -> list[dict[str, Any]]:
    """All objects `helm template` emits for the chart, with these --set/-f arguments."""
    out = run_helm("template", RELEASE, str(CHART), *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


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
