"""Reconcile rules: desired labels + the live Node + our ledger -> a plan and a minimal patch.

Pure functions only: nothing here talks to the cluster, so every rule is unit-tested
directly (tests/agent/test_reconcile.py) and `diff`, `apply`, `run` and the feature-file
writer share one implementation. docs/design.md states each rule with its test.

The ledger is one annotation on the Node, written in the same patch as the labels so
labels and ledger can never disagree after a crash: `nodefeatures.dev/labels` holds a
JSON object {source: {prefix: [name, ...]}} of the keys this agent owns (a key is
prefix + name; `?` stands for "source not recorded"). It is bounded by LEDGER_MAX_BYTES,
which the admission policy enforces too. The older two-annotation form (comma-joined
keys, plus `nodefeatures.dev/sources`) is still read, and rewritten once.

Several agents may label one Node side by side, each as its own instance (`--instance
NAME`, NFD's `-instance`): instance NAME keeps its ledger in `nodefeatures.dev/labels-NAME`
(the default instance keeps the names above). Each reconciles only against its own
ledger; a key another instance's ledger lists is that instance's, and is left alone.
A named instance writes its ledger even when it owns nothing: `{}` says the agent runs.

The rule outputs beyond labels (NodeFeatureRule `annotations`, `taints`,
`extendedResources`) are planned by the same rules, one kind at a time (`plan(kind=)`),
each with a ledger of its own in the same form: `nodefeatures.dev/annotations`,
`nodefeatures.dev/taints` (a taint's key there is `<key>:<effect>`, as a Node holds one
taint per pair) and `nodefeatures.dev/extended-resources`, `-NAME` for an instance.
cluster/outputs.py reads those kinds off the Node and turns their plans into writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from nodefeatures.discovery import quantity
from nodefeatures.discovery.config import Budget
from nodefeatures.discovery.labels import DEFAULT_PREFIX, key_error
from nodefeatures.discovery.namespaces import (
    DEFAULT_MANAGED_PREFIXES,
    EXTENDED_RESOURCES,
    LABELS,
    TAINTS,
)

if TYPE_CHECKING:
    from nodefeatures.discovery.run import Discovery

LEDGER_ANNOTATION = "nodefeatures.dev/labels"
SOURCES_ANNOTATION = "nodefeatures.dev/sources"
MERGE_PATCH = "application/merge-patch+json"
# The most bytes the ledger annotations' values may hold together. The API server allows
# 256 KiB for all of a Node's annotations; this leaves three quarters to other writers.
# deploy/base/admission-policy.yaml enforces the same number.
LEDGER_MAX_BYTES = 65536
INSTANCE_LEDGER_PREFIX = LEDGER_ANNOTATION + "-"
# The ledgers of the rule outputs beyond labels, by kind; `-NAME` for an instance.
OUTPUT_LEDGERS = {"annotations": "nodefeatures.dev/annotations",
                  TAINTS: "nodefeatures.dev/taints",
                  EXTENDED_RESOURCES: "nodefeatures.dev/extended-resources"}
# Each output ledger's bound; deploy/base/admission-policy.yaml enforces it too.
OUTPUT_LEDGER_MAX_BYTES = 16384
# What one object may publish of one output kind in one pass: an annotation value may
# hold 1024 characters, and all of a Node's annotations 256 KiB.
OUTPUT_BUDGET = Budget(labels=64, bytes=32768)
# An instance name becomes part of an annotation name: a DNS label, short enough that
# `nodefeatures.dev/labels-NAME`'s name part stays within 63 characters.
INSTANCE_MAX = 40
_INSTANCE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# The GPU agent of deploy/gpu, and the Node labels that make its DaemonSet schedule it
# there: the pci source's NVIDIA display or 3D controller, under each label form.
GPU_INSTANCE = "gpu"
NVIDIA_PCI_LABELS = ("feature.node.kubernetes.io/pci-10de.present",
                     "feature.node.kubernetes.io/pci-0300_10de.present",
                     "feature.node.kubernetes.io/pci-0302_10de.present")
# What an administrator sets on a GPU node without an NVIDIA PCI function (Jetson/IGX,
# WSL2) to bring the GPU agent there (deploy/gpu/daemonset-nvidia.yaml's fourth term). In
# node-restriction.kubernetes.io, so neither kubelets nor agents can set it.
GPU_OPT_IN_LABEL = "node-restriction.kubernetes.io/nodefeatures-gpu-agent"
_UNATTRIBUTED = "?"  # the ledger's "source" of keys whose source is not recorded

_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/")
# A source's name, or the origin of labels from a cluster object: `nodefeaturerule/NAME`,
# `nodefeature/NAMESPACE/NAME` (cluster/nfdapi.py).
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_./]*")

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
DROP = "drop"  # over its source's budget, or no room left in the ledger: not published
OTHER = "other"  # listed in another instance's ledger: that agent's key, left alone


# The GPU Operator's per-node switch for GPU Feature Discovery, whose labels the nvidia
# source publishes. The Operator sets it to "true" on GPU nodes; an admin sets "false" to
# keep GFD off a node; the MIG manager (mig-parted) sets "paused-for-mig-change" while it
# repartitions the GPUs, and the driver manager "paused-for-driver-upgrade" while the
# driver is replaced. Both put back what was there before, and leave a "false" alone.
PAUSE_LABELS = {"nvidia.com/gpu.deploy.gpu-feature-discovery": "nvidia"}


def paused_sources(labels: Mapping[str, str] | None) -> dict[str, str]:
    """{source: why} for each source the Node's labels pause: "false" or "paused-*".

    A paused source does not run, and the labels it owns are neither changed nor removed
    until the label says otherwise (docs/design.md, rule 11).
    """
    paused: dict[str, str] = {}
    for key, source in PAUSE_LABELS.items():
        value = (labels or {}).get(key)
        if value is not None and (value == "false" or value.startswith("paused-")):
            paused[source] = f"{key}={value}"
    return paused


def check_prefix(prefix: str) -> str | None:
    """Why `prefix` cannot be a managed prefix (`vendor.io/`), or None when it can."""
    if not _PREFIX.fullmatch(prefix) or len(prefix) > 254:
        return "must be a lower-case DNS subdomain followed by '/', e.g. 'vendor.io/'"
    return None


def check_instance(instance: str) -> str | None:
    """Why `instance` cannot name an instance, or None when it can ("" is the default)."""
    if instance and (len(instance) > INSTANCE_MAX or not _INSTANCE.fullmatch(instance)):
        return (f"must be a lower-case DNS label of at most {INSTANCE_MAX} characters, "
                "e.g. 'gpu'")
    return None


def ledger_annotation(instance: str = "", kind: str = LABELS) -> str:
    """The annotation that holds `instance`'s ledger of `kind`."""
    base = LEDGER_ANNOTATION if kind == LABELS else OUTPUT_LEDGERS[kind]
    return f"{base}-{instance}" if instance else base


