"""docs/labels.md documents every key of GFD's file and every GFD variable, beside the
nvidia labels each changes, and nothing gfdconfig does not read."""

from __future__ import annotations

import json
import re

import pytest

from nodefeatures.discovery import catalogue, gfdconfig, gfdoptions
from nodefeatures.discovery.config import ConfigError
from nodefeatures.discovery.effective import load
from nodefeatures.discovery.run import load_sources


def documented_keys() -> list[str]:
    return [key for option in gfdoptions.OPTIONS for key in option.keys]


def test_each_documented_key_is_one_gfdconfig_reads_and_each_it_reads_is_documented() -> None:
    keys = documented_keys()
    assert len(keys) == len(set(keys)), "a key documented twice"
    assert set(keys) == gfdconfig.accepted_keys()


def test_every_variable_gfd_reads_is_documented_with_its_key() -> None:
    documented = [v for option in gfdoptions.OPTIONS for v in option.variables]
    assert sorted(documented) == sorted(v for names in gfdconfig.ENVIRONMENT.values()
                                        for v in names)
    for name in gfdconfig.ENVIRONMENT:
        assert gfdconfig.environment_key(name) in gfdconfig.accepted_keys(), name
    text = catalogue.render(load_sources()[0])
    for variable in gfdconfig.FILE_ENVIRONMENT:
        assert f"`${variable}`" in text


def test_accepted_keys_are_what_the_reader_accepts(tmp_path) -> None:
    # The list is the reader's own: a key outside it is refused, a key in it is not
    # (each given a value of its type, as GFD's file would have it).
    sources, _ = load_sources()
    assert "flags.gfd.oneshot" in gfdconfig.accepted_keys()
    for key in ("flags.gfd.oneshots", "sharing.mps.rename", "imex.channels"):
        assert key not in gfdconfig.accepted_keys()
        head, *rest = key.split(".")
        data: dict = {"version": "v1"}
        node = data.setdefault(head, {})
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = True
        path = tmp_path / "gfd.yaml"
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=re.escape(rest[-1])):
            load(None, sources, gfd_path=path, env={})


def test_every_label_an_option_names_is_a_documented_nvidia_label() -> None:
    sources, _ = load_sources()
    rows = {row.name for row in sources["nvidia"].catalogue}
    for option in gfdoptions.OPTIONS:
        assert set(option.labels) <= rows, (option.keys, set(option.labels) - rows)
    assert {o.keys[0] for o in gfdoptions.options_for("nvidia.com/gpu.product")} >= {
        "flags.migStrategy", "sharing.timeSlicing.resources",
        "sharing.timeSlicing.renameByDefault"}
    assert gfdoptions.options_for("nvidia.com/gpu.replicas")
    assert gfdoptions.options_for("nvidia.com/mps.capable")
    assert gfdoptions.options_for("nvidia.com/mig.strategy")


def test_labels_md_names_the_options_beside_the_labels_they_change() -> None:
    text = catalogue.render(load_sources()[0])
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", text, re.M)}
    assert "`flags.migStrategy`" in rows["nvidia.com/mig.strategy"].rsplit("|", 2)[1]
    product = rows["nvidia.com/gpu.product"].rsplit("|", 2)[1]
    assert "sharing.{timeSlicing,mps}.resources" in product and "-SHARED" in rows[
        "nvidia.com/gpu.product"]
    assert "sharing.{timeSlicing,mps}.resources" in rows["nvidia.com/mps.capable"]
    section = text.split("### GFD's config file and environment", 1)[1].split("\n## ", 1)[0]
    for key in gfdconfig.accepted_keys():
        assert f"`{key}`" in section, key
    for names in gfdconfig.ENVIRONMENT.values():
        assert ", ".join(f"`{v}`" for v in names) in section
    assert "Precedence, highest first" in section
