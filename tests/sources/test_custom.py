"""custom source: NFD's built-in RDMA rules, rules from the config and from custom.d."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hosttree import HostTree
from testpaths import FIXTURES

from nodefeatures.discovery.config import ConfigError, build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import Discovery, load_sources, run_pass
from nodefeatures.discovery.source import Source
from nodefeatures.sources.custom import CustomSource
from nodefeatures.sources.kernel import KernelSource
from nodefeatures.sources.local import LocalSource
from nodefeatures.sources.pci import PciSource

NS = "feature.node.kubernetes.io/"
CUSTOM_D = "etc/kubernetes/node-feature-discovery/custom.d"
CAPABLE = NS + "rdma.capable"
AVAILABLE = NS + "rdma.available"


def pci_device(tree: HostTree, address: str, vendor: str, klass: str) -> None:
    for name, value in (("vendor", vendor), ("class", klass), ("device", "0x1021"),
                        ("subsystem_vendor", vendor), ("subsystem_device", "0x0001")):
        tree.file(f"sys/bus/pci/devices/{address}/{name}", value + "\n")


def run(tree: HostTree, config: dict[str, Any] | None = None,
        sources: dict[str, Source] | None = None) -> Discovery:
    chosen: dict[str, Source] = sources or {"custom": CustomSource(), "pci": PciSource(),
                                            "kernel": KernelSource(), "local": LocalSource()}
    return run_pass(tree.host(), chosen, build(config or {}, chosen))


def custom_of(discovery: Discovery):
    return next(r for r in discovery.results if r.name == "custom")


def values(discovery: Discovery) -> dict[str, str]:
    return {k: v.value for k, v in custom_of(discovery).labels.items()}


def has_mellanox(fixture: Path) -> bool:
    devices = fixture / "root/sys/bus/pci/devices"
    if not devices.is_dir():
        return False
    return any((d / "vendor").read_text().strip() == "0x15b3"
               for d in devices.iterdir() if (d / "vendor").is_file())


FIXTURE_DIRS = sorted(p for p in FIXTURES.iterdir() if (p / "labels.json").is_file())


@pytest.mark.parametrize("fixture", FIXTURE_DIRS, ids=lambda p: p.name)
def test_rdma_capable_exactly_on_fixtures_with_a_mellanox_device(fixture: Path) -> None:
    sources, _ = load_sources()
    discovery = run_pass(replay_host(fixture), sources, build({}, sources))
    got = discovery.values()
    assert (got.get(CAPABLE) == "true") is has_mellanox(fixture)
    assert (json.loads((fixture / "labels.json").read_text()).get(CAPABLE) == "true") \
        is has_mellanox(fixture)


def test_there_are_fixtures_with_and_without_a_mellanox_device() -> None:
    assert {has_mellanox(f) for f in FIXTURE_DIRS} == {True, False}


def test_rdma_capable_sees_a_nic_whose_class_the_pci_source_does_not_label(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_device(tree, "0000:0c:00.0", "0x15b3", "0x020000")  # Ethernet: not whitelisted
    pci_device(tree, "0000:1b:00.0", "0x10de", "0x030200")
    assert values(run(tree)) == {CAPABLE: "true"}
    pci = next(r for r in run(tree).results if r.name == "pci")
    # The rule matches the pci source's own feature: every device, labelled or not.
    assert pci.features is not None and len(pci.features.instances["device"]) == 2
    assert list(pci.labels) == [NS + "pci-0302_10de.present"]


def test_no_rdma_capable_without_a_mellanox_device(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_device(tree, "0000:1b:00.0", "0x10de", "0x030200")
    assert values(run(tree)) == {}


@pytest.mark.parametrize(("modules", "expected"), [
    (["ib_uverbs", "rdma_ucm", "mlx5_core"], True),
    (["ib_uverbs", "mlx5_core"], False),  # both are needed
    (["rdma_ucm_x", "ib_uverbs"], False),
])
def test_rdma_available_needs_both_modules_loaded(tmp_path: Path, modules: list[str],
                                                  expected: bool) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/modules", "".join(f"{m} 16384 0 - Live 0x0000000000000000\n"
                                      for m in modules))
    assert (values(run(tree)).get(AVAILABLE) == "true") is expected


def test_config_rules_use_nfd_worker_format_and_naming(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_device(tree, "0000:1b:00.0", "0x10de", "0x030200")
    config = {"sources": {"custom": [
        {"name": "gpu", "labels": {"gpu.vendor": "nvidia", "vendor.io/gpu": "yes"},
         "matchFeatures": [{"feature": "pci.device", "matchExpressions": {
             "vendor": {"op": "In", "value": ["10de"]}, "class": ["0302"]}}]},
        {"name": "never", "labels": {"never": "true"},
         "matchFeatures": [{"feature": "pci.device", "matchExpressions": {"vendor": "1234"}}]},
    ]}}
    assert values(run(tree, config)) == {NS + "gpu.vendor": "nvidia", "vendor.io/gpu": "yes"}


def test_a_bad_rule_in_the_config_rejects_the_file_with_its_path() -> None:
    sources: dict[str, Source] = {"custom": CustomSource()}
    with pytest.raises(ConfigError, match=r"sources\.custom\[1\]\.matchFeatures\[0\]"
                                          r"\.matchExpressions\.vendor\.op \(rule 'b'\)"):
        build({"sources": {"custom": [{"name": "a"}, {"name": "b", "matchFeatures": [
            {"feature": "pci.device", "matchExpressions": {"vendor": {"op": "Is"}}}]}]}},
            sources)
    with pytest.raises(ConfigError, match=r"sources\.custom: must be a list of rules"):
        build({"sources": {"custom": {"name": "a"}}}, sources)


def test_rules_see_features_of_sources_that_run_after_them(tmp_path: Path) -> None:
    # local has a higher priority than custom, yet its features are there for rules.
    tree = HostTree(tmp_path)
    tree.file("etc/kubernetes/node-feature-discovery/features.d/f", "site=lab\n")
    config = {"sources": {"custom": [{"name": "lab", "labels": {"lab.node": "true"},
                                      "matchFeatures": [{"feature": "local.label",
                                                         "matchExpressions": {"site": "lab"}}]}]}}
    discovery = run(tree, config)
    assert values(discovery) == {NS + "lab.node": "true"}
    assert [r.name for r in discovery.results] == ["kernel", "pci", "custom", "local"]


def test_custom_d_files_add_rules_and_a_bad_file_costs_only_its_own(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file(f"{CUSTOM_D}/a-good.yaml", "- name: always\n  labels: {site.a: 'true'}\n")
    tree.file(f"{CUSTOM_D}/b-bad.yaml", "- name: fine\n  labels: {b.one: 'x'}\n"
                                        "- name: broken\n  labels: {b.two: 'x'}\n"
                                        "  matchFeatures: [{feature: a.b, matchExpressions: "
                                        "{v: {op: Gt, value: [x]}}}]\n")
    tree.file(f"{CUSTOM_D}/c-not-yaml.yaml", "- name: [unclosed\n")
    tree.file(f"{CUSTOM_D}/.hidden.yaml", "- name: hidden\n  labels: {hidden: 'true'}\n")
    tree.file(f"{CUSTOM_D}/configmap/d.yaml", "- name: nested\n  labels: {nested: 'true'}\n")
    tree.file(f"{CUSTOM_D}/configmap/deeper/e.yaml", "- name: deep\n  labels: {deep: 'true'}\n")
    result = custom_of(run(tree))
    assert {k: v.value for k, v in result.labels.items()} == {
        NS + "site.a": "true", NS + "nested": "true"}
    bad = [w for w in result.warnings if "b-bad.yaml" in w]
    assert len(bad) == 1 and "'broken'" in bad[0] and "[1].matchFeatures[0]" in bad[0]
    assert any("c-not-yaml.yaml" in w and "not valid YAML" in w for w in result.warnings)
    assert result.complete is False  # the bad files' labels must not be removed


def test_a_rule_that_cannot_be_evaluated_is_named_and_marks_the_pass_incomplete(
        tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("etc/kubernetes/node-feature-discovery/features.d/f", "speed=fast\n")
    config = {"sources": {"custom": [
        {"name": "numeric", "labels": {"numeric": "true"}, "matchFeatures": [
            {"feature": "local.label", "matchExpressions": {"speed": {"op": "Gt",
                                                                      "value": ["1"]}}}]},
        {"name": "other", "labels": {"other": "true"}},
    ]}}
    result = custom_of(run(tree, config))
    assert {k: v.value for k, v in result.labels.items()} == {NS + "other": "true"}
    assert any("'numeric'" in w and "not a number" in w for w in result.warnings)
    assert result.complete is False


def test_a_clean_pass_is_complete(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    result = custom_of(run(tree, {"sources": {"custom": [{"name": "x", "labels": {"x": "1"}}]}}))
    assert result.complete is True and result.warnings == []


def test_a_prefixed_label_wins_over_the_same_name_without_prefix(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    config = {"sources": {"custom": [
        {"name": "one", "labels": {NS + "x": "prefixed"}},
        {"name": "two", "labels": {"x": "bare"}},
    ]}}
    assert values(run(tree, config)) == {NS + "x": "prefixed"}


def test_labels_go_through_the_central_validation(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    config = {"sources": {"custom": [{"name": "x", "labels": {
        "bad key!": "1", "ok": "not a value!", "good": "fine", "kubernetes.io/hostname": "evil",
        "sub.kubernetes.io/x": "evil", "node-role.kubernetes.io/x": "evil"}}]}}
    result = custom_of(run(tree, config))
    # An invalid value is dropped, never rewritten into one nobody wrote.
    assert {k: v.value for k, v in result.labels.items()} == {NS + "good": "fine"}
    assert any("bad key!" in w for w in result.warnings)
    assert any("'not a value!'" in w and "invalid value" in w for w in result.warnings)
    assert sum("namespaces are refused" in w for w in result.warnings) == 3


def test_explain_names_the_rule_and_the_matched_element(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    pci_device(tree, "0000:0c:00.0", "0x15b3", "0x020700")
    origin = custom_of(run(tree)).labels[CAPABLE].origin
    assert "RDMA capable static rule" in origin and "vendor=15b3" in origin


def test_explain_shows_the_named_elements_of_every_matching_device_counted(
        tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    for index in range(6):
        pci_device(tree, f"0000:0{index}:00.0", "0x15b3", "0x020700")
    origin = custom_of(run(tree)).labels[CAPABLE].origin
    # Only the element the rule named, once, counted: not six devices' every attribute.
    assert origin == "rule 'RDMA capable static rule' (built-in): pci.device vendor=15b3 (x6)"


def test_explain_names_rule_origin_elements_and_copied_values(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/modules", "nvidia 1 0 - Live 0x0\nnvidia_uvm 1 0 - Live 0x0\n")
    tree.file(f"{CUSTOM_D}/site.yaml", """\
