"""Which label namespaces the agent may write: nfd-master's rules and our default."""

from __future__ import annotations

import pytest

from nodefeatures.discovery.namespaces import DEFAULT, LabelNamespaces

NONE = LabelNamespaces(deny=(), extra=())


@pytest.mark.parametrize("key", [
    "feature.node.kubernetes.io/cpu-cpuid.AVX",
    "sgx.intel.feature.node.kubernetes.io/epc",
    "profile.node.kubernetes.io/gpu",
    "a.b.profile.node.kubernetes.io/x",
    "nvidia.com/gpu.present",
    "vendor.io/x",
    "bare-name",  # checked as feature.node.kubernetes.io/bare-name
])
def test_nfd_allows_its_own_namespaces_and_every_other_vendor(key: str) -> None:
    assert NONE.allows(key) and DEFAULT.allows(key)
    assert DEFAULT.refusal(key) is None


@pytest.mark.parametrize("key", [
    "kubernetes.io/hostname",
    "node.kubernetes.io/instance-type",
    "node-role.kubernetes.io/control-plane",
    "topology.kubernetes.io/zone",
    # Only the exact names and their subdomains: a look-alike is not one of them.
    "xfeature.node.kubernetes.io/x",
    "feature.node.kubernetes.io.kubernetes.io/x",
])
def test_kubernetes_io_is_denied_whatever_the_setting(key: str) -> None:
    assert not NONE.allows(key)
    refusal = NONE.refusal(key)
    assert refusal is not None and repr(key.partition("/")[0]) in refusal
    assert "reserved" in refusal and "extraLabelNs" not in refusal


def test_our_default_also_denies_k8s_io_through_deny_label_ns() -> None:
    for key in ("k8s.io/x", "sigs.k8s.io/x", "a.b.k8s.io/x"):
        assert not DEFAULT.allows(key)
        assert NONE.allows(key)  # cleared by the user, it is allowed
        assert "denyLabelNs" in (DEFAULT.refusal(key) or "")
    assert DEFAULT.allows("notk8s.io/x")  # `*.k8s.io` is a suffix `.k8s.io`, not `k8s.io`


def test_deny_entries_are_exact_or_a_dotted_suffix() -> None:
    rules = LabelNamespaces(deny=("example.com", "*.vendor.io"), extra=())
    assert not rules.allows("example.com/x")
    assert rules.allows("sub.example.com/x")  # an exact entry denies only itself
    assert not rules.allows("a.vendor.io/x") and not rules.allows("a.b.vendor.io/x")
    assert rules.allows("vendor.io/x")  # `*.vendor.io` does not deny vendor.io itself
    assert rules.allows("othervendor.io/x")


def test_extra_label_ns_re_allows_exactly_its_names() -> None:
    rules = LabelNamespaces(deny=("*.vendor.io", "example.com"),
                            extra=("gpu.vendor.io", "example.com"))
    assert rules.allows("gpu.vendor.io/x") and rules.allows("example.com/x")
    assert not rules.allows("a.gpu.vendor.io/x")
    assert "denyLabelNs" in (rules.refusal("a.gpu.vendor.io/x") or "")


def test_the_kubernetes_io_denial_is_not_lifted_by_extra_label_ns() -> None:
    # NFD's docs: kubernetes.io and its sub-namespaces are always denied. (nfd-master's
    # code lets -extra-label-ns lift it; node-restriction.kubernetes.io/ must stay out of
    # reach of a node agent, so the documented rule is the one kept.)
    rules = LabelNamespaces(deny=(), extra=("node.kubernetes.io",
                                            "node-restriction.kubernetes.io"))
    assert not rules.allows("node.kubernetes.io/x")
    assert not rules.allows("node-restriction.kubernetes.io/x")


def test_nfds_own_namespaces_cannot_be_denied() -> None:
    # NFD's docs: feature.node and profile.node (and sub-namespaces) cannot be denied; a
    # careful `*.kubernetes.io` entry must not take every built-in label with it.
    rules = LabelNamespaces(deny=("*.kubernetes.io", "feature.node.kubernetes.io",
                                  "*.profile.node.kubernetes.io"), extra=())
    for key in ("feature.node.kubernetes.io/x", "bare", "profile.node.kubernetes.io/x",
                "a.profile.node.kubernetes.io/x", "sgx.intel.feature.node.kubernetes.io/x"):
        assert rules.allows(key), key


