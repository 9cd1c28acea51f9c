"""local: labels written by the node's admin or tools as NFD feature files.

Every file in `/etc/kubernetes/node-feature-discovery/features.d/` holds `name=value`
lines; names are used as written, so `vendor.io/x=1` keeps its prefix and a bare `x`
becomes `feature.node.kubernetes.io/x`. Directives in `# +` comments expire lines
(`# +expiry-time=<RFC3339>`) or keep the next line out of labels (`# +no-label`) or
features (`# +no-feature`). Files are read in name order and later files win.

A file that `run --output-file` writes is the agent's output, never its input: it is
skipped (nodefeatures.discovery.ownoutput), so a label the agent published cannot
come back as a feature-file label and outlive what discovery finds. Warnings show file
names quoted when they need it and rejected content only as a short escaped excerpt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from nodefeatures.discovery.labels import DEFAULT_PREFIX, Label, split_key
from nodefeatures.discovery.ownoutput import is_own_output
from nodefeatures.discovery.source import Context, Features, LabelDoc, Source
from nodefeatures.discovery.text import excerpt

DEFAULT_DIRECTORY = "/etc/kubernetes/node-feature-discovery/features.d"
MAX_FILE_SIZE = 65536
DIRECTIVE = "# +"
LABEL = "label"  # feature holding the lines that become labels
RAW = "feature"  # feature holding the lines kept as raw features

# What Go's strings.TrimSpace removes; Python's str.strip() also removes \x1c-\x1f.
_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|([+-])(\d{2}):(\d{2}))"
)
# nfd-master refuses these namespaces, apart from its own feature and profile ones.
_K8S_NAMESPACE = "kubernetes.io"
_ALLOWED_K8S_NAMESPACES = ("feature.node.kubernetes.io", "profile.node.kubernetes.io")


def _now() -> datetime:
    return datetime.now(UTC)


def parse_rfc3339(text: str) -> datetime | None:
    """A timestamp in RFC 3339 form (as Go's time.RFC3339 reads it), or None."""
    match = _RFC3339.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone, sign, zh, zm = match.groups()
    try:
        if zone == "Z":
            tz = UTC
        else:
            if int(zh) > 23 or int(zm) > 59:
                return None
            offset = timedelta(hours=int(zh), minutes=int(zm))
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        micro, tzinfo=tz)
    except ValueError:  # day 31 of a 30-day month, hour 24 ...
        return None


def denied_namespace(key: str) -> bool:
    """True for keys in kubernetes.io namespaces that nfd-master would refuse."""
    prefix, _ = split_key(key)
    if prefix != _K8S_NAMESPACE and not prefix.endswith("." + _K8S_NAMESPACE):
        return False
    return not any(prefix == ns or prefix.endswith("." + ns) for ns in _ALLOWED_K8S_NAMESPACES)


