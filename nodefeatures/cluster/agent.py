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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from nodefeatures.cluster import health as gpuhealth
from nodefeatures.cluster import outputs
from nodefeatures.cluster.confinement import (
    CONFINED,
    DEFAULT_POLICY,
    REFUSED,
    UNANSWERED,
    UNCONFINED,
    Proof,
    prove_confinement,
)
from nodefeatures.cluster.kube import (
    KubeError,
    NodeApi,
    NodeWatch,
    check_node,
    clamp_retry_after,
    node_labels,
    resource_version,
    version_order,
)
from nodefeatures.cluster.loop import PassLoop, stall_limit
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
    Scope,
    evidence_from,
    paused_sources,
    scope_of,
)
from nodefeatures.discovery.namespaces import EXTENDED_RESOURCES, OUTPUTS
from nodefeatures.discovery.run import Discovery

log = logging.getLogger(__name__)

WRITES = (ADD, CHANGE, REMOVE, ADOPT)
# A pass that a poke asks for (a changed NFD object or setting) starts this long, or as
# long as the last pass took, after the last one ended: a writer changing an object
# hundreds of times a second costs a few passes a second, and at most half a core.
POKE_SPACING = 0.2
# Events about NFD objects' problems one plan posts, then one that counts the rest: a
# thousand broken cluster-wide objects would otherwise be a thousand Events per Node.
MAX_OBJECT_EVENTS = 10
# The admission policy reads the label namespaces ConfigMap through a cache of its own,
# which may follow an edit some seconds after the agent's watch: this long after a change
# of the setting, a refused write is retried with the ordinary backoff, not rejected_retry.
SETTING_SETTLE = 60.0
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
    instance: str = ""  # whose ledger this agent keeps ("" the default instance)
    # An instance that must run wherever a NVIDIA PCI label holds (deploy/gpu's GPU agent);
    # its ledger absent that long is reported (Event GPUAgentMissing, a metric).
    expect_instance: str | None = None
    expect_grace: float = 300.0
    backoff_base: float = 0.5  # first retry after a 5xx or transport error
    backoff_cap: float = 60.0
    rejected_retry: float = 300.0  # 403/422 and friends
    conflict_retries: int = 10
    watch_timeout: float = 3600.0  # server-side watch timeout (jittered)
    startup_wait: float = 2.0  # how long a first pass waits for the watch's initial read
    event_every: float = 600.0  # the same Event is posted at most this often
    # A watch that keeps failing (other than the API being unreachable) for this long
    # fails /healthz; None: as long as a stalled loop may go unnoticed, 2 intervals + 60 s.
    watch_grace: float | None = None
    # Writes need proof that the own-node admission policy holds this agent (see
    # prove_confinement); allow_unconfined skips that on clusters without the policy API.
    allow_unconfined: bool = False
    confinement_policy: str = DEFAULT_POLICY
    # Also check that the policy's binding covers every Node (confinement.reach); off
    # only where a policy is bound to some Nodes on purpose, as a shared test server's.
    confinement_reach: bool = True
    confinement_every: float = 300.0  # re-proved this often (jittered) while confined
    unconfined_retry: float = 30.0  # checked again this often while not confined


def backoff(base: float, cap: float, failures: int) -> float:
    """`base` doubled for each failure after the first, at most `cap`.

    The exponent is bounded: 2 ** 1024 is past a float, and an outage long enough to fail
    that often must not raise OverflowError where the delay is computed.
    """
    return min(cap, base * 2.0 ** min(max(failures - 1, 0), 64))


class ScopeSource(Protocol):
    """Where the keys the agent may touch come from (namespaces.LabelNamespacesSetting)."""

    def scope(self) -> Scope | None:
        """The scope in force; None while it is not known, and then nothing is written."""

    def why(self) -> str:
        """Why it is not known."""


class Unconfined(Exception):
    """A write is due but confinement is not proven: nothing is sent."""


class Held(Unconfined):
    """A write is due but what the agent may write is not known yet: nothing is sent."""