def test_nfds_documented_examples() -> None:
    # test/e2e of NFD: denyLabelNs ["*.denied.ns","random.unwanted.ns"] over
    # nodefeature-3.yaml leaves exactly the vendor label and the unprefixed one.
    rules = LabelNamespaces(deny=("*.denied.ns", "random.unwanted.ns"), extra=())
    keys = ["random.denied.ns/e2e-nodefeature-test-1", "random.unwanted.ns/e2e-nodefeature-test-2",
            "custom.vendor.io/e2e-nodefeature-test-3", "kubernetes.io/denied-label",
            "subns.kubernetes.io/denied-label", "e2e-nodefeature-test-4"]
    assert [k for k in keys if rules.allows(k)] == [
        "custom.vendor.io/e2e-nodefeature-test-3", "e2e-nodefeature-test-4"]
    # master-commandline-reference: -deny-label-ns=*.vendor.com,vendor-2.io and
    # -extra-label-ns=vendor-1.com,vendor-2.io
    rules = LabelNamespaces(deny=("*.vendor.com", "vendor-2.io"),
                            extra=("vendor-1.com", "vendor-2.io"))
    assert not rules.allows("a.vendor.com/x") and rules.allows("vendor.com/x")
    assert rules.allows("vendor-2.io/x") and rules.allows("vendor-1.com/x")
    # -deny-label-ns="" still denies kubernetes.io and *.kubernetes.io
    assert not NONE.allows("kubernetes.io/x") and not NONE.allows("a.kubernetes.io/x")


def test_from_data_reads_comma_lists_and_round_trips() -> None:
    rules, problems = LabelNamespaces.from_data(
        {"denyLabelNs": " example.com , *.vendor.io,,", "extraLabelNs": "gpu.vendor.io"})
    assert problems == []
    assert rules == LabelNamespaces(deny=("example.com", "*.vendor.io"),
                                    extra=("gpu.vendor.io",))
    assert LabelNamespaces.from_data(rules.to_data()) == (rules, [])
    assert LabelNamespaces.from_data(DEFAULT.to_data()) == (DEFAULT, [])
    assert LabelNamespaces.from_data(NONE.to_data()) == (NONE, [])


def test_absent_keys_keep_the_default_and_an_empty_string_clears_it() -> None:
    assert LabelNamespaces.from_data({}) == (DEFAULT, [])
    assert LabelNamespaces.from_data({"denyLabelNs": ""}) == (NONE, [])
    assert LabelNamespaces.from_data({"extraLabelNs": "a.io"}) == (
        LabelNamespaces(deny=DEFAULT.deny, extra=("a.io",)), [])


@pytest.mark.parametrize(("data", "expected"), [
    ({"denyLabelNs": "Example.com"}, "denyLabelNs: 'Example.com' is not"),
    ({"denyLabelNs": "*example.com"}, "denyLabelNs: '*example.com' is not"),
    ({"denyLabelNs": "*.*.example.com"}, "denyLabelNs: '*.*.example.com' is not"),
    ({"denyLabelNs": "a/b"}, "denyLabelNs: 'a/b' is not"),
    ({"extraLabelNs": "*.example.com"}, "extraLabelNs: '*.example.com' is not"),
    ({"denyLabelNs": "a" * 254}, "is not"),
    ({"denyLabelNs": 3}, "denyLabelNs: must be a string"),
    ({"denyLabelNS": "x.io"}, "'denyLabelNS': unknown key"),
    ({"denyLabelNs": "bad\nline.io"}, r"'bad\nline.io'"),
])
def test_one_bad_entry_rejects_the_whole_data(data: dict, expected: str) -> None:
    rules, problems = LabelNamespaces.from_data({"extraLabelNs": "ok.io", **data})
    assert rules == DEFAULT  # never a half-read setting
    assert problems and expected in problems[0]
    assert all("\n" not in p for p in problems)


def test_data_that_is_not_a_mapping_is_a_problem() -> None:
    rules, problems = LabelNamespaces.from_data(["denyLabelNs"])  # type: ignore[arg-type]
    assert rules == DEFAULT and problems


def test_too_many_entries_are_a_problem() -> None:
    many = ",".join(f"n{i}.io" for i in range(300))
    rules, problems = LabelNamespaces.from_data({"denyLabelNs": many})
    assert rules == DEFAULT and "at most" in problems[0]


# ----- the rule outputs beyond labels: annotations, taints, extended resources ----------

OUTPUT_KINDS = ("annotations", "taints", "extendedResources")
SWITCHES = {"annotations": "enableAnnotations", "taints": "enableTaints",
            "extendedResources": "enableExtendedResources"}


def test_every_output_is_off_unless_switched_on_and_labels_always_on() -> None:
    assert DEFAULT.enabled("labels") and NONE.enabled("labels")
    for kind in OUTPUT_KINDS:
        assert not DEFAULT.enabled(kind)
        rules, problems = LabelNamespaces.from_data({SWITCHES[kind]: "true"})
        assert problems == [] and rules.enabled(kind), kind
        assert [k for k in OUTPUT_KINDS if rules.enabled(k)] == [kind]
        assert LabelNamespaces.from_data({SWITCHES[kind]: "false"}) == (DEFAULT, [])