@dataclass
class FeatureFile:
    """What one feature file says: label and raw-feature lines, and what was wrong."""

    labels: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (value, line)
    features: dict[str, tuple[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # "line N: why"


def parse_feature_file(data: bytes, now: datetime) -> FeatureFile:
    """Parse one feature file; a bad line costs only itself."""
    result = FeatureFile()
    expiry: datetime | None = None  # None: not expired, as NFD starts with "now"
    skip_label = skip_feature = False
    not_text: list[int] = []
    # Editors on Windows start UTF-8 files with a byte-order mark; it is not part of
    # the first name (NFD keeps it, which makes that name invalid).
    data = data.removeprefix(b"\xef\xbb\xbf")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if b"\0" in raw:
            not_text.append(number)
            continue
        try:
            line = raw.decode("utf-8").strip(_SPACE)
        except UnicodeDecodeError:
            not_text.append(number)
            continue
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith(DIRECTIVE):
                name, has_value, value = line[len(DIRECTIVE):].partition("=")
                if name == "expiry-time":
                    when = parse_rfc3339(value.strip(_SPACE)) if has_value else None
                    if when is None:
                        result.problems.append(
                            f"line {number}: expiry-time {excerpt(value)} is not an RFC 3339 time "
                            "(e.g. 2030-01-02T15:04:05Z); keeping the previous one")
                    else:
                        expiry = when
                elif name == "no-label":
                    skip_label = True
                elif name == "no-feature":
                    skip_feature = True
                else:
                    result.problems.append(
                        f"line {number}: unknown directive {excerpt(name)} ignored")
            continue
        if expiry is not None and expiry < now:
            continue
        key, has_value, value = line.partition("=")
        entry = (value if has_value else "true", number)
        # A skipped line also removes the same name given earlier in this file.
        if skip_label:
            result.labels.pop(key, None)
        else:
            result.labels[key] = entry
        if skip_feature:
            result.features.pop(key, None)
        else:
            result.features[key] = entry
        skip_label = skip_feature = False
    if not_text:
        shown = ", ".join(map(str, not_text[:10])) + (" ..." if len(not_text) > 10 else "")
        result.problems.append(
            f"skipped {len(not_text)} line(s) that are not UTF-8 text (line {shown})")
    return result


class LocalSource(Source):
    name = "local"
    description = "Labels from NFD feature files in features.d"
    priority = 20  # after every built-in source, so a feature file can correct them
    defaults: ClassVar[Mapping[str, Any]] = {"directory": DEFAULT_DIRECTORY}
    catalogue = (
        LabelDoc("<name>", "string as written",
                 "a `<name>=<value>` line (`<name>` alone means `true`, `<name>=` the empty "
                 "value) in a file in /etc/kubernetes/node-feature-discovery/features.d "
                 "(sources.local.directory); published as feature.node.kubernetes.io/<name>",
                 "lines with NUL bytes or invalid UTF-8 are skipped with a warning; a "
                 "UTF-8 byte-order mark is ignored; the directory can be changed with "
                 "sources.local.directory, which NFD lacks"),
        LabelDoc("<prefix>/<name>", "string as written",
                 "a `<prefix>/<name>=<value>` line in a feature file; its prefix is kept. "
                 "Namespaces kubernetes.io and *.kubernetes.io are refused, except "
                 "feature.node.kubernetes.io, profile.node.kubernetes.io and their "
                 "subdomains, as nfd-master does",
                 "refused at the node with a warning instead of at nfd-master"),
    )

    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        # Expiry depends on the time; tests pass a fixed, timezone-aware clock.
        self.clock = clock

    def qualify(self, name: str) -> str:
        """Names are used as written; a bare name goes to the default namespace."""
        return name if "/" in name else f"{DEFAULT_PREFIX}/{name}"

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        if not options["directory"].strip("/ "):
            return ["directory: must name a directory, e.g. " + DEFAULT_DIRECTORY]
        return []

    def discover(self, ctx: Context) -> Features:
        features = Features()
        # As NFD: both features exist even when no file gives them an element.
        features.has_attributes(LABEL)
        features.has_attributes(RAW)
        root = ctx.root
        directory = ctx.options.get("directory", DEFAULT_DIRECTORY)
        now = self.clock()
        for name in root.listdir(directory):
            path = f"{directory}/{name}"
            # Hidden files are editors' and tools' scratch; directories, FIFOs and
            # dangling links hold no features (and a FIFO would block a read).
            if name.startswith("."):
                continue
            read = root.read_regular(path, MAX_FILE_SIZE)
            if read is None:
                continue  # not a file, or too big or unreadable: the root has said so
            data, status = read
            if is_own_output(data, status):
                continue
            shown = root.display(path)
            parsed = parse_feature_file(data, now)
            for problem in parsed.problems:
                ctx.warn(f"{shown}: {problem}")
            for key, (value, number) in parsed.features.items():
                features.attribute(RAW, key, value, f"{shown}:{number}")
            for key, (value, number) in parsed.labels.items():
                if denied_namespace(key):
                    ctx.warn(f"{shown}:{number}: label {excerpt(key)} refused: the "
                             "kubernetes.io namespace is reserved (feature.node.kubernetes.io "
                             "is allowed)")
                    continue
                features.attribute(LABEL, key, value, f"{shown}:{number}: {key}={value}")
        return features

    def labels(self, features: Features, options: Mapping[str, Any]) -> list[Label]:
        facts = features.attributes.get(LABEL, {})
        # A bare name and the same name with the default prefix are one key; the
        # prefixed one wins, as in nfd-master, so it comes last.
        ordered = sorted(facts.items(), key=lambda item: "/" in item[0])
        return [Label(key, fact.value, fact.origin) for key, fact in ordered]
