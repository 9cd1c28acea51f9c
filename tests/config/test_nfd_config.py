"""An nfd-worker configuration file loads as it is, with nfd-worker's meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from testpaths import FIXTURES

from nodefeatures.discovery.config import ConfigError, build, klog_verbosity, load
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import load_sources, publishing, run_pass

HERE = Path(__file__).parent
NFD_CONF = HERE / "nfd-worker.conf"
SOURCES, _ = load_sources()


def _problem(data: Any) -> str:
    with pytest.raises(ConfigError) as error:
        build(data, SOURCES)
    return str(error.value)


def test_an_nfd_worker_conf_with_every_documented_option_loads() -> None:
    config = load(NFD_CONF, SOURCES)
    assert config.core["sleepInterval"] == 90
    assert config.core["featureSources"] == ["all", "-memory"]
    assert config.core["labelSources"] == ["all", "-storage"]
    assert config.core["labelWhiteList"] == ""  # an empty line is nfd-worker's null
    assert klog_verbosity(config.core) == 3
    assert config.options("cpu")["cpuid"]["attributeBlacklist"][:2] == ["MMX", "MMXEXT"]
    assert config.options("cpu")["cpuid"]["attributeWhitelist"] == []
    assert config.options("kernel") == {"kconfigFile": "/boot/config-site",
                                        "configOpts": ["NO_HZ", "PREEMPT", "X86", "DMI"]}
    assert config.options("pci")["deviceLabelFields"][-1] == "subsystem_device"
    assert config.options("usb")["deviceClassWhitelist"] == ["0e", "ef", "fe", "ff"]
    assert [r.name for r in config.options("custom")["rules"]][-1] == "uses the rule above"
    # What only nfd-worker's own machinery uses is noticed once each, never an error.
    assert sorted(n.split(" ")[0] for n in config.notices) == [
        "core.noPublishFeatures", "core.ownerRefs"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60), ("1m30s", 90), ("1h", 3600), ("24h", 86400), ("1.5m", 90), ("90", None),
    ("2m0.4s", 120), ("1s", 1)])
def test_sleep_interval_takes_go_durations(text: str, seconds: float | None) -> None:
    if seconds is None:  # a bare number in a string is no Go duration
        assert "core.sleepInterval: not a duration" in _problem(
            {"core": {"sleepInterval": text}})
        return
    assert build({"core": {"sleepInterval": text}}, SOURCES).core["sleepInterval"] == seconds


@pytest.mark.parametrize("text", ["0s", "0", "-1m", "500ms", "24h0m1s", "25h", "9999999h"])
def test_duration_strings_hold_the_same_bounds(text: str) -> None:
    message = _problem({"core": {"sleepInterval": text}})
    assert f"core.sleepInterval: must be between 1s and 24h, got a string ('{text}')" in message


def test_non_positive_interval_says_why_nfds_never_is_refused() -> None:
    assert "'never re-label' is not supported" in _problem({"core": {"sleepInterval": "0s"}})


def test_numbers_stay_seconds() -> None:
    assert build({"core": {"sleepInterval": 30}}, SOURCES).core["sleepInterval"] == 30


def test_deprecated_core_sources_replaces_label_sources() -> None:
    config = build({"core": {"labelSources": ["all"], "sources": ["cpu", "kernel"]}}, SOURCES)
    assert config.core["labelSources"] == ["cpu", "kernel"]
    assert any("core.sources is deprecated" in n for n in config.notices)
    assert "core.sources: expected a list" in _problem({"core": {"sources": "cpu"}})


def test_keys_match_without_regard_to_case_as_in_nfd_worker() -> None:
    config = build({"core": {"SleepInterval": "2m", "labelwhitelist": "^cpu-"},
                    "sources": {"kernel": {"KconfigFile": "/k"}}}, SOURCES)
    assert config.core["sleepInterval"] == 120 and config.core["labelWhiteList"] == "^cpu-"
    assert config.options("kernel")["kconfigFile"] == "/k"
    assert "given twice" in _problem({"core": {"sleepInterval": 5, "SleepInterval": 6}})


@pytest.mark.parametrize(("data", "path"), [
    ({"core": {"sleepIntervall": "60s"}}, "core.sleepIntervall: unknown key"),
    ({"core": {"klog": {"verbosity": 2}}}, "core.klog.verbosity: unknown key"),
    ({"core": {"klog": {"v": "loud"}}}, "core.klog.v: expected a number"),
    ({"core": {"klog": {"logDir": ["a"]}}}, "core.klog.logDir: expected a string"),
    ({"core": {"ownerRefs": ["node", "job"]}}, "core.ownerRefs[1]: must be one of"),
    ({"core": {"featureSources": []}}, "core.featureSources: an empty list"),
    ({"core": {"noPublish": "yes"}}, "core.noPublish: expected a boolean"),
    ({"sources": {"pci": {"deviceClassWhitelists": []}}},
     "sources.pci.deviceClassWhitelists: unknown key"),
    ({"sources": {"gpu": {}}}, "sources.gpu: no such source"),
])
def test_genuinely_unknown_or_wrong_keys_are_still_refused_with_their_path(
        data: Any, path: str) -> None:
    assert path in _problem(data)


def test_klog_options_other_than_v_are_noticed_once_each() -> None:
    config = build({"core": {"klog": {"logDir": "/var/log/nfd", "v": 1, "skipHeaders": True,
                                      "logtostderr": True}}}, SOURCES)
    assert sorted(n.split(" ")[0] for n in config.notices) == [
        "core.klog.logDir", "core.klog.skipHeaders"]
    assert klog_verbosity(config.core) == 1


def test_nfds_test_source_is_accepted_and_noticed() -> None:
    config = build({"sources": {"fake": {"labels": {"a": "b"}}}}, SOURCES)
    assert any(n.startswith("sources.fake is accepted and ignored") for n in config.notices)


def test_feature_sources_switch_discovery_off_label_sources_only_publishing() -> None:
    """featureSources off: the source neither labels nor feeds rules. labelSources off:
    its features still feed rules, and its labels are not in the pass (no evidence)."""
    host = FIXTURES / "cpu-only-rocky9"
    rule = [{"name": "kernel rule", "labels": {"site.example/kernel": "seen"},
             "matchFeatures": [{"feature": "kernel.version",
                                "matchExpressions": {"major": {"op": "Exists"}}}]}]
    config = build({"core": {"labelSources": ["all", "-kernel"]},
                    "sources": {"custom": rule}}, SOURCES)
    discovery = run_pass(replay_host(host), SOURCES, config)
    names = [r.name for r in discovery.results]
    assert "kernel" not in names and "cpu" in names
    assert discovery.values().get("site.example/kernel") == "seen"
    assert "kernel" not in publishing(SOURCES, config)

    config = build({"core": {"featureSources": ["all", "-kernel"]},
                    "sources": {"custom": rule}}, SOURCES)
    discovery = run_pass(replay_host(host), SOURCES, config)
    assert "kernel" not in [r.name for r in discovery.results]
    assert "site.example/kernel" not in discovery.values()
    assert "kernel" not in publishing(SOURCES, config)
    assert "custom" in publishing(SOURCES, config)


def test_the_example_conf_replays_a_fixture_with_its_choices_in_effect() -> None:
    config = load(NFD_CONF, SOURCES)
    discovery = run_pass(replay_host(FIXTURES / "cpu-only-rocky9"), SOURCES, config)
    names = [r.name for r in discovery.results]
    assert "storage" not in names and "memory" not in names
    assert not any(k.endswith("cpuid.MMX") for k in discovery.values())


def test_klog_v_sets_debug_logging_and_a_reload_can_take_it_back() -> None:
    import logging

    from nodefeatures.cli import options

    root = logging.getLogger()
    saved, saved_base = root.level, list(options._BASE_LEVEL)
    try:
        options._BASE_LEVEL[:] = []
        root.setLevel(logging.INFO)
        options.apply_log_level(build({"core": {"klog": {"v": "4"}}}, SOURCES))
        assert root.level == logging.DEBUG
        options.apply_log_level(build({"core": {"klog": {"v": 1}}}, SOURCES))
        assert root.level == logging.INFO
    finally:
        root.setLevel(saved)
        options._BASE_LEVEL[:] = saved_base


def test_a_misspelt_feature_source_is_warned_about(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from nodefeatures.cli import main

    config = tmp_path / "nfd.conf"
    config.write_text("core:\n  featureSources: [all, -cpuu]\n")
    result = CliRunner().invoke(main, ["dump", "--format", "json", "--config", str(config),
                                       "--fixture", str(FIXTURES / "cpu-only-rocky9")])
    assert result.exit_code == 0, result.output
    assert "core.featureSources[1]: no such source '-cpuu'" in result.output


def test_an_older_nfd_worker_conf_with_hooks_enabled_still_loads() -> None:
    config = build({"sources": {"local": {"hooksEnabled": False}}}, SOURCES)
    assert [n for n in config.notices if n.startswith("sources.local.hooksEnabled")]
    assert "hooksEnabled" not in config.options("local")
