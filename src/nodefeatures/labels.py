"""Kubernetes label rules, enforced in one place for every source.

Keys that break the rules are dropped. Values that break them are sanitised by one
documented rule (docs/labels.md, "Invalid values"):

1. every character outside `[A-Za-z0-9._-]` becomes `_`;
2. the value is cut to 63 characters;
3. leading and trailing characters that are not alphanumeric are removed.

A value that sanitises to nothing is dropped. Either way the caller gets a message that
names the label and the raw value, so nothing is lost silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from nodefeatures.text import excerpt

DEFAULT_PREFIX = "feature.node.kubernetes.io"
MAX_NAME = 63
MAX_VALUE = 63
MAX_PREFIX = 253
MAX_DNS_LABEL = 63

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VALUE = _NAME
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_OUTSIDE_VALUE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_EDGE = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


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


def sanitize_value(value: str) -> str:
    """The documented rule that turns any string into a valid label value (maybe empty)."""
    cleaned = _OUTSIDE_VALUE_CHARS.sub("_", value)[:MAX_VALUE]
    return _EDGE.sub("", cleaned)


# A running agent sees the same labels every pass; validating them again is wasted work.
@lru_cache(maxsize=8192)
def checked(label: Label) -> tuple[Label | None, str | None]:
    """The label made valid (or None when it cannot be) and a message when it changed."""
    # What was rejected is shown as a short escaped excerpt: it may be any line of a file.
    problem = key_error(label.key)
    if problem:
        return None, (f"dropped label {excerpt(label.key)}={excerpt(label.value)}: "
                      f"invalid key ({problem})")
    problem = value_error(label.value)
    if problem is None:
        return label, None
    fixed = sanitize_value(label.value)
    if not fixed:
        return None, f"dropped label {label.key}={excerpt(label.value)}: invalid value ({problem})"
    note = f"sanitised from {excerpt(label.value)}"
    origin = f"{label.origin}; {note}" if label.origin else note
    sanitized = Label(label.key, fixed, origin, label.source)
    return sanitized, (f"label {label.key}: value {excerpt(label.value)} {problem}; "
                       f"using {fixed!r}")


def split_key(key: str) -> tuple[str, str]:
    """(prefix, name) of a label key; prefix is '' when there is none."""
    prefix, _, name = key.rpartition("/")
    return prefix, name
