"""Kubernetes label rules, enforced in one place for every source.

A label whose key or value breaks the rules is dropped, as NFD drops it, with a message
that names the label and quotes an escaped excerpt of the raw value (docs/labels.md,
"Invalid values"). A value is never rewritten here: a value nobody wrote matches no one's
selector, and cutting or replacing characters can merge two different values into one.
Sources that mimic a reference's own clean-up (GFD's product names, NFD's kernel
version) apply it themselves, before these rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from nodefeatures.discovery.text import excerpt

DEFAULT_PREFIX = "feature.node.kubernetes.io"
MAX_NAME = 63
MAX_VALUE = 63
MAX_PREFIX = 253
MAX_DNS_LABEL = 63

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VALUE = _NAME
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class Label:
    """One label with the raw fact behind it."""

    key: str
    value: str
    origin: str = ""  # the file and value, CPUID leaf/bit or NVML call it came from
    source: str = ""


def key_error(key: str) -> str | None:
    """Why `key` is not a valid label key, or None when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "empty prefix before '/'"
        if len(prefix) > MAX_PREFIX:
            return f"prefix longer than {MAX_PREFIX} characters"
        if any(not _DNS_LABEL.fullmatch(part) for part in prefix.split(".")):
            return "prefix is not a lower-case DNS subdomain"
        if any(len(part) > MAX_DNS_LABEL for part in prefix.split(".")):
            return f"a part of the prefix is longer than {MAX_DNS_LABEL} characters"
    if not name:
        return "empty name"
    if len(name) > MAX_NAME:
        return f"name longer than {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return "name must be alphanumeric at both ends with only '-', '_' or '.' inside"
    return None


def value_error(value: str) -> str | None:
    """Why `value` is not a valid label value, or None when it is."""
    if value == "":
        return None
    if len(value) > MAX_VALUE:
        return f"longer than {MAX_VALUE} characters"
    if not _VALUE.fullmatch(value):
        return "must be alphanumeric at both ends with only '-', '_' or '.' inside"
    return None


# A running agent sees the same labels every pass; validating them again is wasted work.
@lru_cache(maxsize=8192)
def checked(label: Label) -> tuple[Label | None, str | None]:
    """The label when it is valid, else None and a message naming it and its raw value."""
    problem = key_error(label.key)
    if problem:
        return None, (f"dropped label {excerpt(label.key)}={excerpt(label.value)}: invalid "
                      f"key ({problem})")
    problem = value_error(label.value)
    if problem:
        return None, (f"dropped label {label.key}={excerpt(label.value)}: "
                      f"invalid value ({problem})")
    return label, None


def split_key(key: str) -> tuple[str, str]:
    """(prefix, name) of a label key; prefix is '' when there is none."""
    prefix, _, name = key.rpartition("/")
    return prefix, name
