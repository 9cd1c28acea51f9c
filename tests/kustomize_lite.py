"""Render deploy/ the way `kubectl apply -k` does, for tests on machines without kubectl.

Supports exactly what deploy/ uses: `resources` (files and directories, in order),
`patches` holding JSON 6902 operations with a kind/name target, and `images` (which
`kustomize edit set image` writes, as docs/install.md suggests). Any other kustomization
field is an error, so deploy/ cannot start relying on a feature this loader would
silently ignore. tests/deploy/test_deploy_manifests.py checks the output against the
real kustomize (`kubectl kustomize`) wherever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

_SUPPORTED = {"apiVersion", "kind", "resources", "patches", "images"}


class KustomizeError(Exception):
    """The kustomization uses something this loader does not implement."""


def render(directory: Path = DEPLOY) -> list[dict[str, Any]]:
    """All objects of the kustomization in `directory`, patched, in resource order."""
    kustomization_path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_path.read_text())
    unsupported = set(kustomization) - _SUPPORTED
    if unsupported:
        raise KustomizeError(f"{kustomization_path}: unsupported fields {sorted(unsupported)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(load_documents(path))
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, patch, objects)
    for image in kustomization.get("images", []):
        _set_image(image, objects)
    return objects


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of one manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` called `name`."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name!r}, found {len(found)}")
    return found[0]


def _apply_patch(directory: Path, patch: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if set(patch) - {"path", "patch", "target"}:
        raise KustomizeError(f"unsupported patch fields {sorted(set(patch))}")
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError("only JSON 6902 patches (a list of operations) are supported")
    target = patch.get("target") or {}
    matched = [o for o in objects if _matches(o, target)]
    if not matched:
        raise KustomizeError(f"patch target {target} matches nothing")
    for obj in matched:
        for operation in operations:
            _apply_operation(obj, operation)


def _set_image(image: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """Rewrite container images named `image["name"]` (with or without a tag)."""
    if set(image) - {"name", "newName", "newTag"}:
        raise KustomizeError(f"unsupported image fields {sorted(set(image))}")
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")


def _matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": obj["kind"],
              "name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace")}
    for key, wanted in target.items():
        if key not in actual:
            raise KustomizeError(f"unsupported patch target field {key!r}")
        if actual[key] != wanted:
            return False
    return True


def _apply_operation(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    """One RFC 6902 add, replace or remove."""
    op = operation["op"]
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
        return
    if op not in ("add", "replace"):
        raise KustomizeError(f"unsupported patch operation {op!r}")
    value = copy.deepcopy(operation["value"])
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif op == "add":
            parent.insert(int(last), value)
        else:
            parent[int(last)] = value
    else:
        if op == "replace" and last not in parent:
            raise KustomizeError(f"replace of missing {operation['path']}")
        parent[last] = value
