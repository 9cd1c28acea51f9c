"""Every reconcile rule (docs/design.md names these tests), pure and fast."""

from __future__ import annotations

import json

import pytest

from nodefeatures.cluster.reconcile import (
    ADD,
    ADOPT,
    CHANGE,
    CONFLICT,
    FORGET,
    KEEP,
    LEDGER_ANNOTATION,
    RELEASE,
    REMOVE,
    SKIP,
    SOURCES_ANNOTATION,
    UNOWNED,
    Evidence,
    Ledger,
    SourceReport,
    apply_to,
    check_prefix,
    describe,
    evidence_from,
    plan,
    prune_plan,
)

F = "feature.node.kubernetes.io/"
AVX = F + "cpu-cpuid.AVX"
AVX2 = F + "cpu-cpuid.AVX2"
OS_ID = F + "system-os_release.ID"
GPU = "nvidia.com/gpu.count"


def report(name: str, labels: dict[str, str], trusted: bool = True) -> SourceReport:
    return SourceReport(name, labels, trusted, "" if trusted else "RuntimeError: boom")


def ledger(owners: dict[str, str | None]) -> dict[str, str]:
    return Ledger(owners).encode()


def action_of(result, key: str) -> str:
    return next(c.action for c in result.changes if c.key == key)


# -- the ledger -------------------------------------------------------------------------


def test_ledger_encoding_is_readable_sorted_and_round_trips() -> None:
    owners = {OS_ID: "system", AVX2: "cpu", AVX: "cpu", GPU: "nvidia"}
    encoded = Ledger(owners).encode()
    assert encoded[LEDGER_ANNOTATION] == f"{AVX},{AVX2},{OS_ID},{GPU}"
    # Names the way each source returns them: short in the default namespace.
    assert encoded[SOURCES_ANNOTATION] == (
        "cpu:cpuid.AVX,cpuid.AVX2;nvidia:nvidia.com/gpu.count;system:os_release.ID"
    )
    assert Ledger.parse(encoded).owners == owners


def test_ledger_parse_ignores_garbage_and_unlisted_sources() -> None:
    annotations = {
        LEDGER_ANNOTATION: f" {AVX} ,,bad key!,{OS_ID}",
        SOURCES_ANNOTATION: "cpu:cpuid.AVX,cpuid.SSE;;nonsense;:x;system",
    }
    # SSE is attributed but not owned, so it is not owned; OS_ID has no recorded source.
    assert Ledger.parse(annotations).owners == {AVX: "cpu", OS_ID: None}


def test_empty_ledger_encodes_to_nothing() -> None:
    assert Ledger({}).encode() == {}
    assert Ledger.parse(None).owners == {}


# -- rule 2: new keys are added and recorded ---------------------------------------------


def test_new_key_is_added_and_recorded_in_the_ledger() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    result = plan(evidence, {"kubernetes.io/hostname": "n1"}, {})
    assert result.labels == {AVX: "true"}
    assert result.annotations == {
        LEDGER_ANNOTATION: AVX,
        SOURCES_ANNOTATION: "cpu:cpuid.AVX",
    }
    assert action_of(result, AVX) == ADD


def test_patch_is_a_merge_patch_with_a_resource_version_precondition() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    body = plan(evidence, {}, {}).patch("42")
    assert body == {
        "metadata": {
            "resourceVersion": "42",
            "labels": {AVX: "true"},
            "annotations": {LEDGER_ANNOTATION: AVX, SOURCES_ANNOTATION: "cpu:cpuid.AVX"},
        }
    }


# -- rule 7: quiet ----------------------------------------------------------------------


def test_up_to_date_node_gets_no_patch() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}), report("system", {OS_ID: "debian"})))
    labels = {AVX: "true", OS_ID: "debian", "kubernetes.io/os": "linux"}
    result = plan(evidence, labels, ledger({AVX: "cpu", OS_ID: "system"}))
    assert not result.needs_write
    assert result.patch("7") is None


