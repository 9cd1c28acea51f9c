"""Rule outputs beyond labels planned on a Node: annotations, taints, extended resources."""

from __future__ import annotations

import json
from typing import Any

from nodefeatures.cluster.outputs import plan_node, prune_node
from nodefeatures.cluster.reconcile import (
    CONFLICT,
    KEEP,
    REMOVE,
    SKIP,
    Evidence,
    Scope,
    SourceReport,
)
from nodefeatures.discovery.namespaces import DEFAULT, LabelNamespaces

RULE = "nodefeaturerule/gpu"
ALL_ON = LabelNamespaces(DEFAULT.deny, DEFAULT.extra,
                         frozenset({"annotations", "taints", "extendedResources"}))
ALL_OFF = LabelNamespaces(DEFAULT.deny, DEFAULT.extra)
FOREIGN = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
           "timeAdded": "2026-12-01T00:00:00Z"}


def scope(setting: LabelNamespaces | None = ALL_ON) -> Scope:
    return Scope((), setting)


def evidence(trusted: bool = True, catalogued: bool = True, **outputs: dict[str, str]
             ) -> Evidence:
    kinds = {"extendedResources" if k == "extended_resources" else k: v
             for k, v in outputs.items()}
    report = SourceReport(RULE, {}, trusted, "" if trusted else "failed", outputs=kinds)
    return Evidence((report,), catalogued=frozenset({"nodefeaturerule/"} if catalogued
                                                    else ()))


def gone() -> Evidence:
    """The object no longer exists: its kind was listed in full and it is not there."""
    return Evidence((), catalogued=frozenset({"nodefeaturerule/"}))


def node(taints: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None,
         capacity: dict[str, str] | None = None,
         allocatable: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "resourceVersion": "5", "labels": {},
                         "annotations": dict(annotations or {})},
            "spec": {"taints": list(taints or [])},
            "status": {"capacity": {"cpu": "2", **(capacity or {})},
                       "allocatable": {"cpu": "2", **(allocatable or capacity or {})}}}


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def applied(before: dict[str, Any], decided: Any) -> dict[str, Any]:
    """The Node once the plan's patches are applied as the API server merges them."""
    after = json.loads(json.dumps(before))
    body = decided.patch("5")
    if body is not None:
        _merge(after["metadata"]["annotations"], body["metadata"].get("annotations", {}))
        if "taints" in body.get("spec", {}):
            after["spec"]["taints"] = body["spec"]["taints"]
    status = decided.status_patch("5")
    if status is not None:
        _merge(after["metadata"]["annotations"], status["metadata"].get("annotations", {}))
        for part in ("capacity", "allocatable"):
            _merge(after["status"][part], status.get("status", {}).get(part, {}))
    return after


def test_a_taint_is_added_beside_the_others_and_owned_in_its_own_ledger() -> None:
    before = node([FOREIGN])
    decided = plan_node(evidence(taints={"vendor.io/gpu:NoSchedule": ""}), before, scope())
    body = decided.patch("5")
    assert body["spec"]["taints"] == [FOREIGN, {"key": "vendor.io/gpu", "effect": "NoSchedule"}]
    ledger = json.loads(body["metadata"]["annotations"]["nodefeatures.dev/taints"])
    assert ledger == {RULE: {"vendor.io/": ["gpu:NoSchedule"]}}
    assert "labels" not in body["metadata"]
    assert decided.status_patch("5") is None
    # Applied, the next pass sends nothing at all.
    again = plan_node(evidence(taints={"vendor.io/gpu:NoSchedule": ""}), applied(before, decided),
                      scope())
    assert again.patch("5") is None and again.status_patch("5") is None
    assert not again.needs_write


def test_a_changed_taint_value_keeps_its_place_and_the_foreign_ones_stay_whole() -> None:
    before = applied(node([FOREIGN]), plan_node(
        evidence(taints={"vendor.io/gpu:NoSchedule": "a"}), node([FOREIGN]), scope()))
    before["spec"]["taints"].append({"key": "other.io/x", "effect": "NoSchedule"})
    decided = plan_node(evidence(taints={"vendor.io/gpu:NoSchedule": "b"}), before, scope())
    assert decided.patch("5")["spec"]["taints"] == [
        FOREIGN, {"key": "vendor.io/gpu", "value": "b", "effect": "NoSchedule"},
        {"key": "other.io/x", "effect": "NoSchedule"}]


def test_a_deleted_object_takes_its_taint_away_and_a_failing_one_keeps_it() -> None:
    on = applied(node([FOREIGN]), plan_node(
        evidence(taints={"vendor.io/gpu:NoSchedule": ""}), node([FOREIGN]), scope()))
    failing = plan_node(evidence(trusted=False), on, scope())
    assert failing.patch("5") is None
    assert [c.action for c in failing.outputs["taints"].changes] == [KEEP]
    unlisted = plan_node(evidence(catalogued=False, trusted=False), on, scope())
    assert unlisted.patch("5") is None
    deleted = plan_node(gone(), on, scope())
    body = deleted.patch("5")
    assert body["spec"]["taints"] == [FOREIGN]
    assert body["metadata"]["annotations"] == {"nodefeatures.dev/taints": None}


