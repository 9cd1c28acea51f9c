"""Each operator, with the values where a plausible but wrong reading differs from NFD's."""

from __future__ import annotations

import pytest

from nodefeatures.discovery.rules.expressions import (
    EvaluationError,
    MatchExpression,
    parse_int,
    parse_version,
)


def expr(op: str, *values: str, type: str = "") -> MatchExpression:
    expression = MatchExpression(op, values, type)
    assert expression.problem() is None, expression.problem()
    return expression.compiled()


@pytest.mark.parametrize(("op", "values", "value", "expected"), [
    ("In", ("15b3", "10de"), "10de", True),
    ("In", ("15b3",), "15B3", False),  # exact, case-sensitive string comparison
    ("NotIn", ("15b3",), "10de", True),
    ("NotIn", ("15b3",), "15b3", False),
    ("InRegexp", ("^AVX",), "AVX512F", True),
    ("InRegexp", ("VX",), "AVX2", True),  # a search, not a full match
    ("InRegexp", ("^SSE$",), "SSE4", False),
    ("InRegexp", ("^a", "^b"), "bc", True),  # any of the patterns
    ("Gt", ("9",), "10", True),  # numbers, not strings: "10" < "9" as text
    ("Gt", ("10",), "10", False),
    ("Ge", ("10",), "10", True),
    ("Lt", ("10",), "9", True),
    ("Lt", ("-1",), "-2", True),
    ("Le", ("10",), "10", True),
    ("Le", ("10",), "+10", True),  # Atoi reads a leading sign
    ("GtLt", ("1", "5"), "1", False),  # both bounds excluded
    ("GtLt", ("1", "5"), "4", True),
    ("GeLe", ("1", "5"), "1", True),  # both bounds included
    ("GeLe", ("1", "5"), "5", True),
    ("GeLe", ("1", "5"), "6", False),
    ("IsTrue", (), "true", True),
    ("IsTrue", (), "True", False),  # only the exact word
    ("IsTrue", (), "1", False),
    ("IsFalse", (), "false", True),
    ("IsFalse", (), "0", False),
    ("Exists", (), "", True),  # an empty value is still there
    ("DoesNotExist", (), "x", False),
])
def test_operator_on_a_present_value(op: str, values: tuple[str, ...], value: str,
                                     expected: bool) -> None:
    assert expr(op, *values).matches(True, value) is expected


@pytest.mark.parametrize(("op", "values"), [
    ("In", ("x",)), ("NotIn", ("x",)), ("InRegexp", (".*",)), ("Gt", ("0",)),
    ("Lt", ("0",)), ("GtLt", ("0", "9")), ("IsTrue", ()), ("IsFalse", ()), ("Exists", ()),
])
def test_every_operator_but_does_not_exist_is_false_on_a_missing_element(
        op: str, values: tuple[str, ...]) -> None:
    # NotIn in particular: "not in the list" is no claim about an element that is absent.
    assert expr(op, *values).matches(False, None) is False


def test_does_not_exist_matches_a_missing_element() -> None:
    assert expr("DoesNotExist").matches(False, None) is True


@pytest.mark.parametrize("op", ["In", "NotIn", "InRegexp", "Gt", "IsTrue"])
def test_a_flag_has_no_value_so_value_operators_never_match_it(op: str) -> None:
    values = {"In": ("true",), "NotIn": ("x",), "InRegexp": (".*",), "Gt": ("0",)}
    assert expr(op, *values.get(op, ())).matches(True, None) is False


@pytest.mark.parametrize("value", ["abc", "1.5", " 5", "5 ", "1_000", "\u0665", "", "0x10"])
def test_a_comparison_on_a_value_that_is_no_integer_fails_the_rule(value: str) -> None:
    with pytest.raises(EvaluationError):
        expr("Gt", "1").matches(True, value)


@pytest.mark.parametrize(("value", "expected"), [
    ("5", 5), ("-5", -5), ("+5", 5), ("007", 7), ("9223372036854775807", 2**63 - 1),
    ("9223372036854775808", None), (" 5", None), ("5.0", None), ("1_0", None),
    ("\u0665", None),
])
def test_integers_are_read_as_go_atoi_reads_them(value: str, expected: int | None) -> None:
    assert parse_int(value) == expected


