"""deploy/nfd-crds/ against NFD's published CRDs: the same types, names, scopes and
subresources, and schemas that differ only where docs/install.md says (descriptions
aside). Needs NFD's source: NODEFEATURES_NFD_GIT (a clone, bare or not, of
kubernetes-sigs/node-feature-discovery) at NODEFEATURES_NFD_REF (default v0.19.0);
skips without it. tests/integration/test_deploy_helm.py holds NFD's objects in them.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml
from manifests import DEPLOY, render

NFD_CRDS = "deployment/base/nfd-crds/nfd-api-crds.yaml"
TAINT_EFFECT = ("versions", 0, "schema", "openAPIV3Schema", "properties", "spec",
                "properties", "rules", "items", "properties", "taints", "items",
                "properties", "effect", "enum")


def nfds() -> dict[str, dict[str, Any]]:
    git_dir = os.environ.get("NODEFEATURES_NFD_GIT")
    if not git_dir:
        pytest.skip("NODEFEATURES_NFD_GIT is not set (a clone of node-feature-discovery)")
    ref = os.environ.get("NODEFEATURES_NFD_REF", "v0.19.0")
    result = subprocess.run(["git", "-C", git_dir, "show", f"{ref}:{NFD_CRDS}"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.skip(f"NFD's {NFD_CRDS} at {ref}: {result.stderr.strip()}")
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout) if d}


def without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [without_descriptions(v) for v in value]
    return value


def differences(ours: Any, theirs: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths where the two differ (lists of scalars compared as sets: enum, required)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [d for k in sorted(set(ours) | set(theirs))
                for d in (differences(ours[k], theirs[k], (*path, k))
                          if k in ours and k in theirs else [(*path, k)])]
    if isinstance(ours, list) and isinstance(theirs, list):
        if all(not isinstance(v, dict | list) for v in ours + theirs):
            return [] if set(ours) == set(theirs) else [path]
        if len(ours) != len(theirs):
            return [path]
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for d in differences(a, b, (*path, i))]
    return [] if ours == theirs else [path]


def test_our_crds_are_nfds_but_for_the_taint_effect() -> None:
    theirs = nfds()
    ours = {d["metadata"]["name"]: d for d in render(DEPLOY / "nfd-crds")}
    assert sorted(ours) == sorted(theirs)
    found = {name: differences(without_descriptions(ours[name]["spec"]),
                               without_descriptions(theirs[name]["spec"]))
             for name in ours}
    assert found == {"nodefeatures.nfd.k8s-sigs.io": [],
                     "nodefeaturegroups.nfd.k8s-sigs.io": [],
                     "nodefeaturerules.nfd.k8s-sigs.io": [TAINT_EFFECT]}
