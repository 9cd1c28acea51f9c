"""The alert rules through the real promtool: `promtool check rules` on the file and on
the PrometheusRule the chart renders, and `promtool test rules` with synthetic series
under which each alert fires for the node it should, and not for the nodes beside it
that look alike (a 409, an unconfined agent that is also not ready, a source failing
for less than an hour, a GPU node whose GPU agent's pods can or cannot be created).

promtool is built from Go modules by tests/promtool/build.sh (scripts/test.sh does that)
and found as $NODEFEATURES_PROMTOOL, in that cache, or on PATH; without it these tests
skip, and fail under CI=true.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import CHART, REPO, find, render_chart

RULES = CHART / "files" / "nodefeatures.rules.yaml"
BUILD = REPO / "tests" / "promtool" / "build.sh"
TEMPLATE = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


@functools.cache
def promtool() -> str:
    override = os.environ.get("NODEFEATURES_PROMTOOL")
    if override:
        return override
    cache = subprocess.run(["bash", str(BUILD), "--print-dir"], capture_output=True,
                           text=True, check=True).stdout.strip()
    found = Path(cache) / "promtool"
    if os.access(found, os.X_OK):
        return str(found)
    on_path = shutil.which("promtool")
    if on_path:
        return on_path
    reason = f"no promtool: run `bash {BUILD}`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"]}


def target(node: str) -> dict[str, str]:
    """The labels a scraped agent's series carry (the PodMonitor's, and `node`)."""
    return {"job": "nodefeatures/nodefeatures", "namespace": "nodefeatures",
            "pod": f"nodefeatures-{node}", "instance": f"10.0.0.{node[1:]}:8080",
            "container": "agent", "node": node}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alert with these labels, its annotations expanded as Prometheus does."""
    rule = rules()[alert]
    full = {**labels, **rule["labels"]}
    return {"exp_labels": full,
            "exp_annotations": {key: TEMPLATE.sub(lambda m: full[m.group(1)], text)
                                for key, text in rule["annotations"].items()}}


def agent_series() -> list[dict[str, str]]:
    """Each node with one trouble; n0 has none."""
    found = []
    for node in [f"n{i}" for i in range(10)]:
        confined = "0x90" if node == "n3" else "1x90"
        ready = "0x90" if node in ("n3", "n4") else "1x90"
        found += [series("nodefeatures_confined", target(node), confined),
                  series("nodefeatures_ready", target(node), ready),
                  series("nodefeatures_config_rejected", target(node),
                         "1x90" if node == "n7" else "0x90"),
                  series("nodefeatures_source_ok", {**target(node), "source": "cpu"}, "1x90"),
                  series("nodefeatures_api_requests_total",
                         {**target(node), "verb": "patch", "code": "200"}, "0+1x90"),
                  series("nodefeatures_label_namespaces_rejected", target(node),
                         "1x90" if node == "n2" else "0x90")]
        for kind in ("nodefeaturerule", "nodefeature"):
            found += [series("nodefeatures_nfd_objects", {**target(node), "kind": kind,
                                                           "state": "ok"}, "3x90"),
                      series("nodefeatures_nfd_objects", {**target(node), "kind": kind,
                                                           "state": "unknown"}, "0x90"),
                      series("nodefeatures_nfd_objects", {
                          **target(node), "kind": kind, "state": "failed"},
                          # n9's rule object fails for the whole window, n6's only briefly.
                          "1x90" if (node, kind) == ("n9", "nodefeaturerule") else
                          "0x80 1x10" if node == "n6" else "0x90")]
    found += [
        series("nodefeatures_api_requests_total",
               {**target("n1"), "verb": "patch", "code": "403"}, "0+1x90"),
        series("nodefeatures_api_requests_total",
               {**target("n2"), "verb": "patch", "code": "409"}, "0+1x90"),
        series("nodefeatures_source_ok", {**target("n5"), "source": "pci"}, "0x90"),
        series("nodefeatures_source_ok", {**target("n6"), "source": "usb"}, "1x30 0x60"),
    ]
    # The base agent's gauge, with the target's `instance` kept and the metric's own
    # renamed, as Prometheus stores it without honorLabels.
    for node in ("n8", "n9"):
        found.append(series("nodefeatures_instance_missing",
                            {**target(node), "exported_instance": "gpu"},
                            "1x90" if node == "n8" else "0x90"))
    return found


