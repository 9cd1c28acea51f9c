"""What the Dockerfile's builder stage does, without a container engine.

Builds the wheel from exactly the files the Dockerfile copies, installs it into a fresh
venv with its dependencies from the package index (pip's cache is reused, so reruns are
quick), and runs the installed command from outside the repository. This catches what
an editable install hides: a module, data file or entry point missing from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from manifests import REPO

pytestmark = pytest.mark.slow

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
MANAGED_PREFIXES = ("feature.node.kubernetes.io/", "nvidia.com/")


def run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> str:
    # No PYTHONPATH or venv of the caller may leak into the clean install.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def builder_copies() -> list[str]:
    """The sources of the builder stage's COPY instructions."""
    sources = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's bin directory, built as the Dockerfile builds /opt/nodefeatures."""
    work = tmp_path_factory.mktemp("image")
    context = work / "src"
    context.mkdir()
    for source in builder_copies():
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, context / source)
    wheels, venv = work / "wheels", work / "venv"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, "."], context)
    run([sys.executable, "-m", "venv", venv], work)
    (wheel,) = wheels.glob("nodefeatures-*.whl")
    run([venv / "bin" / "pip", "install", "--disable-pip-version-check", wheel], work)
    run([venv / "bin" / "pip", "uninstall", "--yes", "pip", "setuptools"], work)
    return venv / "bin"


def test_installed_command_reports_the_package_version(installed: Path, tmp_path: Path) -> None:
    output = run([installed / "nodefeatures", "--version"], tmp_path)
    assert output.strip() == f"nodefeatures, version {PYPROJECT['project']['version']}"


def test_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    location = run([installed / "python", "-c",
                    "import nodefeatures; print(nodefeatures.__file__)"], tmp_path).strip()
    assert Path(location).is_relative_to(installed.parent), location
    assert (Path(location).parent / "py.typed").is_file(), "package data shipped"


def test_installed_sources_are_the_declared_entry_points(installed: Path, tmp_path: Path) -> None:
    declared = set(PYPROJECT["project"]["entry-points"]["nodefeatures.sources"])
    listed = {line.split()[0] for line in
              run([installed / "nodefeatures", "sources"], tmp_path).splitlines() if line}
    assert listed == declared


def test_installed_dump_prints_labels_as_json(installed: Path, tmp_path: Path) -> None:
    labels = json.loads(run([installed / "nodefeatures", "dump", "--format", "json"], tmp_path))
    assert isinstance(labels, dict)
    for key, value in labels.items():
        assert key.startswith(MANAGED_PREFIXES), key
        assert isinstance(value, str) and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?", value)
    if Path("/etc/os-release").is_file():
        assert "feature.node.kubernetes.io/system-os_release.ID" in labels
