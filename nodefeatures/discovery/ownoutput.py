"""Which files are the agent's own `--output-file`, so discovery never reads them back.

The output file may sit in the directory the local source reads (NFD's default features.d,
where NFD picks it up). Read back, every label the agent wrote would be reported again by
`local`, which outranks the built-in sources, and could never change or go away. A file is
the agent's own output when it is the file this process keeps at an output path (the same
device and inode, so another name for it counts too), or when it starts with `MARK` (a file
an earlier process wrote, met before this one has written anything).

Kept apart from featurefile so the local source can ask without importing the reconcile
rules.
"""

from __future__ import annotations

import os
from pathlib import Path

MARK = "# Written by nodefeatures"
_MARK_BYTES = MARK.encode()

# Output path -> (device, inode) of the file found or written there by this process.
_outputs: dict[str, tuple[int, int]] = {}


def is_own_output(data: bytes, status: os.stat_result) -> bool:
    """Whether a file read as input (its bytes and status) is in fact the agent's output."""
    if data.startswith(_MARK_BYTES):
        return True
    identity = (status.st_dev, status.st_ino)
    for path, known in list(_outputs.items()):
        if known != identity:
            continue
        # A replaced file's inode may be reused by someone else's file: only the file
        # that is at the output path now counts.
        try:
            now = os.lstat(path)
        except OSError:
            continue
        if (now.st_dev, now.st_ino) == identity:
            return True
    return False


def remember(target: Path) -> None:
    """Record the file now at an output path as the agent's own."""
    try:
        status = os.lstat(target)
    except OSError:
        _outputs.pop(str(target), None)
        return
    _outputs[str(target)] = (status.st_dev, status.st_ino)
