"""One sandboxed cluster (tests/e2e/nodecluster.py) for every e2e test, and the agent
installed into it with the real kubectl and kustomize.

Where the machine cannot run it (no root, no namespaces, binaries not built), the e2e
tests skip with the one reason; under CI=true that is a failure instead, so CI cannot
silently stop running them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nodecluster
from e2ekit import NAMESPACE, Install, agent_pods

REPO = Path(__file__).resolve().parents[2]
ROLLOUT_TIMEOUT_S = 180


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[nodecluster.NodeCluster]:
    try:
        paths = nodecluster.prerequisites()
    except nodecluster.Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"e2e cluster cannot run under CI: {exc}", pytrace=False)
        pytest.skip(f"e2e cluster cannot run here: {exc}")
    with nodecluster.node_cluster(paths) as running:
        print(f"\ne2e cluster up in {running.start_seconds:.1f}s", file=sys.stderr)
        yield running


@pytest.fixture(scope="session")
def install(cluster: nodecluster.NodeCluster,
            tmp_path_factory: pytest.TempPathFactory) -> Install:
    """deploy/ applied as a user would, with only the image pointed at the local one."""
    directory = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(REPO / "deploy", directory)
    subprocess.run([str(cluster.paths["kustomize"]), "edit", "set", "image",
                    f"nodefeatures={cluster.agent_image}"], cwd=directory, check=True)
    cluster.kubectl("apply", "-k", str(directory))
    try:
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/nodefeatures",
                        f"--timeout={ROLLOUT_TIMEOUT_S}s", timeout=ROLLOUT_TIMEOUT_S + 30)
    except RuntimeError as exc:
        described = cluster.kubectl("-n", NAMESPACE, "describe", "pods", check=False).stdout
        raise AssertionError(f"{exc}\n{described}\n{cluster.logs(20)}") from exc
    pods = agent_pods(cluster)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return Install(directory, cluster.agent_image, pods[0]["metadata"]["name"])
