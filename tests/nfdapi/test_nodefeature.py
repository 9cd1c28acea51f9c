"""NFD's NodeFeature object: the one we would write, and third-party ones we read."""

from __future__ import annotations

from typing import Any

import pytest

from nodefeatures import __version__
from nodefeatures.discovery import nodefeature as nf
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.namespaces import LabelNamespaces
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.run import Discovery, SourceResult
from nodefeatures.discovery.source import Features


def discovery() -> Discovery:
    cpu = Features()
    cpu.flag("cpuid", "AVX2", "cpuid")
    cpu.flag("cpuid", "AVX", "cpuid")
    cpu.attribute("model", "vendor_id", "Intel", "/proc/cpuinfo")
    pci = Features()
    pci.instance("device", {"vendor": "10de", "class": "0302"}, "/sys/bus/pci/devices/a")
    pci.has_flags("empty")  # a feature with no element is still a feature
    custom = Features()
    custom.attribute("label", "rdma.capable", "true", "rule")
    return Discovery([
        SourceResult("cpu", {"feature.node.kubernetes.io/cpu-cpuid.AVX": Label(
            "feature.node.kubernetes.io/cpu-cpuid.AVX", "true", "", "cpu")}, cpu),
        SourceResult("pci", {}, pci),
        SourceResult("custom", {"feature.node.kubernetes.io/rdma.capable": Label(
            "feature.node.kubernetes.io/rdma.capable", "true", "", "custom")}, custom),
        SourceResult("broken", {}, None, error="boom"),
    ])


def test_node_feature_is_the_object_nfd_worker_writes() -> None:
    obj = nf.node_feature(discovery(), "node-1", "nodefeatures")
    assert obj["apiVersion"] == "nfd.k8s-sigs.io/v1alpha1" == nf.API_VERSION
    assert obj["kind"] == "NodeFeature"
    assert obj["metadata"] == {
        "name": "node-1", "namespace": "nodefeatures",
        "labels": {"nfd.node.kubernetes.io/node-name": "node-1"},
        "annotations": {"nfd.node.kubernetes.io/worker.version": __version__},
    }
    spec = obj["spec"]
    # Full keys, as nfd-worker sends its built-in sources' labels.
    assert spec["labels"] == {"feature.node.kubernetes.io/cpu-cpuid.AVX": "true",
                              "feature.node.kubernetes.io/rdma.capable": "true"}
    assert spec["features"] == {
        "flags": {"cpu.cpuid": {"elements": {"AVX": {}, "AVX2": {}}},
                  "pci.empty": {"elements": {}}},
        "attributes": {"cpu.model": {"elements": {"vendor_id": "Intel"}}},
        "instances": {"pci.device": {"elements": [
            {"attributes": {"class": "0302", "vendor": "10de"}}]}},
    }
    # NFD's custom source is a label source only: its rule output is no feature.
    assert "custom.label" not in str(spec["features"])


def test_equal_passes_give_equal_objects_in_equal_order() -> None:
    one = nf.node_feature(discovery(), "n", "ns")
    two = nf.node_feature(discovery(), "n", "ns")
    assert one == two and repr(one) == repr(two)
    assert list(one["spec"]["features"]["flags"]["cpu.cpuid"]["elements"]) == ["AVX", "AVX2"]


def nodefeature(labels: Any = None, features: Any = None, name: str = "gfd",
                namespace: str = "gpu-operator") -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if labels is not None:
        spec["labels"] = labels
    if features is not None:
        spec["features"] = features
    return {"apiVersion": nf.API_VERSION, "kind": "NodeFeature",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {nf.NODE_NAME_LABEL: "node-1"}},
            "spec": spec}


def test_read_a_gfd_style_object() -> None:
    intake = nf.read(nodefeature({"nvidia.com/gpu.count": "8", "nvidia.com/gpu.present": "true"},
                                 {"attributes": {"nvidia.gpu": {"elements": {"count": "8"}}}}))
    assert intake.origin == "nodefeature/gpu-operator/gfd"
    assert (intake.namespace, intake.name) == ("gpu-operator", "gfd")
    assert intake.labels == {"nvidia.com/gpu.count": "8", "nvidia.com/gpu.present": "true"}
    assert intake.features == {"flags": {}, "instances": {},
                               "attributes": {"nvidia.gpu": {"elements": {"count": "8"}}}}
    assert intake.problems == ()


def test_unprefixed_keys_get_nfds_prefix_and_a_prefixed_twin_wins() -> None:
    intake = nf.read(nodefeature({"a": "1", "b": "2", "feature.node.kubernetes.io/b": "3"}))
    assert intake.labels == {"feature.node.kubernetes.io/a": "1",
                             "feature.node.kubernetes.io/b": "3"}


