"""NFD's static rules checked without the engine give what the engine gives.

A node with no rule of its own runs static.py; any other rule switches the pass to the
engine, which runs the same two rules from builtin.py. Both must agree on the labels,
on why each was given (--explain shows it), and on when the pass is incomplete.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testpaths import FIXTURES

from nodefeatures.discovery.config import build
from nodefeatures.discovery.fixture import replay_host
from nodefeatures.discovery.run import run_pass
from nodefeatures.discovery.source import Features
from nodefeatures.sources.custom import CustomSource, _explain, static
from nodefeatures.sources.kernel import KernelSource
from nodefeatures.sources.pci import PciSource

# A rule that asks for a feature no source has: it never matches and labels nothing, but
# it makes the pass take the engine's path.
NEVER = {"name": "never", "labels": {"never": "true"},
         "matchFeatures": [{"feature": "none.such", "matchExpressions": {"x": {"op": "Exists"}}}]}


@dataclass
class Result:
    """What the custom source reads of another source's result."""

    name: str
    features: Features | None
    error: str | None = None
    complete: bool = True


def engine_labels(results: list[Result]) -> list[tuple[str, str, str]]:
    from nodefeatures.discovery.rules import engine
    from nodefeatures.discovery.rules.features import FeatureSet
    from nodefeatures.sources.custom.builtin import BUILTIN_RULES

    found = []
    for outcome in engine.run(list(BUILTIN_RULES), FeatureSet.from_results(results)):
        assert outcome.error is None
        found += [(key, value, _explain(outcome)) for key, value in outcome.labels.items()]
    return found


def results_of(vendors: list[str], modules: list[str] | None) -> list[Result]:
    pci = Features()
    for index, vendor in enumerate(vendors):
        pci.instance("device", {"vendor": vendor, "class": "0200"}, f"dev{index}")
    kernel = Features()
    if modules is not None:
        for module in modules:
            kernel.flag("loadedmodule", module, "proc/modules")
    return [Result("pci", pci), Result("kernel", kernel)]


VENDORS = st.lists(st.sampled_from(["15b3", "10de", "8086", "15B3", "15b4"]), max_size=6)
MODULES = st.one_of(st.none(), st.lists(
    st.sampled_from(["ib_uverbs", "rdma_ucm", "mlx5_ib", "rdma_cm", "ib_core"]), max_size=5))


@settings(max_examples=300, deadline=None)
@given(vendors=VENDORS, modules=MODULES)
def test_static_rules_give_what_the_engine_gives(vendors: list[str],
                                                 modules: list[str] | None) -> None:
    results = results_of(vendors, modules)
    assert static.evaluate(results) == engine_labels(results)


def test_both_labels_and_their_reasons_on_a_node_that_has_both() -> None:
    results = results_of(["15b3", "10de", "15b3"], ["rdma_ucm", "ib_uverbs"])
    found = static.evaluate(results)
    assert found == engine_labels(results)
    assert found == [
        ("rdma.capable", "true",
         "rule 'RDMA capable static rule' (built-in): pci.device vendor=15b3 (x2)"),
        ("rdma.available", "true", "rule 'RDMA available static rule' (built-in): "
                                   "kernel.loadedmodule ib_uverbs; kernel.loadedmodule rdma_ucm"),
    ]


@pytest.mark.parametrize("broken", ["pci", "kernel"])
@pytest.mark.parametrize("how", ["error", "incomplete"])
def test_a_failed_source_the_rules_read_leaves_the_pass_incomplete(broken: str,
                                                                   how: str) -> None:
    results = results_of(["15b3"], ["ib_uverbs", "rdma_ucm"])
    for result in results:
        if result.name == broken:
            result.error, result.complete = ("boom", False) if how == "error" else (None, False)
    assert static.incomplete(results)
    assert not static.incomplete(results_of(["15b3"], []))
    assert not static.incomplete([Result("cpu", None, "boom", False)])


FIXTURE_DIRS = sorted(p for p in FIXTURES.iterdir() if (p / "root").is_dir())


@pytest.mark.parametrize("fixture", FIXTURE_DIRS, ids=lambda p: p.name)
def test_a_fixture_gets_the_same_custom_labels_either_way(fixture: Path) -> None:
    sources = {s.name: s for s in (PciSource(), KernelSource(), CustomSource())}

    def custom(data: dict[str, Any]) -> tuple[dict[str, tuple[str, str]], bool]:
        discovery = run_pass(replay_host(fixture), sources, build(data, sources))
        (result,) = [r for r in discovery.results if r.name == "custom"]
        return {k: (v.value, v.origin) for k, v in result.labels.items()}, result.complete

    alone, alone_complete = custom({})
    with_engine, engine_complete = custom({"sources": {"custom": [NEVER]}})
    assert alone == with_engine
    assert alone_complete == engine_complete


def test_a_dump_with_only_the_static_rules_never_loads_the_engine() -> None:
    code = ("import sys\nfrom nodefeatures.cli import main\n"
            f"try:\n    main(['dump', '--format', 'json', '--fixture', "
            f"{str(FIXTURES / 'dgx-h100')!r}])\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stderr.split())
    assert "nodefeatures.sources.custom" in loaded
    assert '"feature.node.kubernetes.io/rdma.capable": "true"' in result.stdout
    assert not {m for m in loaded if m.startswith("nodefeatures.discovery.rules")}
