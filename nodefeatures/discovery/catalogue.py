"""docs/labels.md is generated from the sources' catalogue rows, so it cannot drift.

Regenerate with `python -m nodefeatures.discovery.catalogue > docs/labels.md`; a test compares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from nodefeatures.discovery import gfdoptions
from nodefeatures.discovery.source import NEVER, LabelDoc, Source

INTRO = Path(__file__).with_name("catalogue_intro.md")
# Sources whose labels GFD's options change: the options are listed beside them.
OPTIONS = {"nvidia": gfdoptions.OPTIONS}


def key_of(source: Source, row: LabelDoc) -> str:
    """The full key pattern a catalogue row documents."""
    return source.qualify(row.name)


def pattern(source: Source, row: LabelDoc) -> re.Pattern[str]:
    """A regex matching the keys a row stands for (`<FLAG>` matches one name part)."""
    parts = re.split(r"(<[^>]+>)", key_of(source, row))
    regex = "".join("[^/]+?" if p.startswith("<") else re.escape(p) for p in parts)
    return re.compile(regex + r"\Z")


def undocumented(sources: Mapping[str, Source], keys: list[str]) -> list[str]:
    """Keys that no catalogue row of any source documents."""
    patterns = [pattern(s, row) for s in sources.values() for row in s.catalogue
                if row.values != NEVER]
    return [k for k in keys if not any(p.match(k) for p in patterns)]


def render(sources: Mapping[str, Source]) -> str:
    """The whole docs/labels.md text."""
    lines = [INTRO.read_text().rstrip(), ""]
    deviations: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    for name, source in sorted(sources.items()):
        lines += [f"## {name}", "", source.description + ".", ""]
        emitted = [row for row in source.catalogue if row.values != NEVER]
        refused += [(key_of(source, r), r.deviation) for r in source.catalogue if r not in emitted]
        if not emitted:
            lines += ["(This source documents no labels.)", ""]
            continue
        options = OPTIONS.get(name, ())
        if options:
            lines += ["| Label | Values | From | GFD options |", "|---|---|---|---|"]
        else:
            lines += ["| Label | Values | From |", "|---|---|---|"]
        for row in emitted:
            key = key_of(source, row)
            line = f"| `{_cell(key)}` | {_cell(row.values)} | {_cell(row.origin)} |"
            if options:
                changed_by = [o for o in options if row.name in o.labels]
                line += " " + ", ".join(_option_name(o) for o in changed_by) + " |"
            lines.append(line)
            if row.deviation:
                deviations.append((key, row.deviation))
        lines.append("")
        if options:
            lines += _options_section(options)
    lines += ["## Deviations from NFD and GFD", "",
              "Where the reference behaviour is wrong or loses information, we do better:", ""]
    lines += [f"- `{key}`: {text}" for key, text in deviations]
    if refused:
        lines += ["", "## Reference labels we never emit", ""]
        lines += [f"- `{key}`: {text}" for key, text in refused]
    lines += ["", "## Invalid values", "",
              "Every label passes one set of Kubernetes rules "
              "(`nodefeatures/discovery/labels.py`): a key is an optional DNS-subdomain prefix "
              "and a name of at most 63 "
              "characters, a value is empty or at most 63 characters of `[A-Za-z0-9._-]` "
              "that begin and end alphanumeric. A label that breaks them is dropped, as NFD "
              "drops it, never rewritten: `ID=\"My Distro!\"` in os-release, "
              "`VERSION_ID=\"12 (bookworm)\"` or a 74-character feature-file value gives no "
              "label at all, since a value nobody wrote matches no one's selector and a "
              "cut or rewritten value can merge two different ones. Each dropped label is "
              "a warning of its source that names the label and quotes an escaped excerpt "
              "of the raw value (at most 80 characters of it): `dump` prints it, and the agent "
              "logs it and posts it in a `SourceProblem` Event on its Node whenever its "
              "source's warnings change. A label that goes invalid on a node it was "
              "published on is removed like any label its source stops reporting.", "",
              "Only the clean-up rules that a reference applies itself stay, because "
              "existing selectors depend on them: the nvidia source forms product and "
              "machine names as GFD does (so `NVIDIA TITAN X (Pascal)` is "
              "`NVIDIA-TITAN-X-Pascal`), and the kernel source forms "
              "`kernel-version.full` as NFD does (each character outside `[A-Za-z0-9._-]` "
              "becomes `_`). A value that is still invalid after them, such as a GFD "
              "product name longer than 63 characters, is dropped too.", ""]
    return "\n".join(lines)


def _option_name(option: gfdoptions.GfdOption) -> str:
    """The option's first key, shortened where several share one meaning."""
    key = option.keys[0]
    if len(option.keys) > 1 and key.startswith("sharing."):
        strategies = ",".join(k.split(".")[1] for k in option.keys)
        return f"`sharing.{{{strategies}}}.{key.split('.', 2)[2]}`"
    return f"`{key}`"


def _options_section(options: tuple[gfdoptions.GfdOption, ...]) -> list[str]:
    """Every key of GFD's file, its variables, what it does and the labels it changes."""
    lines = ["### GFD's config file and environment", "", gfdoptions.PRECEDENCE, "",
             "| GFD file key | Environment (first set wins) | Here | Labels it changes |",
             "|---|---|---|---|"]
    for option in options:
        keys = ", ".join(f"`{k}`" for k in option.keys)
        variables = ", ".join(f"`{v}`" for v in option.variables) or "-"
        labels = ", ".join(f"`{label}`" for label in option.labels) or "none"
        lines.append(f"| {keys} | {variables} | {_cell(option.effect)} | {labels} |")
    lines.append("")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    from nodefeatures.discovery.run import load_sources

    sources, errors = load_sources()
    if errors:
        raise SystemExit("; ".join(errors))
    print(render(sources), end="")


if __name__ == "__main__":
    main()
