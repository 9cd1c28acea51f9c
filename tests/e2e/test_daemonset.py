"""deploy/ on a real kubelet: the agent starts confined, labels its Node, and keeps to it.

The tests share one cluster and one install and run in file order: the last two
uninstall the agent and prune its labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2ekit import NAMESPACE, Install, agent_pods, wait_for
from nodecluster import NODE_NAME, NodeCluster

from nodefeatures.cluster.kube import FIELD_MANAGER
from nodefeatures.cluster.reconcile import DEFAULT_MANAGED_PREFIXES

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
OTHER_NODE = "e2e-other-node"
RESTORE_TIMEOUT_S = 5.0

# Run inside the agent's container: facts about the agent process (PID 1 of the pod's
# PID namespace) and the container's mounts, as JSON.
PROBE = r"""
import errno, json, os

def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields

def try_write(directory):
    path = os.path.join(directory, ".nodefeatures-e2e-probe")
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    os.close(fd)
    os.unlink(path)
    return "written"

mounts = {}
with open("/proc/self/mountinfo") as handle:
    for line in handle:
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")

print(json.dumps({
    "agent": status(1),
    "mounts": mounts,
    "writes": {d: try_write(d) for d in ("/tmp", "/host/tmp", "/host/var/tmp")},
    "host_proc": sorted(os.listdir("/host/proc")),
    "host_dev": sorted(os.listdir("/host/dev")),
    "host_has_sys": os.path.isdir("/host/sys/devices"),
}))
"""


def managed(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith(tuple(DEFAULT_MANAGED_PREFIXES))}


def node_labels(cluster: NodeCluster, name: str = NODE_NAME) -> dict[str, str]:
    return dict(cluster.get_json("node", name)["metadata"].get("labels", {}))


def exec_in_agent(cluster: NodeCluster, install: Install, *argv: str) -> str:
    return cluster.kubectl("-n", NAMESPACE, "exec", install.pod, "-c", "agent", "--",
                           *argv).stdout


@pytest.fixture(scope="module")
def probe(cluster: NodeCluster, install: Install) -> dict[str, Any]:
    return json.loads(exec_in_agent(cluster, install, "python", "-c", PROBE))


@pytest.fixture(scope="module")
def published(cluster: NodeCluster, install: Install) -> dict[str, str]:
    """The agent's labels once its first publish is on the Node (readiness gates it)."""
    return wait_for(lambda: managed(node_labels(cluster)), 30, "the agent's labels")


def test_agent_pod_becomes_ready_on_a_node_without_lib_modules(cluster, install) -> None:
    # This machine has no /lib/modules: the old hostPath layout never started here.
    pod = cluster.get_json("pod", "-n", NAMESPACE, install.pod)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["spec"]["containers"][0]["image"] == install.image


def test_agent_runs_as_65532_without_capabilities_or_new_privileges(probe) -> None:
    agent = probe["agent"]
    assert agent["Uid"].split() == ["65532"] * 4
    assert agent["Gid"].split() == ["65532"] * 4
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(agent[caps], 16) == 0, f"{caps} = {agent[caps]}"
    assert agent["NoNewPrivs"] == "1"
    assert agent["Seccomp"] == "2", "seccomp filter mode (RuntimeDefault)"


def test_root_and_every_host_mount_are_read_only(probe) -> None:
    mounts = probe["mounts"]
    assert "ro" in mounts["/"]
    host = {path: opts for path, opts in mounts.items()
            if path == "/host" or path.startswith("/host/")}
    # The host's own submounts (/sys, /run, the sandbox's overlays) came along ...
    assert "/host/sys" in host and probe["host_has_sys"]
    assert len(host) > 3
    # ... and every one of them is read-only, not only the top (recursiveReadOnly).
    assert not {path for path, opts in host.items() if "ro" not in opts}
    # World-writable directories, so only a read-only mount can refuse the write.
    assert probe["writes"] == {"/tmp": "EROFS", "/host/tmp": "EROFS", "/host/var/tmp": "EROFS"}


def test_host_processes_and_devices_are_hidden(probe) -> None:
    assert probe["host_proc"] == []
    assert probe["host_dev"] == []


def test_node_labels_are_what_dump_gives_on_the_same_machine(cluster, published) -> None:
    dump = subprocess.run(
        [sys.executable, "-m", "nodefeatures", "dump", "--root", "/", "--format", "json"],
        capture_output=True, text=True, check=True)
    expected = json.loads(dump.stdout)
    assert expected, "dump found nothing to compare with"
    labels = managed(node_labels(cluster))
    missing = {k: v for k, v in expected.items() if labels.get(k) != v}
    extra = {k: v for k, v in labels.items() if k not in expected}
    assert not missing and not extra, f"differ from dump: missing {missing}, extra {extra}"


def test_a_label_deleted_by_hand_comes_back_within_5s(cluster, published) -> None:
    key = sorted(published)[0]
    cluster.kubectl("label", "node", NODE_NAME, f"{key}-")
    wait_for(lambda: node_labels(cluster).get(key) == published[key], RESTORE_TIMEOUT_S,
             f"{key} to come back", interval=0.1)


@pytest.fixture(scope="module")
def agent_token(cluster: NodeCluster, install: Install) -> str:
    """The pod's own projected ServiceAccount token, read from inside the container."""
    token = exec_in_agent(cluster, install, "cat", TOKEN_PATH).strip()
    assert token.count(".") == 2
    return token


