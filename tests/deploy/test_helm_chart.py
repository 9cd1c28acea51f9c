"""The Helm chart under deploy/helm/, with the real helm: it lints, its values are
checked by values.schema.json, and with default values it renders exactly what
`kustomize build deploy/` renders (so the two install paths cannot drift)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import CHART, DEPLOY, RELEASE, find, render, render_chart, run_helm

# Labels Helm's conventions add to every object's metadata (never to selectors or pod
# templates, which must stay what deploy/ has).
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
               "app.kubernetes.io/version"}


def normalised(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Objects by (kind, namespace, name), without the labels Helm adds."""
    found = {}
    for obj in copy.deepcopy(objects):
        labels = obj["metadata"].get("labels", {})
        for key in HELM_LABELS:
            labels.pop(key, None)
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert key not in found, f"rendered twice: {key}"
        found[key] = obj
    return found


def args_of(ds: dict[str, Any]) -> list[str]:
    return list(ds["spec"]["template"]["spec"]["containers"][0]["args"])


def test_helm_lint_passes_strictly() -> None:
    result = run_helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_values_render_what_kustomize_renders() -> None:
    chart, kustomized = normalised(render_chart()), normalised(render(DEPLOY))
    assert sorted(chart) == sorted(kustomized)
    for key, obj in kustomized.items():
        assert chart[key] == obj, f"{key} differs between the chart and deploy/"


def test_gpu_enabled_renders_what_kustomize_renders_for_deploy_gpu() -> None:
    chart = normalised(render_chart("--set", "gpu.enabled=true"))
    kustomized = normalised(render(DEPLOY / "gpu"))
    assert sorted(chart) == sorted(kustomized)
    for key, obj in kustomized.items():
        assert chart[key] == obj, f"{key} differs between the chart and deploy/gpu"


def test_every_object_carries_helms_labels() -> None:
    for obj in render_chart("--set", "gpu.enabled=true,nfdCRDs.enabled=true,"
                            "podMonitor.enabled=true,serviceMonitor.enabled=true"):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/name"] == "nodefeatures"


def test_the_default_config_value_is_deploys_configmap() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    configmap = find(render(DEPLOY), "ConfigMap", "nodefeatures-config")
    assert values["config"] == configmap["data"]["config.yaml"]


@pytest.mark.parametrize("bad", [
    ["--set", "resources=big"],
    ["--set", "image.pullPolicy=Sometimes"],
    ["--set", "gpu.enabled=yes please"],
    ["--set", "managedPrefixes={example.com}"],  # no trailing slash: not a prefix
    ["--set", "managedPrefixes=null"],
    ["--set", "labelNamespaces.denyLabelNs=example.com"],  # a string, not a list
    ["--set-json", 'labelNamespaces.denyLabelNs=["a.io,b.io"]'],  # the comma is the chart's
    ["--set-json", 'labelNamespaces.denyLabelNs=["Example.com"]'],
    ["--set-json", 'labelNamespaces.extraLabelNs=["*.example.com"]'],  # exact names only
    ["--set-json", 'labelNamespaces.extraLabelNs=[" x.io"]'],
    ["--set", "labelNamespaces.denyLabelns={x.io}"],
    ["--set-string", "labelNamespaces.enableTaints=true"],  # the ConfigMap's text is the chart's
    ["--set", "labelNamespaces.enableAnnotations=yes"],
    ["--set", "config=3"],
    ["--set", "unknownKey=1"],
    ["--set-json", 'extraHostPaths=[{"name":"x","path":"/x","mountPath":"/x",'
                   '"type":"DirectoryOrCreate"}]'],
    ["--set-json", 'extraHostPaths=[{"name":"x","path":"relative","mountPath":"/x"}]'],
    ["--set", "podMonitor.interval=often"],
], ids=lambda bad: bad[1])
def test_values_schema_rejects_bad_values(bad: list[str]) -> None:
    result = run_helm("template", RELEASE, str(CHART), *bad, check=False)
    assert result.returncode != 0, f"{bad} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_values_yaml_meets_its_own_schema_and_names_every_property() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]), "a value without a schema, or the reverse"


