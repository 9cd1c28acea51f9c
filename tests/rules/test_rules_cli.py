"""`nodefeatures rules test` and `rules validate` as real processes, on fixtures and on
hostile files: exit 0 fine, 1 a rule or file with a problem, 2 the command cannot work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testpaths import FIXTURES

DGX = FIXTURES / "dgx-h100"

GPU_OPERATOR_RULE = """\
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: nvidia-nfd-nodefeaturerules
spec:
  rules:
    - name: nvidia.com/gdrcopy
      labels:
        nvidia.com/gdrcopy.capable: "true"
      matchFeatures:
        - feature: kernel.loadedmodule
          matchExpressions:
            gdrdrv: {op: Exists}
    - name: nvidia.com/peermem
      labels:
        nvidia.com/peermem.capable: "true"
      matchFeatures:
        - feature: kernel.loadedmodule
          matchExpressions:
            nvidia_peermem: {op: Exists}
---
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: vendor
spec:
  rules:
    - name: hopper
      labels:
        gpu.hopper: "true"
      vars:
        arch: hopper
      matchFeatures:
        - feature: pci.device
          matchExpressions:
            vendor: {op: In, value: ["10de"]}
            device: {op: In, value: ["2330"]}
    - name: amd
      labels:
        gpu.amd: "true"
      matchFeatures:
        - feature: pci.device
          matchExpressions:
            vendor: {op: In, value: ["1002"]}
"""


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodefeatures", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def modules_fixture(tmp_path: Path) -> Path:
    """dgx-h100 with nvidia and nvidia_peermem loaded (the fixture has no /proc/modules)."""
    fixture = tmp_path / "dgx"
    shutil.copytree(DGX, fixture, symlinks=True)
    (fixture / "root/proc/modules").write_text("".join(
        f"{name} 16384 0 - Live 0x0000000000000000\n" for name in ("nvidia", "nvidia_peermem")))
    return fixture


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_node_feature_rules_explained_on_a_fixture(tmp_path: Path,
                                                    modules_fixture: Path) -> None:
    rules = write(tmp_path, "rules.yaml", GPU_OPERATOR_RULE)
    result = cli("rules", "test", "--fixture", modules_fixture, rules)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"NO MATCH {rules}:7  'nvidia.com/gdrcopy'" in out
    assert ("matchFeatures[0]: kernel.loadedmodule: gdrdrv Exists fails: "
            "kernel.loadedmodule has no element 'gdrdrv'") in out
    assert f"MATCH    {rules}:14  'nvidia.com/peermem'" in out
    assert "label nvidia.com/peermem.capable=true" in out
    assert "from  kernel.loadedmodule nvidia_peermem" in out
    assert "label feature.node.kubernetes.io/gpu.hopper=true" in out
    assert "var   arch=hopper" in out
    assert "from  pci.device vendor=10de,device=2330 (x8)" in out
    assert "vendor In [1002] fails: vendor is " in out
    assert out.rstrip().endswith("2 matched, 2 did not, 0 cannot be evaluated, "
                                 "0 problems in the files")


def test_json_for_machines(tmp_path: Path, modules_fixture: Path) -> None:
    rules = write(tmp_path, "rules.yaml", GPU_OPERATOR_RULE)
    result = cli("rules", "test", "--fixture", modules_fixture, "--format", "json", rules)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["problems"] == []
    by_name = {r["name"]: r for r in data["rules"]}
    assert by_name["nvidia.com/peermem"]["labels"] == {"nvidia.com/peermem.capable": "true"}
    assert by_name["hopper"]["elements"] == [
        {"feature": "pci.device", "element": "vendor=10de,device=2330", "count": 8}]
    (miss,) = by_name["nvidia.com/gdrcopy"]["misses"]
    assert miss == {"where": "matchFeatures[0]", "feature": "kernel.loadedmodule",
                    "expression": "gdrdrv Exists", "element": "gdrdrv", "value": None,
                    "present": False, "reason": miss["reason"]}
    assert by_name["hopper"]["line"] == 28 and by_name["hopper"]["file"] == str(rules)


OUTPUTS_RULE = """\
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata: {name: gpu-taints}
spec:
  rules:
    - name: tainted
      labels: {gpu: "true"}
      annotations: {note: "eight H100, one NVLink domain"}
      taints: [{key: vendor.io/gpu, value: busy, effect: NoSchedule},
               {key: unprefixed, effect: NoExecute}]
      extendedResources: {slots: "@pci.device.missing", vendor.io/w: "4"}
      matchFeatures:
        - feature: pci.device
          matchExpressions: {vendor: {op: In, value: ["10de"]}}