def test_nfds_e2e_object_under_its_deny_list() -> None:
    # NFD's test/e2e/data/nodefeature-3.yaml with denyLabelNs ["*.denied.ns","random.unwanted.ns"].
    labels = {"random.denied.ns/e2e-nodefeature-test-1": "denied-ns",
              "random.unwanted.ns/e2e-nodefeature-test-2": "unwanted-ns",
              "custom.vendor.io/e2e-nodefeature-test-3": "vendor-ns",
              "kubernetes.io/denied-label": "kubernetes-ns-1",
              "subns.kubernetes.io/denied-label": "kubernetes-ns-2",
              "e2e-nodefeature-test-4": "obj-4"}
    setting = LabelNamespaces(deny=("*.denied.ns", "random.unwanted.ns"), extra=())
    intake = nf.read(nodefeature(labels, name="zzz-e2e-features-3"), setting)
    assert intake.labels == {"feature.node.kubernetes.io/e2e-nodefeature-test-4": "obj-4",
                             "custom.vendor.io/e2e-nodefeature-test-3": "vendor-ns"}
    assert len(intake.problems) == 4


def test_invalid_labels_are_dropped_one_by_one_with_a_quoted_problem() -> None:
    intake = nf.read(nodefeature({"ok.io/fine": "v", "ok.io/bad value": "v",
                                  "ok.io/long": "x" * 64, "ok.io/n\nl": "v",
                                  "ok.io/int": 3, "ok.io/none": None}))
    assert intake.labels == {"ok.io/fine": "v"}
    assert len(intake.problems) == 5
    assert all("\n" not in p for p in intake.problems)
    assert any("'ok.io/n\\nl'" in p for p in intake.problems)
    assert not any("x" * 81 in p for p in intake.problems)  # values only as excerpts


@pytest.mark.parametrize("spec", [[], "x", {"labels": [], "features": 3},
                                  {"labels": {3: "x"}},
                                  {"features": {"flags": [], "attributes": "x",
                                                "instances": {"a.b": {"elements": {}}}}},
                                  {"features": {"flags": {"a.b": {"elements": ["x"]}},
                                                "attributes": {"a.c": {"elements": {"k": 1}}},
                                                "instances": {"a.d": {"elements": [3, {
                                                    "attributes": {"k": []}}]}}}}])
def test_wrong_types_anywhere_cost_only_what_holds_them(spec: Any) -> None:
    obj = nodefeature()
    obj["spec"] = spec
    intake = nf.read(obj)
    assert intake.problems
    assert all(isinstance(v, str) for v in intake.labels.values())
    FeatureSet().merge(intake.features)  # whatever came in, what is kept merges


@pytest.mark.parametrize("metadata", [None, {"name": 3, "namespace": "x"}, {"name": "x"}])
def test_an_object_without_a_usable_name_gives_nothing(metadata: Any) -> None:
    obj = nodefeature({"a.io/x": "1"})
    obj["metadata"] = metadata
    intake = nf.read(obj)
    assert intake.labels == {} and intake.problems


def test_a_wrong_value_type_keeps_the_rest_of_its_feature() -> None:
    intake = nf.read(nodefeature(features={
        "flags": {"a.f": {"elements": {"x": {}, "y": None}}},
        "attributes": {"a.a": {"elements": {"good": "1", "bad": 2}}},
        "instances": {"a.i": {"elements": [{"attributes": {"k": "v"}}, "junk",
                                           {"attributes": {"k": "w", "n": 5}}]}}}))
    assert intake.features == {
        "flags": {"a.f": {"elements": {"x": {}, "y": {}}}},
        "attributes": {"a.a": {"elements": {"good": "1"}}},
        "instances": {"a.i": {"elements": [{"attributes": {"k": "v"}},
                                           {"attributes": {"k": "w"}}]}},
    }
    assert len(intake.problems) == 3


def test_bounds_cost_only_the_excess() -> None:
    labels = {f"a.io/l{i:05}": "v" for i in range(nf.MAX_LABELS + 10)}
    flags = {f"f{i}": {} for i in range(nf.MAX_ELEMENTS + 5)}
    features = {"flags": {"a.big": {"elements": flags}},
                "attributes": {f"a.x{i:05}": {"elements": {}} for i in range(nf.MAX_FEATURES)},
                "instances": {}}
    intake = nf.read(nodefeature(labels, features))
    assert len(intake.labels) == nf.MAX_LABELS
    assert "a.io/l00000" in intake.labels  # the sorted-first keys stay
    assert len(intake.features["flags"]["a.big"]["elements"]) == nf.MAX_ELEMENTS
    kept = len(intake.features["flags"]) + len(intake.features["attributes"])
    assert kept == nf.MAX_FEATURES
    assert any("10 labels over" in p for p in intake.problems)
    assert any("5 elements over" in p for p in intake.problems)
    assert any("1 features over" in p for p in intake.problems)


