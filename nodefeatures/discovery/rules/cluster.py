"""NodeFeatureRule objects (`nfd.k8s-sigs.io/v1alpha1`, cluster-scoped), evaluated on
this node as nfd-master's processNodeFeatureRule evaluates them.

- Objects by name, each object's rules in order, through the same engine as custom.d.
- One `rule.matched` for the pass: each rule's labels and vars (as written) join it, so
  a rule sees every rule before it, in its own object and in the objects before it. It
  starts as the features given hold it, which in nfd-master are the merged NodeFeature
  objects' features: neither the worker's custom rules nor an earlier pass reach it
  (`evaluate` puts it back as it found it).
- A label name without '/' gets `feature.node.kubernetes.io/` (a prefixed twin in the
  same rule wins); a later rule overrides an earlier one's key, a later object an
  earlier one's (`merged`). Invalid labels and namespaces the setting refuses are dropped
  with a problem.
- A matching rule's `annotations`, `taints` and `extendedResources` are its outputs
  beyond labels, checked as nfd-master checks them (`outputs`): annotation and resource
  names without '/' get `feature.node.kubernetes.io/`, taint keys must have a namespace;
  an annotation value holds at most 1024 characters, a resource a quantity (or an
  `@domain.feature.element` reference to one). Whether they are published is the
  setting's to say, not this module's.
- A rule that fails to evaluate is skipped (it adds nothing to `rule.matched`), as in
  nfd-master; the other rules still give their labels.
- An object that reads `rule.matched` after one that did not evaluate cleanly is not
  clean either: what it no longer gives may only be missing what the other would have
  put there.

The budget (`EvalBudget`) is CPU time of the evaluating thread (`time.thread_time`), so
a busy node does not fail cheap objects, plus a count of rules. An object larger than the
rules left is not started; otherwise it may spend at most half the time left when it
starts (the last object all of it): it stops before a rule that, as costly as its
costliest so far, would go over. One rule is never cut, but is bounded itself: template
steps (gotemplate.MAX_STEPS, about 0.1 s here) and regexps in linear time (linear.py).
So one hostile object leaves at least half the budget, less one rule, to the objects
after it. A cut object gives no labels, and the `rule.matched` of
its evaluated rules is taken back, so what follows does not depend on where it was cut.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nodefeatures.discovery import quantity
from nodefeatures.discovery.labels import DEFAULT_PREFIX, Label, checked, key_error, value_error
from nodefeatures.discovery.namespaces import (
    ANNOTATIONS,
    DEFAULT,
    EXTENDED_RESOURCES,
    OUTPUTS,
    TAINTS,
    LabelNamespaces,
    is_subdomain,
)
from nodefeatures.discovery.rules import engine
from nodefeatures.discovery.rules.documents import API_VERSION, KIND
from nodefeatures.discovery.rules.engine import RULE_MATCHED, backreference
from nodefeatures.discovery.rules.features import FeatureSet
from nodefeatures.discovery.rules.model import Rule, kind_of, parse_rule
from nodefeatures.discovery.text import excerpt, quote

MAX_RULES = 10_000  # per object: more is refused unparsed (a pass evaluates 5,000)
MAX_PROBLEMS = 20  # per object and pass, then a count
LOAD_SECONDS = 1.0  # CPU time to parse one object version (compiling regexps dominates)
MAX_ANNOTATION_VALUE = 1024  # bytes: nfd-master's FeatureAnnotationValueSizeLimit
_RULE_FIELD = {ANNOTATIONS: "annotations", TAINTS: "taints",
               EXTENDED_RESOURCES: "extended_resources"}


@dataclass(frozen=True)
class EvalBudget:
    """What one pass may spend on all NodeFeatureRule objects together."""

    seconds: float = 0.25  # CPU time of the evaluating thread
    rules: int = 5000


@dataclass(frozen=True)
class RuleObject:
    """One NodeFeatureRule, parsed once per version (the caller caches it by
    resourceVersion). When not `usable`, the caller keeps the labels the object gave
    before: a rule list that cannot be read proves nothing about the node."""

    name: str
    origin: str  # "nodefeaturerule/<name>"
    rules: tuple[Rule, ...]
    problems: tuple[str, ...]
    usable: bool


@dataclass
class ObjectOutcome:
    """What one object gave in one pass.

    `ok`: every rule was evaluated without error, so `labels` is the object's whole
    output and a label it gave before and not now may be removed. Otherwise `labels` holds
    what the rules that ran gave (nothing when the object was not evaluated) and the
    object's other previous labels stay."""

    name: str
    origin: str
    labels: dict[str, str] = field(default_factory=dict)  # full keys, valid, allowed
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    # The kinds of OUTPUTS its rules have, whether or not they matched.
    kinds: tuple[str, ...] = ()
    # {kind: {key: value}} of its matching rules, valid and in a namespace the fixed
    # rules allow. A taint's key is `<key>:<effect>` (a Node holds one taint per pair).
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)  # CPU time spent on it

    def items(self, kind: str) -> dict[str, str]:
        """What it gives of `kind` ("labels" or one of OUTPUTS)."""
        return self.labels if kind == "labels" else self.outputs.get(kind, {})