LABEL_NAMESPACES = "nodefeatures-label-namespaces"


def test_label_namespaces_reach_the_configmap_that_agent_and_policy_read() -> None:
    objects = render_chart("--set-json", 'labelNamespaces={"denyLabelNs":["vendor.io",'
                           '"*.example.com"],"extraLabelNs":["k8s.io","node-role.kubernetes.io"],'
                           '"enableTaints":true}',
                           "--set", "gpu.enabled=true")
    configmap = find(objects, "ConfigMap", LABEL_NAMESPACES)
    assert configmap["metadata"]["namespace"] == "nodefeatures"
    assert configmap["data"] == {"denyLabelNs": "vendor.io,*.example.com",
                                 "extraLabelNs": "k8s.io,node-role.kubernetes.io",
                                 "enableAnnotations": "false", "enableTaints": "true",
                                 "enableExtendedResources": "false"}
    # The policy reads that very object ...
    binding = find(objects, "ValidatingAdmissionPolicyBinding", LABEL_NAMESPACES)
    assert binding["spec"]["paramRef"] == {"name": LABEL_NAMESPACES, "namespace": "nodefeatures",
                                           "parameterNotFoundAction": "Allow"}
    policy = find(objects, "ValidatingAdmissionPolicy", LABEL_NAMESPACES)
    assert policy["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    # ... and so does every agent, which RBAC lets read it and no other ConfigMap.
    for ds in (o for o in objects if o["kind"] == "DaemonSet"):
        assert f"--label-namespaces=nodefeatures/{LABEL_NAMESPACES}" in args_of(ds)
    role = find(objects, "Role", "nodefeatures")
    assert [r for r in role["rules"] if "configmaps" in r["resources"]] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [LABEL_NAMESPACES],
         "verbs": ["get", "list", "watch"]}]
    # The defaults are NFD's (nfd-master's -deny-label-ns default), every output off.
    assert find(render_chart(), "ConfigMap", LABEL_NAMESPACES)["data"] == {
        "denyLabelNs": "k8s.io,*.k8s.io", "extraLabelNs": "", "enableAnnotations": "false",
        "enableTaints": "false", "enableExtendedResources": "false"}