def test_hand_written_ledger_is_normalised_once_then_left_alone() -> None:
    evidence = Evidence((report("cpu", {AVX: "true", AVX2: "true"}),))
    labels = {AVX: "true", AVX2: "true"}
    messy = {LEDGER_ANNOTATION: f"{AVX2}, {AVX}", SOURCES_ANNOTATION: "cpu:cpuid.AVX2,cpuid.AVX"}
    first = plan(evidence, labels, messy)
    assert first.labels == {}
    assert first.annotations == {LEDGER_ANNOTATION: f"{AVX},{AVX2}",
                                 SOURCES_ANNOTATION: "cpu:cpuid.AVX,cpuid.AVX2"}
    normalised = {**messy, **first.annotations}
    assert not plan(evidence, labels, normalised).needs_write


# -- rule 3: owned keys follow discovery, and are restored -------------------------------


def test_owned_key_with_new_value_is_changed() -> None:
    evidence = Evidence((report("system", {OS_ID: "ubuntu"}),))
    result = plan(evidence, {OS_ID: "debian"}, ledger({OS_ID: "system"}))
    assert result.labels == {OS_ID: "ubuntu"}
    assert result.annotations == {}  # the ledger is unchanged
    assert action_of(result, OS_ID) == CHANGE


def test_owned_key_deleted_by_hand_is_restored() -> None:
    evidence = Evidence((report("system", {OS_ID: "debian"}),))
    result = plan(evidence, {}, ledger({OS_ID: "system"}))
    assert result.labels == {OS_ID: "debian"}
    assert "restored" in result.changes[0].reason


def test_empty_value_is_a_value_not_a_deletion() -> None:
    key = F + "kernel-version.revision"
    evidence = Evidence((report("kernel", {key: ""}),))
    result = plan(evidence, {}, {})
    assert result.patch(None)["metadata"]["labels"] == {key: ""}


# -- rule 4: foreign keys -----------------------------------------------------------------


def test_foreign_key_with_a_different_value_is_left_alone() -> None:
    evidence = Evidence((report("nvidia", {"nvidia.com/gpu.product": "A100"}),))
    result = plan(evidence, {"nvidia.com/gpu.product": "T4"}, {})
    assert not result.needs_write
    change = result.changes[0]
    assert (change.action, change.old, change.found) == (CONFLICT, "T4", "A100")
    assert result.ledger.owners == {}


def test_foreign_key_with_our_value_is_not_claimed() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    result = plan(evidence, {AVX: "true"}, {})
    assert not result.needs_write
    assert action_of(result, AVX) == UNOWNED


def test_take_over_adopts_foreign_keys_in_one_patch() -> None:
    evidence = Evidence((report("cpu", {AVX: "true", AVX2: "true"}),))
    result = plan(evidence, {AVX: "true", AVX2: "false"}, {}, take_over=True)
    assert result.labels == {AVX2: "true"}  # only the differing value is rewritten
    assert set(result.ledger.owners) == {AVX, AVX2}
    assert {c.action for c in result.changes} == {ADOPT}
    assert result.annotations[LEDGER_ANNOTATION] == f"{AVX},{AVX2}"


def test_take_over_never_removes_foreign_keys_we_do_not_produce() -> None:
    nfd_only = F + "usb-fe_1a6e_089a.present"
    evidence = Evidence((report("cpu", {AVX: "true"}),), complete=True)
    result = plan(evidence, {AVX: "true", nfd_only: "true"}, {}, take_over=True)
    assert nfd_only not in result.labels
    assert nfd_only not in result.ledger.owners


def test_foreign_labels_outside_our_keys_are_never_touched() -> None:
    evidence = Evidence((report("cpu", {}),), complete=True)
    labels = {"kubernetes.io/hostname": "n1", F + "pci-10de.present": "true"}
    assert not plan(evidence, labels, {}).needs_write


# -- rule 1: managed prefixes -------------------------------------------------------------


def test_discovered_key_outside_managed_prefixes_is_not_published() -> None:
    evidence = Evidence((report("local", {"vendor.io/thing": "1"}),))
    result = plan(evidence, {}, {})
    assert not result.needs_write
    assert action_of(result, "vendor.io/thing") == SKIP
    widened = plan(evidence, {}, {}, prefixes=["vendor.io/"])
    assert widened.labels == {"vendor.io/thing": "1"}


