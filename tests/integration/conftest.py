"""Fixtures for tests that talk to a real kube-apiserver (see tests/kubeharness.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import kubeharness
import pytest

# The agent tests' shared fixtures: the shipped RBAC applied once, a fresh Node, and
# deploy/nfd-crds/ served.
from agentkit import keep_configmap_params, nfd_crds, node, rbac  # noqa: F401


@pytest.fixture(scope="session")
def apiserver() -> Iterator[kubeharness.ControlPlane]:
    """One etcd + kube-apiserver for the whole session.

    Skips when the binaries are missing (run tests/apiserver/build.sh), but fails when
    the CI variable is set, so a broken build cannot turn the suite into silent skips.
    """
    try:
        binaries = kubeharness.prerequisites()
    except kubeharness.BinariesUnavailable as err:
        reason = f"real kube-apiserver unavailable: {err}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with kubeharness.control_plane(binaries) as plane:
        # Before any policy with ConfigMap params comes and goes (agentkit says why).
        keep_configmap_params(plane)
        yield plane
