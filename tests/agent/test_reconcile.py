"""Every reconcile rule (docs/design.md names these tests), pure and fast."""

from __future__ import annotations

import json

import pytest

from nodefeatures.cluster.reconcile import (
    ADD,
    ADOPT,
    CHANGE,
    CONFLICT,
    DROP,
    FORGET,
    KEEP,
    LEDGER_ANNOTATION,
    LEDGER_MAX_BYTES,
    RELEASE,
    REMOVE,
    SKIP,
    SOURCES_ANNOTATION,
    UNOWNED,
    Budget,
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


# The ledger annotation of a node where the cpu source published AVX.
CPU_AVX = '{"cpu":{"feature.node.kubernetes.io/cpu-":["cpuid.AVX"]}}'


def report(name: str, labels: dict[str, str], trusted: bool = True) -> SourceReport:
    return SourceReport(name, labels, trusted, "" if trusted else "RuntimeError: boom")


def ledger(owners: dict[str, str | None]) -> dict[str, str]:
    return Ledger(owners).encode()


def action_of(result, key: str) -> str:
    return next(c.action for c in result.changes if c.key == key)


# -- the ledger -------------------------------------------------------------------------


def test_ledger_encoding_is_readable_sorted_and_round_trips() -> None:
    owners = {OS_ID: "system", AVX2: "cpu", AVX: "cpu", GPU: "nvidia", AVX + "512F": None}
    encoded = Ledger(owners).encode()
    # Sources, prefixes and names sorted; a key is prefix + name; "?": source not recorded.
    assert encoded == {LEDGER_ANNOTATION: (
        '{"?":{"feature.node.kubernetes.io/":["cpu-cpuid.AVX512F"]},'
        '"cpu":{"feature.node.kubernetes.io/cpu-":["cpuid.AVX","cpuid.AVX2"]},'
        '"nvidia":{"nvidia.com/":["gpu.count"]},'
        '"system":{"feature.node.kubernetes.io/system-":["os_release.ID"]}}')}
    assert Ledger.parse(encoded).owners == owners
    assert Ledger(dict(reversed(owners.items()))).encode() == encoded


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
    assert result.annotations == {LEDGER_ANNOTATION: CPU_AVX}
    assert action_of(result, AVX) == ADD


def test_patch_is_a_merge_patch_with_a_resource_version_precondition() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    body = plan(evidence, {}, {}).patch("42")
    assert body == {
        "metadata": {
            "resourceVersion": "42",
            "labels": {AVX: "true"},
            "annotations": {LEDGER_ANNOTATION: CPU_AVX},
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
    assert first.annotations == {LEDGER_ANNOTATION: ledger({AVX: "cpu", AVX2: "cpu"})[
        LEDGER_ANNOTATION], SOURCES_ANNOTATION: None}
    normalised = {k: v for k, v in {**messy, **first.annotations}.items() if v is not None}
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
    assert json.loads(result.annotations[LEDGER_ANNOTATION]) == {
        "cpu": {F + "cpu-": ["cpuid.AVX", "cpuid.AVX2"]}}


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
    assert result.annotations == {LEDGER_ANNOTATION: None}


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
    assert result.annotations == {LEDGER_ANNOTATION: CPU_AVX}
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
    assert result.annotations == {
        LEDGER_ANNOTATION: '{"local":{"feature.node.kubernetes.io/":["cpu-cpuid.AVX"]}}'}


def test_owned_key_already_gone_is_forgotten_without_a_label_write() -> None:
    evidence = Evidence((report("cpu", {}),))
    result = plan(evidence, {}, ledger({AVX: "cpu"}))
    assert result.labels == {}
    assert action_of(result, AVX) == FORGET
    assert result.annotations == {LEDGER_ANNOTATION: None}


def test_owned_key_whose_value_someone_changed_is_still_removed_when_gone() -> None:
    evidence = Evidence((report("cpu", {}),))
    result = plan(evidence, {AVX: "edited"}, ledger({AVX: "cpu"}))
    assert result.labels == {AVX: None}


# -- rule 6: keys without a recorded source ------------------------------------------------


def test_unattributed_key_kept_unless_every_source_ran_cleanly() -> None:
    owned = ledger({AVX: None})
    partial = Evidence((report("cpu", {}),), complete=False)
    assert not plan(partial, {AVX: "true"}, owned).needs_write
    complete = Evidence((report("cpu", {}),), complete=True)
    assert plan(complete, {AVX: "true"}, owned).labels == {AVX: None}


def test_unattributed_key_gets_its_source_when_reported_again() -> None:
    evidence = Evidence((report("cpu", {AVX: "true"}),))
    result = plan(evidence, {AVX: "true"}, ledger({AVX: None}))
    assert result.annotations == {LEDGER_ANNOTATION: CPU_AVX}


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
    assert result.annotations == {LEDGER_ANNOTATION: None}
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


# -- issue 14: a compact, bounded ledger ------------------------------------------------------

LOCAL_NAME = "example-vendor-feature-with-a-rather-long-descriptive-name-{:04d}"


def local_keys(count: int) -> dict[str, str]:
    return {F + LOCAL_NAME.format(i): "true" for i in range(count)}


def test_ledger_is_one_json_annotation_grouped_by_source_and_prefix() -> None:
    owners = {OS_ID: "system", AVX2: "cpu", AVX: "cpu", GPU: "nvidia", F + "my-flag": "local"}
    encoded = Ledger(owners).encode()
    assert set(encoded) == {LEDGER_ANNOTATION}
    assert json.loads(encoded[LEDGER_ANNOTATION]) == {
        "cpu": {F + "cpu-": ["cpuid.AVX", "cpuid.AVX2"]},
        "local": {F: ["my-flag"]},
        "nvidia": {"nvidia.com/": ["gpu.count"]},
        "system": {F + "system-": ["os_release.ID"]},
    }
    assert Ledger.parse(encoded).owners == owners


def test_ledger_does_not_repeat_long_prefixes() -> None:
    owners = {key: "local" for key in local_keys(1450)}
    size = len(Ledger(owners).encode()[LEDGER_ANNOTATION].encode())
    names = sum(len(key) - len(F) for key in owners)
    # Each name once, quoted and comma-separated; the prefix once.
    assert size <= names + 3 * len(owners) + 100
    old_format = 2 * sum(len(key) + 1 for key in owners)
    assert size < old_format / 2


def test_old_two_annotation_ledger_is_read_and_rewritten_once_keeping_ownership() -> None:
    old = {LEDGER_ANNOTATION: f"{AVX},{AVX2},{OS_ID},{GPU}",
           SOURCES_ANNOTATION: "cpu:cpuid.AVX,cpuid.AVX2;nvidia:nvidia.com/gpu.count"}
    assert Ledger.parse(old).owners == {AVX: "cpu", AVX2: "cpu", OS_ID: None, GPU: "nvidia"}
    # After an upgrade: AVX2 is gone (the cpu source ran cleanly without it), the rest stays.
    evidence = Evidence((report("cpu", {AVX: "true"}), report("nvidia", {GPU: "8"}),
                         report("system", {OS_ID: "debian"})))
    labels = {AVX: "true", AVX2: "true", OS_ID: "debian", GPU: "8"}
    result = plan(evidence, labels, old)
    assert result.labels == {AVX2: None}
    assert result.ledger.owners == {AVX: "cpu", OS_ID: "system", GPU: "nvidia"}
    assert result.annotations[SOURCES_ANNOTATION] is None
    assert json.loads(result.annotations[LEDGER_ANNOTATION])["system"] == {
        F + "system-": ["os_release.ID"]}
    upgraded = {**old, **result.annotations}
    upgraded = {k: v for k, v in upgraded.items() if v is not None}
    assert not plan(evidence, apply_to(labels, result), upgraded).needs_write


def test_compact_ledger_parse_ignores_garbage() -> None:
    annotations = {LEDGER_ANNOTATION: json.dumps({
        "cpu": {F + "cpu-": ["cpuid.AVX", 7, "bad name!"], "x": "notalist"},
        "?": {F: ["system-os_release.ID"]},
        "bad source!": {F: ["y"]},
        "nvidia": ["not", "a", "mapping"],
    })}
    ledger_, problem = Ledger.read(annotations)
    assert ledger_.owners == {AVX: "cpu", OS_ID: None}
    assert problem is not None
    assert Ledger.read({LEDGER_ANNOTATION: "{not json"})[1] is not None
    assert Ledger.read({})[1] is None
    assert Ledger.read(Ledger({AVX: "cpu", OS_ID: None}).encode()) == (
        Ledger({AVX: "cpu", OS_ID: None}), None)


# -- issue 14: a source over its budget ---------------------------------------------------------


def test_source_over_its_label_budget_keeps_its_sorted_first_labels_and_the_rest_land() -> None:
    files = local_keys(5000)
    evidence = Evidence((report("system", {OS_ID: "debian"}), report("local", files)),
                        budget=Budget(labels=100, bytes=1 << 20))
    result = plan(evidence, {}, {})
    kept = sorted(files)[:100]
    assert result.labels == {OS_ID: "debian", **{k: "true" for k in kept}}
    assert set(result.ledger.owners) == {OS_ID, *kept}
    dropped = result.by_action(DROP)
    assert len(dropped) == 4900 and dropped[0].key == sorted(files)[100]
    assert "budget" in dropped[0].reason
    assert "local" in result.problems["budget:local"]
    assert "4900" in result.problems["budget:local"]


def test_source_over_its_byte_budget_keeps_what_fits() -> None:
    files = local_keys(50)
    cost = len(next(iter(files))) + len("true")
    evidence = Evidence((report("local", files),), budget=Budget(labels=1000, bytes=10 * cost))
    result = plan(evidence, {}, {})
    assert sorted(result.labels) == sorted(files)[:10]


def test_default_budgets_keep_the_ledger_within_its_bound() -> None:
    files = local_keys(5000)
    evidence = Evidence((report("system", {OS_ID: "debian"}), report("local", files)))
    result = plan(evidence, {}, {})
    assert result.labels[OS_ID] == "debian"
    assert len(result.annotations[LEDGER_ANNOTATION].encode()) <= LEDGER_MAX_BYTES
    assert 0 < len(result.ledger.owners) - 1 <= Budget().labels


def test_ledger_bound_holds_even_when_every_source_is_within_budget() -> None:
    many = [report(f"src{n}", {f"vendor{n}.example.com/" + LOCAL_NAME.format(i): "1"
                                for i in range(2000)}) for n in range(8)]
    evidence = Evidence((report("system", {OS_ID: "debian"}), *many),
                        budget=Budget(labels=5000, bytes=1 << 24))
    prefixes = [F] + [f"vendor{n}.example.com/" for n in range(8)]
    result = plan(evidence, {}, {}, prefixes=prefixes)
    assert len(result.annotations[LEDGER_ANNOTATION].encode()) <= LEDGER_MAX_BYTES
    assert result.labels[OS_ID] == "debian"  # sources earlier in priority order go first
    assert "ledger-full" in result.problems
    # Deterministic and stable: planning again on the result writes nothing.
    node = apply_to({}, result)
    assert not plan(evidence, node, result.ledger.encode(), prefixes=prefixes).needs_write


def test_over_budget_source_removes_owned_labels_beyond_its_cut_when_clean() -> None:
    files = local_keys(20)
    ordered = sorted(files)
    owned = {k: "local" for k in ordered}
    evidence = Evidence((report("local", files),), budget=Budget(labels=15, bytes=1 << 20))
    result = plan(evidence, dict(files), ledger(owned))
    assert result.labels == {k: None for k in ordered[15:]}
    assert "budget" in next(c for c in result.changes if c.key == ordered[15]).reason


def test_incomplete_source_over_budget_neither_adds_nor_removes_around_its_cut() -> None:
    # 20 labels, budget 15: the first 15 are published. The file holding the first 5 is
    # unreadable for a moment, so the source reports only the last 15: that must not
    # publish 16-20 (which a clean pass would take away again) nor remove 1-5.
    files = local_keys(20)
    ordered = sorted(files)
    node = {k: "true" for k in ordered[:15]}
    owned = ledger({k: "local" for k in ordered[:15]})
    partial = {k: "true" for k in ordered[5:]}
    budget = Budget(labels=15, bytes=1 << 20)
    evidence = Evidence((report("local", partial, trusted=False),), budget=budget)
    result = plan(evidence, node, owned)
    assert not result.needs_write
    clean = Evidence((report("local", files),), budget=budget)
    assert not plan(clean, node, owned).needs_write


# -- issue 14: an incomplete source keeps its labels and their precedence ----------------------

KERNEL_KEY = F + "kernel-version.full"


def test_incomplete_source_keeps_its_override_over_a_lower_priority_source() -> None:
    owned = ledger({KERNEL_KEY: "local"})
    node = {KERNEL_KEY: "6.1.0-corrected"}  # a feature file corrects the built-in value
    unreadable = Evidence((report("kernel", {KERNEL_KEY: "6.1.0"}),
                           report("local", {}, trusted=False)))
    result = plan(unreadable, node, owned)
    assert not result.needs_write
    assert result.ledger.owners == {KERNEL_KEY: "local"}
    assert action_of(result, KERNEL_KEY) == KEEP
    # Once the local source runs cleanly without the line, the built-in value returns.
    clean = plan(Evidence((report("kernel", {KERNEL_KEY: "6.1.0"}), report("local", {}))),
                 node, owned)
    assert clean.labels == {KERNEL_KEY: "6.1.0"}
    assert clean.ledger.owners == {KERNEL_KEY: "kernel"}


def test_a_higher_priority_source_still_wins_over_an_incomplete_owner() -> None:
    owned = ledger({KERNEL_KEY: "kernel"})
    evidence = Evidence((report("kernel", {}, trusted=False),
                         report("local", {KERNEL_KEY: "6.1.0-corrected"})))
    result = plan(evidence, {KERNEL_KEY: "6.1.0"}, owned)
    assert result.labels == {KERNEL_KEY: "6.1.0-corrected"}
    assert result.ledger.owners == {KERNEL_KEY: "local"}


# -- issue 14: a ledger deleted or mangled by another writer -------------------------------------


def test_ledger_deleted_by_another_writer_is_restored_from_what_we_wrote() -> None:
    evidence = Evidence((report("system", {OS_ID: "ubuntu"}), report("local", {})))
    labels = {OS_ID: "debian", F + "gone": "true", F + "theirs": "x"}
    written = {OS_ID: ("debian", "system"), F + "gone": ("true", "local"),
               F + "theirs": ("ours", "local")}
    for damaged in ({}, {LEDGER_ANNOTATION: "{mangled"}, ledger({AVX: "cpu"})):
        result = plan(evidence, labels, damaged, written=written)
        assert result.labels == {OS_ID: "ubuntu", F + "gone": None}, damaged
        # A label someone else changed since we wrote it is theirs now.
        assert F + "theirs" not in result.ledger.owners
        assert "restored" in result.problems["ledger-restored"]
    # Without that memory (after a restart) nothing is re-adopted.
    after_restart = plan(evidence, labels, {})
    assert not after_restart.labels
    assert action_of(after_restart, OS_ID) == CONFLICT


def test_an_intact_ledger_needs_no_restoring() -> None:
    evidence = Evidence((report("system", {OS_ID: "debian"}),))
    owned = ledger({OS_ID: "system"})
    result = plan(evidence, {OS_ID: "debian"}, owned, written={OS_ID: ("debian", "system")})
    assert not result.needs_write
    assert not result.problems


def test_an_oversized_ledger_is_cut_to_its_bound_without_removing_labels() -> None:
    # Written before the bound existed: owned keys alone exceed it. The surplus is no
    # longer tracked; no label is removed without evidence.
    many = [report(f"src{n}", {f"vendor{n}.example.com/" + LOCAL_NAME.format(i): "1"
                                for i in range(2000)}) for n in range(8)]
    prefixes = [f"vendor{n}.example.com/" for n in range(8)]
    node = {k: v for r in many for k, v in r.labels.items()}
    owned = ledger({k: r.name for r in many for k in r.labels})
    assert len(owned[LEDGER_ANNOTATION]) > LEDGER_MAX_BYTES
    evidence = Evidence(tuple(many), budget=Budget(labels=5000, bytes=1 << 24))
    result = plan(evidence, node, owned, prefixes=prefixes)
    assert result.labels == {}
    assert len(result.annotations[LEDGER_ANNOTATION].encode()) <= LEDGER_MAX_BYTES
    released = result.by_action(RELEASE)
    assert len(released) + len(result.ledger.owners) == len(node)
    assert all("no room left" in c.reason for c in released)


def test_a_ledger_entry_without_a_namespace_is_released_never_removed() -> None:
    # Under the label namespaces setting a key without "/" is never ours: a planted or
    # stale ledger entry for one is forgotten, and the Node's label stays as it was.
    from nodefeatures.cluster.reconcile import RELEASE, Evidence, Ledger, Scope, plan
    from nodefeatures.discovery.namespaces import DEFAULT

    annotations = Ledger({"team": "cpu"}).encode()
    decided = plan(Evidence((), complete=True), {"team": "infra"}, annotations,
                   Scope((), DEFAULT))
    [change] = decided.changes
    assert change.action == RELEASE and "without a namespace" in change.reason
    assert decided.labels == {}
