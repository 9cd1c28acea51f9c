"""Reconcile rules: desired labels + the live Node + our ledger -> a plan and a minimal patch.

Pure functions only: nothing here talks to the cluster, so every rule is unit-tested
directly (tests/agent/test_reconcile.py) and `diff`, `apply`, `run` and the feature-file
writer share one implementation. docs/design.md states each rule with its test.

The ledger is two annotations on the Node, written in the same patch as the labels so
labels and ledger can never disagree after a crash:

* `nodefeatures.dev/labels`: comma-joined, sorted full keys this agent owns;
* `nodefeatures.dev/sources`: which source produced each owned key, as
  `source:name,name;source:name` where a name is written the way the source returns
  it (`cpuid.AVX` for `feature.node.kubernetes.io/cpu-cpuid.AVX`, a full key otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodefeatures.discovery.labels import DEFAULT_PREFIX, key_error

if TYPE_CHECKING:
    from nodefeatures.discovery.run import Discovery

LEDGER_ANNOTATION = "nodefeatures.dev/labels"
SOURCES_ANNOTATION = "nodefeatures.dev/sources"
DEFAULT_MANAGED_PREFIXES = ("feature.node.kubernetes.io/", "nvidia.com/")
MERGE_PATCH = "application/merge-patch+json"

_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/")
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]*")

# What a plan does with one key. Only the first three (and an adoption that changes the
# value) touch labels; the others are reported so `diff` can explain everything.
ADD, CHANGE, REMOVE = "add", "change", "remove"
ADOPT = "adopt"  # --take-over: a foreign key becomes ours (its value may change too)
KEEP = "keep"  # owned, not reported, but no evidence it is gone: left as it is
CONFLICT = "conflict"  # someone else's key with a different value: left alone, warned
UNOWNED = "unowned"  # someone else's key with our value: left alone, not claimed
SKIP = "skip"  # discovered outside the managed prefixes: never published
RELEASE = "release"  # ledger entry outside the managed prefixes: forgotten, label untouched
FORGET = "forget"  # ledger entry whose label is already gone and no longer reported


def check_prefix(prefix: str) -> str | None:
    """Why `prefix` cannot be a managed prefix (`vendor.io/`), or None when it can."""
    if not _PREFIX.fullmatch(prefix) or len(prefix) > 254:
        return "must be a lower-case DNS subdomain followed by '/', e.g. 'vendor.io/'"
    return None


def managed(key: str, prefixes: Iterable[str]) -> bool:
    """True when `key` is under one of the managed prefixes (exact prefix match)."""
    return any(key.startswith(prefix) for prefix in prefixes)


# -- evidence: what one discovery pass says ---------------------------------------------


@dataclass(frozen=True)
class SourceReport:
    """The labels one source produced in one pass, and whether its silence means anything."""

    name: str
    labels: Mapping[str, str]
    # Ran to completion without an error: a label it no longer reports is really gone.
    trusted: bool
    problem: str = ""  # why it is not trusted


@dataclass(frozen=True)
class Evidence:
    """One pass's labels by source, in priority order (a later source wins a key)."""

    reports: tuple[SourceReport, ...]
    # Every installed source ran and was trusted; only then may a key whose source the
    # ledger does not record be removed.
    complete: bool = False

    def desired(self) -> dict[str, tuple[str, str]]:
        """{key: (value, source)} after priority merging."""
        merged: dict[str, tuple[str, str]] = {}
        for report in self.reports:
            for key, value in report.labels.items():
                merged[key] = (value, report.name)
        return merged

    def report(self, source: str | None) -> SourceReport | None:
        return next((r for r in self.reports if r.name == source), None)


def evidence_from(discovery: Discovery, installed: Iterable[str]) -> Evidence:
    """Evidence of a discovery pass; `installed` names every source that could have run."""
    reports = tuple(
        SourceReport(
            name=result.name,
            labels={key: label.value for key, label in result.labels.items()},
            trusted=result.complete and result.error is None,
            problem=result.error or ("" if result.complete else "incomplete pass (read errors)"),
        )
        for result in discovery.results
    )
    ran = {r.name for r in reports if r.trusted}
    return Evidence(reports, complete=set(installed) <= ran)


