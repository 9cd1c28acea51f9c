"""Regular expressions matched in time linear in the text, as Go's regexp package matches.

Python's `re` backtracks: `^(a|aa)+$` against 40 `a`s and a `!` takes most of a minute,
and a rule author, or whoever writes a value a rule looks at, chooses both. InRegexp
patterns are already limited to what Go accepts (no backreferences, no lookaround), so
each is a regular language: it is parsed by Python's own parser (the same syntax tree
`re` would compile), turned into a Thompson automaton and run over the text by keeping
the set of live states (Pike's method). Every character costs at most the size of the
program, whatever the pattern; state sets seen before are looked up, not recomputed.
Only whether the pattern occurs somewhere in the text is answered (`search`), which is all
InRegexp asks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

# Instructions after expansion of counted repeats; far above any sensible pattern, and it
# bounds the work per character.
MAX_PROGRAM = 20_000
_CACHE_LIMIT = 4096

_CHAR, _SPLIT, _JMP, _ASSERT, _MATCH = range(5)
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DIGIT = frozenset("0123456789")
_SPACE = frozenset(" \t\n\r\f\v")
_CATEGORIES: dict[Any, Callable[[str], bool]] = {
    c.CATEGORY_DIGIT: _DIGIT.__contains__,
    c.CATEGORY_NOT_DIGIT: lambda ch: ch not in _DIGIT,
    c.CATEGORY_SPACE: _SPACE.__contains__,
    c.CATEGORY_NOT_SPACE: lambda ch: ch not in _SPACE,
    c.CATEGORY_WORD: _WORD.__contains__,
    c.CATEGORY_NOT_WORD: lambda ch: ch not in _WORD,
}


class TooLarge(ValueError):
    """The pattern expands to more than MAX_PROGRAM instructions."""


def _folded(ch: str) -> tuple[str, ...]:
    # ASCII only: patterns are compiled with re.ASCII, as Go's case folding of ASCII.
    if ch.isascii():
        return tuple({ch, ch.lower(), ch.upper()})
    return (ch,)


class _Compiler:
    def __init__(self) -> None:
        self.prog: list[list[Any]] = []

    def emit(self, *instruction: Any) -> int:
        if len(self.prog) >= MAX_PROGRAM:
            raise TooLarge(f"more than {MAX_PROGRAM} states once repeats are expanded")
        self.prog.append(list(instruction))
        return len(self.prog) - 1

    def sequence(self, items: Any, flags: int) -> None:
        for op, arg in items:
            self.item(op, arg, flags)

    def item(self, op: Any, arg: Any, flags: int) -> None:
        fold = bool(flags & c.SRE_FLAG_IGNORECASE)
        if op is c.LITERAL or op is c.NOT_LITERAL:
            chars = frozenset(_folded(chr(arg)) if fold else (chr(arg),))
            test = chars.__contains__ if op is c.LITERAL else (lambda ch: ch not in chars)
            self.emit(_CHAR, test)
        elif op is c.ANY:
            self.emit(_CHAR, (lambda ch: True) if flags & c.SRE_FLAG_DOTALL
                      else (lambda ch: ch != "\n"))
        elif op is c.IN:
            self.emit(_CHAR, _char_class(arg, fold))
        elif op is c.SUBPATTERN:
            _group, add, remove, inner = arg
            self.sequence(inner, (flags | add) & ~remove)
        elif op is c.BRANCH:
            self.branch(arg[1], flags)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            self.repeat(*arg, flags)
        elif op is c.AT:
            self.emit(_ASSERT, _assertion(arg, flags))
        else:
            raise ValueError(f"unsupported construct {op}")

    def branch(self, alternatives: list[Any], flags: int) -> None:
        jumps = []
        for index, alternative in enumerate(alternatives):
            if index < len(alternatives) - 1:
                split = self.emit(_SPLIT, None, None)
                self.prog[split][1] = len(self.prog)
                self.sequence(alternative, flags)
                jumps.append(self.emit(_JMP, None))
                self.prog[split][2] = len(self.prog)
            else:
                self.sequence(alternative, flags)
        for jump in jumps:
            self.prog[jump][1] = len(self.prog)

    def repeat(self, low: int, high: int, inner: Any, flags: int) -> None:
        for _ in range(low):
            self.sequence(inner, flags)
        if high == c.MAXREPEAT:
            split = self.emit(_SPLIT, None, None)
            self.prog[split][1] = len(self.prog)
            self.sequence(inner, flags)
            self.emit(_JMP, split)
            self.prog[split][2] = len(self.prog)
            return
        splits = []
        for _ in range(high - low):
            split = self.emit(_SPLIT, None, None)
            self.prog[split][1] = len(self.prog)
            splits.append(split)
            self.sequence(inner, flags)
        for split in splits:
            self.prog[split][2] = len(self.prog)


def _char_class(items: list[Any], fold: bool) -> Callable[[str], bool]:
    negate = False
    chars: set[str] = set()
    ranges: list[tuple[int, int]] = []
    tests: list[Callable[[str], bool]] = []
    for op, arg in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            chars.update(_folded(chr(arg)) if fold else (chr(arg),))
        elif op is c.RANGE:
            ranges.append(arg)
        elif op is c.CATEGORY:
            tests.append(_CATEGORIES[arg])
        else:
            raise ValueError(f"unsupported class item {op}")
    frozen = frozenset(chars)

    def member(ch: str) -> bool:
        if ch in frozen or any(test(ch) for test in tests):
            return True
        candidates = _folded(ch) if fold else (ch,)
        return any(low <= ord(x) <= high for x in candidates for low, high in ranges)

    return (lambda ch: not member(ch)) if negate else member


# An assertion looks at (at start, at end, previous char, next char, next is the last).
Context = tuple[bool, bool, str, str, bool]


def _assertion(code: Any, flags: int) -> Callable[[Context], bool]:
    multiline = bool(flags & c.SRE_FLAG_MULTILINE)
    if code is c.AT_BEGINNING_STRING or (code is c.AT_BEGINNING and not multiline):
        return lambda ctx: ctx[0]
    if code is c.AT_BEGINNING:
        return lambda ctx: ctx[0] or ctx[2] == "\n"
    if code is c.AT_END_STRING:
        return lambda ctx: ctx[1]
    if code is c.AT_END and multiline:
        return lambda ctx: ctx[1] or ctx[3] == "\n"
    if code is c.AT_END:
        # Python's `$` without MULTILINE also matches before a final newline; the Go
        # translation writes `\Z` instead, so this only mirrors `re` for completeness.
        return lambda ctx: ctx[1] or (ctx[3] == "\n" and ctx[4])
    if code is c.AT_BOUNDARY:
        return lambda ctx: (ctx[2] in _WORD) != (ctx[3] in _WORD)
    if code is c.AT_NON_BOUNDARY:
        return lambda ctx: (ctx[2] in _WORD) == (ctx[3] in _WORD)
    raise ValueError(f"unsupported assertion {code}")


class LinearPattern:
    """A compiled pattern whose `search` answers in time linear in the text."""

    def __init__(self, pattern: str, flags: int = re.ASCII) -> None:
        self.pattern = pattern
        parsed = _parser.parse(pattern, flags)
        compiler = _Compiler()
        compiler.sequence(parsed, parsed.state.flags)
        compiler.emit(_MATCH)
        self._prog = compiler.prog
        self._closures: dict[tuple[frozenset[int], Context], frozenset[int]] = {}
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def __repr__(self) -> str:
        return f"LinearPattern({self.pattern!r})"

    def _closure(self, seeds: frozenset[int], ctx: Context) -> frozenset[int]:
        prog = self._prog
        seen: set[int] = set()
        out: set[int] = set()
        stack = list(seeds)
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            kind = prog[pc][0]
            if kind == _JMP:
                stack.append(prog[pc][1])
            elif kind == _SPLIT:
                stack.append(prog[pc][2])
                stack.append(prog[pc][1])
            elif kind == _ASSERT:
                if prog[pc][1](ctx):
                    stack.append(pc + 1)
            else:
                out.add(pc)
        return frozenset(out)

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text` (as `re.search(...) is not None`)."""
        prog = self._prog
        closures, steps = self._closures, self._steps
        if len(closures) > _CACHE_LIMIT or len(steps) > _CACHE_LIMIT:
            closures.clear()
            steps.clear()
        match = len(prog) - 1
        start = frozenset((0,))
        live: frozenset[int] = frozenset()
        n = len(text)
        for pos in range(n + 1):
            prev = text[pos - 1] if pos else ""
            nxt = text[pos] if pos < n else ""
            # The 5th field: the next char is the last one (for Python's `$` before "\n").
            ctx = (pos == 0, pos == n, prev, nxt, pos == n - 1)
            seeds = live | start
            key = (seeds, ctx)
            closed = closures.get(key)
            if closed is None:
                closed = closures[key] = self._closure(seeds, ctx)
            if match in closed:
                return True
            if pos == n:
                break
            step_key = (closed, nxt)
            stepped = steps.get(step_key)
            if stepped is None:
                stepped = steps[step_key] = frozenset(
                    pc + 1 for pc in closed if prog[pc][0] == _CHAR and prog[pc][1](nxt))
            live = stepped
        return False