@pytest.mark.parametrize(("op", "bound", "value", "expected"), [
    ("Gt", "5.9", "5.15.0", True),  # 15 > 9 as a version part, unlike as a decimal
    ("Ge", "5.15", "5.15.0-91-generic", True),  # kernel flavour is a pre-release: ignored
    ("Gt", "1.2.3", "1.2.3-rc1", False),
    ("Ge", "1.2.3", "1.2.3-rc1", True),  # pre-release ignored, so not below 1.2.3
    ("Lt", "6", "5.99.99", True),
    ("Le", "v1.2", "1.2.0+build5", True),  # leading v and build metadata
    ("Gt", "535", "550.54.15", True),
])
def test_version_comparisons(op: str, bound: str, value: str, expected: bool) -> None:
    assert expr(op, bound, type="version").matches(True, value) is expected


def test_version_ranges() -> None:
    assert expr("GtLt", "5.4", "6.0", type="version").matches(True, "5.15.0") is True
    assert expr("GeLe", "5.4", "6.0", type="version").matches(True, "6.0.0") is True
    assert expr("GtLt", "5.4", "6.0", type="version").matches(True, "6.0.0") is False


@pytest.mark.parametrize("value", ["4.18.0-553.el8_10.x86_64", "1.2.3.4", "abc", "1.2.3-01"])
def test_a_version_comparison_on_what_is_no_version_fails_the_rule(value: str) -> None:
    assert parse_version(value) is None
    with pytest.raises(EvaluationError):
        expr("Ge", "1", type="version").matches(True, value)


@pytest.mark.parametrize(("op", "values", "type", "fragment"), [
    ("In", (), "", "at least one value"),
    ("NotIn", (), "", "at least one value"),
    ("InRegexp", (), "", "at least one value"),
    ("Exists", ("x",), "", "takes no values"),
    ("IsTrue", ("true",), "", "takes no values"),
    ("Gt", (), "", "exactly one value"),
    ("Gt", ("1", "2"), "", "exactly one value"),
    ("GtLt", ("1",), "", "exactly two values"),
    ("GtLt", ("5", "1"), "", "first value must be below"),
    ("GeLe", ("3", "3"), "", "first value must be below"),
    ("Gt", ("1.5",), "", "not an integer"),
    ("Gt", ("x",), "version", "not a version"),
    ("In", ("x",), "version", "applies only to"),
    ("Gt", ("1",), "semver", "type must be"),
    ("InRegexp", ("(",), "", "not a valid regexp"),
    ("InRegexp", ("(?=a)",), "", "lookaround"),
    ("Equals", ("x",), "", "unknown operator"),
])
def test_expressions_that_can_never_be_evaluated_are_refused_when_read(
        op: str, values: tuple[str, ...], type: str, fragment: str) -> None:
    problem = MatchExpression(op, values, type).problem()
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("^[[:digit:]]+$", "123", True),  # POSIX classes exist in Go's syntax only
    ("^[[:digit:]]+$", "12a", False),
    ("^[[:alpha:]_]+$", "ab_c", True),
    ("^[^[:space:]]+$", "a b", False),
    ("^abc$", "abc\n", False),  # Go's $ is the end of the text; Python's allows a newline
    ("(?m)^abc$", "abc\nx", True),
    ("abc\\z", "abc", True),
    ("^\\d+$", "\u0665", False),  # \d is ASCII in Go
    ("^\\w+$", "\u00e9t\u00e9", False),
    ("[]a]", "]", True),
    ("(?i)^avx", "AVX512F", True),
    ("^(?P<major>[0-9]+)\\.", "5.15", True),
])
def test_regexps_match_what_go_matches(pattern: str, value: str, expected: bool) -> None:
    assert expr("InRegexp", pattern).matches(True, value) is expected


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("\\pL", "Unicode classes"),
    ("(?U)a+", "ungreedy"),
    ("a*+", "quantifier cannot follow"),
    ("a(?=b)", "lookaround"),
    ("(a)\\1", "backreferences"),
    ("(?x) a", "not Go's"),
    ("[[:letters:]]", "POSIX class"),
    ("a\\", "trailing backslash"),
])
def test_regexps_go_does_not_read_alike_are_refused(pattern: str, fragment: str) -> None:
    problem = MatchExpression("InRegexp", (pattern,)).problem()
    assert problem is not None and fragment in problem, problem


@pytest.mark.parametrize("pattern", ["^(a|aa)+b$", "^(a+)+b", "(a*)*b", "^(\\w+\\s?)*$",
                                     "a*a*a*a*a*a*a*a*a*a*b"])