def load(obj: Mapping[str, Any]) -> RuleObject:
    """A NodeFeatureRule as the API server gave it; never raises."""
    if not isinstance(obj, Mapping):
        return RuleObject("", "nodefeaturerule/?", (), (
            f"a NodeFeatureRule must be a mapping, not {kind_of(obj)}",), False)
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not is_subdomain(name):
        shown = quote(name) if isinstance(name, str) else kind_of(name)
        return RuleObject("", "nodefeaturerule/?", (), (
            f"metadata.name must be an object name, not {shown}",), False)
    origin = f"nodefeaturerule/{name}"
    problems: list[str] = []
    for key, expected in (("kind", KIND), ("apiVersion", API_VERSION)):
        if key in obj and obj[key] != expected:
            problems.append(f"{key} must be {expected}, not {_shown(obj[key])}")
    spec = obj.get("spec")
    rules = spec.get("rules") if isinstance(spec, Mapping) else None
    parsed: list[Rule] = []
    if not isinstance(spec, Mapping):
        problems.append(f"spec: required, a mapping with rules, not {kind_of(spec)}")
    elif not isinstance(rules, list):
        problems.append(f"spec.rules: required, a list of rules, not {kind_of(rules)}")
    elif len(rules) > MAX_RULES:
        problems.append(f"spec.rules: {len(rules)} rules, more than the {MAX_RULES} an "
                        "object may hold")
    else:
        parsed = _parse(rules, origin, problems)
    if problems:
        return RuleObject(name, origin, (), tuple(_capped(problems)), False)
    placed = tuple(replace(rule, origin=f"{origin} spec.rules[{index}]")
                   for index, rule in enumerate(parsed))
    return RuleObject(name, origin, placed, (), True)


def _parse(rules: list[Any], origin: str, problems: list[str]) -> list[Rule]:
    # Rule by rule, to stop a list whose regexps alone cost seconds to compile.
    started = time.thread_time()
    parsed: list[Rule] = []
    for index, item in enumerate(rules):
        rule, found = parse_rule(item, f"spec.rules[{index}]", origin)
        problems += [str(p) for p in found]
        if rule is not None:
            parsed.append(rule)
        if time.thread_time() - started > LOAD_SECONDS and index + 1 < len(rules):
            problems.append(f"spec.rules: reading {index + 1} of {len(rules)} rules took "
                            f"more than {LOAD_SECONDS} s CPU; the object is not used")
            break
    return parsed