def prefixes_given(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {ds["metadata"]["name"]: [a.split("=", 1)[1] for a in args_of(ds)
                                     if a.startswith("--managed-prefix=")]
            for ds in objects if ds["kind"] == "DaemonSet"}


def skipped(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {ds["metadata"]["name"]: [a.split("=", 1)[1] for a in args_of(ds)
                                     if a.startswith("--skip-source=")]
            for ds in objects if ds["kind"] == "DaemonSet"}


def test_managed_prefixes_only_narrow_the_agents() -> None:
    # By default the agent keeps to no prefix: the allowed namespaces are the limit.
    assert prefixes_given(render_chart()) == {"nodefeatures": []}
    # With the GPU agent, it takes nvidia.com/; the base agent leaves it the nvidia
    # source, not a prefix, and stays as wide as without it.
    with_gpu = render_chart("--set", "gpu.enabled=true")
    assert prefixes_given(with_gpu) == {"nodefeatures": [], "nodefeatures-nvidia": ["nvidia.com/"]}
    assert skipped(with_gpu) == {"nodefeatures": ["nvidia"], "nodefeatures-nvidia": []}
    prefixes = ["feature.node.kubernetes.io/", "example.com/"]
    objects = render_chart("--set-json", f"managedPrefixes={json.dumps(prefixes)}")
    assert prefixes_given(objects) == {"nodefeatures": prefixes}
    assert skipped(objects) == {"nodefeatures": []}
    # The list narrows the base agent alone, nvidia.com/ among it or not.
    for given in (prefixes, [*prefixes, "nvidia.com/"]):
        objects = render_chart("--set-json", f"managedPrefixes={json.dumps(given)}",
                               "--set", "gpu.enabled=true")
        assert prefixes_given(objects) == {"nodefeatures": given,
                                           "nodefeatures-nvidia": ["nvidia.com/"]}
    # The policy enforces the namespaces, never the narrowing: it does not change.
    def policy(objs: list[dict[str, Any]]) -> dict[str, Any]:
        return find(objs, "ValidatingAdmissionPolicy", "nodefeatures-own-node")["spec"]

    assert policy(objects) == policy(render_chart())


def _config_file(*values: str) -> str:
    configmap = find(render_chart(*values), "ConfigMap", "nodefeatures-config")
    assert set(configmap["data"]) == {"config.yaml"}
    return str(configmap["data"]["config.yaml"])


def test_config_is_rendered_as_given_string_or_mapping(tmp_path: Path) -> None:
    nfd_worker_conf = "core:\n  sleepInterval: 30s\n  labelWhiteList: '^cpu-'\n"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": nfd_worker_conf}))
    assert _config_file("-f", str(values)) == nfd_worker_conf
    mapping = {"core": {"sleepInterval": "30s"}, "sources": {"custom": [
        {"name": "r", "labels": {"r": "true"},
         "matchFeatures": [{"feature": "kernel.version",
                            "matchExpressions": {"major": {"op": "Exists"}}}]}]}}
    values.write_text(yaml.safe_dump({"config": mapping}))
    assert yaml.safe_load(_config_file("-f", str(values))) == mapping


def test_image_tolerations_selector_resources_priority_are_values() -> None:
    objects = render_chart(
        "--set", "image.repository=registry.example/nf,image.tag=1.2,image.pullPolicy=Always",
        "--set", "nodeSelector.kubernetes\\.io/os=linux,priorityClassName=agents",
        "--set-json", 'tolerations=[{"key":"gpu","operator":"Exists","effect":"NoSchedule"}]',
        # Helm merges maps with the defaults: null takes the CPU limit away.
        "--set-json", 'resources={"requests":{"cpu":"20m","memory":"80Mi"},'
                      '"limits":{"cpu":null,"memory":"200Mi"}}',
        "--set", "gpu.enabled=true")
    for ds in (o for o in objects if o["kind"] == "DaemonSet"):
        pod = ds["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "registry.example/nf:1.2"
        assert container["imagePullPolicy"] == "Always"
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert pod["priorityClassName"] == "agents"
        assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists",
                                       "effect": "NoSchedule"}]
        assert container["resources"] == {"requests": {"cpu": "20m", "memory": "80Mi"},
                                          "limits": {"memory": "200Mi"}}
    # The quota only grants the system-node-critical class; another class needs none.
    assert not [o for o in objects if o["kind"] == "ResourceQuota"]


def test_extra_host_paths_are_mounted_read_only_into_both_daemonsets() -> None:
    extra = [{"name": "vendor", "path": "/opt/vendor", "mountPath": "/host-extra/vendor"},
             {"name": "machine", "path": "/etc/machine-type", "mountPath": "/extra/mt",
              "type": "File"}]
    objects = render_chart("--set-json", f"extraHostPaths={json.dumps(extra)}",
                           "--set", "gpu.enabled=true")
    for ds in (o for o in objects if o["kind"] == "DaemonSet"):
        pod = ds["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert volumes["extra-vendor"]["hostPath"] == {"path": "/opt/vendor",
                                                       "type": "Directory"}
        assert volumes["extra-machine"]["hostPath"] == {"path": "/etc/machine-type",
                                                        "type": "File"}
        assert mounts["extra-vendor"] == {"name": "extra-vendor",
                                          "mountPath": "/host-extra/vendor",
                                          "readOnly": True, "recursiveReadOnly": "IfPossible"}
        assert mounts["extra-machine"] == {"name": "extra-machine", "mountPath": "/extra/mt",
                                           "readOnly": True}


def test_optional_objects_are_rendered_only_when_enabled() -> None:
    optional = {"CustomResourceDefinition", "PodMonitor", "ServiceMonitor", "Service"}
    assert not {o["kind"] for o in render_chart()} & optional
    objects = render_chart("--set", "nfdCRDs.enabled=true,podMonitor.enabled=true,"
                           "serviceMonitor.enabled=true")
    crds = {o["metadata"]["name"]: o["spec"] for o in objects
            if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"nodefeatures.nfd.k8s-sigs.io", "nodefeaturerules.nfd.k8s-sigs.io",
                         "nodefeaturegroups.nfd.k8s-sigs.io"}
    assert {(s["group"], s["names"]["kind"], s["scope"], tuple(v["name"] for v in s["versions"]))
            for s in crds.values()} == {
        ("nfd.k8s-sigs.io", "NodeFeature", "Namespaced", ("v1alpha1",)),
        ("nfd.k8s-sigs.io", "NodeFeatureRule", "Cluster", ("v1alpha1",)),
        ("nfd.k8s-sigs.io", "NodeFeatureGroup", "Namespaced", ("v1alpha1",))}
    assert {o["kind"] for o in objects} >= {"PodMonitor", "ServiceMonitor", "Service"}


def test_monitors_scrape_the_agents_metrics_port() -> None:
    objects = render_chart("--set", "gpu.enabled=true,podMonitor.enabled=true,"
                           "serviceMonitor.enabled=true,podMonitor.interval=15s",
                           "--set", "serviceMonitor.labels.release=prometheus")
    pods = [o["spec"]["template"] for o in objects if o["kind"] == "DaemonSet"]
    assert len(pods) == 2

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    podmonitor = find(objects, "PodMonitor", "nodefeatures")
    assert podmonitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert podmonitor["metadata"]["namespace"] == "nodefeatures"
    for pod in pods:
        assert selects(podmonitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
        ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert {e["port"] for e in podmonitor["spec"]["podMetricsEndpoints"]} <= ports
    assert [{k: e[k] for k in ("port", "path", "interval")}
            for e in podmonitor["spec"]["podMetricsEndpoints"]] == [
        {"port": "http", "path": "/metrics", "interval": "15s"}]

    service = find(objects, "Service", "nodefeatures-metrics")
    servicemonitor = find(objects, "ServiceMonitor", "nodefeatures")
    assert servicemonitor["metadata"]["labels"]["release"] == "prometheus"
    assert selects(servicemonitor["spec"]["selector"]["matchLabels"],
                   service["metadata"]["labels"])
    for pod in pods:
        assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert [e["port"] for e in servicemonitor["spec"]["endpoints"]] == ["http"]


def test_the_chart_and_deploy_nfd_crds_install_the_same_crds() -> None:
    """One file serves both (the chart's files/ links to deploy/nfd-crds/); this holds
    them together should that link ever become a copy."""
    chart = normalised([o for o in render_chart("--set", "nfdCRDs.enabled=true")
                        if o["kind"] == "CustomResourceDefinition"])
    kustomized = normalised(render(DEPLOY / "nfd-crds"))
    assert sorted(chart) == sorted(kustomized)
    for key, obj in kustomized.items():
        assert chart[key] == obj, f"{key} differs between the chart and deploy/nfd-crds"
    # Templates, not crds/, so that `helm uninstall` removes them: no keep policy.
    for obj in chart.values():
        assert "helm.sh/resource-policy" not in obj["metadata"].get("annotations", {})
    assert not (CHART / "crds").exists()
    # One file: the chart's is a link to deploy/'s, inside the repository.
    link = CHART / "files" / "nfd-api-crds.yaml"
    assert link.is_symlink()
    assert link.resolve() == (DEPLOY / "nfd-crds" / "nfd-api-crds.yaml").resolve()
    # Not part of deploy/: the agent runs without them, and NFD may own them.
    assert not [o for o in render(DEPLOY / "gpu") if o["kind"] == "CustomResourceDefinition"]