def test_in_regexp_takes_time_linear_in_the_value_whatever_the_pattern(pattern: str) -> None:
    # Go's regexps never backtrack; a backtracking matcher needs minutes for 40 characters
    # here, and both the pattern and the value can come from whoever writes on the host.
    import time

    expression = expr("InRegexp", pattern)
    started = time.process_time()
    for length in (40, 2000):
        assert expression.matches(True, "a" * length + "!") is False
    assert expression.matches(True, "a" * 2000 + "b") is True
    assert time.process_time() - started < 5.0


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("(?i)^avx$", "AvX", True), ("\\bx\\b", "a x b", True), ("\\Bx", "ax", True),
    ("(?s:a.b)", "a\nb", True), ("a.b", "a\nb", False), ("(?m)^b$", "a\nb\nc", True),
    ("^b$", "a\nb\nc", False), ("[^[:digit:]]", "123", False), ("x{2,3}", "axxb", True),
    ("^x{2,3}$", "xxxx", False), ("[a-c]+z", "ccz", True), ("(?i)[A-C]", "b", True),
    ("$", "", True), ("a|", "", True), ("\\d\\s\\w", "1 _", True),
])
def test_in_regexp_answers_as_the_pattern_means(pattern: str, value: str,
                                                expected: bool) -> None:
    assert expr("InRegexp", pattern).matches(True, value) is expected


def test_a_pattern_too_large_once_expanded_is_refused_when_the_rule_is_read() -> None:
    problem = MatchExpression("InRegexp", ("((a{1000}){1000}){1000}",)).problem()
    assert problem is not None and "not a valid regexp" in problem


def test_in_regexp_agrees_with_a_backtracking_matcher_on_short_values() -> None:
    # Random Go-accepted patterns over a small alphabet, where backtracking is still quick:
    # the linear matcher must say what Python's re says (except `\B` on an empty value,
    # which Go matches and re 3.11 does not).
    import random
    import re

    from nodefeatures.discovery.rules.expressions import go_regexp
    from nodefeatures.discovery.rules.linear import LinearPattern

    atoms = ["a", "b", ".", "[ab]", "[^a]", "\\d", "\\w", "\\s", "\\b", "^", "$", "\\A",
             "\\z", "(?i:A)", "[[:digit:]]", "\n", " ", "[a-c]", "(?s:.)", "(?m:^)", "(?m:$)"]
    rng = random.Random(14)

    def pattern(depth: int = 0) -> str:
        r = rng.random()
        if depth > 3 or r < 0.4:
            return rng.choice(atoms)
        if r < 0.55:
            return pattern(depth + 1) + pattern(depth + 1)
        if r < 0.7:
            return f"({pattern(depth + 1)}|{pattern(depth + 1)})"
        return f"(?:{pattern(depth + 1)})" + rng.choice(["*", "+", "?", "*?", "{2}", "{1,3}"])

    checked = 0
    for _ in range(2000):
        source = pattern()
        translated, problem = go_regexp(source)
        if problem or translated is None:
            continue
        reference, linear = re.compile(translated, re.ASCII), LinearPattern(translated)
        for _ in range(4):
            value = "".join(rng.choice("abAB1 \nx_") for _ in range(rng.randint(1, 8)))
            assert linear.search(value) is bool(reference.search(value)), (source, value)
            checked += 1
    assert checked > 4000


@pytest.mark.parametrize(("op", "values"), [
    ("InRegexp", ("a" + "}" * 1_000_000 + "(",)), ("Gt", ("x" * 300_000,)),
    ("Exists", tuple(["x" * 100] * 3000)), ("Lt", ("1", "2")),
    ("InRegexp", ("\n" * 100_000 + "(?=",)),
])
def test_a_problem_names_the_values_in_a_bounded_quoted_excerpt(op: str,
                                                                values: tuple[str, ...]) -> None:
    # Rule files are host input: a 1 MB pattern must be neither echoed whole into every
    # warning and Event nor take long to refuse.
    import time

    started = time.process_time()
    problem = MatchExpression(op, values).problem()
    assert problem is not None and len(problem) < 1000 and "\n" not in problem
    assert time.process_time() - started < 2


def test_a_pattern_past_the_length_bound_is_refused_before_it_is_parsed() -> None:
    from nodefeatures.discovery.rules.expressions import MAX_PATTERN

    problem = MatchExpression("InRegexp", ("a" * (MAX_PATTERN + 1),)).problem()
    assert problem is not None and f"longer than {MAX_PATTERN} characters" in problem
    # One at the bound is read as any other (a long literal fits no state budget, a
    # long class does).
    assert MatchExpression("InRegexp", ("[" + "ab" * (MAX_PATTERN // 2 - 1) + "]",)
                           ).problem() is None
