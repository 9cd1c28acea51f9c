"""Host strings in messages: quoted, escaped and bounded, so none can forge a log line.

File names, paths and file contents come from whoever can write on the host. A newline
in a features.d file name must not start a second log line or Event sentence, and a
rejected line must not come back whole in a warning (it may hold a token that was never
meant to leave the node). Every host string that reaches a problem, warning, log line or
Event goes through `quote`, or through `plain` for paths, which stay bare when nothing in
them needs quoting.
"""

from __future__ import annotations

import re

# Enough to show a value a little over the 63-character limit whole and to recognise a
# line; too little to carry a token (a service-account JWT is ~900 characters) out whole.
EXCERPT = 80
# Names and paths: long enough for any valid label key (317 characters).
NAME = 320

_PLAIN = re.compile(r"[!#-&(-\[\]-~]+")  # visible ASCII without quotes or backslash


def quote(text: str, limit: int = NAME) -> str:
    """`text` as a repr-style quoted, escaped string with at most `limit` characters shown.

    Control, format and line-separator characters are escaped (`\\n`, `\\x1b`, `\\u2028`),
    so the result is always one printable line; a cut is marked with the full length.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def excerpt(text: str) -> str:
    """A short quoted excerpt of file content that was rejected."""
    return quote(text, EXCERPT)


def plain(text: str, limit: int = NAME) -> str:
    """A path or name as is when it is plain visible ASCII, otherwise `quote`d."""
    if len(text) <= limit and _PLAIN.fullmatch(text):
        return text
    return quote(text, limit)
