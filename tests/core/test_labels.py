"""The central label rules: nothing invalid ever leaves `checked`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodefeatures.labels import Label, checked, key_error, sanitize_value, value_error


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


def test_sanitize_rule_is_the_documented_one() -> None:
    assert sanitize_value("TITAN-X-(Pascal)") == "TITAN-X-_Pascal"
    assert sanitize_value("X9SRA/X9SRA-3") == "X9SRA_X9SRA-3"
    assert sanitize_value("  spaced  ") == "spaced"
    assert sanitize_value("a" * 62 + "-b") == "a" * 62
    assert sanitize_value("()") == ""


def test_checked_keeps_valid_labels_untouched() -> None:
    label = Label("x.io/a", "b", "file")
    assert checked(label) == (label, None)


def test_checked_sanitises_and_says_so() -> None:
    fixed, message = checked(Label("nvidia.com/gpu.machine", "X9SRA/X9SRA-3", "dmi"))
    assert fixed is not None and fixed.value == "X9SRA_X9SRA-3"
    assert "sanitised from 'X9SRA/X9SRA-3'" in fixed.origin
    assert message is not None and "X9SRA/X9SRA-3" in message


def test_checked_drops_unfixable_and_names_the_raw_value() -> None:
    fixed, message = checked(Label("x.io/a", "!!!"))
    assert fixed is None
    assert message is not None and "x.io/a" in message and "'!!!'" in message
    fixed, message = checked(Label("bad key", "v"))
    assert fixed is None and message is not None and "bad key" in message


@given(st.text())
def test_any_value_comes_out_valid_or_not_at_all(raw: str) -> None:
    fixed, _ = checked(Label("x.io/a", raw))
    assert fixed is None or value_error(fixed.value) is None


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=80))
def test_sanitize_is_idempotent(raw: str) -> None:
    once = sanitize_value(raw)
    assert sanitize_value(once) == once
