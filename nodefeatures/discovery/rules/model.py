"""Rules as NFD writes them (`nfd.k8s-sigs.io/v1alpha1` Rule), parsed and validated.

Parsing never raises on bad input: every problem comes back with its path inside the
document (`[2].matchFeatures[0].matchExpressions.vendor.op`), so a user can find it.
The short forms nfd-worker's config accepts are read too: a list of element names
(`[ib_uverbs, rdma_ucm]` means each Exists, `vendor=15b3` means In), a bare value or
list for In, and null for Exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodefeatures.discovery.rules.expressions import EXISTS, IN, MatchExpression
from nodefeatures.discovery.text import plain, quote

RULE_FIELDS = ("name", "labels", "labelsTemplate", "vars", "varsTemplate", "annotations",
               "taints", "extendedResources", "matchFeatures", "matchAny")
TERM_FIELDS = ("feature", "matchExpressions", "matchName")
EXPRESSION_FIELDS = ("op", "value", "type")
TAINT_FIELDS = ("key", "value", "effect")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_MESSAGE_LIMIT = 400
_SEP = "\x1f"  # between a problem's path and its message while collecting


@dataclass(frozen=True)
class FeatureTerm:
    """Requirements on one feature (`pci.device`); all must hold."""

    feature: str
    # None when the term has no matchExpressions at all (then only presence counts).
    expressions: Mapping[str, MatchExpression] | None = None
    match_name: MatchExpression | None = None


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class Rule:
    """One rule: what to match and what to produce when it matches."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, str] = field(default_factory=dict)
    labels_template: str = ""
    vars_template: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    extended_resources: Mapping[str, str] = field(default_factory=dict)
    match_features: tuple[FeatureTerm, ...] = ()
    match_any: tuple[tuple[FeatureTerm, ...], ...] = ()
    origin: str = ""  # where the rule was read: "built-in", a config key, a file


@dataclass(frozen=True)
class Problem:
    """Something wrong in a rule document, at `path`."""

    path: str
    message: str
    rule: str = ""  # the rule's name, when it has one

    def __str__(self) -> str:
        # Paths hold the file's own keys and messages its values: one bounded line each.
        named = f" (rule {quote(self.rule)})" if self.rule else ""
        where = f"{plain(self.path) if self.path else ''}{named}"
        message = " ".join(self.message.split())
        if len(message) > _MESSAGE_LIMIT:
            message = f"{message[:_MESSAGE_LIMIT]}... ({len(message)} characters)"
        return f"{where}: {message}" if where else message


def parse_rules(data: Any, path: str = "", origin: str = "") -> tuple[list[Rule], list[Problem]]:
    """A list of rules; the rules that parsed and every problem found."""
    if not isinstance(data, list):
        return [], [Problem(path, f"must be a list of rules, not {kind_of(data)}")]
    rules: list[Rule] = []
    problems: list[Problem] = []
    for index, item in enumerate(data):
        rule, found = parse_rule(item, f"{path}[{index}]", origin)
        problems += found
        if rule is not None and not found:
            rules.append(rule)
    return rules, problems


