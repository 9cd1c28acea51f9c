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
- `labelsTemplate` / `varsTemplate` run over the elements each matcher matched
  (`gotemplate`, imported only for a rule that has a template).
- After each rule, its labels and vars (templated ones included) become attributes of
  the `rule.matched` feature, so later rules can build on earlier ones.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
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


@dataclass(frozen=True)
class Miss:
    """Why one list of terms did not match: the first thing that failed in it.

    Built only when asked (`rules test`, explain.py), never in an agent's pass.
    """

    where: str  # the failing term's path in the rule: "matchFeatures[1]"
    feature: str
    reason: str  # one sentence, with the element and value it looked at
    expression: str = ""  # the failing expression as written: "vendor In [1002]"
    element: str | None = None  # the element it looked at, None for the feature itself
    value: str | None = None  # that element's value; None when absent or a flag
    present: bool = False  # whether that element was there


@dataclass
class Outcome:
    """What one rule did in one pass."""

    rule: Rule
    matched: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    # The labels before `@feature.element` values are resolved (what rule.matched gets).
    raw_labels: dict[str, str] = field(default_factory=dict)
    # The elements that made it match, by feature name, for explanations.
    elements: dict[str, list[Element]] = field(default_factory=dict)
    error: str | None = None  # set when the rule could not be evaluated
    # Labels whose `@feature.element` value could not be resolved, with the reason.
    dropped: dict[str, str] = field(default_factory=dict)
    # Why a rule that could be evaluated did not match; filled only by `run(on_miss=...)`.
    misses: tuple[Miss, ...] = ()


MissExplainer = Callable[[Rule, FeatureSet], tuple[Miss, ...]]


def run(rules: Iterable[Rule], features: FeatureSet,
        on_miss: MissExplainer | None = None) -> list[Outcome]:
    """Evaluate rules in order; each sees the labels and vars of the rules before it.

    `on_miss` explains a rule that did not match, against the features as that rule saw
    them (before `rule.matched` changes); an agent's pass never pays for it.
    """
    outcomes = []
    for rule in rules:
        outcome = evaluate(rule, features)
        outcomes.append(outcome)
        if on_miss is not None and not outcome.matched and outcome.error is None:
            outcome.misses = on_miss(rule, features)
        if outcome.error is None:
            # Written as the rule produced them (unresolved, unprefixed), as NFD does.
            features.update_attributes(RULE_MATCHED, {**outcome.raw_labels, **outcome.vars}
                                       if outcome.matched else {})
    return outcomes


def evaluate(rule: Rule, features: FeatureSet) -> Outcome:
    """One rule against the features; never raises for a bad rule or odd values.

    Templates run as NFD runs them: once per matching `matchAny` group (every group is
    then evaluated, not only the first that matches) and once for `matchFeatures`, each
    over the elements that group matched; their labels and vars are merged, and the
    rule's own `labels` and `vars` override them.
    """
    outcome = Outcome(rule)
    templated = bool(rule.labels_template or rule.vars_template)
    labels: dict[str, str] = {}
    variables: dict[str, str] = {}
    try:
        if rule.match_any:
            any_matched = False
            for group in rule.match_any:
                ok, each = match_each_term(group, features)
                if ok:
                    any_matched = True
                    _merge(outcome.elements, _by_feature(each))
                    if not templated:
                        break
                    _expand_templates(rule, each, labels, variables)
            if not any_matched:
                outcome.elements.clear()
                return outcome
        if rule.match_features:
            ok, each = match_each_term(rule.match_features, features)
            if not ok:
                outcome.elements.clear()
                return outcome
            _merge(outcome.elements, _by_feature(each))
            if templated:
                _expand_templates(rule, each, labels, variables)
    except EvaluationError as exc:
        outcome.elements.clear()
        outcome.error = str(exc)
        return outcome
    outcome.matched = True
    outcome.vars = {**variables, **rule.vars}
    outcome.raw_labels = {**labels, **rule.labels}
    for key, value in outcome.raw_labels.items():
        if value.startswith("@"):
            resolved, problem = backreference(value, features)
            if problem:
                outcome.dropped[key] = problem
                continue
            value = resolved
        outcome.labels[key] = value
    return outcome


def _expand_templates(rule: Rule, each: list[tuple[FeatureTerm, list[Element]]],
                      labels: dict[str, str], variables: dict[str, str]) -> None:
    # Imported here: a pass whose rules have no template never loads the evaluator.
    from nodefeatures.discovery.rules import gotemplate

    terms = [(term.feature, elements) for term, elements in each]
    for field_name, source, into in (("labelsTemplate", rule.labels_template, labels),
                                     ("varsTemplate", rule.vars_template, variables)):
        if not source:
            continue
        try:
            into.update(gotemplate.expand_matched(source, terms))
        except gotemplate.TemplateError as exc:
            raise EvaluationError(f"{field_name}: {exc}") from None


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
    ok, each = match_each_term(terms, features)
    return ok, _by_feature(each)


def match_each_term(terms: Iterable[FeatureTerm], features: FeatureSet
                    ) -> tuple[bool, list[tuple[FeatureTerm, list[Element]]]]:
    """All terms must match (logical AND); each term with the elements it matched."""
    matched: list[tuple[FeatureTerm, list[Element]]] = []
    for term in terms:
        ok, elements = match_term(term, features)
        if not ok:
            return False, []
        matched.append((term, elements))
    return True, matched


def _by_feature(each: Iterable[tuple[FeatureTerm, list[Element]]]) -> dict[str, list[Element]]:
    matched: dict[str, list[Element]] = {}
    for term, elements in each:
        matched.setdefault(term.feature.lower(), []).extend(elements)
    return matched


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


def matched_elements(outcome: Outcome) -> list[tuple[str, str, int]]:
    """(feature, element as text, how many) for the elements that made a rule match.

    An instance shows only the elements the rule's expressions named (`vendor=15b3`),
    not its every attribute, so eight matching NICs read as one line counted 8; a term
    that names none (matchName, no expressions) shows the instance whole.
    """
    named = _named_elements(outcome.rule)
    shown: dict[tuple[str, str], int] = {}
    for feature, elements in outcome.elements.items():
        for element in elements:
            if NAME in element and set(element) <= {NAME, VALUE}:
                text = element[NAME]
                if VALUE in element:
                    text += f"={element[VALUE]}"
            else:
                keys = named.get(feature)
                items = sorted(element.items()) if keys is None else [
                    (k, element[k]) for k in keys if k in element]
                text = ",".join(f"{k}={v}" for k, v in items)
            shown[feature, text] = shown.get((feature, text), 0) + 1
    return [(feature, text, count) for (feature, text), count in shown.items()]


def _named_elements(rule: Rule) -> dict[str, list[str] | None]:
    """Feature -> element names its terms' expressions name; None: show elements whole."""
    named: dict[str, list[str] | None] = {}
    for terms in (rule.match_features, *rule.match_any):
        for term in terms:
            feature = term.feature.lower()
            if term.expressions is None or term.match_name is not None:
                named[feature] = None
            elif feature not in named or named[feature] is not None:
                keys = named.setdefault(feature, [])
                assert keys is not None
                keys.extend(k for k in term.expressions if k not in keys)
    return named
