"""The rule outputs beyond labels on a Node: annotations, taints, extended resources.

NodeFeatureRule objects give them (discovery/rules/cluster.py); the label namespaces
setting switches each kind on (discovery/namespaces.py, `enableAnnotations`,
`enableTaints`, `enableExtendedResources`); reconcile.py plans each kind by the same
rules as labels, against a ledger of its own. This module reads each kind off the Node
and shapes its plan into what the API server takes:

- annotations: keys of metadata.annotations, in the same merge patch as the labels;
- taints: spec.taints, keyed `<key>:<effect>` (one taint per pair, as Kubernetes keeps
  them); the patch carries the whole list, the others' taints as they were, under the
  same resourceVersion, so a racing writer's change is a 409, never lost;
- extended resources: status.capacity and status.allocatable, through the status
  subresource, with their ledger in the same request. A value counts as unchanged when
  it is the same quantity (`1k` is `1000`): the API server stores its own form.

A kind the setting switches off is planned as if no object gave it: what the agent owns
of it is removed (the admin's switch is the evidence), and what the objects would give
is reported once. With no setting in force nothing of these kinds is planned at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from nodefeatures.cluster.kube import node_annotations, node_labels
from nodefeatures.cluster.reconcile import (
    ADD,
    ADOPT,
    CHANGE,
    FORGET,
    REMOVE,
    Change,
    Evidence,
    Ledger,
    Plan,
    Scope,
    SourceReport,
    _plan,
    plan,
    prune_plan,
    scope_of,
)
from nodefeatures.discovery import quantity
from nodefeatures.discovery.namespaces import (
    ANNOTATIONS,
    ENABLE,
    EXTENDED_RESOURCES,
    OUTPUTS,
    TAINTS,
)

Written = Mapping[str, tuple[str, str | None]]
# What all objects together may publish of each kind on one Node: a Node's annotations
# hold 256 KiB in all, the labels' patch carries these too, and one write over a bound
# the server enforces would hold back every label with it. Items past the bound, in the
# objects' order (by name), are not published, and that is reported.
TOTAL_ITEMS = {ANNOTATIONS: 256, TAINTS: 64, EXTENDED_RESOURCES: 64}
TOTAL_BYTES = 65536


def plan_node(evidence: Evidence, node: dict[str, Any], scope: Scope | Iterable[str],
              take_over: bool = False, written: Written | None = None, *,
              instance: str = "", expect: str | None = None,
              written_outputs: Mapping[str, Written] | None = None) -> Plan:
    """reconcile.plan of the Node's labels, holding the plans of the output kinds the
    scope's setting decides (`Plan.outputs`); `written_outputs` is `written` of each."""
    decided = plan(evidence, node_labels(node), node_annotations(node), scope, take_over,
                   written, instance=instance, expect=expect)
    decided.outputs = plans(evidence, node, scope_of(scope), take_over,
                            written_outputs or {}, instance)
    return decided


def prune_node(node: dict[str, Any], scope: Scope | Iterable[str],
               sources: Iterable[str] = (), instance: str = "") -> Plan:
    """reconcile.prune_plan of the Node's labels, and of what the instance owns of each
    output kind."""
    chosen = tuple(sorted(set(sources)))
    decided = prune_plan(node_labels(node), node_annotations(node), scope, chosen, instance)
    decided.outputs = prune_plans(node, scope_of(scope), chosen, instance)
    return decided