def daemonset(desired: int, current: int) -> list[dict[str, str]]:
    labels = {"job": "kube-state-metrics", "instance": "10.0.1.1:8080",
              "namespace": "nodefeatures", "daemonset": "nodefeatures-nvidia"}
    return [series("kube_daemonset_status_desired_number_scheduled", labels, f"{desired}x90"),
            series("kube_daemonset_status_current_number_scheduled", labels, f"{current}x90")]


def case(extra: list[dict[str, str]], fired: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """One promtool test group at 80 minutes: exactly these alerts, for these nodes."""
    return {"interval": "1m", "input_series": agent_series() + extra,
            "alert_rule_test": [{"eval_time": "80m", "alertname": alert,
                                 "exp_alerts": [expected(alert, labels)
                                                for labels in fired.get(alert, [])]}
                                for alert in sorted(rules())]}


def test_the_rule_file_and_the_rendered_prometheus_rule_pass_promtool_check(
        tmp_path: Path) -> None:
    checked = run("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    rendered = find(render_chart("--set", "prometheusRule.enabled=true"),
                    "PrometheusRule", "nodefeatures")
    spec = tmp_path / "rendered.rules.yaml"
    spec.write_text(yaml.safe_dump(rendered["spec"]))
    checked = run("check", "rules", str(spec))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_check_really_checks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules.yaml"
    bad.write_text("groups:\n  - name: x\n    rules:\n"
                   "      - alert: A\n        expr: sum by (node (nodefeatures_ready)\n")
    assert run("check", "rules", str(bad)).returncode != 0


def test_annotations_name_only_labels() -> None:
    # The expected annotations above expand `{{ $labels.x }}` alone; anything else in a
    # template would make that expansion wrong, so there is nothing else.
    for rule in rules().values():
        for text in rule["annotations"].values():
            assert TEMPLATE.sub("", text).count("{{") == 0, text


def test_each_alert_fires_on_its_synthetic_series_and_only_there(tmp_path: Path) -> None:
    rule_file = tmp_path / "nodefeatures.rules.yaml"
    shutil.copy(RULES, rule_file)
    pod = {k: target("n1")[k] for k in ("namespace", "pod", "node")}
    agent = {
        "NodefeaturesWritesRejected": [pod],
        "NodefeaturesUnconfined": [target("n3")],
        "NodefeaturesNotReady": [target("n4")],
        "NodefeaturesSourceFailing": [{**target("n5"), "source": "pci"}],
        "NodefeaturesConfigRejected": [target("n7")],
        "NodefeaturesLabelNamespacesRejected": [target("n2")],
        "NodefeaturesNFDObjectFailing": [{**{k: target("n9")[k]
                                             for k in ("namespace", "pod", "node")},
                                          "kind": "nodefeaturerule"}],
    }
    missing = [{**target("n8"), "exported_instance": "gpu"}]
    tests = {
        "rule_files": [rule_file.name],
        "evaluation_interval": "1m",
        "tests": [
            # Without kube-state-metrics: the GPU agent is reported missing.
            case([], {**agent, "NodefeaturesGPUAgentMissing": missing}),
            # Its pods all exist (a crash loop, an image pull): missing, not RuntimeClass.
            case(daemonset(2, 2), {**agent, "NodefeaturesGPUAgentMissing": missing}),
            # The API server refuses a pod: the RuntimeClass alert instead, never both.
            case(daemonset(2, 1), {**agent, "NodefeaturesGPURuntimeClassMissing": missing}),
        ],
    }
    test_file = tmp_path / "nodefeatures.test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_really_checks(tmp_path: Path) -> None:
    """A wrong expectation fails: the success above is promtool's verdict, not a no-op."""
    rule_file = tmp_path / "nodefeatures.rules.yaml"
    shutil.copy(RULES, rule_file)
    wrong = case([], {"NodefeaturesConfigRejected": [target("n6")]})
    test_file = tmp_path / "wrong.test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [rule_file.name],
                                         "evaluation_interval": "1m", "tests": [wrong]}))
    result = run("test", "rules", str(test_file))
    assert result.returncode != 0
    assert "NodefeaturesConfigRejected" in result.stdout + result.stderr
