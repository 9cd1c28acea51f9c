"""Match operators, with the value rules of NFD's matcher.

Numbers are read as Go's `strconv.Atoi` reads them and versions as the semver library NFD
uses reads them (pre-release and build parts ignored), because a rule must match the
same values here as on an nfd-worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from nodefeatures.discovery.rules.linear import LinearPattern, TooLarge
from nodefeatures.discovery.text import excerpt

IN, NOT_IN, IN_REGEXP = "In", "NotIn", "InRegexp"
EXISTS, DOES_NOT_EXIST = "Exists", "DoesNotExist"
GT, GE, LT, LE, GT_LT, GE_LE = "Gt", "Ge", "Lt", "Le", "GtLt", "GeLe"
IS_TRUE, IS_FALSE = "IsTrue", "IsFalse"
# An empty op matches anything that is there or not; NFD accepts it, so do we.
ANY = ""
OPERATORS = (IN, NOT_IN, IN_REGEXP, EXISTS, DOES_NOT_EXIST, GT, GE, LT, LE, GT_LT, GE_LE,
             IS_TRUE, IS_FALSE)
NO_VALUES = (ANY, EXISTS, DOES_NOT_EXIST, IS_TRUE, IS_FALSE)
ONE_VALUE = (GT, GE, LT, LE)
TWO_VALUES = (GT_LT, GE_LE)
COMPARISONS = ONE_VALUE + TWO_VALUES
VERSION = "version"

_INT64 = 2**63
_UINT64 = 2**64
_ATOI = r"[+-]?[0-9]+"
_SEMVER = (
    r"v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


@cache
def _pattern(source: str) -> re.Pattern[str]:
    """Compiled on first use: a pass with only the built-in rules compiles nothing."""
    return re.compile(source)


class EvaluationError(ValueError):
    """An expression cannot be evaluated against a value (NFD fails the whole rule)."""


def parse_int(text: str) -> int | None:
    """`text` as Go's strconv.Atoi reads it: optional sign, ASCII digits, 64-bit range."""
    if not _pattern(_ATOI).fullmatch(text):
        return None
    number = int(text)
    return number if -_INT64 <= number < _INT64 else None


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a loose semantic version such as `5.15.0-91-generic`."""
    match = _pattern(_SEMVER).fullmatch(text)
    if not match:
        return None
    major, minor, patch, pre = match.groups()
    if pre and any(part.isdigit() and len(part) > 1 and part[0] == "0"
                   for part in pre.split(".")):
        return None  # numeric pre-release parts may not have leading zeros
    parts = tuple(int(p) if p else 0 for p in (major, minor, patch))
    if any(p >= _UINT64 for p in parts):
        return None
    return parts  # type: ignore[return-value]


@dataclass(frozen=True)
class MatchExpression:
    """One operator with its values, applied to one feature element or name."""

    op: str
    values: tuple[str, ...] = ()
    type: str = ""
    # Compiled InRegexp patterns; filled by `compiled()` so building one costs nothing.
    _patterns: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def problem(self) -> str | None:
        """Why this expression can never be evaluated, or None; checked when a rule is read."""
        if self.op not in OPERATORS and self.op != ANY:
            return (f"unknown operator {excerpt(self.op)} "
                    f"(expected one of {', '.join(OPERATORS)})")
        count = len(self.values)
        if self.op in NO_VALUES and count:
            return f"operator {self.op} takes no values (have {_shown(self.values)})"
        if self.op in (IN, NOT_IN, IN_REGEXP) and not count:
            return f"operator {self.op} needs at least one value"
        if self.op in ONE_VALUE and count != 1:
            return f"operator {self.op} takes exactly one value (have {_shown(self.values)})"
        if self.op in TWO_VALUES and count != 2:
            return f"operator {self.op} takes exactly two values (have {_shown(self.values)})"
        if self.type not in ("", VERSION):
            return f"type must be empty or {VERSION!r}, not {excerpt(self.type)}"
        if self.type and self.op not in COMPARISONS:
            return f"type {excerpt(self.type)} applies only to {', '.join(COMPARISONS)}"
        if self.op in COMPARISONS:
            read = parse_version if self.type == VERSION else parse_int
            kind = "a version" if self.type == VERSION else "an integer"
            bounds = [read(v) for v in self.values]
            for value, bound in zip(self.values, bounds, strict=True):
                if bound is None:
                    return f"operator {self.op}: {excerpt(value)} is not {kind}"
            if self.op in TWO_VALUES and not bounds[0] < bounds[1]:  # type: ignore[operator]
                return f"operator {self.op}: the first value must be below the second"
        if self.op == IN_REGEXP:
            for value in self.values:
                error = regexp_problem(value)
                if error:
                    # The reason may quote part of the pattern: one line, bounded.
                    return (f"operator InRegexp: {excerpt(value)} is not a valid regexp: "
                            f"{' '.join(error.split())[:200]}")
        return None

    def compiled(self) -> MatchExpression:
        """This expression with its regular expressions compiled (for InRegexp)."""
        if self.op != IN_REGEXP or self._patterns:
            return self
        patterns = tuple(compile_go(v) for v in self.values)
        return MatchExpression(self.op, self.values, self.type, patterns)

    def matches(self, present: bool, value: str | None) -> bool:
        """Whether an element that is `present` (with `value`, None for a flag) matches.

        As NFD: Exists/DoesNotExist look only at presence; every other operator is false
        for an absent element and for a flag, which has no value.
        """
        op = self.op
        if op == ANY:
            return True
        if op == EXISTS:
            return present
        if op == DOES_NOT_EXIST:
            return not present
        if not present or value is None:
            return False
        if op == IN:
            return value in self.values
        if op == NOT_IN:
            return value not in self.values
        if op == IN_REGEXP:
            patterns = self._patterns or self.compiled()._patterns
            return any(p.search(value) for p in patterns)
        if op == IS_TRUE:
            return value == "true"
        if op == IS_FALSE:
            return value == "false"
        if op in COMPARISONS:
            return self._compare(value)
        raise EvaluationError(f"unknown operator {op!r}")

    def _compare(self, value: str) -> bool:
        if self.type == VERSION:
            read, kind = parse_version, "a version"
        else:
            read, kind = parse_int, "a number"
        have = read(value)
        if have is None:
            # NFD fails the rule here rather than treating the element as a miss.
            raise EvaluationError(f"{self.op}: {value!r} is not {kind}")
        bounds = [read(v) for v in self.values]
        if any(b is None for b in bounds):
            raise EvaluationError(f"{self.op}: {list(self.values)} are not all {kind}s")
        low = bounds[0]
        op = self.op
        if op == GT:
            return have > low  # type: ignore[operator]
        if op == GE:
            return have >= low  # type: ignore[operator]
        if op == LT:
            return have < low  # type: ignore[operator]
        if op == LE:
            return have <= low  # type: ignore[operator]
        high = bounds[1]
        if op == GT_LT:
            return low < have < high  # type: ignore[operator]
        return low <= have <= high  # type: ignore[operator]


def _shown(values: tuple[str, ...]) -> str:
    """Values in a message: each a short quoted excerpt, at most three of them."""
    shown = ", ".join(excerpt(v) for v in values[:3])
    return f"[{shown}, ... {len(values)} values]" if len(values) > 3 else f"[{shown}]"


def regexp_problem(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression Go reads as Python does, or None."""
    translated, problem = go_regexp(pattern)
    if problem:
        return problem
    try:
        re.compile(translated, re.ASCII)  # type: ignore[arg-type]
        LinearPattern(translated)  # type: ignore[arg-type]
    except re.error as exc:
        return str(exc)
    except TooLarge as exc:
        return str(exc)
    return None


