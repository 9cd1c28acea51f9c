"""Why a rule did not match: the first term, expression, element and value that failed.

The agent never explains (its pass would pay for it); `rules test` asks through
`engine.run(..., on_miss=why_not)`, which explains each missed rule against the features
as that rule saw them. The diagnosis re-evaluates with the engine's own functions, in the
engine's order, so it names what made the engine say no, not a second opinion:

- in `matchFeatures`, the first term that fails (the engine stops there too);
- for `matchAny`, the first failing term of every group (all groups failed);
- on flags and attributes, the first expression of the term that fails, with the element
  it looked at and its value, or that the element is absent or a flag;
- on instances, the instance that got furthest through the expressions before one
  failed: the nearest miss, and how many instances there were.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from nodefeatures.discovery.rules import engine
from nodefeatures.discovery.rules.engine import Miss, Outcome
from nodefeatures.discovery.rules.expressions import (
    ANY,
    DOES_NOT_EXIST,
    EXISTS,
    EvaluationError,
    MatchExpression,
)
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import FeatureTerm, Rule


def run(rules: Iterable[Rule], features: FeatureSet) -> list[Outcome]:
    """The engine's pass over `rules`, with every miss explained."""
    return engine.run(rules, features, on_miss=why_not)


def why_not(rule: Rule, features: FeatureSet) -> tuple[Miss, ...]:
    """What failed in a rule that did not match; () when it would match now."""
    try:
        if rule.match_any:
            groups = []
            for index, group in enumerate(rule.match_any):
                ok, _ = engine.match_terms(group, features)
                if ok:
                    break
                miss = first_miss(group, f"matchAny[{index}].matchFeatures", features)
                if miss is not None:
                    groups.append(miss)
            else:
                return tuple(groups)
        if rule.match_features:
            miss = first_miss(rule.match_features, "matchFeatures", features)
            if miss is not None:
                return (miss,)
    except EvaluationError as exc:  # the engine would have reported it; never crash here
        return (Miss("", "", f"cannot be evaluated: {exc}"),)
    return ()


def first_miss(terms: Iterable[FeatureTerm], where: str, features: FeatureSet) -> Miss | None:
    for index, term in enumerate(terms):
        ok, _ = engine.match_term(term, features)
        if not ok:
            return term_miss(term, f"{where}[{index}]", features)
    return None


def term_miss(term: FeatureTerm, where: str, features: FeatureSet) -> Miss:
    name = term.feature.lower()
    flags, attributes = features.flags(name), features.attributes(name)
    instances = features.instances(name)
    if flags is None and attributes is None and instances is None:
        return Miss(where, term.feature,
                    f"feature {term.feature} does not exist here, so the term fails "
                    "whatever its expressions say")
    if term.expressions is not None:
        ok, _ = engine.match_expressions(term.expressions, flags, attributes, instances)
        if not ok:
            return expressions_miss(where, term.feature, term.expressions, flags, attributes,
                                    instances)
    shown = "matchName " + render("", term.match_name or MatchExpression(ANY))
    names = sorted([*(flags or ()), *(attributes or {})])
    if instances:
        names = sorted({k for instance in instances for k in instance})
    sample = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    return Miss(where, term.feature,
                f"{shown}: no element name of {term.feature} matches"
                + (f" (names: {sample})" if names else " (it has no elements)"),
                expression=shown)


def expressions_miss(
    where: str,
    feature: str,
    expressions: Mapping[str, MatchExpression],
    flags: Collection[str] | None,
    attributes: Mapping[str, str] | None,
    instances: list[Mapping[str, str]] | None,
) -> Miss:
    if flags is not None or attributes is not None:
        for name, expression in expressions.items():
            on_flag = flags is not None and expression.matches(name in flags, None)
            on_attribute = attributes is not None and expression.matches(
                name in attributes, attributes.get(name))
            # As engine.match_expressions: either kind will do, except that DoesNotExist
            # must hold on every kind the feature has.
            failed = not (on_flag or on_attribute) or (expression.op == DOES_NOT_EXIST and (
                (flags is not None and not on_flag)
                or (attributes is not None and not on_attribute)))
            if failed:
                return _element_miss(where, feature, name, expression, flags, attributes)
    if not instances:
        kind = "has no instances" if instances is not None else "has no such elements"
        return Miss(where, feature, f"{feature} {kind}")
    best: tuple[int, int, str] | None = None  # (expressions passed, instance index, name)
    for index, instance in enumerate(instances):
        passed = 0
        for name, expression in expressions.items():
            if not expression.matches(name in instance, instance.get(name)):
                break
            passed += 1
        else:
            continue  # cannot happen for a term that failed; nothing to blame here
        if best is None or passed > best[0]:
            best = (passed, index, name)
    if best is None:
        return Miss(where, feature, f"no instance of {feature} was found to fail")
    _, index, name = best
    instance = instances[index]
    expression = expressions[name]
    shown = render(name, expression)
    value = instance.get(name)
    looked = (f"{name} is {value!r}" if value is not None
              else f"it has no element {name!r}")
    count = len(instances)
    seen = sorted({i[name] for i in instances if name in i})
    values = ", ".join(repr(v) for v in seen[:_VALUES_SHOWN])
    if len(seen) > _VALUES_SHOWN:
        values += f" (+{len(seen) - _VALUES_SHOWN} more)"
    values = f"; {name} values there: {values}" if seen else f"; no instance has {name!r}"
    return Miss(where, feature,
                f"none of the {count} instance{'s' if count != 1 else ''} of {feature} "
                f"matches; nearest, #{index} ({_identify(instance, expressions)}): "
                f"{shown} fails: {looked}{values}",
                expression=shown, element=name, value=value, present=value is not None)


_VALUES_SHOWN = 8


def _element_miss(where: str, feature: str, name: str, expression: MatchExpression,
                  flags: Collection[str] | None, attributes: Mapping[str, str] | None
                  ) -> Miss:
    shown = render(name, expression)
    value = attributes.get(name) if attributes is not None else None
    is_flag = flags is not None and name in flags
    present = value is not None or is_flag
    if expression.op == DOES_NOT_EXIST:
        looked = f"{name} exists" + (f" ({name}={value!r})" if value is not None else "")
    elif value is not None:
        looked = f"{name} is {value!r}"
    elif is_flag:
        looked = f"{name} is a flag, which has no value (only Exists/DoesNotExist match one)"
    else:
        looked = f"{feature} has no element {name!r}"
        if expression.op != EXISTS:
            looked += " (an absent element matches nothing but DoesNotExist)"
    return Miss(where, feature, f"{shown} fails: {looked}", expression=shown, element=name,
                value=value, present=present)


def _identify(instance: Mapping[str, str], expressions: Mapping[str, MatchExpression]) -> str:
    """The instance's elements the expressions look at, so a user can tell which it is."""
    shown = [f"{k}={instance[k]}" for k in expressions if k in instance]
    return ", ".join(shown) if shown else "none of the named elements"


def render(name: str, expression: MatchExpression) -> str:
    """An expression as a user wrote it: `vendor In [1002]`, `full Ge [5.4] (version)`."""
    parts = [name] if name else []
    parts.append(expression.op or "(no op: anything)")
    if expression.values:
        parts.append("[" + ", ".join(expression.values) + "]")
    if expression.type:
        parts.append(f"({expression.type})")
    return " ".join(parts)

