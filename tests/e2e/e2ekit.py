"""Helpers the e2e tests and their fixtures share (a module of its own: several
conftest.py files exist, so none can be imported by name)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nodecluster

NAMESPACE = "nodefeatures"


@dataclass
class Install:
    """The agent as `kubectl apply -k` installed it."""

    directory: Path  # the temporary copy of deploy/ with the image set
    image: str
    pod: str


def agent_pods(cluster: nodecluster.NodeCluster) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", NAMESPACE,
                            "-l", "app.kubernetes.io/name=nodefeatures")
    return list(pods["items"])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