def test_ledger_cannot_make_us_touch_keys_outside_managed_prefixes() -> None:
    # A hand-edited ledger claiming a system label must not get it deleted.
    evidence = Evidence((report("cpu", {}),), complete=True)
    labels = {"kubernetes.io/hostname": "n1"}
    result = plan(evidence, labels, ledger({"kubernetes.io/hostname": "cpu"}))
    assert result.labels == {}
    assert action_of(result, "kubernetes.io/hostname") == RELEASE
    assert result.annotations == {LEDGER_ANNOTATION: None, SOURCES_ANNOTATION: None}


@pytest.mark.parametrize("prefix", ["vendor.io/", "feature.node.kubernetes.io/", "a/"])
def test_valid_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) is None


@pytest.mark.parametrize("prefix", ["vendor.io", "Vendor.io/", "/", "-x.io/", "a b/"])
def test_invalid_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) is not None


# -- rule 5: removal only on positive evidence -------------------------------------------


def test_owned_key_removed_when_its_source_ran_cleanly_without_it() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    result = plan(evidence, {AVX: "true", AVX2: "true"}, ledger({AVX: "cpu", AVX2: "cpu"}))
    assert result.labels == {AVX2: None}
    assert result.annotations == {LEDGER_ANNOTATION: AVX, SOURCES_ANNOTATION: "cpu:cpuid.AVX"}
    assert action_of(result, AVX2) == REMOVE


def test_failed_source_keeps_its_labels() -> None:
    evidence = Evidence((report("cpu", {}, trusted=False), report("system", {OS_ID: "debian"})))
    owned = ledger({AVX: "cpu", OS_ID: "system"})
    result = plan(evidence, {AVX: "true", OS_ID: "debian"}, owned)
    assert not result.needs_write
    keep = next(c for c in result.changes if c.key == AVX)
    assert keep.action == KEEP and "failed" in keep.reason


def test_incomplete_source_still_adds_and_changes_what_it_did_see() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}, trusted=False),))
    result = plan(evidence, {AVX2: "true"}, ledger({AVX2: "cpu"}))
    assert result.labels == {AVX: "true"}  # AVX2 kept: no evidence it is gone
    assert set(result.ledger.owners) == {AVX, AVX2}


def test_disabled_or_uninstalled_source_is_no_evidence() -> None:
    evidence = Evidence((report("system", {OS_ID: "debian"}),))
    result = plan(evidence, {AVX: "true", OS_ID: "debian"}, ledger({AVX: "cpu", OS_ID: "system"}))
    assert not result.needs_write
    keep = next(c for c in result.changes if c.key == AVX)
    assert keep.action == KEEP and "prune --source cpu" in keep.reason


def test_key_moving_to_another_source_is_reattributed_not_removed() -> None:
    evidence = Evidence((report("cpu", {}), report("local", {AVX: "true"})))
    result = plan(evidence, {AVX: "true"}, ledger({AVX: "cpu"}))
    assert result.labels == {}
    assert result.ledger.owners == {AVX: "local"}
    assert result.annotations == {SOURCES_ANNOTATION: f"local:{AVX}"}


def test_owned_key_already_gone_is_forgotten_without_a_label_write() -> None:
    evidence = Evidence((report("cpu", {}),))
    result = plan(evidence, {}, ledger({AVX: "cpu"}))
    assert result.labels == {}
    assert action_of(result, AVX) == FORGET
    assert result.annotations == {LEDGER_ANNOTATION: None, SOURCES_ANNOTATION: None}


def test_owned_key_whose_value_someone_changed_is_still_removed_when_gone() -> None:
    evidence = Evidence((report("cpu", {}),))
    result = plan(evidence, {AVX: "edited"}, ledger({AVX: "cpu"}))
    assert result.labels == {AVX: None}


# -- rule 6: keys without a recorded source ------------------------------------------------


def test_unattributed_key_kept_unless_every_source_ran_cleanly() -> None:
    owned = {LEDGER_ANNOTATION: AVX}
    partial = Evidence((report("cpu", {}),), complete=False)
    assert not plan(partial, {AVX: "true"}, owned).needs_write
    complete = Evidence((report("cpu", {}),), complete=True)
    assert plan(complete, {AVX: "true"}, owned).labels == {AVX: None}


