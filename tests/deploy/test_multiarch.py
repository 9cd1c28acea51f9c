"""The image builds for linux/amd64 and linux/arm64 from the one Dockerfile, and runs as
uid 65532 on both (docs/install.md, "A multi-arch image").

No container engine or registry is reachable here, so what can be checked is checked
without one:

* the Dockerfile names no architecture: no `--platform` pin, no arch-specific file or
  package, `USER 65532:65532` in the final stage;
* the agent's own wheel is pure Python, and every dependency pip installs in the builder
  stage has a wheel for CPython 3.11 on both manylinux x86_64 and aarch64, so neither
  build needs a compiler (the slim image has none);
* an arm64 root filesystem made the way tests/e2e makes the amd64 one (Debian's own
  arm64 packages, by mmdebstrap), with the agent's venv filled from the aarch64 wheels,
  runs the agent under qemu-user as uid 65532: its imports (libyaml's C extension
  included) and a discovery pass over the arm64 fixture.

Not checked here: that the python:3.11-slim-trixie image itself has an arm64 variant
(its registry is out of reach; the official image is published for both), and a real
`docker buildx` run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from manifests import REPO

DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FIXTURE = REPO / "tests" / "fixtures" / "arm64-neoverse-n1-ubuntu2404"
SUITE = "bookworm"  # its python3 is 3.11, the Dockerfile's Python
MIRROR = "http://deb.debian.org/debian"
PYTHON = "3.11"
AGENT = "65532:65532"
VENV = "/opt/nodefeatures"

# ELF e_machine of each architecture.
MACHINES = {"x86_64": 62, "aarch64": 183}
PLATFORMS = {"x86_64": "amd64", "aarch64": "arm64"}


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined, by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            found.append([])
        found[-1].append((keyword.upper(), rest.strip()))
    return found


def test_the_dockerfile_names_no_architecture() -> None:
    every = [item for stage in stages() for item in stage]
    for keyword, rest in every:
        assert not re.search(r"amd64|x86[_-]64|aarch64|arm64|i386", rest, re.I), (keyword, rest)
        if keyword == "FROM":
            # A pinned platform would build one architecture's base for both.
            assert "--platform" not in rest, rest
            assert "@sha256:" not in rest, "a digest pins one architecture's manifest"
    final = stages()[-1]
    assert ("USER", AGENT) in final
    assert [k for k, _ in final].count("USER") == 1
    # No RUN in the final stage: nothing there executes, so nothing there can differ
    # between architectures but the base image.
    assert "RUN" not in {k for k, _ in final}


def test_the_agents_own_code_is_pure_python() -> None:
    compiled = [p for p in (REPO / "nodefeatures").rglob("*")
                if p.suffix in {".c", ".cc", ".cpp", ".pyx", ".so", ".rs"}]
    assert compiled == []
    assert "ext-modules" not in PYPROJECT.get("tool", {}).get("setuptools", {})


def _download(machine: str, into: Path) -> list[Path]:
    """The wheels pip picks for the project's dependencies on CPython 3.11 / `machine`."""
    platforms = [f"--platform=manylinux{tag}_{machine}"
                 for tag in ("2014", "_2_17", "_2_28", "_2_34")]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", *platforms, f"--python-version={PYTHON}",
         "--implementation=cp", f"--abi=cp{PYTHON.replace('.', '')}", "--dest", str(into),
         *PYPROJECT["project"]["dependencies"]],
        capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        if "Could not find a version" in result.stderr or "No matching" in result.stderr:
            pytest.fail(f"a dependency has no {machine} wheel:\n{result.stderr}")
        reason = f"pip download for {machine} failed (no package index?):\n{result.stderr}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sorted(into.glob("*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_every_dependency_has_a_wheel_for_both_architectures(machine: str,
                                                             tmp_path: Path) -> None:
    wheels = _download(machine, tmp_path)
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in names, f"{name} missing from {sorted(names)}"
    other = next(m for m in MACHINES if m != machine)
    for wheel in wheels:
        platform_tag = wheel.stem.rsplit("-", 1)[1]
        assert platform_tag == "any" or machine in platform_tag, wheel.name
        assert other not in platform_tag, wheel.name
        # A binary wheel's shared objects are for this architecture only.
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith(".so") or ".so." in member:
                    header = archive.read(member)[:20]
                    assert header[:4] == b"\x7fELF", member
                    assert int.from_bytes(header[18:20], "little") == MACHINES[machine], (
                        wheel.name, member)


