"""The cluster commands (run, apply, diff, prune): option parsing only.

Everything that talks to the API lives in cluster/kube.py and cluster/agent.py.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from nodefeatures.cli.options import HostChoice, debugging, fail, host_options, report

log = logging.getLogger("nodefeatures")


class _Duration(click.ParamType):
    """Seconds as `90`, `90s`, `5m`, `1h` or `1m30s`, from 1 s to 24 h."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import re

        from nodefeatures.discovery.config import SLEEP_MAX, SLEEP_MIN

        text = str(value).strip()
        # Digits are bounded so that no literal reaches float()'s or int()'s limits.
        number = r"(\d{1,12}(?:\.\d{1,9})?)"
        parts = re.fullmatch(rf"(?:{number}h)?(?:{number}m)?(?:{number}s?)?", text)
        if not text or parts is None or not any(parts.groups()):
            shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
            self.fail(f"{shown} is not a duration such as 60s, 5m or 1h", param, ctx)
        hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if not SLEEP_MIN <= total <= SLEEP_MAX:
            self.fail(f"must be at least {SLEEP_MIN}s and at most {SLEEP_MAX // 3600}h",
                      param, ctx)
        return total


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose the Node, the credentials and the keys we may touch."""
    from nodefeatures.discovery.namespaces import DEFAULT_MANAGED_PREFIXES

    decorators = [
        click.option("--node", envvar="NODE_NAME", default=None, metavar="NAME",
                     help="The Node to label [default: $NODE_NAME]."),
        click.option("--kubeconfig", default=None, metavar="PATH",
                     help="Kubeconfig file [default: in-cluster, else $KUBECONFIG or "
                          "~/.kube/config]."),
        click.option("--managed-prefix", "prefixes", multiple=True, metavar="PREFIX",
                     help="Label prefix this agent may add, change or remove (repeatable) "
                          f"[default: {', '.join(DEFAULT_MANAGED_PREFIXES)}; with "
                          "--label-namespaces: any prefix in the allowed namespaces]."),
        click.option("--label-namespaces", "label_namespaces", default=None,
                     metavar="NAMESPACE/NAME", callback=_checked_reference,
                     help="The ConfigMap that says which label namespaces the agent may "
                          "write (NFD's denyLabelNs and extraLabelNs), the one the admission "
                          "policy enforces (deploy/base/label-namespaces.yaml). Without it, "
                          "only the managed prefixes."),
        click.option("--instance", default="", metavar="NAME", callback=_checked_instance,
                     help="Run as this named instance, with its own ledger annotation "
                          "nodefeatures.dev/labels-NAME, beside other instances on the same "
                          "Node (deploy/gpu's GPU agent is 'gpu') [default: the default "
                          "instance, nodefeatures.dev/labels]."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _checked_reference(ctx: Any, param: Any, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    from nodefeatures.cluster.namespaces import parse_reference

    reference = parse_reference(value)
    if reference is None:
        raise click.BadParameter("must be NAMESPACE/NAME of a ConfigMap, e.g. "
                                 "nodefeatures/nodefeatures-label-namespaces")
    return reference


def nfd_api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that read NFD's API objects (run, apply, diff)."""
    decorators = [
        click.option("--nfd-api/--no-nfd-api", "nfd_api", default=None,
                     help="Read NodeFeatureRule objects and this Node's NodeFeature objects "
                          "and publish what they give, as nfd-master would [default: on for "
                          "the default instance, off for a named one]."),
        click.option("--namespace", "own_namespace", envvar="POD_NAMESPACE", default=None,
                     metavar="NAMESPACE",
                     help="The agent's namespace: its NodeFeature objects come first, and "
                          "--output nodefeature writes there [default: $POD_NAMESPACE, the "
                          "pod's service account namespace, else nodefeatures]."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _own_namespace(given: str | None) -> str:
    if given:
        return given
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as file:
            found = file.read(254).strip()
    except OSError:
        found = ""
    return found or "nodefeatures"


def _checked_instance(ctx: Any, param: Any, value: str) -> str:
    from nodefeatures.cluster.reconcile import check_instance

    problem = check_instance(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def _expect_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--expect-instance", default=None, metavar="NAME", callback=_checked_instance,
        help="The instance that must run wherever a NVIDIA PCI label holds (deploy/gpu: "
             "'gpu'): where its ledger is absent, say so (diff: a warning; run: an Event "
             "GPUAgentMissing after --expect-grace, and a metric).")(func)


def confinement_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that write to the Node: how confinement is proven."""
    from nodefeatures.cluster.confinement import DEFAULT_POLICY

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
        from nodefeatures.cluster.confinement import CONFINED, prove_confinement

        proof = prove_confinement(api, policy)
        if proof.state != CONFINED:
            fail(proof.message)

    return guard


def _checked_prefixes(prefixes: tuple[str, ...],
                      label_namespaces: tuple[str, str] | None = None) -> tuple[str, ...]:
    """The managed prefixes given, checked; none given: the defaults, or no narrowing when
    the label namespaces setting decides."""
    from nodefeatures.cluster.reconcile import DEFAULT_MANAGED_PREFIXES, check_prefix

    for prefix in prefixes:
        problem = check_prefix(prefix)
        if problem:
            fail(f"--managed-prefix {prefix!r}: {problem}")
    if not prefixes and label_namespaces is None:
        return DEFAULT_MANAGED_PREFIXES
    return prefixes


def _scope_once(api: Any, prefixes: tuple[str, ...],
                label_namespaces: tuple[str, str] | None) -> Any:
    """The scope of a one-shot command: the prefixes, and the setting read once."""
    from nodefeatures.cluster.kube import KubeError
    from nodefeatures.cluster.namespaces import read_once

    if label_namespaces is None:
        return prefixes
    try:
        return read_once(api.client, *label_namespaces, prefixes)
    except (KubeError, ValueError) as exc:
        fail(str(exc))


def _objects_once(api: Any, node: str, nfd_api: bool | None, instance: str,
                  own_namespace: str | None) -> Any:
    """What NFD's objects add to a one-shot pass (a list of each kind), or None."""
    if not (nfd_api if nfd_api is not None else not instance):
        return None
    from nodefeatures.cluster.nfdapi import ClusterObjects
    from nodefeatures.cluster.objectcache import wait_all

    objects = ClusterObjects(api.client, node, _own_namespace(own_namespace), lambda: None)
    objects.start()
    wait_all(objects.caches, 10.0)
    objects.stop()
    for message in objects.problems().values():
        log.warning("%s", message)
    return objects


# A Node's name is a lower-case DNS subdomain (RFC 1123) of at most 253 characters.
_NODE_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


def _need_node(node: str | None) -> str:
    if not node:
        fail("no node given: use --node NAME or set NODE_NAME")
    assert node is not None
    return _checked_node(node)


def _checked_node(node: str) -> str:
    """Refuse a name no Node can have before it reaches a URL, a log line or an Event."""
    import re

    if len(node) > 253 or not re.fullmatch(_NODE_NAME, node):
        shown = repr(node) if len(node) <= 80 else repr(node[:77]) + "..."
        fail(f"--node {shown}: not a valid Node name (a lower-case DNS subdomain of at most "
              "253 characters)")
    return node


def _node_api(kubeconfig: str | None, node: str):
    from nodefeatures.cluster.kube import KubeError, NodeApi, connect

    try:
        return NodeApi(connect(kubeconfig), node)
    except KubeError as exc:
        fail(exc.message)


def _discoverer(host: HostChoice):
    """A discovery callable for this host, every installed source's name, the config, and
    the names of the sources that run (--source and core.labelSources narrow them)."""
    from nodefeatures.discovery import registry
    from nodefeatures.discovery.run import publishing, run_pass

    sources, cfg = host.prepare()
    read = host.live_host()
    running = publishing(sources, cfg)

    def discover(paused: frozenset[str] = frozenset()) -> Any:
        # A paused source (the GPU Operator's pause labels) does not run at all.
        return run_pass(read, {n: s for n, s in sources.items() if n not in paused}, cfg)

    return discover, list(registry.installed()), cfg, running


def _installed() -> Any:
    from nodefeatures.discovery import registry

    return registry.installed()


def _evidence(host: HostChoice, objects: Any = None):
    from nodefeatures.cluster.reconcile import evidence_from

    discover, installed, _, _ = _discoverer(host)
    discovery = discover()
    report(discovery)
    evidence = evidence_from(discovery, installed)
    return objects.extend(discovery, evidence) if objects is not None else evidence


def _one_pass(host: HostChoice, name: str, kubeconfig: str | None,
              prefixes: tuple[str, ...], take_over: bool, instance: str,
              expect: str | None = None, *, cluster: dict[str, Any], **mode: Any) -> Any:
    """Discover, plan against the live Node and print the plan; the patch body or None.

    `mode` is reconcile_once's dry_run / send switch: what `apply` and `diff` differ in;
    `confinement=(allow_unconfined, policy)` makes a real write prove confinement first.
    `cluster` holds the options about the cluster's own settings and objects.
    """
    from nodefeatures.cluster.agent import reconcile_once
    from nodefeatures.cluster.kube import KubeError, resource_version
    from nodefeatures.cluster.reconcile import describe

    label_namespaces = cluster["label_namespaces"]
    prefixes = _checked_prefixes(prefixes, label_namespaces)
    api = _node_api(kubeconfig, name)
    scope = _scope_once(api, prefixes, label_namespaces)
    objects = _objects_once(api, name, cluster["nfd_api"], instance, cluster["own_namespace"])
    evidence = _evidence(host, objects)
    confinement = mode.pop("confinement", None)
    if confinement is not None:
        mode["guard"] = _confinement_guard(api, *confinement)
    try:
        decided, body, seen = reconcile_once(api, evidence, scope, take_over,
                                             instance=instance, expect=expect, **mode)
    except KubeError as exc:
        _api_failed(exc)
    click.echo(describe(decided, name, resource_version(seen), body))
    return body


def _api_failed(exc: Exception) -> None:
    fail(f"the API request failed: {exc}")


@click.command()
@host_options
@cluster_options
@click.option("--interval", type=_Duration(), default=None,
              help="Time between discovery passes, 1s to 24h, jittered by 10% [default: "
                   "the config's core.sleepInterval, 60s].")
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
@click.option("--output", "output", type=click.Choice(["node", "nodefeature"]), default="node",
              show_default=True,
              help="node: label the Node. nodefeature: write this node's features and labels "
                   "as one NodeFeature object in the agent's namespace, for an nfd-master "
                   "to label the Node (a drop-in nfd-worker).")
@_expect_option
@click.option("--expect-grace", type=_Duration(), default=300.0, show_default=True,
              help="How long the expected instance's ledger may be absent before it is "
                   "reported (the GPU agent's start-up).")
@confinement_options
@nfd_api_options
def run(host: HostChoice, node: str | None, kubeconfig: str | None,
        prefixes: tuple[str, ...], label_namespaces: tuple[str, str] | None, instance: str,
        interval: float | None, metrics_port: int, metrics_address: str, take_over: bool,
        log_format: str, output_file: str | None, output: str, expect_instance: str | None,
        expect_grace: float, allow_unconfined: bool, confinement_policy: str,
        nfd_api: bool | None, own_namespace: str | None) -> None:
    """Keep this node's labels true until SIGTERM (the DaemonSet's command)."""
    import signal
    import threading
    import traceback

    from nodefeatures.cluster.agent import Agent, FileAgent, Options
    from nodefeatures.cluster.metrics import JsonFormatter, Metrics, StatusServer

    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    from nodefeatures.cluster.nopublish import NoPublishAgent
    from nodefeatures.cluster.reload import LiveConfig, Reactor, config_files
    from nodefeatures.discovery.run import publishing, run_pass

    prefixes = _checked_prefixes(prefixes, label_namespaces)
    if output == "nodefeature" and output_file is not None:
        fail("--output nodefeature and --output-file are two different outputs: choose one")
    sources, cfg = host.prepare()
    read = host.live_host()
    running = publishing(sources, cfg)
    installed = list(_installed())
    seconds = interval or max(1.0, float(cfg.core["sleepInterval"]))
    metrics = Metrics()
    runner_box: list[Any] = []

    def applied(new: Any) -> None:
        """A reloaded config in force: the interval and log level follow it."""
        from nodefeatures.cli.options import apply_log_level

        apply_log_level(new)
        if interval is None and runner_box:
            runner_box[0].options.interval = max(1.0, float(new.core["sleepInterval"]))
        if bool(new.core.get("noPublish")) != bool(cfg.core.get("noPublish")):
            log.warning("core.noPublish changed: that takes effect when the agent restarts")

    from nodefeatures.discovery.effective import gfd_file_from

    gfd_path = host.gfd_config_path or gfd_file_from(os.environ)
    live = LiveConfig(lambda: host.load_config(sources), cfg,
                      config_files(host.config_path, gfd_path), metrics, applied)

    def discover(paused: frozenset[str] = frozenset()) -> Any:
        # A paused source (the GPU Operator's pause labels) does not run at all.
        return run_pass(read, {n: s for n, s in sources.items() if n not in paused},
                        live.config)

    runner: Any
    followers: list[Any] = []  # watches of cluster objects, started before the loop
    if cfg.core.get("noPublish"):
        # nfd-worker's dry run: discovery as usual, no credentials, no request, no file.
        if node:
            _checked_node(node)
        options = Options(node=node or "", interval=seconds, prefixes=prefixes)
        runner = NoPublishAgent(discover, installed, options, metrics)
        target = "nothing (core.noPublish)"
    elif output_file is not None:
        if node:
            _checked_node(node)
        options = Options(node=node or "", interval=seconds, prefixes=prefixes)
        runner = FileAgent(output_file, discover, installed, options, metrics)
        target = output_file
    elif output == "nodefeature":
        from nodefeatures.cluster.nodefeatureout import NodeFeatureAgent

        name = _need_node(node)
        namespace = _own_namespace(own_namespace)
        options = Options(node=name, interval=seconds, prefixes=prefixes)
        api = _node_api(kubeconfig, name)
        runner = NodeFeatureAgent(api.client, namespace, discover, options, metrics)
        target = f"NodeFeature {namespace}/{name}"
    else:
        name = _need_node(node)
        options = Options(node=name, interval=seconds, prefixes=prefixes, take_over=take_over,
                          instance=instance, expect_instance=expect_instance,
                          expect_grace=expect_grace, allow_unconfined=allow_unconfined,
                          confinement_policy=confinement_policy)
        api = _node_api(kubeconfig, name)
        setting, objects = _cluster_followers(
            api, name, prefixes, label_namespaces, nfd_api if nfd_api is not None
            else not instance, _own_namespace(own_namespace), metrics,
            lambda: runner_box[0].refresh() if runner_box else None)
        runner = Agent(api, discover, installed, options, metrics,
                       extend=objects.extend if objects is not None else None, scope=setting)
        if setting is not None:
            setting.post_event = runner.post_event
        followers = [f for f in (setting, objects) if f is not None]
        target = f"node {name}"
    runner_box.append(runner)
    server = None
    if metrics_port:
        try:
            # The node agent says what is wrong; the file agent only whether it is.
            alive = getattr(runner, "health", runner.alive)
            ready = getattr(runner, "readiness", lambda: runner.ready)
            server = StatusServer(metrics, alive, ready, metrics_port, metrics_address).start()
        except OSError as exc:
            fail(f"cannot serve metrics on port {metrics_port}: {exc}")

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

    if followers:
        from nodefeatures.cluster.objectcache import wait_all

        for follower in followers:
            follower.start()
        # The first pass knows the cluster's rules and setting when they come quickly; a
        # later list reaches the loop through a poke.
        wait_all([c for f in followers for c in f.caches], 5.0)
    if cfg.oneshot:
        if server is not None:
            server.stop()
        try:
            _once(runner, output_file, discover, installed, prefixes)
        finally:
            for follower in followers:
                follower.stop()
        return
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("labelling %s every %.0f s (sources: %s)", target, seconds,
             ", ".join(running) or "none", extra={"node": node, "interval": seconds})
    if output_file is None and allow_unconfined:
        log.warning("--allow-unconfined: writing without proof that the own-node admission "
                    "policy confines this agent's token to its Node")
    # The loop runs in its own thread: the main thread, where signal handlers run, then
    # holds none of the loop's locks when a signal arrives.
    crashed: list[BaseException] = []

    def loop_body() -> None:
        try:
            runner.run()
        except BaseException as exc:
            crashed.append(exc)

    # A feature file, rule file or config change reaches the loop at once (the periodic
    # pass stays as the safety net). Watching first: a change during the first pass is
    # then seen too.
    reactor = Reactor(runner, live, read.root, sources)
    if reactor.start():
        reactor.watcher.armed.wait(2.0)
    loop = threading.Thread(target=loop_body, name="agent-loop", daemon=True)
    loop.start()
    while loop.is_alive():
        loop.join(0.5)
    reactor.stop()
    for follower in followers:
        follower.stop()
    if server is not None:
        server.stop()
    if crashed:
        # A loop that died is a failure of `run`, never a clean stop (exit 0).
        exc = crashed[0]
        if debugging():
            traceback.print_exception(exc, file=sys.stderr)
        fail(f"the agent loop stopped on an unexpected error after {runner.writes} writes: "
              f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    log.info("stopped after %d writes", runner.writes)


def _cluster_followers(api: Any, node: str, prefixes: tuple[str, ...],
                       label_namespaces: tuple[str, str] | None, nfd_api: bool,
                       namespace: str, metrics: Any, poke: Callable[[], None]
                       ) -> tuple[Any, Any]:
    """The label namespaces setting and NFD's objects the agent follows (either None)."""
    setting = objects = None
    if label_namespaces is not None:
        from nodefeatures.cluster.namespaces import LabelNamespacesSetting

        setting = LabelNamespacesSetting(api.client, *label_namespaces, prefixes, poke,
                                         metrics, on_request=metrics.request)
    if nfd_api:
        from nodefeatures.cluster.nfdapi import ClusterObjects

        objects = ClusterObjects(api.client, node, namespace, poke,
                                 on_request=metrics.request, metrics=metrics)
    return setting, objects


def _once(runner: Any, output_file: str | None, discover: Callable[[], Any],
          installed: list[str], prefixes: tuple[str, ...]) -> None:
    """GFD's oneshot (flags.gfd.oneshot, GFD_ONESHOT): one pass, then exit."""
    from nodefeatures.cluster.agent import Unconfined
    from nodefeatures.cluster.kube import KubeError

    log.info("oneshot (GFD's flags.gfd.oneshot): one pass, then exit")
    if output_file is not None:
        from nodefeatures.cluster import featurefile
        from nodefeatures.cluster.reconcile import evidence_from

        discovery = discover()
        report(discovery)
        try:
            _, written = featurefile.sync(output_file, evidence_from(discovery, installed),
                                          prefixes)
        except OSError as exc:
            fail(f"cannot write {output_file}: {exc.strerror or exc}")
        log.info("%s %s", "updated" if written else "unchanged", output_file)
        return
    try:
        decided = runner.sync()
    except Unconfined as exc:
        fail(str(exc))
    except KubeError as exc:
        _api_failed(exc)
    if isinstance(decided, bool):  # --output nodefeature
        log.info("NodeFeature %s/%s %s", runner.namespace, runner.name,
                 "written" if decided else "unchanged")
        return
    log.info("node %s: %d labels published", runner.options.node,
             len(decided.ledger.owners))


@click.command()
@host_options
@cluster_options
@click.option("--dry-run", is_flag=True,
              help="Print the plan and the exact patch; the server validates it, nothing changes.")
@click.option("--take-over", is_flag=True, help="Adopt keys another writer set (migration).")
@confinement_options
@nfd_api_options
def apply(host: HostChoice, node: str | None, kubeconfig: str | None,
          prefixes: tuple[str, ...], label_namespaces: tuple[str, str] | None, instance: str,
          dry_run: bool, take_over: bool, allow_unconfined: bool, confinement_policy: str,
          nfd_api: bool | None, own_namespace: str | None) -> None:
    """Run one discovery pass, update the Node once, and exit."""
    name = _need_node(node)
    body = _one_pass(host, name, kubeconfig, prefixes, take_over, instance, dry_run=dry_run,
                     confinement=(allow_unconfined, confinement_policy),
                     cluster={"label_namespaces": label_namespaces, "nfd_api": nfd_api,
                              "own_namespace": own_namespace})
    if dry_run and body is not None:
        click.echo("dry run: the API server accepted this patch; nothing was changed")
    elif body is not None:
        click.echo(f"node {name} updated")


@click.command()
@host_options
@cluster_options
@_expect_option
@nfd_api_options
def diff(host: HostChoice, node: str | None, kubeconfig: str | None,
         prefixes: tuple[str, ...], label_namespaces: tuple[str, str] | None, instance: str,
         expect_instance: str | None, nfd_api: bool | None, own_namespace: str | None) -> None:
    """Show what `apply` would add, change and remove, and why. Exit 1 when it would write."""
    body = _one_pass(host, _need_node(node), kubeconfig, prefixes, False, instance,
                     expect_instance, send=False,
                     cluster={"label_namespaces": label_namespaces, "nfd_api": nfd_api,
                              "own_namespace": own_namespace})
    sys.exit(1 if body is not None else 0)


@click.command()
@cluster_options
@click.option("--source", "sources", multiple=True, metavar="NAME",
              help="Remove only the labels this source produced (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the exact patch; nothing changes.")
@confinement_options
def prune(node: str | None, kubeconfig: str | None, prefixes: tuple[str, ...],
          label_namespaces: tuple[str, str] | None, instance: str, sources: tuple[str, ...],
          dry_run: bool, allow_unconfined: bool, confinement_policy: str) -> None:
    """Remove the labels this agent owns (its ledger) from a Node: uninstall cleanup.

    With --instance NAME, only that instance's labels and ledger."""
    from nodefeatures.cluster.agent import prune_once
    from nodefeatures.cluster.kube import KubeError, resource_version
    from nodefeatures.cluster.reconcile import describe

    name = _need_node(node)
    prefixes = _checked_prefixes(prefixes, label_namespaces)
    api = _node_api(kubeconfig, name)
    scope = _scope_once(api, prefixes, label_namespaces)
    try:
        decided, body, seen = prune_once(
            api, scope, sources, dry_run=dry_run, instance=instance,
            guard=_confinement_guard(api, allow_unconfined, confinement_policy))
    except KubeError as exc:
        _api_failed(exc)
    click.echo(describe(decided, name, resource_version(seen), body))
    if body is not None:
        click.echo("dry run: nothing was changed" if dry_run else f"node {name} pruned")
