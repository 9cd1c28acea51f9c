"""Output formats for `dump`: a readable table, JSON, YAML and a NodeFeature object."""

from __future__ import annotations

import json
from typing import Any

from nodefeatures.discovery.run import Discovery


def as_data(discovery: Discovery, explain: bool) -> dict[str, Any]:
    """{label: value}, or with explain {label: {value, source, origin}}."""
    labels = discovery.labels
    if not explain:
        return {key: label.value for key, label in labels.items()}
    return {
        key: {"value": label.value, "source": label.source, "origin": label.origin}
        for key, label in labels.items()
    }


def to_json(discovery: Discovery, explain: bool) -> str:
    return json.dumps(as_data(discovery, explain), indent=2, sort_keys=True)


def to_yaml(discovery: Discovery, explain: bool) -> str:
    import yaml  # only this format needs it

    return yaml.safe_dump(as_data(discovery, explain), sort_keys=True, width=1000).rstrip()


def to_nodefeature(discovery: Discovery, node: str, namespace: str) -> str:
    """The NodeFeature nfd-worker would write for this pass, as YAML (keys in NFD's order)."""
    import yaml

    from nodefeatures.discovery.nodefeature import node_feature

    return yaml.safe_dump(node_feature(discovery, node, namespace), sort_keys=False,
                          width=1000).rstrip()


def to_text(discovery: Discovery, explain: bool) -> str:
    """Labels grouped by source, one per line, with the raw fact when explaining."""
    winners = discovery.labels
    lines: list[str] = []
    for result in discovery.results:
        shown = [label for key, label in sorted(result.labels.items())
                 if winners.get(key) is label]
        status = "failed" if result.error else f"{len(shown)} labels"
        lines.append(f"{result.name} ({status}, {result.seconds * 1000:.1f} ms)")
        if result.error:
            lines.append(f"  error: {result.error}")
        width = max((len(label.key) for label in shown), default=0)
        value_width = max((len(label.value) for label in shown), default=0)
        for label in shown:
            line = f"  {label.key.ljust(width)}  {label.value}"
            if explain and label.origin:
                line = f"{line.ljust(width + value_width + 4)}  <- {printable(label.origin)}"
            lines.append(line.rstrip())
    return "\n".join(lines)


def printable(text: str) -> str:
    """Raw facts can hold control bytes from hostile files; never send them to a terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


FORMATS = {"text": to_text, "json": to_json, "yaml": to_yaml}