def plans(evidence: Evidence, node: dict[str, Any], scope: Scope, take_over: bool,
          written: Mapping[str, Written], instance: str) -> dict[str, Plan]:
    """{kind: plan} of each output kind the scope's setting decides."""
    annotations = node_annotations(node)
    result: dict[str, Plan] = {}
    for kind in OUTPUTS:
        enabled = scope.enabled(kind)
        if enabled is None:
            continue
        ledger = Ledger.parse(annotations, instance, kind)
        given = [r.name for r in evidence.reports if r.items(kind)]
        if not enabled and not ledger.owners and not given:
            continue
        bounded, over = _bounded(evidence, kind)
        live = items_on(node, kind, _desired(bounded, kind))
        used = bounded if enabled else _switched_off(ledger, kind)
        decided = _plan(used, live, annotations, scope, take_over, written.get(kind),
                        instance=instance, expect=None, kind=kind)
        if not enabled:
            decided = _explained_off(decided, kind, given)
        elif over:
            decided.problems[f"outputs-over:{kind}"] = over
        if kind == TAINTS:
            decided.taints = taints_after(node, decided)
        result[kind] = decided
    return result


def prune_plans(node: dict[str, Any], scope: Scope, sources: tuple[str, ...],
                instance: str) -> dict[str, Plan]:
    """{kind: plan} that removes what this instance owns of each output kind (of
    `sources` only, when given), whatever the setting says: `prune` uninstalls."""
    annotations = node_annotations(node)
    result: dict[str, Plan] = {}
    for kind in OUTPUTS:
        ledger = Ledger.parse(annotations, instance, kind)
        if not ledger.owners:
            continue
        if sources:
            ledger = replace(ledger, owners={k: o for k, o in ledger.owners.items()
                                             if o in sources})
        # Owners left out of the evidence keep their keys: no report is no evidence.
        evidence = _switched_off(ledger, kind, complete=not sources)
        decided = _plan(evidence, items_on(node, kind, {}), annotations,
                        replace(scope, namespaces=None), False, None, instance=instance,
                        expect=None, kind=kind)
        decided = replace(decided, changes=[
            replace(c, reason="pruned") if c.action == REMOVE else c
            for c in decided.changes])
        if kind == TAINTS:
            decided.taints = taints_after(node, decided)
        result[kind] = decided
    return result


def items_on(node: Mapping[str, Any], kind: str,
             desired: Mapping[str, str]) -> dict[str, str]:
    """The Node's items of `kind`, {key: value}, as a plan compares them with `desired`."""
    if kind == ANNOTATIONS:
        return node_annotations(node)
    if kind == TAINTS:
        found: dict[str, str] = {}
        for taint in _taints(node):
            key, effect = taint.get("key"), taint.get("effect")
            if isinstance(key, str) and isinstance(effect, str):
                value = taint.get("value")
                found.setdefault(f"{key}:{effect}", value if isinstance(value, str) else "")
        return found
    status = node.get("status") or {}
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or {}
    found = {}
    for key, value in capacity.items():
        if not isinstance(value, str):
            continue
        want = desired.get(key)
        if want is not None and quantity.same(value, want):
            # The same amount in the server's own spelling is no change; one that is not
            # also allocatable is (someone took it out of allocatable: put it back).
            value = want if quantity.same(allocatable.get(key), want) else \
                f"{value} (allocatable {allocatable.get(key)})"
        found[key] = value
    for key, value in allocatable.items():
        # Only allocatable, what the scheduler reads: present, so that it goes too.
        if key not in found and isinstance(value, str):
            found[key] = f"(allocatable {value})"
    return found


def taints_after(node: Mapping[str, Any], decided: Plan) -> list[dict[str, str]] | None:
    """The Node's whole spec.taints once `decided` is applied; None when unchanged.

    Every taint it does not change stays as it was, in its place and with all its fields
    (timeAdded included); a changed one keeps its place; new ones follow, sorted."""
    if not decided.labels:
        return None
    current = _taints(node)
    result: list[dict[str, str]] = []
    placed: set[str] = set()
    for taint in current:
        key = f"{taint.get('key')}:{taint.get('effect')}"
        if key in decided.labels:
            value = decided.labels[key]
            if value is None or key in placed:
                continue
            placed.add(key)
            result.append(_taint(key, value))
        else:
            result.append(dict(taint))
    for key in sorted(set(decided.labels) - placed):
        value = decided.labels[key]
        if value is not None:
            result.append(_taint(key, value))
    return result


