"""The `nodefeatures` command line: thin wrappers around discovery and the agent.

This module only gathers the commands of cli/host.py and cli/cluster.py into one group,
so `nodefeatures.cli:main` is the single entry point and nothing below imports it. A
command's module is imported only when that command runs (or help lists it): `dump`
never pays for the cluster commands' imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

from nodefeatures import __version__
from nodefeatures.cli.options import setup_logging

# command name -> "module:attribute"
COMMANDS: Mapping[str, str] = {
    "dump": "nodefeatures.cli.host:dump",
    "capture": "nodefeatures.cli.host:capture",
    "sources": "nodefeatures.cli.host:list_sources",
    "config": "nodefeatures.cli.host:show_config",
    "run": "nodefeatures.cli.cluster:run",
    "apply": "nodefeatures.cli.cluster:apply",
    "diff": "nodefeatures.cli.cluster:diff",
    "prune": "nodefeatures.cli.cluster:prune",
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nodefeatures")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
def main(verbose: bool) -> None:
    """Discover this node's hardware and OS features as Kubernetes labels."""
    setup_logging(verbose)