def parse_rule(data: Any, path: str, origin: str = "") -> tuple[Rule | None, list[Problem]]:
    """One rule; None with problems when it cannot be used."""
    problems: list[str] = []  # "subpath: message"
    if not isinstance(data, Mapping):
        return None, [Problem(path, f"a rule must be a mapping, not {kind_of(data)}")]
    name = data.get("name")
    shown = name if isinstance(name, str) else ""
    for key in data:
        if key not in RULE_FIELDS:
            problems.append(f".{key}{_SEP}unknown field (expected {', '.join(RULE_FIELDS)})")
    if not isinstance(name, str) or not name:
        problems.append(f".name{_SEP}required, a non-empty string")
    labels = _string_map(data.get("labels"), ".labels", problems)
    variables = _string_map(data.get("vars"), ".vars", problems)
    annotations = _string_map(data.get("annotations"), ".annotations", problems)
    resources = _string_map(data.get("extendedResources"), ".extendedResources", problems)
    labels_template = _string(data.get("labelsTemplate"), ".labelsTemplate", problems)
    vars_template = _string(data.get("varsTemplate"), ".varsTemplate", problems)
    for where, source in ((".labelsTemplate", labels_template),
                          (".varsTemplate", vars_template)):
        problem = template_problem(source)
        if problem:
            problems.append(f"{where}{_SEP}{problem}")
    taints = _taints(data.get("taints"), problems)
    match_features = _terms(data.get("matchFeatures"), ".matchFeatures", problems)
    match_any: list[tuple[FeatureTerm, ...]] = []
    raw_any = data.get("matchAny")
    if raw_any is not None:
        if not isinstance(raw_any, list):
            problems.append(f".matchAny{_SEP}must be a list, not {kind_of(raw_any)}")
        else:
            for index, element in enumerate(raw_any):
                where = f".matchAny[{index}]"
                if not isinstance(element, Mapping):
                    problems.append(f"{where}{_SEP}must be a mapping, not {kind_of(element)}")
                    continue
                for key in element:
                    if key != "matchFeatures":
                        problems.append(
                            f"{where}.{key}{_SEP}unknown field (expected matchFeatures)")
                match_any.append(_terms(element.get("matchFeatures"),
                                        f"{where}.matchFeatures", problems))
    found = [Problem(path + p.partition(_SEP)[0], p.partition(_SEP)[2], shown) for p in problems]
    if found:
        return None, found
    rule = Rule(name=shown, labels=labels, vars=variables, labels_template=labels_template,
                vars_template=vars_template, annotations=annotations, taints=taints,
                extended_resources=resources, match_features=match_features,
                match_any=tuple(match_any), origin=origin)
    return rule, []


