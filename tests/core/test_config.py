"""Config files are validated whole: a bad one is rejected, never half-applied."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from nodefeatures.discovery.config import ConfigError, build, load
from nodefeatures.discovery.labels import Label
from nodefeatures.discovery.source import Context, Features, Source


class Toy(Source):
    name = "toy"
    defaults: Mapping[str, Any] = {
        "attributeBlacklist": ["A", "B"],
        "attributeWhitelist": [],
        "nested": {"depth": 3, "enabled": True},
    }

    def discover(self, ctx: Context) -> Features:
        return Features()

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        return []

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        return ["nested.depth: must be positive"] if options["nested"]["depth"] <= 0 else []


SOURCES = {"toy": Toy()}


def test_defaults_fill_in_everything() -> None:
    config = build({}, SOURCES)
    assert config.options("toy")["attributeBlacklist"] == ["A", "B"]
    assert config.core["labelSources"] == ["all"]


def test_user_values_replace_defaults() -> None:
    config = build({"sources": {"toy": {"attributeBlacklist": [], "nested": {"depth": 5}}}},
                   SOURCES)
    assert config.options("toy")["attributeBlacklist"] == []
    assert config.options("toy")["nested"] == {"depth": 5, "enabled": True}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sources": {"toy": {"atributeBlacklist": []}}},
         "sources.toy.atributeBlacklist: unknown key"),
        ({"sources": {"toy": {"attributeBlacklist": "A"}}},
         "expected a list of strings, got a string"),
        ({"sources": {"toy": {"attributeBlacklist": [1]}}}, "sources.toy.attributeBlacklist"),
        ({"sources": {"toy": {"nested": {"enabled": "yes"}}}}, "sources.toy.nested.enabled"),
        ({"sources": {"toy": {"nested": {"depth": 0}}}}, "sources.toy.nested.depth: must be"),
        ({"sources": {"gpu": {}}}, "sources.gpu: no such source"),
        ({"core": {"labelWhiteList": "("}}, "core.labelWhiteList: not a valid regular"),
        ({"cor": {}}, "cor: unknown key"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_bad_config_names_the_key(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(data, SOURCES)
    assert message in str(error.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        build({"sources": {"toy": {"x": 1, "y": 2}}}, SOURCES)
    assert "sources.toy.x" in str(error.value) and "sources.toy.y" in str(error.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.yaml", SOURCES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad, SOURCES)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load(empty, SOURCES).options("toy")["attributeWhitelist"] == []


def test_source_selection_and_label_filters() -> None:
    config = build({"core": {"labelSources": ["all", "-toy"], "labelWhiteList": "^cpu-",
                             "labelDenyList": "AVX512"}}, SOURCES)
    assert config.enabled(["toy", "cpu"]) == ["cpu"]
    assert config.allows("feature.node.kubernetes.io/cpu-cpuid.AVX2")
    assert not config.allows("feature.node.kubernetes.io/cpu-cpuid.AVX512F")
    assert not config.allows("feature.node.kubernetes.io/kernel-version.full")


def test_source_budget_is_configurable_and_must_be_positive() -> None:
    from nodefeatures.discovery.config import Budget

    assert build({}, SOURCES).budget() == Budget(512, 32768)
    config = build({"core": {"maxLabelsPerSource": 10, "maxLabelBytesPerSource": 900}}, SOURCES)
    assert config.budget() == Budget(10, 900)
    with pytest.raises(ConfigError, match=r"core\.maxLabelsPerSource: must be at least 1"):
        build({"core": {"maxLabelsPerSource": 0}}, SOURCES)
    with pytest.raises(ConfigError, match=r"core\.maxLabelBytesPerSource: expected"):
        build({"core": {"maxLabelBytesPerSource": "lots"}}, SOURCES)


def _message(data: Any, sources: Mapping[str, Source] = SOURCES) -> str:
    with pytest.raises(ConfigError) as error:
        build(data, sources)
    return str(error.value)


def test_a_wrong_list_element_is_named_with_its_index_and_type() -> None:
    message = _message({"sources": {"toy": {"attributeBlacklist": ["A", "B", 5, True]}}})
    assert "sources.toy.attributeBlacklist[2]: expected a string, got an integer (5)" in message
    assert "sources.toy.attributeBlacklist[3]: expected a string, got a boolean (true)" in message
    assert "[0]" not in message and "[1]" not in message


def test_many_wrong_elements_are_counted_not_all_listed() -> None:
    message = _message({"sources": {"toy": {"attributeBlacklist": list(range(1000))}}})
    assert "attributeBlacklist[2]: expected a string" in message
    assert "attributeBlacklist[3]" not in message
    assert "and 997 more elements of the wrong type" in message


@pytest.mark.parametrize(("data", "message"), [
    ({"sources": {"toy": {"attributeBlacklist": "A"}}},
     "sources.toy.attributeBlacklist: expected a list of strings, got a string ('A')"),
    ({"sources": {"toy": {"nested": {"depth": 1.5}}}},
     "sources.toy.nested.depth: expected an integer, got a number (1.5)"),
    ({"sources": {"toy": {"nested": {"enabled": "yes"}}}},
     "sources.toy.nested.enabled: expected a boolean, got a string ('yes')"),
    # null keeps the default, as in nfd-worker (an empty `labelWhiteList:` line).
    ({"sources": {"toy": {"nested": {"depth": None}}}}, None),
    ({"core": {"labelWhiteList": ["a"]}}, "core.labelWhiteList: expected a string, got a list"),
    ({"core": {"labelWhiteList": "x" * 100}}, None),
])
def test_type_messages_name_both_types(data: Any, message: str | None) -> None:
    if message is None:
        build(data, SOURCES)
        return
    assert message in _message(data)


def _problems(values: Mapping[str, Any], sources: Mapping[str, Source]) -> str | None:
    data: dict[str, Any] = {}
    for path, value in values.items():
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        build(data, sources)
    except ConfigError as exc:
        return str(exc)
    return None


def _wrong_values(default: Any) -> list[Any]:
    candidates: list[Any] = [True, 7, 2.5, "text", ["x"], [7], {"k": 1}, None]
    return [v for v in candidates if not _accepted(default, v)]


def _accepted(default: Any, value: Any) -> bool:
    try:
        build_leaf(default, value)
    except ConfigError:
        return False
    return True


def build_leaf(default: Any, value: Any) -> None:
    class Leaf(Toy):
        defaults: Mapping[str, Any] = {"leaf": default}

        def validate_options(self, options: Mapping[str, Any]) -> list[str]:
            return []

    build({"sources": {"toy": {"leaf": value}}}, {"toy": Leaf()})


def _leaves(tree: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            found += _leaves(value, f"{where}.{key}")
        else:
            found.append((f"{where}.{key}", value))
    return found


def test_no_type_message_says_expected_x_got_x() -> None:
    """Every default in core and in every installed source, given every wrong kind of value:
    the message names the key and two different types (never 'expected a list, got a list')."""
    from nodefeatures.discovery.config import CORE_DEFAULTS
    from nodefeatures.discovery.run import load_sources

    sources, _ = load_sources()
    leaves = _leaves(CORE_DEFAULTS, "core")
    for name, source in sources.items():
        leaves += _leaves(source.defaults, f"sources.{name}")
    checked = 0
    elements: list[Any] = [True, 7, 2.5, "text", ["x"], {"k": 1}, None]
    for path, default in leaves:
        if isinstance(default, list):
            # A list of one element of each kind: the real sources' own checks decide
            # which are wrong, and a wrong one is named by its index.
            for element in elements:
                message = _problems({path: [element]}, sources)
                if message is not None:
                    assert f"{path}[0]" in message, (path, element, message)
                    checked += 1
        for value in _wrong_values(default):
            section, *rest = path.split(".")
            data: dict[str, Any] = {}
            node = data
            for part in [section, *rest[:-1]]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
            message = _message(data, sources)
            assert path in message, (path, value, message)
            for kind in ("a list", "a string", "an integer", "a number", "a boolean",
                         "a mapping"):
                assert f"expected {kind}, got {kind}" not in message, (path, value, message)
            checked += 1
    assert checked > 50


@pytest.mark.parametrize(("data", "message"), [
    ({1: "a", "core": {}}, "top level: keys must be strings, got an integer (1)"),
    ({"sources": {"toy": {None: 1, "nested": {}}}},
     "sources.toy: keys must be strings, got null"),
    ({"core": {"sleepInterval": 10**400}}, "core.sleepInterval: an integer (about 10**400)"),
    ({"core": {"sleepInterval": float("inf")}}, "core.sleepInterval: a number (inf)"),
    ({"sources": {"toy": {"nested": {"depth": float("nan")}}}}, "not a finite number"),
    ({"core": {"labelWhiteList": "a{99999999999}"}}, "core.labelWhiteList: not a valid"),
    ({"core": {"labelDenyList": "(" * 1000 + ")" * 1000}}, "core.labelDenyList: not a valid"),
])
def test_values_that_would_crash_a_check_are_refused(data: Any, message: str) -> None:
    assert message in _message(data)


@pytest.mark.parametrize(("seconds", "ok"), [
    (1, True), (86400, True), (0, False), (-5, False), (86401, False), (2**53, False)])
def test_sleep_interval_is_bounded(seconds: int, ok: bool) -> None:
    data = {"core": {"sleepInterval": seconds}}
    if ok:
        assert build(data, SOURCES).core["sleepInterval"] == seconds
    else:
        assert "core.sleepInterval: must be between 1 and 86400 seconds" in _message(data)


def _nested(depth: int) -> Any:
    tree: Any = "leaf"
    for _ in range(depth):
        tree = {"a": tree}
    return tree


def test_deep_nesting_is_refused_without_recursion() -> None:
    message = _message({"sources": {"toy": {"nested": _nested(50_000)}}})
    assert "nested too deeply (at most 32 levels)" in message


def test_alias_bombs_are_bounded(tmp_path: Path) -> None:
    """Billion laughs: nine levels of ten aliases stand for 10**9 strings in 1 KiB."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    body = "\n".join(f"  {line}" for line in lines)
    bomb = tmp_path / "bomb.yaml"
    # Where the defaults expect nothing in particular, so only the bound stops the walk.
    bomb.write_text(f"core:\n  labelSources:\n  - all\nsources:\n  toy:\n    nested:\n"
                    f"      depth: 1\n  x:\n{body}\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="too large: more than 100000 values"):
        load(bomb, SOURCES)
    assert time.monotonic() - started < 5


def test_a_list_that_holds_itself_is_bounded_in_memory(tmp_path: Path) -> None:
    # 400 KB: a list of 100,000 references to itself. Walked by pushing every child before
    # counting, the walk held 32 levels x 100,000 entries (790 MB resident).
    import tracemalloc

    bomb = tmp_path / "self.yaml"
    bomb.write_text("sources:\n  toy: &a [" + ",".join(["*a"] * 100_000) + "]\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"too large|nested too deeply"):
            load(bomb, SOURCES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024, peak  # the parse itself takes ~15 MB


@pytest.mark.parametrize(("content", "message"), [
    (b"- a\n- b\n", "the top level must be a mapping, not a list"),
    (b"just a string\n", "the top level must be a mapping, not a string ('just a string')"),
    (b"42\n", "the top level must be a mapping, not an integer (42)"),
    (bytes(range(256)), "not UTF-8 text"),
    (b"!!binary aGVsbG8=\n", "the top level must be a mapping, not bytes"),
    (b"core:\n  sleepInterval: " + b"9" * 5000 + b"\n", "not usable YAML"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"{a: " * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
    (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1048576 bytes"),
])
def test_unusable_files_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load(file, SOURCES)
    assert str(error.value).startswith(f"{file}: ")
    assert message in str(error.value)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load(tmp_path, SOURCES)


@pytest.mark.parametrize(("seconds", "ok"), [(0.5, True), (3600, True), (0, False),
                                             (3601, False), (1e15, False)])
def test_nvml_timeout_is_bounded(seconds: float, ok: bool) -> None:
    from nodefeatures.discovery.run import load_sources

    sources, _ = load_sources(["nvidia"])
    message = _problems({"sources.nvidia.nvmlTimeout": seconds}, sources)
    if ok:
        assert message is None
    else:
        assert message is not None
        assert ("sources.nvidia.nvmlTimeout: must be a positive number of seconds, at most 3600"
                in message)


def test_a_source_whose_option_check_raises_is_a_config_problem() -> None:
    class Fragile(Toy):
        def validate_options(self, options: Mapping[str, Any]) -> list[str]:
            return [str(1 / options["nested"]["depth"])]

    message = _message({"sources": {"toy": {"nested": {"depth": 0}}}}, {"toy": Fragile()})
    assert message == ("sources.toy: the source's option check failed "
                       "(ZeroDivisionError: division by zero)")


def test_keys_in_messages_are_quoted_so_they_cannot_forge_lines_or_paths() -> None:
    message = _message({"sources": {"toy": {"a\nb": 1, "nested.depth": 2}}, "x\ry": 1})
    assert "\n" not in message and "\r" not in message
    assert "sources.toy.'a\\nb': unknown key" in message
    assert "sources.toy.'nested.depth': unknown key" in message
    assert "'x\\ry': unknown key" in message


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("core:\n  labelSources: [all\n")
    with pytest.raises(ConfigError) as error:
        load(bad, SOURCES)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}: not valid YAML at line 3, column 1: while parsing a "
                              "flow sequence: expected ',' or ']'")


def test_a_yaml_date_is_named_as_one(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("core:\n  labelWhiteList: 2024-01-01\n")
    with pytest.raises(ConfigError) as error:
        load(config, SOURCES)
    assert "core.labelWhiteList: expected a string, got a date (2024-01-01)" in str(error.value)
