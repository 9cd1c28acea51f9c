"""The configuration of a running agent: reloaded when its files change, never half-applied.

`LiveConfig` holds the configuration in force. When the config file (or GFD's) changes,
most often because a ConfigMap update swapped the mounted `..data` directory, the whole
configuration is loaded and validated again. A valid one replaces the old one for the
next pass; an invalid one is rejected as a whole, the previous one stays in force, and
the rejection is reported: an error log line, a `ConfigRejected` Warning Event on the
Node, `nodefeatures_config_rejected` 1 and `nodefeatures_config_reloads_total{result=
"rejected"}`.

`Reactor` ties the pieces together for `run`: a `ChangeWatcher` on features.d, custom.d
and the config files' directories; a change to a feature or rule file triggers a pass at
once (the agent's `poke`), a change to a config file a reload and then a pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.watcher import ChangeWatcher, Target
from nodefeatures.discovery.config import DEFAULT_PATH, MAX_FILE_BYTES, Config, ConfigError
from nodefeatures.discovery.hostroot import HostRoot

log = logging.getLogger(__name__)

FEATURES, CONFIG = "features", "config"


class LiveConfig:
    """The configuration in force, replaced only by a valid new one."""

    def __init__(self, load: Callable[[], Config], config: Config, files: Iterable[str],
                 metrics: Metrics | None = None,
                 on_applied: Callable[[Config], None] = lambda config: None) -> None:
        self._load = load
        self.config = config
        self.files = tuple(files)  # what a reload reads: a change to one is a new config
        self.on_applied = on_applied
        self.post_event: Callable[[str, str, str], None] = lambda kind, reason, msg: None
        self.rejected: str | None = None  # why the files on disk are not in force
        self._said = set(config.notices)
        self._fingerprint = self._digest()
        self._metrics = metrics
        if metrics is not None:
            metrics.config_rejected.set(0)

    def reload(self) -> bool:
        """Load the files again if they changed; True when a new configuration is in force."""
        fingerprint = self._digest()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            config = self._load()
        except ConfigError as exc:
            message = (f"the new configuration is rejected as a whole and the previous one "
                       f"stays in force: {exc}")
            self.rejected = str(exc)
            log.error("%s", message, extra={"code": "ConfigRejected"})
            self._count("rejected", 1)
            self.post_event("Warning", "ConfigRejected", message[:1000])
            return False
        was_rejected, self.rejected = self.rejected, None
        self.config = config
        for notice in config.notices:
            if notice not in self._said:
                self._said.add(notice)
                log.info("%s", notice)
        log.info("configuration reloaded from %s", ", ".join(self.files) or "defaults")
        self._count("applied", 0)
        if was_rejected is not None:
            self.post_event("Normal", "ConfigApplied",
                            "a valid configuration is in force again")
        self.on_applied(config)
        return True

    def _count(self, result: str, rejected: int) -> None:
        if self._metrics is not None:
            self._metrics.config_reloads.labels(result).inc()
            self._metrics.config_rejected.set(rejected)

    def _digest(self) -> bytes:
        """What the files hold now: equal digests, nothing to reload (an event on the
        directory that did not change the file, or the agent's own touch)."""
        digest = hashlib.sha256()
        for name in self.files:
            digest.update(os.fsencode(name) + b"\0")
            try:
                with open(name, "rb") as stream:
                    digest.update(stream.read(MAX_FILE_BYTES + 1))
            except OSError as exc:
                digest.update(f"unreadable: {exc.errno}".encode())
            digest.update(b"\0")
        return digest.digest()


def config_files(config_path: str | None, gfd_path: str | None) -> list[str]:
    """The files a configuration comes from: the default config file even when absent
    (creating it is a change), GFD's file when named."""
    files = [config_path or DEFAULT_PATH]
    if gfd_path:
        files.append(gfd_path)
    return [os.path.abspath(f) for f in files]


def targets(root: HostRoot, config: Config, sources: Mapping[str, Any],
            files: Iterable[str]) -> list[Target]:
    """What to watch: the features.d and custom.d directories the running sources read
    (through the host root, as they do), and each config file's directory."""
    found: list[Target] = []
    running = set(config.enabled(list(sources))) | set(config.discovers(list(sources)))
    if "local" in sources and "local" in running:
        directory = config.options("local").get("directory")
        if isinstance(directory, str) and directory.strip("/ "):
            found.append(Target(root, directory, FEATURES))
    if "custom" in sources and "custom" in config.enabled(list(sources)):
        from nodefeatures.sources.custom.files import DIRECTORIES

        found += [Target(root, d, FEATURES, subdirectories=True) for d in DIRECTORIES]
    plain = HostRoot("/")
    for name in files:
        path = Path(name)
        found.append(Target(plain, str(path.parent), CONFIG, names=frozenset({path.name})))
        real = Path(os.path.realpath(path))
        if real.parent != path.parent and path.parent not in real.parents:
            # A link to a file elsewhere (not a ConfigMap's, whose target is inside).
            found.append(Target(plain, str(real.parent), CONFIG,
                                names=frozenset({real.name})))
    return found


class Reactor:
    """Watches the inputs of a running agent and makes it act on a change at once."""

    def __init__(self, runner: Any, live: LiveConfig, root: HostRoot,
                 sources: Mapping[str, Any], *, settle: float = 0.15,
                 latest: float = 0.5) -> None:
        self.runner = runner
        self.live = live
        # Its own HostRoot: the loop's refreshes its descriptors each pass, and a
        # descriptor closed under the other thread could be reused for another directory.
        self.root = HostRoot(root.root, proc=root.proc)
        self.sources = sources
        if hasattr(runner, "post_event"):
            live.post_event = runner.post_event
        self.watcher = ChangeWatcher(self._changed, settle=settle, latest=latest)

    def start(self) -> bool:
        return self.watcher.start(self._targets())

    def stop(self) -> None:
        self.watcher.stop()

    def _targets(self) -> list[Target]:
        return targets(self.root, self.live.config, self.sources, self.live.files)

    def _changed(self, kinds: set[str]) -> None:
        poke = FEATURES in kinds
        if CONFIG in kinds and self.live.reload():
            self.watcher.retarget(self._targets())  # the new config may move features.d
            poke = True
        if poke:
            log.debug("inputs changed (%s): running a pass now", ", ".join(sorted(kinds)))
            self.runner.poke()
