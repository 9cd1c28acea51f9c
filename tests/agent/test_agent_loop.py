"""The agent loop's timing rules (backoff, slow retries, shutdown, fights) on a fake API."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeNodeApi

from nodefeatures.cluster.agent import Agent, Options
from nodefeatures.cluster.kube import KubeError
from nodefeatures.cluster.reconcile import Scope
from nodefeatures.discovery.config import build
from nodefeatures.discovery.hostroot import HostRoot
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.namespaces import LabelNamespaces
from nodefeatures.discovery.run import run_pass
from nodefeatures.discovery.source import Context, Features, Host, Source

AVX = "feature.node.kubernetes.io/cpu-cpuid.AVX"


class Fixed(Source):
    name = "cpu"

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.current = dict(labels)

    def discover(self, ctx: Context) -> Features:
        features = Features()
        for key, value in self.current.items():
            features.attribute("fake", key, value, "test")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return [Label(k, f.value) for k, f in features.attributes.get("fake", {}).items()]


def agent_for(api: FakeNodeApi, tmp_path: Path, labels: Mapping[str, str] | None = None,
              **options: Any) -> Agent:
    source = Fixed(labels if labels is not None else {AVX: "true"})
    sources = {"cpu": source}
    config = build({}, sources)
    host = Host(root=HostRoot(tmp_path))
    settings = {"interval": 30.0, "backoff_base": 0.05, "backoff_cap": 0.4,
                "rejected_retry": 0.6, "startup_wait": 1.0, "event_every": 0.0, **options}
    return Agent(api, lambda: run_pass(host, sources, config), ["cpu"],  # type: ignore[arg-type]
                 Options(node=api.node, **settings), rng=random.Random(7))


class Loop:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.thread = threading.Thread(target=agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> float:
        started = time.monotonic()
        self.agent.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        return time.monotonic() - started


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_server_errors_back_off_exponentially_with_jitter_and_a_cap(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["patch"] = [KubeError(503, "ServiceUnavailable")] * 6
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: api.labels.get(AVX) == "true")
    finally:
        loop.stop()
    attempts = gaps(api.times("patch"))
    assert len(attempts) == 6
    # base 0.05 s doubling, each scaled by a random factor in [0.5, 1], capped at 0.4 s
    for n, gap in enumerate(attempts, start=1):
        ceiling = min(0.4, 0.05 * 2 ** (n - 1))
        assert ceiling * 0.5 - 0.01 <= gap <= ceiling + 0.05, (n, gap)
    assert loop.agent.ready


def test_transport_errors_never_stop_the_loop(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["get"] = [KubeError(None, "connection", "refused")] * 4
    api.fail["watch"] = [KubeError(None, "timeout", "read timed out")] * 4
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: api.labels.get(AVX) == "true")
        assert loop.thread.is_alive()
    finally:
        loop.stop()


def test_too_many_requests_waits_for_retry_after(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["patch"] = [KubeError(429, "TooManyRequests", retry_after=0.5)]
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: api.labels.get(AVX) == "true")
    finally:
        loop.stop()
    assert gaps(api.times("patch"))[0] >= 0.5


@pytest.mark.parametrize("code", [403, 422])
def test_rejected_patch_is_reported_and_retried_slowly(tmp_path: Path, code: int) -> None:
    api = FakeNodeApi()
    api.fail["patch"] = [KubeError(code, "Rejected", "nodes is forbidden")]
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: api.labels.get(AVX) == "true")
    finally:
        loop.stop()
    assert gaps(api.times("patch"))[0] >= 0.6 * 0.9  # rejected_retry, jittered by 10 %
    rejected = [e for e in api.events if e[1] == "LabelPatchRejected"]
    assert rejected and rejected[0][0] == "Warning" and str(code) in rejected[0][2]
    assert loop.agent.metrics.requests.labels("patch", str(code))._value.get() == 1


def test_conflicts_are_retried_at_once_on_a_fresh_read(tmp_path: Path) -> None:
    api = FakeNodeApi()
    agent = agent_for(api, tmp_path)
    agent.discover_now()
    stale_reads = 3
    original_get = api.get

    def get_then_someone_writes() -> dict[str, Any]:
        nonlocal stale_reads
        node = original_get()
        if stale_reads:
            stale_reads -= 1
            api.external({f"other.io/n{stale_reads}": "x"})  # our read is stale at once
        return node

    api.get = get_then_someone_writes  # type: ignore[method-assign]
    decided = agent.sync()
    assert decided.labels == {AVX: "true"}
    assert api.labels[AVX] == "true"
    assert [v for v, _ in api.calls].count("patch") == 4  # three 409s, then success
    assert {"other.io/n0", "other.io/n1", "other.io/n2"} <= set(api.labels)


def test_sigterm_lets_the_in_flight_patch_finish(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.patch_gate = threading.Event()
    loop = Loop(agent_for(api, tmp_path))
    wait_for(lambda: api.times("patch"))  # the patch is in flight, held by the gate
    stopper = threading.Thread(target=loop.stop)
    stopper.start()
    time.sleep(0.2)
    assert loop.thread.is_alive()  # waiting for the request, not abandoning it
    api.patch_gate.set()
    stopper.join(5)
    assert not loop.thread.is_alive()
    assert api.labels[AVX] == "true"
    assert len(api.times("patch")) == 1


def test_stop_while_idle_returns_at_once(tmp_path: Path) -> None:
    api = FakeNodeApi()
    loop = Loop(agent_for(api, tmp_path))
    wait_for(lambda: loop.agent.ready)
    assert loop.stop() < 0.5


def test_drift_is_restored_from_the_watch_without_a_read(tmp_path: Path) -> None:
    api = FakeNodeApi()
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: loop.agent.ready)
        gets = len(api.times("get"))
        api.external({AVX: None})
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=2)
        assert len(api.times("get")) == gets
    finally:
        loop.stop()


def test_drift_detected_even_when_the_watch_shows_our_write_before_its_reply(
        tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.watch_first = True
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: loop.agent.ready)
        api.external({AVX: None})
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=2)
    finally:
        loop.stop()


def test_expired_watch_starts_over_from_a_fresh_read(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.expire_watches = 2
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: loop.agent.ready and len(api.times("watch")) >= 3)
        assert len(api.times("get")) == 3  # one read per expired watch, then the first
        api.external({AVX: None})  # the third watch works: drift is seen
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=2)
    finally:
        loop.stop()


def test_passes_are_jittered(tmp_path: Path) -> None:
    times: list[float] = []
    agent = agent_for(FakeNodeApi(), tmp_path, interval=0.2, jitter=0.25)
    original = agent.discover

    def timed() -> Any:
        times.append(time.monotonic())
        return original()

    agent.discover = timed  # type: ignore[method-assign]
    loop = Loop(agent)
    try:
        wait_for(lambda: len(times) >= 12, timeout=10)
    finally:
        loop.stop()
    between = gaps(times)
    assert all(0.14 <= gap <= 0.27 for gap in between), between
    assert max(between) - min(between) > 0.03  # not a fixed period


def test_a_writer_that_keeps_undoing_us_is_met_with_backoff_and_reported(tmp_path: Path) -> None:
    api = FakeNodeApi()
    loop = Loop(agent_for(api, tmp_path, interval=60.0, backoff_cap=10.0))
    try:
        wait_for(lambda: loop.agent.ready)
        for _ in range(4):
            api.external({AVX: None})
            wait_for(lambda: api.labels.get(AVX) == "true", timeout=8)
    finally:
        loop.stop()
    restores = gaps(api.times("patch")[1:])
    assert restores[1] >= 0.9 and restores[2] >= 2.9  # 1 s, then 3 s between restores
    assert [e for e in api.events if e[1] == "LabelFight"]


def test_first_pass_waits_for_the_watch_read_instead_of_reading_twice(tmp_path: Path) -> None:
    api = FakeNodeApi()
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: loop.agent.ready)
    finally:
        loop.stop()
    assert len(api.times("get")) == 1


def test_health_reflects_a_stalled_loop(tmp_path: Path) -> None:
    agent = agent_for(FakeNodeApi(), tmp_path, interval=1.0)
    assert agent.alive()
    agent.heartbeat -= 63
    assert not agent.alive()


def test_an_unexpected_error_is_logged_and_retried_not_fatal(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["patch"] = [RuntimeError("bug")]  # type: ignore[list-item]
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: api.labels.get(AVX) == "true")
        assert loop.thread.is_alive()
    finally:
        loop.stop()


class Noisy(Fixed):
    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return [*super().labels(features, options), Label("model", "Xeon (R) Gold")]


def test_dropped_values_and_failing_sources_are_reported_once(tmp_path: Path) -> None:
    api = FakeNodeApi()
    sources = {"cpu": Noisy({AVX: "true"})}
    config = build({}, sources)
    host = Host(root=HostRoot(tmp_path))
    agent = Agent(api, lambda: run_pass(host, sources, config), ["cpu"],  # type: ignore[arg-type]
                  Options(node="n1", event_every=600.0))
    agent.discover_now()
    agent.discover_now()  # the same warning again: not repeated
    problems = [e for e in api.events if e[1] == "SourceProblem"]
    assert len(problems) == 1
    assert "dropped label feature.node.kubernetes.io/cpu-model='Xeon (R) Gold'" in problems[0][2]
    assert agent.metrics.source_warnings.labels("cpu")._value.get() == 1


class Broken(Fixed):
    def discover(self, ctx: Context) -> Features:
        raise RuntimeError("driver exploded")


def test_output_file_mode_reports_a_failing_source_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from nodefeatures.cluster.agent import FileAgent

    sources = {"cpu": Broken({AVX: "true"})}
    config = build({}, sources)
    host = Host(root=HostRoot(tmp_path))
    runner = FileAgent(str(tmp_path / "features.d/nodefeatures"),
                       lambda: run_pass(host, sources, config), ["cpu"],
                       Options(node="", interval=0.05))
    thread = threading.Thread(target=runner.run, daemon=True)
    with caplog.at_level("WARNING"):
        thread.start()
        deadline = time.monotonic() + 5
        while runner.metrics.passes.labels("ok")._value.get() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        runner.stop()
        thread.join(5)
    failures = [r for r in caplog.records if "source cpu failed: RuntimeError" in r.getMessage()]
    assert len(failures) == 1
    assert runner.metrics.passes.labels("ok")._value.get() >= 3


# -- Retry-After is clamped -------------------------------------------------------------


def test_a_negative_retry_after_does_not_hammer_the_server(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["patch"] = [KubeError(429, "TooManyRequests", retry_after=-30.0)] * 50
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: len(api.times("patch")) >= 2, timeout=3)
        time.sleep(0.5)
    finally:
        loop.stop()
    attempts = api.times("patch")
    assert len(attempts) <= 3, len(attempts)
    assert all(gap >= 1.0 for gap in gaps(attempts))  # at least 1 s between attempts


@pytest.mark.parametrize("header", [1e9, float("inf"), float("nan"), -float("inf")])
def test_a_huge_or_invalid_retry_after_cannot_stop_writes(tmp_path: Path, header: float) -> None:
    agent = agent_for(FakeNodeApi(), tmp_path)
    delay = agent._retry_delay(KubeError(429, "TooManyRequests", retry_after=header), 1)
    assert 0 < delay <= 601  # at most the 10 min ceiling (plus up to 1 s of jitter)


@pytest.mark.parametrize(("header", "seconds"), [
    ("5", 5.0), ("0.5", 1.0), ("-30", 1.0), ("1e9", 600.0), ("nan", None), ("inf", None),
    ("-inf", None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("", None)])
def test_retry_after_headers_are_clamped(header: str, seconds: float | None) -> None:
    from nodefeatures.cluster.kube import _retry_after

    assert _retry_after({"Retry-After": header}) == seconds


@pytest.mark.parametrize(("a", "b", "order"), [
    ("9", "10", -1), ("10", "10", 0), ("11", "10", 1), ("x1", "10", None), (None, "1", None),
    ("\u00b2", "1", None), ("9" * 5000, "1", 1), ("1", "0" * 4999 + "2", -1),
    ("007", "7", 0)])
def test_resource_versions_compare_as_integers_when_both_parse(
        a: str | None, b: str | None, order: int | None) -> None:
    from nodefeatures.cluster.kube import version_order

    assert version_order(a, b) == order


# -- an older resourceVersion never replaces a newer one ---------------------------------


SSE = "feature.node.kubernetes.io/cpu-cpuid.SSE4"


def test_a_late_patch_reply_does_not_hide_another_writers_newer_change(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.watch_first = True  # the watch shows our write, and the next change, before the reply
    labels = {AVX: "true"}
    agent = agent_for(api, tmp_path, labels=labels)
    loop = Loop(agent)
    try:
        wait_for(lambda: agent.ready)
        # Our next write races another writer that deletes a label we own.
        api.after_patch = lambda: api.external({AVX: None})
        agent.discover = _with_label(agent.discover, SSE)  # type: ignore[method-assign]
        loop.agent.poke()
        wait_for(lambda: api.labels.get(SSE) == "true")
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=2)
    finally:
        loop.stop()


def test_a_late_reply_to_the_first_write_does_not_hide_a_newer_change(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.watch_first = True
    api.after_patch = lambda: api.external({AVX: None})
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: len(api.times("patch")) >= 1)
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=2)
    finally:
        loop.stop()


def _with_label(discover: Any, key: str) -> Any:
    def discover_more() -> Any:
        discovery = discover()
        discovery.results[0].labels[key] = Label(key, "true", "test", "cpu")
        return discovery

    return discover_more


# -- malformed watch events and a failing watch -----------------------------------------


@pytest.mark.parametrize("obj", [
    {"metadata": []},
    {"metadata": {"name": "n1", "resourceVersion": "99", "labels": {},
                  "annotations": {"nodefeatures.dev/labels": 5}}},
    {"metadata": {"name": "n1", "resourceVersion": "99", "labels": {AVX: ["true"]}}},
    {"metadata": {"name": "n1", "resourceVersion": 99, "labels": {}}},
], ids=["metadata-list", "annotation-int", "label-list", "version-int"])
def test_a_malformed_watch_event_does_not_end_drift_repair(tmp_path: Path,
                                                          obj: dict[str, Any]) -> None:
    api = FakeNodeApi()
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: loop.agent.ready)
        api.inject({"type": "MODIFIED", "object": obj})
        time.sleep(0.2)
        loop.agent.sync()  # a pass decides on the live copy: never on the malformed one
        api.external({AVX: None})
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=3)
        assert loop.thread.is_alive() and loop.agent._watch_thread.is_alive()
        loop.agent.poke()  # a whole pass on the live copy works too
        api.external({AVX: None})  # and the watch still follows the Node
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=3)
    finally:
        loop.stop()


def test_a_failing_watch_shows_on_health(tmp_path: Path) -> None:
    api = FakeNodeApi()
    agent = agent_for(api, tmp_path, watch_grace=0.3)
    api.fail["watch"] = [KubeError(None, "decode", "watch event is not JSON")] * 10_000
    loop = Loop(agent)
    try:
        wait_for(lambda: agent.health() is not True, timeout=3)
        assert "watch" in str(agent.health()) and "not JSON" in str(agent.health())
        assert not agent.alive()
        api.fail["watch"] = []
        wait_for(lambda: len(api.watches) >= 1, timeout=3)
        api.external({"other.io/x": "1"})  # an event on the new watch
        wait_for(lambda: agent.alive(), timeout=3)
    finally:
        loop.stop()


def test_a_dead_watch_thread_shows_on_health(tmp_path: Path) -> None:
    agent = agent_for(FakeNodeApi(), tmp_path)
    agent._watch_loop = lambda: None  # type: ignore[method-assign]
    loop = Loop(agent)
    try:
        wait_for(lambda: agent.health() is not True, timeout=3)
        assert "watch" in str(agent.health())
        assert not agent.alive()
    finally:
        loop.stop()


def test_an_unexpected_error_in_the_watch_thread_is_survived(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["watch"] = [RuntimeError("bug")] * 3  # type: ignore[list-item]
    loop = Loop(agent_for(api, tmp_path))
    try:
        wait_for(lambda: loop.agent.ready and len(api.watches) >= 1, timeout=5)
        api.external({AVX: None})
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=3)
    finally:
        loop.stop()


# -- no confinement, no writes ----------------------------------------------------------


def test_no_write_without_proof_of_confinement_then_resume(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.confined = False  # the policy, its binding or the admission plugin is missing
    agent = agent_for(api, tmp_path, unconfined_retry=0.2)
    loop = Loop(agent)
    try:
        wait_for(lambda: len(api.times("probe")) >= 3, timeout=5)
        assert api.times("patch") == []
        assert AVX not in api.labels
        assert not agent.ready
        why = agent.readiness()
        assert isinstance(why, str) and "deploy/base/admission-policy.yaml" in why
        assert "--allow-unconfined" in why
        unconfined = [e for e in api.events if e[1] == "Unconfined"]
        assert unconfined and unconfined[0][0] == "Warning"
        assert "accepted a dry-run patch" in unconfined[0][2]
        assert agent.metrics.confined._value.get() == 0
        assert agent.metrics.confinement_checks.labels("unconfined")._value.get() >= 3
        api.confined = True  # the binding is back
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=3)
        wait_for(lambda: agent.ready)
        assert agent.readiness() is True
        assert agent.metrics.confined._value.get() == 1
    finally:
        loop.stop()


def test_confinement_lost_while_running_stops_writes(tmp_path: Path) -> None:
    api = FakeNodeApi()
    agent = agent_for(api, tmp_path, confinement_every=0.3, unconfined_retry=0.2)
    loop = Loop(agent)
    try:
        wait_for(lambda: agent.ready)
        probes = len(api.times("probe"))
        wait_for(lambda: len(api.times("probe")) >= probes + 2, timeout=3)  # re-proved
        api.confined = False
        wait_for(lambda: not agent.ready, timeout=3)
        writes = len(api.times("patch"))
        api.external({AVX: None})  # drift that would be repaired at once if confined
        time.sleep(0.8)
        assert len(api.times("patch")) == writes
        assert AVX not in api.labels
        api.confined = True
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=3)
        assert [e for e in api.events if e[1] == "Confined"]
    finally:
        loop.stop()


def test_a_refusal_that_does_not_name_the_policy_is_no_proof(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.fail["probe"] = [KubeError(403, "Forbidden", 'nodes "n1" is forbidden: User '
                                   '"x" cannot patch resource "nodes"')] * 1000
    agent = agent_for(api, tmp_path, unconfined_retry=0.1)
    loop = Loop(agent)
    try:
        wait_for(lambda: len(api.times("probe")) >= 2, timeout=3)
        assert api.times("patch") == []
        assert "not by ValidatingAdmissionPolicy 'nodefeatures-own-node'" in str(
            agent.readiness())
    finally:
        loop.stop()


def test_an_unanswered_probe_keeps_a_recent_proof(tmp_path: Path) -> None:
    api = FakeNodeApi()
    agent = agent_for(api, tmp_path, confinement_every=0.5)
    loop = Loop(agent)
    try:
        wait_for(lambda: agent.ready)
        api.fail["probe"] = [KubeError(503, "ServiceUnavailable")]
        wait_for(lambda: agent.metrics.confinement_checks.labels("unanswered")._value.get(),
                 timeout=3)
        assert agent.ready  # one failed re-check does not stop writes
        api.external({AVX: None})
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=3)
    finally:
        loop.stop()


def test_allow_unconfined_writes_without_a_probe(tmp_path: Path) -> None:
    api = FakeNodeApi()
    api.confined = False
    agent = agent_for(api, tmp_path, allow_unconfined=True)
    loop = Loop(agent)
    try:
        wait_for(lambda: api.labels.get(AVX) == "true")
        assert agent.ready
    finally:
        loop.stop()
    assert api.times("probe") == []


def test_a_stable_node_costs_one_probe_per_period(tmp_path: Path) -> None:
    api = FakeNodeApi()
    agent = agent_for(api, tmp_path, interval=0.05, confinement_every=0.5)
    loop = Loop(agent)
    try:
        wait_for(lambda: agent.ready)
        time.sleep(2.0)
    finally:
        loop.stop()
    # 2 s / 0.5 s (± 10 %), plus the first: passes every 50 ms add none.
    assert 4 <= len(api.times("probe")) <= 6, len(api.times("probe"))
    assert len(api.times("patch")) == 1


def test_backoff_after_very_many_failures_stays_at_its_cap(tmp_path: Path) -> None:
    # 2 ** 1024 is past a float: after ~17 h of an unreachable API server (1,025 failed
    # passes at the 60 s cap) the delay itself raised OverflowError and ended the loop.
    from nodefeatures.cluster.agent import backoff

    api = FakeNodeApi()
    agent = agent_for(api, tmp_path)
    assert agent._retry_delay(KubeError(503, "ServiceUnavailable"), 5000) <= 0.4
    assert backoff(0.5, 60.0, 5000) == 60.0 and backoff(0.5, 60.0, 1) == 0.5
    agent._probe_failures = 5000  # unconfined for days, then the probe goes unanswered
    api.fail["probe"].append(KubeError(None, "connection", "refused"))
    assert agent._check_confinement().state == "unanswered"


class JustChanged:
    """A label namespaces setting that changed a moment ago (LabelNamespacesSetting)."""

    def __init__(self) -> None:
        self.changed_at = time.monotonic()

    def scope(self) -> Scope:
        return Scope(("feature.node.kubernetes.io/",), LabelNamespaces.DEFAULT)

    def why(self) -> str:
        return ""


def test_a_patch_rejected_just_after_the_setting_changed_is_retried_soon(
        tmp_path: Path) -> None:
    # The admission policy reads the same ConfigMap through a cache of its own, which may
    # lag the agent's watch: a write the new setting allows can be refused for a moment.
    api = FakeNodeApi()
    api.fail["patch"] = [KubeError(403, "Forbidden", "denied by the label namespaces")]
    agent = agent_for(api, tmp_path, rejected_retry=30.0)
    agent.scope = JustChanged()
    loop = Loop(agent)
    try:
        wait_for(lambda: api.labels.get(AVX) == "true", timeout=5.0)
    finally:
        loop.stop()
    assert gaps(api.times("patch"))[0] < 2.0


def test_a_changed_cluster_object_is_applied_without_running_the_sources(
        tmp_path: Path) -> None:
    from nodefeatures.cluster.reconcile import SourceReport

    api = FakeNodeApi()
    agent = agent_for(api, tmp_path)
    passes: list[float] = []
    discover = agent.discover
    agent.discover = lambda *a: passes.append(time.monotonic()) or discover(*a)  # type: ignore[method-assign]
    rule_value = ["one"]
    key = "feature.node.kubernetes.io/from-a-rule"

    def extend(discovery: Any, evidence: Any) -> Any:
        report = SourceReport("nodefeaturerule/r", {key: rule_value[0]}, True)
        return replace(evidence, reports=(*evidence.reports, report))

    agent.extend = extend
    loop = Loop(agent)
    try:
        wait_for(lambda: api.labels.get(key) == "one")
        ran = len(passes)
        rule_value[0] = "two"
        agent.refresh()  # what a changed NodeFeatureRule's watch event calls
        wait_for(lambda: api.labels.get(key) == "two")
        assert len(passes) == ran  # the sources did not run for it
        agent.poke()  # a changed host file: a whole pass
        wait_for(lambda: len(passes) == ran + 1)
    finally:
        loop.stop()
