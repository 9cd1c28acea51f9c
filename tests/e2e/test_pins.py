"""The node binaries are built at the same Kubernetes version as the test kube-apiserver."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
APISERVER_MOD = TESTS / "apiserver" / "go.mod"
NODE_MOD = TESTS / "e2e" / "bins" / "kube" / "go.mod"


def k8s_versions(go_mod: Path) -> dict[str, str]:
    """Every k8s.io module's version: requires and replace targets alike."""
    found = {}
    for line in go_mod.read_text().splitlines():
        match = re.match(r"\s*(k8s\.io/\S+)\s+(?:=>\s+\S+\s+)?(v\S+)", line)
        if match:
            found.setdefault(match.group(1), match.group(2))
        replaced = re.match(r"\s*(k8s\.io/\S+)\s+=>\s+\S+\s+(v\S+)", line)
        if replaced:
            found[replaced.group(1)] = replaced.group(2)
    return found


def test_kubelet_and_apiserver_come_from_one_kubernetes_version() -> None:
    node, apiserver = k8s_versions(NODE_MOD), k8s_versions(APISERVER_MOD)
    assert node["k8s.io/kubernetes"] == apiserver["k8s.io/kubernetes"]
    shared = set(node) & set(apiserver)
    assert {"k8s.io/api", "k8s.io/client-go", "k8s.io/kubelet"} <= shared
    assert {m: node[m] for m in shared} == {m: apiserver[m] for m in shared}


def test_helm_speaks_the_apiservers_kubernetes_minor() -> None:
    """helm's Kubernetes modules (v0.N) match the kube-apiserver (v1.N) it is tested on."""
    helm = k8s_versions(TESTS / "helm" / "go.mod")
    kubernetes = k8s_versions(APISERVER_MOD)["k8s.io/kubernetes"]
    assert helm["k8s.io/client-go"].split(".")[1] == kubernetes.split(".")[1]
