"""Evaluating rules in order over a feature set, with NFD's matching semantics.

- A rule matches when every term of `matchFeatures` matches and, if it has `matchAny`,
  at least one of those groups matches in full; a rule with neither always matches.
- A term on a feature that does not exist fails, whatever its expressions say (even
  DoesNotExist): NFD cannot tell "no such element" from "no such feature" otherwise.
- On flags and attributes each expression looks at the element of its name; a flag has
  no value, so only Exists and DoesNotExist can match one.
- On instances (PCI devices ...) all expressions are evaluated against each instance
  separately; the term matches when at least one instance satisfies all of them.
- `matchName` matches element names rather than values.
- After each rule, its labels and vars become attributes of the `rule.matched`
  feature, so later rules can build on earlier ones.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from nodefeatures.discovery.rules.expressions import (
    DOES_NOT_EXIST,
    EvaluationError,
    MatchExpression,
)
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import FeatureTerm, Rule
from nodefeatures.discovery.text import excerpt

RULE_MATCHED = "rule.matched"
NAME, VALUE = "Name", "Value"  # keys of a matched flag or attribute element, as in NFD

Element = Mapping[str, str]


@dataclass
class Outcome:
    """What one rule did in one pass."""

    rule: Rule
    matched: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    # The elements that made it match, by feature name, for explanations.
    elements: dict[str, list[Element]] = field(default_factory=dict)
    error: str | None = None  # set when the rule could not be evaluated
    # Labels whose `@feature.element` value could not be resolved, with the reason.
    dropped: dict[str, str] = field(default_factory=dict)


def run(rules: Iterable[Rule], features: FeatureSet) -> list[Outcome]:
    """Evaluate rules in order; each sees the labels and vars of the rules before it."""
    outcomes = []
    for rule in rules:
        outcome = evaluate(rule, features)
        outcomes.append(outcome)
        if outcome.error is None:
            # Written as the rule wrote them (unresolved, unprefixed), as NFD does.
            features.update_attributes(RULE_MATCHED, {**rule.labels, **rule.vars}
                                       if outcome.matched else {})
    return outcomes


def evaluate(rule: Rule, features: FeatureSet) -> Outcome:
    """One rule against the features; never raises for a bad rule or odd values."""
    outcome = Outcome(rule)
    try:
        if rule.match_any:
            for group in rule.match_any:
                ok, elements = match_terms(group, features)
                if ok:
                    _merge(outcome.elements, elements)
                    break
            else:
                return outcome
        if rule.match_features:
            ok, elements = match_terms(rule.match_features, features)
            if not ok:
                outcome.elements.clear()
                return outcome
            _merge(outcome.elements, elements)
    except EvaluationError as exc:
        outcome.elements.clear()
        outcome.error = str(exc)
        return outcome
    if rule.labels_template or rule.vars_template:
        # NFD expands templates only for a rule that matched; so does this error.
        outcome.elements.clear()
        outcome.error = "labelsTemplate and varsTemplate are not supported yet"
        return outcome
    outcome.matched = True
    outcome.vars = dict(rule.vars)
    for key, value in rule.labels.items():
        if value.startswith("@"):
            resolved, problem = backreference(value, features)
            if problem:
                outcome.dropped[key] = problem
                continue
            value = resolved
        outcome.labels[key] = value
    return outcome


def backreference(value: str, features: FeatureSet) -> tuple[str, str | None]:
    """The attribute an `@domain.feature.element` value names, or a reason it has none."""
    parts = value[1:].split(".", 2)
    if len(parts) != 3:
        return "", f"value {excerpt(value)} is not of the form @domain.feature.element"
    feature, element = f"{parts[0]}.{parts[1]}", parts[2]
    attributes = features.attributes(feature)
    if attributes is None:
        return "", f"value {excerpt(value)}: no attribute feature {excerpt(feature)}"
    if element not in attributes:
        return "", (f"value {excerpt(value)}: feature {excerpt(feature)} has no element "
                    f"{excerpt(element)}")
    return attributes[element], None


def match_terms(terms: Iterable[FeatureTerm], features: FeatureSet
                ) -> tuple[bool, dict[str, list[Element]]]:
    """All terms must match (logical AND); the elements each matched."""
    matched: dict[str, list[Element]] = {}
    for term in terms:
        ok, elements = match_term(term, features)
        if not ok:
            return False, {}
        matched.setdefault(term.feature.lower(), []).extend(elements)
    return True, matched


def match_term(term: FeatureTerm, features: FeatureSet) -> tuple[bool, list[Element]]:
    name = term.feature.lower()  # NFD ignores the case of feature names
    flags = features.flags(name)
    attributes = features.attributes(name)
    instances = features.instances(name)
    if flags is None and attributes is None and instances is None:
        return False, []
    ok, elements = True, []
    if term.expressions is not None:
        ok, elements = match_expressions(term.expressions, flags, attributes, instances)
    if ok and term.match_name is not None:
        ok, named = match_names(term.match_name, flags, attributes, instances)
        elements = elements + named
    return ok, elements


def match_expressions(
    expressions: Mapping[str, MatchExpression],
    flags: Collection[str] | None,
    attributes: Mapping[str, str] | None,
    instances: list[Mapping[str, str]] | None,
) -> tuple[bool, list[Element]]:
    """An expression set against one feature's flags, attributes and instances.

    Flags and attributes count together: an expression holds when it holds on either,
    except DoesNotExist, which must hold on both. Instances are matched on their own.
    """
    elements: list[Element] = []
    ok = flags is not None or attributes is not None
    for name, expression in expressions.items():
        on_flag = on_attribute = False
        if flags is not None:
            on_flag = expression.matches(name in flags, None)
            if on_flag:
                elements.append({NAME: name})
            elif expression.op == DOES_NOT_EXIST:
                ok = False
                break
        if attributes is not None:
            present = name in attributes
            on_attribute = expression.matches(present, attributes.get(name))
            if on_attribute:
                elements.append({NAME: name, VALUE: attributes.get(name, "")})
            elif expression.op == DOES_NOT_EXIST:
                ok = False
                break
        if not on_flag and not on_attribute:
            ok = False
            break
    if not ok:
        elements = []
    elements.sort(key=lambda e: e[NAME])
    matching = [i for i in instances or () if _instance_matches(expressions, i)]
    return ok or bool(matching), elements + [dict(i) for i in matching]


def _instance_matches(expressions: Mapping[str, MatchExpression],
                      instance: Mapping[str, str]) -> bool:
    for name, expression in expressions.items():
        if not expression.matches(name in instance, instance.get(name)):
            return False
    return True


def match_names(
    expression: MatchExpression,
    flags: Collection[str] | None,
    attributes: Mapping[str, str] | None,
    instances: list[Mapping[str, str]] | None,
) -> tuple[bool, list[Element]]:
    """`matchName`: the expression applied to every element name; any match counts."""
    named: list[Element] = [{NAME: k} for k in flags or () if expression.matches(True, k)]
    named += [{NAME: k, VALUE: v} for k, v in (attributes or {}).items()
              if expression.matches(True, k)]
    named.sort(key=lambda e: e[NAME])
    for instance in instances or ():
        # Every name is evaluated, so a name a comparison cannot read is always an error.
        hits = [expression.matches(True, k) for k in instance]
        if any(hits):
            named.append(dict(instance))
    return bool(named), named


def _merge(into: dict[str, list[Element]], more: Mapping[str, list[Element]]) -> None:
    for feature, elements in more.items():
        into.setdefault(feature, []).extend(elements)
