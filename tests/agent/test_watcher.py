"""Feature files and config changes reach the labels at once, through file notifications
on a real file system, and an invalid new config is rejected as a whole."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeNodeApi

from nodefeatures.cluster.agent import Agent, FileAgent, Options
from nodefeatures.cluster.metrics import Metrics
from nodefeatures.cluster.reload import LiveConfig, Reactor
from nodefeatures.cluster.watcher import ChangeWatcher, Target
from nodefeatures.discovery import config as configuration
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.run import load_sources, run_pass
from nodefeatures.discovery.source import Host

FEATURES_D = "etc/kubernetes/node-feature-discovery/features.d"
KEY = "feature.node.kubernetes.io/site-flag"
SOURCES = {name: source for name, source in load_sources(["local", "system"])[0].items()}


def wait_for(check: Callable[[], bool], timeout: float = 2.0) -> float:
    """Seconds until `check` holds; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        time.sleep(0.01)
    return time.monotonic() - started


class Calls:
    def __init__(self) -> None:
        self.kinds: list[set[str]] = []
        self.lock = threading.Lock()

    def __call__(self, kinds: set[str]) -> None:
        with self.lock:
            self.kinds.append(set(kinds))

    def __len__(self) -> int:
        with self.lock:
            return len(self.kinds)


@pytest.fixture
def watching(tmp_path: Path):
    started: list[ChangeWatcher] = []

    def start(*targets: Target, **timing: float) -> tuple[Calls, ChangeWatcher]:
        calls = Calls()
        watcher = ChangeWatcher(calls, **timing)
        assert watcher.start(targets)
        assert watcher.armed.wait(2)
        started.append(watcher)
        return calls, watcher

    yield start
    for watcher in started:
        watcher.stop()


def test_a_burst_of_writes_costs_one_callback(tmp_path: Path, watching: Any) -> None:
    (tmp_path / FEATURES_D).mkdir(parents=True)
    # Wider windows than run's (0.15 s quiet, 0.5 s at most), so that a loaded machine
    # writing slowly still makes one burst of it.
    calls, _ = watching(Target(HostRoot(tmp_path), FEATURES_D, "features"),
                        settle=0.5, latest=3.0)
    for index in range(50):
        (tmp_path / FEATURES_D / f"f{index}").write_text(f"a{index}=1\n")
    wait_for(lambda: len(calls) >= 1, timeout=5.0)
    time.sleep(1.0)
    assert len(calls) == 1 and calls.kinds[0] == {"features"}


@pytest.mark.parametrize("change", ["create", "edit", "delete", "rename", "atomic replace"])
def test_every_kind_of_change_is_seen(tmp_path: Path, watching: Any, change: str) -> None:
    directory = tmp_path / FEATURES_D
    directory.mkdir(parents=True)
    (directory / "f").write_text("a=1\n")
    calls, _ = watching(Target(HostRoot(tmp_path), FEATURES_D, "features"))
    if change == "create":
        (directory / "g").write_text("b=1\n")
    elif change == "edit":
        with (directory / "f").open("a") as stream:
            stream.write("c=1\n")
    elif change == "delete":
        (directory / "f").unlink()
    elif change == "rename":
        (directory / "f").rename(directory / "g")
    else:  # an editor's save: a hidden temporary file renamed over the old one
        (directory / ".f.swp").write_text("a=2\n")
        os.replace(directory / ".f.swp", directory / "f")
    wait_for(lambda: len(calls) >= 1)


def test_hidden_scratch_files_alone_are_not_a_change(tmp_path: Path, watching: Any) -> None:
    (tmp_path / FEATURES_D).mkdir(parents=True)
    calls, _ = watching(Target(HostRoot(tmp_path), FEATURES_D, "features"))
    (tmp_path / FEATURES_D / ".scratch").write_text("x")
    time.sleep(0.5)
    assert len(calls) == 0


def test_a_directory_that_appears_later_or_is_recreated_is_watched(
        tmp_path: Path, watching: Any) -> None:
    calls, _ = watching(Target(HostRoot(tmp_path), FEATURES_D, "features"))
    (tmp_path / FEATURES_D).mkdir(parents=True)  # the whole chain appears
    wait_for(lambda: len(calls) >= 1)
    time.sleep(0.3)
    before = len(calls)
    (tmp_path / FEATURES_D / "f").write_text("a=1\n")
    wait_for(lambda: len(calls) > before)
    # Deleted and made again: the new directory is watched.
    for name in os.listdir(tmp_path / FEATURES_D):
        (tmp_path / FEATURES_D / name).unlink()
    (tmp_path / FEATURES_D).rmdir()
    (tmp_path / FEATURES_D).mkdir()
    time.sleep(0.4)
    before = len(calls)
    (tmp_path / FEATURES_D / "g").write_text("b=1\n")
    wait_for(lambda: len(calls) > before)