def evaluate(objects: Sequence[RuleObject], features: FeatureSet,
             budget: EvalBudget = EvalBudget(),
             namespaces: LabelNamespaces = DEFAULT) -> list[ObjectOutcome]:
    """Every object's outcome, in evaluation order (by name).

    `features` is the pass's features with the NodeFeature objects' merged in
    (nodefeature.merge_into); `rule.matched` in it is changed while this runs and put back
    before it returns."""
    ordered = sorted(objects, key=lambda o: o.name)
    usable = [index for index, obj in enumerate(ordered) if obj.usable]
    outcomes: list[ObjectOutcome] = []
    saved = _matched(features)
    seconds_left, rules_left = budget.seconds, budget.rules
    failed: list[str] = []  # origins of the objects before that were not evaluated cleanly
    try:
        for index, obj in enumerate(ordered):
            outcome = ObjectOutcome(obj.name, obj.origin, kinds=_kinds(obj.rules))
            outcomes.append(outcome)
            if not obj.usable:
                outcome.ok = False
                outcome.problems += [*obj.problems, "not evaluated: its rules cannot be "
                                     "used; the labels it gave before are kept"]
                failed.append(obj.origin)
                continue
            if len(obj.rules) > rules_left or seconds_left <= 0:
                outcome.ok = False
                # Only what does not vary from pass to pass: it is logged and posted
                # as an Event each time it reads differently.
                outcome.problems.append(
                    f"not evaluated: over the per-pass budget (its {len(obj.rules)} rules; "
                    f"all objects together may use {budget.rules} rules and "
                    f"{budget.seconds} s CPU a pass); the labels it gave before are kept")
                failed.append(obj.origin)
                continue
            cap = seconds_left if index == usable[-1] else seconds_left / 2
            before = _matched(features)
            done = _run(obj, features, outcome, namespaces, cap)
            seconds_left -= outcome.seconds
            rules_left -= done
            outcome.problems = _capped(outcome.problems)
            if done < len(obj.rules):
                features.replace_attributes(RULE_MATCHED, before)
                outcome.labels.clear()
                outcome.outputs.clear()
                outcome.ok = False
                outcome.problems.append(
                    f"not evaluated: over the per-pass budget (its {len(obj.rules)} rules; "
                    f"it may use half the CPU time left of the {budget.seconds} s a pass "
                    "has, the last object all of it); the labels it gave before are kept")
            if outcome.ok and failed and _reads_matched(obj.rules):
                # What it reads of rule.matched lacks what those objects would have put
                # there, so a label it no longer gives may not be gone.
                outcome.ok = False
                outcome.problems.append(
                    f"reads {RULE_MATCHED}, and {', '.join(failed[:3])}"
                    f"{f' and {len(failed) - 3} more' if len(failed) > 3 else ''} before it "
                    "did not evaluate cleanly: the labels it gave before are kept")
            if not outcome.ok:
                failed.append(obj.origin)
    finally:
        features.replace_attributes(RULE_MATCHED, saved)
    return outcomes


def merged(outcomes: Iterable[ObjectOutcome], kind: str = "labels"
           ) -> dict[str, dict[str, str]]:
    """origin -> the `kind` items it wins: a later object wins a key, as in nfd-master."""
    given = list(outcomes)
    winners: dict[str, str] = {}
    for outcome in given:
        for key in outcome.items(kind):
            winners[key] = outcome.origin
    result: dict[str, dict[str, str]] = {o.origin: {} for o in given}
    for outcome in given:
        for key, value in outcome.items(kind).items():
            if winners[key] == outcome.origin:
                result[outcome.origin][key] = value
    return result


def _run(obj: RuleObject, features: FeatureSet, outcome: ObjectOutcome,
         namespaces: LabelNamespaces, cap: float) -> int:
    """Evaluate the object's rules until done or over `cap`; how many ran."""
    started = time.thread_time()
    done = 0
    slowest = 0.0
    try:
        for rule in obj.rules:
            before = time.thread_time()
            try:
                [result] = engine.run([rule], features)
            except Exception as exc:  # a bug in one rule's evaluation costs that rule
                result = engine.Outcome(rule, error=f"internal error: {type(exc).__name__}")
            slowest = max(slowest, time.thread_time() - before)
            done += 1
            if result.error is not None:
                outcome.ok = False
                outcome.problems.append(f"rule {quote(rule.name)} cannot be evaluated: "
                                        f"{result.error}")
            else:
                for key, why in result.dropped.items():
                    outcome.problems.append(f"rule {quote(rule.name)}: label {quote(key)} "
                                            f"dropped: {why}")
                outcome.labels.update(_qualified(rule, result.labels, namespaces,
                                                 outcome.problems))
                if result.matched:
                    for kind, items in outputs(rule, features, namespaces,
                                               outcome.problems).items():
                        outcome.outputs.setdefault(kind, {}).update(items)
            # Stop before a rule as costly as the costliest so far would go over.
            if done < len(obj.rules) and time.thread_time() - started + slowest > cap:
                break
    finally:
        outcome.seconds = time.thread_time() - started
    return done