"""


def test_outputs_beyond_labels_are_shown_as_nfd_master_would_take_them(
        tmp_path: Path) -> None:
    rules = write(tmp_path, "outputs.yaml", OUTPUTS_RULE)
    result = cli("rules", "test", "--fixture", DGX, rules)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  annotation feature.node.kubernetes.io/note=eight H100, one NVLink domain" in out
    assert "  taint vendor.io/gpu=busy:NoSchedule" in out
    assert "  resource vendor.io/w=4" in out
    assert "dropped taint 'unprefixed=:NoExecute': its key has no namespace" in out
    assert "dropped extended resource 'feature.node.kubernetes.io/slots'" in out
    result = cli("rules", "test", "--fixture", DGX, "--format", "json", rules)
    [rule] = json.loads(result.stdout)["rules"]
    assert rule["outputs"] == {
        "annotations": {"feature.node.kubernetes.io/note": "eight H100, one NVLink domain"},
        "taints": {"vendor.io/gpu:NoSchedule": "busy"},
        "extendedResources": {"vendor.io/w": "4"}}
    assert len(rule["outputsDropped"]) == 2


def test_a_list_as_kubectl_get_writes_it(tmp_path: Path) -> None:
    rules = write(tmp_path, "got.yaml", """\
apiVersion: v1
kind: List
items:
  - apiVersion: nfd.k8s-sigs.io/v1alpha1
    kind: NodeFeatureRule
    metadata: {name: a}
    spec:
      rules:
        - name: ubuntu
          labels: {os.ubuntu: "true"}
          matchFeatures:
            - feature: system.osrelease
              matchExpressions: {ID: {op: In, value: [ubuntu]}}
  - apiVersion: nfd.k8s-sigs.io/v1alpha1
    kind: NodeFeatureRule
    metadata: {name: b}
    spec:
      rules:
        - name: broken
          labels: {x: "1"}
          matchFeatures:
            - feature: pci.device
              matchExpressions: {vendor: {op: Gt, value: [a]}}
""")
    result = cli("rules", "test", "--fixture", DGX, rules)
    assert result.returncode == 1
    assert f"MATCH    {rules}:9  'ubuntu'" in result.stdout
    assert (f"INVALID  {rules}:23: items[1].spec.rules[0].matchFeatures[0].matchExpressions"
            ".vendor.value (rule 'broken'): operator Gt: 'a' is not an integer") in result.stdout


def test_builtin_rules_run_first_so_later_rules_see_them(tmp_path: Path) -> None:
    rules = write(tmp_path, "r.yaml", """\
- name: on rdma
  labels: {fabric: ib}
  matchFeatures:
    - feature: rule.matched
      matchExpressions:
        rdma.capable: {op: IsTrue}
        rdma.available: {op: Exists}
""")
    result = cli("rules", "test", "--fixture", DGX, rules)
    assert result.returncode == 0, result.stderr
    # rdma.capable (a Mellanox device) passed; rdma.available did not (no modules).
    assert "rdma.available Exists fails: rule.matched has no element 'rdma.available'" \
        in result.stdout


def test_an_nfd_worker_config_and_config_rules_before_the_files(tmp_path: Path) -> None:
    config = write(tmp_path, "nfd-worker.conf", """\
core:
  labelWhiteList: ""
sources:
  custom:
    - name: base
      vars: {site: lab}
""")
    rules = write(tmp_path, "r.yaml", """\
- name: needs base
  labels: {site: "@rule.matched.site"}
  matchFeatures:
    - feature: rule.matched
      matchExpressions: {site: {op: In, value: [lab]}}
""")
    as_file = cli("rules", "test", "--fixture", DGX, config)
    assert as_file.returncode == 0, as_file.stderr
    assert "MATCH" in as_file.stdout and "var   site=lab" in as_file.stdout
    with_config = cli("rules", "test", "--fixture", DGX, "--config", config, rules)
    assert with_config.returncode == 0, with_config.stderr
    assert "label feature.node.kubernetes.io/site=lab" in with_config.stdout


def test_a_rule_that_cannot_be_evaluated_exits_1(tmp_path: Path) -> None:
    rules = write(tmp_path, "r.yaml", """\
- name: number
  labels: {x: "1"}
  matchFeatures:
    - feature: system.osrelease
      matchExpressions: {ID: {op: Gt, value: ["3"]}}
- name: fine
  labels: {y: "1"}