# -- the ledger -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """The keys this agent owns on one Node, each with the source that produced it."""

    owners: Mapping[str, str | None] = field(default_factory=dict)  # None: not recorded

    @classmethod
    def parse(cls, annotations: Mapping[str, str] | None) -> Ledger:
        """Read the ledger annotations; malformed parts are ignored, never fatal."""
        annotations = annotations or {}
        keys = [k.strip() for k in annotations.get(LEDGER_ANNOTATION, "").split(",")]
        owners: dict[str, str | None] = {k: None for k in keys if k and key_error(k) is None}
        for group in annotations.get(SOURCES_ANNOTATION, "").split(";"):
            source, colon, names = group.strip().partition(":")
            if not colon or not _SOURCE_NAME.fullmatch(source):
                continue
            for name in names.split(","):
                key = _expand(source, name.strip())
                if key in owners:
                    owners[key] = source
        return cls(owners)

    def encode(self) -> dict[str, str]:
        """The two annotation values, deterministic so an unchanged ledger is never rewritten."""
        if not self.owners:
            return {}
        by_source: dict[str, list[str]] = {}
        for key, source in self.owners.items():
            if source is not None:
                by_source.setdefault(source, []).append(_shorten(source, key))
        encoded = {LEDGER_ANNOTATION: ",".join(sorted(self.owners))}
        if by_source:
            encoded[SOURCES_ANNOTATION] = ";".join(
                f"{source}:{','.join(sorted(names))}" for source, names in sorted(by_source.items())
            )
        return encoded

    def annotation_patch(self, current: Mapping[str, str] | None) -> dict[str, str | None]:
        """Annotation changes that turn `current` into this ledger (None deletes)."""
        current = current or {}
        wanted = self.encode()
        patch: dict[str, str | None] = {}
        for name in (LEDGER_ANNOTATION, SOURCES_ANNOTATION):
            if wanted.get(name) != current.get(name):
                patch[name] = wanted.get(name)
        return patch


def _shorten(source: str, key: str) -> str:
    own = f"{DEFAULT_PREFIX}/{source}-"
    return key[len(own):] if key.startswith(own) else key


def _expand(source: str, name: str) -> str:
    return name if "/" in name else f"{DEFAULT_PREFIX}/{source}-{name}"


# -- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What the plan does with one key, and why."""

    key: str
    action: str
    old: str | None  # value on the node now (None: absent)
    new: str | None  # value after the patch (None: absent)
    source: str | None
    reason: str
    found: str | None = None  # what discovery found, when it reports the key


@dataclass
class Plan:
    """Everything one reconcile decided, plus the patch that carries it out."""

    changes: list[Change]
    labels: dict[str, str | None]  # label part of the merge patch; None deletes
    annotations: dict[str, str | None]  # ledger part of the merge patch
    ledger: Ledger  # the ledger after the patch

    @property
    def needs_write(self) -> bool:
        return bool(self.labels or self.annotations)

    def by_action(self, *actions: str) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    def patch(self, resource_version: str | None) -> dict[str, Any] | None:
        """The JSON merge patch, or None when nothing needs to be sent.

        With a resourceVersion the server rejects the patch with 409 if the Node changed
        since it was read, so a decision is never applied to a state it was not made on.
        """
        if not self.needs_write:
            return None
        metadata: dict[str, Any] = {}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if self.labels:
            metadata["labels"] = dict(sorted(self.labels.items()))
        if self.annotations:
            metadata["annotations"] = dict(sorted(self.annotations.items()))
        return {"metadata": metadata}


def plan(
    evidence: Evidence,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    prefixes: Iterable[str] = DEFAULT_MANAGED_PREFIXES,
    take_over: bool = False,
) -> Plan:
    """Decide what to change on a Node with these labels and annotations.

    The rules, each tested in tests/agent/test_reconcile.py:

    1. Only keys under the managed prefixes are ever touched; of those, only keys in the
       ledger or newly discovered ones.
    2. A discovered key absent from the node is added and recorded as ours.
    3. An owned key whose value differs (or that was deleted by hand) is set again.
    4. A key present with a different value that is not ours is left alone (conflict),
       unless `take_over`, which adopts it; with our value it is left unclaimed.
    5. An owned key is removed only when the source that produced it ran cleanly this
       pass and no longer reports it. A failed, incomplete, disabled or uninstalled
       source is no evidence: its keys stay.
    6. An owned key whose source the ledger does not record is removed only when every
       installed source ran cleanly and none reports it.
    7. Nothing changes -> no patch at all.
    """
    labels = labels or {}
    prefixes = tuple(prefixes)
    ledger = Ledger.parse(annotations)
    desired = evidence.desired()
    owners: dict[str, str | None] = {}
    changes: list[Change] = []
    patch: dict[str, str | None] = {}

    def record(change: Change, owner: str | None = None, owned: bool = False) -> None:
        changes.append(change)
        if owned:
            owners[change.key] = owner
        if change.action in (ADD, CHANGE, REMOVE, ADOPT) and change.old != change.new:
            patch[change.key] = change.new

    for key in sorted(set(desired) | set(ledger.owners)):
        now = labels.get(key)
        ours = key in ledger.owners
        if not managed(key, prefixes):
            if ours:
                record(Change(key, RELEASE, now, now, ledger.owners[key],
                              "outside the managed prefixes: no longer tracked, label left"))
            else:
                value, source = desired[key]
                record(Change(key, SKIP, now, now, source,
                              "outside the managed prefixes: not published", value))
            continue
        if key in desired:
            value, source = desired[key]
            if ours:
                if now is None:
                    record(Change(key, ADD, None, value, source,
                                  "ours but missing from the node: restored", value),
                           source, True)
                elif now != value:
                    record(Change(key, CHANGE, now, value, source, "value changed", value),
                           source, True)
                else:
                    owners[key] = source
            elif now is None:
                record(Change(key, ADD, None, value, source, "newly discovered", value),
                   source, True)
            elif take_over:
                reason = "taken over" + ("" if now == value else " and set to our value")
                record(Change(key, ADOPT, now, value, source, reason, value), source, True)
            elif now != value:
                record(Change(key, CONFLICT, now, now, source,
                          f"set by another writer, we found {value!r}: left alone "
                          "(--take-over adopts it)", value))
            else:
                record(Change(key, UNOWNED, now, now, source,
                          "already set to our value by another writer: not claimed "
                          "(--take-over adopts it)", value))
            continue
        # Owned, and no source reports it this pass.
        owner = ledger.owners[key]
        gone, why = _evidence_of_absence(evidence, owner)
        if not gone:
            record(Change(key, KEEP, now, now, owner, why), owner, True)
        elif now is None:
            record(Change(key, FORGET, None, None, owner, why))
        else:
            record(Change(key, REMOVE, now, None, owner, why))

    after = Ledger(dict(sorted(owners.items())))
    return Plan(changes, patch, after.annotation_patch(annotations), after)