def ledger_max_bytes(kind: str) -> int:
    return LEDGER_MAX_BYTES if kind == LABELS else OUTPUT_LEDGER_MAX_BYTES


def other_instances(annotations: Mapping[str, str] | None, instance: str,
                    kind: str = LABELS) -> dict[str, str]:
    """{key: instance} of the keys the ledgers of instances other than `instance` list."""
    annotations = annotations or {}
    prefix = ledger_annotation("", kind) + "-"
    names = [name[len(prefix):] for name in annotations if name.startswith(prefix)]
    if instance:
        names.append("")
    held: dict[str, str] = {}
    for name in sorted(n for n in names if n != instance and check_instance(n) is None):
        for key in Ledger.parse(annotations, name, kind).owners:
            held.setdefault(key, name or "default")
    return held


def item_error(kind: str, key: str) -> str | None:
    """Why `key` cannot be an item of `kind` in a ledger, or None when it can."""
    from nodefeatures.discovery.rules.model import TAINT_EFFECTS

    name, colon, effect = key.rpartition(":") if kind == TAINTS else (key, ":", "")
    if kind == TAINTS and (not colon or effect not in TAINT_EFFECTS):
        return f"not <key>:<effect> with an effect of {', '.join(TAINT_EFFECTS)}"
    if kind != LABELS and "/" not in name:
        # Rule outputs always have one; the Node's own (cpu, memory, pods) have none.
        return "no namespace"
    return key_error(name)


def missing_instance(labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None,
                     expected: str) -> str | None:
    """Why instance `expected` should run on this Node and has written no ledger, or None.

    The GPU agent's DaemonSet follows the NVIDIA PCI labels and the administrator's
    opt-in label (GPU_OPT_IN_LABEL); where one holds and the ledger is absent, that agent
    has not started (its RuntimeClass missing, its image unpullable, ...). The caller
    decides how long to wait before calling that a problem.
    """
    labels = labels or {}
    found = [key for key in (*NVIDIA_PCI_LABELS, GPU_OPT_IN_LABEL) if labels.get(key) == "true"]
    if not found or ledger_annotation(expected) in (annotations or {}):
        return None
    return (f"the Node has {found[0]}=true but no agent of instance {expected!r} has "
            f"written its ledger ({ledger_annotation(expected)}): the GPU agent is not "
            "running here, so the Node has no GPU labels; check its DaemonSet's events "
            "(is the 'nvidia' RuntimeClass installed?)")


class Namespaces(Protocol):
    """The allowed label namespaces (discovery/namespaces.py's LabelNamespaces)."""

    def allows(self, key: str) -> bool: ...