@pytest.mark.parametrize("value", ["True", "TRUE", "yes", "1", " true", "true ", "", "on"])
def test_a_switch_is_exactly_true_or_false(value: str) -> None:
    # The policy compares the text with "true": a reader more lenient than that would
    # write what the API server refuses.
    for kind in OUTPUT_KINDS:
        rules, problems = LabelNamespaces.from_data({SWITCHES[kind]: value})
        assert rules == DEFAULT and not rules.enabled(kind)
        assert problems
        assert problems[0].startswith(f'{SWITCHES[kind]}: must be "true" or "false"')


def test_a_switch_that_is_not_a_string_rejects_the_whole_data() -> None:
    rules, problems = LabelNamespaces.from_data({"denyLabelNs": "", "enableTaints": True})
    assert rules == DEFAULT and problems == ['enableTaints: must be "true" or "false", not bool']


@pytest.mark.parametrize("on", [(), ("annotations",), ("taints", "extendedResources"),
                                OUTPUT_KINDS])
def test_switches_round_trip_through_to_data(on: tuple[str, ...]) -> None:
    rules = LabelNamespaces(deny=("example.com",), extra=("a.io",), outputs=frozenset(on))
    data = rules.to_data()
    assert {key for key, value in data.items() if value == "true"} == {SWITCHES[k] for k in on}
    assert LabelNamespaces.from_data(data) == (rules, [])


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_outputs_own_only_feature_node_kubernetes_io(kind: str) -> None:
    for key in ("feature.node.kubernetes.io/x", "sgx.intel.feature.node.kubernetes.io/x",
                "bare", "vendor.io/x", "nvidia.com/gpu"):
        assert NONE.allows(key, kind) and DEFAULT.allows(key, kind), key
    # profile.node.kubernetes.io is NFD's for labels only: an output there is reserved.
    for key in ("profile.node.kubernetes.io/x", "a.profile.node.kubernetes.io/x"):
        assert NONE.allows(key) and not NONE.allows(key, kind)
        refusal = NONE.refusal(key, kind)
        assert refusal is not None and "reserved" in refusal and kind in refusal
    for key in ("kubernetes.io/x", "node.kubernetes.io/x", "xfeature.node.kubernetes.io/x"):
        assert not NONE.allows(key, kind), key
    # A deny entry never reaches the own namespace, for outputs as for labels.
    rules = LabelNamespaces(deny=("feature.node.kubernetes.io", "*.feature.node.kubernetes.io"),
                            extra=())
    assert rules.allows("feature.node.kubernetes.io/x", kind)
    assert rules.allows("a.feature.node.kubernetes.io/x", kind)


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_outputs_never_go_to_the_ledgers_namespace(kind: str) -> None:
    # The agent's ledgers and the confinement probe live in nodefeatures.dev: no setting
    # makes it an output namespace, though a label may be written there.
    rules = LabelNamespaces(deny=(), extra=("nodefeatures.dev", "probe.nodefeatures.dev"))
    for key in ("nodefeatures.dev/labels", "nodefeatures.dev/x", "probe.nodefeatures.dev/x",
                "a.b.nodefeatures.dev/x"):
        assert rules.allows(key), key
        refusal = rules.refusal(key, kind)
        assert refusal is not None and "ledgers" in refusal and kind in refusal, key
    assert rules.allows("xnodefeatures.dev/x", kind)  # a look-alike is another namespace


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_outputs_follow_deny_and_extra_as_labels_do(kind: str) -> None:
    rules = LabelNamespaces(deny=("*.vendor.io", "example.com", "k8s.io"),
                            extra=("gpu.vendor.io", "example.com"))
    assert not rules.allows("a.vendor.io/x", kind)
    assert "denyLabelNs entry '*.vendor.io'" in (rules.refusal("a.vendor.io/x", kind) or "")
    # extraLabelNs re-allows a denied vendor namespace for the outputs too ...
    assert rules.allows("gpu.vendor.io/x", kind) and rules.allows("example.com/x", kind)
    assert not rules.allows("a.gpu.vendor.io/x", kind) and not rules.allows("k8s.io/x", kind)
    # ... but never a reserved or the ledgers' namespace.
    lifted = LabelNamespaces(deny=(), extra=("node.kubernetes.io", "profile.node.kubernetes.io",
                                             "nodefeatures.dev"))
    for key in ("node.kubernetes.io/x", "profile.node.kubernetes.io/x", "nodefeatures.dev/x"):
        assert not lifted.allows(key, kind), key
    assert [DEFAULT.allows(k, kind) for k in ("k8s.io/x", "sigs.k8s.io/x", "notk8s.io/x")] == [
        False, False, True]