def _evidence_of_absence(evidence: Evidence, owner: str | None) -> tuple[bool, str]:
    """Whether a key that `owner` produced is known to be gone, and why (not)."""
    if owner is None:
        if evidence.complete:
            return True, "source not recorded, and no source reports it any more"
        return False, "source not recorded and not every source ran cleanly: kept"
    report = evidence.report(owner)
    if report is None:
        return False, (f"source {owner} did not run (disabled or not installed): kept; "
                       f"'nodefeatures prune --source {owner}' removes it")
    if not report.trusted:
        return False, f"source {owner} failed this pass ({report.problem}): kept"
    return True, f"source {owner} ran cleanly and no longer reports it"


def prune_plan(
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    prefixes: Iterable[str] = DEFAULT_MANAGED_PREFIXES,
    sources: Iterable[str] = (),
) -> Plan:
    """Remove owned labels (all, or only those of `sources`) and their ledger entries.

    Like every plan it touches only managed keys; the ledger is deleted when emptied.
    """
    labels = labels or {}
    prefixes = tuple(prefixes)
    only = set(sources)
    ledger = Ledger.parse(annotations)
    owners = dict(ledger.owners)
    changes: list[Change] = []
    patch: dict[str, str | None] = {}
    for key, owner in sorted(ledger.owners.items()):
        if only and owner not in only:
            continue
        del owners[key]
        now = labels.get(key)
        if not managed(key, prefixes):
            changes.append(Change(key, RELEASE, now, now, owner,
                                  "outside the managed prefixes: forgotten, label left"))
        elif now is None:
            changes.append(Change(key, FORGET, None, None, owner, "already gone"))
        else:
            changes.append(Change(key, REMOVE, now, None, owner, "pruned"))
            patch[key] = None
    after = Ledger(owners)
    return Plan(changes, patch, after.annotation_patch(annotations), after)


def apply_to(labels: Mapping[str, str], plan_: Plan) -> dict[str, str]:
    """The labels after `plan_` is applied (used by the feature-file writer and tests)."""
    result = dict(labels)
    for key, value in plan_.labels.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def describe(plan_: Plan, node: str, resource_version: str | None,
             body: Mapping[str, Any] | None) -> str:
    """`diff` output: one line per key that matters, the reason, and the exact patch."""
    import json

    writes = [c for c in plan_.changes if c.action in (ADD, CHANGE, REMOVE, ADOPT)]
    counts = {a: sum(1 for c in writes if c.action == a) for a in (ADD, CHANGE, REMOVE, ADOPT)}
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n) or "no label changes"
    lines = [f"node {node} (resourceVersion {resource_version}): {summary}; "
             f"{len(plan_.ledger.owners)} labels owned after this"]
    width = max((len(_shown(c)) for c in plan_.changes), default=0)
    for change in plan_.changes:
        owner = f"[{change.source}] " if change.source else ""
        lines.append(f"  {change.action:8}  {_shown(change).ljust(width)}  "
                     f"{owner}{change.reason}")
    if body is None:
        lines.append("nothing to send: the node already matches")
    else:
        lines.append(f"patch ({MERGE_PATCH}):")
        lines.append(json.dumps(body, indent=2))
    return "\n".join(lines)


def _shown(change: Change) -> str:
    if change.action == CHANGE or (change.action == ADOPT and change.old != change.new):
        return f"{change.key}: {change.old} -> {change.new}"
    if change.action in (ADD, ADOPT):
        return f"{change.key}={change.new}"
    if change.action == CONFLICT:
        return f"{change.key}={change.old} (ours: {change.found})"
    if change.old is None:
        return change.key
    return f"{change.key}={change.old}"
