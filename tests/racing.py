"""A file or directory that keeps turning into a symlink, for confinement race tests."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Flipper:
    """Swaps a file or directory of the root for a link to outside it, over and over."""

    def __init__(self, path: Path, outside: Path) -> None:
        self.path, self.outside = path, str(outside)
        self.keep = path.with_name(".keep")
        self.spare = path.with_name(".spare")
        self.directory = path.is_dir()
        if not self.directory:
            os.link(path, self.keep)
        self.stop = threading.Event()
        self.flips = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            if self.directory:  # a directory cannot be renamed over a link
                os.rename(self.path, self.keep)
                os.symlink(self.outside, self.path)
                os.unlink(self.path)
                os.rename(self.keep, self.path)
            else:  # always present: each state is renamed over the other
                os.symlink(self.outside, self.spare)
                os.rename(self.spare, self.path)
                os.link(self.keep, self.spare)
                os.rename(self.spare, self.path)
            self.flips += 1

    def __enter__(self) -> Flipper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