# -- the arm64 root filesystem ---------------------------------------------------------


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _cache() -> Path:
    root = os.environ.get("NODEFEATURES_CACHE") or str(Path.home() / ".cache" / "nodefeatures")
    path = Path(root) / "multiarch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _arm64_base() -> Path:
    """Debian's arm64 python3 unpacked (mmdebstrap's extract variant runs no maintainer
    script, so no emulation is needed to make it), cached as a tar."""
    key = hashlib.sha256(f"{SUITE} arm64 python3 python3-venv v1".encode()).hexdigest()[:16]
    out = _cache() / f"debian-{SUITE}-arm64-{key}.tar"
    if out.exists():
        return out
    partial = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        subprocess.run(
            ["mmdebstrap", "--mode=root", "--arch=arm64", "--variant=extract",
             "--include=python3,python3-venv", "--aptopt=Apt::Install-Recommends false",
             "--dpkgopt=path-exclude=/usr/share/doc/*",
             "--dpkgopt=path-exclude=/usr/share/man/*",
             "--dpkgopt=path-exclude=/usr/share/locale/*",
             "--format=tar", SUITE, str(partial), MIRROR],
            check=True, capture_output=True, timeout=600)
        os.replace(partial, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return out


def _chroot(root: Path, *argv: str, user: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run an aarch64 program in `root` through qemu-user (named explicitly: no binfmt
    registration is needed)."""
    spec = [f"--userspec={user}"] if user else []
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return subprocess.run([chroot, *spec, str(root), "/usr/bin/qemu-aarch64-static", *argv],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                               "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.fixture(scope="module")
def arm64_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    _need(os.geteuid() == 0, "the arm64 root filesystem needs root (chroot, mmdebstrap)")
    _need(shutil.which("mmdebstrap") is not None, "no mmdebstrap (apt-get install mmdebstrap)")
    qemu = shutil.which("qemu-aarch64-static")
    _need(qemu is not None, "no qemu-aarch64-static (apt-get install qemu-user-static)")
    assert qemu is not None
    root = tmp_path_factory.mktemp("arm64") / "root"
    root.mkdir()
    with tarfile.open(_arm64_base()) as archive:
        archive.extractall(root, filter="fully_trusted")
    shutil.copy2(qemu, root / "usr" / "bin" / "qemu-aarch64-static")
    # The builder stage, for arm64: a venv of the image's Python, holding the agent's
    # wheel and the aarch64 wheels of its dependencies, installed by root.
    made = _chroot(root, f"/usr/bin/python{PYTHON}", "-m", "venv", "--without-pip", VENV)
    assert made.returncode == 0, made.stderr
    wheels = tmp_path_factory.mktemp("wheels")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--wheel-dir", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    _download("aarch64", wheels)
    site = root / VENV.lstrip("/") / "lib" / f"python{PYTHON}" / "site-packages"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", str(wheels), "--only-binary=:all:",
         "--platform=manylinux2014_aarch64", f"--python-version={PYTHON}",
         "--implementation=cp", "--no-compile", "--target", str(site), "nodefeatures"],
        capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr
    fixture = root / "fixture"
    shutil.copytree(FIXTURE, fixture, symlinks=True)
    yield root


def _elf_machine(path: Path) -> int | None:
    with path.open("rb") as handle:
        header = handle.read(20)
    if header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little")


@pytest.mark.slow
def test_the_arm64_venv_holds_only_aarch64_code_readable_by_the_agents_uid(
        arm64_root: Path) -> None:
    venv = arm64_root / VENV.lstrip("/")
    binaries = {}
    for path in venv.rglob("*"):
        if path.is_file() and not path.is_symlink():
            machine = _elf_machine(path)
            if machine is not None:
                binaries[path.name] = machine
            # uid 65532 owns nothing there: it must be able to read every file.
            assert path.stat().st_mode & 0o004, path
    assert binaries, "no compiled extension at all: libyaml's was expected"
    assert set(binaries.values()) == {MACHINES["aarch64"]}, binaries
    assert _elf_machine(arm64_root / "usr" / "bin" / f"python{PYTHON}") == MACHINES["aarch64"]


@pytest.mark.slow
def test_the_agent_runs_on_arm64_as_uid_65532(arm64_root: Path) -> None:
    python = f"{VENV}/bin/python"
    probe = _chroot(arm64_root, python, "-c",
                    "import os, platform, yaml, kubernetes.client, prometheus_client, "
                    "nodefeatures.cli; print(os.getuid(), os.getgid(), platform.machine(), "
                    "yaml.__with_libyaml__)", user=AGENT)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["65532", "65532", "aarch64", "True"]
    dump = _chroot(arm64_root, python, "-m", "nodefeatures", "dump", "--fixture", "/fixture",
                   user=AGENT)
    assert dump.returncode == 0, dump.stderr
    assert "feature.node.kubernetes.io/cpu-cpuid.ASIMD" in dump.stdout
    assert "feature.node.kubernetes.io/kernel-version.full" in dump.stdout
