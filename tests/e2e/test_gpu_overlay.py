"""deploy/gpu on a real kubelet: a node that gains an NVIDIA PCI label keeps its host labels.

The base agent skips only the nvidia source: a features.d file's labels in other
namespaces (vendor.io/, nvidia.com/ too) are published as under deploy/ alone. An
administrator's opt-in label sends a node without an NVIDIA PCI label (Jetson, WSL2) to
the GPU agent.

Runs after test_daemonset.py (file order), which uninstalls deploy/ and prunes its labels;
it prunes its own in turn for test_helm.py.
The node has no GPU: the GPU agent runs the nvidia source, finds no NVML and publishes
nothing but its (empty) ledger; the `nvidia` RuntimeClass names a plain-runc stand-in
handler of the harness's containerd.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ekit import NAMESPACE, agent_pods, wait_for
from nodecluster import NODE_NAME, NodeCluster

REPO = Path(__file__).resolve().parents[2]
PCI = "feature.node.kubernetes.io/pci-10de.present"
HOST = "feature.node.kubernetes.io/"
GPU_LEDGER = "nodefeatures.dev/labels-gpu"
OPT_IN = "node-restriction.kubernetes.io/nodefeatures-gpu-agent"
FEATURES_D = "/etc/kubernetes/node-feature-discovery/features.d"
# A features.d file's labels: a vendor's namespace, and nvidia.com/ from a source that
# is not nvidia (as the GPU Operator's NodeFeatureRules give nvidia.com/gdrcopy.capable).
LOCAL = {"vendor.io/e2e": "1", "nvidia.com/e2e.local": "1"}
ROLLOUT_TIMEOUT_S = 180
# Fast enough for a test: a pass every 2 s, the GPU agent's absence reported after 2 s.
FAST_ARGS = ["--interval=2s", "--expect-grace=2s"]


def node(cluster: NodeCluster) -> dict:
    return cluster.get_json("node", NODE_NAME)


def host_labels(cluster: NodeCluster) -> dict[str, str]:
    labels = node(cluster)["metadata"].get("labels", {})
    return {k: v for k, v in labels.items() if k.startswith(HOST) and k != PCI}


def node_events(cluster: NodeCluster, reason: str) -> list[dict]:
    events = cluster.get_json("events", "-A", "--field-selector",
                              f"involvedObject.kind=Node,involvedObject.name={NODE_NAME},"
                              f"reason={reason}")
    return list(events["items"])


@pytest.fixture(scope="module")
def overlay(cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """deploy/gpu as a user applies it, with the local image and fast timings."""
    directory = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(REPO / "deploy", directory)
    gpu = directory / "gpu"
    subprocess.run([str(cluster.paths["kustomize"]), "edit", "set", "image",
                    f"nodefeatures={cluster.agent_image}"], cwd=gpu, check=True)
    patch = gpu / "base-leaves-gpu-labels.yaml"
    patch.write_text(patch.read_text() + "".join(
        f"- op: add\n  path: /spec/template/spec/containers/0/args/-\n  value: {a}\n"
        for a in FAST_ARGS))
    lines = "".join(f"{k}={v}\\n" for k, v in LOCAL.items())
    cluster.sh(f"mkdir -p {FEATURES_D} && printf '{lines}' > {FEATURES_D}/e2e")
    cluster.kubectl("apply", "-k", str(gpu))
    try:
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/nodefeatures",
                        f"--timeout={ROLLOUT_TIMEOUT_S}s", timeout=ROLLOUT_TIMEOUT_S + 30)
    except RuntimeError as exc:
        described = cluster.kubectl("-n", NAMESPACE, "describe", "pods", check=False).stdout
        raise AssertionError(f"{exc}\n{described}\n{cluster.logs(20)}") from exc
    yield gpu
    cluster.kubectl("delete", "-k", str(gpu), "--wait=true", timeout=240, check=False)
    cluster.kubectl("delete", "runtimeclass", "nvidia", "--ignore-not-found", check=False)
    cluster.kubectl("label", "node", NODE_NAME, f"{PCI}-", f"{OPT_IN}-", check=False)
    cluster.sh(f"rm -f {FEATURES_D}/e2e", check=False)
    # Leave the Node as the next module expects it: none of the agents' labels.
    for instance in ([], ["--instance", "gpu"]):
        subprocess.run(cluster.in_network([
            sys.executable, "-m", "nodefeatures", "prune", "--node", NODE_NAME,
            f"--kubeconfig={cluster.kubeconfig}", "--allow-unconfined", *instance]),
            capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def host_published(cluster: NodeCluster, overlay: Path) -> dict[str, str]:
    return wait_for(lambda: host_labels(cluster), 30, "the base agent's labels")


def nvidia_labels(cluster: NodeCluster) -> dict[str, str]:
    return {k: v for k, v in node(cluster)["metadata"]["labels"].items()
            if k.startswith("nvidia.com/")}


def test_the_base_agent_publishes_every_allowed_namespace_but_the_nvidia_source(
        cluster, overlay, host_published) -> None:
    labels = wait_for(lambda: LOCAL.items() <= node(cluster)["metadata"]["labels"].items()
                      and node(cluster)["metadata"]["labels"], 30, "the features.d labels")
    assert {k: labels[k] for k in LOCAL} == LOCAL
    from nodefeatures.cluster.reconcile import Ledger

    owners = Ledger.parse(node(cluster)["metadata"]["annotations"]).owners
    assert {owners[k] for k in LOCAL} == {"local"}
    # Nothing of the nvidia source: it never ran in the base pod.
    assert nvidia_labels(cluster) == {"nvidia.com/e2e.local": "1"}


def test_without_runtime_class_the_node_keeps_its_host_labels_and_an_event_says_why(
        cluster, overlay, host_published) -> None:
    assert cluster.kubectl("get", "runtimeclass", "nvidia", check=False).returncode != 0
    cluster.kubectl("label", "node", NODE_NAME, f"{PCI}=true")  # as admin
    events = wait_for(lambda: node_events(cluster, "GPUAgentMissing"), 60,
                      "an Event GPUAgentMissing on the Node")
    assert events[0]["type"] == "Warning"
    assert GPU_LEDGER in events[0]["message"]
    # The GPU DaemonSet's pod was refused, and the base agent is still there, Ready.
    pods = agent_pods(cluster)
    assert [p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods] == ["agent"]
    assert host_labels(cluster) == host_published
    annotations = node(cluster)["metadata"].get("annotations", {})
    assert GPU_LEDGER not in annotations
    assert nvidia_labels(cluster) == {"nvidia.com/e2e.local": "1"}


def test_with_runtime_class_the_gpu_agent_joins_and_the_host_labels_stay(
        cluster, overlay, host_published) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "nvidia"}, "handler": "nvidia"}))
    # The DaemonSet controller backs off after refused creates; an update requeues it.
    cluster.kubectl("-n", NAMESPACE, "annotate", "daemonset", "nodefeatures-nvidia",
                    f"nodefeatures.test/poke={time.time_ns()}", "--overwrite")
    try:
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/nodefeatures-nvidia",
                        f"--timeout={ROLLOUT_TIMEOUT_S}s", timeout=ROLLOUT_TIMEOUT_S + 30)
    except RuntimeError as exc:
        described = cluster.kubectl("-n", NAMESPACE, "describe", "pods", check=False).stdout
        raise AssertionError(f"{exc}\n{described}\n{cluster.logs(20)}") from exc
    # Ready means its first pass is done: no NVML here, so only its empty ledger.
    annotations = node(cluster)["metadata"]["annotations"]
    assert json.loads(annotations[GPU_LEDGER]) == {}
    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"]
                        for p in agent_pods(cluster))
    assert components == ["agent", "agent-nvidia"]
    time.sleep(4)  # two more passes of each agent
    assert host_labels(cluster) == host_published
    # The base agent's nvidia.com/ key is left alone by the GPU agent, and the reverse.
    assert nvidia_labels(cluster) == {"nvidia.com/e2e.local": "1"}
    assert json.loads(node(cluster)["metadata"]["annotations"][GPU_LEDGER]) == {}


def gpu_pods(cluster: NodeCluster) -> list[dict]:
    return [p for p in agent_pods(cluster)
            if p["metadata"]["labels"]["app.kubernetes.io/component"] == "agent-nvidia"]


def test_the_opt_in_label_alone_brings_the_gpu_agent(cluster, overlay, host_published) -> None:
    """A Jetson or WSL2 node: no NVIDIA PCI label, the administrator's opt-in."""
    assert gpu_pods(cluster), "runs after the GPU agent joined"
    cluster.kubectl("label", "node", NODE_NAME, f"{PCI}-")
    wait_for(lambda: not gpu_pods(cluster), 90, "the GPU pod to leave the node")
    cluster.kubectl("label", "node", NODE_NAME, f"{OPT_IN}=true")
    wait_for(lambda: gpu_pods(cluster), 30, "a GPU pod on the opted-in node")
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/nodefeatures-nvidia",
                    f"--timeout={ROLLOUT_TIMEOUT_S}s", timeout=ROLLOUT_TIMEOUT_S + 30)
    assert host_labels(cluster) == host_published