- name: modules by name
  labels: {nv: "yes", count: "@kernel.loadedmodule.nvidia"}
  matchFeatures:
    - feature: kernel.loadedmodule
      matchName: {op: InRegexp, value: ["^nvidia"]}
- name: always
  labels: {always: "yes", copied: "@rule.matched.nv"}
""")
    labels = custom_of(run(tree)).labels
    where = "/" + CUSTOM_D + "/site.yaml"
    assert labels[NS + "nv"].origin == (
        f"rule 'modules by name' ({where}): kernel.loadedmodule nvidia; "
        "kernel.loadedmodule nvidia_uvm")
    assert labels[NS + "always"].origin == (
        f"rule 'always' ({where}): no match terms (always matches)")
    assert labels[NS + "copied"].origin.endswith("; value from @rule.matched.nv")
    assert labels[NS + "copied"].value == "yes"


def test_dump_with_only_the_built_in_rules_loads_no_yaml_and_compiles_no_pattern() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nodefeatures.cli import main\n"
        f"try:\n    main(['dump', '--fixture', {str(FIXTURES / 'dgx-h100')!r}])\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "from nodefeatures.discovery.rules import expressions\n"
        "assert 'nodefeatures.sources.custom' in sys.modules, 'custom source did not run'\n"
        "assert 'yaml' not in sys.modules, 'yaml imported'\n"
        "assert 'decimal' not in sys.modules, 'decimal imported'\n"
        "assert expressions._pattern.cache_info().currsize == 0, 'patterns compiled'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "rdma.capable" in result.stdout


def test_enabled_modules_are_loaded_and_built_in_modules(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/modules", "nvidia 16384 0 - Live 0x0\n")
    tree.file("proc/sys/kernel/osrelease", "6.8.0-31-generic\n")
    tree.file("lib/modules/6.8.0-31-generic/modules.builtin",
              "kernel/drivers/block/loop.ko\nkernel/fs/ext4/ext4.ko\nnot-a-module\n")

    def rule(name: str, feature: str, module: str) -> dict[str, Any]:
        return {"name": name, "labels": {name: "true"}, "matchFeatures": [
            {"feature": feature, "matchExpressions": {module: {"op": "Exists"}}}]}

    config = {"sources": {"custom": [
        rule("loop.enabled", "kernel.enabledmodule", "loop"),
        rule("nvidia.enabled", "kernel.enabledmodule", "nvidia"),
        rule("loop.loaded", "kernel.loadedmodule", "loop"),
        rule("not.enabled", "kernel.enabledmodule", "not-a-module"),
    ]}}
    assert values(run(tree, config)) == {NS + "loop.enabled": "true", NS + "nvidia.enabled": "true"}


def test_without_proc_modules_the_module_features_are_missing(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    config = {"sources": {"custom": [{"name": "x", "labels": {"x": "true"}, "matchFeatures": [
        {"feature": "kernel.loadedmodule",
         "matchExpressions": {"rdma_ucm": {"op": "DoesNotExist"}}}]}]}}
    assert values(run(tree, config)) == {}


class _Broken(Source):
    name = "broken"

    def discover(self, ctx):
        raise RuntimeError("boom")

    def labels(self, features, options):
        return []


def test_a_failed_source_makes_the_pass_incomplete_when_a_rule_asks_for_its_features(
        tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    chosen: dict[str, Source] = {"custom": CustomSource(), "broken": _Broken()}
    asking = {"sources": {"custom": [{"name": "x", "labels": {"x": "1"}, "matchFeatures": [
        {"feature": "broken.thing"}]}]}}
    assert custom_of(run(tree, asking, sources=chosen)).complete is False
    # The built-in rules ask only for pci and kernel features.
    assert custom_of(run(tree, sources=chosen)).complete is True


def test_capture_records_what_rules_read_and_replay_gives_the_same_labels(
        tmp_path: Path) -> None:
    from nodefeatures.discovery.fixture import capture_host

    tree = HostTree(tmp_path / "node")
    pci_device(tree, "0000:0c:00.0", "0x15b3", "0x020000")
    tree.file("proc/modules", "ib_uverbs 1 0 - Live 0x0\nrdma_ucm 1 0 - Live 0x0\n")
    tree.file(f"{CUSTOM_D}/site.yaml", "- name: site\n  labels: {site: lab}\n")
    chosen: dict[str, Source] = {"custom": CustomSource(), "pci": PciSource(),
                                 "kernel": KernelSource()}
    config = build({}, chosen)
    live = run_pass(tree.host(), chosen, config)
    captured = run_pass(capture_host(tmp_path / "fixture", root=str(tree.root)), chosen, config)
    replayed = run_pass(replay_host(tmp_path / "fixture"), chosen, config)
    expected = {CAPABLE: "true", AVAILABLE: "true", NS + "site": "lab"}
    assert values(live) == values(captured) == values(replayed) == expected


def test_local_labels_win_over_rule_labels_on_the_same_key(tmp_path: Path) -> None:
    # As NFD: local has priority 20, custom 10.
    tree = HostTree(tmp_path)
    tree.file("etc/kubernetes/node-feature-discovery/features.d/f", "shared=from-file\n")
    config = {"sources": {"custom": [{"name": "x", "labels": {"shared": "from-rule"}}]}}
    discovery = run(tree, config)
    assert values(discovery) == {NS + "shared": "from-rule"}
    assert discovery.values()[NS + "shared"] == "from-file"


def test_matched_flag_and_attribute_elements_are_recorded_by_name(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/modules", "nvidia 1 0 - Live 0x0\n")
    tree.file("etc/kubernetes/node-feature-discovery/features.d/f", "site=lab\n")
    config = {"sources": {"custom": [{"name": "both", "labels": {"both": "true"},
                                      "matchFeatures": [
                                          {"feature": "kernel.loadedmodule",
                                           "matchExpressions": ["nvidia"]},
                                          {"feature": "local.label",
                                           "matchExpressions": {"site": "lab"}}]}]}}
    origin = custom_of(run(tree, config)).labels[NS + "both"].origin
    assert "kernel.loadedmodule nvidia" in origin and "local.label site=lab" in origin


SECRET = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ"


def test_a_custom_d_file_that_is_not_yaml_is_named_in_one_line_without_its_content(
        tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file(f"{CUSTOM_D}/a.yaml", f"key: [unclosed {SECRET}\n  - nope: {SECRET}\n")
    result = custom_of(run(tree))
    shown = [w for w in result.warnings if "a.yaml" in w]
    assert len(shown) == 1 and "not valid YAML" in shown[0]
    assert "\n" not in shown[0] and "c2VjcmV0" not in shown[0]
    assert "line 2" in shown[0]  # where, so the author can find it


@pytest.mark.parametrize("content", ["[" * 5000 + "]" * 5000,
                                     "- name: big\n  labels: {a: " + "9" * 5000 + "}\n"],
                         ids=["nested-5000-deep", "integer-5000-digits"])
def test_a_hostile_custom_d_file_costs_only_its_own_rules(tmp_path: Path, content: str) -> None:
    tree = HostTree(tmp_path)
    tree.file(f"{CUSTOM_D}/a-good.yaml", "- name: always\n  labels: {site.a: 'true'}\n")
    tree.file(f"{CUSTOM_D}/b-hostile.yaml", content)
    result = custom_of(run(tree))
    assert result.error is None
    assert {k: v.value for k, v in result.labels.items()} == {NS + "site.a": "true"}
    assert any("b-hostile.yaml" in w for w in result.warnings)
    assert result.complete is False


def test_rule_names_and_label_keys_in_warnings_are_quoted_and_bounded(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file("proc/modules", "ib_uverbs 1 0 - Live 0x0\n")
    long_name = "r" * 100_000
    tree.file(f"{CUSTOM_D}/a.yaml",
              '- name: "n\\nERROR forged name"\n'
              '  labels: {"k\\nERROR forged key": "@kernel.loadedmodule.nope"}\n'
              f'- name: {long_name}\n'
              '  labels: {"k2": "@kernel.loadedmodule.nope' + "\\n" * 50_000 + '"}\n')
    result = custom_of(run(tree))
    shown = [w for w in result.warnings if "dropped" in w]
    assert len(shown) == 2
    assert all("\n" not in w for w in shown)
    assert "forged key" in shown[0]  # escaped, still recognisable
    assert all(len(w) < 1000 for w in shown)


def test_a_custom_d_file_whose_aliases_repeat_too_much_is_refused_quickly(
        tmp_path: Path) -> None:
    # 100 KB of YAML whose aliases make 20,000 rules of 100 features of 100 expressions:
    # evaluated as written, one pass would take hours.
    import time

    exprs = ", ".join(f"m{i}: {{op: Exists}}" for i in range(100))
    doc = ("- name: f\n  labels: {z: y}\n  matchFeatures:\n"
           f"  - &f {{feature: kernel.loadedmodule, matchExpressions: {{{exprs}}}}}\n"
           "- &r\n  name: r\n  labels: {a: b}\n  matchFeatures: [" + ", ".join(["*f"] * 100)
           + "]\n" + "".join("- *r\n" for _ in range(20000)))
    tree = HostTree(tmp_path)
    tree.file("proc/modules", "ib_uverbs 1 0 - Live 0x0\n")
    tree.file(f"{CUSTOM_D}/a-good.yaml", "- name: always\n  labels: {site.a: 'true'}\n")
    tree.file(f"{CUSTOM_D}/b-bomb.yaml", doc)
    started = time.process_time()
    result = custom_of(run(tree))
    assert time.process_time() - started < 10
    assert {k: v.value for k, v in result.labels.items()} == {NS + "site.a": "true"}
    assert any("b-bomb.yaml" in w and "too large" in w for w in result.warnings)


def test_field_and_element_names_in_rule_problems_cannot_forge_a_line(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.file(f"{CUSTOM_D}/a.yaml",
              '- name: "r\\nERROR forged name"\n  labels: {a: b}\n'
              '  "x\\nERROR forged field": 1\n'
              '  matchFeatures:\n  - feature: kernel.loadedmodule\n'
              '    matchExpressions:\n'
              f'      e: {{op: In, value: [{{k: {"x" * 100_000}}}]}}\n')
    result = custom_of(run(tree))
    shown = [w for w in result.warnings if "a.yaml" in w]
    assert shown
    assert all("\n" not in w and len(w) < 2000 for w in shown), shown
    assert any("forged field" in w for w in shown)