@pytest.fixture
def other_node(cluster: NodeCluster) -> Iterator[str]:
    """A second Node (no kubelet behind it), gone again after the test.

    The DaemonSet tolerates everything, so it gives this Node a pod too; that pod can
    never run, and left behind it would stall the rollouts of later tests.
    """
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": OTHER_NODE, "labels": {"kubernetes.io/hostname": OTHER_NODE}}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(node))
    yield OTHER_NODE
    cluster.kubectl("delete", "node", OTHER_NODE, "--wait=true")
    cluster.kubectl("-n", NAMESPACE, "delete", "pods",
                    f"--field-selector=spec.nodeName={OTHER_NODE}", "--force", "--grace-period=0",
                    check=False)


def patch_as_agent(cluster: NodeCluster, token: str, node: str,
                   patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # Server-side dry run: admission runs in full, nothing is stored.
    return cluster.kubectl("patch", "node", node, "--type=merge", "--dry-run=server",
                           "-p", json.dumps(patch), token=token, check=False)


def test_policy_admits_the_agents_own_node_patch(cluster, agent_token) -> None:
    result = patch_as_agent(cluster, agent_token, NODE_NAME,
                            {"metadata": {"labels": {"feature.node.kubernetes.io/e2e": "1"}}})
    assert result.returncode == 0, result.stderr


def test_policy_denies_patching_another_node(cluster, agent_token, other_node) -> None:
    result = patch_as_agent(cluster, agent_token, other_node,
                            {"metadata": {"labels": {"feature.node.kubernetes.io/e2e": "1"}}})
    assert result.returncode != 0, "a patch of another Node was admitted"
    assert "nodefeatures-own-node" in result.stderr, result.stderr
    assert "only the Node its pod runs on" in result.stderr, result.stderr


def test_policy_denies_a_token_not_bound_to_a_pod(cluster, install) -> None:
    # The agent's own ServiceAccount, but a token from the TokenRequest API with no pod
    # (so no node) behind it: what a copied long-lived token would look like.
    token = cluster.kubectl("-n", NAMESPACE, "create", "token", "nodefeatures").stdout.strip()
    result = patch_as_agent(cluster, token, NODE_NAME,
                            {"metadata": {"labels": {"feature.node.kubernetes.io/e2e": "1"}}})
    assert result.returncode != 0, "a token without a node was admitted"
    assert "is not bound to a node" in result.stderr, result.stderr


@pytest.mark.parametrize(("what", "patch", "message"), [
    ("a foreign label", {"metadata": {"labels": {"team": "blue"}}},
     "only labels in the allowed namespaces"),
    ("a taint", {"spec": {"taints": [{"key": "e2e", "value": "x", "effect": "NoSchedule"}]}},
     "must leave every other taint"),
    ("unschedulable", {"spec": {"unschedulable": True}}, "not the rest of the Node's spec"),
    ("an annotation outside the ledger and the output namespaces",
     {"metadata": {"annotations": {"e2e.kubernetes.io/e2e": "1"}}},
     "only its ledger annotations"),
])
def test_policy_denies_the_agent_on_its_own_node(cluster, agent_token, what, patch,
                                                 message) -> None:
    result = patch_as_agent(cluster, agent_token, NODE_NAME, patch)
    assert result.returncode != 0, f"{what} was admitted"
    assert "nodefeatures-own-node" in result.stderr and message in result.stderr, result.stderr


def agent_field_entries(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The Node's managedFields entries of the agent: they change only when it writes."""
    return [e for e in node["metadata"].get("managedFields", [])
            if e.get("manager") == FIELD_MANAGER]


def test_a_rolling_update_to_a_new_image_changes_nothing_on_the_node(cluster, install,
                                                                     published) -> None:
    new_image = f"{install.image}-next"
    cluster.ctr("images", "tag", install.image, new_image)
    before = cluster.get_json("node", NODE_NAME, "--show-managed-fields")
    assert agent_field_entries(before), "the agent's writes carry its field manager"
    old_pod = install.pod
    cluster.kubectl("-n", NAMESPACE, "set", "image", "daemonset/nodefeatures",
                    f"agent={new_image}")
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/nodefeatures",
                    "--timeout=180s", timeout=210)
    pods = wait_for(lambda: [p for p in agent_pods(cluster)
                             if p["metadata"]["name"] != old_pod
                             and p["spec"]["containers"][0]["image"] == new_image],
                    60, "the new agent pod")
    install.pod = pods[0]["metadata"]["name"]
    # Readiness means the new agent finished its first pass; give it one more.
    time.sleep(2)
    after = cluster.get_json("node", NODE_NAME, "--show-managed-fields")
    assert managed(after["metadata"]["labels"]) == managed(before["metadata"]["labels"])
    assert agent_field_entries(after) == agent_field_entries(before), "the new agent wrote"


def test_uninstall_leaves_the_labels(cluster, install, published) -> None:
    before = node_labels(cluster)
    assert managed(before)
    cluster.kubectl("delete", "-k", str(install.directory), "--wait=true", timeout=240)
    wait_for(lambda: not agent_pods(cluster), 60, "the agent pod to be gone")
    after = node_labels(cluster)
    assert managed(after) == managed(before)


def test_prune_removes_exactly_the_agents_labels(cluster, published) -> None:
    not_ours = "feature.node.kubernetes.io/e2e-someone-else"
    cluster.kubectl("label", "node", NODE_NAME, f"{not_ours}=true")
    before = node_labels(cluster)
    assert set(published) <= set(before)
    result = subprocess.run(
        # Administrator's credentials: the own-node policy does not bind them, so the
        # confinement proof is waived explicitly, as docs/install.md's uninstall says.
        cluster.in_network([sys.executable, "-m", "nodefeatures", "prune", "--node", NODE_NAME,
                            f"--kubeconfig={cluster.kubeconfig}", "--allow-unconfined"]),
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    after = node_labels(cluster)
    removed = {k for k in before if k not in after}
    assert removed == set(published)
    assert {k: v for k, v in before.items() if k not in removed} == after
    assert after[not_ours] == "true"
