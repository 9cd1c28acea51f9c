"""What a PromQL expression refers to: its metric names and, per metric, the label names
its matchers use; plus the label names of its grouping clauses.

Not a PromQL parser: a tokenizer that knows where names stand (a string, a range
`[...]`, a matcher list `{...}`, a `by (...)` list, a function call) and rejects what
it cannot place, so a typo in a metric or label name cannot pass unnoticed. Grafana's
`$variables` are accepted where a value or a range may stand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<matchop>=~|!~|!=|=)
  | (?P<op>==|>=|<=|[-+*/%^<>,()])
  | (?P<brace>[{}])
""", re.VERBOSE)

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_UNITS = r"(\d+(ms|s|m|h|d|w|y))+"
DURATION = re.compile(rf"^\[(\$\{{?[A-Za-z_]+\}}?|{_UNITS})(:({_UNITS})?)?\]$")


class PromQLError(ValueError):
    """The expression has a token or construct this reader cannot place."""


@dataclass
class References:
    metrics: dict[str, set[str]] = field(default_factory=dict)  # name -> matcher labels
    grouping: set[str] = field(default_factory=set)  # by/on/... label names


def references(expr: str) -> References:
    tokens = _tokens(expr)
    found = References()
    depth = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "range" and not DURATION.match(text):
            raise PromQLError(f"not a range: {text}")
        if kind == "name" and text in GROUPING:
            if following[1] != "(":
                if text in ("group_left", "group_right"):
                    i += 1
                    continue
                raise PromQLError(f"{text} without a label list in {expr!r}")
            i = _label_list(tokens, i + 2, found.grouping, expr)
            continue
        if kind == "name" and (following[1] == "(" or text in AGGREGATIONS):
            i += 1  # a function or an aggregation: its arguments follow
            continue
        if kind == "name" and text.lower() not in KEYWORDS:
            labels = found.metrics.setdefault(text, set())
            if following[1] == "{":
                i = _matchers(tokens, i + 2, labels, expr)
                continue
        elif kind == "brace" and text == "{":
            raise PromQLError(f"a matcher list without a metric name in {expr!r}")
        elif kind == "op" and text == "(":
            depth += 1
        elif kind == "op" and text == ")":
            depth -= 1
            if depth < 0:
                raise PromQLError(f"unbalanced ')' in {expr!r}")
        i += 1
    if depth:
        raise PromQLError(f"unbalanced '(' in {expr!r}")
    return found


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLError(f"cannot read {expr[position:position + 20]!r} in {expr!r}")
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group()))
    return tokens


def _label_list(tokens: list[tuple[str, str]], i: int, into: set[str], expr: str) -> int:
    """Names up to the closing ')'; the index after it."""
    while i < len(tokens) and tokens[i][1] != ")":
        kind, text = tokens[i]
        if kind == "name":
            into.add(text)
        elif text != ",":
            raise PromQLError(f"{text!r} in a label list of {expr!r}")
        i += 1
    if i == len(tokens):
        raise PromQLError(f"unclosed label list in {expr!r}")
    return i + 1


def _matchers(tokens: list[tuple[str, str]], i: int, into: set[str], expr: str) -> int:
    """`name op "value"` items up to the closing '}'; the index after it."""
    while i < len(tokens) and tokens[i][1] != "}":
        if tokens[i][1] == ",":
            i += 1
            continue
        window = tokens[i:i + 3]
        if (len(window) < 3 or window[0][0] != "name" or window[1][0] != "matchop"
                or window[2][0] != "string"):
            raise PromQLError(f"a malformed matcher at {tokens[i][1]!r} in {expr!r}")
        into.add(window[0][1])
        i += 3
    if i == len(tokens):
        raise PromQLError(f"unclosed matcher list in {expr!r}")
    return i + 1
