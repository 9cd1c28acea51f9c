"""The agent: keep one Node's labels equal to what discovery finds, quietly and safely.

`Agent.run` is the DaemonSet loop: a pass runs discovery every interval (jittered), and a
watch on the agent's own Node (field selector on its name) keeps a live copy, so a pass
on a stable node sends no request at all, and a label deleted or edited by hand is put
back within a second. Reconcile rules live in reconcile.py; this module decides *when* to
act and how to survive the API: 409 re-reads and retries at once, 5xx and transport
errors back off exponentially with jitter, 403/422 are reported (log, Event, metric) and
retried slowly, and nothing ever makes the loop exit except `stop()`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nodefeatures.cluster.kube import (
    KubeError,
    NodeApi,
    NodeWatch,
    node_annotations,
    node_labels,
    resource_version,
)
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.reconcile import (
    ADD,
    ADOPT,
    CHANGE,
    CONFLICT,
    DEFAULT_MANAGED_PREFIXES,
    REMOVE,
    SKIP,
    Evidence,
    Plan,
    evidence_from,
    plan,
    prune_plan,
)
from nodefeatures.discovery.run import Discovery

log = logging.getLogger(__name__)

WRITES = (ADD, CHANGE, REMOVE, ADOPT)
# Statuses that will not fix themselves: reported loudly and retried slowly.
REJECTED = frozenset({400, 403, 405, 413, 415, 422})


@dataclass
class Options:
    """Timing and policy of one agent."""

    node: str
    interval: float = 60.0  # seconds between discovery passes
    jitter: float = 0.1  # each interval is stretched or shrunk by up to this fraction
    prefixes: tuple[str, ...] = DEFAULT_MANAGED_PREFIXES
    take_over: bool = False  # adopt foreign keys on the first pass (migration)
    backoff_base: float = 0.5  # first retry after a 5xx or transport error
    backoff_cap: float = 60.0
    rejected_retry: float = 300.0  # 403/422 and friends
    conflict_retries: int = 10
    watch_timeout: float = 3600.0  # server-side watch timeout (jittered)
    startup_wait: float = 2.0  # how long a first pass waits for the watch's initial read
    event_every: float = 600.0  # the same Event is posted at most this often


class Agent:
    """One Node's labeler. `run()` blocks until `stop()`; `sync()` is one reconcile."""

    def __init__(self, api: NodeApi, discover: Callable[[], Discovery], installed: Iterable[str],
                 options: Options, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:
        self.api = api
        self.discover = discover
        self.installed = tuple(installed)
        self.options = options
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        api.on_request = self.metrics.request
        self.evidence: Evidence | None = None
        self.ready = False  # the first pass has left the Node matching discovery
        self.heartbeat = time.monotonic()
        self.writes = 0
        self._take_over = options.take_over
        self._lock = threading.Lock()
        self._live: dict[str, Any] | None = None  # latest Node seen by the watch
        self._fresh = False  # _live follows a running watch
        self._pending_rv: str | None = None  # our own write, not yet seen on the watch
        self._pending_since = 0.0
        self._seen: deque[str | None] = deque(maxlen=32)  # versions the watch delivered
        self._reread = False  # a 409 said _live is stale: GET before the next decision
        self._synced = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drift = False
        self._pass_now = False
        self._watch: NodeWatch | None = None
        self._watch_thread: threading.Thread | None = None
        self._sources = SourceReporter(self.metrics)
        self._conflicts: frozenset[str] = frozenset()
        self._skipped: frozenset[str] = frozenset()
        self._problems: dict[str, str] = {}  # the last plan's problems, reported once each
        # What this process last left on the Node, {key: (value, source)}: it restores
        # ownership when another writer deletes or mangles the ledger.
        self._written: dict[str, tuple[str, str | None]] = {}
        self._events: dict[tuple[str, str], float] = {}
        self._drift_streak = 0
        self._last_drift_write = float("-inf")
        self._drift_not_before = 0.0

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> None:
        """Pass after pass until `stop()`; API failures are retried, never fatal."""
        self._watch_thread = threading.Thread(target=self._watch_loop, daemon=True,
                                              name=f"watch-{self.options.node}")
        self._watch_thread.start()
        next_pass = time.monotonic()
        retry_at: float | None = None
        failures = 0
        pending = False  # discovery ran but its result is not on the Node yet
        try:
            while not self._stopping.is_set():
                now = self.heartbeat = time.monotonic()
                if now >= next_pass or self._pass_now:
                    self._pass_now = False
                    try:
                        self.discover_now()
                    except Exception:  # sources are contained; this is a last resort
                        log.exception("discovery failed; keeping the previous result")
                    next_pass = now + self._jittered(self.options.interval)
                    pending = True
                drifted = self._drift and not pending
                due = pending or drifted
                if drifted and now < self._drift_not_before:
                    due = False  # another writer keeps undoing us: slow down
                if due and (retry_at is None or now >= retry_at):
                    self._drift = False
                    started = time.perf_counter()
                    try:
                        self.sync(drift=drifted)
                    except Exception as error:  # a bug must not end the loop either
                        failures += 1
                        if not isinstance(error, KubeError):
                            log.exception("unexpected error in a pass")
                            error = KubeError(None, "internal", str(error))
                        retry_at = now + self._retry_delay(error, failures)
                        pending = True
                        self.metrics.passes.labels("error").inc()
                    else:
                        failures, retry_at, pending = 0, None, False
                        self.metrics.passes.labels("ok").inc()
                        self.metrics.last_success.set(time.time())
                    self.metrics.pass_seconds.observe(time.perf_counter() - started)
                deadline = min(next_pass, retry_at if retry_at is not None else next_pass)
                if self._drift and not pending:
                    deadline = min(deadline, max(self._drift_not_before, retry_at or 0.0))
                self._wake.wait(max(0.0, deadline - time.monotonic()))
                self._wake.clear()
        finally:
            self._close_watch()

    def poke(self) -> None:
        """Run the next pass now instead of at the end of the interval."""
        self._pass_now = True
        self._wake.set()

    def stop(self) -> None:
        """Ask `run()` to return; a request in flight completes first. Signal-safe."""
        self._stopping.set()
        self._wake.set()
        self._synced.set()  # a first pass waiting for the watch's read need not wait
        self._close_watch()

    def alive(self) -> bool:
        """False when the loop has not come round for far longer than an interval."""
        return time.monotonic() - self.heartbeat < 2 * self.options.interval + 60

    # -- one pass ---------------------------------------------------------------------

    def discover_now(self) -> Evidence:
        """Run discovery, log what changed about the sources, and keep the evidence."""
        started = time.perf_counter()
        discovery = self.discover()
        evidence = evidence_from(discovery, self.installed)
        self._report_sources(discovery, evidence)
        log.debug("discovery took %.1f ms", (time.perf_counter() - started) * 1000)
        self.evidence = evidence
        return evidence

    def sync(self, drift: bool = False) -> Plan:
        """Make the Node match the last discovery: at most one patch, or none at all."""
        if self.evidence is None:
            self.discover_now()
        assert self.evidence is not None
        for attempt in range(self.options.conflict_retries):
            if attempt and self._stopping.is_set():
                break
            node = self._current_node()
            decided = plan(self.evidence, node_labels(node), node_annotations(node),
                           self.options.prefixes, self._take_over, self._written)
            self._report_plan(decided)
            body = decided.patch(resource_version(node))
            if body is None:
                self._written = decided.written(node_labels(node))
                self._settled(decided)
                return decided
            try:
                updated = self.api.patch(body)
            except KubeError as error:
                if error.code != 409:
                    raise
                # Someone changed the Node since we read it: decide again on fresh state.
                with self._lock:
                    self._reread = True
                time.sleep(self.rng.uniform(0, 0.02 * attempt))
                continue
            self._written = decided.written(node_labels(node))
            self._wrote(decided, updated, drift)
            return decided
        raise KubeError(409, "Conflict", f"the Node kept changing under {attempt + 1} attempts")

    def _current_node(self) -> dict[str, Any]:
        if self._watch_thread is not None and not self._synced.is_set():
            self._synced.wait(self.options.startup_wait)  # the watch is reading it anyway
        with self._lock:
            if self._fresh and self._live is not None and not self._reread:
                return self._live
        node = self.api.get()
        with self._lock:
            self._reread = False
        return node

    def _settled(self, decided: Plan) -> None:
        self._take_over = False
        self.ready = True
        self.metrics.labels_published.set(len(decided.ledger.owners))

    def _wrote(self, decided: Plan, updated: dict[str, Any], drift: bool) -> None:
        self.writes += 1
        version = resource_version(updated)
        with self._lock:
            self._live = updated
            # Until the watch shows our write, what it delivers is older than `updated`;
            # unless it already has (the event can beat the patch response).
            if version not in self._seen:
                self._pending_rv = version
                self._pending_since = time.monotonic()
        self._settled(decided)
        written = [c for c in decided.changes if c.action in WRITES]
        for change in written:
            self.metrics.label_changes.labels(change.action).inc()
        summary = _summary(written)
        log.info("updated node %s: %s", self.options.node, summary,
                 extra={"node": self.options.node, "drift": drift,
                        "changes": {c.key: [c.old, c.new] for c in written},
                        "resourceVersion": resource_version(updated)})
        self._event("Normal", "LabelsUpdated", summary)
        if drift:
            self._note_drift_write([c.key for c in written])

    def _note_drift_write(self, keys: Sequence[str]) -> None:
        now = time.monotonic()
        recent = now - self._last_drift_write < self.options.interval
        self._drift_streak = self._drift_streak + 1 if recent else 1
        self._last_drift_write = now
        cap = min(self.options.backoff_cap, self.options.interval)
        self._drift_not_before = now + min(cap, 2.0 ** (self._drift_streak - 1) - 1)
        if self._drift_streak == 3:
            message = ("another writer keeps changing labels this agent owns "
                       f"({', '.join(sorted(keys)[:10])}); restoring them with backoff")
            log.warning("%s", message, extra={"node": self.options.node})
            self._event("Warning", "LabelFight", message)

    def _retry_delay(self, error: KubeError, failures: int) -> float:
        node = self.options.node
        if error.code in REJECTED:
            message = f"the API server rejected the label patch ({error.code}): {error.message}"
            log.error("%s; retrying in about %.0f s", message, self.options.rejected_retry,
                      extra={"node": node, "code": error.code})
            self._event("Warning", "LabelPatchRejected", message)
            return self._jittered(self.options.rejected_retry)
        if error.code == 429 and error.retry_after:
            return error.retry_after + self.rng.uniform(0, 1)
        exponential = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (failures - 1))
        delay = exponential * self.rng.uniform(0.5, 1.0)
        level = logging.WARNING if failures <= 3 or failures % 10 == 0 else logging.DEBUG
        log.log(level, "cannot reach or update node %s (%s); retry %d in %.1f s", node,
                error, failures, delay, extra={"node": node, "code": error.kind})
        return delay

    def _jittered(self, seconds: float) -> float:
        spread = self.options.jitter
        return seconds * self.rng.uniform(1 - spread, 1 + spread)

    # -- reporting --------------------------------------------------------------------

    def _report_sources(self, discovery: Discovery, evidence: Evidence) -> None:
        for problems in self._sources.report(discovery, evidence):
            # Dropped invalid labels and failing probes show on the Node itself.
            self._event("Warning", "SourceProblem", "; ".join(problems))

    def _report_plan(self, decided: Plan) -> None:
        conflicts = frozenset(c.key for c in decided.by_action(CONFLICT))
        self.metrics.conflicts.set(len(conflicts))
        if conflicts - self._conflicts:
            details = "; ".join(f"{c.key}={c.old} (we found {c.found})"
                                for c in decided.by_action(CONFLICT) if c.key in conflicts)
            message = ("labels held by another writer with different values are left "
                       f"alone: {details}; 'nodefeatures apply --take-over' adopts them")
            log.warning("%s", message, extra={"node": self.options.node})
            self._event("Warning", "LabelConflict", message)
        self._conflicts = conflicts
        skipped = frozenset(c.key for c in decided.by_action(SKIP))
        if skipped - self._skipped:
            log.warning("not publishing labels outside the managed prefixes (%s): %s",
                        ", ".join(self.options.prefixes), ", ".join(sorted(skipped)))
        self._skipped = skipped
        for kind, message in sorted(decided.problems.items()):
            if self._problems.get(kind) == message:
                continue  # said already
            log.warning("%s", message, extra={"node": self.options.node})
            # Labels held back by a budget are a source problem like a sanitised value.
            reason = "SourceProblem" if kind.startswith("budget:") else "LedgerProblem"
            self._event("Warning", reason, message)
            if kind == "ledger-restored":
                self.metrics.ledger_restores.inc()
        self._problems = dict(decided.problems)

    def _event(self, kind: str, reason: str, message: str) -> None:
        now = time.monotonic()
        key = (reason, message)
        if now - self._events.get(key, float("-inf")) < self.options.event_every:
            return
        # Forget what can no longer suppress anything, so distinct messages don't pile up.
        horizon = now - self.options.event_every
        self._events = {k: t for k, t in self._events.items() if t > horizon}
        self._events[key] = now
        try:
            self.api.event(kind, reason, message)
        except KubeError as error:
            log.debug("cannot post Event %s: %s", reason, error)

    # -- the watch --------------------------------------------------------------------

    def _watch_loop(self) -> None:
        """Follow our own Node; on expiry (410) start over from a fresh GET."""
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    node = self.api.get()
                    version = resource_version(node)
                    self._accept(node, listed=True)
                timeout = int(self._jittered(self.options.watch_timeout))
                watch = self.api.watch(str(version), max(timeout, 1))
                self._watch = watch
                if self._stopping.is_set():
                    watch.close()  # stop() may have run before it could see this watch
                    break
                with self._lock:
                    self._fresh = True
                for event in watch.events():
                    failures = 0
                    kind, obj = event.get("type"), event["object"]
                    if kind == "ERROR":
                        code = obj.get("code")
                        if code == 410:
                            version = None  # too old to resume: read the Node again
                            break
                        raise KubeError(code, str(obj.get("reason", "Error")),
                                        str(obj.get("message", "")))
                    version = resource_version(obj) or version
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        log.warning("node %s was deleted", self.options.node)
                        with self._lock:
                            self._live = None
                        continue
                    self._accept(obj)
            except KubeError as error:
                with self._lock:
                    self._fresh = False
                if self._stopping.is_set():
                    break
                if error.code == 410:
                    version = None
                failures += 1
                delay = min(self.options.backoff_cap,
                            self.options.backoff_base * 2 ** (failures - 1))
                delay *= self.rng.uniform(0.5, 1.0)
                log.debug("watch on node %s ended (%s); again in %.1f s", self.options.node,
                          error, delay)
                self._stopping.wait(delay)
            finally:
                self._watch = None

    def _accept(self, node: dict[str, Any], listed: bool = False) -> None:
        version = resource_version(node)
        with self._lock:
            self._seen.append(version)
            if listed:
                self._pending_rv = None
                self._fresh = True  # just read: current until the watch says otherwise
            elif self._pending_rv is not None:
                if version == self._pending_rv or time.monotonic() - self._pending_since > 60:
                    self._pending_rv = None
                else:
                    return  # older than our own write, which the watch has yet to show
            self._live = node
        self._synced.set()
        self._check_drift(node)

    def _check_drift(self, node: dict[str, Any]) -> None:
        evidence = self.evidence
        if evidence is None or not self.ready:
            return
        decided = plan(evidence, node_labels(node), node_annotations(node),
                       self.options.prefixes, self._take_over, self._written)
        if decided.needs_write:
            self._drift = True
            self._wake.set()

    def _close_watch(self) -> None:
        watch = self._watch  # no lock: this may run inside a signal handler
        if watch is not None:
            watch.close()


