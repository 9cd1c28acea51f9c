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
MAX_ENTRIES = 100
OWN = ("feature.node.kubernetes.io", "profile.node.kubernetes.io")
RESERVED = "kubernetes.io"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _own(ns: str) -> bool:
    return any(ns == own or ns.endswith("." + own) for own in OWN)


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

    DEFAULT: ClassVar[LabelNamespaces]

    def allows(self, key: str) -> bool:
        """Whether the agent may write label `key` (only its namespace is looked at)."""
        return self.refusal(key) is None

    def refusal(self, key: str) -> str | None:
        """Why `key` may not be written, one sentence; None when it may."""
        ns = key.rpartition("/")[0] if "/" in key else DEFAULT_PREFIX
        if _own(ns):
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
            return DEFAULT, [f"the data must be a mapping of {DENY} and {EXTRA}, "
                             f"not {type(data).__name__}"]
        problems = [f"{quote(str(key))}: unknown key (expected {DENY}, {EXTRA})"
                    for key in data if key not in (DENY, EXTRA)]
        deny = _entries(data, DENY, DEFAULT.deny, True, problems)
        extra = _entries(data, EXTRA, DEFAULT.extra, False, problems)
        if problems:
            return DEFAULT, problems
        return cls(deny, extra), []

    def to_data(self) -> dict[str, str]:
        """The ConfigMap `.data` that `from_data` reads back as this setting."""
        return {DENY: ",".join(self.deny), EXTRA: ",".join(self.extra)}


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