@dataclass(frozen=True)
class Scope:
    """The label keys an agent may add, change and remove.

    A key is in scope when it is under one of `prefixes` (when there are any: an instance
    narrowed by --managed-prefix) and in an allowed namespace (when the cluster's label
    namespaces setting is in force: --label-namespaces).
    """

    prefixes: tuple[str, ...] = DEFAULT_MANAGED_PREFIXES
    namespaces: Namespaces | None = None
    kind: str = LABELS  # what the keys are: labels, or one of the rule OUTPUTS

    def allows(self, key: str) -> bool:
        if self.prefixes and not any(key.startswith(p) for p in self.prefixes):
            return False
        if self.namespaces is None:
            return True
        if "/" not in key:
            # Never a key of ours (every source and rule namespaces its keys), and one
            # the own-node policy refuses: a ledger listing one must not block writes.
            return False
        return (self.namespaces.allows(key) if self.kind == LABELS
                else self.namespaces.allows(key, self.kind))  # type: ignore[call-arg]

    def of(self, kind: str) -> Scope:
        """This scope, for keys of `kind`."""
        return replace(self, kind=kind)

    def enabled(self, kind: str) -> bool | None:
        """Whether the setting switches `kind` on; None when no setting is in force (then
        no output beyond labels is planned at all: nothing says what they may be)."""
        if kind == LABELS:
            return True
        check = getattr(self.namespaces, "enabled", None)
        return None if check is None else bool(check(kind))

    def why_not(self, key: str) -> str:
        """Why `key` is out of scope, as the start of a sentence."""
        if self.prefixes and not any(key.startswith(p) for p in self.prefixes):
            return "outside the managed prefixes"
        if "/" not in key:
            return "without a namespace"
        refusal = getattr(self.namespaces, "refusal", None)
        why = None
        if refusal is not None:
            why = refusal(key) if self.kind == LABELS else refusal(key, self.kind)
        return f"outside the allowed label namespaces ({why})" if why else \
            "outside the allowed label namespaces"

    def __str__(self) -> str:
        parts = []
        if self.prefixes:
            parts.append("under " + ", ".join(self.prefixes))
        if self.namespaces is not None:
            parts.append("in the allowed label namespaces")
        return " and ".join(parts) or "any key"


def scope_of(prefixes: Iterable[str] | Scope) -> Scope:
    """A Scope from a Scope or from managed prefixes alone."""
    return prefixes if isinstance(prefixes, Scope) else Scope(tuple(prefixes))


def managed(key: str, prefixes: Iterable[str] | Scope) -> bool:
    """True when the agent may touch `key`: under a managed prefix (exact prefix match),
    or within a Scope."""
    if isinstance(prefixes, Scope):
        return prefixes.allows(key)
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
    # Its rule outputs beyond labels, {kind: {key: value}} (NodeFeatureRule objects only).
    outputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def items(self, kind: str = LABELS) -> Mapping[str, str]:
        return self.labels if kind == LABELS else self.outputs.get(kind, {})


@dataclass(frozen=True)
class Evidence:
    """One pass's labels by source, in priority order (a later source wins a key)."""

    reports: tuple[SourceReport, ...]
    # Every installed source ran and was trusted; only then may a key whose source the
    # ledger does not record be removed.
    complete: bool = False
    budget: Budget = field(default_factory=Budget)
    # Origin prefixes of cluster objects ("nodefeaturerule/") whose every object the agent
    # has listed: an owner of that kind without a report is an object that no longer
    # exists, which is evidence its labels are gone. Without the list, it is none.
    catalogued: frozenset[str] = frozenset()
    # Problems of this pass outside any source's report (a cluster object that fails to
    # evaluate), {kind: message}: they join the plan's problems.
    problems: Mapping[str, str] = field(default_factory=dict)

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
    return Evidence(reports, complete=set(installed) <= ran, budget=discovery.budget)


