"""`--output-file`: publish labels as an NFD features.d file instead of patching the Node.

NFD's local source reads `key=value` lines and skips `#` comments (except `# +`
directives), so the file names the source of each block in a `# source: NAME` comment.
That comment is this file's ledger: the same reconcile rules as on a Node keep a failed
source's labels and remove a label only on positive evidence. The file is replaced by an
atomic rename of a hidden temporary file (NFD ignores dot-files), and only when its
content would change.

The file may sit in the directory the local source reads (NFD's default features.d, where
NFD picks it up). The agent must never read its own output back as input, or every label
it wrote would be reported again by `local`, which outranks the built-in sources, and
could never change or go away. So the local source skips a file that `is_own_output`
recognises (nodefeatures.discovery.ownoutput).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from nodefeatures.cluster.reconcile import (
    DEFAULT_MANAGED_PREFIXES,
    Evidence,
    Ledger,
    Plan,
    apply_to,
    plan,
)
from nodefeatures.discovery.ownoutput import MARK, remember

HEADER = MARK + "; each '# source:' block is one discovery source.\n"
_SOURCE_MARK = "# source:"
MAX_READ = 1024 * 1024


def _read_own(target: Path) -> str | None:
    """The output file's text, bounded; None when absent or not a regular file.

    A link at the output path is not followed: whoever may write in features.d must not
    make the agent read a file elsewhere and write it back as labels.
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a link: replaced by our file on the next write
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_READ)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


_UNKNOWN = "unknown"


def read(path: str | os.PathLike[str]) -> tuple[dict[str, str], Ledger]:
    """Labels and their sources from a file we wrote; a missing file is empty."""
    text = _read_own(Path(path))
    if text is None:
        return {}, Ledger({})
    labels: dict[str, str] = {}
    owners: dict[str, str | None] = {}
    source: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(_SOURCE_MARK):
            # `unknown` is how render writes keys with no recorded source.
            source = line[len(_SOURCE_MARK):].strip()
            source = None if source in ("", _UNKNOWN) else source
            continue
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        labels[key] = value
        owners[key] = source
    return labels, Ledger(owners)


def render(labels: dict[str, str], ledger: Ledger) -> str:
    """The file content: blocks per source, sorted, deterministic."""
    blocks: dict[str, list[str]] = {}
    for key in sorted(labels):
        if key in ledger.owners:
            owner = ledger.owners[key] or _UNKNOWN
            blocks.setdefault(owner, []).append(f"{key}={labels[key]}")
    parts = [HEADER]
    for owner in sorted(blocks):
        parts.append(f"{_SOURCE_MARK} {owner}\n" + "".join(f"{line}\n" for line in blocks[owner]))
    return "".join(parts)


def sync(path: str | os.PathLike[str], evidence: Evidence,
         prefixes: Iterable[str] = DEFAULT_MANAGED_PREFIXES) -> tuple[Plan, bool]:
    """Bring the file in line with discovery; returns the plan and whether it was written."""
    target = Path(path)
    labels, ledger = read(target)
    decided = plan(evidence, labels, ledger.encode(), prefixes)
    after = {k: v for k, v in apply_to(labels, decided).items() if k in decided.ledger.owners}
    content = render(after, decided.ledger)
    if _read_own(target) == content:
        remember(target)
        return decided, False
    write_atomic(target, content)
    remember(target)
    return decided, True


def write_atomic(target: Path, content: str) -> None:
    """Write via a hidden temporary file in the same directory and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
