"""One discovery pass: run the enabled sources, validate and merge their labels."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nodefeatures.discovery import registry
from nodefeatures.discovery.config import Budget, Config
from nodefeatures.discovery.hostroot import Problem
from nodefeatures.discovery.labels import Label, checked
from nodefeatures.discovery.source import Context, Features, Host, Source

log = logging.getLogger(__name__)


@dataclass
class SourceResult:
    """What one source produced in one pass."""

    name: str
    labels: dict[str, Label] = field(default_factory=dict)
    features: Features | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    # False when the pass may have missed something (crash, transient read error):
    # its absent labels are then no evidence that a feature is gone.
    complete: bool = True
    seconds: float = 0.0


@dataclass
class Discovery:
    """The outcome of one pass over all enabled sources."""

    results: list[SourceResult]
    budget: Budget = field(default_factory=Budget)  # what each source may publish

    @property
    def labels(self) -> dict[str, Label]:
        """Merged labels; a later source (higher priority) wins on an equal key."""
        merged: dict[str, Label] = {}
        for result in self.results:
            merged.update(result.labels)
        return dict(sorted(merged.items()))

    @property
    def warnings(self) -> list[str]:
        return [f"{r.name}: {w}" for r in self.results for w in r.warnings]

    def values(self) -> dict[str, str]:
        return {key: label.value for key, label in self.labels.items()}


def load_sources(only: Iterable[str] | None = None) -> tuple[dict[str, Source], list[str]]:
    """Installed sources (restricted to `only` when given) and load errors."""
    entries = registry.installed()
    wanted = list(only) if only else list(entries)
    errors = [f"no such source {name!r} (installed: {', '.join(entries)})"
              for name in wanted if name not in entries]
    sources: dict[str, Source] = {}
    for name in wanted:
        if name not in entries:
            continue
        try:
            sources[name] = registry.load(entries[name])
        except ImportError as exc:
            errors.append(str(exc))
    return sources, errors


def run_pass(host: Host, sources: Mapping[str, Source], config: Config) -> Discovery:
    """Run every enabled source once; one source's failure never stops another."""
    host.root.refresh()
    names = list(sources)
    labelled, discovered = set(config.enabled(names)), set(config.discovers(names))
    # As in NFD, core.featureSources says which sources discover (for labels and for
    # rules) and core.labelSources which publish; a rules source only publishes.
    order = sorted(
        (s for n, s in sources.items()
         if (n in labelled if s.uses_features else n in discovered)),
        key=lambda s: (s.priority, s.name),
    )
    # Sources that match raw features (rules) need every other source's features
    # first, as NFD discovers all features before any label source runs.
    found = [run_source(host, s, config) for s in order if not s.uses_features]
    results = list(found)
    for source in order:
        if source.uses_features:
            results.append(run_source(host, source, config, others=tuple(found)))
    # A source that only discovers for the rules is no part of the pass's labels, nor
    # of its evidence: its labels on the Node stay, as for any disabled source.
    results = [r for r in results if r.name in labelled]
    rank = {source.name: index for index, source in enumerate(order)}
    results.sort(key=lambda r: rank[r.name])
    return Discovery(results, config.budget())


def publishing(sources: Mapping[str, Source], config: Config) -> list[str]:
    """The names of the sources whose labels a pass publishes, in config order."""
    names = list(sources)
    discovered = set(config.discovers(names))
    return [n for n in config.enabled(names)
            if n in discovered or getattr(sources.get(n), "uses_features", False)]


def run_source(host: Host, source: Source, config: Config,
               others: tuple[SourceResult, ...] = ()) -> SourceResult:
    """Discover and label with one source, containing every failure inside its result."""
    result = SourceResult(source.name)
    ctx = Context(host, config.options(source.name), source.name)
    ctx.others = others

    def on_problem(problem: Problem) -> None:
        ctx.warn(f"{problem.path}: {problem.reason}")
        if problem.transient:
            ctx.complete = False

    host.root.problems = on_problem
    started = time.perf_counter()
    try:
        result.features = source.discover(ctx)
        raw = source.labels(result.features, ctx.options)
    except Exception as exc:  # a buggy or broken source costs only its own labels
        log.debug("source %s failed", source.name, exc_info=True)
        result.error = f"{type(exc).__name__}: {exc}"
        result.complete = False
        raw = []
    finally:
        host.root.problems = lambda problem: None
        result.seconds = time.perf_counter() - started
    result.warnings = ctx.warnings
    result.complete = result.complete and ctx.complete
    for label in raw:
        full = Label(source.qualify(label.key), label.value, label.origin, source.name)
        valid, message = checked(full)
        if message:
            result.warnings.append(message)
        if valid is None:
            continue
        if not config.allows(valid.key):
            continue
        result.labels[valid.key] = valid
    return result