# -- the ledger -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """The keys this agent owns on one Node, each with the source that produced it."""

    owners: Mapping[str, str | None] = field(default_factory=dict)  # None: not recorded
    instance: str = ""  # whose ledger: "" is the default instance
    kind: str = LABELS  # of what: labels, or one of the rule OUTPUTS

    @classmethod
    def parse(cls, annotations: Mapping[str, str] | None, instance: str = "",
              kind: str = LABELS) -> Ledger:
        """Read the ledger annotations; malformed parts are ignored, never fatal."""
        return cls.read(annotations, instance, kind)[0]

    @classmethod
    def read(cls, annotations: Mapping[str, str] | None, instance: str = "",
             kind: str = LABELS) -> tuple[Ledger, str | None]:
        """The ledger, and what was wrong with it (None: absent or well-formed)."""
        ledger, problem = cls._read(annotations or {}, instance, kind)
        return replace(ledger, instance=instance, kind=kind), problem

    @classmethod
    def _read(cls, annotations: Mapping[str, str], instance: str,
              kind: str) -> tuple[Ledger, str | None]:
        name = ledger_annotation(instance, kind)
        text = annotations.get(name)
        legacy = not instance and kind == LABELS
        if text is None:
            if legacy and SOURCES_ANNOTATION in annotations:
                return cls({}), f"{SOURCES_ANNOTATION} without {LEDGER_ANNOTATION}"
            return cls({}), None
        if not isinstance(text, str):
            return cls({}), "not a string"
        if text.lstrip().startswith("{"):
            return cls._read_json(text, kind)
        if not legacy:  # the comma-joined form predates instances and outputs
            return cls({}), "not a JSON object"
        return cls._read_key_list(text, annotations.get(SOURCES_ANNOTATION) or "")

    @classmethod
    def _read_json(cls, text: str, kind: str = LABELS) -> tuple[Ledger, str | None]:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return cls({}), "not valid JSON"
        if not isinstance(data, dict):
            return cls({}), "not a JSON object"
        owners: dict[str, str | None] = {}
        bad = 0
        for source, groups in data.items():
            if (source != _UNATTRIBUTED and not _SOURCE_NAME.fullmatch(source)) \
                    or not isinstance(groups, dict):
                bad += 1
                continue
            for prefix, names in groups.items():
                if not isinstance(names, list):
                    bad += 1
                    continue
                for name in names:
                    key = prefix + name if isinstance(name, str) else ""
                    if not key or item_error(kind, key) is not None:
                        bad += 1
                        continue
                    owners[key] = None if source == _UNATTRIBUTED else source
        return cls(owners), (f"{bad} malformed entries ignored" if bad else None)

    @classmethod
    def _read_key_list(cls, keys: str, sources: str) -> tuple[Ledger, str | None]:
        """The first form: comma-joined keys, and `source:name,name;source:name`."""
        entries = [k.strip() for k in keys.split(",")]
        owners: dict[str, str | None] = {k: None for k in entries if k and key_error(k) is None}
        bad = sum(1 for k in entries if k and k not in owners)
        for group in sources.split(";"):
            source, colon, names = group.strip().partition(":")
            if not colon or not _SOURCE_NAME.fullmatch(source):
                continue
            for name in names.split(","):
                key = _expand(source, name.strip())
                if key in owners:
                    owners[key] = source
        return cls(owners), (f"{bad} malformed entries ignored" if bad else None)

    def encode(self) -> dict[str, str]:
        """The annotation, deterministic so an unchanged ledger is never rewritten."""
        return dict(self._encoded)

    @property
    def annotation(self) -> str:
        return ledger_annotation(self.instance, self.kind)

    @cached_property
    def _encoded(self) -> dict[str, str]:
        if not self.owners:
            # A named instance's empty ledger still says "this agent runs here"; its
            # labels' ledger says it, so the others go when empty.
            return {self.annotation: "{}"} if self.instance and self.kind == LABELS else {}
        groups: dict[str, dict[str, list[str]]] = {}
        for key, source in self.owners.items():
            prefix = _group_prefix(source, key)
            groups.setdefault(source or _UNATTRIBUTED, {}).setdefault(prefix, []).append(
                key[len(prefix):])
        data = {source: {prefix: sorted(names) for prefix, names in sorted(by_prefix.items())}
                for source, by_prefix in sorted(groups.items())}
        return {self.annotation: json.dumps(data, separators=(",", ":"))}

    def size(self) -> int:
        """Bytes of the encoded annotation values (what LEDGER_MAX_BYTES bounds)."""
        return sum(len(v.encode()) for v in self.encode().values())

    def annotation_patch(self, current: Mapping[str, str] | None) -> dict[str, str | None]:
        """Annotation changes that turn `current` into this ledger (None deletes)."""
        current = current or {}
        wanted = self.encode()
        patch: dict[str, str | None] = {}
        names = ((LEDGER_ANNOTATION, SOURCES_ANNOTATION) if not self.instance
                 and self.kind == LABELS else (self.annotation,))
        for name in names:
            if wanted.get(name) != current.get(name):
                patch[name] = wanted.get(name)
        return patch


