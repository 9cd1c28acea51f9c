"""What several commands share: the host choice, its options, and how they fail and report."""

from __future__ import annotations

import functools
import logging
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


def fail(message: str) -> None:
    click.echo(f"nodefeatures: error: {message}", err=True)
    sys.exit(2)


@dataclass(frozen=True)
class HostChoice:
    """What host to read and which sources run, as chosen on the command line."""

    root: str
    proc: str | None
    config_path: str | None
    only: tuple[str, ...]
    mig_strategy: str | None

    def prepare(self) -> tuple[dict[str, Source], Config]:
        """Installed sources and the validated config; exits 2 when either is unusable."""
        from nodefeatures.discovery import config as configuration
        from nodefeatures.discovery.run import load_sources

        sources, errors = load_sources(self.only or None)
        if errors and self.only:
            fail("; ".join(errors))
        for error in errors:
            log.warning("%s", error)
        try:
            cfg = configuration.load(self.config_path, sources)
        except configuration.ConfigError as exc:
            fail(str(exc))
        if self.only:
            cfg.core["labelSources"] = list(self.only)
        if self.mig_strategy is not None:
            if "nvidia" in cfg.sources:
                cfg.sources["nvidia"]["migStrategy"] = self.mig_strategy
            else:
                log.warning("--mig-strategy has no effect: the nvidia source is not installed")
        return sources, cfg

    def live_host(self) -> Host:
        from nodefeatures.discovery.hostroot import HostRoot
        from nodefeatures.discovery.source import Host

        return Host(root=HostRoot(self.root, proc=self.proc))


def host_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose what host to read and which sources run, passed as `host`."""

    @functools.wraps(func)
    def with_choice(*args: Any, root: str, proc: str | None, config_path: str | None,
                    only: tuple[str, ...], mig_strategy: str | None, **kwargs: Any) -> Any:
        choice = HostChoice(root, proc, config_path, only, mig_strategy)
        return func(*args, host=choice, **kwargs)

    decorators = [
        click.option("--root", default="/", show_default=True, metavar="PATH",
                     help="Read host files under this prefix (e.g. /host in the DaemonSet)."),
        click.option("--proc", default=None, metavar="PATH",
                     help="Read /proc from here instead of <root>/proc."),
        click.option("--config", "config_path", default=None, metavar="PATH",
                     help="Config file [default: /etc/nodefeatures/config.yaml if present]."),
        click.option("--source", "only", multiple=True, metavar="NAME",
                     help="Run only this source (repeatable)."),
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
