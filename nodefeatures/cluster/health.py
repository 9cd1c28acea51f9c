"""GPU health as a Node condition: what the nvidia source saw, and the status patch for it.

The nvidia source publishes `nvidia.com/gpu.healthy` and `gpu.unhealthy`; a label is
awkward to alert on and does not show in `kubectl describe node` as a problem. So the
agent also keeps one condition of its own on the Node, `NVIDIAGPUHealthy`:

- `True` (reason `AllGPUsHealthy`) when NVML answered for every GPU it lists,
- `False` (reason `GPUUnhealthy`) when NVML lists a GPU it reports lost or inaccessible,
- removed when the source ran cleanly and found no NVIDIA GPU at all.

Only a complete nvidia pass in which NVML itself answered decides: a failed, incomplete,
paused or NVML-less pass (a Jetson without NVML) says nothing, and the condition stays
as it is. Pure functions; the agent sends the patch (kube.NodeApi.patch_status) and posts
one Event per change of status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONDITION = "NVIDIAGPUHealthy"
HEALTHY, UNHEALTHY = "AllGPUsHealthy", "GPUUnhealthy"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MESSAGE_MAX = 1024


@dataclass(frozen=True)
class GpuHealth:
    """What the condition should say; `status` None means: remove it (no GPU any more)."""

    status: str | None  # "True", "False" or None
    reason: str = ""
    message: str = ""

    @property
    def shown(self) -> tuple[str | None, str, str]:
        return (self.status, self.reason, self.message)


def gpu_health(results: Any) -> GpuHealth | None:
    """The health the nvidia source's result of one pass shows; None when it shows none.

    `results` is a Discovery's `results` (SourceResult objects).
    """
    result = next((r for r in results if r.name == "nvidia"), None)
    if result is None or result.error or not result.complete or result.features is None:
        return None
    features = result.features
    nvml = features.attributes.get("nvml", {}).get("status")
    present = "gpu.present" in features.attributes.get("node", {})
    if not present:
        # A clean pass without any NVIDIA GPU (none on the bus, or NVML lists none).
        return GpuHealth(None) if nvml is not None and nvml.value in ("ok", "skipped") \
            else None
    if nvml is None or nvml.value != "ok":
        return None  # nobody asked the GPUs: no word on their health
    gpus = [dict(i.attributes) for i in features.instances.get("gpu", [])]
    if not gpus:
        return None
    sick = [g for g in gpus if g.get("health", "ok") != "ok"]
    if not sick:
        return GpuHealth("True", HEALTHY, f"NVML answers for all {len(gpus)} GPUs")
    parts = [f"GPU {g.get('index', '?')}"
             + (f" ({g['bus']})" if g.get("bus") else "")
             + f": {g.get('health')}" for g in sick]
    message = (f"{len(sick)} of {len(gpus)} GPUs lost or unhealthy: " + "; ".join(parts))
    return GpuHealth("False", UNHEALTHY, _bounded(message))


def _bounded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX - 3] + "..."


def current(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Our condition as the Node holds it now, or None."""
    status = (node or {}).get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if isinstance(condition, dict) and condition.get("type") == CONDITION:
            return condition
    return None


def shown(condition: Mapping[str, Any] | None) -> tuple[str | None, str, str]:
    if condition is None:
        return (None, "", "")
    return (condition.get("status"), str(condition.get("reason") or ""),
            str(condition.get("message") or ""))


def patch(health: GpuHealth, node: Mapping[str, Any] | None, now: str
          ) -> dict[str, Any] | None:
    """The strategic merge patch of nodes/status that makes the Node show `health`.

    None when it does already. Conditions merge by type, so the kubelet's and anyone
    else's are untouched. The transition time moves only when the status does.
    """
    held = current(node)
    if shown(held) == health.shown:
        return None
    if health.status is None:
        return {"status": {"conditions": [{"$patch": "delete", "type": CONDITION}]}}
    since = now
    if held is not None and held.get("status") == health.status and held.get(
            "lastTransitionTime"):
        since = held["lastTransitionTime"]
    return {"status": {"conditions": [{
        "type": CONDITION, "status": health.status, "reason": health.reason,
        "message": health.message, "lastHeartbeatTime": now, "lastTransitionTime": since}]}}


def transition(health: GpuHealth, before: str | None) -> tuple[str, str, str] | None:
    """The Event (type, reason, message) that a write of `health` is worth, or None.

    `before` is the status the agent last knew: what it sent itself, else what the Node
    showed. Only a change of status is worth an Event: a GPU lost (to False, also as the
    first word on a node), or every GPU back (False to True). The first True, a new
    message, and putting back a condition someone deleted are not.
    """
    if health.status == before:
        return None
    if health.status == "False":
        return ("Warning", UNHEALTHY, health.message)
    if health.status == "True" and before == "False":
        return ("Normal", HEALTHY, f"{health.message}: every GPU is healthy again")
    return None