def _terms(data: Any, where: str, problems: list[str]) -> tuple[FeatureTerm, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        problems.append(f"{where}{_SEP}must be a list, not {kind_of(data)}")
        return ()
    terms = []
    for index, item in enumerate(data):
        path = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{path}{_SEP}must be a mapping, not {kind_of(item)}")
            continue
        for key in item:
            if key not in TERM_FIELDS:
                problems.append(
                    f"{path}.{key}{_SEP}unknown field (expected {', '.join(TERM_FIELDS)})")
        feature = item.get("feature")
        if not isinstance(feature, str) or not feature:
            problems.append(f"{path}.feature{_SEP}required, a feature name such as pci.device")
            feature = ""
        expressions = None
        if "matchExpressions" in item and item["matchExpressions"] is not None:
            expressions = _expression_set(item["matchExpressions"], f"{path}.matchExpressions",
                                          problems)
        match_name = None
        if item.get("matchName") is not None:
            match_name = _expression(item["matchName"], f"{path}.matchName", problems)
        terms.append(FeatureTerm(feature, expressions, match_name))
    return tuple(terms)


def _expression_set(data: Any, where: str, problems: list[str]) -> dict[str, MatchExpression]:
    result: dict[str, MatchExpression] = {}
    if isinstance(data, list):
        for index, item in enumerate(data):
            if not isinstance(item, str):
                problems.append(f"{where}[{index}]{_SEP}must be a name or name=value, "
                                f"not {kind_of(item)}")
                continue
            name, eq, value = item.partition("=")
            result[name] = MatchExpression(IN, (value,)) if eq else MatchExpression(EXISTS)
        return result
    if not isinstance(data, Mapping):
        problems.append(f"{where}{_SEP}must be a mapping of element names, not {kind_of(data)}")
        return result
    for name, item in data.items():
        if not isinstance(name, str):
            problems.append(f"{where}{_SEP}element name {name!r} must be a string")
            continue
        expression = _expression(item, f"{where}.{name}", problems)
        if expression is not None:
            result[name] = expression
    return result


def _expression(data: Any, where: str, problems: list[str]) -> MatchExpression | None:
    if data is None:
        return MatchExpression(EXISTS)
    if isinstance(data, Mapping):
        for key in data:
            if key not in EXPRESSION_FIELDS:
                problems.append(f"{where}.{key}{_SEP}unknown field (expected op, value, type)")
        op = data.get("op", "")
        if not isinstance(op, str):
            problems.append(f"{where}.op{_SEP}must be a string, not {kind_of(op)}")
            return None
        values = _values(data.get("value"), f"{where}.value", problems)
        kind = data.get("type", "")
        if not isinstance(kind, str):
            problems.append(f"{where}.type{_SEP}must be a string, not {kind_of(kind)}")
            return None
        if values is None:
            return None
        expression = MatchExpression(op, values, kind)
    else:
        values = _values(data, where, problems)
        if values is None:
            return None
        expression = MatchExpression(IN, values)
    problem = expression.problem()
    if problem:
        suffix = ".op" if problem.startswith("unknown operator") else ""
        if problem.startswith("type"):
            suffix = ".type"
        elif not suffix and isinstance(data, Mapping) and "value" in data:
            suffix = ".value"
        problems.append(f"{where}{suffix}{_SEP}{problem}")
        return None
    return expression.compiled()


def _values(data: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if data is None:
        return ()
    if isinstance(data, list):
        if not all(isinstance(v, str) for v in data):
            bad = next(v for v in data if not isinstance(v, str))
            problems.append(
                f"{where}{_SEP}every value must be a string, not {kind_of(bad)} ({bad!r})")
            return None
        return tuple(data)
    scalar = _scalar(data)
    if scalar is None:
        problems.append(f"{where}{_SEP}must be a string or a list of strings, not {kind_of(data)}")
        return None
    return (scalar,)


def _scalar(value: Any) -> str | None:
    """A YAML scalar as the string NFD makes of it (true -> 'true', 1.50 -> '1.5')."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        from decimal import Decimal  # only for the rare float value

        return format(Decimal(repr(value)).normalize(), "f")
    return None


def template_problem(source: str) -> str | None:
    """Why a labelsTemplate / varsTemplate does not parse, or None."""
    if not source:
        return None
    # Imported here: only a rule with a template pays for loading the evaluator.
    from nodefeatures.discovery.rules import gotemplate

    try:
        gotemplate.parse(source)
    except gotemplate.TemplateError as exc:
        return f"template does not parse: {exc}"
    return None


def _string(value: Any, where: str, problems: list[str]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"{where}{_SEP}must be a string, not {kind_of(value)}")
        return ""
    return value


def _string_map(value: Any, where: str, problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{where}{_SEP}must be a mapping of strings, not {kind_of(value)}")
        return {}
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            problems.append(f"{where}.{key}{_SEP}keys and values must be strings "
                            f"(quote {item!r})")
            continue
        result[key] = item
    return result


def _taints(value: Any, problems: list[str]) -> tuple[Taint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f".taints{_SEP}must be a list, not {kind_of(value)}")
        return ()
    taints = []
    for index, item in enumerate(value):
        where = f".taints[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}{_SEP}must be a mapping, not {kind_of(item)}")
            continue
        for key in item:
            if key not in TAINT_FIELDS:
                problems.append(f"{where}.{key}{_SEP}unknown field (expected key, value, effect)")
        key, val, effect = (item.get(k, "") for k in TAINT_FIELDS)
        if not isinstance(key, str) or not key:
            problems.append(f"{where}.key{_SEP}required, a string")
            continue
        if not isinstance(val, str):
            problems.append(f"{where}.value{_SEP}must be a string")
            continue
        if effect not in TAINT_EFFECTS:
            problems.append(f"{where}.effect{_SEP}must be one of {', '.join(TAINT_EFFECTS)}")
            continue
        taints.append(Taint(key, val, effect))
    return tuple(taints)


def kind_of(value: Any) -> str:
    """What a YAML value is, as a message names it (`a list`, `a number` ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
