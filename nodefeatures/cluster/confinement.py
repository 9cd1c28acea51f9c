"""Proof that the own-node admission policy holds this agent, before it writes anything.

Two parts, both needed:

1. Behaviour: a dry-run patch that sets a label the policy forbids on the agent's own
   Node (`NodeApi.probe`) must be refused, by that policy by name. Accepted, the token
   could change any Node (policy or binding missing, or the admission plugin off).
2. Reach: the probe touches only the agent's own Node, so a binding or policy narrowed
   to select that Node (an objectSelector on a label it has, a matchCondition on its
   name) passes part 1 and leaves every other Node open to this token. So the policy and
   its binding (by the policy's name, as deploy/base ships them) are read and must apply
   to every Node update of the agent: no selector, no excluded rules, no resource rules
   in the binding, the policy matching `nodes` and `nodes/status` updates (v1), its only
   match conditions comparing the username, its failure policy Fail, its binding
   denying, and its validations holding the own-node rule as shipped.

Reading them needs `get` on both kinds (deploy/base/rbac.yaml). What cannot be read is
no proof: nothing is written until it can be.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodefeatures.cluster.kube import Kind

# The ValidatingAdmissionPolicy of deploy/base/admission-policy.yaml.
DEFAULT_POLICY = "nodefeatures-own-node"
CONFINED, UNCONFINED, REFUSED, UNANSWERED = "confined", "unconfined", "refused", "unanswered"
UNCONFINED_HELP = (
    "install the ValidatingAdmissionPolicy and its binding from "
    "deploy/base/admission-policy.yaml, make sure the API server runs the "
    "ValidatingAdmissionPolicy admission plugin (on by default since Kubernetes 1.30), "
    "or pass --allow-unconfined on a cluster without that API")
ADMISSION = ("admissionregistration.k8s.io", "v1")
# The own-node rule as deploy/base/admission-policy.yaml states it, spaces aside: the
# node comes from the pod-bound token, and only that Node may change.
OWN_NODE_VARIABLE = ("tokenNode", "request.userInfo.?extra[?'authentication.kubernetes.io/"
                     "node-name'].orValue([])")
OWN_NODE_VALIDATION = "variables.tokenNode == [object.metadata.name]"
_USERNAME_ONLY = re.compile(r'request\.userInfo\.username\s*==\s*"[^"\\]*"|'
                            r"request\.userInfo\.username\s*==\s*'[^'\\]*'")


@dataclass(frozen=True)
class Proof:
    """The outcome of one confinement check."""

    state: str  # CONFINED, UNCONFINED, REFUSED (by something else) or UNANSWERED
    detail: str

    @property
    def message(self) -> str:
        """What a log line or Event says about it, including what to fix."""
        if self.state == CONFINED:
            return self.detail
        if self.state == UNANSWERED:
            return f"{self.detail}; not writing to the Node until confinement is proven"
        return f"{self.detail}; not writing to the Node until that is fixed: {UNCONFINED_HELP}"


def prove_confinement(api: Any, policy: str = DEFAULT_POLICY, check_reach: bool = True
                      ) -> Proof:
    """Whether the own-node policy holds this agent's token, everywhere (module doc).

    `check_reach` False skips part 2, for a policy deliberately bound to some Nodes only
    (a test harness sharing one API server). Never raises KubeError.
    """
    # Here, not at the top: the command line reads DEFAULT_POLICY for its --help, which
    # should not cost the API client's import.
    from nodefeatures.cluster.kube import KubeError

    try:
        api.probe()
    except KubeError as error:
        text = " ".join(error.message.split())[:300]
        if error.code in (403, 422) and f"ValidatingAdmissionPolicy '{policy}'" in text:
            denied = (f"ValidatingAdmissionPolicy '{policy}' denied the confinement probe "
                      f"({error.code})")
            return reach(api, policy, denied) if check_reach else Proof(CONFINED, denied)
        if error.code in (403, 422):
            return Proof(REFUSED, f"the confinement probe was refused ({error.code}), but not "
                                  f"by ValidatingAdmissionPolicy '{policy}': {text!r}")
        return Proof(UNANSWERED, f"the confinement probe failed: {error}")
    return Proof(UNCONFINED, "the API server accepted a dry-run patch that "
                             f"ValidatingAdmissionPolicy '{policy}' must deny, so this "
                             "agent's token could change any Node")


def reach(api: Any, policy: str, denied: str) -> Proof:
    """Part 2: the policy and its binding, read, cover every Node."""
    from nodefeatures.cluster.kube import KubeError

    objects = []
    for kind, noun in ((admission_kind("validatingadmissionpolicies", "policy"),
                        "ValidatingAdmissionPolicy"),
                       (admission_kind("validatingadmissionpolicybindings", "binding"),
                        "ValidatingAdmissionPolicyBinding")):
        try:
            objects.append(api.read_admission(kind, policy))
        except KubeError as error:
            if error.code == 404:
                return Proof(UNCONFINED, f"{denied}, but there is no {noun} '{policy}': "
                                         "the probe's refusal is not that policy's binding")
            if error.code in (401, 403):
                return Proof(REFUSED, f"{denied}, but its {noun} cannot be read to check "
                                      f"that it covers every Node ({error.code}: grant get "
                                      "on it, deploy/base/rbac.yaml)")
            return Proof(UNANSWERED, f"reading {noun} '{policy}' failed: {error}")
    narrowed = narrowing(objects[0], objects[1], policy)
    if narrowed:
        return Proof(UNCONFINED, f"{denied}, but it does not hold this token on every Node: "
                                 + "; ".join(narrowed))
    return Proof(CONFINED, f"{denied}, and its binding covers every Node")


def admission_kind(plural: str, verb: str) -> Kind:
    from nodefeatures.cluster.kube import Kind

    return Kind(*ADMISSION, plural, verb=verb)


def narrowing(policy_obj: Mapping[str, Any], binding_obj: Mapping[str, Any],
              policy: str) -> list[str]:
    """Why the policy and its binding would not hold the token on every Node update
    (empty: they do). Pure, so every way of narrowing them is unit-tested."""
    found: list[str] = []
    spec = _mapping(policy_obj.get("spec"))
    bspec = _mapping(binding_obj.get("spec"))
    if bspec.get("policyName") != policy:
        found.append(f"the binding names policy {bspec.get('policyName')!r}, not {policy!r}")
    if "Deny" not in (bspec.get("validationActions") or []):
        found.append("the binding's validationActions do not include Deny")
    match = _mapping(bspec.get("matchResources"))
    # A namespaceSelector never skips a cluster-scoped object such as a Node, so only
    # the objectSelector can narrow either object.
    if _selects(match.get("objectSelector")):
        found.append("the binding's matchResources.objectSelector selects only some objects")
    for key in ("resourceRules", "excludeResourceRules"):
        if match.get(key):
            found.append(f"the binding's matchResources.{key} narrows what it covers")
    if spec.get("failurePolicy", "Fail") != "Fail":
        found.append("the policy's failurePolicy is not Fail: an error lets writes through")
    constraints = _mapping(spec.get("matchConstraints"))
    if _selects(constraints.get("objectSelector")):
        found.append("the policy's matchConstraints.objectSelector selects only some objects")
    if constraints.get("excludeResourceRules"):
        found.append("the policy's matchConstraints.excludeResourceRules leave some out")
    for resource in ("nodes", "nodes/status"):
        if not any(_covers(rule, resource) for rule in constraints.get("resourceRules") or []):
            found.append(f"the policy does not match UPDATE of {resource}")
    for condition in spec.get("matchConditions") or []:
        expression = " ".join(str(_mapping(condition).get("expression", "")).split())
        if not _USERNAME_ONLY.fullmatch(expression):
            found.append(f"the policy's match condition {_mapping(condition).get('name')!r} "
                         "does more than compare the username")
    variables = {_mapping(v).get("name"): _compact(_mapping(v).get("expression"))
                 for v in spec.get("variables") or []}
    validations = {_compact(_mapping(v).get("expression")) for v in spec.get("validations")
                   or []}
    if (variables.get(OWN_NODE_VARIABLE[0]) != _compact(OWN_NODE_VARIABLE[1])
            or _compact(OWN_NODE_VALIDATION) not in validations):
        found.append("the policy's validations do not hold the own-node rule as shipped "
                     f"({OWN_NODE_VALIDATION})")
    return found


def _covers(rule: Any, resource: str) -> bool:
    rule = _mapping(rule)
    groups = rule.get("apiGroups") or []
    versions = rule.get("apiVersions") or []
    operations = rule.get("operations") or []
    resources = rule.get("resources") or []
    return (("" in groups or "*" in groups) and ("v1" in versions or "*" in versions)
            and ("UPDATE" in operations or "*" in operations)
            and (resource in resources or "*/*" in resources
                 or ("*" in resources and "/" not in resource)
                 or (resource.endswith("/status") and "*/status" in resources)
                 or (resource.startswith("nodes/") and "nodes/*" in resources))
            and rule.get("scope", "*") in ("*", "Cluster") and not rule.get("resourceNames"))


def _selects(selector: Any) -> bool:
    selector = _mapping(selector)
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def _compact(text: Any) -> str:
    return "".join(str(text or "").split())


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
