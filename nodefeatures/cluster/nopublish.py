"""nfd-worker's `core.noPublish`: discovery passes as usual, and nothing is published.

`run` with `core.noPublish: true` uses this runner instead of the node agent: it needs no
credentials, sends no request to the API server and writes no file. Each pass logs what
changed in the labels it would publish, so the option keeps its meaning in nfd-worker,
a dry run of the labeller.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable

from nodefeatures.cluster.agent import Options, SourceReporter
from nodefeatures.cluster.loop import PassLoop
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.reconcile import evidence_from
from nodefeatures.discovery.run import Discovery

log = logging.getLogger(__name__)


class NoPublishAgent(PassLoop):
    """The loop of `run` that publishes nothing: `run()` until `stop()`."""

    def __init__(self, discover: Callable[[], Discovery], installed: Iterable[str],
                 options: Options, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.discover = discover
        self.installed = tuple(installed)
        self.options = options
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.ready = False
        self.writes = 0  # never anything: it publishes nothing
        self.labels: dict[str, str] = {}  # what the last pass would publish
        self._sources = SourceReporter(self.metrics)

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self.heartbeat = time.monotonic()
            started = time.perf_counter()
            discovery = self.discover()
            self._sources.report(discovery, evidence_from(discovery, self.installed))
            found = discovery.values()
            added = sorted(k for k in found if k not in self.labels)
            changed = sorted(k for k in found if k in self.labels and found[k] != self.labels[k])
            gone = sorted(k for k in self.labels if k not in found)
            if added or changed or gone or not self.ready:
                log.info("core.noPublish: not publishing %d labels (%d new, %d changed, "
                         "%d gone since the last pass)", len(found), len(added), len(changed),
                         len(gone))
                for key in added + changed:
                    log.debug("would publish %s=%s", key, found[key])
            self.labels = found
            self.ready = True
            self.metrics.passes.labels("ok").inc()
            self.metrics.last_success.set(time.time())
            self.metrics.pass_seconds.observe(time.perf_counter() - started)
            spread = self.options.jitter
            self._wake.wait(self.options.interval * self.rng.uniform(1 - spread, 1 + spread))
