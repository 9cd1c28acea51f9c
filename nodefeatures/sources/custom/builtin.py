"""NFD's two static rules as engine objects, for passes that run other rules too.

No parsing, no YAML, nothing compiled. static.py checks the same rules without the
engine when they are the only ones.
"""

from __future__ import annotations

from nodefeatures.discovery.rules.expressions import EXISTS, IN, MatchExpression
from nodefeatures.discovery.rules.model import FeatureTerm, Rule
from nodefeatures.sources.custom.static import (
    MELLANOX,
    ORIGIN,
    RDMA_MODULES,
)
from nodefeatures.sources.custom.static import (
    RDMA_AVAILABLE as RDMA_AVAILABLE_NAME,
)
from nodefeatures.sources.custom.static import (
    RDMA_CAPABLE as RDMA_CAPABLE_NAME,
)

RDMA_CAPABLE = Rule(
    name=RDMA_CAPABLE_NAME,
    labels={"rdma.capable": "true"},
    match_features=(FeatureTerm("pci.device", {"vendor": MatchExpression(IN, (MELLANOX,))}),),
    origin=ORIGIN,
)
RDMA_AVAILABLE = Rule(
    name=RDMA_AVAILABLE_NAME,
    labels={"rdma.available": "true"},
    match_features=(FeatureTerm("kernel.loadedmodule", {
        module: MatchExpression(EXISTS) for module in RDMA_MODULES}),),
    origin=ORIGIN,
)
BUILTIN_RULES = (RDMA_CAPABLE, RDMA_AVAILABLE)
