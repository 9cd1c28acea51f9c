"""The chart's monitoring: the Grafana dashboard and the alert rules use only metrics the
agent exports (read from a live Metrics() registry), with label names those metrics
have; the dashboard is valid and every panel queries the datasource variable; the
chart ships each file unchanged, only when asked; deploy/grafana and deploy/prometheus
are the same files, not copies."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from manifests import CHART, DEPLOY, find, render_chart
from promql import PromQLError, references

from nodefeatures.cluster.metrics import Metrics

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULES = CHART / "files" / "nodefeatures.rules.yaml"

# Labels Prometheus adds to every series it scrapes from the agents: the target's own,
# the pod's from Kubernetes discovery, and the `node` the chart's monitors relabel in.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint", "service",
                 "node"}

# The only series not from the agents: kube-state-metrics' DaemonSet status, by which
# NodefeaturesGPURuntimeClassMissing tells a pod the API server refuses to create.
KUBE_STATE_METRICS = {
    "kube_daemonset_status_desired_number_scheduled": {"namespace", "daemonset"},
    "kube_daemonset_status_current_number_scheduled": {"namespace", "daemonset"},
}

ALERTS = {"NodefeaturesWritesRejected", "NodefeaturesUnconfined", "NodefeaturesNotReady",
          "NodefeaturesSourceFailing", "NodefeaturesConfigRejected",
          "NodefeaturesGPUAgentMissing", "NodefeaturesGPURuntimeClassMissing",
          "NodefeaturesNFDObjectFailing", "NodefeaturesLabelNamespacesRejected"}


def exported() -> dict[str, set[str]]:
    """Every series name a running agent's /metrics can carry, with its label names: the
    registry `run` builds, once a source has reported NVML's state and a confinement
    probe has answered (the two gauges appear only then)."""
    metrics = Metrics()
    metrics.nvml_initialized(True)
    metrics.confined.set(1)
    # Exported by an agent that follows NFD's API and the label namespaces setting.
    metrics.export(metrics.nfd_objects)
    metrics.export(metrics.label_namespaces_rejected)
    labels_of = {getattr(c, "_name", ""): set(getattr(c, "_labelnames", ()))
                 for c in vars(metrics).values()}
    labels_of["nodefeatures_nvml_initialized"] = set()
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = labels_of.get(family.name)
        assert labels is not None, f"{family.name}: not an attribute of Metrics"
        suffixes = {"counter": ("_total",), "gauge": ("",),
                    "histogram": ("_bucket", "_sum", "_count")}[family.type]
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p["targets"]]


def check(expr: str, known: dict[str, set[str]]) -> set[str]:
    """The metric names `expr` uses; fails on one `known` lacks or a label it lacks."""
    refs = references(expr)
    unknown = set(refs.metrics) - set(known)
    assert not unknown, f"{expr!r} uses metrics nothing exports: {sorted(unknown)}"
    used_labels = set().union(*(known[m] for m in refs.metrics)) | TARGET_LABELS
    for metric, matched in refs.metrics.items():
        assert matched <= known[metric] | TARGET_LABELS, (
            f"{expr!r}: {metric} has no label {sorted(matched - known[metric] - TARGET_LABELS)}")
    assert refs.grouping <= used_labels, (
        f"{expr!r} groups by labels its metrics lack: {sorted(refs.grouping - used_labels)}")
    return set(refs.metrics)


def test_the_name_reader_finds_names_and_catches_typos() -> None:
    known = exported()
    assert check('sum by (verb) (rate(nodefeatures_api_requests_total{code!~"2.."}[5m]))',
                 known) == {"nodefeatures_api_requests_total"}
    for bad in ("rate(nodefeatures_passes[5m])",  # a counter without _total
                'nodefeatures_source_ok{sourse="pci"}',  # a label it does not have
                "sum by (verbb) (nodefeatures_api_requests_total)",
                "nodefeatures_ready == 0 unless nodefeatures_confinedd == 0"):
        with pytest.raises(AssertionError):
            check(bad, known)
    for unreadable in ("nodefeatures_ready{node=}", "sum(nodefeatures_ready", "x[5 m]"):
        with pytest.raises(PromQLError):
            references(unreadable)


def test_the_registry_read_is_the_agents_own() -> None:
    known = exported()
    # The counters are exported with _total, the histogram by its series, the config
    # and NVML gauges appear once their owners register them.
    assert {"nodefeatures_passes_total", "nodefeatures_pass_duration_seconds_bucket",
            "nodefeatures_config_reloads_total", "nodefeatures_ready",
            "nodefeatures_nvml_initialized", "nodefeatures_confined"} <= set(known)
    assert "nodefeatures_passes" not in known
    assert known["nodefeatures_api_requests_total"] == {"verb", "code"}


def test_the_dashboard_uses_only_exported_metrics_and_shows_every_one() -> None:
    known = exported()
    used = set().union(*(check(expr, known) for expr in dashboard_exprs()))
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in known
                if not n.endswith(("_sum", "_count"))}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families - shown == set(), "metrics the dashboard does not show"


def test_the_dashboard_is_valid_and_every_panel_queries_the_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "nodefeatures" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    selected = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["node"]["datasource"] == selected
    found = panels(board)
    assert len(found) >= 20
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in found:
        assert panel["datasource"] == selected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", selected) == selected, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    # Panels that follow the node selector do so in every query of theirs.
    for expr in dashboard_exprs():
        assert 'node=~"$node"' in expr, expr


def test_the_alert_rules_use_only_exported_metrics_and_cover_each_failure() -> None:
    known = exported() | KUBE_STATE_METRICS
    found = rules()
    assert {rule["alert"] for rule in found} == ALERTS
    metrics_of = {rule["alert"]: check(rule["expr"], known) for rule in found}
    assert "nodefeatures_source_ok" in metrics_of["NodefeaturesSourceFailing"]
    assert "nodefeatures_config_rejected" in metrics_of["NodefeaturesConfigRejected"]
    assert "nodefeatures_instance_missing" in metrics_of["NodefeaturesGPUAgentMissing"]
    assert "nodefeatures_ready" in metrics_of["NodefeaturesNotReady"]
    assert "nodefeatures_confined" in metrics_of["NodefeaturesUnconfined"]
    for rule in found:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        for text in rule["annotations"].values():
            # Alert templates may only name labels the series carries.
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in TARGET_LABELS | set().union(
                    *(known[m] for m in metrics_of[name])), (name, label)
    hour = next(r for r in found if r["alert"] == "NodefeaturesSourceFailing")
    assert hour["for"] == "1h"
    # The two GPU alerts split one condition: never both for one node.
    gpu = {r["alert"]: r["expr"] for r in found if "GPU" in r["alert"]}
    assert (gpu["NodefeaturesGPUAgentMissing"].replace("unless on ()", "and on ()")
            == gpu["NodefeaturesGPURuntimeClassMissing"])


def test_the_repository_copies_are_the_charts_files() -> None:
    assert (DEPLOY / "grafana" / "nodefeatures.json").resolve() == DASHBOARD.resolve()
    assert (DEPLOY / "prometheus" / "nodefeatures.rules.yaml").resolve() == RULES.resolve()


def _rule_and_dashboard(objects: list[dict[str, Any]]) -> tuple[Any, Any]:
    rule = [o for o in objects if o["kind"] == "PrometheusRule"]
    board = [o for o in objects if o["kind"] == "ConfigMap"
             and o["metadata"]["name"] == "nodefeatures-grafana-dashboard"]
    return rule, board


def test_the_rule_and_dashboard_are_rendered_only_when_enabled() -> None:
    assert _rule_and_dashboard(render_chart()) == ([], [])
    objects = render_chart("--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true")
    rule = find(objects, "PrometheusRule", "nodefeatures")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "nodefeatures"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    board = find(objects, "ConfigMap", "nodefeatures-grafana-dashboard")
    assert board["metadata"]["namespace"] == "nodefeatures"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["nodefeatures.json"]) == dashboard()
    assert board["data"]["nodefeatures.json"] == DASHBOARD.read_text().rstrip("\n")


def test_rule_labels_and_the_dashboards_namespace_and_labels_are_values() -> None:
    objects = render_chart(
        "--set", "prometheusRule.enabled=true,prometheusRule.labels.release=prom,"
        "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring,"
        "grafanaDashboard.annotations.grafana_folder=Kubernetes")
    rule, (board,) = _rule_and_dashboard(objects)
    assert rule[0]["metadata"]["labels"]["release"] == "prom"
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["annotations"] == {"grafana_folder": "Kubernetes"}
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_monitors_label_series_with_the_pods_node() -> None:
    objects = render_chart("--set", "podMonitor.enabled=true,serviceMonitor.enabled=true")
    node = {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}
    for endpoint in (find(objects, "PodMonitor", "nodefeatures")["spec"]["podMetricsEndpoints"]
                     + find(objects, "ServiceMonitor", "nodefeatures")["spec"]["endpoints"]):
        assert node in endpoint["relabelings"]


def test_rule_file_is_what_prometheus_loads() -> None:
    # A rule file as Prometheus reads it: groups with unique names, each rule an alert
    # with an expression, no key Prometheus' rule format lacks.
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit", "labels", "query_offset"}
        for rule in group["rules"]:
            assert set(rule) <= allowed, set(rule) - allowed
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
