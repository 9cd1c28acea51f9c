"""Container images for the e2e cluster, built without a container engine or registry.

No registry is reachable from the test machine, so both images the node runs are made
here and imported into containerd as OCI archives:

* the sandbox ("pause") image: one static binary built from tests/e2e/bins/pause;
* the agent image: a minimal Debian rootfs (mmdebstrap, from Debian's packages) as one
  layer, and the project's virtual environment as a second layer.  The venv is made by
  the rootfs's own Python inside a chroot and filled offline from wheels that pip
  downloads on the host (pip inside the chroot has no CA bundle to verify TLS with).

The Debian layer is cached by its package list; the venv layer by a hash of the
project's sources, so editing the package rebuilds only the small layer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3-venv brings ensurepip, which the venv step needs; nothing else is installed.
PACKAGES = ("python3", "python3-venv")
AGENT_USER = "65532:65532"
VENV = "/opt/nodefeatures"

PAUSE_IMAGE = "localhost/nodefeatures-e2e/pause:1"


def cache_dir() -> Path:
    root = os.environ.get("NODEFEATURES_CACHE") or str(Path.home() / ".cache" / "nodefeatures")
    path = Path(root) / "e2e-images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log(message: str) -> None:
    print(f"e2e images: {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` that replaces it only on success."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_oci_archive(
    out: Path, name: str, layers: list[Path], config: dict[str, object]
) -> None:
    """Pack uncompressed layer tars into an OCI image-layout tar that ``ctr import`` takes.

    Layers are stored gzip-compressed (what every runtime accepts); the config's diff_ids
    are the digests of the uncompressed tars.
    """
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        blobs = Path(tmp) / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_descs, diff_ids = [], []
        for layer in layers:
            diff_ids.append("sha256:" + _sha256(layer))
            packed = Path(tmp) / "layer.tar.gz"
            with layer.open("rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            digest = _sha256(packed)
            size = packed.stat().st_size
            packed.rename(blobs / digest)
            layer_descs.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{digest}",
                    "size": size,
                }
            )
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }

        def blob(obj: object) -> dict[str, object]:
            data = json.dumps(obj, sort_keys=True).encode()
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return {"digest": f"sha256:{digest}", "size": len(data)}

        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **blob(image_config)}
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        }
        manifest_desc = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **blob(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
            },
        }
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_desc],
        }
        Path(tmp, "index.json").write_text(json.dumps(index))
        Path(tmp, "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        with _atomic(out) as partial, tarfile.open(partial, "w") as archive:
            for entry in ("oci-layout", "index.json", "blobs"):
                archive.add(Path(tmp) / entry, arcname=entry)


def pause_archive(bin_dir: Path) -> Path:
    """The sandbox image archive, rebuilt when the pause binary changes."""
    binary = bin_dir / "pause"
    key = _sha256(binary)[:16]
    out = cache_dir() / f"pause-{key}.oci.tar"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            info = tar.gettarinfo(str(binary), arcname="pause")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755
            with binary.open("rb") as handle:
                tar.addfile(info, handle)
        write_oci_archive(
            out, PAUSE_IMAGE, [layer], {"Entrypoint": ["/pause"], "User": "65535:65535"}
        )
    return out


def _base_rootfs_path() -> Path:
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)} v1".encode()).hexdigest()[:16]
    return cache_dir() / f"debian-{SUITE}-{key}.tar"


def base_rootfs_cached() -> bool:
    return _base_rootfs_path().exists()


def _base_rootfs() -> Path:
    """The Debian layer: a minimal rootfs with Python, cached by what it contains."""
    out = _base_rootfs_path()
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is needed to build the agent image "
                           "(apt-get install mmdebstrap)")
    _log(f"building the Debian {SUITE} rootfs with mmdebstrap (once) ...")
    with _atomic(out) as partial:
        subprocess.run(
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=essential",
                "--include=" + ",".join(PACKAGES),
                "--aptopt=Apt::Install-Recommends false",
                # Documentation and translations only cost image size.
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--format=tar",
                SUITE,
                str(partial),
                MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def _source_key() -> str:
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml", REPO / "README.md", Path(__file__)]
    files += sorted(p for p in (REPO / "nodefeatures").rglob("*") if p.is_file()
                    and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def agent_image_name() -> str:
    return f"localhost/nodefeatures-e2e/agent:{_source_key()}"


def agent_archive() -> Path:
    """The agent image archive for the current sources, built when missing."""
    key = _source_key()
    out = cache_dir() / f"agent-{key}.oci.tar"
    if out.exists():
        return out
    base = _base_rootfs()
    _log("building the agent's venv layer ...")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        root, wheels = Path(tmp) / "rootfs", Path(tmp) / "wheels"
        root.mkdir()
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
             "--wheel-dir", str(wheels), str(REPO)],
            check=True,
        )
        subprocess.run(["tar", "-xf", str(base), "-C", str(root)], check=True)
        shutil.copytree(wheels, root / "wheels")
        chroot_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}

        def in_chroot(*argv: str) -> None:
            subprocess.run(["chroot", str(root), *argv], check=True, env=chroot_env)

        in_chroot("python3", "-m", "venv", VENV)
        # pip compiles bytecode on install, so the read-only root never needs a write.
        in_chroot(f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links=/wheels",
                  "--disable-pip-version-check", "nodefeatures")
        in_chroot(f"{VENV}/bin/pip", "uninstall", "-q", "--yes", "pip", "setuptools")
        layer = Path(tmp) / "venv.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", str(root), "-cf",
             str(layer), VENV.lstrip("/")],
            check=True,
        )
        write_oci_archive(
            out,
            agent_image_name(),
            [base, layer],
            {
                "User": AGENT_USER,
                "Entrypoint": ["nodefeatures"],
                "Cmd": ["run"],
                "Env": [
                    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "PYTHONDONTWRITEBYTECODE=1",
                    "PYTHONUNBUFFERED=1",
                ],
            },
        )
    return out
