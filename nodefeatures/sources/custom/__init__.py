"""custom: labels from rules (NFD's `custom` source), matched against raw features.

Rules come, in this order, from NFD's two built-in rules (`rdma.capable`,
`rdma.available`), `sources.custom` in the config file (nfd-worker's format: a list of
rules) and every file of the `custom.d` directories. Later rules see earlier ones
through `rule.matched`. Label names are used as written; a name without a prefix gets
`feature.node.kubernetes.io/` (no `custom-` part, as nfd-worker names them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nodefeatures.discovery.labels import DEFAULT_PREFIX, Label
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source
from nodefeatures.discovery.text import quote
from nodefeatures.sources.custom import files, static
from nodefeatures.sources.local import denied_namespace

if TYPE_CHECKING:
    from nodefeatures.discovery.rules import engine
    from nodefeatures.discovery.rules.features import FeatureSet
    from nodefeatures.discovery.rules.model import Rule

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
        from nodefeatures.discovery.rules.model import parse_rules

        rules, problems = parse_rules(given, origin="config sources.custom")
        # The rules as written stay beside the parsed ones, for `config --effective`.
        return ({"rules": rules, "written": given},
                [str(p) if p.path else f": {p.message}" for p in problems])

    def config_of(self, options: Mapping[str, Any]) -> Any:
        return options.get("written", [])

    def discover(self, ctx: Context) -> Features:
        configured: list[Rule] = list(ctx.options.get("rules", ()))
        loaded = files.load(ctx)
        for shown, problem in loaded.problems:
            ctx.warn(f"{shown}: {problem}; the rules of this file are skipped")
            ctx.complete = False
        configured += loaded.rules
        result = Features()
        if not configured:
            # The usual node: NFD's two static rules alone, checked without the engine.
            if static.incomplete(ctx.others):
                ctx.complete = False
            for key, value, why in static.evaluate(ctx.others):
                result.attribute(LABELS, key, value, why)
            return result
        from nodefeatures.discovery.rules import engine
        from nodefeatures.sources.custom.builtin import BUILTIN_RULES

        features = rule_features(ctx)
        rules = [*BUILTIN_RULES, *configured]
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
                written = rule.labels.get(key, "")
                # A value copied from a feature says which one: the elements alone
                # would not tell a reader where `5` came from.
                result.attribute(LABELS, key, value, f"{why}; value from {written}"
                                 if written.startswith("@") else why)
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


def rule_features(ctx: Context) -> FeatureSet:
    """What rules match in this pass: the other sources' features (`ctx.others`).
    `rules test` matches the same set."""
    from nodefeatures.discovery.rules.features import FeatureSet

    return FeatureSet.from_results(ctx.others)


def _explain(outcome: engine.Outcome) -> str:
    """`rule 'name' (origin): pci.device vendor=15b3` - the rule and what it matched."""
    from nodefeatures.discovery.rules import engine

    parts = []
    elements = engine.matched_elements(outcome)
    for feature, text, count in elements[:_EXPLAINED]:
        parts.append(f"{feature} {text}" + (f" (x{count})" if count > 1 else ""))
    if len(elements) > _EXPLAINED:
        parts.append(f"(+{len(elements) - _EXPLAINED} more)")
    if parts:
        matched = "; ".join(parts)
    elif outcome.rule.match_features or outcome.rule.match_any:
        matched = "features present (the terms name no elements)"
    else:
        matched = "no match terms (always matches)"
    return f"rule {quote(outcome.rule.name)} ({outcome.rule.origin}): {matched}"


_EXPLAINED = 4  # elements shown per label; the rest are counted
