"""The cluster commands (run, apply, diff, prune): option parsing only.

Everything that talks to the API lives in kube.py and agent.py.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from nodefeatures.cli import HostChoice, _fail, _report, host_options, main

log = logging.getLogger("nodefeatures")


class _Duration(click.ParamType):
    """Seconds as `90`, `90s`, `5m`, `1h` or `1m30s`."""

    name = "duration"
    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, int | float):
            return float(value)
        import re

        text = str(value).strip()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?",
                             text)
        if not text or parts is None or not any(parts.groups()):
            self.fail(f"{value!r} is not a duration such as 60s, 5m or 1h", param, ctx)
        hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if total < 1:
            self.fail("must be at least 1s", param, ctx)
        return total


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose the Node, the credentials and the keys we may touch."""
    from nodefeatures.reconcile import DEFAULT_MANAGED_PREFIXES

    decorators = [
        click.option("--node", envvar="NODE_NAME", default=None, metavar="NAME",
                     help="The Node to label [default: $NODE_NAME]."),
        click.option("--kubeconfig", default=None, metavar="PATH",
                     help="Kubeconfig file [default: in-cluster, else $KUBECONFIG or "
                          "~/.kube/config]."),
        click.option("--managed-prefix", "prefixes", multiple=True, metavar="PREFIX",
                     default=DEFAULT_MANAGED_PREFIXES, show_default=True,
                     help="Label prefix this agent may add, change or remove (repeatable)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def confinement_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that write to the Node: how confinement is proven."""
    from nodefeatures.agent import DEFAULT_POLICY

    decorators = [
        click.option("--allow-unconfined", is_flag=True,
                     help="Write without proving that the own-node admission policy holds "
                          "this agent's token (clusters without the ValidatingAdmissionPolicy "
                          "API). Without it, nothing is written unless the policy denies a "
                          "dry-run probe."),
        click.option("--confinement-policy", default=DEFAULT_POLICY, show_default=True,
                     metavar="NAME",
                     help="The ValidatingAdmissionPolicy whose denial proves confinement."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _confinement_guard(api: Any, allow_unconfined: bool, policy: str) -> Any:
    """A write_once guard: exit 2 unless the probe proves confinement (or it is waived)."""
    if allow_unconfined:
        return None

    def guard() -> None:
        from nodefeatures.agent import CONFINED, prove_confinement

        proof = prove_confinement(api, policy)
        if proof.state != CONFINED:
            _fail(proof.message)

    return guard


def _checked_prefixes(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    from nodefeatures.reconcile import check_prefix

    for prefix in prefixes:
        problem = check_prefix(prefix)
        if problem:
            _fail(f"--managed-prefix {prefix!r}: {problem}")
    return prefixes


def _need_node(node: str | None) -> str:
    if not node:
        _fail("no node given: use --node NAME or set NODE_NAME")
    assert node is not None
    return node


def _node_api(kubeconfig: str | None, node: str):
    from nodefeatures.kube import KubeError, NodeApi, connect

    try:
        return NodeApi(connect(kubeconfig), node)
    except KubeError as exc:
        _fail(exc.message)


def _discoverer(host: HostChoice):
    """A discovery callable for this host, every installed source's name, the config, and
    the names of the sources that run (--source and core.labelSources narrow them)."""
    from nodefeatures import registry
    from nodefeatures.discovery import run_pass

    sources, cfg = host.prepare()
    read = host.live_host()
    running = cfg.enabled(list(sources))
    return (lambda: run_pass(read, sources, cfg)), list(registry.installed()), cfg, running


def _evidence(host: HostChoice):
    from nodefeatures.reconcile import evidence_from

    discover, installed, _, _ = _discoverer(host)
    discovery = discover()
    _report(discovery)
    return evidence_from(discovery, installed)


def _one_pass(host: HostChoice, name: str, kubeconfig: str | None,
              prefixes: tuple[str, ...], take_over: bool, **mode: Any) -> Any:
    """Discover, plan against the live Node and print the plan; the patch body or None.

    `mode` is reconcile_once's dry_run / send switch: what `apply` and `diff` differ in;
    `confinement=(allow_unconfined, policy)` makes a real write prove confinement first.
    """
    from nodefeatures.agent import reconcile_once
    from nodefeatures.kube import KubeError, resource_version
    from nodefeatures.reconcile import describe

    prefixes = _checked_prefixes(prefixes)
    evidence = _evidence(host)
    api = _node_api(kubeconfig, name)
    confinement = mode.pop("confinement", None)
    if confinement is not None:
        mode["guard"] = _confinement_guard(api, *confinement)
    try:
        decided, body, seen = reconcile_once(api, evidence, prefixes, take_over, **mode)
    except KubeError as exc:
        _api_failed(exc)
    click.echo(describe(decided, name, resource_version(seen), body))
    return body


def _api_failed(exc: Exception) -> None:
    _fail(f"the API request failed: {exc}")


@main.command()
@host_options
@cluster_options
@click.option("--interval", type=_Duration(), default=None,
              help="Time between discovery passes, jittered by 10% [default: the config's "
                   "core.sleepInterval, 60s].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port for /metrics, /healthz and /readyz; 0 turns the server off.")
@click.option("--metrics-address", default="", metavar="ADDR",
              help="Address to serve metrics on [default: all].")
@click.option("--take-over", is_flag=True,
              help="On the first pass, adopt keys another writer set (migration from NFD/GFD).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--output-file", default=None, metavar="PATH",
              help="Write an NFD features.d file instead of patching the Node.")
@confinement_options
def run(host: HostChoice, node: str | None, kubeconfig: str | None,
        prefixes: tuple[str, ...], interval: float | None, metrics_port: int,
        metrics_address: str, take_over: bool, log_format: str,
        output_file: str | None, allow_unconfined: bool, confinement_policy: str) -> None:
    """Keep this node's labels true until SIGTERM (the DaemonSet's command)."""
    import signal
    import threading

    from nodefeatures.agent import Agent, FileAgent, Options
    from nodefeatures.metrics import JsonFormatter, Metrics, StatusServer

    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    prefixes = _checked_prefixes(prefixes)
    discover, installed, cfg, running = _discoverer(host)
    seconds = interval or max(1.0, float(cfg.core["sleepInterval"]))
    metrics = Metrics()
    runner: Agent | FileAgent
    if output_file is not None:
        options = Options(node=node or "", interval=seconds, prefixes=prefixes)
        runner = FileAgent(output_file, discover, installed, options, metrics)
        target = output_file
    else:
        name = _need_node(node)
        options = Options(node=name, interval=seconds, prefixes=prefixes, take_over=take_over,
                          allow_unconfined=allow_unconfined,
                          confinement_policy=confinement_policy)
        runner = Agent(_node_api(kubeconfig, name), discover, installed, options, metrics)
        target = f"node {name}"
    server = None
    if metrics_port:
        try:
            # The node agent says what is wrong; the file agent only whether it is.
            alive = getattr(runner, "health", runner.alive)
            ready = getattr(runner, "readiness", lambda: runner.ready)
            server = StatusServer(metrics, alive, ready, metrics_port, metrics_address).start()
        except OSError as exc:
            _fail(f"cannot serve metrics on port {metrics_port}: {exc}")

    def hard_exit() -> None:
        log.warning("a request was still in flight at the shutdown deadline; exiting anyway")
        logging.shutdown()
        os._exit(0)

    def on_signal(signum: int, frame: Any) -> None:
        runner.stop()
        # The in-flight request gets the rest of the 2 s budget. A patch carries labels and
        # ledger together, so one cut short leaves the Node either before or after it.
        timer = threading.Timer(1.8, hard_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("labelling %s every %.0f s (sources: %s)", target, seconds,
             ", ".join(running) or "none", extra={"node": node, "interval": seconds})
    if output_file is None and allow_unconfined:
        log.warning("--allow-unconfined: writing without proof that the own-node admission "
                    "policy confines this agent's token to its Node")
    # The loop runs in its own thread: the main thread, where signal handlers run, then
    # holds none of the loop's locks when a signal arrives.
    loop = threading.Thread(target=runner.run, name="agent-loop", daemon=True)
    loop.start()
    while loop.is_alive():
        loop.join(0.5)
    if server is not None:
        server.stop()
    log.info("stopped after %d writes", runner.writes)


@main.command()
@host_options
@cluster_options
@click.option("--dry-run", is_flag=True,
              help="Print the plan and the exact patch; the server validates it, nothing changes.")
@click.option("--take-over", is_flag=True, help="Adopt keys another writer set (migration).")
@confinement_options
def apply(host: HostChoice, node: str | None, kubeconfig: str | None,
          prefixes: tuple[str, ...], dry_run: bool, take_over: bool, allow_unconfined: bool,
          confinement_policy: str) -> None:
    """Run one discovery pass, update the Node once, and exit."""
    name = _need_node(node)
    body = _one_pass(host, name, kubeconfig, prefixes, take_over, dry_run=dry_run,
                     confinement=(allow_unconfined, confinement_policy))
    if dry_run and body is not None:
        click.echo("dry run: the API server accepted this patch; nothing was changed")
    elif body is not None:
        click.echo(f"node {name} updated")


@main.command()
@host_options
@cluster_options
def diff(host: HostChoice, node: str | None, kubeconfig: str | None,
         prefixes: tuple[str, ...]) -> None:
    """Show what `apply` would add, change and remove, and why. Exit 1 when it would write."""
    body = _one_pass(host, _need_node(node), kubeconfig, prefixes, False, send=False)
    sys.exit(1 if body is not None else 0)


@main.command()
@cluster_options
@click.option("--source", "sources", multiple=True, metavar="NAME",
              help="Remove only the labels this source produced (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the exact patch; nothing changes.")
@confinement_options
def prune(node: str | None, kubeconfig: str | None, prefixes: tuple[str, ...],
          sources: tuple[str, ...], dry_run: bool, allow_unconfined: bool,
          confinement_policy: str) -> None:
    """Remove the labels this agent owns (its ledger) from a Node: uninstall cleanup."""
    from nodefeatures.agent import prune_once
    from nodefeatures.kube import KubeError, resource_version
    from nodefeatures.reconcile import describe

    name = _need_node(node)
    prefixes = _checked_prefixes(prefixes)
    api = _node_api(kubeconfig, name)
    try:
        decided, body, seen = prune_once(
            api, prefixes, sources, dry_run=dry_run,
            guard=_confinement_guard(api, allow_unconfined, confinement_policy))
    except KubeError as exc:
        _api_failed(exc)
    click.echo(describe(decided, name, resource_version(seen), body))
    if body is not None:
        click.echo("dry run: nothing was changed" if dry_run else f"node {name} pruned")