def _qualified(rule: Rule, labels: Mapping[str, str], namespaces: LabelNamespaces,
               problems: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in labels.items():
        full = key if "/" in key else f"{DEFAULT_PREFIX}/{key}"
        if full != key and full in labels:
            continue  # as nfd-master's addNsToMapKeys: the prefixed twin wins
        label, message = checked(Label(full, value))
        if label is None:
            problems.append(f"rule {quote(rule.name)}: {message}")
            continue
        refusal = namespaces.refusal(full)
        if refusal is not None:
            problems.append(f"rule {quote(rule.name)}: dropped label {quote(full)}: {refusal}")
            continue
        result[full] = value
    return result


def _matched(features: FeatureSet) -> dict[str, str] | None:
    found = features.attributes(RULE_MATCHED)
    return None if found is None else dict(found)


def _reads_matched(rules: Iterable[Rule]) -> bool:
    return any(term.feature == RULE_MATCHED
               for rule in rules
               for terms in (rule.match_features, *rule.match_any) for term in terms)


def outputs(rule: Rule, features: FeatureSet, namespaces: LabelNamespaces,
            problems: list[str]) -> dict[str, dict[str, str]]:
    """A matching rule's annotations, taints and extended resources ({kind: {key: value}}),
    each checked as nfd-master checks it; what fails is dropped with a problem."""
    found: dict[str, dict[str, str]] = {}
    named = f"rule {quote(rule.name)}"

    def keep(kind: str, key: str, value: str, shown: str) -> None:
        refusal = namespaces.refusal(key, kind)
        if refusal is not None:
            problems.append(f"{named}: dropped {shown}: {refusal}")
        else:
            found.setdefault(kind, {})[key] = value

    for kind, given in ((ANNOTATIONS, rule.annotations),
                        (EXTENDED_RESOURCES, rule.extended_resources)):
        noun = "annotation" if kind == ANNOTATIONS else "extended resource"
        for key, value in given.items():
            full = key if "/" in key else f"{DEFAULT_PREFIX}/{key}"
            if full != key and full in given:
                continue  # the prefixed twin wins, as for labels
            shown = f"{noun} {excerpt(full)}"
            problem = key_error(full)
            size = len(value.encode())  # bytes, as nfd-master counts them
            if problem is None and kind == ANNOTATIONS and size > MAX_ANNOTATION_VALUE:
                problem = (f"its value has {size} bytes, more than the "
                           f"{MAX_ANNOTATION_VALUE} allowed")
            if problem is None and kind == EXTENDED_RESOURCES:
                if value.startswith("@"):
                    value, problem = backreference(value, features)
                if problem is None:
                    amount = quantity.parse(value)
                    if amount is None or amount < 0:
                        problem = (f"{quote(excerpt(value))} is not a quantity of zero "
                                   "or more (e.g. 4, 500m, 2Gi)")
                    else:
                        problem = quantity.unstored(full, amount)
            if problem is not None:
                problems.append(f"{named}: dropped {shown}: {problem}")
                continue
            keep(kind, full, value, shown)
    for taint in rule.taints:
        shown = f"taint {excerpt(f'{taint.key}={taint.value}:{taint.effect}')}"
        problem = ("its key has no namespace (NFD's taints are always namespaced)"
                   if "/" not in taint.key else key_error(taint.key))
        if problem is None and value_error(taint.value) is not None:
            problem = f"invalid value ({value_error(taint.value)})"
        if problem is not None:
            problems.append(f"{named}: dropped {shown}: {problem}")
            continue
        keep(TAINTS, f"{taint.key}:{taint.effect}", taint.value, shown)
    return found


def _kinds(rules: Iterable[Rule]) -> tuple[str, ...]:
    rules = list(rules)
    return tuple(kind for kind in OUTPUTS
                 if any(getattr(rule, _RULE_FIELD[kind]) for rule in rules))


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more problems"]


def _shown(value: Any) -> str:
    return quote(value) if isinstance(value, str) else kind_of(value)