def compile_go(pattern: str) -> LinearPattern:
    """A Go (RE2) regexp compiled so that it matches what Go would match, in linear time."""
    translated, problem = go_regexp(pattern)
    if problem or translated is None:
        raise EvaluationError(f"regexp {pattern!r}: {problem}")
    return LinearPattern(translated)


def compile_go_re(pattern: str) -> re.Pattern[str]:
    """The same regexp for Python's re, for the template functions that need its groups,
    finds and replacements: their callers refuse the patterns re could take exponential
    time on (gofuncs._nested_repetition) and bound the text they search."""
    translated, problem = go_regexp(pattern)
    if problem or translated is None:
        raise EvaluationError(f"regexp {pattern!r}: {problem}")
    return re.compile(translated, re.ASCII)


MAX_PATTERN = 65536  # characters of one regexp

# Go's POSIX classes, usable inside brackets: `[[:digit:]_]`.
_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_GO_FLAGS = set("imsU-")
_PYTHON_ONLY_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?>", "(?(", "(?#")


def go_regexp(pattern: str) -> tuple[str | None, str | None]:
    """`pattern` rewritten for Python's re (with re.ASCII), or None and why it cannot be.

    Go's syntax mostly reads the same in Python, but not all of it means the same:
    `$` is the end of the text in Go (Python also accepts a final newline), `\\z` is
    Python's `\\Z`, POSIX classes exist only in Go, and `\\d`, `\\w`, `\\s` are ASCII
    in Go. What only one of them accepts is refused, so a rule means the same here and
    on an nfd-worker.
    """
    if len(pattern) > MAX_PATTERN:
        # Beyond any pattern the linear matcher can hold (linear.MAX_PROGRAM states) but
        # for a huge class; refused before Python's parser spends a second on a 1 MB one.
        return None, f"longer than {MAX_PATTERN} characters ({len(pattern)})"
    multiline = False
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = class_start = previous_quantifier = False
    brace_seen = False  # a `{` so far outside classes: a `}` may close a repeat
    while i < n:
        c = pattern[i]
        quantifier = False
        if c == "\\":
            if i + 1 >= n:
                return None, "trailing backslash"
            d = pattern[i + 1]
            if d in "pP":
                return None, "Unicode classes (\\p) are not supported"
            if d in "123456789":
                return None, "backreferences are not supported"
            out.append("\\Z" if d == "z" and not in_class else pattern[i:i + 2])
            i += 2
            class_start = False
            previous_quantifier = False
            continue
        if in_class:
            if pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end > 0:
                    name = pattern[i + 2:end]
                    if name not in _POSIX:
                        return None, f"POSIX class [:{name}:] is not supported"
                    out.append(_POSIX[name])
                    i = end + 2
                    class_start = False
                    continue
            if c == "]" and not class_start:
                in_class = False
            out.append(c)
            class_start = class_start and c == "^" and pattern[i - 1] == "["
            i += 1
            continue
        if c == "[":
            in_class = class_start = True
            out.append(c)
            i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            if pattern.startswith(_PYTHON_ONLY_GROUPS, i):
                return None, "lookaround, backreferences and conditional groups are not supported"
            j = i + 2
            while j < n and pattern[j] not in ":)":
                j += 1
            flags = pattern[i + 2:j]
            if not flags.startswith(("P<", "<")):
                if not set(flags) <= _GO_FLAGS:
                    return None, f"flags (?{flags}) are not Go's (i, m, s, U)"
                if "U" in flags:
                    return None, "the ungreedy flag (?U) is not supported"
                multiline = multiline or "m" in flags.partition("-")[0]
        if c == "+" and previous_quantifier:
            return None, "a quantifier cannot follow a quantifier"
        if c == "{":
            brace_seen = True
        if c in "*+?" or (c == "}" and brace_seen):
            quantifier = not (c == "?" and previous_quantifier)
        out.append("\\Z" if c == "$" and not multiline else c)
        previous_quantifier = quantifier
        i += 1
    return "".join(out), None
