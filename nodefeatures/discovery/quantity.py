"""Kubernetes resource quantities (`1`, `500m`, `2Gi`, `1e3`), read as exact decimals.

Extended resources from rules must be quantities the API server accepts, and the value
it stores is its canonical form of ours (`1000` is kept as `1k`), so an unchanged
resource is recognised by value, not by text. The grammar is Kubernetes' (a sign, digits
with at most one point, then one binary suffix Ki..Ei, a decimal suffix n..E, or an
exponent); the kubernetes client's parser is not used here because nothing in
discovery imports the client.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
MAX_TEXT = 64  # longer is no quantity anyone writes for a count of devices
# The API server caps binary amounts above this (8Ei is stored as 9223372036854775807)
# and mangles longer digit strings (1e22 written out comes back as 10).
MAX_STORED = Decimal(2**63 - 1)


def parse(text: str) -> Decimal | None:
    """The quantity's exact value, or None when `text` is not a quantity."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return None
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    sign, number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if suffix in _BINARY:
        value *= Decimal(1024) ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = value.scaleb(_DECIMAL[suffix])
    elif suffix:
        exponent = int(suffix[1:])
        if abs(exponent) > 100:
            return None
        value = value.scaleb(exponent)
    return -value if sign == "-" else value


def same(a: str | None, b: str | None) -> bool:
    """Whether two texts are the same quantity (`1k` and `1000`)."""
    if a is None or b is None:
        return a == b
    x, y = parse(a), parse(b)
    return x is not None and x == y


def unstored(name: str, amount: Decimal) -> str | None:
    """Why the API server would not keep `amount` of Node resource `name` as that amount
    (it refuses it, or stores another), or None when it would.

    A name outside kubernetes.io is an extended resource to Kubernetes, which must be a
    whole number; any amount is rounded up to a multiple of 1m."""
    if amount > MAX_STORED:
        return f"more than {MAX_STORED}, which the API server does not store as it is"
    if "kubernetes.io/" not in name and not name.startswith("requests.") and amount % 1:
        return ("not a whole number, which the API server requires of an extended "
                "resource outside kubernetes.io")
    if (amount * 1000) % 1:
        return "finer than 1m, which the API server rounds up"
    return None