def test_unattributed_key_gets_its_source_when_reported_again() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    result = plan(evidence, {AVX: "true"}, {LEDGER_ANNOTATION: AVX})
    assert result.annotations == {SOURCES_ANNOTATION: "cpu:cpuid.AVX"}


# -- evidence from discovery ----------------------------------------------------------------


def test_priority_merge_later_source_wins() -> None:
    evidence = Evidence((report("a", {AVX: "1"}), report("b", {AVX: "2"})))
    assert evidence.desired() == {AVX: ("2", "b")}


def test_evidence_from_discovery_marks_failed_and_incomplete_sources() -> None:
    from nodefeatures.discovery.labels import Label
    from nodefeatures.discovery.run import Discovery, SourceResult

    discovery = Discovery([
        SourceResult("cpu", {AVX: Label(AVX, "true")}),
        SourceResult("pci", error="OSError: gone", complete=False),
        SourceResult("kernel", complete=False),
    ])
    evidence = evidence_from(discovery, ["cpu", "pci", "kernel"])
    trusted = {r.name: (r.trusted, r.problem) for r in evidence.reports}
    assert trusted == {
        "cpu": (True, ""),
        "pci": (False, "OSError: gone"),
        "kernel": (False, "incomplete pass (read errors)"),
    }
    assert not evidence.complete
    clean = evidence_from(Discovery([SourceResult("cpu")]), ["cpu"])
    assert clean.complete
    assert not evidence_from(Discovery([SourceResult("cpu")]), ["cpu", "nvidia"]).complete


# -- prune ----------------------------------------------------------------------------------


def test_prune_removes_only_owned_labels_and_the_ledger() -> None:
    labels = {AVX: "true", OS_ID: "debian", F + "pci-10de.present": "true", "x.io/y": "1"}
    result = prune_plan(labels, ledger({AVX: "cpu", OS_ID: "system"}))
    assert result.labels == {AVX: None, OS_ID: None}
    assert result.annotations == {LEDGER_ANNOTATION: None, SOURCES_ANNOTATION: None}
    assert apply_to(labels, result) == {F + "pci-10de.present": "true", "x.io/y": "1"}


def test_prune_one_source_keeps_the_rest_of_the_ledger() -> None:
    labels = {AVX: "true", OS_ID: "debian"}
    result = prune_plan(labels, ledger({AVX: "cpu", OS_ID: "system"}), sources=["cpu"])
    assert result.labels == {AVX: None}
    assert result.ledger.owners == {OS_ID: "system"}


def test_prune_of_an_unowned_node_sends_nothing() -> None:
    assert prune_plan({AVX: "true"}, {}).patch("1") is None


# -- describe (diff output) -----------------------------------------------------------------


def test_describe_explains_each_key_and_prints_the_exact_patch() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}), report("system", {OS_ID: "ubuntu"}),
                         report("nvidia", {"nvidia.com/gpu.product": "A100"})))
    labels = {AVX2: "true", OS_ID: "debian", "nvidia.com/gpu.product": "T4"}
    result = plan(evidence, labels, ledger({AVX2: "cpu", OS_ID: "system"}))
    body = result.patch("9")
    text = describe(result, "n1", "9", body)
    lines = text.splitlines()
    assert lines[0].startswith("node n1 (resourceVersion 9): 1 to add, 1 to change, 1 to remove")
    assert any(line.split()[:2] == ["add", f"{AVX}=true"] for line in lines)
    assert any(line.split()[:4] == ["change", f"{OS_ID}:", "debian", "->"] for line in lines)
    assert any(line.split()[:2] == ["remove", f"{AVX2}=true"] and "no longer reports" in line
               for line in lines)
    assert any(line.split()[0] == "conflict" and "(ours: A100)" in line for line in lines)
    start = lines.index("patch (application/merge-patch+json):")
    assert json.loads("\n".join(lines[start + 1:])) == body


def test_describe_says_when_nothing_is_sent() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    result = plan(evidence, {AVX: "true"}, ledger({AVX: "cpu"}))
    assert describe(result, "n1", "3", None).endswith("nothing to send: the node already matches")
