"""Rule documents as users hand them to `rules test` and `rules validate`.

One file holds one of:

- NodeFeatureRule objects (`apiVersion: nfd.k8s-sigs.io/v1alpha1`, `kind:
  NodeFeatureRule`, rules under `spec.rules`), possibly several YAML documents, or a
  `List` of them as `kubectl get nodefeaturerules -o yaml` writes it;
- a plain list of rules (a `custom.d` file);
- an nfd-worker (or nodefeatures) config file, whose `sources.custom` holds the rules.

Every problem comes back with its path inside the document and, from the YAML node
marks, its line. The YAML is checked before it is built: a bounded size, nesting depth
and alias expansion, so a hostile file costs a message, not the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nodefeatures.discovery.rules.model import Problem, Rule, kind_of, parse_rules

API_VERSION = "nfd.k8s-sigs.io/v1alpha1"
KIND = "NodeFeatureRule"
OBJECT_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
MAX_DEPTH = 64  # a rule nests about 8 deep; PyYAML's composer recurses per level
MAX_NODES = 200_000  # after alias expansion: a "billion laughs" file stops here
NFD_OBJECT, RULE_LIST, CONFIG = "NodeFeatureRule", "rule list", "config sources.custom"


@dataclass(frozen=True)
class Located:
    """A problem with the document it is in (0-based) and its line (1-based, 0 unknown)."""

    problem: Problem
    line: int = 0
    document: int = 0


@dataclass
class RuleDocument:
    """What one file gave: its rules, each with its line, and every problem in it."""

    kinds: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line of each rule, 0 unknown
    # (document, path) of each rule: `spec.rules[2]`
    places: list[tuple[int, str]] = field(default_factory=list)
    problems: list[Located] = field(default_factory=list)
    templates: int = 0  # rules with labelsTemplate or varsTemplate
    marks: dict[int, dict[str, int]] = field(default_factory=dict)  # document -> path -> line

    def locate(self, document: int, path: str, message: str, rule: str = "") -> Located:
        """A problem found later (validate's checks), placed by the file's node marks."""
        return Located(Problem(path, message, rule), _line(self.marks.get(document, {}), path),
                       document)


def parse(data: bytes, origin: str) -> RuleDocument:
    """Every rule document in `data`; never raises, whatever the bytes are."""
    result = RuleDocument()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        result.problems.append(Located(Problem("", f"not UTF-8 text (byte {exc.start})")))
        return result
    import yaml

    problem = _yaml_shape(text, yaml)
    if problem is not None:
        result.problems.append(problem)
        return result
    loader = _loader(yaml)(text)
    nodes, documents = [], []
    try:
        # Composed once: the nodes give the lines, the same nodes give the data.
        while loader.check_node():
            node = loader.get_node()
            nodes.append(node)
            documents.append(loader.construct_document(node))
    except yaml.YAMLError as exc:
        result.problems.append(_yaml_error(exc))
        return result
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        result.problems.append(Located(Problem("", f"cannot be read as YAML: {exc}")))
        return result
    finally:
        loader.dispose()
    present = [(i, n, d) for i, (n, d) in enumerate(zip(nodes, documents, strict=True))
               if d is not None]
    if not present:
        result.problems.append(Located(Problem("", "holds no rules (the file is empty)")))
        return result
    for index, node, document in present:
        marks: dict[str, int] = {}
        _marks(node, "", marks, result, index)
        result.marks[index] = marks
        _document(document, index, len(present), marks, origin, result)
    return result


def _document(document: Any, index: int, count: int, marks: dict[str, int], origin: str,
              result: RuleDocument) -> None:
    def problem(path: str, message: str) -> None:
        result.problems.append(Located(Problem(path, message), _line(marks, path), index))

    if isinstance(document, list):
        if count > 1:
            problem("", "a list of rules must be the file's only YAML document "
                    "(custom.d files are read as one document)")
            return
        result.kinds.append(RULE_LIST)
        _rules(document, "", index, marks, origin, result)
        return
    if not isinstance(document, Mapping):
        problem("", "expected a NodeFeatureRule, a list of rules or a config with "
                f"sources.custom, not {kind_of(document)}")
        return
    if "kind" in document or "apiVersion" in document:
        _object(document, index, marks, origin, result, problem)
    elif "sources" in document or "core" in document:
        sources = document.get("sources")
        if not isinstance(sources, Mapping) or sources.get("custom") is None:
            problem("sources" if isinstance(sources, Mapping) else "",
                    "a config file without sources.custom holds no rules")
            return
        result.kinds.append(CONFIG)
        _rules(sources["custom"], "sources.custom", index, marks, origin, result)
    elif "name" in document and ("matchFeatures" in document or "matchAny" in document
                                 or "labels" in document):
        problem("", "a single rule: write it as a list item (`- name: ...`), as custom.d "
                "files and sources.custom hold lists of rules")
    else:
        problem("", "expected a NodeFeatureRule (apiVersion and kind), a list of rules or a "
                "config with sources.custom")


def _object(document: Mapping[str, Any], index: int, marks: dict[str, int], origin: str,
            result: RuleDocument, problem: Any, at: str = "") -> None:
    """A NodeFeatureRule, or a list of them as `kubectl get -o yaml` writes it."""
    kind, version = document.get("kind"), document.get("apiVersion")
    if kind in ("List", f"{KIND}List") and "items" in document:
        items = document["items"]
        if not isinstance(items, list):
            problem(f"{at}items", f"must be a list of {KIND} objects, not {kind_of(items)}")
            return
        for position, item in enumerate(items):
            where = f"{at}items[{position}]"
            if not isinstance(item, Mapping):
                problem(where, f"must be a {KIND}, not {kind_of(item)}")
                continue
            _object(item, index, marks, origin, result, problem, f"{where}.")
        return
    if kind != KIND:
        problem(f"{at}kind", f"kind must be {KIND}, not {kind!r}")
        return
    if version != API_VERSION:
        problem(f"{at}apiVersion", f"apiVersion must be {API_VERSION}, not {version!r}")
    for key in document:
        if key not in OBJECT_FIELDS:
            problem(f"{at}{key}", f"unknown field (expected {', '.join(OBJECT_FIELDS)})")
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        problem(f"{at}spec", f"required, a mapping with rules, not {kind_of(spec)}")
        return
    for key in spec:
        if key != "rules":
            problem(f"{at}spec.{key}", "unknown field (expected rules)")
    if "rules" not in spec:
        problem(f"{at}spec.rules", "required, a list of rules")
        return
    result.kinds.append(NFD_OBJECT)
    _rules(spec["rules"], f"{at}spec.rules", index, marks, origin, result)


def _rules(data: Any, path: str, index: int, marks: dict[str, int], origin: str,
           result: RuleDocument) -> None:
    if isinstance(data, list):
        where = path or "[0]"
        result.templates += sum(1 for item in data if isinstance(item, Mapping) and (
            item.get("labelsTemplate") or item.get("varsTemplate")))
        if not data:
            result.problems.append(Located(Problem(path, "the list of rules is empty"),
                                           _line(marks, where), index))
    rules, problems = parse_rules(data, path)
    for found in problems:
        result.problems.append(Located(found, _line(marks, found.path), index))
    items = data if isinstance(data, list) else []
    positions = [i for i, item in enumerate(items)
                 if not any(p.path == f"{path}[{i}]" or p.path.startswith(f"{path}[{i}].")
                            for p in problems)]
    for rule, position in zip(rules, positions, strict=True):
        line = _line(marks, f"{path}[{position}]")
        shown = f"{origin}:{line}" if line else origin
        result.rules.append(replace(rule, origin=shown))
        result.lines.append(line)
        result.places.append((index, f"{path}[{position}]"))


def _line(marks: Mapping[str, int], path: str) -> int:
    """The line of `path`, or of the nearest enclosing node that has one."""
    while path:
        if path in marks:
            return marks[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return marks.get("", 0)


def _marks(node: Any, path: str, marks: dict[str, int], result: RuleDocument,
           document: int) -> None:
    """Line of every node by the path the model uses (`[0].matchFeatures[1].feature`).

    Duplicate keys are reported here: YAML libraries keep the last one silently, and a
    rule that says `op` twice means only one of them.
    """
    import yaml

    marks.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _marks(item, f"{path}[{index}]", marks, result, document)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            where = f"{path}.{name}" if path else name
            if name in seen:
                result.problems.append(Located(
                    Problem(where, "duplicate key (only the last one counts)"),
                    key.start_mark.line + 1, document))
            seen.add(name)
            marks[where] = key.start_mark.line + 1  # the key that counts: the last
            _marks(value, where, marks, result, document)


def _yaml_shape(text: str, yaml: Any) -> Located | None:
    """Refuse YAML too deep or too large once aliases are expanded, before building it.

    The event stream is produced without recursion, so this is safe on any input; the
    composer and constructor that follow are not (recursion, alias bombs).
    """
    depth = 0
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    open_anchors: list[tuple[str | None, int]] = []  # (anchor, total when it opened)
    total = 0
    try:
        for event in yaml.parse(text, Loader=_loader(yaml)):
            if isinstance(event, yaml.AliasEvent):
                total += sizes.get(event.anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                total += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                total += 1
                depth += 1
                if depth > MAX_DEPTH:
                    return Located(Problem("", f"nested deeper than {MAX_DEPTH} levels"),
                                   event.start_mark.line + 1)
                open_anchors.append((event.anchor, total))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                anchor, started = open_anchors.pop()
                if anchor:
                    sizes[anchor] = total - started + 1
            if total > MAX_NODES:
                return Located(Problem("", f"more than {MAX_NODES} YAML nodes once aliases "
                                           "are expanded (an alias bomb?)"),
                               event.start_mark.line + 1)
    except yaml.YAMLError as exc:
        return _yaml_error(exc)
    return None


def _loader(yaml: Any) -> Any:
    """libyaml's safe loader where PyYAML was built with it: ten times faster on a large
    file, and the same documents, marks and errors."""
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_error(exc: Exception) -> Located:
    """The parser's own words, without its echo of the input (which may be anything)."""
    mark = getattr(exc, "problem_mark", None)
    detail = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = " ".join(f"{detail} ({context})".split() if context else str(detail).split())
    if mark is None:
        return Located(Problem("", f"not valid YAML: {detail[:200]}"))
    return Located(Problem("", f"not valid YAML: {detail[:200]} at column {mark.column + 1}"),
                   mark.line + 1)
