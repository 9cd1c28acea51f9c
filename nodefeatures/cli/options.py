"""What several commands share: the host choice, its options, and how they fail and report."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from nodefeatures.discovery.config import Config
    from nodefeatures.discovery.run import Discovery
    from nodefeatures.discovery.source import Host, Source

log = logging.getLogger("nodefeatures")


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("nodefeatures: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    _BASE_LEVEL.clear()  # a new command: its own level is the base


DEBUG_ENV = "NODEFEATURES_DEBUG"


def debugging(ctx: click.Context | None = None) -> bool:
    """Whether --debug or NODEFEATURES_DEBUG asks for tracebacks."""
    root = (ctx or click.get_current_context()).find_root()
    return bool(root.params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit 2 (or `code`): the command itself cannot do its job."""
    # One line whatever the message holds: a newline must not forge a second one.
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    try:
        click.echo(f"nodefeatures: error: {message}", err=True)
    except (OSError, ValueError):
        # stderr is full or closed: the exit status still has to say "error", and the
        # flush at exit must not fail again (that would turn it into 120).
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
    sys.exit(code)


@dataclass(frozen=True)
class HostChoice:
    """What host to read and which sources run, as chosen on the command line."""

    root: str
    proc: str | None
    config_path: str | None
    only: tuple[str, ...]
    mig_strategy: str | None
    gfd_config_path: str | None = None
    # Sources that never run (--skip-source); the labels they published stay, since no
    # pass of theirs says a feature is gone.
    skip: tuple[str, ...] = ()

    def prepare(self) -> tuple[dict[str, Source], Config]:
        """The sources that run and the validated config; exits 2 when either is unusable.
        A skipped source is no part of the first, and its config section is still
        checked."""
        from nodefeatures.discovery import config as configuration

        sources = self._sources()
        for option, path in (("--config", self.config_path),
                             ("--gfd-config", self.gfd_config_path)):
            if path == "":
                fail(f"{option}: the path is empty")
        try:
            cfg = self.load_config(sources)
        except configuration.ConfigError as exc:
            fail(str(exc))
        for notice in cfg.notices:
            log.info("%s", notice)
        if not self.only:
            _warn_unknown_label_sources(cfg)
        if self.mig_strategy is not None and "nvidia" in self.skip:
            log.warning("--mig-strategy has no effect: the nvidia source is skipped")
        elif self.mig_strategy is not None and "nvidia" not in sources:
            log.warning("--mig-strategy has no effect: the nvidia source is not installed")
        apply_log_level(cfg)
        return {n: s for n, s in sources.items() if n not in self.skip}, cfg

    def _sources(self) -> dict[str, Source]:
        """The sources --source selects (every installed one without it), the skipped
        ones included; exits 2 for an unknown or unloadable --source."""
        from nodefeatures.discovery.run import load_sources

        if not self.only:
            sources, errors = load_sources(None)
            for error in errors:
                log.warning("%s", error)
            return sources
        sources, errors = load_sources(self.only)
        if errors:
            fail("; ".join(errors))
        if set(self.only) <= set(self.skip):
            fail("--skip-source skips every --source: no source would run")
        return sources

    @functools.cached_property
    def _every_source(self) -> dict[str, Source]:
        """Every installed source that loads: one config file serves agents that run
        different sources (deploy/gpu's two), so each checks the sections of all."""
        from nodefeatures.discovery.run import load_sources

        sources, errors = load_sources(None)
        for error in errors:
            log.debug("%s", error)
        return sources

    def load_config(self, sources: dict[str, Source]) -> Config:
        """The configuration in force with this command line's overrides, which win over
        the files and GFD's environment; raises ConfigError. Also what a reload runs."""
        from nodefeatures.discovery import effective

        known = {**self._every_source, **sources}
        cfg = effective.load(self.config_path, known, gfd_path=self.gfd_config_path)
        if self.only:
            cfg.core["labelSources"] = list(self.only)
            cfg.core["featureSources"] = ["all"]
        if self.skip:
            # NFD's own way to switch a source off, so that the config in force says it.
            for option in ("labelSources", "featureSources"):
                cfg.core[option] = [*cfg.core[option], *(f"-{n}" for n in self.skip)]
        if self.mig_strategy is not None and "nvidia" in cfg.sources:
            cfg.sources["nvidia"]["migStrategy"] = self.mig_strategy
        return cfg

    def check_paths(self) -> None:
        """Exit 2 when --root or --proc is not a directory: read through, every file would
        be missing and the node would quietly get almost no labels."""
        for option, path in (("--root", self.root), ("--proc", self.proc)):
            if path is None:
                continue
            if not path:
                fail(f"{option}: the path is empty")
            if not os.path.isdir(path):
                problem = "not a directory" if os.path.lexists(path) else "no such directory"
                fail(f"{option} {path!r}: {problem}")

    def live_host(self) -> Host:
        from nodefeatures.discovery.hostroot import HostRoot
        from nodefeatures.discovery.source import Host

        self.check_paths()
        return Host(root=HostRoot(self.root, proc=self.proc))


