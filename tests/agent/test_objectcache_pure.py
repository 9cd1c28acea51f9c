"""ObjectCache's list against a server that sends what kube-apiserver never would: a
list holding an object it cannot read is no proof that the object is gone."""

from __future__ import annotations

from typing import Any

import pytest

from nodefeatures.cluster.kube import Kind, KubeError
from nodefeatures.cluster.objectcache import ObjectCache


def item(name: str, version: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if version is not None:
        meta["resourceVersion"] = version
    return {"metadata": meta, "spec": {"rules": []}}


class OddServer:
    """Serves `pages` (one list each), then lets every watch fail with 410."""

    kind = Kind("nfd.k8s-sigs.io", "v1alpha1", "nodefeaturerules", verb="rules")

    def __init__(self, lists: list[list[dict[str, Any]]]) -> None:
        self.lists = lists
        self.listed = 0

    def list(self, limit: int = 500, token: str | None = None,
             max_bytes: int | None = None) -> dict[str, Any]:
        items = self.lists[min(self.listed, len(self.lists) - 1)]
        self.listed += 1
        return {"items": items, "metadata": {"resourceVersion": str(10 + self.listed)}}

    def watch(self, version: str, timeout: int) -> Any:
        raise KubeError(410, "Expired", "too old")


def test_a_relist_with_an_unreadable_object_keeps_the_copy_it_had() -> None:
    server = OddServer([[item("a", "5"), item("b", "6")], [item("a", "5"), item("b", None)]])
    cache = ObjectCache(server)  # type: ignore[arg-type]
    cache._list()
    assert set(cache.snapshot()[1]) == {("", "a"), ("", "b")}
    with pytest.raises(KubeError, match="resourceVersion"):
        cache._list()
    _, objects, known = cache.snapshot()
    assert known and set(objects) == {("", "a"), ("", "b")}


class Pages:
    """Serves the given pages of one list, one after the other."""

    kind = OddServer.kind

    def __init__(self, pages: list[Any]) -> None:
        self.pages = pages
        self.served = 0

    def list(self, limit: int = 500, token: str | None = None) -> dict[str, Any]:
        page = self.pages[self.served]
        self.served += 1
        more = {"continue": f"t{self.served}"} if self.served < len(self.pages) else {}
        return {"items": page, "metadata": {"resourceVersion": "9", **more}}


def test_list_all_reads_every_page() -> None:
    from nodefeatures.cluster.nfdapi import list_all

    found = list_all(Pages([[item("a", "1")], [item("b", "2")]]))  # type: ignore[arg-type]
    assert [o["metadata"]["name"] for o in found] == ["a", "b"]


@pytest.mark.parametrize("pages", [
    [[item("a", "1")], None],                 # a page without its items
    [[item("a", "1"), "not an object"]],
    [[item(f"o{i}", "1") for i in range(3)], [item("x", "1")]],  # past `most`
], ids=["no-items", "not-an-object", "too-many"])
def test_list_all_never_returns_part_of_the_list(pages: list[Any]) -> None:
    from nodefeatures.cluster.nfdapi import list_all

    with pytest.raises(KubeError):
        list_all(Pages(pages), most=3)  # type: ignore[arg-type]
