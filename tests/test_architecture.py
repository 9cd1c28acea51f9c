"""The package's rooms and the one direction imports may point (docs/architecture.md).

The rooms come from the ```rooms block of docs/architecture.md, so the page and this
test cannot drift apart: moving a module or adding a package means editing that block.
Every import counts, including those inside functions and under TYPE_CHECKING: a lazy
import still ties the two modules together for a reader.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import nodefeatures

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(nodefeatures.__file__).resolve().parent
ARCHITECTURE = REPO / "docs" / "architecture.md"


def read_rooms(text: str) -> list[tuple[str, list[str]]]:
    """The rooms, lowest first, each with the packages it holds."""
    block = re.search(r"^```rooms\n(.*?)^```", text, re.M | re.S)
    if block is None:
        raise AssertionError("docs/architecture.md has no ```rooms block")
    rooms = []
    for line in block.group(1).splitlines():
        if line.strip():
            name, _, packages = line.partition(":")
            rooms.append((name.strip(), packages.split()))
    return rooms


def module_names(package_dir: Path, top: str) -> dict[str, Path]:
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [top, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """Modules of the package that `name` imports, wherever in the file the import is."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module; `from mod import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def room_of(module: str, rooms: list[tuple[str, list[str]]], root: str = "nodefeatures"
            ) -> int | None:
    """Index of the room whose package is the longest prefix of `module`.

    The package root itself (`nodefeatures`, which holds only the version) belongs to the
    room that names it; a module placed directly beside it must be named by some room.
    """
    holders = [(len(package), index, package)
               for index, (_, packages) in enumerate(rooms) for package in packages
               if module == package or module.startswith(package + ".")]
    if not holders:
        return None
    _, index, package = max(holders)
    if package == root and module != root:
        return None
    return index


def upward_imports(graph: Mapping[str, set[str]],
                   rooms: list[tuple[str, list[str]]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = room_of(module, rooms), room_of(target, rooms)
            if low is not None and high is not None and high > low:
                problems.append(f"{module} ({rooms[low][0]}) imports {target} "
                                f"({rooms[high][0]}), a higher room")
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_pairs(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph.get(a, ())) if b in members]


@pytest.fixture(scope="module")
def rooms() -> list[tuple[str, list[str]]]:
    return read_rooms(ARCHITECTURE.read_text())


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_names(PACKAGE, "nodefeatures")
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_tests_import_the_package_from_this_checkout() -> None:
    # An editable install of this checkout, never a stray copy elsewhere on sys.path.
    assert PACKAGE == REPO / "nodefeatures"


def test_every_module_lives_in_a_room(rooms: list[tuple[str, list[str]]],
                                      graph: dict[str, set[str]]) -> None:
    homeless = [module for module in graph if room_of(module, rooms) is None]
    assert not homeless, f"modules in no room of docs/architecture.md: {homeless}"


def test_every_room_names_real_packages(rooms: list[tuple[str, list[str]]],
                                        graph: dict[str, set[str]]) -> None:
    missing = [package for _, packages in rooms for package in packages if package not in graph]
    assert not missing, f"docs/architecture.md names packages that do not exist: {missing}"


def test_imports_point_down_only(rooms: list[tuple[str, list[str]]],
                                 graph: dict[str, set[str]]) -> None:
    assert upward_imports(graph, rooms) == []


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    found = [cycle_pairs(graph, component) for component in cycles(graph)]
    assert found == [], f"import cycles: {found}"


def test_sources_never_import_the_cluster_client(graph: dict[str, set[str]]) -> None:
    for module in graph:
        if module.startswith("nodefeatures.sources"):
            text = (module_names(PACKAGE, "nodefeatures")[module]).read_text()
            assert not re.search(r"^\s*(from|import) kubernetes\b", text, re.M), module


# The checks above must be able to fail: the same functions on a made-up package.

TOY_ROOMS = [("low", ["nodefeatures", "nodefeatures.low"]), ("high", ["nodefeatures.high"])]


def test_an_upward_import_is_named_with_both_modules() -> None:
    toy = {"nodefeatures.low.a": {"nodefeatures.high.b"}, "nodefeatures.high.b": set()}
    assert upward_imports(toy, TOY_ROOMS) == [
        "nodefeatures.low.a (low) imports nodefeatures.high.b (high), a higher room"]
    assert upward_imports({"nodefeatures.high.b": {"nodefeatures.low.a"}}, TOY_ROOMS) == []


def test_a_cycle_is_found_and_named_by_its_pairs() -> None:
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    (component,) = cycles(toy)
    assert component == ["a", "b", "c"]
    assert cycle_pairs(toy, component) == ["a -> b", "b -> c", "c -> a"]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_module_directly_in_the_package_root_has_no_room() -> None:
    assert room_of("nodefeatures", TOY_ROOMS) == 0
    assert room_of("nodefeatures.stray", TOY_ROOMS) is None
    assert room_of("nodefeatures.high.x", TOY_ROOMS) == 1


def test_lazy_and_relative_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(
        "def f():\n    from toy import other\n    from . import sibling\n")
    (pkg / "other.py").write_text("")
    (pkg / "sub" / "sibling.py").write_text("")
    modules = module_names(pkg, "toy")
    assert imports_of("toy.sub.mod", modules["toy.sub.mod"], modules) == {
        "toy.other", "toy.sub.sibling"}


def test_dump_loads_neither_the_cluster_side_nor_yaml_nor_the_catalogue() -> None:
    # The cold start of `dump` is a budget (bench/dump.py): it must not pay for modules
    # only other commands need.
    fixture = REPO / "tests" / "fixtures" / "dgx-h100"
    code = ("import sys\nfrom nodefeatures.cli import main\n"
            f"try:\n    main(['dump', '--format', 'json', '--fixture', {str(fixture)!r}])\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stderr.split())
    assert "nodefeatures.sources.nvidia" in loaded  # the check sees what dump loads
    unwanted = {m for m in loaded if m.split(".")[0] in {"yaml", "kubernetes", "prometheus_client"}
                or m.startswith(("nodefeatures.cluster", "nodefeatures.cli.cluster",
                                 "nodefeatures.discovery.catalogue"))}
    assert unwanted == set()
