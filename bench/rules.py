"""CPU time of rule evaluation per pass over the dgx-h100 fixture's features.

    .venv/bin/python bench/rules.py [--passes 500]

Six numbers: 100 realistic rules (GPU Operator, RDMA, OS, kernel and GPU rules, with
matchAny groups, regexps, version comparisons and rule.matched chains) evaluated by the
engine; the same with every miss explained (what `rules test` pays; no budget: it is
a command, not the agent's pass); the same with 20 template-heavy rules added
(labelsTemplate, varsTemplate with ranges, conditions, Sprig functions, rule.matched), in
steady state (expansions of unchanged elements are remembered) and as a first pass (every
template runs); NFD's two built-in rules alone; and the whole custom source with the
built-ins as the agent runs it (the pci and kernel sources have read the features it
matches).
Each pass builds a fresh feature set from the same discovery results, as a pass does.
Budgets: 100 rules <= 5 ms, built-ins <= 0.2 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.rules import engine, explain
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import Rule, parse_rules
from nodefeatures.discovery.run import load_sources, run_pass, run_source
from nodefeatures.sources.custom import CustomSource
from nodefeatures.sources.custom.builtin import BUILTIN_RULES

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/dgx-h100"
MODULES = ["nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nvidia_peermem",
           "nvidia_fs", "gdrdrv", "mlx5_core", "mlx5_ib", "ib_core", "ib_uverbs", "rdma_ucm",
           "rdma_cm", "iw_cm", "ib_cm", "overlay", "br_netfilter", "xt_conntrack", "nf_nat",
           "ip_tables", "x_tables", "nvme", "nvme_core", "ast", "i2c_algo_bit", "ipmi_si"]
WARM_UP = 20


def realistic_rules() -> list[dict[str, Any]]:
    """100 rules of the kinds vendors and operators publish."""
    rules: list[dict[str, Any]] = [
        # The GPU Operator's kernel-module rules.
        {"name": "nvidia.com/gdrcopy", "labels": {"nvidia.com/gdrcopy.capable": "true"},
         "matchFeatures": [{"feature": "kernel.loadedmodule",
                            "matchExpressions": {"gdrdrv": {"op": "Exists"}}}]},
        {"name": "nvidia.com/gds", "labels": {"nvidia.com/gds.capable": "true"},
         "matchFeatures": [{"feature": "kernel.loadedmodule",
                            "matchExpressions": {"nvidia_fs": {"op": "Exists"}}}]},
        {"name": "nvidia.com/peermem", "labels": {"nvidia.com/peermem.capable": "true"},
         "matchFeatures": [{"feature": "kernel.loadedmodule",
                            "matchExpressions": {"nvidia_peermem": {"op": "Exists"}}}]},
    ]
    for index in range(20):  # PCI vendor/device rules, each over all devices
        rules.append({"name": f"pci-{index}", "labels": {f"vendor.io/dev{index}": "true"},
                      "matchFeatures": [{"feature": "pci.device", "matchExpressions": {
                          "vendor": {"op": "In", "value": ["10de", "15b3"]},
                          "device": {"op": "In", "value": [f"{0x2330 + index:04x}"]},
                          "class": {"op": "InRegexp", "value": ["^03", "^02"]}}}]})
    for index in range(20):  # OS and kernel version gates
        rules.append({"name": f"os-{index}", "labels": {f"os.gate{index}": "ok"},
                      "matchFeatures": [
                          {"feature": "system.osrelease", "matchExpressions": {
                              "ID": {"op": "In", "value": ["ubuntu", "rhel"]},
                              "VERSION_ID": {"op": "Ge", "type": "version",
                                             "value": [f"20.{index % 10}"]}}},
                          {"feature": "kernel.version", "matchExpressions": {
                              "full": {"op": "GeLe", "type": "version",
                                       "value": ["5.4", f"6.{index}"]}}}]})
    for index in range(20):  # GPU facts through the nvidia source's instances
        rules.append({"name": f"gpu-{index}", "labels": {f"gpu.class{index}": "hopper"},
                      "matchFeatures": [{"feature": "nvidia.gpu", "matchExpressions": {
                          "compute": {"op": "In", "value": ["9.0"]},
                          "memory.bytes": {"op": "Gt", "value": [str(index * 10**9)]},
                          "name": {"op": "InRegexp", "value": ["H100", "H200"]}}}]})
    for index in range(20):  # matchAny groups
        rules.append({"name": f"any-{index}", "labels": {f"fabric{index}": "ib"}, "matchAny": [
            {"matchFeatures": [{"feature": "kernel.loadedmodule",
                                "matchExpressions": {f"missing_{index}": {"op": "Exists"}}}]},
            {"matchFeatures": [{"feature": "pci.device", "matchExpressions": {
                "vendor": {"op": "In", "value": ["15b3"]}, "class": ["0207"]}}]},
        ]})
    for index in range(17):  # chains over earlier rules, and names of elements
        rules.append({"name": f"chain-{index}", "labels": {f"tier{index}": "gold"},
                      "vars": {f"tier{index}.var": "1"},
                      "matchFeatures": [
                          {"feature": "rule.matched", "matchExpressions": {
                              f"gpu.class{index}": {"op": "In", "value": ["hopper"]},
                              f"fabric{index}": {"op": "Exists"}}},
                          {"feature": "kernel.loadedmodule",
                           "matchName": {"op": "InRegexp", "value": ["^nvidia"]}}]})
    assert len(rules) == 100
    return rules


def template_rules() -> list[dict[str, Any]]:
    """20 template-heavy rules: per-device labels, counts, string functions, rule.matched."""
    rules: list[dict[str, Any]] = []
    for index in range(5):  # a label per matched device, with Sprig string functions
        rules.append({"name": f"tmpl-pci-{index}", "labelsTemplate": (
            "{{ range $i, $d := .pci.device }}"
            f"t{index}.dev-{{{{ $d.vendor }}}}-{{{{ $d.device | lower | trunc 4 }}}}"
            "={{ printf \"%s-%d\" $d.class $i | replace \"0\" \"o\" }}\n{{ end }}"
            f"t{index}.count={{{{ len .pci.device }}}}\n"),
            "matchFeatures": [{"feature": "pci.device", "matchExpressions": {
                "vendor": {"op": "In", "value": ["10de", "15b3"]}}}]})
    for index in range(5):  # attribute elements, with conditions and comparisons
        rules.append({"name": f"tmpl-os-{index}", "varsTemplate": (
            "{{ range .system.osrelease }}{{ if or (eq .Name \"ID\") (eq .Name \"VERSION_ID\") }}"
            f"os{index}.{{{{ .Name | lower }}}}={{{{ .Value }}}}\n{{{{ end }}}}{{{{ end }}}}"),
            "labelsTemplate": (
                "{{ range .kernel.version }}{{ if eq .Name \"major\" }}"
                f"k{index}.major={{{{ .Value }}}}{{{{ else }}}}k{index}.{{{{ .Name }}}}="
                "{{ .Value | trunc 20 }}{{ end }}\n{{ end }}"),
            "matchFeatures": [
                {"feature": "system.osrelease", "matchName": {"op": "In",
                                                              "value": ["ID", "VERSION_ID"]}},
                {"feature": "kernel.version", "matchName": {"op": "InRegexp",
                                                            "value": ["^ma", "^mi"]}}]})
    for index in range(5):  # flags over matchAny groups, with index for absent keys
        rules.append({"name": f"tmpl-any-{index}", "labelsTemplate": (
            "{{ range index . \"kernel\" \"loadedmodule\" }}"
            f"m{index}.{{{{ .Name }}}}=true\n{{{{ end }}}}"
            "{{ with index . \"pci\" \"device\" }}"
            f"nics{index}={{{{ len . }}}}{{{{ end }}}}\n"),
            "matchAny": [
                {"matchFeatures": [{"feature": "kernel.loadedmodule", "matchName": {
                    "op": "InRegexp", "value": ["^(nvidia|mlx5|ib_)"]}}]},
                {"matchFeatures": [{"feature": "pci.device", "matchExpressions": {
                    "vendor": ["15b3"]}}]}]})
    for index in range(5):  # over the labels and vars of the rules before
        rules.append({"name": f"tmpl-chain-{index}", "labelsTemplate": (
            "{{ $n := 0 }}{{ range .rule.matched }}{{ if hasPrefix \"t0.dev\" .Name }}"
            "{{ $n = add $n 1 }}{{ end }}{{ end }}"
            f"chain{index}.devices={{{{ $n }}}}\n"),
            "matchFeatures": [{"feature": "rule.matched", "matchName": {
                "op": "InRegexp", "value": ["^t0\\."]}}]})
    assert len(rules) == 20
    return rules


def cpu_us(passes: int, run: Callable[[], object]) -> list[float]:
    for _ in range(WARM_UP):
        run()
    samples = []
    for _ in range(passes):
        started = time.thread_time_ns()
        run()
        samples.append((time.thread_time_ns() - started) / 1000)
    return sorted(samples)


def report(name: str, samples: list[float], budget_us: float | None) -> None:
    mean = statistics.fmean(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    if budget_us is None:
        verdict = "no budget"
    else:
        verdict = f"budget {budget_us:.0f} us: " + ("ok" if mean <= budget_us else "OVER BUDGET")
    print(f"{name:<34} {mean:>9.1f} {statistics.median(samples):>10.1f} {p99:>8.1f}"
          f"   {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=500)
    args = parser.parse_args()

    sources, _ = load_sources()
    others = {n: s for n, s in sources.items() if n != "custom"}
    host = replay_host(FIXTURE)
    config = build({}, sources)
    results = run_pass(host, others, build({}, others)).results
    custom = CustomSource()
    run_source(host, custom, config, others=tuple(results))
    pci = next(r for r in results if r.name == "pci")
    devices = [i.attributes for i in pci.features.instances["device"]]

    def features() -> FeatureSet:
        feature_set = FeatureSet.from_results(results)
        feature_set.set_instances("pci.device", devices)
        feature_set.set_flags("kernel.loadedmodule", MODULES)
        return feature_set

    started = time.thread_time_ns()
    parsed, problems = parse_rules(realistic_rules(), "bench")
    parse_ms = (time.thread_time_ns() - started) / 1e6
    assert not problems, problems
    rules: list[Rule] = [*BUILTIN_RULES, *parsed]
    templated, problems = parse_rules(template_rules(), "bench")
    assert not problems, problems
    with_templates = [*rules, *templated]
    template_outcomes = engine.run(with_templates, features())[len(rules):]
    errors = [o.error for o in template_outcomes if o.error]
    assert not errors, errors
    assert all(o.matched and (o.labels or o.vars) for o in template_outcomes)
    outcomes = engine.run(rules, features())
    matched = sum(o.matched for o in outcomes)
    errors = [o.error for o in outcomes if o.error]
    assert not errors, errors
    print(f"dgx-h100: {len(devices)} PCI devices, {len(rules)} rules "
          f"({matched} match), parsed once in {parse_ms:.1f} ms")
    print(f"{'per pass (CPU)':<34} {'mean us':>9} {'median us':>10} {'p99 us':>8}")
    report("100 rules + built-ins (engine)", cpu_us(args.passes,
                                                    lambda: engine.run(rules, features())), 5000)
    # `rules test` explains every miss; the agent's pass above never does.
    report("100 rules, misses explained", cpu_us(
        args.passes, lambda: explain.run(rules, features())), None)
    report("+ 20 template rules (engine)", cpu_us(
        args.passes, lambda: engine.run(with_templates, features())), 5000)
    from nodefeatures.discovery.rules import gotemplate

    def first_pass() -> None:
        gotemplate.forget_expansions()  # every template runs, as on a pass after a change
        engine.run(with_templates, features())

    report("+ 20 template rules, first pass", cpu_us(args.passes, first_pass), 5000)
    report("built-ins only (engine)", cpu_us(args.passes,
                                             lambda: engine.run(BUILTIN_RULES, features())), 200)
    report("custom source, built-ins", cpu_us(
        args.passes, lambda: run_source(host, custom, config, others=tuple(results))), 200)


if __name__ == "__main__":
    main()
