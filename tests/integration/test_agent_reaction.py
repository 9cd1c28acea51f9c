"""A real agent against the real API server: a feature file reaches the Node at once, and a
ConfigMap-like config update is applied, or rejected with an Event on the Node."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from agentkit import FAST, SA_USER, events_about, labels_of, os_release_root, start, wait_until

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import NodeApi
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.reload import LiveConfig, Reactor
from nodefeatures.discovery import config as configuration
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import load_sources, run_pass
from nodefeatures.discovery.source import Host

pytestmark = pytest.mark.integration

FEATURES_D = "etc/kubernetes/node-feature-discovery/features.d"
F = "feature.node.kubernetes.io/"


def _swap(directory: Path, version: int, text: str) -> None:
    """Update a ConfigMap mount as the kubelet does: new directory, atomic ..data rename."""
    data = directory / f"..v{version}"
    data.mkdir()
    (data / "config.yaml").write_text(text)
    (directory / "..data_tmp").symlink_to(data.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    if not (directory / "config.yaml").is_symlink():
        (directory / "config.yaml").symlink_to("..data/config.yaml")


def test_feature_file_and_config_changes_reach_the_node_at_once(
        apiserver: Any, node: str, tmp_path: Path) -> None:
    root = os_release_root(tmp_path)
    (root / FEATURES_D).mkdir(parents=True)
    mount = tmp_path / "config"
    mount.mkdir()
    _swap(mount, 1, "core:\n  sleepInterval: 1h\n")
    sources = load_sources(["local", "system"])[0]
    host = Host(root=HostRoot(root))

    def load() -> configuration.Config:
        return configuration.load(mount / "config.yaml", sources)

    metrics = Metrics()
    live = LiveConfig(load, load(), [str(mount / "config.yaml")], metrics)
    settings = {**FAST, "interval": 3600.0, "allow_unconfined": True}
    agent = Agent(NodeApi(apiserver.client_as(SA_USER), node),
                  lambda: run_pass(host, sources, live.config), list(sources),
                  Options(node=node, **settings), metrics)
    reactor = Reactor(agent, live, host.root, sources)
    assert reactor.start() and reactor.watcher.armed.wait(2)
    running = start(agent)
    try:
        wait_until(lambda: labels_of(apiserver, node).get(f"{F}system-os_release.ID"), 10,
                   "the first pass")
        dropped = time.monotonic()
        (root / FEATURES_D / "site").write_text("site-flag=yes\n")
        wait_until(lambda: labels_of(apiserver, node).get(f"{F}site-flag") == "yes", 2,
                   "the feature file's label within 2 s (the interval is an hour)")
        assert time.monotonic() - dropped < 2
        _swap(mount, 2, "core:\n  sleepInterval: 1h\n  labelDenyList: site-flag\n")
        wait_until(lambda: f"{F}site-flag" not in labels_of(apiserver, node), 5,
                   "the new config's deny list to remove the label")
        _swap(mount, 3, "core:\n  sleepInterval: whenever\n")
        wait_until(lambda: [e for e in events_about(apiserver, node)
                            if e.reason == "ConfigRejected"], 5, "the ConfigRejected Event")
        event = next(e for e in events_about(apiserver, node) if e.reason == "ConfigRejected")
        assert event.type == "Warning" and "core.sleepInterval" in event.message
        assert live.config.core["labelDenyList"] == "site-flag"  # the previous one stays
        assert metrics.registry.get_sample_value("nodefeatures_config_rejected") == 1
    finally:
        reactor.stop()
        running.stop()