def test_links_are_followed_inside_the_root_never_outside(tmp_path: Path,
                                                         watching: Any) -> None:
    """features.d is an absolute link: under the root it leads to root/srv/fd, which is
    watched; the same path outside the root is not."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "srv/fd").mkdir(parents=True)
    outside.mkdir()
    (root / FEATURES_D).parent.mkdir(parents=True)
    # An absolute link to where `outside` is, which inside the root means root/<outside>.
    inside_twin = root / str(outside).lstrip("/")
    inside_twin.mkdir(parents=True)
    (root / FEATURES_D).symlink_to(outside)
    calls, _ = watching(Target(HostRoot(root), FEATURES_D, "features"))
    (outside / "f").write_text("a=1\n")
    time.sleep(0.5)
    assert len(calls) == 0
    (inside_twin / "f").write_text("a=1\n")
    wait_for(lambda: len(calls) >= 1)


# -- a running agent ----------------------------------------------------------------------


class ConfigMap:
    """A directory laid out as the kubelet mounts a ConfigMap, updated as it does: a new
    timestamped directory, then an atomic rename of the `..data` link."""

    def __init__(self, directory: Path, name: str = "config.yaml") -> None:
        self.directory, self.name, self.version = directory, name, 0
        directory.mkdir(parents=True)

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def update(self, text: str) -> None:
        self.version += 1
        data = self.directory / f"..2026_12_01_{self.version:02d}"
        data.mkdir()
        (data / self.name).write_text(text)
        temporary = self.directory / "..data_tmp"
        temporary.symlink_to(data.name)
        old = os.readlink(self.directory / "..data") if self.version > 1 else None
        os.replace(temporary, self.directory / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.name}")
        if old is not None:
            for entry in (self.directory / old).iterdir():
                entry.unlink()
            (self.directory / old).rmdir()


def _live(config_map: ConfigMap, metrics: Metrics) -> LiveConfig:
    def load() -> configuration.Config:
        return configuration.load(config_map.path, SOURCES)

    return LiveConfig(load, load(), [str(config_map.path)], metrics)


def _host(tmp_path: Path) -> tuple[Path, Host]:
    root = tmp_path / "host"
    (root / FEATURES_D).mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    return root, Host(root=HostRoot(root))


def _running(runner: Any, live: LiveConfig, host: Host) -> tuple[threading.Thread, Reactor]:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    reactor = Reactor(runner, live, host.root, SOURCES)
    assert reactor.start()
    assert reactor.watcher.armed.wait(2)
    return thread, reactor


def test_a_dropped_feature_file_reaches_the_output_file_within_a_second(
        tmp_path: Path) -> None:
    root, host = _host(tmp_path)
    config_map = ConfigMap(tmp_path / "config")
    config_map.update("core:\n  sleepInterval: 1h\n")
    live = _live(config_map, metrics := Metrics())
    output = tmp_path / "out" / "nodefeatures"
    runner = FileAgent(str(output), lambda: run_pass(host, SOURCES, live.config),
                       list(SOURCES), Options(node="", interval=3600.0), metrics)
    thread, reactor = _running(runner, live, host)
    try:
        wait_for(lambda: output.exists() and "system-os_release" in output.read_text())
        (root / FEATURES_D / "site").write_text("site-flag=yes\n")
        seconds = wait_for(lambda: f"{KEY}=yes" in output.read_text())
        assert seconds < 2.0, seconds
        # A config change takes effect on the next pass, without a restart ...
        config_map.update("core:\n  sleepInterval: 1h\n  labelDenyList: 'site-flag'\n")
        wait_for(lambda: KEY not in output.read_text())
        assert live.config.core["labelDenyList"] == "site-flag"
        # ... and a broken one is rejected as a whole: the previous one stays in force.
        config_map.update("core:\n  sleepInterval: 60 seconds\n  labelDenyList: ''\n")
        wait_for(lambda: live.rejected is not None)
        assert "core.sleepInterval" in live.rejected
        assert live.config.core["labelDenyList"] == "site-flag"
        assert metrics.registry.get_sample_value("nodefeatures_config_rejected") == 1
        assert metrics.registry.get_sample_value(
            "nodefeatures_config_reloads_total", {"result": "rejected"}) == 1
        (root / FEATURES_D / "site").write_text("site-flag=again\nother=1\n")
        wait_for(lambda: "feature.node.kubernetes.io/other=1" in output.read_text())
        assert KEY not in output.read_text()
    finally:
        reactor.stop()
        runner.stop()
        thread.join(5)


def test_the_node_agent_reacts_at_once_and_reports_a_rejected_config(tmp_path: Path) -> None:
    root, host = _host(tmp_path)
    config_map = ConfigMap(tmp_path / "config")
    config_map.update("core:\n  sleepInterval: 1h\n")
    api = FakeNodeApi()
    live = _live(config_map, metrics := Metrics())
    agent = Agent(api, lambda: run_pass(host, SOURCES, live.config),  # type: ignore[arg-type]
                  list(SOURCES), Options(node=api.node, interval=3600.0, event_every=0.0),
                  metrics, rng=random.Random(3))
    thread, reactor = _running(agent, live, host)

    def labels() -> dict[str, str]:
        return api.obj["metadata"]["labels"]

    try:
        wait_for(lambda: "feature.node.kubernetes.io/system-os_release.ID" in labels())
        (root / FEATURES_D / "site").write_text("site-flag=yes\n")
        seconds = wait_for(lambda: labels().get(KEY) == "yes")
        assert seconds < 2.0, seconds
        config_map.update("core:\n  labelSources: all\n")  # not a list: rejected
        wait_for(lambda: any(e[1] == "ConfigRejected" for e in api.events))
        event = next(e for e in api.events if e[1] == "ConfigRejected")
        assert event[0] == "Warning" and "core.labelSources" in event[2]
        assert "previous one stays in force" in event[2]
        assert live.config.core["labelSources"] == ["all"]
        config_map.update("core:\n  sleepInterval: 2h\n")
        wait_for(lambda: any(e[1] == "ConfigApplied" for e in api.events))
        assert agent.options.interval == 3600.0  # no `applied` hook here: unchanged
        assert metrics.registry.get_sample_value("nodefeatures_config_rejected") == 0
    finally:
        reactor.stop()
        agent.stop()
        thread.join(5)


def test_run_reacts_to_a_feature_file_and_reloads_its_config(tmp_path: Path) -> None:
    """The real command: an hour's interval, yet a dropped file and a ConfigMap update
    reach its output file within seconds."""
    import subprocess
    import sys

    root, _ = _host(tmp_path)
    config_map = ConfigMap(tmp_path / "config")
    config_map.update("core:\n  sleepInterval: 1h\n")
    output = tmp_path / "out" / "nodefeatures"
    process = subprocess.Popen(
        [sys.executable, "-m", "nodefeatures", "run", "--root", str(root), "--source", "local",
         "--source", "system", "--config", str(config_map.path), "--output-file", str(output),
         "--metrics-port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: output.exists(), timeout=20)
        time.sleep(0.5)  # the watches are set up just after the loop starts
        (root / FEATURES_D / "site").write_text("site-flag=yes\n")
        wait_for(lambda: f"{KEY}=yes" in output.read_text(), timeout=5)
        config_map.update("core:\n  sleepInterval: 1h\n  labelDenyList: 'site-flag'\n")
        wait_for(lambda: KEY not in output.read_text(), timeout=5)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "configuration reloaded" in err, err


def test_no_publish_runs_discovery_and_publishes_nothing(tmp_path: Path) -> None:
    """nfd-worker's core.noPublish: no credentials needed, no request, no file."""
    import subprocess
    import sys

    root, _ = _host(tmp_path)
    config = tmp_path / "nfd-worker.conf"
    config.write_text("core:\n  noPublish: true\n  sleepInterval: 1s\n")
    output = tmp_path / "out" / "nodefeatures"
    process = subprocess.Popen(
        [sys.executable, "-m", "nodefeatures", "run", "--root", str(root), "--source", "system",
         "--config", str(config), "--output-file", str(output), "--metrics-port", "0",
         "--kubeconfig", str(tmp_path / "absent")], stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    process.terminate()
    _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "core.noPublish: not publishing" in err, err
    assert not output.exists()


def test_config_files_include_gfds_from_its_environment(tmp_path: Path) -> None:
    from nodefeatures.cluster.reload import config_files
    from nodefeatures.discovery.effective import gfd_file_from

    gfd = tmp_path / "gfd.yaml"
    assert gfd_file_from({"CONFIG_FILE": str(gfd)}) == str(gfd)
    assert gfd_file_from({"GFD_CONFIG_FILE": "a", "CONFIG_FILE": "b"}) == "a"
    assert config_files(None, str(gfd)) == [configuration.DEFAULT_PATH, str(gfd)]


def test_a_gfd_config_change_is_reloaded(tmp_path: Path) -> None:
    """GFD's file, beside ours: its update is a new configuration too."""
    from nodefeatures.discovery import effective

    sources = load_sources(["nvidia", "system"])[0]
    config_map = ConfigMap(tmp_path / "gfd", "config.yaml")
    config_map.update("version: v1\nflags:\n  migStrategy: single\n")

    def load() -> configuration.Config:
        return effective.load(None, sources, gfd_path=config_map.path, env={})

    live = LiveConfig(load, load(), [str(config_map.path)], Metrics())
    assert live.config.options("nvidia")["migStrategy"] == "single"
    config_map.update("version: v1\nflags:\n  migStrategy: mixed\n")
    assert live.reload()
    assert live.config.options("nvidia")["migStrategy"] == "mixed"
    assert not live.reload()  # nothing changed since
    config_map.update("version: v1\nflags:\n  migStrategy: all\n")
    assert not live.reload()
    assert live.rejected is not None and "flags.migStrategy" in live.rejected
    assert live.config.options("nvidia")["migStrategy"] == "mixed"