def test_long_strings_drop_their_element_and_problems_are_capped() -> None:
    long = "v" * (nf.MAX_STRING + 1)
    elements = {f"k{i:03}": long for i in range(100)} | {"short": "ok"}
    intake = nf.read(nodefeature(features={"attributes": {"a.a": {"elements": elements},
                                                          long: {"elements": {}}}}))
    assert intake.features["attributes"] == {"a.a": {"elements": {"short": "ok"}}}
    assert len(intake.problems) == nf.MAX_PROBLEMS + 1
    assert "more problems" in intake.problems[-1]
    assert sum(len(p) for p in intake.problems) < 20_000


def test_total_elements_are_bounded() -> None:
    features = {"attributes": {f"a.f{i:02}": {"elements": {f"e{j}": "v" for j in range(9000)}}
                               for i in range(15)}}
    intake = nf.read(nodefeature(features=features))
    total = sum(len(f["elements"]) for f in intake.features["attributes"].values())
    assert total == nf.MAX_TOTAL_ELEMENTS
    assert any("elements in all" in p for p in intake.problems)


def intake(name: str, namespace: str, labels: dict[str, str] | None = None,
           features: Any = None) -> nf.Intake:
    return nf.read(nodefeature(labels or {}, features, name=name, namespace=namespace))


def test_ordered_is_nfd_masters_merge_order() -> None:
    given = [intake("b", "other"), intake("z", "own"), intake("a", "zz"), intake("a", "other"),
             intake("c", "own")]
    assert [i.origin for i in nf.ordered(given, "own")] == [
        "nodefeature/own/c", "nodefeature/own/z", "nodefeature/other/a", "nodefeature/zz/a",
        "nodefeature/other/b"]


def test_merged_labels_attribute_each_key_to_the_last_writer() -> None:
    first = intake("a", "x", {"v.io/one": "1", "v.io/two": "1"})
    second = intake("b", "x", {"v.io/two": "2"})
    empty = intake("c", "x")
    assert nf.merged_labels([first, second, empty]) == {
        "nodefeature/x/a": {"v.io/one": "1"},
        "nodefeature/x/b": {"v.io/two": "2"},
        "nodefeature/x/c": {},
    }


def test_merge_into_follows_nfds_merge() -> None:
    features = FeatureSet.from_results(discovery().results)
    one = intake("a", "x", features={
        "flags": {"cpu.cpuid": {"elements": {"SGX": {}}}, "new.flag": {"elements": None}},
        "attributes": {"cpu.model": {"elements": {"vendor_id": "Other", "family": "6"}}},
        "instances": {"pci.device": {"elements": [{"attributes": {"vendor": "8086"}}]}}})
    two = intake("b", "x", features={
        "attributes": {"cpu.model": {"elements": {"family": "7"}}}})
    nf.merge_into(features, [one, two])
    assert set(features.flags("cpu.cpuid") or ()) == {"AVX", "AVX2", "SGX"}  # union
    assert features.flags("new.flag") == set()  # a feature with no element exists
    assert features.attributes("cpu.model") == {"vendor_id": "Other", "family": "7"}
    assert [dict(i) for i in features.instances("pci.device") or ()] == [
        {"vendor": "10de", "class": "0302"}, {"vendor": "8086"}]  # appended


def test_merge_into_keeps_conversion_lazy() -> None:
    features = FeatureSet.from_results(discovery().results)
    nf.merge_into(features, [intake("a", "x", features={
        "attributes": {"cpu.model": {"elements": {"family": "6"}}}})])
    assert features.asked() == set()
    assert features.attributes("cpu.model") == {"vendor_id": "Intel", "family": "6"}
    assert features.asked() == {"cpu.model"}
    # Merged after a feature was converted: it still lands.
    nf.merge_into(features, [intake("b", "x", features={
        "attributes": {"cpu.model": {"elements": {"family": "7"}}}})])
    assert features.attributes("cpu.model") == {"vendor_id": "Intel", "family": "7"}
    assert "third.party" not in features.names()
    nf.merge_into(features, [intake("c", "x", features={
        "flags": {"third.party": {"elements": {"x": {}}}}})])
    assert "third.party" in features.names()
    assert features.as_dict()["flags"]["third.party"] == {"elements": {"x": {}}}


def test_an_object_name_with_a_label_over_63_characters_is_read() -> None:
    # GFD names its object nvidia-features-for-<node>: past 63 characters for a long node
    # name, which Kubernetes allows in an object name (a DNS subdomain, 253 at most).
    name = "nvidia-features-for-" + "n" * 60
    intake = nf.read({"metadata": {"name": name, "namespace": "gpu-operator"},
                      "spec": {"labels": {"nvidia.com/gpu.count": "8"}}})
    assert intake.origin == f"nodefeature/gpu-operator/{name}"
    assert intake.labels == {"nvidia.com/gpu.count": "8"}