def _group_prefix(source: str | None, key: str) -> str:
    """What a key shares with its neighbours in the ledger: `<ns>/<source>-` or `<ns>/`."""
    own = f"{DEFAULT_PREFIX}/{source}-"
    if source and key.startswith(own) and len(key) > len(own):
        return own
    return key[:key.find("/") + 1]


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
    # What the agent must report, by kind: "budget:<source>" (labels over a source's
    # budget), "ledger" (a damaged ledger), "ledger-restored" (ownership taken back from
    # what this agent wrote), "ledger-full" (no room left in the ledger).
    problems: dict[str, str] = field(default_factory=dict)
    kind: str = LABELS  # of a plan for one kind: `labels` holds that kind's items
    # The plans of the rule outputs beyond labels, by kind (cluster/outputs.py): only on
    # the plan of labels, and only for kinds a setting decides.
    outputs: dict[str, Plan] = field(default_factory=dict)
    # Of a plan of taints: the Node's whole spec.taints after it, when it changes them.
    taints: list[dict[str, str]] | None = None

    @property
    def needs_write(self) -> bool:
        return self.patch(None) is not None or self.status_patch(None) is not None

    def every_change(self) -> list[tuple[str, Change]]:
        """(kind, change) of this plan and of its outputs'."""
        return [(self.kind, c) for c in self.changes] + [
            (kind, c) for kind, sub in sorted(self.outputs.items()) for c in sub.changes]

    def all_problems(self) -> dict[str, str]:
        merged = dict(self.problems)
        for sub in self.outputs.values():
            merged.update(sub.problems)
        return merged

    def by_action(self, *actions: str) -> list[Change]:
        return [c for c in self.changes if c.action in actions]

    def written(self, labels: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
        """{key: (value, source)} of every owned label once this plan is applied to `labels`.

        The agent keeps this in memory: it is what lets `plan(written=...)` restore
        ownership after another writer deleted or mangled the ledger.
        """
        after = apply_to(labels, self)
        return {k: (after[k], owner) for k, owner in self.ledger.owners.items() if k in after}

    def patch(self, resource_version: str | None) -> dict[str, Any] | None:
        """The JSON merge patch, or None when nothing needs to be sent.

        With a resourceVersion the server rejects the patch with 409 if the Node changed
        since it was read, so a decision is never applied to a state it was not made on.
        """
        annotations = dict(self.annotations)
        spec: dict[str, Any] = {}
        for kind, sub in self.outputs.items():
            if kind == EXTENDED_RESOURCES:
                continue  # the status subresource's: status_patch
            annotations.update(sub.annotations)
            if kind == TAINTS:
                if sub.labels and sub.taints is not None:
                    spec["taints"] = sub.taints
            else:
                annotations.update(sub.labels)
        if not (self.labels or annotations or spec):
            return None
        metadata: dict[str, Any] = {}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if self.labels:
            metadata["labels"] = dict(sorted(self.labels.items()))
        if annotations:
            metadata["annotations"] = dict(sorted(annotations.items()))
        body: dict[str, Any] = {"metadata": metadata}
        if spec:
            body["spec"] = spec
        return body

    def status_patch(self, resource_version: str | None) -> dict[str, Any] | None:
        """The merge patch of the Node's status subresource that the extended resources
        need, with their ledger in the same request, or None."""
        sub = self.outputs.get(EXTENDED_RESOURCES)
        if sub is None or not (sub.labels or sub.annotations):
            return None
        metadata: dict[str, Any] = {}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if sub.annotations:
            metadata["annotations"] = dict(sorted(sub.annotations.items()))
        body: dict[str, Any] = {"metadata": metadata}
        if sub.labels:
            resources = dict(sorted(sub.labels.items()))
            body["status"] = {"capacity": resources, "allocatable": dict(resources)}
        return body


def plan(
    evidence: Evidence,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    prefixes: Iterable[str] | Scope = DEFAULT_MANAGED_PREFIXES,
    take_over: bool = False,
    written: Mapping[str, tuple[str, str | None]] | None = None,
    *,
    instance: str = "",
    expect: str | None = None,
    kind: str = LABELS,
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
       source is no evidence: its keys stay, and so does their precedence over a
       lower-priority source that reports the same key.
    6. An owned key whose source the ledger does not record is removed only when every
       installed source ran cleanly and none reports it.
    7. Nothing changes -> no patch at all.
    8. Each source publishes at most its budget (its sorted-first labels that fit), and
       the ledger never grows past LEDGER_MAX_BYTES.
    9. A source the Node's labels pause (`paused_sources`) changes nothing: the keys it
       owns stay as they are, whatever any source reports, and it adds none.
    10. Each instance reads and writes only its own ledger (`ledger_annotation`); a key
        another instance's ledger lists is never added, changed, adopted or removed,
        whatever this instance discovers (OTHER; docs/design.md, rule 13).

    `expect` names an instance that should run wherever a NVIDIA PCI label holds; its
    absent ledger there is a problem ("instance-missing:NAME").
    `written` is what this agent itself last left on the Node ({key: (value, source)});
    owned labels the ledger no longer lists but that still hold that value are taken
    back (another writer deleted or mangled the ledger).

    With `kind` other than labels, `labels` is the Node's items of that kind and the
    plan is of those alone (cluster/outputs.py's plan_node adds them to a plan of labels).
    """
    return _plan(evidence, labels, annotations, prefixes, take_over, written,
                 instance=instance, expect=expect, kind=kind)


def _plan(
    evidence: Evidence,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    prefixes: Iterable[str] | Scope,
    take_over: bool,
    written: Mapping[str, tuple[str, str | None]] | None,
    *,
    instance: str,
    expect: str | None,
    kind: str,
) -> Plan:
    labels = labels or {}
    prefixes = scope_of(prefixes).of(kind)
    problems: dict[str, str] = dict(evidence.problems) if kind == LABELS else {}
    ledger = _ledger_of(annotations, labels, written or {}, problems, instance, kind)
    others = other_instances(annotations, instance, kind)
    if expect is not None and expect != instance and kind == LABELS:
        missing = missing_instance(labels, annotations, expect)
        if missing is not None:
            problems[f"instance-missing:{expect}"] = missing
    frozen = paused_sources(labels) if kind == LABELS else {}
    if frozen:
        # What a paused source reported before the pause is not used either, and no key
        # whose source is not recorded may go: it could be the paused source's.
        evidence = replace(evidence, complete=False, reports=tuple(
            r for r in evidence.reports if r.name not in frozen))
    reports, dropped = _within_budget(evidence, ledger, labels, problems, kind)
    rank = {report.name: i for i, report in enumerate(reports)}
    by_name = {report.name: report for report in reports}
    desired: dict[str, tuple[str, str]] = {}
    for report in reports:
        for key, value in report.items(kind).items():
            desired[key] = (value, report.name)
    owners: dict[str, str | None] = {}
    changes: list[Change] = []
    patch: dict[str, str | None] = {}

    def record(change: Change, owner: str | None = None, owned: bool = False) -> None:
        changes.append(change)
        if owned:
            owners[change.key] = owner
        if change.action in (ADD, CHANGE, REMOVE, ADOPT) and change.old != change.new:
            patch[change.key] = change.new

    for key in sorted(set(desired) | set(ledger.owners) | set(dropped)):
        now = labels.get(key)
        ours = key in ledger.owners
        if key not in desired and not ours:
            value, source, why = dropped[key]
            record(Change(key, DROP, now, now, source, why, value))
            continue
        if ours and ledger.owners[key] in frozen and managed(key, prefixes):
            owner = ledger.owners[key]
            found = desired.get(key, (None, None))[0]
            record(Change(key, KEEP, now, now, owner,
                          f"source {owner} is paused by {frozen[owner]}: kept as it is",
                          found), owner, True)
            continue
        if not managed(key, prefixes):
            if ours:
                record(Change(key, RELEASE, now, now, ledger.owners[key],
                              f"{prefixes.why_not(key)}: no longer tracked, label left"))
            else:
                value, source = desired[key]
                record(Change(key, SKIP, now, now, source,
                              f"{prefixes.why_not(key)}: not published", value))
            continue
        if key in desired:
            value, source = desired[key]
            owner = ledger.owners.get(key)
            held = by_name.get(owner) if ours and owner is not None else None
            if (held is not None and not held.trusted and owner != source
                    and rank[owner] > rank[source] and now is not None):
                # The source that won this key before cannot say whether it still does:
                # a lower-priority source's value is no reason to flip it.
                record(Change(key, KEEP, now, now, owner,
                              f"source {owner} is incomplete this pass ({held.problem}): "
                              f"its value and precedence are kept over {source}'s {value!r}",
                              value), owner, True)
            elif ours:
                if now is None:
                    record(Change(key, ADD, None, value, source,
                                  "ours but missing from the node: restored", value),
                           source, True)
                elif now != value:
                    record(Change(key, CHANGE, now, value, source, "value changed", value),
                           source, True)
                else:
                    owners[key] = source
            elif key in others:
                record(Change(key, OTHER, now, now, source,
                              f"owned by agent instance {others[key]}: left alone", value))
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
        if gone and key in dropped and dropped[key][1] == owner:
            why = dropped[key][2]
        if not gone:
            record(Change(key, KEEP, now, now, owner, why), owner, True)
        elif now is None:
            record(Change(key, FORGET, None, None, owner, why))
        else:
            record(Change(key, REMOVE, now, None, owner, why))

    after = Ledger(dict(sorted(owners.items())), instance, kind)
    if after.size() > ledger_max_bytes(kind):
        after = _fit(after, ledger, rank, labels, changes, patch, problems)
    return Plan(changes, patch, after.annotation_patch(annotations), after, problems, kind)


def _ledger_of(annotations: Mapping[str, str] | None, labels: Mapping[str, str],
               written: Mapping[str, tuple[str, str | None]],
               problems: dict[str, str], instance: str = "", kind: str = LABELS) -> Ledger:
    """The Node's ledger, with what another writer took out of it put back from `written`."""
    ledger, damage = Ledger.read(annotations, instance, kind)
    name = ledger.annotation
    # A resource's amount is compared as a quantity: the server keeps its own spelling
    # (1k for the 1000 the agent wrote), and a plan shows the rule's where they agree.
    same = quantity.same if kind == EXTENDED_RESOURCES else (lambda a, b: a == b)
    lost = {key: owner for key, (value, owner) in written.items()
            if key not in ledger.owners and same(labels.get(key), value)}
    if lost:
        if damage is None:
            damage = ("missing" if name not in (annotations or {})
                      else f"{len(lost)} of our labels missing from it")
        problems["ledger-restored" + _suffix(kind)] = (
            f"another writer deleted or changed the ledger annotation {name} "
            f"({damage}): ownership of {len(lost)} {_noun(kind)} restored from what this "
            "agent wrote")
        return Ledger({**ledger.owners, **lost}, instance, kind)
    if damage is not None:
        problems["ledger" + _suffix(kind)] = (
            f"the ledger annotation {name} is damaged ({damage}): labels it "
            "does not list are not known to be ours and are left as they are; "
            "'nodefeatures apply --take-over' adopts the ones discovery reports")
    return ledger


def _suffix(kind: str) -> str:
    return "" if kind == LABELS else f":{kind}"


def _noun(kind: str) -> str:
    return {LABELS: "labels", TAINTS: "taints", EXTENDED_RESOURCES: "extended resources"
            }.get(kind, kind)


def _within_budget(evidence: Evidence, ledger: Ledger, labels: Mapping[str, str],
                   problems: dict[str, str], kind: str = LABELS
                   ) -> tuple[tuple[SourceReport, ...], dict[str, tuple[str, str, str]]]:
    """Each source cut to its budget, and what was cut: {key: (value, source, why)}.

    A source keeps its sorted-first labels while they fit. Labels an untrusted source
    owns but did not report this pass are kept anyway (rule 5), so they take their place
    in the order too: a transient read error then moves the cut neither way, and a clean
    pass and a failed one publish the same labels.
    """
    budget = evidence.budget if kind == LABELS else OUTPUT_BUDGET
    reports: list[SourceReport] = []
    dropped: dict[str, tuple[str, str, str]] = {}
    for report in evidence.reports:
        given = report.items(kind)
        candidates = dict(given)
        if not report.trusted:
            for key, owner in ledger.owners.items():
                if owner == report.name and key not in candidates and key in labels:
                    candidates[key] = labels[key]
        costs = {k: len(k.encode()) + len(v.encode()) for k, v in candidates.items()}
        total = sum(costs.values())
        if len(candidates) <= budget.labels and total <= budget.bytes:
            reports.append(report)
            continue
        noun = _noun(kind)
        knobs = ("core.maxLabelsPerSource and core.maxLabelBytesPerSource raise the budget"
                 if kind == LABELS else "a bound of the agent's, for each object and kind")
        why = (f"over the budget of source {report.name} ({budget.labels} {noun}, "
               f"{budget.bytes} bytes; {knobs}): not published")
        kept: dict[str, str] = {}
        cut: list[str] = []
        count = used = 0
        for key in sorted(candidates):
            if not cut and count < budget.labels and used + costs[key] <= budget.bytes:
                count += 1
                used += costs[key]
                if key in given:
                    kept[key] = given[key]
                continue
            cut.append(key)  # from the first key that does not fit on, nothing is kept
            if key in given:
                dropped[key] = (given[key], report.name, why)
        cut = [k for k in cut if k in given]
        problems[f"budget:{report.name}{_suffix(kind)}"] = (
            f"source {report.name} reported {len(given)} {noun} ({total} bytes), "
            f"over its budget of {budget.labels} {noun} and {budget.bytes} bytes: "
            f"{len(cut)} {noun} not published, from {cut[0] if cut else '-'} on ({knobs})")
        if kind == LABELS:
            reports.append(replace(report, labels=kept))
        else:
            reports.append(replace(report, outputs={**report.outputs, kind: kept}))
    return tuple(reports), dropped


def _fit(after: Ledger, before: Ledger, rank: Mapping[str, int], labels: Mapping[str, str],
         changes: list[Change], patch: dict[str, str | None],
         problems: dict[str, str]) -> Ledger:
    """Cut the ledger to its bound (ledger_max_bytes): keys owned already first, then new ones by
    source priority (the order the sources ran in) and name. A new key that does not fit
    is not published; an owned one is no longer tracked and its label is left alone."""
    bound = ledger_max_bytes(after.kind)
    order = sorted(after.owners, key=lambda k: (
        k not in before.owners, rank.get(after.owners[k] or "", len(rank)), k))
    seen: set[tuple[str | None, str]] = set()
    used = 2  # the outer braces
    keep = 0
    for key in order:
        source = after.owners[key]
        prefix = _group_prefix(source, key)
        cost = len(json.dumps(key[len(prefix):])) + 1
        if (source, "") not in seen:
            seen.add((source, ""))
            cost += len(json.dumps(source or _UNATTRIBUTED)) + 4
        if (source, prefix) not in seen:
            seen.add((source, prefix))
            cost += len(json.dumps(prefix)) + 4
        if used + cost > bound:
            break
        used += cost
        keep += 1
    while True:
        fitted = Ledger(dict(sorted((k, after.owners[k]) for k in order[:keep])),
                        after.instance, after.kind)
        if fitted.size() <= bound:
            break
        keep -= max(1, keep // 100)
    evicted = set(order[keep:])
    why = f"no room left in the ledger ({bound} bytes)"
    unexplained = set(evicted)
    for i, change in enumerate(changes):
        if change.key not in evicted:
            continue
        unexplained.discard(change.key)
        patch.pop(change.key, None)
        if change.key in before.owners:
            changes[i] = Change(change.key, RELEASE, change.old, change.old, change.source,
                                f"{why}: no longer tracked, label left", change.found)
        else:
            changes[i] = Change(change.key, DROP, change.old, change.old, change.source,
                                f"{why}: not published", change.found)
    for key in sorted(unexplained):  # owned and up to date: no change was recorded for it
        now = labels.get(key)
        changes.append(Change(key, RELEASE, now, now, after.owners[key],
                              f"{why}: no longer tracked, label left"))
    problems["ledger-full" + _suffix(after.kind)] = (
        f"the ledger {after.annotation} would exceed {bound} bytes: {len(evicted)} "
        f"{_noun(after.kind)} not "
        "published or no longer tracked; lower core.maxLabelsPerSource or "
        "core.maxLabelBytesPerSource")
    return fitted


def _evidence_of_absence(evidence: Evidence, owner: str | None) -> tuple[bool, str]:
    """Whether a key that `owner` produced is known to be gone, and why (not)."""
    if owner is None:
        if evidence.complete:
            return True, "source not recorded, and no source reports it any more"
        return False, "source not recorded and not every source ran cleanly: kept"
    report = evidence.report(owner)
    if report is None and any(owner.startswith(kind) for kind in evidence.catalogued):
        return True, f"{owner} no longer exists (or no longer concerns this node)"
    if report is None:
        return False, (f"source {owner} did not run (disabled or not installed): kept; "
                       f"'nodefeatures prune --source {owner}' removes it")
    if not report.trusted:
        return False, f"source {owner} failed this pass ({report.problem}): kept"
    return True, f"source {owner} ran cleanly and no longer reports it"


def prune_plan(
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    prefixes: Iterable[str] | Scope = DEFAULT_MANAGED_PREFIXES,
    sources: Iterable[str] = (),
    instance: str = "",
) -> Plan:
    """Remove owned labels (all, or only those of `sources`) and their ledger entries.

    Like every plan it touches only managed keys of `instance`'s ledger; the ledger is
    deleted when emptied (cluster/outputs.py's prune_node prunes the rule outputs too).
    """
    labels = labels or {}
    prefixes = scope_of(prefixes)
    only = set(sources)
    ledger = Ledger.parse(annotations, instance)
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
                                  f"{prefixes.why_not(key)}: forgotten, label left"))
        elif now is None:
            changes.append(Change(key, FORGET, None, None, owner, "already gone"))
        else:
            changes.append(Change(key, REMOVE, now, None, owner, "pruned"))
            patch[key] = None
    after = Ledger(owners, instance)
    annotation_patch = after.annotation_patch(annotations)
    if instance and not owners:
        # Pruned empty: no ledger at all, not the "{}" of an instance that runs.
        annotation_patch = ({after.annotation: None}
                            if after.annotation in (annotations or {}) else {})
    return Plan(changes, patch, annotation_patch, after)


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

    every = plan_.every_change()
    writes = [c for _, c in every if c.action in (ADD, CHANGE, REMOVE, ADOPT)]
    counts = {a: sum(1 for c in writes if c.action == a) for a in (ADD, CHANGE, REMOVE, ADOPT)}
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n) or "no label changes"
    owned = f"{len(plan_.ledger.owners)} labels owned after this"
    for kind, sub in sorted(plan_.outputs.items()):
        owned += f", {len(sub.ledger.owners)} {_noun(kind)}"
    lines = [f"node {node} (resourceVersion {resource_version}): {summary}; {owned}"]
    lines += [f"  warning: {message}" for _, message in sorted(plan_.all_problems().items())]
    width = max((len(_shown(c, kind)) for kind, c in every), default=0)
    for kind, change in every:
        owner = f"[{change.source}] " if change.source else ""
        lines.append(f"  {change.action:8}  {_shown(change, kind).ljust(width)}  "
                     f"{owner}{change.reason}")
    status = plan_.status_patch(None)
    if body is None and status is None:
        lines.append("nothing to send: the node already matches")
    if body is not None:
        lines.append(f"patch ({MERGE_PATCH}):")
        lines.append(json.dumps(body, indent=2))
    if status is not None:
        lines.append("patch of the status subresource "
                     "(application/strategic-merge-patch+json):")
        lines.append(json.dumps(status, indent=2))
    return "\n".join(lines)


def _shown(change: Change, kind: str = LABELS) -> str:
    text = _shown_item(change)
    return text if kind == LABELS else f"{_KIND_NAMES.get(kind, kind)} {text}"


_KIND_NAMES = {"annotations": "annotation", TAINTS: "taint",
               EXTENDED_RESOURCES: "extended resource"}


def _shown_item(change: Change) -> str:
    if change.action == CHANGE or (change.action == ADOPT and change.old != change.new):
        return f"{change.key}: {change.old} -> {change.new}"
    if change.action in (ADD, ADOPT):
        return f"{change.key}={change.new}"
    if change.action == CONFLICT:
        return f"{change.key}={change.old} (ours: {change.found})"
    if change.action == DROP:
        return f"{change.key}={change.found}"
    if change.old is None:
        return change.key
    return f"{change.key}={change.old}"
