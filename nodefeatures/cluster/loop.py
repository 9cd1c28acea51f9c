"""What the agent loops share: a wake-up that runs the next pass early, a stop, and the
heartbeat /healthz reads. The Node agent (agent.py) adds its watch and confinement to
each; `run --output-file` and `run --output nodefeature` need no more than this."""

from __future__ import annotations

import threading
import time
from typing import Any


class PassLoop:
    """Mixed into a loop class whose `options` has `interval` (seconds between passes)."""

    options: Any

    def __init__(self) -> None:
        self.heartbeat = time.monotonic()
        self._stopping = threading.Event()
        self._wake = threading.Event()

    def poke(self) -> None:
        """Run the next pass now instead of at the end of the interval."""
        self._wake.set()

    def stop(self) -> None:
        """Ask `run()` to return; a request in flight completes first. Signal-safe."""
        self._stopping.set()
        self._wake.set()

    def alive(self) -> bool:
        """False when no pass has started for two intervals and a minute: a stalled loop."""
        return time.monotonic() - self.heartbeat < stall_limit(self.options.interval)


def stall_limit(interval: float) -> float:
    """Seconds without a new pass after which a loop counts as stalled."""
    return 2 * interval + 60
