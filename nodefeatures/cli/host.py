"""The host commands: `dump`, `capture`, `sources` and `config`."""

from __future__ import annotations

import logging

import click

from nodefeatures.cli.options import HostChoice, fail, host_options, report

log = logging.getLogger("nodefeatures")


@click.command()
@host_options
@click.option("--fixture", default=None, metavar="DIR",
              help="Replay a captured fixture instead of reading this machine.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "yaml", "nodefeature"]),
              default="text", show_default=True,
              help="nodefeature: the NodeFeature object nfd-worker would write, as YAML.")
@click.option("--explain", is_flag=True, help="Show the raw fact behind every label.")
@click.option("--node", envvar="NODE_NAME", default=None, metavar="NAME",
              help="The node's name, for --format nodefeature [default: $NODE_NAME, else "
                   "the host name].")
@click.option("--namespace", envvar="POD_NAMESPACE", default=None, metavar="NAME",
              help="The NodeFeature's namespace, for --format nodefeature [default: "
                   "$POD_NAMESPACE, else nodefeatures].")
def dump(host: HostChoice, fixture: str | None, fmt: str, explain: bool, node: str | None,
         namespace: str | None) -> None:
    """Print the labels this node would get."""
    from nodefeatures.cli import render
    from nodefeatures.discovery.fixture import FixtureError, replay_host
    from nodefeatures.discovery.run import run_pass

    sources, cfg = host.prepare()
    if fixture is not None:
        try:
            read = replay_host(fixture)
        except FixtureError as exc:
            fail(str(exc))
    else:
        read = host.live_host()
    if fmt == "nodefeature":
        node, namespace = _object_names(node, namespace)
    discovery = run_pass(read, sources, cfg)
    report(discovery)
    if fmt == "nodefeature":
        click.echo(render.to_nodefeature(discovery, node, namespace))
    else:
        click.echo(render.FORMATS[fmt](discovery, explain))


def _object_names(node: str | None, namespace: str | None) -> tuple[str, str]:
    """The NodeFeature's name and namespace, refused before any discovery if invalid."""
    import socket

    from nodefeatures.discovery.namespaces import is_subdomain
    from nodefeatures.discovery.text import quote

    node = node or socket.gethostname().lower()
    namespace = namespace or "nodefeatures"
    if not is_subdomain(node):
        fail(f"--node {quote(node, 80)}: not a valid Node name (a lower-case DNS subdomain "
             "of at most 253 characters)")
    if len(namespace) > 63 or "." in namespace or not is_subdomain(namespace):
        fail(f"--namespace {quote(namespace, 80)}: not a valid namespace (a lower-case DNS "
             "label of at most 63 characters)")
    return node, namespace


@click.command()
@host_options
@click.argument("directory")
def capture(host: HostChoice, directory: str) -> None:
    """Record everything the sources read into a new fixture DIRECTORY."""
    from nodefeatures.discovery.fixture import FixtureError, capture_host, write_labels
    from nodefeatures.discovery.run import run_pass

    sources, cfg = host.prepare()
    host.check_paths()
    if not directory:
        fail("the fixture directory's name is empty")
    try:
        recording = capture_host(directory, root=host.root, proc=host.proc)
    except FixtureError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{directory}: cannot create the fixture directory: {exc.strerror or exc}")
    discovery = run_pass(recording, sources, cfg)
    report(discovery)
    target = write_labels(directory, discovery.values())
    click.echo(f"captured {len(discovery.labels)} labels into {directory} ({target.name})")


@click.command("sources")
def list_sources() -> None:
    """List installed sources, built-in and plugins."""
    from nodefeatures.discovery.run import load_sources

    sources, errors = load_sources()
    from nodefeatures.discovery import registry

    entries = registry.installed()
    for name, entry in entries.items():
        source = sources.get(name)
        about = source.description if source else "(cannot be loaded)"
        click.echo(f"{name:10} {entry.distribution:14} {entry.target:45} {about}")
    for error in errors:
        log.warning("%s", error)


@click.command("config")
@click.option("--defaults", is_flag=True, help="Print the effective default configuration.")
@click.option("--effective", is_flag=True,
              help="Print the configuration in force: the config file, GFD's file and "
                   "environment, merged and validated (rules shown by name).")
@click.option("--config", "config_path", default=None, metavar="PATH",
              help="Config file, ours, nfd-worker's or GFD's [default: "
                   "/etc/nodefeatures/config.yaml if present].")
@click.option("--gfd-config", "gfd_config_path", default=None, metavar="PATH",
              help="GFD's config file [default: $GFD_CONFIG_FILE or $CONFIG_FILE].")
def show_config(defaults: bool, effective: bool, config_path: str | None,
                gfd_config_path: str | None) -> None:
    """Print configuration: the defaults, or the configuration in force."""
    import yaml

    from nodefeatures.discovery import config as configuration
    from nodefeatures.discovery.run import load_sources

    if defaults == effective:
        fail("give one of --defaults and --effective")
    if defaults:
        sources, _ = load_sources()
        click.echo(yaml.safe_dump(configuration.defaults(sources), sort_keys=False).rstrip())
        return
    sources, cfg = HostChoice("/", None, config_path, (), None, gfd_config_path).prepare()
    shown: dict[str, object] = {"core": cfg.core,
                                "sources": {n: sources[n].config_of(o) if n in sources else o
                                            for n, o in cfg.sources.items()}}
    if cfg.oneshot:
        shown["oneshot"] = True
    click.echo(yaml.safe_dump(_plain(shown), sort_keys=False).rstrip())


def _plain(value: object) -> object:
    """Options as YAML can print them: a parsed rule by its name."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(getattr(value, "name", value))
