"""NFD's two static rules, built as objects: no parsing, no YAML, nothing compiled."""

from __future__ import annotations

from nodefeatures.discovery.rules.expressions import EXISTS, IN, MatchExpression
from nodefeatures.discovery.rules.model import FeatureTerm, Rule

RDMA_CAPABLE = Rule(
    name="RDMA capable static rule",
    labels={"rdma.capable": "true"},
    match_features=(FeatureTerm("pci.device", {"vendor": MatchExpression(IN, ("15b3",))}),),
    origin="built-in",
)
RDMA_AVAILABLE = Rule(
    name="RDMA available static rule",
    labels={"rdma.available": "true"},
    match_features=(FeatureTerm("kernel.loadedmodule", {
        "ib_uverbs": MatchExpression(EXISTS),
        "rdma_ucm": MatchExpression(EXISTS),
    }),),
    origin="built-in",
)
BUILTIN_RULES = (RDMA_CAPABLE, RDMA_AVAILABLE)
