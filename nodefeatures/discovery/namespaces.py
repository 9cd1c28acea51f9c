"""Which label namespaces the agent may write: one setting, NFD's rules, our default.

The setting is a ConfigMap's `.data` with nfd-master's two option names, each a
comma-separated list: `denyLabelNs` and `extraLabelNs`. The admission policy reads the
same ConfigMap (as its `paramRef`) and must decide every key exactly as `allows` does.
The rule, for a label key (a key without '/' is `feature.node.kubernetes.io/<key>`, as
nfd-master prefixes it), with `ns` the part before the last '/':

1. Own: `ns` is `feature.node.kubernetes.io` or `profile.node.kubernetes.io`, or ends
   with `.feature.node.kubernetes.io` or `.profile.node.kubernetes.io`  ->  allowed
   (NFD's docs: these cannot be denied).
2. Reserved: `ns` is `kubernetes.io` or ends with `.kubernetes.io`  ->  denied, whatever
   the setting (NFD's docs: always denied).
3. Listed: `ns` equals a `denyLabelNs` entry without `*`, or ends with the part after
   the `*` of an entry `*.suffix` (so `*.k8s.io` denies `a.k8s.io`, not `k8s.io`), and
   `ns` is not exactly an `extraLabelNs` entry  ->  denied.
4. Otherwise allowed.

Entries are the comma-separated parts with surrounding whitespace trimmed; empty parts are
skipped (`""` is the empty list). An absent key means its default (`denyLabelNs`:
`k8s.io,*.k8s.io`; `extraLabelNs`: empty), so clearing our extra denial is
`denyLabelNs: ""`. Each entry is a lower-case DNS subdomain, or for `denyLabelNs` also
`*.` followed by one; at most `MAX_ENTRIES` per key; no other key. Data breaking any of
this is rejected whole (the policy must refuse to bind it, the agent keeps its setting).

The same setting switches on the rule outputs beyond labels, each off by default:
`enableAnnotations`, `enableTaints`, `enableExtendedResources`, each `"true"` or
`"false"`. Their keys follow the rule above with NFD's narrower exemption
(nfd-master's validate.Annotation, Taint, ExtendedResource): only
`feature.node.kubernetes.io` and its sub-namespaces are own, so `profile.node.kubernetes.io`
is reserved for them; and `nodefeatures.dev` and its sub-namespaces, where the agent
keeps its ledgers, are never written as an output.

Two deliberate differences from nfd-master's code, both toward NFD's documentation:
nfd-master lets `extraLabelNs` lift the kubernetes.io denial (we never write
`node-restriction.kubernetes.io/`, which isolates nodes), and its deny list can deny
`feature.node.kubernetes.io` itself (a `*.kubernetes.io` entry would take every built-in
label with it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nodefeatures.discovery.labels import DEFAULT_PREFIX
from nodefeatures.discovery.text import quote

DENY, EXTRA = "denyLabelNs", "extraLabelNs"
# The rule outputs beyond labels, as NFD's Rule names them, and the setting's key that
# switches each on.
LABELS, ANNOTATIONS, TAINTS, EXTENDED_RESOURCES = (
    "labels", "annotations", "taints", "extendedResources")
OUTPUTS = (ANNOTATIONS, TAINTS, EXTENDED_RESOURCES)
ENABLE = {ANNOTATIONS: "enableAnnotations", TAINTS: "enableTaints",
          EXTENDED_RESOURCES: "enableExtendedResources"}
KEYS = (DENY, EXTRA, *ENABLE.values())
AGENT_OWN = "nodefeatures.dev"  # the ledgers' namespace: never an output
# The label prefixes an agent manages without the setting (--label-namespaces absent):
# NFD's and GFD's.
DEFAULT_MANAGED_PREFIXES = ("feature.node.kubernetes.io/", "nvidia.com/")
MAX_ENTRIES = 100
OWN = ("feature.node.kubernetes.io", "profile.node.kubernetes.io")
RESERVED = "kubernetes.io"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _own(ns: str) -> bool:
    return any(ns == own or ns.endswith("." + own) for own in OWN)


def _own_output(ns: str) -> bool:
    return ns == OWN[0] or ns.endswith("." + OWN[0])


def _reserved(ns: str) -> bool:
    return ns == RESERVED or ns.endswith("." + RESERVED)


def is_subdomain(text: str) -> bool:
    """A lower-case DNS subdomain as Kubernetes checks one (IsDNS1123Subdomain): at most
    253 characters of dot-separated labels; like Kubernetes, no bound on one label, since
    an object's name such as GFD's `nvidia-features-for-<node>` may exceed 63."""
    return 0 < len(text) <= 253 and all(_DNS_LABEL.fullmatch(part) for part in text.split("."))


@dataclass(frozen=True)
class LabelNamespaces:
    """The namespaces setting: `deny` entries (exact or `*.suffix`), `extra` exact names."""

    deny: tuple[str, ...]
    extra: tuple[str, ...]
    # The rule outputs beyond labels that are switched on (OUTPUTS).
    outputs: frozenset[str] = frozenset()

    DEFAULT: ClassVar[LabelNamespaces]

    def allows(self, key: str, kind: str = LABELS) -> bool:
        """Whether the agent may write `key` as a `kind` (only its namespace is looked at;
        whether the kind is switched on is `enabled`'s to say)."""
        return self.refusal(key, kind) is None

    def enabled(self, kind: str) -> bool:
        return kind == LABELS or kind in self.outputs

    def refusal(self, key: str, kind: str = LABELS) -> str | None:
        """Why `key` may not be written as a `kind`, one sentence; None when it may."""
        ns = key.rpartition("/")[0] if "/" in key else DEFAULT_PREFIX
        if kind != LABELS:
            if _own_output(ns):
                return None
            if ns == AGENT_OWN or ns.endswith("." + AGENT_OWN):
                return (f"namespace {quote(ns)} holds the agent's ledgers: never written "
                        f"as one of the {kind}")
            if _reserved(ns):
                return (f"namespace {quote(ns)} is reserved: kubernetes.io and its "
                        f"sub-namespaces are never written as {kind}, apart from "
                        f"{OWN[0]} and its own")
        elif _own(ns):
            return None
        if _reserved(ns):
            return (f"namespace {quote(ns)} is reserved: kubernetes.io and its sub-namespaces "
                    f"are never written, apart from {OWN[0]}, {OWN[1]} and theirs")
        entry = self._denying(ns)
        if entry is None or ns in self.extra:
            return None
        return (f"namespace {quote(ns)} is denied by the {DENY} entry {quote(entry)} "
                f"(name it in {EXTRA} to allow it)")

    def _denying(self, ns: str) -> str | None:
        for entry in self.deny:
            if ns.endswith(entry[1:]) if entry.startswith("*") else ns == entry:
                return entry
        return None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> tuple[LabelNamespaces, list[str]]:
        """The setting a ConfigMap's `.data` holds, and its problems.

        Any problem rejects the data whole: the result is then `DEFAULT`, and a caller that
        already runs with a setting keeps that one (and reports the problems) rather than
        switching to the default."""
        if not isinstance(data, Mapping):
            return DEFAULT, [f"the data must be a mapping of {', '.join(KEYS)}, "
                             f"not {type(data).__name__}"]
        problems = [f"{quote(str(key))}: unknown key (expected {', '.join(KEYS)})"
                    for key in data if key not in KEYS]
        deny = _entries(data, DENY, DEFAULT.deny, True, problems)
        extra = _entries(data, EXTRA, DEFAULT.extra, False, problems)
        outputs = frozenset(kind for kind, key in ENABLE.items()
                            if _switch(data, key, problems))
        if problems:
            return DEFAULT, problems
        return cls(deny, extra, outputs), []

    def to_data(self) -> dict[str, str]:
        """The ConfigMap `.data` that `from_data` reads back as this setting."""
        data = {DENY: ",".join(self.deny), EXTRA: ",".join(self.extra)}
        data.update({key: "true" for kind, key in ENABLE.items() if kind in self.outputs})
        return data


def _switch(data: Mapping[str, Any], key: str, problems: list[str]) -> bool:
    # Exactly "true" or "false", as the policy compares them: a "yes" or "True" that one
    # reader took for on and the other for off would split what is tried and admitted.
    value = data.get(key, "false")
    if value not in ("true", "false"):
        shown = quote(value) if isinstance(value, str) else type(value).__name__
        problems.append(f"{key}: must be \"true\" or \"false\", not {shown}")
        return False
    return value == "true"


def _entries(data: Mapping[str, Any], key: str, default: tuple[str, ...], wildcards: bool,
             problems: list[str]) -> tuple[str, ...]:
    if key not in data:
        return default
    text = data[key]
    if not isinstance(text, str):
        problems.append(f"{key}: must be a string (a comma-separated list), "
                        f"not {type(text).__name__}")
        return ()
    entries: list[str] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry or entry in entries:
            continue
        name = entry[2:] if wildcards and entry.startswith("*.") else entry
        if not is_subdomain(name):
            shape = "a DNS subdomain or *. and one" if wildcards else "a DNS subdomain"
            problems.append(f"{key}: {quote(entry)} is not {shape} (lower-case letters, "
                            "digits, '-' and '.')")
            continue
        entries.append(entry)
    if len(entries) > MAX_ENTRIES:
        problems.append(f"{key}: {len(entries)} entries, at most {MAX_ENTRIES} are allowed")
    return tuple(entries)


DEFAULT = LabelNamespaces(deny=("k8s.io", "*.k8s.io"), extra=())
LabelNamespaces.DEFAULT = DEFAULT
