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
