"""The central label rules: nothing invalid ever leaves `checked`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodefeatures.discovery.labels import Label, checked, key_error, value_error
from nodefeatures.discovery.text import EXCERPT, excerpt


def test_valid_keys() -> None:
    assert key_error("feature.node.kubernetes.io/cpu-cpuid.AVX2") is None
    assert key_error("nvidia.com/gpu.product") is None
    assert key_error("plain") is None


def test_invalid_keys() -> None:
    assert key_error("Feature.io/x") == "prefix is not a lower-case DNS subdomain"
    assert key_error("/x") == "empty prefix before '/'"
    assert key_error("x.io/") == "empty name"
    assert key_error("x.io/" + "a" * 64) == "name longer than 63 characters"
    assert key_error("x.io/-a") is not None
    assert key_error("a/b/c") is not None  # prefix "a/b" is not a DNS subdomain
    assert key_error("a" * 64 + ".io/x") == "a part of the prefix is longer than 63 characters"
    assert key_error("a" * 63 + ".io/x") is None


def test_values() -> None:
    assert value_error("") is None
    assert value_error("Tesla-T4") is None
    assert value_error("a" * 63) is None
    assert value_error("a" * 64) == "longer than 63 characters"
    assert value_error("TITAN-X-(Pascal)") is not None


def test_checked_keeps_valid_labels_untouched() -> None:
    label = Label("x.io/a", "b", "file")
    assert checked(label) == (label, None)


@pytest.mark.parametrize(("key", "raw"), [
    ("feature.node.kubernetes.io/system-os_release.ID", "My Distro!"),
    ("feature.node.kubernetes.io/system-os_release.VERSION_ID", "12 (bookworm)"),
    ("example.com/toolong", "a" * 74),
    ("nvidia.com/gpu.machine", "X9SRA/X9SRA-3"),
    ("x.io/a", "debian\x00junk"),
    ("x.io/a", "!!!"),
    ("x.io/a", "-edge"),
])
def test_an_invalid_value_is_dropped_never_rewritten(key: str, raw: str) -> None:
    fixed, message = checked(Label(key, raw, "file"))
    assert fixed is None
    assert message is not None and message.startswith(f"dropped label {key}=")
    assert excerpt(raw) in message and "invalid value" in message


def test_a_long_or_hostile_raw_value_is_quoted_escaped_and_short() -> None:
    raw = "x\nERROR forged log line\r\x1b[31m\u202e" + "y" * 5000
    _, message = checked(Label("x.io/a", raw))
    assert message is not None
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert "\u202e" not in message
    assert "'x\\nERROR forged log line" in message and "(5030 characters)" in message
    assert len(message) < 250  # of a 5030-character value: an excerpt, never the whole
    _, message = checked(Label("bad\nkey", "v"))
    assert message is not None and "\n" not in message and "'bad\\nkey'" in message


def test_the_excerpt_is_the_whole_quoted_value_when_short() -> None:
    assert excerpt("12 (bookworm)") == "'12 (bookworm)'"
    longer = "a" * (EXCERPT + 1)
    assert excerpt(longer) == repr("a" * EXCERPT) + f"... ({EXCERPT + 1} characters)"


def test_checked_drops_unfixable_and_names_the_raw_value() -> None:
    fixed, message = checked(Label("x.io/a", "!!!"))
    assert fixed is None
    assert message is not None and "x.io/a" in message and "'!!!'" in message
    fixed, message = checked(Label("bad key", "v"))
    assert fixed is None and message is not None and "bad key" in message


@given(st.text())
def test_any_value_comes_out_unchanged_or_not_at_all(raw: str) -> None:
    fixed, message = checked(Label("x.io/a", raw))
    assert (fixed is None) == (value_error(raw) is not None)
    assert fixed is None or (fixed.value == raw and message is None)