class SourceReporter:
    """Logs and counts each source's failures and warnings once per change of state."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._state: dict[str, tuple[Any, ...]] = {}

    def report(self, discovery: Discovery, evidence: Evidence) -> list[list[str]]:
        """Update metrics and logs; the problems of each source whose state just changed."""
        self.metrics.sources((r.name, r.trusted) for r in evidence.reports)
        changed: list[list[str]] = []
        for result in discovery.results:
            self.metrics.source_warnings.labels(result.name).set(len(result.warnings))
            if result.name == "nvidia":
                self.metrics.nvml_initialized(_nvml_state(result))
            state = (result.error, result.complete, tuple(result.warnings))
            previous = self._state.get(result.name)
            if previous == state:
                continue  # say it once, not every pass
            self._state[result.name] = state
            problems = []
            if result.error:
                problems.append(f"source {result.name} failed: {result.error}; "
                                "its labels are kept")
            elif not result.complete:
                problems.append(f"source {result.name} could not read everything; "
                                "its labels are kept")
            elif previous is not None and (previous[0] or not previous[1]):
                log.info("source %s works again", result.name, extra={"source": result.name})
            problems += [f"{result.name}: {warning}" for warning in result.warnings]
            for problem in problems:
                log.warning("%s", problem, extra={"source": result.name})
            if problems:
                changed.append(problems)
        return changed


def _summary(changes: Sequence[Any]) -> str:
    counts = {action: sum(1 for c in changes if c.action == action) for action in WRITES}
    head = ", ".join(f"{n} {action}" for action, n in counts.items() if n)
    keys = ", ".join(c.key for c in changes[:8]) + (" ..." if len(changes) > 8 else "")
    return f"{head or 'ledger only'}" + (f" ({keys})" if keys else "")


def _nvml_state(result: Any) -> bool | None:
    """NVML init state from the nvidia source's `nvml.status` attribute.

    None when NVML was not tried (no NVIDIA GPU on the PCI bus) or not reported.
    """
    if result.error:
        return False
    features = result.features
    fact = features.attributes.get("nvml", {}).get("status") if features else None
    if fact is None or fact.value == "skipped":
        return None
    return fact.value == "ok"


# -- one-shot commands: diff, apply, prune ----------------------------------------------


def write_once(api: NodeApi, decide: Callable[[dict[str, Any]], Plan], *, send: bool = True,
               dry_run: bool = False, attempts: int = 10) -> tuple[Plan, dict[str, Any] | None,
                                                                   dict[str, Any]]:
    """GET, decide, and (when `send`) patch, re-reading on 409: (plan, patch, node read)."""
    for _ in range(attempts):
        node = api.get()
        decided = decide(node)
        body = decided.patch(resource_version(node))
        if body is None or not send:
            return decided, body, node
        try:
            api.patch(body, dry_run=dry_run)
        except KubeError as error:
            if error.code == 409:
                continue
            raise
        return decided, body, node
    raise KubeError(409, "Conflict", f"the Node kept changing under {attempts} attempts")


def reconcile_once(api: NodeApi, evidence: Evidence, prefixes: Sequence[str], take_over: bool,
                   *, send: bool = True, dry_run: bool = False
                   ) -> tuple[Plan, dict[str, Any] | None, dict[str, Any]]:
    """One `apply` (or `diff` with send=False)."""
    return write_once(api, lambda node: plan(evidence, node_labels(node), node_annotations(node),
                                             prefixes, take_over), send=send, dry_run=dry_run)


def prune_once(api: NodeApi, prefixes: Sequence[str], sources: Sequence[str], *,
               dry_run: bool = False) -> tuple[Plan, dict[str, Any] | None, dict[str, Any]]:
    """Remove the labels we own (optionally only those of some sources) and the ledger."""
    return write_once(api, lambda node: prune_plan(node_labels(node), node_annotations(node),
                                                   prefixes, sources), dry_run=dry_run)


class FileAgent:
    """`run --output-file`: the same loop and rules, publishing to an NFD features.d file."""

    def __init__(self, path: str, discover: Callable[[], Discovery], installed: Iterable[str],
                 options: Options, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:
        self.path = path
        self.discover = discover
        self.installed = tuple(installed)
        self.options = options
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.ready = False
        self.writes = 0
        self.heartbeat = time.monotonic()
        self._stopping = threading.Event()
        self._sources = SourceReporter(self.metrics)
        self._problems: dict[str, str] = {}
        self._skipped: frozenset[str] = frozenset()

    def run(self) -> None:
        from nodefeatures.cluster import featurefile

        while not self._stopping.is_set():
            self.heartbeat = time.monotonic()
            started = time.perf_counter()
            discovery = self.discover()
            evidence = evidence_from(discovery, self.installed)
            self._sources.report(discovery, evidence)
            try:
                decided, written = featurefile.sync(self.path, evidence, self.options.prefixes)
            except OSError as error:
                log.error("cannot write %s: %s", self.path, error)
                self.metrics.passes.labels("error").inc()
            else:
                self.ready = True
                # A feature-file line outside the managed prefixes (profile.node.kubernetes.io/,
                # example.com/) is not published: say so once, as the node agent does.
                skipped = frozenset(c.key for c in decided.by_action(SKIP))
                if skipped - self._skipped:
                    log.warning("not publishing labels outside the managed prefixes (%s): %s",
                                ", ".join(self.options.prefixes), ", ".join(sorted(skipped)))
                self._skipped = skipped
                self.metrics.passes.labels("ok").inc()
                self.metrics.last_success.set(time.time())
                self.metrics.labels_published.set(len(decided.ledger.owners))
                for kind, message in sorted(decided.problems.items()):
                    if self._problems.get(kind) != message:
                        log.warning("%s", message)
                self._problems = dict(decided.problems)
                if written:
                    self.writes += 1
                    changes = [c for c in decided.changes if c.action in WRITES]
                    log.info("updated %s: %s", self.path, _summary(changes))
            self.metrics.pass_seconds.observe(time.perf_counter() - started)
            interval = self.options.interval * self.rng.uniform(1 - self.options.jitter,
                                                                1 + self.options.jitter)
            self._stopping.wait(interval)

    def stop(self) -> None:
        self._stopping.set()

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < 2 * self.options.interval + 60
