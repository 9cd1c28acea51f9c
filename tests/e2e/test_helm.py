"""The Helm chart on the real cluster: `helm install` starts an agent that labels its
Node; `helm upgrade` with a changed config changes the labels without restarting the
pod (the kubelet swaps the ConfigMap's files and the agent reloads them), and with an
invalid config keeps the last good one and says so in an Event; `helm uninstall`
leaves the labels.

The tests share one release and run in file order. The chart's objects have the same
names as deploy/'s, so the kustomize install of test_daemonset.py must be gone first
(its last tests uninstall it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from e2ekit import NAMESPACE, agent_pods, wait_for
from manifests import CHART, RELEASE, helm_env, require_helm
from nodecluster import NODE_NAME, NodeCluster

from nodefeatures.cluster.reconcile import DEFAULT_MANAGED_PREFIXES

HELM_TIMEOUT_S = 240
RULE_LABEL = "feature.node.kubernetes.io/e2e-helm"
# A custom rule that matches on every Linux node: its label shows the new config is in force.
RULE_CONFIG = {"sources": {"custom": [{
    "name": "e2e-helm", "labels": {"e2e-helm": "true"},
    "matchFeatures": [{"feature": "kernel.version",
                       "matchExpressions": {"major": {"op": "Exists"}}}]}]}}
# The kubelet syncs every 5 s here (nodecluster.py), then the agent reloads at once.
RELOAD_TIMEOUT_S = 60


def managed(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith(tuple(DEFAULT_MANAGED_PREFIXES))}


def node_labels(cluster: NodeCluster) -> dict[str, str]:
    return dict(cluster.get_json("node", NODE_NAME)["metadata"].get("labels", {}))


def helm(cluster: NodeCluster, *args: str) -> str:
    """The real helm, as the cluster's admin, inside the cluster's network."""
    argv = cluster.in_network([str(require_helm()), f"--kubeconfig={cluster.kubeconfig}",
                               *args])
    result = subprocess.run(argv, text=True, capture_output=True, env=helm_env(),
                            timeout=HELM_TIMEOUT_S + 60, preexec_fn=cluster._preexec)
    if result.returncode != 0:
        described = cluster.kubectl("-n", NAMESPACE, "describe", "pods", check=False).stdout
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}\n{described}")
    return result.stdout


@dataclass
class Release:
    image_values: list[str]
    pod_uid: str
    # Labels under the managed prefixes that someone else put there before the install.
    foreign: set[str]


@pytest.fixture(scope="module")
def release(cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    wait_for(lambda: cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode,
             HELM_TIMEOUT_S, f"namespace {NAMESPACE} of an earlier install to be gone", 1)
    foreign = set(managed(node_labels(cluster)))
    repository, tag = cluster.agent_image.rsplit(":", 1)
    image_values = ["--set", f"image.repository={repository},image.tag={tag}"]
    helm(cluster, "install", RELEASE, str(CHART), *image_values, "--wait",
         f"--timeout={HELM_TIMEOUT_S}s")
    pods = agent_pods(cluster)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    yield Release(image_values, pods[0]["metadata"]["uid"], foreign)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                    check=False, timeout=HELM_TIMEOUT_S)


def test_helm_install_labels_the_node_as_dump_does(cluster, release) -> None:
    dump = subprocess.run(
        [sys.executable, "-m", "nodefeatures", "dump", "--root", "/", "--format", "json"],
        capture_output=True, text=True, check=True)
    expected = json.loads(dump.stdout)
    assert expected and RULE_LABEL not in expected
    # Readiness (helm --wait) means the first publish is done.
    assert not release.foreign & set(expected), "an earlier install left its labels"

    def agents() -> dict[str, str]:
        return {k: v for k, v in managed(node_labels(cluster)).items()
                if k not in release.foreign}

    try:
        wait_for(lambda: agents() == expected, 30, "the agent's labels", 0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {agents()} differ from dump's {expected}") from None


def test_helm_upgrade_with_a_new_config_relabels_without_a_restart(cluster, release,
                                                                   tmp_path: Path) -> None:
    values = tmp_path / "config.yaml"
    values.write_text(yaml.safe_dump({"config": RULE_CONFIG}))
    helm(cluster, "upgrade", RELEASE, str(CHART), *release.image_values, "-f", str(values),
         "--wait", f"--timeout={HELM_TIMEOUT_S}s")
    wait_for(lambda: node_labels(cluster).get(RULE_LABEL) == "true", RELOAD_TIMEOUT_S,
             f"{RULE_LABEL} from the upgraded config", interval=0.5)
    pods = agent_pods(cluster)
    assert [p["metadata"]["uid"] for p in pods] == [release.pod_uid], "the pod was replaced"
    assert pods[0]["status"]["containerStatuses"][0]["restartCount"] == 0


def test_helm_upgrade_with_an_invalid_config_keeps_the_last_good_one(cluster, release,
                                                                     tmp_path: Path) -> None:
    values = tmp_path / "config.yaml"
    # Valid YAML, and a valid chart value (a string), but no configuration the agent takes.
    values.write_text(yaml.safe_dump({"config": "core:\n  sleepInterval: soon\n"}))
    helm(cluster, "upgrade", RELEASE, str(CHART), *release.image_values, "-f", str(values),
         "--wait", f"--timeout={HELM_TIMEOUT_S}s")

    def rejected() -> list[dict[str, object]]:
        events = cluster.get_json("events", "-n", "default",
                                  f"--field-selector=involvedObject.name={NODE_NAME},"
                                  "reason=ConfigRejected")
        return list(events["items"])

    events = wait_for(rejected, RELOAD_TIMEOUT_S, "the ConfigRejected Event", interval=0.5)
    assert "sleepInterval" in str(events[0]["message"])
    # The rule of the last good config is still in force, and nothing restarted.
    assert node_labels(cluster).get(RULE_LABEL) == "true"
    pods = agent_pods(cluster)
    assert [p["metadata"]["uid"] for p in pods] == [release.pod_uid]
    assert pods[0]["status"]["containerStatuses"][0]["restartCount"] == 0


def test_helm_uninstall_leaves_the_labels(cluster, release) -> None:
    before = managed(node_labels(cluster))
    assert before.get(RULE_LABEL) == "true"
    helm(cluster, "uninstall", RELEASE, "--wait", f"--timeout={HELM_TIMEOUT_S}s")
    wait_for(lambda: not agent_pods(cluster), 60, "the agent pod to be gone")
    assert managed(node_labels(cluster)) == before
    # Leave the Node as the agent found it, as an administrator would after uninstalling.
    result = subprocess.run(
        cluster.in_network([sys.executable, "-m", "nodefeatures", "prune", "--node", NODE_NAME,
                            f"--kubeconfig={cluster.kubeconfig}", "--allow-unconfined"]),
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert set(managed(node_labels(cluster))) == release.foreign
