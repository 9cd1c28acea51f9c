"""The `nodefeatures` command line: thin wrappers around discovery and the agent.

This module only gathers the commands of cli/host.py, cli/cluster.py and cli/rules.py
into one group, so `nodefeatures.cli:main` is the single entry point and nothing below
imports it. A
command's module is imported only when that command runs (or help lists it): `dump`
never pays for the cluster commands' imports.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import click

from nodefeatures import __version__
from nodefeatures.cli.options import DEBUG_ENV, debugging, fail, setup_logging

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
    "rules": "nodefeatures.cli.rules:rules",
}


class _Commands(click.Group):
    """Loads commands lazily, and turns any failure a command did not foresee into exit 2
    and one error line.

    Exit 1 means "would write" for `diff`, which is what an uncaught exception gives by
    default; a failure must never read as that, nor print a traceback at a user (unless
    asked: --debug or NODEFEATURES_DEBUG=1).
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        if sys.stdout is None:
            # Started with stdout closed: whatever the command prints would vanish and
            # it would still exit 0.
            fail("standard output is closed")
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except BrokenPipeError:
            # The reader went away (`| head`); flushing at exit would fail once more.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
            fail("standard output was closed before everything was written")
        except Exception as exc:
            if debugging(ctx):
                traceback.print_exc(file=sys.stderr)
            detail = " ".join(str(exc).split())[:300]
            fail(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nodefeatures")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.option("--debug", is_flag=True,
              help=f"Print a traceback on an unexpected error (also: {DEBUG_ENV}=1).")
def main(verbose: bool, debug: bool) -> None:
    """Discover this node's hardware and OS features as Kubernetes labels."""
    setup_logging(verbose)
