"""Rules from `custom.d` directories: every file a YAML list of rules.

As nfd-worker: files are read in name order, hidden files are skipped, and one level
of subdirectories is read (a ConfigMap mounted there keeps its files in one). A file
that does not parse, or holds an invalid rule, costs that file's rules only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nodefeatures.discovery.config import MAX_NODES, yaml_problem
from nodefeatures.discovery.source import Context

if TYPE_CHECKING:
    from nodefeatures.discovery.rules.model import Problem, Rule

# NFD's directory, then ours.
DIRECTORIES = (
    "etc/kubernetes/node-feature-discovery/custom.d",
    "etc/nodefeatures/custom.d",
)
MAX_FILE_SIZE = 1024 * 1024


@dataclass
class Loaded:
    rules: list[Rule] = field(default_factory=list)
    # (file as shown, problem) for every file that lost its rules.
    problems: list[tuple[str, Problem]] = field(default_factory=list)


def rule_files(ctx: Context, directory: str) -> list[str]:
    files = []
    for name in sorted(ctx.root.listdir(directory)):
        if name.startswith("."):
            continue
        path = f"{directory}/{name}"
        if ctx.root.is_dir(path):
            files += [f"{path}/{inner}" for inner in sorted(ctx.root.listdir(path))
                      if not inner.startswith(".") and ctx.root.is_file(f"{path}/{inner}")]
        elif ctx.root.is_file(path):
            files.append(path)
    return files


def load(ctx: Context) -> Loaded:
    """Every custom.d file's rules; the engine's model loads only when a file exists."""
    loaded = Loaded()
    for directory in DIRECTORIES:
        for path in rule_files(ctx, directory):
            shown = ctx.root.display(path)
            # A FIFO or device swapped in after the listing is never opened, let alone read.
            read = ctx.root.read_regular(path, limit=MAX_FILE_SIZE)
            data = None if read is None else read[0]
            if data is None:
                from nodefeatures.discovery.rules.model import Problem

                loaded.problems.append((shown, Problem("(file)", "cannot be read")))
                continue
            rules, problems = parse_file(data, shown)
            loaded.rules += rules
            loaded.problems += [(shown, p) for p in problems]
    return loaded


def parse_file(data: bytes, origin: str) -> tuple[list[Rule], list[Problem]]:
    """The rules of one file, or none and why."""
    import yaml  # only when a custom.d file exists: a noticeable part of a cold start

    from nodefeatures.discovery.rules.model import Problem, parse_rules

    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        return [], [Problem("(file)", "not UTF-8 text")]
    except yaml.YAMLError as exc:
        # PyYAML's own message quotes the file; the file may hold what must not leave the node.
        return [], [Problem("(file)", f"not valid YAML{yaml_problem(exc)}")]
    except RecursionError:
        return [], [Problem("(file)", "nested too deeply to read")]
    except ValueError as exc:  # int() of a literal past Python's digit limit
        return [], [Problem("(file)", f"not usable YAML: {' '.join(str(exc).split())}")]
    if document is None:
        return [], []
    if _too_large(document):
        # Aliases repeat a subtree without its text: 100 KB can stand for hours of rules.
        return [], [Problem("(file)", f"too large: more than {MAX_NODES} values (counting "
                                      "what aliases repeat)")]
    try:
        rules, problems = parse_rules(document, origin=origin)
    except RecursionError:
        return [], [Problem("(file)", "nested too deeply to read")]
    return ([], problems) if problems else (rules, [])


def _too_large(document: object) -> bool:
    """Whether the tree holds more than MAX_NODES values once aliases are expanded."""
    stack = [document]
    counted = 1  # counted when pushed, so a list that holds itself many times stops early
    while stack:
        value = stack.pop()
        children = value.values() if isinstance(value, dict) else value \
            if isinstance(value, list) else ()
        counted += len(children)
        if counted > MAX_NODES:
            return True
        stack.extend(children)
    return False