class Agent:
    """One Node's labeler. `run()` blocks until `stop()`; `sync()` is one reconcile."""

    def __init__(self, api: NodeApi, discover: Callable[..., Discovery], installed: Iterable[str],
                 options: Options, metrics: Metrics | None = None,
                 rng: random.Random | None = None, *,
                 extend: Callable[[Discovery, Evidence], Evidence] | None = None,
                 scope: ScopeSource | None = None) -> None:
        self.api = api
        self.discover = discover
        # What cluster objects add to a pass (nfdapi.ClusterObjects.extend).
        self.extend = extend
        # The keys the agent may touch, when the cluster's setting decides (namespaces.py).
        self.scope = scope
        self.installed = tuple(installed)
        self.options = options
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        api.on_request = self.metrics.request
        self.evidence: Evidence | None = None
        self._passed = False
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
        # The cluster's objects or setting changed: evaluate them again over the last
        # discovery, without running the sources (refresh).
        self._refresh_now = False
        self._discovery: Discovery | None = None
        self._poke_not_before = 0.0  # a poke's pass starts no earlier (POKE_SPACING)
        self._watch: NodeWatch | None = None
        self._watch_thread: threading.Thread | None = None
        self._sources = SourceReporter(self.metrics)
        self._conflicts: frozenset[str] = frozenset()
        self._skipped: frozenset[str] = frozenset()
        self._problems: dict[str, str] = {}  # the last plan's problems, reported once each
        self._missing_since: dict[str, float] = {}  # instance-missing problems: first seen
        # What this process last left on the Node, {key: (value, source)}: it restores
        # ownership when another writer deletes or mangles the ledger.
        self._written: dict[str, tuple[str, str | None]] = {}
        self._written_outputs: dict[str, Any] = {}  # the same, of each rule output kind
        self._events: dict[tuple[str, str], float] = {}
        self._drift_streak = 0
        self._last_drift_write = float("-inf")
        self._drift_not_before = 0.0
        self._held_said = ""  # the last reason for holding writes that was logged
        self._proof: Proof | None = None
        self._proven_at = float("-inf")  # monotonic time of the last proof of confinement
        self._probe_at = 0.0  # when to probe next: at once on start
        self._probe_failures = 0
        self._reported: tuple[str, float] | None = None  # (state, when) last logged loudly
        self._watch_failing_since: float | None = None
        self._watch_error = ""
        # Sources the Node's labels paused in the last discovery (GPU Operator, MIG manager).
        self._paused: dict[str, str] = {}
        # The GPU health condition: what the last discovery showed, and the last one sent
        # with the resourceVersion of its reply (a copy older than that predates it).
        self._health: gpuhealth.GpuHealth | None = None
        self._health_sent: tuple[tuple[str | None, str, str], str | None] | None = None
        self._health_not_before = 0.0  # after a rejected status patch

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> None:
        """Pass after pass until `stop()`; API failures are retried, never fatal."""
        watch = threading.Thread(target=self._watch_loop, daemon=True,
                                 name=f"watch-{self.options.node}")
        watch.start()
        self._watch_thread = watch  # only once started: health() reads a dead one as failed
        while not self._stopping.is_set():
            try:
                self._loop()
            except Exception:  # a bug in the loop itself: log it, back off, start over
                log.exception("unexpected error in the agent loop; starting it over")
                self._stopping.wait(1.0)
        self._close_watch()

    def _loop(self) -> None:
        next_pass = time.monotonic()
        retry_at: float | None = None
        failures = 0
        pending = False  # discovery ran but its result is not on the Node yet
        try:
            while not self._stopping.is_set():
                now = self.heartbeat = time.monotonic()
                if not self.options.allow_unconfined and now >= self._probe_at:
                    self._check_confinement()
                poked = self._pass_now and now >= self._poke_not_before
                refresh = self._refresh_now and now >= self._poke_not_before
                if now >= next_pass or poked or (refresh and self._discovery is None):
                    self._pass_now = self._refresh_now = False
                    try:
                        self.discover_now()
                    except Exception:  # sources are contained; this is a last resort
                        log.exception("discovery failed; keeping the previous result")
                    # At most half the time in passes, however fast the pokes come.
                    took = time.monotonic() - now
                    self._poke_not_before = now + took + max(POKE_SPACING, took)
                    next_pass = now + self._jittered(self.options.interval)
                    pending = True
                elif refresh:
                    self._refresh_now = False
                    try:
                        self.reevaluate()
                    except Exception:  # as a pass: the previous evidence stays
                        log.exception("evaluating the cluster's objects failed")
                    took = time.monotonic() - now
                    self._poke_not_before = now + took + max(POKE_SPACING, took)
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
                    except Held as held:
                        # The setting's watch pokes the loop when it arrives.
                        retry_at, pending = now + 5.0, True
                        self.metrics.passes.labels("held").inc()
                        if str(held) != self._held_said:
                            self._held_said = str(held)
                            log.warning("%s; nothing is written until then", held,
                                        extra={"node": self.options.node})
                    except Unconfined:
                        retry_at, pending = self._probe_at, True  # resume once proven
                        self.metrics.passes.labels("unconfined").inc()
                    except Exception as error:  # a bug must not end the loop either
                        failures += 1
                        if not isinstance(error, KubeError):
                            log.exception("unexpected error in a pass")
                            error = KubeError(None, "internal", str(error))
                        # From the failure, not the iteration's start: the backoff
                        # is the server's rest, whatever the pass cost before it.
                        retry_at = time.monotonic() + self._retry_delay(error, failures)
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
                if not self.options.allow_unconfined:
                    deadline = min(deadline, self._probe_at)
                if self._pass_now or self._refresh_now:
                    deadline = min(deadline, self._poke_not_before)
                self._wake.wait(max(0.0, deadline - time.monotonic()))
                self._wake.clear()
        finally:
            self._close_watch()

    def poke(self) -> None:
        """Run the next pass now instead of at the end of the interval."""
        self._pass_now = True
        self._wake.set()

    def refresh(self) -> None:
        """The cluster's objects or setting changed: apply them now, over the last
        discovery. The sources do not run again for it (on a GPU node that would be a
        round of NVML calls for a changed NodeFeatureRule); the next pass is at its time."""
        self._refresh_now = True
        self._wake.set()

    def post_event(self, kind: str, reason: str, message: str) -> None:
        """An Event on the Node, at most once per event period (a rejected config)."""
        self._event(kind, reason, message)

    def stop(self) -> None:
        """Ask `run()` to return; a request in flight completes first. Signal-safe."""
        self._stopping.set()
        self._wake.set()
        self._synced.set()  # a first pass waiting for the watch's read need not wait
        self._close_watch()

    @property
    def ready(self) -> bool:
        """A pass left the Node matching discovery, and writes are allowed."""
        return self._passed and self._may_write() and self._scope() is not None

    @ready.setter
    def ready(self, value: bool) -> None:
        self._passed = value

    def readiness(self) -> bool | str:
        """True when ready, else why not (the /readyz body)."""
        if self._scope() is None:
            return self._held() + "; nothing is written until then\n"
        if not self._may_write():
            proof = self._proof
            return (proof.message if proof is not None
                    else "confinement not proven yet") + "\n"
        return True if self._passed else "no successful pass yet\n"

    def alive(self) -> bool:
        """False when the loop has stalled or the watch is dead or keeps failing."""
        return self.health() is True

    def health(self) -> bool | str:
        """True when healthy, else what is wrong (the /healthz body)."""
        now = time.monotonic()
        limit = stall_limit(self.options.interval)
        if now - self.heartbeat >= limit:
            return f"loop stalled: no iteration for {now - self.heartbeat:.0f} s\n"
        thread = self._watch_thread
        if thread is not None and not thread.is_alive() and not self._stopping.is_set():
            return "the watch thread has ended: drift is no longer repaired\n"
        since = self._watch_failing_since
        grace = self.options.watch_grace if self.options.watch_grace is not None else limit
        if since is not None and now - since > grace:
            return (f"the watch on node {self.options.node} has failed for "
                    f"{now - since:.0f} s: {self._watch_error}\n")
        return True

    # -- one pass ---------------------------------------------------------------------

    def discover_now(self) -> Evidence:
        """Run discovery, log what changed about the sources, and keep the evidence.

        A source that the Node's labels pause (reconcile.paused_sources) is left out: the
        MIG manager pauses GFD's labels while it repartitions the GPUs, and NVML is not
        touched meanwhile. `discover` is then called with the names to leave out.
        """
        if self._watch_thread is not None and not self._synced.is_set():
            # The first pass needs the Node to know what is paused; it reads it anyway.
            self._synced.wait(self.options.startup_wait)
        with self._lock:
            live = self._live
        paused = paused_sources(node_labels(live)) if live is not None else {}
        self._report_paused(paused)
        started = time.perf_counter()
        discovery = self.discover(frozenset(paused)) if paused else self.discover()
        evidence = evidence_from(discovery, self.installed)
        if self.extend is not None:
            evidence = self.extend(discovery, evidence)
        self._report_sources(discovery, evidence)
        self._health = gpuhealth.gpu_health(discovery.results)
        log.debug("discovery took %.1f ms", (time.perf_counter() - started) * 1000)
        self._discovery = discovery
        self.evidence = evidence
        return evidence

    def reevaluate(self) -> Evidence:
        """The last discovery's evidence with the cluster's objects evaluated again."""
        discovery = self._discovery
        if discovery is None:
            return self.discover_now()
        evidence = evidence_from(discovery, self.installed)
        if self.extend is not None:
            evidence = self.extend(discovery, evidence)
        self.evidence = evidence
        return evidence

    def sync(self, drift: bool = False) -> Plan:
        """Make the Node match the last discovery: at most one patch, or none at all."""
        if self.evidence is None:
            self.discover_now()
        assert self.evidence is not None
        scope = self._scope()
        if scope is None:
            raise Held(self._held())
        for attempt in range(self.options.conflict_retries):
            if attempt and self._stopping.is_set():
                break
            node = self._current_node()
            decided = outputs.plan_node(self.evidence, node, scope, self._take_over,
                                        self._written, instance=self.options.instance,
                                        expect=self.options.expect_instance,
                                        written_outputs=self._written_outputs)
            self._report_plan(decided)
            body = decided.patch(resource_version(node))
            if body is None and decided.status_patch(None) is None:
                self._remember(decided, node)
                self._settled(decided)
                self._sync_condition(node)
                return decided
            self._require_confinement()
            patched: dict[str, Any] | None = None
            try:
                updated = patched = self.api.patch(body) if body is not None else None
                status = decided.status_patch(resource_version(updated or node))
                if status is not None:
                    # Extended resources and their ledger: the status subresource's.
                    updated = self.api.patch_status(status)
            except KubeError as error:
                if patched is not None:
                    # The labels' patch went through: it is a write, whatever follows.
                    self._wrote(replace(decided, outputs={
                        k: v for k, v in decided.outputs.items()
                        if k != EXTENDED_RESOURCES}), patched, drift)
                if error.code != 409:
                    raise
                # Someone changed the Node since we read it: decide again on fresh state.
                with self._lock:
                    self._reread = True
                time.sleep(self.rng.uniform(0, 0.02 * attempt))
                continue
            assert updated is not None
            self._remember(decided, node)
            self._wrote(decided, updated, drift)
            self._sync_condition(updated)
            return decided
        raise KubeError(409, "Conflict", f"the Node kept changing under {attempt + 1} attempts")

    # -- the GPU health condition -------------------------------------------------------

    def _condition_patch(self, node: dict[str, Any]) -> dict[str, Any] | None:
        """The status patch the condition needs on `node`, or None (also while it is
        paused, and while `node` predates our own last write of the same condition)."""
        health = self._health
        if health is None or "nvidia" in paused_sources(node_labels(node)):
            return None
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = gpuhealth.patch(health, node, now)
        sent = self._health_sent
        if body is not None and sent is not None and sent[0] == health.shown and \
                version_order(resource_version(node), sent[1]) == -1:
            return None  # the watch has yet to show what we sent
        return body

    def _sync_condition(self, node: dict[str, Any]) -> None:
        """Make the Node's NVIDIAGPUHealthy condition say what the last pass saw.

        One status patch when it differs, none otherwise; one Event per change of status.
        A rejected patch (an older ClusterRole without nodes/status, say) is reported and
        retried slowly; it never holds up the labels.
        """
        body = self._condition_patch(node)
        if body is None or time.monotonic() < self._health_not_before:
            return
        health = self._health
        assert health is not None
        self._require_confinement()
        sent = self._health_sent
        event = gpuhealth.transition(health, sent[0][0] if sent is not None
                                     else gpuhealth.shown(gpuhealth.current(node))[0])
        try:
            updated = self.api.patch_status(body)
        except KubeError as error:
            if error.code not in REJECTED:
                raise
            message = (f"the API server rejected the {gpuhealth.CONDITION} condition "
                       f"({error.code}): {error.message}")
            log.error("%s; retrying in about %.0f s", message, self.options.rejected_retry,
                      extra={"node": self.options.node, "code": error.code})
            self._event("Warning", "ConditionRejected", message)
            self._health_not_before = time.monotonic() + self._jittered(
                self.options.rejected_retry)
            return
        self.writes += 1
        self._health_sent = (health.shown, resource_version(updated))
        log.info("node %s: condition %s=%s (%s)", self.options.node, gpuhealth.CONDITION,
                 health.status if health.status is not None else "removed",
                 health.message or "no NVIDIA GPU", extra={"node": self.options.node})
        if event is not None:
            kind, reason, message = event
            try:  # each transition is worth its Event, however soon the last one was
                self.api.event(kind, reason, message)
            except KubeError as error:
                log.debug("cannot post Event %s: %s", reason, error)

    def _report_paused(self, paused: dict[str, str]) -> None:
        if paused == self._paused:
            return
        for source, why in sorted(paused.items()):
            if self._paused.get(source) != why:
                log.info("source %s paused by %s: it does not run, and its labels stay as "
                         "they are", source, why, extra={"node": self.options.node,
                                                         "source": source})
        for source in sorted(set(self._paused) - set(paused)):
            log.info("source %s resumed", source, extra={"node": self.options.node,
                                                         "source": source})
        self._paused = dict(paused)

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

    def _remember(self, decided: Plan, node: dict[str, Any]) -> None:
        self._written = decided.written(node_labels(node))
        self._written_outputs = outputs.written_after(decided, node)

    def _settled(self, decided: Plan) -> None:
        self._take_over = False
        self.ready = True
        self.metrics.labels_published.set(len(decided.ledger.owners))
        for kind in OUTPUTS:
            sub = decided.outputs.get(kind)
            self.metrics.outputs_published.labels(kind).set(
                len(sub.ledger.owners) if sub is not None else 0)

    def _wrote(self, decided: Plan, updated: dict[str, Any], drift: bool) -> None:
        self.writes += 1
        version = resource_version(updated)
        newer = None
        with self._lock:
            live = self._live
            if live is not None and version_order(version, resource_version(live)) == -1:
                # The watch already showed a later change than our write (another writer's,
                # in the instant between our patch and its reply): keep it, decide on it.
                newer = live
            else:
                self._live = updated
                # Until the watch shows our write, what it delivers is older than `updated`;
                # unless it already has (the event can beat the patch response).
                if version not in self._seen:
                    self._pending_rv = version
                    self._pending_since = time.monotonic()
        self._settled(decided)
        if newer is not None:
            self._check_drift(newer)
        written = [c for c in decided.changes if c.action in WRITES]
        for change in written:
            self.metrics.label_changes.labels(change.action).inc()
        summary = _summary(written)
        beyond = outputs.writes(decided)
        if beyond:
            summary += "; " + ", ".join(f"{c.action} {_OUTPUT_NOUN[kind]} {c.key}"
                                        for kind, c in beyond[:10])
            summary += f" and {len(beyond) - 10} more" if len(beyond) > 10 else ""
        log.info("updated node %s: %s", self.options.node, summary,
                 extra={"node": self.options.node, "drift": drift,
                        "changes": {c.key: [c.old, c.new] for c in written},
                        "outputs": {f"{kind}/{c.key}": [c.old, c.new] for kind, c in beyond},
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
        changed_at = getattr(self.scope, "changed_at", float("-inf"))
        if error.code in REJECTED and time.monotonic() - changed_at < SETTING_SETTLE:
            delay = backoff(self.options.backoff_base, self.options.backoff_cap, failures)
            log.warning("the API server rejected the label patch (%s) just after the label "
                        "namespaces changed: the admission policy may not have the new "
                        "setting yet; retrying in %.1f s: %s", error.code, delay,
                        error.message, extra={"node": node, "code": error.code})
            return delay * self.rng.uniform(0.5, 1.0)
        if error.code in REJECTED:
            message = f"the API server rejected the label patch ({error.code}): {error.message}"
            log.error("%s; retrying in about %.0f s", message, self.options.rejected_retry,
                      extra={"node": node, "code": error.code})
            self._event("Warning", "LabelPatchRejected", message)
            return self._jittered(self.options.rejected_retry)
        wait = clamp_retry_after(error.retry_after) if error.code == 429 else None
        if wait is not None:
            return wait + self.rng.uniform(0, 1)
        exponential = backoff(self.options.backoff_base, self.options.backoff_cap, failures)
        delay = exponential * self.rng.uniform(0.5, 1.0)
        level = logging.WARNING if failures <= 3 or failures % 10 == 0 else logging.DEBUG
        log.log(level, "cannot reach or update node %s (%s); retry %d in %.1f s", node,
                error, failures, delay, extra={"node": node, "code": error.kind})
        return delay

    # -- confinement ------------------------------------------------------------------

    def _may_write(self) -> bool:
        """Writes are allowed: unconfined by choice, or proven confined lately.

        A proof stays good for two probe periods, so one failed re-check (the API
        briefly unreachable) does not stop writes; an accepted probe ends it at once.
        """
        if self.options.allow_unconfined:
            return True
        return time.monotonic() - self._proven_at <= 2 * self.options.confinement_every

    def _require_confinement(self) -> None:
        """Before a write: re-prove confinement if the proof is old; raise if unproven."""
        if self.options.allow_unconfined:
            return
        if time.monotonic() - self._proven_at > self.options.confinement_every:
            self._check_confinement()
        if not self._may_write():
            raise Unconfined(self._proof.message if self._proof else "not proven")

    def _check_confinement(self) -> Proof:
        """Probe, record the outcome, schedule the next probe and report changes."""
        proof = prove_confinement(self.api, self.options.confinement_policy,
                                  self.options.confinement_reach)
        now = time.monotonic()
        previous, self._proof = self._proof, proof
        self.metrics.confinement_checks.labels(proof.state).inc()
        node = self.options.node
        if proof.state == CONFINED:
            self._proven_at = now
            self._probe_failures = 0
            self._probe_at = now + self._jittered(self.options.confinement_every)
            if previous is None or previous.state != CONFINED:
                resumed = previous is not None and previous.state in (UNCONFINED, REFUSED)
                log.info("%s; writes %s", proof.detail, "resume" if resumed else "are allowed",
                         extra={"node": node})
                if resumed:
                    self._event("Normal", "Confined", f"{proof.detail}; writes resume")
                self._reported = None
        else:
            if proof.state != UNANSWERED:
                self._proven_at = float("-inf")  # proof of the opposite: stop at once
            self._probe_failures += 1
            wait = self.options.unconfined_retry
            if proof.state == UNANSWERED:
                wait = min(wait, backoff(self.options.backoff_base, wait, self._probe_failures))
            self._probe_at = now + self._jittered(wait)
            self._report_unconfined(proof, now)
        self.metrics.confined.set(1 if self._may_write() else 0)
        return proof

    def _report_unconfined(self, proof: Proof, now: float) -> None:
        """Say it loudly when the state changes, and again every event period."""
        last = self._reported
        if last is not None and last[0] == proof.state and now - last[1] < max(
                self.options.event_every, self.options.unconfined_retry):
            return
        self._reported = (proof.state, now)
        node = self.options.node
        if proof.state == UNANSWERED:
            level = logging.WARNING if self._may_write() else logging.ERROR
            log.log(level, "cannot check confinement on node %s: %s%s", node, proof.detail,
                    "" if self._may_write() else "; not writing until it is proven",
                    extra={"node": node})
            return
        log.error("%s", proof.message, extra={"node": node, "confinement": proof.state})
        self._event("Warning", "Unconfined", proof.message)

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
            log.warning("not publishing labels outside what this agent may write (%s): %s",
                        self._scope(), ", ".join(sorted(skipped)))
        self._skipped = skipped
        problems = self._after_grace(decided.all_problems())
        posted, unposted = 0, 0
        reasons: set[str] = set()  # of the object problems not posted one by one
        for kind, message in sorted(problems.items()):
            if self._problems.get(kind) == message:
                continue  # said already
            log.warning("%s", message, extra={"node": self.options.node})
            if kind.startswith("instance-missing:"):
                self._event("Warning", "GPUAgentMissing", message)
                continue
            if kind.startswith("outputs-off:"):
                self._event("Warning", "NodeFeatureRuleOutputsOff", message)
                continue
            if kind.startswith(("object:", "objects:")):
                # A NodeFeatureRule or NodeFeature that fails, or a kind not followed.
                reason = _OBJECT_EVENTS.get(kind.split(":", 1)[1].split("/")[0],
                                            "NFDObjectProblem")
                if posted == MAX_OBJECT_EVENTS:
                    unposted += 1
                    reasons.add(reason)
                    continue
                posted += 1
                self._event("Warning", reason, message)
                continue
            # Labels held back by a budget are a source problem like a sanitised value.
            reason = "SourceProblem" if kind.startswith("budget:") else "LedgerProblem"
            self._event("Warning", reason, message)
            if kind == "ledger-restored":
                self.metrics.ledger_restores.inc()
        if unposted:
            self._event("Warning", reasons.pop() if len(reasons) == 1 else "NFDObjectProblem",
                        f"{unposted} more NFD objects with problems; the agent's log names "
                        "each")
        self._problems = problems

    def _scope(self) -> Scope | None:
        """The keys this agent may touch now; None while the cluster's setting is unknown."""
        if self.scope is None:
            return scope_of(self.options.prefixes)
        return self.scope.scope()

    def _held(self) -> str:
        return self.scope.why() if self.scope is not None else "no scope"

    def _after_grace(self, problems: Mapping[str, str]) -> dict[str, str]:
        """The plan's problems, less a missing instance still within its grace period: a
        GPU agent takes a while to start after the NVIDIA PCI label appears."""
        now = time.monotonic()
        missing = {k for k in problems if k.startswith("instance-missing:")}
        self._missing_since = {k: self._missing_since.get(k, now) for k in missing}
        late = {k for k in missing if now - self._missing_since[k] >= self.options.expect_grace}
        expected = self.options.expect_instance
        if expected is not None:
            self.metrics.instance_missing.labels(expected).set(
                1 if f"instance-missing:{expected}" in late else 0)
        return {k: v for k, v in problems.items() if k not in missing or k in late}

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
        """Follow our own Node; on expiry (410) start over from a fresh GET.

        Nothing ends this thread but `stop()`: every failure is logged, backed off and
        retried. A malformed object never becomes the live copy; it sends the watch back
        to a fresh GET, so what it may have carried is read properly.
        """
        version: str | None = None
        failures = 0
        name = self.options.node
        while not self._stopping.is_set():
            try:
                if version is None:
                    writes = self.writes
                    node = check_node(self.api.get(), name)
                    version = resource_version(node)
                    self._accept(node, listed=True, writes=writes)
                timeout = int(self._jittered(self.options.watch_timeout))
                watch = self.api.watch(str(version), max(timeout, 1))
                self._watch = watch
                if self._stopping.is_set():
                    watch.close()  # stop() may have run before it could see this watch
                    break
                with self._lock:
                    self._fresh = True
                for event in watch.events():
                    kind, obj = event.get("type"), event.get("object")
                    if kind == "ERROR" and isinstance(obj, dict):
                        code = obj.get("code")
                        if code == 410:
                            version = None  # too old to resume: read the Node again
                            break
                        raise KubeError(code if isinstance(code, int) else None,
                                        str(obj.get("reason", "Error")),
                                        str(obj.get("message", "")))
                    if kind == "BOOKMARK":
                        version = _bookmark_version(obj)
                        self._watch_works()
                        continue
                    if kind not in ("ADDED", "MODIFIED", "DELETED"):
                        raise KubeError(None, "invalid", f"watch event of type {kind!r}"[:100])
                    version = resource_version(check_node(obj, name))
                    failures = 0
                    self._watch_works()
                    if kind == "DELETED":
                        log.warning("node %s was deleted", name)
                        with self._lock:
                            self._live = None
                        continue
                    self._accept(obj)
                else:
                    self._watch_works()  # the server ended the watch: resume from `version`
            except Exception as error:
                with self._lock:
                    self._fresh = False
                if self._stopping.is_set():
                    break
                if not isinstance(error, KubeError):
                    log.exception("unexpected error in the watch on node %s", name)
                    error = KubeError(None, "internal", f"{type(error).__name__}: {error}")
                elif error.reason == "invalid":
                    log.warning("watch on node %s: %s; reading the Node again", name,
                                error.message, extra={"node": name})
                if error.code == 410 or error.reason in ("invalid", "internal"):
                    version = None
                failures += 1
                self._watch_failed(error)
                delay = backoff(self.options.backoff_base, self.options.backoff_cap, failures)
                delay *= self.rng.uniform(0.5, 1.0)
                log.debug("watch on node %s ended (%s); again in %.1f s", name, error, delay)
                self._stopping.wait(delay)
            finally:
                self._watch = None

    def _watch_works(self) -> None:
        self._watch_failing_since = None

    def _watch_failed(self, error: KubeError) -> None:
        """Count a failure towards /healthz, unless it is the API being unavailable.

        A restart cannot fix an unreachable or overloaded API server (the loop's own
        retries ride that out), but it may fix a watch that fails for any other reason.
        """
        unavailable = (error.code is None and error.reason in ("connection", "timeout", "tls")
                       ) or (error.code is not None and (error.code >= 500 or error.code == 429))
        if unavailable:
            return
        self._watch_error = str(error)[:300]
        if self._watch_failing_since is None:
            self._watch_failing_since = time.monotonic()

    def _accept(self, node: dict[str, Any], listed: bool = False,
                writes: int | None = None) -> None:
        version = resource_version(node)
        with self._lock:
            self._seen.append(version)
            live = self._live
            order = version_order(version, resource_version(live)) if live is not None else None
            if listed:
                self._pending_rv = None
                self._fresh = True  # just read: current until the watch says otherwise
            if order == -1 and not (listed and writes == self.writes):
                # Older than our copy (a reply to our own write came first). A read that no
                # write of ours overlapped is current even so: versions could go backwards
                # only with an etcd restored from a backup, and then a fresh read wins.
                self._synced.set()
                return
            if order is not None:
                if self._pending_rv is not None and version_order(
                        version, self._pending_rv) in (0, 1):
                    self._pending_rv = None
            elif not listed and self._pending_rv is not None:
                if version == self._pending_rv or time.monotonic() - self._pending_since > 60:
                    self._pending_rv = None
                else:
                    return  # older than our own write, which the watch has yet to show
            self._live = node
        self._synced.set()
        self._check_drift(node)

    def _check_drift(self, node: dict[str, Any]) -> None:
        if set(self._paused) - set(paused_sources(node_labels(node))):
            self.poke()  # resumed: the paused source runs again at once, not next interval
        evidence = self.evidence
        if evidence is None or not self._passed:
            return
        scope = self._scope()
        if scope is None:
            return
        decided = outputs.plan_node(evidence, node, scope, self._take_over, self._written,
                                    instance=self.options.instance,
                                    written_outputs=self._written_outputs)
        if decided.needs_write or self._condition_patch(node) is not None:
            self._drift = True
            self._wake.set()

    def _close_watch(self) -> None:
        watch = self._watch  # no lock: this may run inside a signal handler
        if watch is not None:
            watch.close()


# Event reasons for the problems of cluster objects, by the kind in the problem's name.
_OUTPUT_NOUN = {"annotations": "annotation", "taints": "taint",
                "extendedResources": "extended resource"}
_OBJECT_EVENTS = {"nodefeaturerule": "NodeFeatureRuleProblem",
                  "nodefeature": "NodeFeatureProblem", "nodefeaturerules": "NFDAPIUnavailable",
                  "nodefeatures": "NFDAPIUnavailable"}


def _bookmark_version(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not version:
        raise KubeError(None, "invalid", "bookmark without a resourceVersion")
    return version


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

    None when NVML does not apply: not tried (no NVIDIA GPU on the PCI bus), not
    reported, or a Tegra SoC without the library (most Jetson releases ship none, and
    the SoC's labels come from host files), which is a normal node and no failure.
    """
    if result.error:
        return False
    features = result.features
    fact = features.attributes.get("nvml", {}).get("status") if features else None
    if fact is None or fact.value == "skipped":
        return None
    platform = features.attributes.get("node", {}).get("platform")
    if fact.value == "absent" and platform is not None and platform.value == "tegra":
        return None
    return fact.value == "ok"


# -- one-shot commands: diff, apply, prune ----------------------------------------------


def write_once(api: NodeApi, decide: Callable[[dict[str, Any]], Plan], *, send: bool = True,
               dry_run: bool = False, attempts: int = 10,
               guard: Callable[[], None] | None = None
               ) -> tuple[Plan, dict[str, Any] | None, dict[str, Any]]:
    """GET, decide, and (when `send`) patch, re-reading on 409: (plan, patch, node read).

    `guard` runs once before the first real (not dry-run) patch and may raise to stop it:
    the confinement check of `apply` and `prune`.
    """
    for _ in range(attempts):
        node = api.get()
        decided = decide(node)
        body = decided.patch(resource_version(node))
        status = decided.status_patch(resource_version(node))
        if (body is None and status is None) or not send:
            return decided, body, node
        if guard is not None and not dry_run:
            guard()
            guard = None
        try:
            updated = api.patch(body, dry_run=dry_run) if body is not None else node
            if status is not None:
                status = decided.status_patch(
                    resource_version(node) if dry_run else resource_version(updated))
                api.patch_status(status, dry_run=dry_run)
        except KubeError as error:
            if error.code == 409:
                continue
            raise
        return decided, body, node
    raise KubeError(409, "Conflict", f"the Node kept changing under {attempts} attempts")


def reconcile_once(api: NodeApi, evidence: Evidence, prefixes: Sequence[str] | Scope,
                   take_over: bool,
                   *, send: bool = True, dry_run: bool = False,
                   guard: Callable[[], None] | None = None, instance: str = "",
                   expect: str | None = None
                   ) -> tuple[Plan, dict[str, Any] | None, dict[str, Any]]:
    """One `apply` (or `diff` with send=False)."""
    return write_once(api, lambda node: outputs.plan_node(evidence, node, prefixes, take_over,
                                                          instance=instance, expect=expect),
                      send=send, dry_run=dry_run, guard=guard)


def prune_once(api: NodeApi, prefixes: Sequence[str] | Scope, sources: Sequence[str], *,
               dry_run: bool = False, guard: Callable[[], None] | None = None,
               instance: str = ""
               ) -> tuple[Plan, dict[str, Any] | None, dict[str, Any]]:
    """Remove the labels we own (optionally only those of some sources) and the ledger."""
    return write_once(api, lambda node: outputs.prune_node(node, prefixes, sources, instance),
                      dry_run=dry_run, guard=guard)


class FileAgent(PassLoop):
    """`run --output-file`: the same loop and rules, publishing to an NFD features.d file."""

    def __init__(self, path: str, discover: Callable[[], Discovery], installed: Iterable[str],
                 options: Options, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.path = path
        self.discover = discover
        self.installed = tuple(installed)
        self.options = options
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.ready = False
        self.writes = 0
        self._sources = SourceReporter(self.metrics)
        self._problems: dict[str, str] = {}
        self._skipped: frozenset[str] = frozenset()

    def run(self) -> None:
        from nodefeatures.cluster import featurefile

        while not self._stopping.is_set():
            self._wake.clear()  # a poke from here on runs another pass after this one
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
            self._wake.wait(interval)