def test_someone_elses_taint_with_our_key_is_left_alone() -> None:
    theirs = {"key": "vendor.io/gpu", "value": "mine", "effect": "NoSchedule"}
    decided = plan_node(evidence(taints={"vendor.io/gpu:NoSchedule": "ours"}), node([theirs]),
                        scope())
    assert [c.action for c in decided.outputs["taints"].changes] == [CONFLICT]
    assert decided.patch("5") is None


def test_switching_a_kind_off_removes_what_the_agent_owns_of_it_and_says_why() -> None:
    given = evidence(taints={"vendor.io/gpu:NoSchedule": ""}, annotations={"vendor.io/a": "1"})
    on = applied(node([FOREIGN]), plan_node(given, node([FOREIGN]), scope()))
    assert on["metadata"]["annotations"]["vendor.io/a"] == "1"
    off = plan_node(given, on, scope(ALL_OFF))
    body = off.patch("5")
    assert body["spec"]["taints"] == [FOREIGN]
    assert body["metadata"]["annotations"] == {
        "vendor.io/a": None, "nodefeatures.dev/annotations": None,
        "nodefeatures.dev/taints": None}
    [removal] = off.outputs["taints"].changes
    assert removal.action == REMOVE and "enableTaints" in removal.reason
    assert "enableTaints" in off.all_problems()["outputs-off:taints"]
    # Once removed, the objects' outputs are still reported, and nothing is written.
    after = applied(on, off)
    quiet = plan_node(given, after, scope(ALL_OFF))
    assert not quiet.needs_write
    assert RULE in quiet.all_problems()["outputs-off:annotations"]


def test_without_a_setting_no_output_is_planned_and_owned_ones_stay() -> None:
    given = evidence(taints={"vendor.io/gpu:NoSchedule": ""})
    on = applied(node(), plan_node(given, node(), scope()))
    decided = plan_node(gone(), on, Scope(("feature.node.kubernetes.io/",)))
    assert decided.outputs == {} and not decided.needs_write


def test_an_annotation_outside_the_allowed_namespaces_is_not_published() -> None:
    setting = LabelNamespaces(("denied.io",), (), ALL_ON.outputs)
    decided = plan_node(evidence(annotations={"denied.io/a": "1", "vendor.io/b": "2"}), node(),
                        scope(setting))
    actions = {c.key: c.action for c in decided.outputs["annotations"].changes}
    assert actions["denied.io/a"] == SKIP
    assert decided.patch("5")["metadata"]["annotations"]["vendor.io/b"] == "2"
    assert "denied.io/a" not in decided.patch("5")["metadata"]["annotations"]


def test_extended_resources_go_to_capacity_and_allocatable_with_their_ledger() -> None:
    decided = plan_node(evidence(extended_resources={"vendor.io/widgets": "1000"}), node(),
                        scope())
    assert decided.patch("5") is None  # nothing for the Node's own object
    status = decided.status_patch("5")
    assert status["status"] == {"capacity": {"vendor.io/widgets": "1000"},
                                "allocatable": {"vendor.io/widgets": "1000"}}
    assert status["metadata"]["resourceVersion"] == "5"
    assert "nodefeatures.dev/extended-resources" in status["metadata"]["annotations"]
    # The server stores 1000 as 1k: the same quantity, so nothing to do.
    on = applied(node(), decided)
    on["status"]["capacity"]["vendor.io/widgets"] = "1k"
    on["status"]["allocatable"]["vendor.io/widgets"] = "1k"
    assert not plan_node(evidence(extended_resources={"vendor.io/widgets": "1000"}), on,
                         scope()).needs_write
    # Someone took it out of allocatable: put back.
    on["status"]["allocatable"].pop("vendor.io/widgets")
    back = plan_node(evidence(extended_resources={"vendor.io/widgets": "1000"}), on, scope())
    assert back.status_patch("5")["status"]["allocatable"] == {"vendor.io/widgets": "1000"}
    # The rule is gone: both go, the ledger with them, in one status patch.
    removed = plan_node(gone(), on, scope()).status_patch("5")
    assert removed["status"] == {"capacity": {"vendor.io/widgets": None},
                                 "allocatable": {"vendor.io/widgets": None}}
    assert removed["metadata"]["annotations"] == {"nodefeatures.dev/extended-resources": None}


def test_a_resource_another_writer_set_is_not_claimed() -> None:
    decided = plan_node(evidence(extended_resources={"nvidia.com/gpu": "8"}),
                        node(capacity={"nvidia.com/gpu": "4"}), scope())
    assert [c.action for c in decided.outputs["extendedResources"].changes] == [CONFLICT]
    assert decided.status_patch("5") is None