""")
    result = cli("rules", "test", "--fixture", DGX, rules)
    assert result.returncode == 1
    assert "ERROR    " in result.stdout and "'ubuntu' is not a number" in result.stdout
    assert "MATCH    " in result.stdout  # the other rule is still evaluated


def test_invalid_rules_in_test_exit_1_with_their_line(tmp_path: Path) -> None:
    rules = write(tmp_path, "r.yaml", "- name: bad\n  labels: {x: '1'}\n  matchFeatures:\n"
                                      "    - feature: pci.device\n      matchExpressions:\n"
                                      "        vendor: {op: Is, value: [x]}\n")
    result = cli("rules", "test", "--fixture", DGX, rules)
    assert result.returncode == 1
    assert f"INVALID  {rules}:6: [0].matchFeatures[0].matchExpressions.vendor.op" in \
        result.stdout


def test_live_host_under_a_root(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=rocky\nVERSION_ID=9.3\n")
    rules = write(tmp_path, "r.yaml", """\
- name: el9
  labels: {el9: "true"}
  matchFeatures:
    - feature: system.osrelease
      matchExpressions:
        ID: {op: In, value: [rhel, rocky]}
        VERSION_ID: {op: Ge, type: version, value: ["9.4"]}
""")
    result = cli("rules", "test", "--root", root, "--source", "system", rules)
    assert result.returncode == 0, result.stderr
    assert "VERSION_ID Ge [9.4] (version) fails: VERSION_ID is '9.3'" in result.stdout
    assert f"the host under {root}" in result.stdout


@pytest.mark.parametrize("args", [
    ["--fixture", str(DGX), "--root", "/tmp"],
    ["--fixture", "/no/such/fixture"],
    ["--config", "/no/such/config.yaml", "--fixture", str(DGX)],
])
def test_command_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    rules = write(tmp_path, "r.yaml", "- name: a\n")
    result = cli("rules", "test", *args, rules)
    assert result.returncode == 2
    assert result.stderr.startswith("nodefeatures: error: ")
    assert "Traceback" not in result.stderr


def hostile(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / kind
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes: a blocking read would hang
    elif kind == "huge":
        with path.open("wb") as out:
            out.truncate(64 * 1024 * 1024)
    elif kind == "unreadable":
        path.write_text("- name: a\n")
        path.chmod(0)
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "huge", "unreadable"])
@pytest.mark.parametrize("command", ["test", "validate"])
def test_files_that_cannot_be_read_exit_2_at_once(tmp_path: Path, kind: str,
                                                  command: str) -> None:
    path = hostile(tmp_path, kind)
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    extra = ["--fixture", str(DGX)] if command == "test" else []
    result = cli("rules", command, *extra, path, timeout=30)
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"nodefeatures: error: {path}: ")


# Nine levels of nine aliases each: 9**9 nodes once expanded, from 10 lines.
BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
               for p, c in zip("abcdefgh", "bcdefghi", strict=True))

HOSTILE_CONTENT = {
    "not-yaml": (b"key: [unclosed\n", "not-yaml:2: not valid YAML: "),
    "binary": (b"\x00\xff\xfe\x00", "not UTF-8 text"),
    "tabs": (b"- name: a\n\t labels: {}\n", "not valid YAML"),
    # Under libyaml's own limit (1000), far over PyYAML's recursion in pure Python.
    "deep": (b"[" * 900 + b"]" * 900, "nested deeper than 64 levels"),
    # libyaml stops it first; the pure-Python parser reaches our limit.
    "deeper": (b"[" * 50000 + b"]" * 50000, "maximum nesting depth|nested deeper than 64"),
    "alias-bomb": (("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB).encode(),
                   "alias bomb"),
    "scalar": (b"just a string\n", "not a string"),
    "single-rule": (b"name: a\nlabels: {x: y}\n", "write it as a list item"),
    "wrong-kind": (b"apiVersion: v1\nkind: ConfigMap\n", "kind must be NodeFeatureRule"),
    "empty": (b"", "holds no rules"),
    "python-tag": (b"- !!python/object/apply:os.system ['true']\n", "not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CONTENT))
@pytest.mark.parametrize("command", ["test", "validate"])
def test_hostile_contents_are_a_problem_of_that_file(tmp_path: Path, name: str,
                                                     command: str) -> None:
    data, message = HOSTILE_CONTENT[name]
    path = write(tmp_path, name, data)
    good = write(tmp_path, "good.yaml", "- name: ok\n  labels: {ok: 'true'}\n")
    extra = ["--fixture", str(DGX)] if command == "test" else []
    result = cli("rules", command, *extra, path, good, timeout=30)
    assert result.returncode == 1, result
    assert any(alternative in result.stdout for alternative in message.split("|")), result
    assert "Traceback" not in result.stderr
    if command == "test":  # the good file's rule still runs
        assert f"MATCH    {good}:1  'ok'" in result.stdout


def test_validate_names_every_problem_with_file_line_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", """\
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
spec:
  rules:
    - name: one
      label: {x: "1"}
      matchFeatures:
        - feature: pci.device
          matchExpressions:
            vendor: {op: In}
            class: {op: InRegexp, value: ["^03(?=00)"]}
    - name: two
      labels:
        "bad key!": "1"
        ok: "not a valid value!"
        kubernetes.io/arch: x
      matchFeatures:
        - feature: pcidevice
          matchExpressions:
            count: {op: Gt, value: ["ten"]}
            n: {op: Exists, value: ["1"]}
            v: {op: GtLt, value: ["5", "1"]}
            w: {op: In, value: [{a: 1}]}
            w: {op: IsTrue, type: version}
