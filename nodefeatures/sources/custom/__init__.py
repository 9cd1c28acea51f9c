"""custom: labels from rules (NFD's `custom` source), matched against raw features.

Rules come, in this order, from NFD's two built-in rules (`rdma.capable`,
`rdma.available`), `sources.custom` in the config file (nfd-worker's format: a list of
rules) and every file of the `custom.d` directories. Later rules see earlier ones
through `rule.matched`. Label names are used as written; a name without a prefix gets
`feature.node.kubernetes.io/` (no `custom-` part, as nfd-worker names them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodefeatures.discovery.labels import DEFAULT_PREFIX, Label
from nodefeatures.discovery.rules import engine
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import Rule, parse_rules
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source
from nodefeatures.discovery.text import quote
from nodefeatures.sources.custom import files, host
from nodefeatures.sources.custom.builtin import BUILTIN_RULES
from nodefeatures.sources.local import denied_namespace

LABELS = "label"  # the feature that carries rule labels from discover() to labels()


class CustomSource(Source):
    name = "custom"
    priority = 10  # as NFD: above the built-in sources (0), below local (20)
    uses_features = True
    description = "labels from rules (NFD custom rules: built-in, config, custom.d)"
    catalogue = (
        LabelDoc("rdma.capable", "true",
                 "built-in rule: a PCI device of vendor `15b3` (Mellanox/NVIDIA networking) "
                 "in /sys/bus/pci/devices, any class",
                 "NFD's docs call it `custom-rdma.capable`; nfd-worker v0.19.0 publishes "
                 "`feature.node.kubernetes.io/rdma.capable`, and so do we"),
        LabelDoc("rdma.available", "true",
                 "built-in rule: kernel modules `ib_uverbs` and `rdma_ucm` in /proc/modules",
                 "NFD's docs call it `custom-rdma.available`; nfd-worker v0.19.0 publishes "
                 "`feature.node.kubernetes.io/rdma.available`, and so do we"),
        LabelDoc("<label>", "as the rule says",
                 "a label of a rule in `sources.custom` or a `custom.d` file that matched; "
                 "a name with a prefix (`vendor.io/x`) is used as written (docs/rules.md)"),
    )

    def default_config(self) -> Any:
        return []  # nfd-worker's format: a list of rules

    def build_options(self, given: Any) -> tuple[dict[str, Any], list[str]]:
        if given is None:
            return {"rules": []}, []
        rules, problems = parse_rules(given, origin="config sources.custom")
        return {"rules": rules}, [str(p) if p.path else f": {p.message}" for p in problems]

    def discover(self, ctx: Context) -> Features:
        features = FeatureSet.from_results(ctx.others)
        _provide_host_features(ctx, features)
        rules: list[Rule] = [*BUILTIN_RULES, *ctx.options.get("rules", ())]
        loaded = files.load(ctx)
        for shown, problem in loaded.problems:
            ctx.warn(f"{shown}: {problem}; the rules of this file are skipped")
            ctx.complete = False
        rules += loaded.rules
        result = Features()
        outcomes = engine.run(rules, features)
        asked = {name.partition(".")[0] for name in features.asked()}
        for other in ctx.others:
            if other.name in asked and (other.error is not None or not other.complete):
                # Rules over features that may be missing prove nothing about absence.
                ctx.complete = False
        for outcome in outcomes:
            rule = outcome.rule
            if outcome.error is not None:
                ctx.warn(f"rule {quote(rule.name)} ({rule.origin}) cannot be evaluated: "
                         f"{outcome.error}")
                ctx.complete = False
                continue
            for key, problem in outcome.dropped.items():
                ctx.warn(f"rule {quote(rule.name)}: label {quote(key)} dropped: {problem}")
            if outcome.matched and (rule.annotations or rule.taints
                                    or rule.extended_resources):
                ctx.warn(f"rule {quote(rule.name)}: annotations, taints and extendedResources "
                         "are not published (only labels are)")
            why = _explain(outcome)
            for key, value in outcome.labels.items():
                if denied_namespace(self.qualify(key)):
                    ctx.warn(f"rule {quote(rule.name)}: label {quote(key)} dropped: the "
                             "kubernetes.io namespaces are refused (as nfd-master refuses them)")
                    continue
                result.attribute(LABELS, key, value, why)
        return result

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        produced = features.attributes.get(LABELS, {})
        return [
            Label(key, fact.value, fact.origin)
            for key, fact in produced.items()
            # As nfd-master: a prefixed key wins over the same name given without one.
            if "/" in key or self.qualify(key) not in produced
        ]

    def qualify(self, name: str) -> str:
        return name if "/" in name else f"{DEFAULT_PREFIX}/{name}"


def _provide_host_features(ctx: Context, features: FeatureSet) -> None:
    """Features rules need that other sources do not expose (yet), read on demand."""
    kernel = next((r.features for r in ctx.others if r.name == "kernel" and r.features), None)
    pci_source = next((r for r in ctx.others if r.name == "pci" and r.features), None)

    def pci(into: FeatureSet) -> None:
        known = {}
        if pci_source is not None and pci_source.complete and pci_source.error is None:
            known = {i.origin: i.attributes
                     for i in pci_source.features.instances.get("device", ())}
        into.set_instances("pci.device", host.pci_devices(ctx, known))

    loaded: list[list[str] | None] = []

    def loaded_modules() -> list[str] | None:
        if not loaded:
            loaded.append(host.loaded_modules(ctx))
        return loaded[0]

    def loadedmodule(into: FeatureSet) -> None:
        modules = loaded_modules()
        if modules is not None:
            into.set_flags("kernel.loadedmodule", modules)

    def enabledmodule(into: FeatureSet) -> None:
        modules, builtin = loaded_modules(), host.builtin_modules(ctx)
        if modules is not None or builtin is not None:
            into.set_flags("kernel.enabledmodule", [*(modules or ()), *(builtin or ())])

    # The pci source keeps only the classes it labels; rules need every device.
    features.provide("pci.device", pci)
    for name, provider in (("loadedmodule", loadedmodule), ("enabledmodule", enabledmodule)):
        if kernel is None or name not in kernel.flags:
            features.provide(f"kernel.{name}", provider)


def _explain(outcome: engine.Outcome) -> str:
    """`rule 'name': pci.device vendor=15b3` - the rule and what it matched."""
    parts = []
    for feature, elements in outcome.elements.items():
        for element in elements[:3]:
            if engine.NAME in element:
                shown = element[engine.NAME]
                if engine.VALUE in element:
                    shown += f"={element[engine.VALUE]}"
            else:
                shown = ",".join(f"{k}={v}" for k, v in sorted(element.items()))
            parts.append(f"{feature} {shown}")
        if len(elements) > 3:
            parts.append(f"{feature} (+{len(elements) - 3} more)")
    matched = "; ".join(parts) if parts else "no match expressions"
    return f"rule {quote(outcome.rule.name)} ({outcome.rule.origin}): {matched}"