def test_prune_removes_every_output_kind_the_instance_owns() -> None:
    given = evidence(taints={"vendor.io/gpu:NoSchedule": ""}, annotations={"vendor.io/a": "1"},
                     extended_resources={"vendor.io/w": "2"})
    on = applied(node([FOREIGN]), plan_node(given, node([FOREIGN]), scope()))
    pruned = prune_node(on, Scope(()))
    after = applied(on, pruned)
    assert after["spec"]["taints"] == [FOREIGN]
    assert "vendor.io/w" not in after["status"]["capacity"]
    assert not any(k.startswith(("vendor.io/", "nodefeatures.dev/"))
                   for k in after["metadata"]["annotations"])
    # Pruning another source's leaves these.
    assert not prune_node(on, Scope(()), ["nodefeaturerule/other"]).needs_write


def test_a_damaged_taint_ledger_is_restored_from_what_the_agent_wrote() -> None:
    given = evidence(taints={"vendor.io/gpu:NoSchedule": ""})
    first = plan_node(given, node(), scope())
    on = applied(node(), first)
    from nodefeatures.cluster.outputs import written_after

    written = written_after(first, node())
    del on["metadata"]["annotations"]["nodefeatures.dev/taints"]
    decided = plan_node(gone(), on, scope(), written_outputs=written)
    assert "ledger-restored:taints" in decided.all_problems()
    assert decided.patch("5")["spec"]["taints"] == []


def test_all_objects_together_publish_a_bounded_amount_of_each_kind() -> None:
    from nodefeatures.cluster.outputs import TOTAL_BYTES

    reports = tuple(SourceReport(f"nodefeaturerule/r{i:03}", {}, True, outputs={
        "annotations": {f"vendor.io/a{i:03}-{j}": "x" * 1000 for j in range(30)}})
        for i in range(20))
    given = Evidence(reports, catalogued=frozenset({"nodefeaturerule/"}))
    decided = plan_node(given, node(), scope())
    written = {k: v for k, v in decided.patch("5")["metadata"]["annotations"].items()
               if k.startswith("vendor.io/")}
    assert 0 < sum(len(k) + len(v) for k, v in written.items()) <= TOTAL_BYTES
    # The first objects by name keep theirs; the cut is reported.
    assert "vendor.io/a000-0" in written and "vendor.io/a019-29" not in written
    assert "not published" in decided.all_problems()["outputs-over:annotations"]


def test_a_damaged_resource_ledger_is_restored_whatever_spelling_the_server_keeps() -> None:
    from nodefeatures.cluster.outputs import written_after

    given = evidence(extended_resources={"vendor.io/widgets": "1000"})
    first = plan_node(given, node(), scope())
    on = applied(node(), first)
    for part in ("capacity", "allocatable"):
        on["status"][part]["vendor.io/widgets"] = "1k"  # as the API server stores it
    stable = plan_node(given, on, scope(), written_outputs=written_after(first, node()))
    assert not stable.needs_write
    damaged = json.loads(json.dumps(on))
    del damaged["metadata"]["annotations"]["nodefeatures.dev/extended-resources"]
    # Whether the agent last wrote it or last found it in place, it is ours: taken back
    # while the object gives it, removed once the object is gone.
    for written in (written_after(first, node()), written_after(stable, on)):
        kept = plan_node(given, damaged, scope(), written_outputs=written)
        assert "ledger-restored:extendedResources" in kept.all_problems()
        assert "nodefeatures.dev/extended-resources" in kept.status_patch("5")["metadata"][
            "annotations"]
        removed = plan_node(gone(), damaged, scope(), written_outputs=written)
        assert removed.status_patch("5")["status"]["capacity"] == {"vendor.io/widgets": None}


def test_a_resource_left_only_in_allocatable_is_removed_with_its_object() -> None:
    # The scheduler reads allocatable: one left there offers what no longer exists.
    given = evidence(extended_resources={"vendor.io/widgets": "2"})
    on = applied(node(), plan_node(given, node(), scope()))
    on["status"]["capacity"].pop("vendor.io/widgets")  # someone removed it from capacity
    removed = plan_node(gone(), on, scope()).status_patch("5")
    assert removed is not None
    assert removed["status"]["allocatable"] == {"vendor.io/widgets": None}
    after = applied(on, plan_node(gone(), on, scope()))
    assert "vendor.io/widgets" not in after["status"]["allocatable"]
    assert not plan_node(gone(), after, scope()).needs_write


def test_a_ledger_naming_a_key_without_namespace_never_removes_the_nodes_own() -> None:
    # Every output key the agent writes has a namespace; cpu, memory and pods have none,
    # so a ledger that lists one was written by someone else, who may patch the Node but
    # not its status, and the agent must not remove them for it.
    planted = {"nodefeatures.dev/extended-resources": json.dumps(
        {RULE: {"": ["cpu"], "vendor.io/": ["w"]}})}
    decided = plan_node(gone(), node(annotations=planted, capacity={"vendor.io/w": "1"}),
                        scope())
    status = decided.status_patch("5")
    assert status["status"]["capacity"] == {"vendor.io/w": None}
    assert "ledger:extendedResources" in decided.all_problems()