""")
    result = cli("rules", "validate", path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    expected = [
        f"{path}:6: spec.rules[0].label (rule 'one'): unknown field",
        f"{path}:10: spec.rules[0].matchFeatures[0].matchExpressions.vendor (rule 'one'): "
        "operator In needs at least one value",
        f"{path}:11: spec.rules[0].matchFeatures[0].matchExpressions.class.value (rule 'one'): "
        "operator InRegexp: '^03(?=00)' is not a valid regexp",
        f"{path}:20: spec.rules[1].matchFeatures[0].matchExpressions.count.value (rule 'two'): "
        "operator Gt: 'ten' is not an integer",
        f"{path}:21: spec.rules[1].matchFeatures[0].matchExpressions.n.value (rule 'two'): "
        "operator Exists takes no values",
        f"{path}:22: spec.rules[1].matchFeatures[0].matchExpressions.v.value (rule 'two'): "
        "operator GtLt: the first value must be below the second",
        f"{path}:24: spec.rules[1].matchFeatures[0].matchExpressions.w: duplicate key",
        f"{path}:24: spec.rules[1].matchFeatures[0].matchExpressions.w.type (rule 'two'): "
        "type 'version' applies only to",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (want, lines)
    assert lines[-1] == f"{path}: {len(lines) - 1} problems (0 rules)"


def test_validate_semantic_checks_on_rules_that_parse(tmp_path: Path) -> None:
    path = write(tmp_path, "sem.yaml", """\
- name: two
  labels:
    "bad key!": "1"
    ok: "not a valid value!"
    kubernetes.io/arch: x
    ref: "@kernel.major"
  matchFeatures:
    - feature: pcidevice
""")
    result = cli("rules", "validate", path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for want in [
        f"{path}:3: '[0].labels.bad key!' (rule 'two'): not a valid label name",
        f"{path}:4: [0].labels.ok (rule 'two'): 'not a valid value!' is not a valid label "
        "value",
        f"{path}:5: [0].labels.kubernetes.io/arch (rule 'two'): the kubernetes.io namespaces",
        f"{path}:6: [0].labels.ref (rule 'two'): '@kernel.major' is not of the form",
        f"{path}:8: [0].matchFeatures[0].feature (rule 'two'): 'pcidevice' is not of the form",
    ]:
        assert any(line.startswith(want) for line in lines), (want, lines)


def test_validate_passes_good_files_and_says_templates_are_not_checked(
        tmp_path: Path) -> None:
    rules = write(tmp_path, "rules.yaml", GPU_OPERATOR_RULE)
    templated = write(tmp_path, "t.yaml", """\
- name: per device
  labelsTemplate: |
    {{ range .pci.device }}vendor-{{ .vendor }}=true
    {{ end }}
  matchFeatures:
    - feature: pci.device
      matchExpressions: {vendor: {op: Exists}}
""")
    result = cli("rules", "validate", rules, templated)
    assert result.returncode == 0, result.stdout
    assert f"{rules}: valid (4 rules)" in result.stdout
    if not (Path(__file__).parents[2]
            / "nodefeatures/discovery/rules/gotemplate.py").exists():
        assert f"{templated}: valid (1 rule; 1 with templates: templates not checked)" \
            in result.stdout
    data = json.loads(cli("rules", "validate", "--format", "json", rules).stdout)
    assert data["ok"] is True and data["files"][0]["kinds"] == ["NodeFeatureRule"] * 2


def test_control_bytes_in_a_file_never_reach_the_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, "esc.yaml", '- name: "\\e[31mred"\n  bogus: 1\n')
    result = cli("rules", "validate", path)
    assert result.returncode == 1
    assert "\x1b" not in result.stdout and "\\x1b[31mred" in result.stdout


def test_dump_does_not_load_the_rules_commands() -> None:
    code = ("import sys\nfrom nodefeatures.cli import main\n"
            f"try:\n    main(['dump', '--format', 'json', '--fixture', {str(DGX)!r}])\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stderr.split())
    assert "nodefeatures.cli.host" in loaded
    assert not loaded & {"nodefeatures.cli.rules", "nodefeatures.discovery.rules.explain",
                         "nodefeatures.discovery.rules.documents"}
