"""`rules test --from-cluster` as a real process against the real API server: the
cluster's NodeFeatureRules evaluated on a fixture, with a Node's NodeFeature features."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from nfdkit import node_feature, rule_object
from testpaths import FIXTURES

DGX = FIXTURES / "dgx-h100"


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodefeatures", *map(str, args)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cluster_rules_are_explained_by_name_with_the_nodes_node_features(apiserver,
                                                                         nfd_crds):
    tag = uuid.uuid4().hex[:6]
    hopper = {"name": f"hopper-{tag}", "labels": {"gpu.hopper": "true"}, "matchFeatures": [
        {"feature": "pci.device", "matchExpressions": {
            "vendor": {"op": "In", "value": ["10de"]}, "device": {"op": "In",
                                                                 "value": ["2330"]}}}]}
    vendor = {"name": f"accel-{tag}", "labels": {"vendor.io/accel": "@vendor.accel.model"},
              "matchFeatures": [{"feature": "vendor.accel",
                                 "matchExpressions": {"model": {"op": "Exists"}}}]}
    features = {"attributes": {"vendor.accel": {"elements": {"model": "x1"}}}}
    node = f"rules-cli-{tag}"
    with rule_object(apiserver, [hopper], f"a-{tag}"), rule_object(apiserver, [vendor],
                                                                     f"b-{tag}"):
        result = cli("rules", "test", "--fixture", DGX, "--from-cluster", "--kubeconfig",
                     apiserver.kubeconfig_path, "--format", "json")
        assert result.returncode == 0, result.stderr
        by_name = {r["name"]: r for r in json.loads(result.stdout)["rules"]}
        assert by_name[f"hopper-{tag}"]["result"] == "matched"
        assert by_name[f"hopper-{tag}"]["file"] == f"nodefeaturerule/a-{tag}"
        # Without the Node's NodeFeature, vendor.accel does not exist.
        assert by_name[f"accel-{tag}"]["result"] == "not matched"
        with node_feature(apiserver, "vendor", f"accel-{tag}", node, {}, features):
            result = cli("rules", "test", "--fixture", DGX, "--from-cluster", "--kubeconfig",
                         apiserver.kubeconfig_path, "--node", node, "--format", "json")
        assert result.returncode == 0, result.stderr
        by_name = {r["name"]: r for r in json.loads(result.stdout)["rules"]}
        assert by_name[f"accel-{tag}"]["labels"] == {"vendor.io/accel": "x1"}


def test_without_files_or_cluster_there_is_nothing_to_test():
    result = cli("rules", "test", "--fixture", DGX)
    assert result.returncode == 2
    assert "--from-cluster" in result.stderr


def test_an_unreachable_cluster_is_one_error_line(tmp_path: Path):
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: x\n  cluster:\n"
        "    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n"
        "- name: x\n  context: {cluster: x, user: x}\nusers:\n- name: x\n  user: {token: t}\n")
    result = cli("rules", "test", "--fixture", DGX, "--from-cluster", "--kubeconfig", config)
    assert result.returncode == 2
    assert result.stderr.startswith("nodefeatures: error: cannot read the cluster's "
                                    "NodeFeatureRules")


def test_a_broken_cluster_object_is_a_rule_problem_and_the_others_still_run(apiserver,
                                                                           nfd_crds):
    tag = uuid.uuid4().hex[:6]
    broken = {"name": f"broken-{tag}", "labels": {"x": "1"}, "matchFeatures": [
        {"feature": "pci.device", "matchExpressions": {
            "vendor": {"op": "InRegexp", "value": ["("]}}}]}
    fine = {"name": f"fine-{tag}", "labels": {"y": "1"}}
    with rule_object(apiserver, [broken], f"a-{tag}"), rule_object(apiserver, [fine],
                                                                     f"b-{tag}"):
        result = cli("rules", "test", "--fixture", DGX, "--from-cluster", "--kubeconfig",
                     apiserver.kubeconfig_path, "--format", "json")
        assert result.returncode == 1, (result.stdout, result.stderr)
        data = json.loads(result.stdout)
        assert not data["ok"]
        assert any(f"a-{tag}" in json.dumps(p) for p in data["problems"]), data["problems"]
        by_name = {r["name"]: r for r in data["rules"]}
        assert by_name[f"fine-{tag}"]["result"] == "matched"
        text = cli("rules", "test", "--fixture", DGX, "--from-cluster", "--kubeconfig",
                   apiserver.kubeconfig_path)
        assert text.returncode == 1 and f"a-{tag}" in text.stdout + text.stderr
