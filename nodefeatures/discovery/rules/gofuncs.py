"""Values and functions of Go templates: printing as Go's fmt prints, Go's built-in
template functions and the part of Sprig that rules use.

Values are plain Python: str, int (Go's int; `Int64` for Sprig's int64 results),
float (float64), bool, None (nil), list (a slice) and dict (a map; `GoMap` when the Go
type matters). Functions check their argument types as Go's reflection-based call does,
because a rule that passes an int where Go wants a string fails on an nfd-worker too;
anything this module cannot answer exactly as Go does is an error, never a guess.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from typing import Any

from nodefeatures.discovery.rules.expressions import EvaluationError, compile_go_re

_INT64 = 2**63


class TemplateError(ValueError):
    """A template that cannot be parsed or executed; the message says where and why."""


class Int64(int):
    """Go's int64 (what Sprig's arithmetic returns): not assignable to an int parameter."""

    __slots__ = ()


class GoMap(dict[str, Any]):
    """A map with a Go type: its name (for messages) and the zero value of its elements."""

    __slots__ = ("go_type", "zero")

    def __init__(self, items: Any = (), go_type: str = "map[string]interface {}",
                 zero: Callable[[], Any] = lambda: None) -> None:
        super().__init__(items)
        self.go_type = go_type
        self.zero = zero


def is_interface_map(value: Any) -> bool:
    """A map[string]interface{} (what Sprig's dict makes and its map functions take)."""
    return isinstance(value, dict) and getattr(value, "go_type",
                                               "map[string]interface {}") == (
        "map[string]interface {}")


def type_name(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "int64"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return getattr(value, "go_type", "map[string]interface {}")
    return type(value).__name__


def truth(value: Any) -> bool:
    """Go's template truth: the zero value of a type and empty collections are false."""
    if value is None:
        return False
    if isinstance(value, bool | int | float | str | list | dict):
        return bool(value)
    return True


# -- printing ---------------------------------------------------------------------------

MAX_VALUE = 1024 * 1024  # characters of one value a function makes or prints
MAX_ITEMS = 10_000  # elements of one list a function makes


def go_string(value: Any, budget: int = MAX_VALUE) -> str:
    """`value` as Go's fmt prints it with %v; an error past `budget` characters."""
    parts: list[str] = []
    _print(value, parts, [budget, budget])
    return "".join(parts)


def _print(value: Any, parts: list[str], left: list[int]) -> None:
    if isinstance(value, list):
        _put("[", parts, left)
        for index, item in enumerate(value):
            if index:
                _put(" ", parts, left)
            _print(item, parts, left)
        _put("]", parts, left)
    elif isinstance(value, dict):
        _put("map[", parts, left)
        for index, key in enumerate(sorted(value)):
            _put(f"{' ' if index else ''}{key}:", parts, left)
            _print(value[key], parts, left)
        _put("]", parts, left)
    else:
        _put(_scalar_string(value), parts, left)


def _put(text: str, parts: list[str], left: list[int]) -> None:
    left[0] -= len(text)
    if left[0] < 0:  # left: [characters left, the budget]
        raise TemplateError(f"value longer than {left[1]} characters")
    parts.append(text)


def _scalar_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    raise TemplateError(f"cannot print a value of type {type_name(value)}")


def go_float(value: float) -> str:
    """fmt's %v of a float64: shortest digits, an exponent outside [-4, 6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, exponent = _shortest(value)
    sign = "-" if value < 0 else ""
    exp = exponent - 1  # of the first digit
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exponent <= 0:
        return f"{sign}0.{'0' * -exponent}{digits}"
    if exponent >= len(digits):
        return f"{sign}{digits}{'0' * (exponent - len(digits))}"
    return f"{sign}{digits[:exponent]}.{digits[exponent:]}"


def _shortest(value: float) -> tuple[str, int]:
    """The shortest round-tripping digits of |value| and the decimal point's position."""
    from decimal import Decimal  # only for the rare float

    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, len(text) + int(exponent)


def go_quote(text: str) -> str:
    """strconv.Quote: a double-quoted Go string literal."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x80 or _printable(char):
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\v": "\\v"}


def _printable(char: str) -> bool:
    # Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and U+0020.
    return unicodedata.category(char)[0] in "LMNPS"


def sprintf(fmt: str, args: list[Any]) -> str:
    """fmt.Sprintf for the verbs rules use: %s %d %v %q %x %X %t and %%, with width and
    the - and 0 flags. What Go would print as a %!verb(...) complaint is an error here."""
    out: list[str] = []
    i, n, used = 0, len(fmt), 0
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        flags = ""
        while i < n and fmt[i] in "-0+ #":
            flags += fmt[i]
            i += 1
        start = i
        while i < n and fmt[i].isdigit():
            i += 1
        width = int(fmt[start:i]) if i > start else 0
        if width > 1000:
            raise TemplateError("printf: width over 1000")
        if i >= n:
            raise TemplateError(f"printf: format {fmt!r} ends inside a verb")
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if set(flags) - set("-0"):
            raise TemplateError(f"printf: flags {flags!r} are not supported")
        if verb not in "sdvqxXt":
            raise TemplateError(f"printf: verb %{verb} is not supported (%s %d %v %q %x %t)")
        if used >= len(args):
            raise TemplateError(f"printf: missing argument for %{verb}")
        text = _format(verb, args[used])
        used += 1
        pad = width - len(text)
        if pad > 0:
            if "-" in flags:
                text += " " * pad
            elif "0" in flags and verb in "dxX" and isinstance(args[used - 1], int):
                sign = text[0] if text[0] == "-" else ""
                text = sign + "0" * pad + text[len(sign):]
            else:
                text = " " * pad + text
        out.append(text)
    if used < len(args):
        raise TemplateError(f"printf: {len(args) - used} extra argument(s) for {fmt!r}")
    return "".join(out)


def _format(verb: str, value: Any) -> str:
    if verb == "v":
        return go_string(value)
    if isinstance(value, list):
        return "[" + " ".join(_format(verb, v) for v in value) + "]"
    if verb == "s" and isinstance(value, str):
        return value
    if verb == "q" and isinstance(value, str):
        return go_quote(value)
    if verb == "t" and isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not isinstance(value, bool) and verb in "dxX":
        return str(value) if verb == "d" else format(value, verb.lower() if verb == "x"
                                                     else "X")
    if isinstance(value, str) and verb in "xX":
        return value.encode().hex() if verb == "x" else value.encode().hex().upper()
    raise TemplateError(f"printf: %{verb} cannot format a {type_name(value)}")


def sprint(args: list[Any], line: bool) -> str:
    """fmt.Sprint (spaces between operands when neither is a string) or fmt.Sprintln."""
    if line:
        return " ".join(go_string(a) for a in args) + "\n"
    out: list[str] = []
    for index, arg in enumerate(args):
        if index and not isinstance(arg, str) and not isinstance(args[index - 1], str):
            out.append(" ")
        out.append(go_string(arg))
    return "".join(out)


# -- comparisons (Go's eq, ne, lt, le, gt, ge) ------------------------------------------

def _basic(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return None


def eq(first: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    kind = _basic(first)
    for other in others:
        other_kind = _basic(other)
        if kind != other_kind:
            if first is not None and other is not None:
                raise TemplateError("incompatible types for comparison")
            continue  # nil against a value: not equal
        if kind is None:
            if first is None or other is None:  # nil against a map or list: not equal
                if first is None and other is None:
                    return True
                continue
            raise TemplateError(f"non-comparable type {type_name(first)}")
        if first == other:
            return True
    return False


def ne(first: Any, second: Any) -> bool:
    return not eq(first, second)


def lt(first: Any, second: Any) -> bool:
    kind, other = _basic(first), _basic(second)
    if kind is None or other is None or kind == "bool" or other == "bool":
        raise TemplateError("invalid type for comparison")
    if kind != other:
        raise TemplateError("incompatible types for comparison")
    return bool(first < second)


def le(first: Any, second: Any) -> bool:
    return lt(first, second) or eq(first, second)


def gt(first: Any, second: Any) -> bool:
    return not le(first, second)


def ge(first: Any, second: Any) -> bool:
    return not lt(first, second)


# -- built-in functions -----------------------------------------------------------------

def go_len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())  # Go counts bytes
    if isinstance(value, list | dict):
        return len(value)
    raise TemplateError(f"len of type {type_name(value)}")


def index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            if not isinstance(key, str):
                raise TemplateError(f"value has type {type_name(key)}; should be string")
            item = item[key] if key in item else getattr(item, "zero", lambda: None)()
        elif isinstance(item, list | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateError(f"cannot index slice/array with type {type_name(key)}")
            size = go_len(item)
            if not 0 <= key < size:
                raise TemplateError(f"index out of range: {key}")
            item = item.encode()[key] if isinstance(item, str) else item[key]
        elif item is None:
            raise TemplateError("index of untyped nil")
        else:
            raise TemplateError(f"can't index item of type {type_name(item)}")
    return item


def go_slice(item: Any, *bounds: Any) -> Any:
    if not isinstance(item, str | list):
        raise TemplateError(f"can't slice item of type {type_name(item)}")
    if len(bounds) > 2:
        raise TemplateError("too many slice indexes")
    for bound in bounds:
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise TemplateError(f"cannot index slice/array with type {type_name(bound)}")
    size = go_len(item)
    low = bounds[0] if bounds else 0
    high = bounds[1] if len(bounds) > 1 else size
    if not 0 <= low <= high <= size:
        raise TemplateError(f"slice index out of range: {low}:{high} of {size}")
    if isinstance(item, str):
        return _cut(item.encode(), low, high)
    return item[low:high]


def _cut(data: bytes, low: int, high: int | None) -> str:
    try:
        return data[low:high].decode()
    except UnicodeDecodeError:
        raise TemplateError("the cut splits a multi-byte character") from None


# -- Sprig ------------------------------------------------------------------------------

def _to_int64(value: Any) -> int:
    """spf13/cast's ToInt64 as Sprig's arithmetic uses it (0 for what it cannot read)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise TemplateError("cannot convert NaN or Inf to an integer")
        return _wrap(int(value))
    if isinstance(value, str):
        parsed = parse_int_base0(_trim_zero_decimal(value))
        return 0 if parsed is None else parsed
    if value is None:
        return 0
    raise TemplateError(f"cannot convert {type_name(value)} to an integer")


def _trim_zero_decimal(text: str) -> str:
    found_zero = False
    for i in range(len(text), 0, -1):
        char = text[i - 1]
        if char == ".":
            if found_zero:
                return text[:i - 1]
        elif char == "0":
            found_zero = True
        else:
            return text
    return text


def parse_int_base0(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64): base prefixes, a leading 0 for octal, underscores."""
    body = text[1:] if text[:1] in "+-" else text
    negative = text[:1] == "-"
    base, digits = 10, body
    lowered = body[:2].lower()
    if lowered in ("0x", "0b", "0o"):
        base, digits = {"0x": 16, "0b": 2, "0o": 8}[lowered], body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]
    if "_" in digits or "_" in body[:1]:
        if not _underscores_ok(body):
            return None
        digits = digits.replace("_", "")
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits.lower()):
        return None
    number = int(digits, base) * (-1 if negative else 1)
    return number if -_INT64 <= number < _INT64 else None


def _underscores_ok(body: str) -> bool:
    saw, i = "^", 0
    hexadecimal = False
    if len(body) >= 2 and body[0] == "0" and body[1].lower() in "box":
        i, saw, hexadecimal = 2, "0", body[1].lower() == "x"
    for char in body[i:]:
        if char.isdigit() or (hexadecimal and char.lower() in "abcdef"):
            saw = "0"
            continue
        if char == "_":
            if saw != "0":
                return False
            saw = "_"
            continue
        if saw == "_":
            return False
        saw = "!"
    return saw != "_"


def _wrap(number: int) -> int:
    """Two's-complement 64-bit overflow, as Go's int64 arithmetic does."""
    return (number + _INT64) % (2 * _INT64) - _INT64


def _strval(value: Any) -> str:
    return value if isinstance(value, str) else go_string(value)


def _strslice(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [_strval(value)]
    result, total = [], 0
    for item in value:
        if item is not None:
            text = _strval(item)
            total += len(text)
            if total > MAX_VALUE:
                raise TemplateError(f"value longer than {MAX_VALUE} characters")
            result.append(text)
    return result


def _join(sep: str, value: Any) -> str:
    items = _strslice(value)
    _fits(len(sep) * len(items) + sum(map(len, items)))
    return sep.join(items)


def _fits(size: int) -> None:
    if size > MAX_VALUE:
        raise TemplateError(f"value longer than {MAX_VALUE} characters")


def _items(items: list[Any]) -> list[Any]:
    if len(items) > MAX_ITEMS:
        raise TemplateError(f"list longer than {MAX_ITEMS} elements")
    return items


def _list_of(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TemplateError(f"Cannot find {name} on type {type_name(value)}")
    return value


def _empty(value: Any) -> bool:
    return not truth(value)


def _go_div(a: int, b: int, name: str) -> int:
    if b == 0:
        raise TemplateError(f"{name}: integer divide by zero")
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _go_mod(a: int, b: int) -> int:
    return a - b * _go_div(a, b, "mod")


def _substr(start: int, end: int, text: str) -> str:
    data = text.encode()
    if start < 0:
        if end > len(data) or end < 0:
            raise TemplateError(f"substr: slice bounds out of range [:{end}]")
        return _cut(data, 0, end)
    if end < 0 or end > len(data):
        if start > len(data):
            raise TemplateError(f"substr: slice bounds out of range [{start}:]")
        return _cut(data, start, None)
    if start > end:
        raise TemplateError(f"substr: slice bounds out of range [{start}:{end}]")
    return _cut(data, start, end)


def _trunc(count: int, text: str) -> str:
    data = text.encode()
    if count < 0 and len(data) + count > 0:
        return _cut(data, len(data) + count, None)
    if count >= 0 and len(data) > count:
        return _cut(data, 0, count)
    return text


_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def go_trim_space(text: str) -> str:
    """strings.TrimSpace (unicode.IsSpace, which is not Python's idea of whitespace)."""
    return text.strip(_GO_SPACE)


def _simple_case(text: str, upper: bool) -> str:
    # Go maps rune by rune; Python's full case mapping can change the length (ß -> SS).
    out = []
    for char in text:
        mapped = char.upper() if upper else char.lower()
        out.append(mapped if len(mapped) == 1 else char)
    return "".join(out)


def _title(text: str) -> str:
    if not text.isascii():
        raise TemplateError("title: only ASCII text is supported")
    out, previous = [], " "
    for char in text:
        separator = not (previous.isalnum() or previous == "_")
        out.append(char.upper() if separator else char)
        previous = char
    return "".join(out)


def _split_list(sep: str, text: str) -> list[Any]:
    if sep == "":
        return list(text)
    return list(text.split(sep))


def _regexp(pattern: str) -> Any:
    problem = _nested_repetition(pattern)
    if problem:
        raise TemplateError(f"regexp {pattern!r}: {problem}")
    try:
        return compile_go_re(pattern)
    except EvaluationError as exc:
        raise TemplateError(str(exc)) from None


def _nested_repetition(pattern: str) -> str | None:
    """Why Python's backtracking engine could take exponential time on `pattern`.

    Go's RE2 runs in linear time whatever the pattern; Python's re does not when a
    repeated group itself repeats or alternates (`(a+)+`, `(a|ab)*`). Such patterns
    are refused, so a rule cannot stall the agent."""
    stack: list[bool] = []  # per open group: it holds a repetition or an alternation
    closed_risky = False
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        quantifier = char in "*+?{" and not (char == "?" and i and pattern[i - 1] == "(")
        if quantifier and closed_risky:
            return "a repeated group that repeats or alternates inside is not supported"
        closed_risky = False
        if char == "\\":
            i += 2
            continue
        if char == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        if char == "(":
            stack.append(False)
        elif char == ")" and stack:
            closed_risky = stack.pop()
            if stack and closed_risky:
                stack[-1] = True
        elif (quantifier or char == "|") and stack:
            stack[-1] = True
        i += 1
    return None


MAX_REGEXP_TEXT = 4096  # characters a template regexp may search


def _subject(text: str) -> str:
    # Python's engine backtracks: bounding the text bounds what a pattern can cost.
    if len(text) > MAX_REGEXP_TEXT:
        raise TemplateError(f"regexp over more than {MAX_REGEXP_TEXT} characters")
    return text


def _regex_match(pattern: str, text: str) -> bool:
    return _regexp(pattern).search(_subject(text)) is not None


def _regex_find(pattern: str, text: str) -> str:
    match = _regexp(pattern).search(_subject(text))
    return match.group(0) if match else ""


def _go_matches(compiled: Any, text: str) -> Any:
    """Successive matches as Go's regexp finds them: an empty match right where the
    previous match ended is skipped (Python's finditer would report it)."""
    previous_end = -1
    for match in compiled.finditer(_subject(text)):
        if match.start() == match.end() == previous_end:
            continue
        previous_end = match.end()
        yield match


def _regex_find_all(pattern: str, text: str, limit: int) -> list[Any]:
    if limit == 0:
        return []
    found: list[Any] = []
    for match in _go_matches(_regexp(pattern), text):
        found.append(match.group(0))
        if 0 < limit <= len(found):
            break
    return _items(found)


def _replace_all(pattern: str, text: str, replacement: Callable[[Any], str]) -> str:
    parts, at, made = [], 0, len(text)
    for match in _go_matches(_regexp(pattern), text):
        value = replacement(match)
        made += len(value)
        _fits(made)
        parts.append(text[at:match.start()])
        parts.append(value)
        at = match.end()
    parts.append(text[at:])
    return "".join(parts)


def _regex_replace(pattern: str, text: str, replacement: str) -> str:
    compiled = _regexp(pattern)
    return _replace_all(pattern, text, lambda m: _expand(replacement, m, compiled))


def _regex_replace_literal(pattern: str, text: str, replacement: str) -> str:
    return _replace_all(pattern, text, lambda m: replacement)


def _expand(template: str, match: Any, compiled: Any) -> str:
    """regexp.Expand: $1, ${1}, $name, ${name}, $$; unknown groups expand to nothing."""
    out, i, n = [], 0, len(template)
    while i < n:
        char = template[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        if template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if template[i + 1] == "{":
            end = template.find("}", i + 2)
            name = template[i + 2:end] if end > 0 else ""
            if end < 0 or not name or not all(c.isalnum() or c == "_" for c in name):
                out.append(char)
                i += 1
                continue
            i = end + 1
        else:
            j = i + 1
            while j < n and (template[j].isalnum() or template[j] == "_"):
                j += 1
            name = template[i + 1:j]
            if not name:
                out.append(char)
                i += 1
                continue
            i = j
        group: Any = None
        if name.isascii() and name.isdigit():
            number = int(name)
            if number <= compiled.groups:
                group = match.group(number)
        elif name in compiled.groupindex:
            group = match.group(name)
        out.append(group or "")
    return "".join(out)


def _dict(*items: Any) -> GoMap:
    result = GoMap()
    for i in range(0, len(items), 2):
        result[_strval(items[i])] = items[i + 1] if i + 1 < len(items) else ""
    return result


def _interface_map(name: str, value: Any) -> dict[str, Any]:
    if value is None:  # a nil map reads as an empty one
        return {}
    if not is_interface_map(value):
        raise TemplateError(f"wrong type for value; expected map[string]interface {{}}; "
                            f"got {type_name(value)}")
    return value


def _key(value: Any) -> Any:
    """A hashable stand-in with reflect.DeepEqual's equality (same type, same value)."""
    if isinstance(value, list):
        return ("list", tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("map", type_name(value), tuple((k, _key(value[k])) for k in sorted(value)))
    return (type(value).__name__, value)


def _uniq(items: Any) -> list[Any]:
    seen: set[Any] = set()
    result: list[Any] = []
    for item in _list_of("uniq", items):
        key = _key(item)
        if key not in seen:
            seen.add(key)
            result.append(item)
    return result


def _has(needle: Any, haystack: Any) -> bool:
    if haystack is None:
        return False
    key = _key(needle)
    return any(_key(item) == key for item in _list_of("has", haystack))


def _default(default: Any, *given: Any) -> Any:
    if not given or _empty(given[0]):
        return default
    return given[0]


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if not _empty(v)), None)


def _first(items: Any) -> Any:
    items = _list_of("first", items)
    return items[0] if items else None


def _last(items: Any) -> Any:
    items = _list_of("last", items)
    return items[-1] if items else None


def _rest(items: Any) -> Any:
    items = _list_of("rest", items)
    return list(items[1:]) if items else None


def _initial(items: Any) -> Any:
    items = _list_of("initial", items)
    return list(items[:-1]) if items else None


def _atoi(text: str) -> int:
    from nodefeatures.discovery.rules.expressions import parse_int

    return parse_int(text) or 0


def _repeat(count: int, text: str) -> str:
    if count < 0:
        raise TemplateError("repeat: negative Repeat count")
    _fits(count * len(text))
    return text * count


def _replace(old: str, new: str, text: str) -> str:
    count = text.count(old) if old else len(text) + 1
    _fits(len(text) + count * (len(new) - len(old)))
    return text.replace(old, new)


def _min_max(pick: Callable[..., int]) -> Callable[..., int]:
    def apply(first: Any, *rest: Any) -> int:
        return Int64(pick([_to_int64(first), *(_to_int64(v) for v in rest)]))
    return apply


class Function:
    """A function's Go signature (parameter kinds: string, int, bool, any) and body."""

    __slots__ = ("body", "params", "variadic")

    def __init__(self, params: tuple[str, ...], body: Callable[..., Any],
                 variadic: str | None = None) -> None:
        self.params = params
        self.body = body
        self.variadic = variadic  # the kind of a trailing ...param


def _f(params: str, body: Callable[..., Any], variadic: str | None = None) -> Function:
    return Function(tuple(params.split()) if params else (), body, variadic)


FUNCTIONS: dict[str, Function] = {
    # text/template's own functions (and, or and not are evaluated by the executor).
    "eq": _f("any", eq, "any"), "ne": _f("any any", ne), "lt": _f("any any", lt),
    "le": _f("any any", le), "gt": _f("any any", gt), "ge": _f("any any", ge),
    "len": _f("any", go_len), "index": _f("any", index, "any"),
    "slice": _f("any", go_slice, "any"),
    "print": _f("", lambda *a: sprint(list(a), False), "any"),
    "println": _f("", lambda *a: sprint(list(a), True), "any"),
    "printf": _f("string", lambda f, *a: sprintf(f, list(a)), "any"),
    # Sprig: strings.
    "trim": _f("string", go_trim_space),
    "trimAll": _f("string string", lambda cut, s: s.strip(cut)),
    "trimPrefix": _f("string string", lambda p, s: s.removeprefix(p)),
    "trimSuffix": _f("string string", lambda p, s: s.removesuffix(p)),
    "upper": _f("string", lambda s: _simple_case(s, True)),
    "lower": _f("string", lambda s: _simple_case(s, False)),
    "title": _f("string", _title),
    "replace": _f("string string string", _replace),
    "contains": _f("string string", lambda sub, s: sub in s),
    "hasPrefix": _f("string string", lambda p, s: s.startswith(p)),
    "hasSuffix": _f("string string", lambda p, s: s.endswith(p)),
    "repeat": _f("int string", _repeat),
    "substr": _f("int int string", _substr),
    "trunc": _f("int string", _trunc),
    "nospace": _f("string", lambda s: "".join(c for c in s if c not in _GO_SPACE)),
    "quote": _f("", lambda *a: " ".join(go_quote(_strval(v)) for v in a if v is not None),
                "any"),
    "squote": _f("", lambda *a: " ".join(f"'{_strval(v)}'" for v in a if v is not None),
                 "any"),
    "cat": _f("", lambda *a: " ".join(go_string(v) for v in a if v is not None), "any"),
    "splitList": _f("string string", _split_list),
    "join": _f("string any", _join),
    "toString": _f("any", _strval),
    "atoi": _f("string", _atoi),
    "int": _f("any", lambda v: _wrap(_to_int64(v))),
    "int64": _f("any", lambda v: Int64(_wrap(_to_int64(v)))),
    # Sprig: regular expressions (Go's RE2 syntax, refused where Python would differ).
    "regexMatch": _f("string string", _regex_match),
    "regexFind": _f("string string", _regex_find),
    "regexFindAll": _f("string string int", _regex_find_all),
    "regexReplaceAll": _f("string string string", _regex_replace),
    "regexReplaceAllLiteral": _f("string string string", _regex_replace_literal),
    # Sprig: defaults and logic.
    "default": _f("any", _default, "any"),
    "empty": _f("any", _empty),
    "coalesce": _f("", _coalesce, "any"),
    "ternary": _f("any any bool", lambda yes, no, cond: yes if cond else no),
    # Sprig: integer arithmetic (int64, wrapping as Go's does).
    "add": _f("", lambda *a: Int64(_wrap(sum(_to_int64(v) for v in a))), "any"),
    "add1": _f("any", lambda v: Int64(_wrap(_to_int64(v) + 1))),
    "sub": _f("any any", lambda a, b: Int64(_wrap(_to_int64(a) - _to_int64(b)))),
    "mul": _f("any", lambda a, *r: Int64(_wrap(math.prod([_to_int64(a),
                                                          *map(_to_int64, r)]))), "any"),
    "div": _f("any any", lambda a, b: Int64(_wrap(_go_div(_to_int64(a), _to_int64(b),
                                                          "div")))),
    "mod": _f("any any", lambda a, b: Int64(_wrap(_go_mod(_to_int64(a), _to_int64(b))))),
    "max": _f("any", _min_max(max), "any"),
    "min": _f("any", _min_max(min), "any"),
    # Sprig: lists.
    "list": _f("", lambda *a: _items(list(a)), "any"),
    "first": _f("any", _first), "last": _f("any", _last),
    "rest": _f("any", _rest), "initial": _f("any", _initial),
    "uniq": _f("any", _uniq), "has": _f("any any", _has),
    "compact": _f("any", lambda v: [i for i in _list_of("compact", v) if not _empty(i)]),
    "sortAlpha": _f("any", lambda v: sorted(_strslice(v))),
    "append": _f("any any", lambda v, i: _items([*_list_of("append", v), i])),
    "prepend": _f("any any", lambda v, i: _items([i, *_list_of("prepend", v)])),
    # Sprig: dicts (map[string]interface{} only, as in Go).
    "dict": _f("", _dict, "any"),
    "get": _f("any string", lambda d, k: _interface_map("get", d).get(k, "")),
    "hasKey": _f("any string", lambda d, k: k in _interface_map("hasKey", d)),
    # Go's map order is random; sorted is one of the orders Go may give.
    "keys": _f("", lambda *ds: [k for d in ds for k in sorted(_interface_map("keys", d))],
               "any"),
}
# Executed by the evaluator, which must not evaluate every argument first.
LAZY = ("and", "or", "not")
# Removed by NFD; a template that names them does not parse there either.
REMOVED = ("env", "expandenv", "getHostByName")
