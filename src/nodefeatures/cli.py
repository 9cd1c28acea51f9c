"""The `nodefeatures` command line: thin wrappers around discovery and the agent."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from nodefeatures import __version__

if TYPE_CHECKING:
    from nodefeatures.config import Config
    from nodefeatures.source import Host, Source

log = logging.getLogger("nodefeatures")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("nodefeatures: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(message: str, code: int = 2) -> None:
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

    def prepare(self) -> tuple[dict[str, Source], Config]:
        """Installed sources and the validated config; exits 2 when either is unusable."""
        from nodefeatures import config as configuration
        from nodefeatures.discovery import load_sources

        sources, errors = load_sources(self.only or None)
        if errors and self.only:
            _fail("; ".join(errors))
        for error in errors:
            log.warning("%s", error)
        if self.config_path == "":
            _fail("--config: the path is empty")
        try:
            cfg = configuration.load(self.config_path, sources)
        except configuration.ConfigError as exc:
            _fail(str(exc))
        if self.only:
            cfg.core["labelSources"] = list(self.only)
        else:
            _warn_unknown_label_sources(cfg)
        if self.mig_strategy is not None:
            if "nvidia" in cfg.sources:
                cfg.sources["nvidia"]["migStrategy"] = self.mig_strategy
            else:
                log.warning("--mig-strategy has no effect: the nvidia source is not installed")
        return sources, cfg

    def check_paths(self) -> None:
        """Exit 2 when --root or --proc is not a directory: read through, every file would
        be missing and the node would quietly get almost no labels."""
        for option, path in (("--root", self.root), ("--proc", self.proc)):
            if path is None:
                continue
            if not path:
                _fail(f"{option}: the path is empty")
            if not os.path.isdir(path):
                problem = "not a directory" if os.path.lexists(path) else "no such directory"
                _fail(f"{option} {path!r}: {problem}")

    def live_host(self) -> Host:
        from nodefeatures.hostroot import HostRoot
        from nodefeatures.source import Host

        self.check_paths()
        return Host(root=HostRoot(self.root, proc=self.proc))


def _warn_unknown_label_sources(cfg: Config) -> None:
    """A misspelt core.labelSources entry selects nothing; say so rather than publish
    fewer labels in silence. A warning, not an error: one config may serve images with
    different plugins installed."""
    from nodefeatures import registry

    installed = list(registry.installed())
    for position, entry in enumerate(cfg.core["labelSources"]):
        name = entry[1:] if entry.startswith("-") else entry
        if name != "all" and name not in installed:
            log.warning("core.labelSources[%d]: no such source %r (installed: %s)",
                        position, entry, ", ".join(installed))
    if not cfg.enabled(installed):
        log.warning("core.labelSources selects no source: no label will be published")


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


def _report(discovery) -> None:
    for result in discovery.results:
        if result.error:
            log.warning("source %s failed: %s", result.name, result.error)
        for warning in result.warnings:
            log.warning("%s: %s", result.name, warning)


DEBUG_ENV = "NODEFEATURES_DEBUG"


def _debugging(ctx: click.Context | None = None) -> bool:
    """Whether --debug or NODEFEATURES_DEBUG asks for tracebacks."""
    root = (ctx or click.get_current_context()).find_root()
    return bool(root.params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class _Commands(click.Group):
    """Turns any failure a command did not foresee into exit 2 and one error line.

    Exit 1 means "would write" for `diff`, which is what an uncaught exception gives by
    default; a failure must never read as that, nor print a traceback at a user (unless
    asked: --debug or NODEFEATURES_DEBUG=1).
    """

    def invoke(self, ctx: click.Context) -> Any:
        if sys.stdout is None:
            # Started with stdout closed: whatever the command prints would vanish and
            # it would still exit 0.
            _fail("standard output is closed")
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", code=130)
        except BrokenPipeError:
            # The reader went away (`| head`); flushing at exit would fail once more.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
            _fail("standard output was closed before everything was written")
        except Exception as exc:
            if _debugging(ctx):
                traceback.print_exc(file=sys.stderr)
            detail = " ".join(str(exc).split())[:300]
            _fail(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nodefeatures")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.option("--debug", is_flag=True,
              help=f"Print a traceback on an unexpected error (also: {DEBUG_ENV}=1).")
def main(verbose: bool, debug: bool) -> None:
    """Discover this node's hardware and OS features as Kubernetes labels."""
    _setup_logging(verbose)


@main.command()
@host_options
@click.option("--fixture", default=None, metavar="DIR",
              help="Replay a captured fixture instead of reading this machine.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True)
@click.option("--explain", is_flag=True, help="Show the raw fact behind every label.")
def dump(host: HostChoice, fixture: str | None, fmt: str, explain: bool) -> None:
    """Print the labels this node would get."""
    from nodefeatures import render
    from nodefeatures.discovery import run_pass
    from nodefeatures.fixture import FixtureError, replay_host

    sources, cfg = host.prepare()
    if fixture is not None:
        try:
            read = replay_host(fixture)
        except FixtureError as exc:
            _fail(str(exc))
    else:
        read = host.live_host()
    discovery = run_pass(read, sources, cfg)
    _report(discovery)
    click.echo(render.FORMATS[fmt](discovery, explain))


@main.command()
@host_options
@click.argument("directory")
def capture(host: HostChoice, directory: str) -> None:
    """Record everything the sources read into a new fixture DIRECTORY."""
    from nodefeatures.discovery import run_pass
    from nodefeatures.fixture import FixtureError, capture_host, write_labels

    sources, cfg = host.prepare()
    host.check_paths()
    if not directory:
        _fail("the fixture directory's name is empty")
    try:
        recording = capture_host(directory, root=host.root, proc=host.proc)
    except FixtureError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{directory}: cannot create the fixture directory: {exc.strerror or exc}")
    discovery = run_pass(recording, sources, cfg)
    _report(discovery)
    target = write_labels(directory, discovery.values())
    click.echo(f"captured {len(discovery.labels)} labels into {directory} ({target.name})")


@main.command("sources")
def list_sources() -> None:
    """List installed sources, built-in and plugins."""
    from nodefeatures.discovery import load_sources

    sources, errors = load_sources()
    from nodefeatures import registry

    entries = registry.installed()
    for name, entry in entries.items():
        source = sources.get(name)
        about = source.description if source else "(cannot be loaded)"
        click.echo(f"{name:10} {entry.distribution:14} {entry.target:45} {about}")
    for error in errors:
        log.warning("%s", error)


@main.command("config")
@click.option("--defaults", is_flag=True, required=True,
              help="Print the effective default configuration.")
def show_config(defaults: bool) -> None:
    """Print configuration (currently: the defaults)."""
    import yaml

    from nodefeatures import config as configuration
    from nodefeatures.discovery import load_sources

    sources, _ = load_sources()
    click.echo(yaml.safe_dump(configuration.defaults(sources), sort_keys=False).rstrip())


# The cluster commands register themselves on `main`; importing them here keeps
# `nodefeatures.cli:main` the single entry point.
from nodefeatures import cli_cluster  # noqa: E402, F401