def _taint(key: str, value: str) -> dict[str, str]:
    name, _, effect = key.rpartition(":")
    taint = {"key": name, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def _taints(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    taints = (node.get("spec") or {}).get("taints") or []
    return [t for t in taints if isinstance(t, dict)] if isinstance(taints, list) else []


def _bounded(evidence: Evidence, kind: str) -> tuple[Evidence, str]:
    """The evidence with at most TOTAL_ITEMS[kind] items of `kind` and TOTAL_BYTES of
    them, in report order, and what was cut ("" when nothing)."""
    count = used = 0
    cut: list[str] = []
    reports = []
    for report in evidence.reports:
        items = report.items(kind)
        if not items:
            reports.append(report)
            continue
        kept: dict[str, str] = {}
        for key, value in sorted(items.items()):
            cost = len(key.encode()) + len(value.encode())
            if cut or count >= TOTAL_ITEMS[kind] or used + cost > TOTAL_BYTES:
                cut.append(key)  # from the first that does not fit on, none is kept
                continue
            count += 1
            used += cost
            kept[key] = value
        reports.append(replace(report, outputs={**report.outputs, kind: kept}))
    if not cut:
        return evidence, ""
    return replace(evidence, reports=tuple(reports)), (
        f"the NodeFeatureRule objects give more {kind} than one Node may hold "
        f"({TOTAL_ITEMS[kind]} items, {TOTAL_BYTES} bytes): {len(cut)} not published, "
        f"from {cut[0]} on")


def _desired(evidence: Evidence, kind: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for report in evidence.reports:
        merged.update(report.items(kind))
    return merged


def _switched_off(ledger: Ledger, kind: str, complete: bool = True) -> Evidence:
    """Evidence that every owner of `ledger`'s keys ran cleanly and gives none of them
    (`complete`: so do the keys whose owner is not recorded)."""
    owners = sorted({o for o in ledger.owners.values() if o is not None})
    reports = tuple(SourceReport(o, {}, True, outputs={kind: {}}) for o in owners)
    return Evidence(reports, complete=complete)


def _explained_off(decided: Plan, kind: str, given: list[str]) -> Plan:
    why = f"{ENABLE[kind]} is not \"true\" in the label namespaces setting"
    changes = [replace(c, reason=f"{why}: removed" if c.action == REMOVE
                       else f"{why}: forgotten") if c.action in (REMOVE, FORGET) else c
               for c in decided.changes]
    problems = dict(decided.problems)
    if given:
        shown = ", ".join(given[:5]) + (f" and {len(given) - 5} more" if len(given) > 5
                                        else "")
        problems[f"outputs-off:{kind}"] = (
            f"the {kind} that {shown} give are not published: {why} "
            "(deploy/base/label-namespaces.yaml)")
    return replace(decided, changes=changes, problems=problems)


def written_after(decided: Plan, node: Mapping[str, Any]) -> dict[str, Written]:
    """{kind: {key: (value, source)}} of each output kind this agent owns once `decided`
    is applied: what lets a later plan restore a ledger another writer damaged."""
    result: dict[str, dict[str, tuple[str, str | None]]] = {}
    for kind, sub in decided.outputs.items():
        items = items_on(node, kind, {})
        for key, value in sub.labels.items():
            if value is None:
                items.pop(key, None)
            else:
                items[key] = value
        result[kind] = {k: (items[k], o) for k, o in sub.ledger.owners.items() if k in items}
    return result


def writes(decided: Plan) -> list[tuple[str, Change]]:
    """(kind, change) of every output change the plan sends."""
    return [(kind, c) for kind, sub in sorted(decided.outputs.items()) for c in sub.changes
            if c.action in (ADD, CHANGE, REMOVE, ADOPT) and c.old != c.new]


__all__ = [
    "items_on",
    "plans",
    "prune_plans",
    "taints_after",
    "writes",
    "written_after",
]
