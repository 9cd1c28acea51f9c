"""Go's text/template, the part that rules use: parsing and execution with Go's semantics.

Supported: text and `{{ }}` actions with `{{-` / `-}}` trimming and comments; pipelines
with `|`; `if` / `else if` / `else with` / `else`, `with`, `range` (slices, maps in
sorted key order, integers; one or two variables; `else`; `break` / `continue`);
variables (`$`, `$x := ...`, `$x = ...`); fields and map keys (`.Name`, `$x.key`,
`(pipeline).field`); literals; `and` / `or` (short-circuit) / `not`; the functions of
`gofuncs`. Execution is as Go's with the option `missingkey=error` (NFD's): a missing
map key is an error. `define`, `template`, `block` and functions outside `gofuncs`
are refused when the template is parsed.

Execution is bounded (output size, steps, values made), and parsing bounds nesting, so a
hostile template costs an error, not the agent's time or memory.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from nodefeatures.discovery.rules.gofuncs import (
    FUNCTIONS,
    LAZY,
    REMOVED,
    GoMap,
    TemplateError,
    go_quote,
    go_string,
    go_trim_space,
    parse_int_base0,
    truth,
    type_name,
)

MAX_TEMPLATE = 64 * 1024  # NFD refuses larger templates
MAX_OUTPUT = 256 * 1024
MAX_STEPS = 200_000  # commands evaluated plus range iterations
MAX_MADE = 4 * 1024 * 1024  # characters (and list items) made by functions, in all
MAX_DEPTH = 50  # nesting of blocks and parentheses

_SPACE = " \t\r\n"
_DIGITS = "0123456789"  # Go's numbers are ASCII; Python's isdigit() is not
_KEYWORDS = ("if", "else", "end", "range", "with", "break", "continue", "define",
             "template", "block")


# -- lexing -----------------------------------------------------------------------------

class Token:
    # Plain classes, not dataclasses: this module loads while a pass runs.
    __slots__ = ("kind", "line", "spaced", "value")

    def __init__(self, kind: str, value: str, line: int, spaced: bool = False) -> None:
        self.kind = kind  # text, open, close, word, field, var, string, number, char, ...
        self.value = value
        self.line = line
        self.spaced = spaced  # whitespace came before it (separates arguments)


def lex(source: str) -> list[Token]:
    _line = _Lines(source)
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        start = source.find("{{", i)
        if start < 0:
            tokens.append(Token("text", source[i:], _line(source, i)))
            break
        text = source[i:start]
        inner = start + 2
        if source.startswith("-", inner) and inner + 1 < n and source[inner + 1] in _SPACE:
            text = text.rstrip(_SPACE)
            inner += 2
        if text:
            tokens.append(Token("text", text, _line(source, i)))
        line = _line(source, start)
        if source.startswith("/*", inner):  # a comment starts right after the delimiter
            i = _comment(source, inner, line)
            continue
        tokens.append(Token("open", "{{", line))
        i = _action(source, inner, tokens, _line)
    tokens.append(Token("eof", "", _line(source, n)))
    return tokens


class _Lines:
    """Line numbers by position, found by bisection (counting from the start each time
    would make lexing a 64 KiB template quadratic)."""

    def __init__(self, source: str) -> None:
        self.breaks = [i for i, char in enumerate(source) if char == "\n"]

    def __call__(self, source: str, at: int) -> int:
        return bisect_left(self.breaks, at) + 1


def _comment(source: str, at: int, line: int) -> int:
    end = source.find("*/", at + 2)
    if end < 0:
        raise TemplateError(f"line {line}: unclosed comment")
    after = end + 2
    if source.startswith("}}", after):
        return after + 2
    if after < len(source) and source[after] in _SPACE and source.startswith("-}}",
                                                                           after + 1):
        rest = after + 4
        return rest + (len(source[rest:]) - len(source[rest:].lstrip(_SPACE)))
    raise TemplateError(f"line {line}: comment ends before closing delimiter")


def _action(source: str, i: int, tokens: list[Token], _line: _Lines) -> int:
    n = len(source)
    spaced = True
    while True:
        if i >= n:
            raise TemplateError(f"line {_line(source, n)}: unclosed action")
        char = source[i]
        line = _line(source, i)
        if char in _SPACE:
            j = i
            while j < n and source[j] in _SPACE:
                j += 1
            if source.startswith("-}}", j):
                tokens.append(Token("close", "}}", line))
                j += 3
                return j + (len(source[j:]) - len(source[j:].lstrip(_SPACE)))
            i, spaced = j, True
            continue
        if source.startswith("}}", i):
            tokens.append(Token("close", "}}", line))
            return i + 2
        if char == '"':
            j = i + 1
            while j < n and source[j] != '"':
                if source[j] == "\\":
                    j += 1
                elif source[j] == "\n":
                    raise TemplateError(f"line {line}: unterminated quoted string")
                j += 1
            if j >= n:
                raise TemplateError(f"line {line}: unterminated quoted string")
            tokens.append(Token("string", _unquote(source[i + 1:j], line), line, spaced))
            i = j + 1
        elif char == "`":
            j = source.find("`", i + 1)
            if j < 0:
                raise TemplateError(f"line {line}: unterminated raw quoted string")
            tokens.append(Token("string", source[i + 1:j], line, spaced))
            i = j + 1
        elif char == "'":
            j = i + 1
            while j < n and source[j] != "'":
                j += 2 if source[j] == "\\" else 1
            if j >= n:
                raise TemplateError(f"line {line}: unterminated character constant")
            value = _unquote(source[i + 1:j], line)
            if len(value) != 1:
                raise TemplateError(f"line {line}: malformed character constant")
            tokens.append(Token("char", str(ord(value)), line, spaced))
            i = j + 1
        elif char in "|(),":
            tokens.append(Token("punct", char, line, spaced))
            i += 1
        elif source.startswith(":=", i):
            tokens.append(Token("punct", ":=", line, spaced))
            i += 2
        elif char == "=":
            tokens.append(Token("punct", "=", line, spaced))
            i += 1
        elif char in _DIGITS or (char in "+-." and i + 1 < n and source[i + 1] in _DIGITS):
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] in "._" or (
                    source[j] in "+-" and source[j - 1] in "eEpP"
                    and not source[i:j].lower().startswith(("0x", "-0x", "+0x")))):
                j += 1
            tokens.append(Token("number", source[i:j], line, spaced))
            i = j
        elif char in ".$":
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] in "_."):
                j += 1
            text = source[i:j]
            kind = "field" if char == "." else "var"
            if kind == "var" and "." in text[1:]:
                head, _, rest = text.partition(".")
                tokens.append(Token("var", head, line, spaced))
                tokens.append(Token("field", "." + rest, line, False))
            else:
                tokens.append(Token(kind, text, line, spaced))
            i = j
        elif char.isalpha() or char == "_":
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            tokens.append(Token("word", source[i:j], line, spaced))
            i = j
        else:
            raise TemplateError(f"line {line}: unexpected {char!r} in action")
        spaced = False


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", "\\": "\\", '"': '"', "'": "'"}


def _unquote(body: str, line: int) -> str:
    """A Go interpreted string literal's body (strconv.Unquote's escapes)."""
    out, i, n = [], 0, len(body)
    while i < n:
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= n:
            raise TemplateError(f"line {line}: bad escape in string")
        code = body[i + 1]
        if code in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[code])
            i += 2
        elif code in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[i + 2:i + 2 + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise TemplateError(f"line {line}: bad \\{code} escape in string")
            value = int(digits, 16)
            if code == "x" and value >= 0x80:
                raise TemplateError(f"line {line}: \\x escapes above 7f are not supported")
            if value > 0x10FFFF or 0xD800 <= value < 0xE000:
                raise TemplateError(f"line {line}: escape is not a valid character")
            out.append(chr(value))
            i += 2 + size
        elif code in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                raise TemplateError(f"line {line}: bad octal escape in string")
            if int(digits, 8) >= 0x80:
                raise TemplateError(f"line {line}: octal escapes above 177 are not supported")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise TemplateError(f"line {line}: unknown escape \\{code} in string")
    return "".join(out)


# -- the tree ---------------------------------------------------------------------------

class Operand:
    __slots__ = ("fields", "kind", "text", "value")

    def __init__(self, kind: str, value: Any = None, fields: tuple[str, ...] = (),
                 text: str = "") -> None:
        self.kind = kind  # field, var, dot, nil, bool, number, string, func, pipe
        self.value = value  # field names, variable name, constant, function name, Pipe
        self.fields = fields  # a chain after a variable or parenthesised pipeline
        self.text = text  # a number's literal text


class Command:
    __slots__ = ("args", "line")

    def __init__(self, args: list[Operand], line: int) -> None:
        self.args = args
        self.line = line


class Pipe:
    __slots__ = ("assign", "commands", "decl", "line")

    def __init__(self, commands: list[Command], decl: tuple[str, ...] = (),
                 assign: bool = False, line: int = 0) -> None:
        self.commands = commands
        self.decl = decl
        self.assign = assign
        self.line = line


class Node:
    __slots__ = ("body", "kind", "line", "orelse", "pipe", "text")

    def __init__(self, kind: str, text: str = "", pipe: Pipe | None = None,
                 body: list[Node] | None = None, orelse: list[Node] | None = None,
                 line: int = 0) -> None:
        self.kind = kind  # text, action, if, with, range, break, continue
        self.text = text
        self.pipe = pipe
        self.body = body or []
        self.orelse = orelse or []
        self.line = line


# -- parsing ----------------------------------------------------------------------------

class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.vars: list[str] = ["$"]
        self.depth = 0
        self.in_range = 0

    def peek(self) -> Token:
        return self.tokens[self.at]

    def next(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, token: Token, message: str) -> TemplateError:
        return TemplateError(f"line {token.line}: {message}")

    def nest(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(token, f"nested deeper than {MAX_DEPTH} levels")

    def parse(self) -> list[Node]:
        nodes, end = self.list_until()
        if end is not None:
            raise self.fail(end, f"unexpected {{{{{end.value}}}}}")
        return nodes

    def list_until(self) -> tuple[list[Node], Token | None]:
        """Nodes up to an {{end}} or {{else}} (returned, consumed up to the keyword)."""
        nodes: list[Node] = []
        while True:
            token = self.next()
            if token.kind == "eof":
                self.at -= 1
                return nodes, None
            if token.kind == "text":
                nodes.append(Node("text", token.value, line=token.line))
                continue
            word = self.peek()
            if word.kind == "word" and word.value in ("end", "else"):
                self.next()
                return nodes, word
            nodes.append(self.action(word))

    def action(self, word: Token) -> Node:
        if word.kind == "word" and word.value in _KEYWORDS:
            self.next()
            if word.value in ("if", "with", "range"):
                return self.control(word.value, word)
            if word.value in ("break", "continue"):
                if not self.in_range:
                    raise self.fail(word, f"{{{{{word.value}}}}} outside {{{{range}}}}")
                self.expect_close(word.value)
                return Node(word.value, line=word.line)
            raise self.fail(word, f"{{{{{word.value}}}}} is not supported in rule templates")
        pipe = self.pipeline("command")
        self.expect_close("command")
        return Node("action", pipe=pipe, line=word.line)

    def expect_close(self, context: str) -> None:
        token = self.next()
        if token.kind != "close":
            raise self.fail(token, f"unexpected {token.value!r} in {context}")

    def control(self, kind: str, word: Token) -> Node:
        self.nest(word)
        mark = len(self.vars)
        pipe = self.pipeline(kind)
        self.expect_close(kind)
        if kind == "range":
            self.in_range += 1
        body, end = self.list_until()
        if kind == "range":
            self.in_range -= 1
        if end is None:
            raise self.fail(self.peek(), f"unexpected EOF in {{{{{kind}}}}}")
        orelse: list[Node] = []
        if end.value == "else":
            following = self.peek()
            if following.kind == "word" and following.value == kind != "range":
                # `else if` / `else with`: a nested control sharing this one's {{end}}.
                self.next()
                orelse = [self.control(following.value, following)]
            else:
                self.expect_close("else")
                orelse, end = self.list_until()
                if end is None or end.value != "end":
                    raise self.fail(end or self.peek(), f"expected {{{{end}}}} in {kind}")
                self.expect_close("end")
        else:
            self.expect_close("end")
        del self.vars[mark:]
        self.depth -= 1
        return Node(kind, pipe=pipe, body=body, orelse=orelse, line=word.line)

    def pipeline(self, context: str) -> Pipe:
        start = self.peek()
        decl, assign = self.declaration(context)
        commands: list[Command] = []
        while True:
            token = self.peek()
            if token.kind in ("close", "eof") or (token.kind == "punct" and token.value == ")"):
                break
            commands.append(self.command())
            token = self.peek()
            if token.kind == "punct" and token.value == "|":
                self.next()
                if self.peek().kind == "close" or self.peek().value == ")":
                    raise self.fail(token, "missing command after |")
                continue
        if not commands:
            raise self.fail(start, f"missing value for {context}")
        for index, command in enumerate(commands[1:], 2):
            if command.args[0].kind in ("bool", "dot", "nil", "number", "string"):
                raise self.fail(start, f"non executable command in pipeline stage {index}")
        if not assign:
            self.vars.extend(decl)
        return Pipe(commands, decl, assign, start.line)

    def declaration(self, context: str) -> tuple[tuple[str, ...], bool]:
        first = self.peek()
        if first.kind != "var":
            return (), False
        following = self.tokens[self.at + 1]
        names = [first.value]
        if following.kind == "punct" and following.value == "," and context == "range":
            second = self.tokens[self.at + 2]
            if second.kind != "var":
                raise self.fail(second, "range can only initialize variables")
            names.append(second.value)
            following = self.tokens[self.at + 3]
            if not (following.kind == "punct" and following.value in (":=", "=")):
                raise self.fail(following, "expected := or = after range variables")
        if following.kind == "punct" and following.value in (":=", "="):
            assign = following.value == "="
            self.at += 2 * len(names)  # `$x :=` or `$i , $e :=`
            for name in names:
                if name == "$":
                    raise self.fail(first, "cannot declare or assign $")
                if assign and name not in self.vars:
                    raise self.fail(first, f"undefined variable {name!r}")
            return tuple(names), assign
        return (), False

    def command(self) -> Command:
        line = self.peek().line
        args: list[Operand] = []
        while True:
            token = self.peek()
            if token.kind in ("close", "eof") or (token.kind == "punct"
                                                  and token.value in ("|", ")")):
                break
            if args and not token.spaced:
                raise self.fail(token, f"missing space before {token.value!r}")
            args.append(self.operand())
        if not args:
            raise self.fail(self.peek(), "empty command")
        return Command(args, line)

    def operand(self) -> Operand:
        token = self.next()
        if token.kind == "field":
            if token.value == ".":
                operand = Operand("dot")
            else:
                operand = Operand("field", tuple(token.value[1:].split(".")))
                self.check_fields(token, operand.value)
            return self.chain(operand)
        if token.kind == "var":
            if token.value not in self.vars:
                raise self.fail(token, f"undefined variable {token.value!r}")
            return self.chain(Operand("var", token.value))
        if token.kind == "string":
            return Operand("string", token.value)
        if token.kind in ("number", "char"):
            return Operand("number", _number(token), text=token.value)
        if token.kind == "word":
            if token.value in ("true", "false"):
                return Operand("bool", token.value == "true")
            if token.value == "nil":
                return Operand("nil")
            if token.value in _KEYWORDS:
                raise self.fail(token, f"unexpected {token.value!r} in operand")
            if token.value in REMOVED:
                raise self.fail(token, f'function "{token.value}" not defined (NFD removes it)')
            if token.value not in FUNCTIONS and token.value not in LAZY:
                raise self.fail(token, f'function "{token.value}" not defined or not '
                                       "supported in rule templates")
            return Operand("func", token.value)
        if token.kind == "punct" and token.value == "(":
            self.nest(token)
            pipe = self.pipeline("parenthesized pipeline")
            close = self.next()
            if not (close.kind == "punct" and close.value == ")"):
                raise self.fail(close, "unclosed left paren")
            self.depth -= 1
            return self.chain(Operand("pipe", pipe))
        raise self.fail(token, f"unexpected {token.value or token.kind!r} in operand")

    def check_fields(self, token: Token, names: tuple[str, ...]) -> None:
        if any(not name for name in names):
            raise self.fail(token, f"bad field {token.value!r}")

    def chain(self, operand: Operand) -> Operand:
        token = self.peek()
        if token.kind == "field" and not token.spaced and token.value != ".":
            self.next()
            names = tuple(token.value[1:].split("."))
            self.check_fields(token, names)
            if operand.kind == "field":
                operand.value = operand.value + names
            elif operand.kind == "dot":
                raise self.fail(token, "unexpected . after term")
            else:
                operand.fields = operand.fields + names
        return operand


def _number(token: Token) -> int | float:
    text = token.value
    if token.kind == "char":
        return int(text)
    if not text.isascii():
        raise TemplateError(f"line {token.line}: bad number syntax: {text!r}")
    parsed = parse_int_base0(text)
    if parsed is not None:
        return parsed
    if text.lower().lstrip("+-").startswith("0x") or text.endswith("i"):
        raise TemplateError(f"line {token.line}: number {text!r} is not supported")
    try:
        if "__" in text or text.endswith("_") or text.startswith("_"):
            raise ValueError
        return float(text.replace("_", ""))
    except ValueError:
        raise TemplateError(f"line {token.line}: bad number syntax: {text!r}") from None


# -- execution --------------------------------------------------------------------------

_PLAIN = ("field", "var", "dot", "pipe", "func")  # operands whose value needs no type check
_SIZED = (str, list, dict, GoMap)


class _Missing:
    """No piped value (Go's missingVal)."""


_MISSING = _Missing()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Template:
    """A parsed template; `execute` renders it over data."""

    def __init__(self, source: str) -> None:
        if len(source.encode()) > MAX_TEMPLATE:
            raise TemplateError(f"template exceeds {MAX_TEMPLATE} bytes")
        self.nodes = _Parser(lex(source)).parse()

    def execute(self, data: Any) -> str:
        state = _State(data)
        try:
            state.walk(self.nodes, data)
        except RecursionError:
            # Values nested by a loop (`$x = list $x`) would print or compare that deep.
            raise TemplateError("values nested too deeply") from None
        return "".join(state.out)


@lru_cache(maxsize=512)
def parse(source: str) -> Template:
    """A parsed template; the same rule text is parsed once, not on every pass."""
    return Template(source)


class _State:
    def __init__(self, data: Any) -> None:
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.made = 0
        self.vars: list[list[Any]] = [["$", data]]

    def fail(self, line: int, message: str) -> TemplateError:
        return TemplateError(f"line {line}: {message}")

    def step(self, line: int) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise self.fail(line, f"template runs more than {MAX_STEPS} steps")

    def emit(self, text: str, line: int) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise self.fail(line, f"template output exceeds {MAX_OUTPUT} characters")
        self.out.append(text)

    def walk(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            kind = node.kind
            if kind == "text":
                self.emit(node.text, node.line)
            elif kind == "action":
                assert node.pipe is not None
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    shown = "<no value>" if value is None else value if isinstance(
                        value, str) else go_string(value, MAX_OUTPUT + 1)
                    self.emit(shown, node.line)
            elif kind in ("if", "with"):
                mark = len(self.vars)
                assert node.pipe is not None
                value = self.pipeline(node.pipe, dot)
                if truth(value):
                    self.walk(node.body, value if kind == "with" else dot)
                else:
                    self.walk(node.orelse, dot)
                del self.vars[mark:]
            elif kind == "range":
                self.range(node, dot)
            elif kind == "break":
                raise _Break
            elif kind == "continue":
                raise _Continue

    def range(self, node: Node, dot: Any) -> None:
        mark = len(self.vars)
        assert node.pipe is not None
        value = self.pipeline(node.pipe, dot)
        inner = len(self.vars)
        decl = node.pipe.decl
        if isinstance(value, list):
            items: Any = enumerate(value)
        elif isinstance(value, dict):
            if any(not isinstance(k, str) for k in value):
                raise self.fail(node.line, "range over a map with non-string keys")
            items = ((k, value[k]) for k in sorted(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(decl) > 1:
                raise self.fail(node.line, "can't use two variables when ranging over int")
            items = ((i, i) for i in range(max(value, 0)))
        elif value is None:
            items = iter(())
        else:
            raise self.fail(node.line, f"range can't iterate over {go_string(value)}")
        ran = False
        for key, element in items:
            ran = True
            self.step(node.line)
            if decl:
                if node.pipe.assign:
                    self.assign(decl[-1], element, node.line)
                    if len(decl) == 2:
                        self.assign(decl[0], key, node.line)
                else:
                    self.vars[inner - 1][1] = element
                    if len(decl) == 2:
                        self.vars[inner - 2][1] = key
            try:
                self.walk(node.body, element)
            except _Break:
                del self.vars[inner:]
                break
            except _Continue:
                pass
            del self.vars[inner:]
        if not ran:
            self.walk(node.orelse, dot)
        del self.vars[mark:]

    def lookup(self, name: str, line: int) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self.fail(line, f"undefined variable: {name}")

    def assign(self, name: str, value: Any, line: int) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.fail(line, f"undefined variable: {name}")

    def pipeline(self, pipe: Pipe, dot: Any) -> Any:
        value: Any = _MISSING
        for command in pipe.commands:
            value = self.command(command, dot, value)
        for name in pipe.decl:
            if pipe.assign:
                self.assign(name, value, pipe.line)
            else:
                self.vars.append([name, value])
        return value

    def command(self, command: Command, dot: Any, final: Any) -> Any:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise self.fail(command.line, f"template runs more than {MAX_STEPS} steps")
        first = command.args[0]
        line = command.line
        if first.kind == "func":
            return self.call(first.value, command.args[1:], dot, final, line)
        if first.kind in ("field", "var") or (first.kind == "pipe" and first.fields):
            if len(command.args) > 1 or final is not _MISSING:
                name = ".".join(first.fields or first.value) if first.kind != "var" else (
                    first.value)
                raise self.fail(line, f"{name} is not a method but has arguments")
            return self.operand(first, dot, line)
        if len(command.args) > 1 or final is not _MISSING:
            raise self.fail(line, "can't give argument to non-function "
                                  f"{_shown(first)}")
        if first.kind == "nil":
            raise self.fail(line, "nil is not a command")
        return self.operand(first, dot, line)

    def operand(self, operand: Operand, dot: Any, line: int) -> Any:
        kind = operand.kind
        if kind == "dot":
            return dot
        if kind == "field":
            return self.fields(dot, operand.value, line)
        if kind == "var":
            return self.fields(self.lookup(operand.value, line), operand.fields, line)
        if kind == "pipe":
            return self.fields(self.pipeline(operand.value, dot), operand.fields, line)
        if kind == "func":
            return self.call(operand.value, [], dot, _MISSING, line)
        if kind in ("bool", "string", "number"):
            return operand.value
        return None  # nil

    def fields(self, value: Any, names: tuple[str, ...], line: int) -> Any:
        for name in names:
            if isinstance(value, dict):
                if name not in value:
                    raise self.fail(line, f"map has no entry for key {go_quote(name)}")
                value = value[name]
            elif value is None:
                raise self.fail(line, f"nil data; no entry for key {go_quote(name)}")
            else:
                raise self.fail(line, f"can't evaluate field {name} in type "
                                      f"{type_name(value)}")
        return value

    def call(self, name: str, args: list[Operand], dot: Any, final: Any, line: int) -> Any:
        if name in LAZY:
            return self.lazy(name, args, dot, final, line)
        function = FUNCTIONS[name]
        count = len(args) + (final is not _MISSING)
        want = len(function.params)
        if count < want or (count > want and function.variadic is None):
            raise self.fail(line, f"wrong number of args for {name}: want "
                                  f"{want}{' or more' if function.variadic else ''} got {count}")
        params, variadic = function.params, function.variadic
        values = []
        for index, arg in enumerate(args):
            kind = params[index] if index < want else variadic
            if arg.kind in _PLAIN and kind == "any":
                values.append(self.operand(arg, dot, line))  # the common case, made cheap
            else:
                values.append(self.argument(arg, kind or "any", dot, line, name))
        if final is not _MISSING:
            kind = params[count - 1] if count <= want else variadic
            values.append(final if kind == "any" else self.check(final, kind or "any", line,
                                                                  name))
        try:
            result = function.body(*values)
        except TemplateError as exc:
            raise self.fail(line, f"error calling {name}: {exc}") from None
        except (ValueError, TypeError, IndexError, KeyError, OverflowError,
                RecursionError) as exc:
            raise self.fail(line, f"error calling {name}: {exc}") from None
        self.made += len(result) if type(result) in _SIZED else 1
        if self.made > MAX_MADE:
            raise self.fail(line, f"template makes more than {MAX_MADE} characters of values")
        return result

    def argument(self, arg: Operand, kind: str, dot: Any, line: int, name: str) -> Any:
        if arg.kind == "number":
            if kind == "int" and not isinstance(arg.value, int):
                raise self.fail(line, f"expected integer; found {arg.text}")
            if kind in ("string", "bool"):
                raise self.fail(line, f"expected {kind}; found {arg.text}")
        elif arg.kind == "string" and kind in ("int", "bool"):
            raise self.fail(line, f"expected {kind}; found {go_string(arg.value)!r}")
        elif arg.kind == "bool" and kind in ("int", "string"):
            raise self.fail(line, f"expected {kind}; found {arg.value}")
        elif arg.kind == "nil" and kind != "any":
            raise self.fail(line, f"cannot assign nil to {kind}")
        value = self.operand(arg, dot, line)
        return self.check(value, kind, line, name)

    def check(self, value: Any, kind: str, line: int, name: str) -> Any:
        if kind == "any":
            return value
        if kind == "string":
            ok = isinstance(value, str)
        elif kind == "bool":
            ok = isinstance(value, bool)
        else:  # Go's int: not bool, not Sprig's int64
            ok = type(value) is int
        if not ok:
            if value is None:
                raise self.fail(line, f"invalid value; expected {kind}")
            raise self.fail(line, f"wrong type for value; expected {kind}; got "
                                  f"{type_name(value)}")
        return value

    def lazy(self, name: str, args: list[Operand], dot: Any, final: Any, line: int) -> Any:
        count = len(args) + (final is not _MISSING)
        if name == "not":
            if count != 1:
                raise self.fail(line, f"wrong number of args for not: want 1 got {count}")
            value = final if final is not _MISSING else self.operand(args[0], dot, line)
            return not truth(value)
        if count < 1:
            raise self.fail(line, f"wrong number of args for {name}: want at least 1 got 0")
        value: Any = None
        for arg in args:
            value = self.operand(arg, dot, line)
            if truth(value) == (name == "or"):
                return value
        if final is not _MISSING:
            value = final
        return value


def _shown(operand: Operand) -> str:
    if operand.kind == "string":
        return '"' + operand.value + '"'
    if operand.kind == "number":
        return operand.text
    if operand.kind == "bool":
        return "true" if operand.value else "false"
    if operand.kind == "dot":
        return "."
    return operand.kind


def expand_map(source: str, data: Any) -> dict[str, str]:
    """Render a labelsTemplate / varsTemplate and read its `key=value` lines, as NFD does:
    lines are trimmed, empty ones skipped, a line without `=` fails the whole template."""
    rendered = parse(source).execute(data)
    result: dict[str, str] = {}
    for raw in rendered.split("\n"):
        line = go_trim_space(raw)
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise TemplateError(f"missing value in expanded template line {line!r} "
                                "(format must be '<key>=<value>')")
        result[key] = value
    return result


def matched_data(terms: Sequence[tuple[str, Sequence[Mapping[str, str]]]]) -> GoMap:
    """What a rule's template sees, in NFD's shape: `.<domain>.<feature>` is the list of
    elements the term on `<domain>.<feature>` matched ({Name} for a flag, {Name, Value}
    for an attribute, the attributes of an instance). The name is split as written in
    the rule, so `feature: system.osRelease` is `.system.osRelease`, as in NFD."""
    data = GoMap(go_type="nodefeaturerule.matchedFeatures",
                 zero=lambda: GoMap(go_type="nodefeaturerule.domainMatchedFeatures", zero=list))
    for feature, elements in terms:
        domain, dot, name = feature.partition(".")
        if not dot:
            domain, name = feature.lower(), ""
        features = data.get(domain)
        if features is None:
            features = data[domain] = data.zero()
        found = features.setdefault(name, [])
        found.extend(GoMap(e, "nodefeaturerule.MatchedElement", str) for e in elements)
    return data


_REMEMBERED = 256  # expansions kept between passes
_REMEMBER_UP_TO = 16 * 1024  # characters of output worth keeping
_expansions: OrderedDict[tuple[str, Any], tuple[tuple[tuple[str, str], ...] | None, str]] = (
    OrderedDict())


def expand_matched(source: str, terms: Sequence[tuple[str, Sequence[Mapping[str, str]]]]
                   ) -> dict[str, str]:
    """`expand_map` over `matched_data(terms)`, remembered across passes.

    A template is a pure function of its text and the matched elements (no function here
    reads the clock, the environment or randomness), and a node's features rarely change
    between passes, so the same expansion is not run again."""
    key = (source, tuple((feature, tuple(tuple(e.items()) for e in elements))
                         for feature, elements in terms))
    known = _expansions.get(key)
    if known is None:
        try:
            result = expand_map(source, matched_data(terms))
            known = (tuple(result.items()), "")
        except TemplateError as exc:
            known = (None, str(exc))
        if sum(len(k) + len(v) for k, v in known[0] or ()) <= _REMEMBER_UP_TO:
            _expansions[key] = known
            if len(_expansions) > _REMEMBERED:
                _expansions.popitem(last=False)
    else:
        _expansions.move_to_end(key)
    items, error = known
    if items is None:
        raise TemplateError(error)
    return dict(items)


def forget_expansions() -> None:
    """Drop remembered expansions (for measuring the first pass)."""
    _expansions.clear()