# The level the command line chose, while core.klog.v has raised it to debug.
_BASE_LEVEL: list[int] = []


def apply_log_level(cfg: Config) -> None:
    """nfd-worker's core.klog.v: 2 or more turns debug logging on (as --verbose does); a
    reloaded config with less goes back to what the command line chose."""
    from nodefeatures.discovery.config import KLOG_DEBUG_LEVEL, klog_verbosity

    root = logging.getLogger()
    level = klog_verbosity(cfg.core)
    if level is not None and level >= KLOG_DEBUG_LEVEL:
        if not _BASE_LEVEL:
            _BASE_LEVEL.append(root.level)
        root.setLevel(logging.DEBUG)
    elif _BASE_LEVEL:
        root.setLevel(_BASE_LEVEL.pop())


def _warn_unknown_label_sources(cfg: Config) -> None:
    """A misspelt core.labelSources entry selects nothing; say so rather than publish
    fewer labels in silence. A warning, not an error: one config may serve images with
    different plugins installed."""
    from nodefeatures.discovery import registry

    installed = list(registry.installed())
    for option in ("labelSources", "featureSources"):
        for position, entry in enumerate(cfg.core.get(option) or []):
            name = entry[1:] if entry.startswith("-") else entry
            if name != "all" and name not in installed:
                log.warning("core.%s[%d]: no such source %r (installed: %s)",
                            option, position, entry, ", ".join(installed))
    if not cfg.enabled(installed):
        log.warning("core.labelSources selects no source: no label will be published")


def _installed_names(ctx: click.Context, param: click.Parameter,
                     names: tuple[str, ...]) -> tuple[str, ...]:
    """--skip-source's names, checked before the command connects anywhere: a misspelt
    one would otherwise let the source it meant run."""
    from nodefeatures.discovery import registry

    installed = registry.installed()
    for name in names:
        if name not in installed:
            fail(f"--skip-source {name!r}: no such source (installed: "
                 f"{', '.join(installed)})")
    return names


def host_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose what host to read and which sources run, passed as `host`."""

    @functools.wraps(func)
    def with_choice(*args: Any, root: str, proc: str | None, config_path: str | None,
                    only: tuple[str, ...], mig_strategy: str | None,
                    gfd_config_path: str | None, skip: tuple[str, ...],
                    **kwargs: Any) -> Any:
        choice = HostChoice(root, proc, config_path, only, mig_strategy, gfd_config_path,
                            skip)
        return func(*args, host=choice, **kwargs)

    decorators = [
        click.option("--root", default="/", show_default=True, metavar="PATH",
                     help="Read host files under this prefix (e.g. /host in the DaemonSet)."),
        click.option("--proc", default=None, metavar="PATH",
                     help="Read /proc from here instead of <root>/proc."),
        click.option("--config", "config_path", default=None, metavar="PATH",
                     help="Config file, ours or nfd-worker's, or GFD's (a file with a "
                          "`version` key) [default: /etc/nodefeatures/config.yaml if "
                          "present]."),
        click.option("--gfd-config", "gfd_config_path", default=None, metavar="PATH",
                     help="GFD's (device plugin's) config file, beside --config [default: "
                          "$GFD_CONFIG_FILE or $CONFIG_FILE, as GFD reads them]."),
        click.option("--source", "only", multiple=True, metavar="NAME",
                     help="Run only this source (repeatable)."),
        click.option("--skip-source", "skip", multiple=True, metavar="NAME",
                     callback=_installed_names,
                     help="Never run this source (repeatable), as core.labelSources' "
                          "-NAME; the labels it published before are kept."),
        click.option("--mig-strategy", type=click.Choice(["none", "single", "mixed"]),
                     default=None,
                     help="How MIG devices are labelled; overrides sources.nvidia.migStrategy."),
    ]
    wrapped: Callable[..., Any] = with_choice
    for decorator in reversed(decorators):
        wrapped = decorator(wrapped)
    return wrapped


def report(discovery: Discovery) -> None:
    """Log each source's failure and warnings of one pass."""
    for result in discovery.results:
        if result.error:
            log.warning("source %s failed: %s", result.name, result.error)
        for warning in result.warnings:
            log.warning("%s: %s", result.name, warning)
