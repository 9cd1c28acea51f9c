"""docs/labels.md is generated from the sources' catalogue rows, so it cannot drift.

Regenerate with `python -m nodefeatures.catalogue > docs/labels.md`; a test compares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from nodefeatures.labels import sanitize_value
from nodefeatures.source import NEVER, LabelDoc, Source

INTRO = Path(__file__).with_name("catalogue_intro.md")


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
        lines += ["| Label | Values | From |", "|---|---|---|"]
        for row in emitted:
            key = key_of(source, row)
            lines.append(f"| `{_cell(key)}` | {_cell(row.values)} | {_cell(row.origin)} |")
            if row.deviation:
                deviations.append((key, row.deviation))
        lines.append("")
    lines += ["## Deviations from NFD and GFD", "",
              "Where the reference behaviour is wrong or loses information, we do better:", ""]
    lines += [f"- `{key}`: {text}" for key, text in deviations]
    if refused:
        lines += ["", "## Reference labels we never emit", ""]
        lines += [f"- `{key}`: {text}" for key, text in refused]
    example = "12 (bookworm)"
    lines += ["", "## Invalid values", "",
              "Every label passes one set of Kubernetes rules (`nodefeatures/labels.py`). "
              "An invalid key is dropped; an invalid value is sanitised: each character "
              "outside `[A-Za-z0-9._-]` becomes `_`, the value is cut to 63 characters, and "
              "leading and trailing non-alphanumerics are removed "
              f"(`{example}` becomes `{sanitize_value(example)}`). A value that sanitises to "
              "nothing is dropped. Both cases print a warning naming the label and the raw "
              "value, and `--explain` shows the raw value. The nvidia source first applies "
              "GFD's own clean-up to product and machine names (so `NVIDIA TITAN X (Pascal)` "
              "stays `NVIDIA-TITAN-X-Pascal`, as existing selectors expect), then these "
              "rules.", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    from nodefeatures.discovery import load_sources

    sources, errors = load_sources()
    if errors:
        raise SystemExit("; ".join(errors))
    print(render(sources), end="")


if __name__ == "__main__":
    main()
