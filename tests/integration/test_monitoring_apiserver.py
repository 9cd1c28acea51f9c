"""The chart's PrometheusRule and Grafana dashboard ConfigMap against a real
kube-apiserver, with strict field validation.

The Prometheus Operator's CRD is not vendored here: the test defines a structural CRD
for monitoring.coreos.com/v1 PrometheusRule with the fields of the Operator's API
(spec.groups[]: name, interval, limit, labels, query_offset, partial_response_strategy,
rules[]: alert, record, expr, for, keep_firing_for, labels, annotations), so a
misspelt or misplaced key in the chart's rules is refused the way the Operator's CRD
refuses it. That checks the shape of the object, not the Operator's own validation of
PromQL (tests/deploy/test_monitoring.py reads the expressions).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from manifests import find, render_chart

pytestmark = pytest.mark.integration

# Prometheus' duration: units from years down to milliseconds, each at most once, in order.
DURATION = "^(0|" + "".join(f"(([0-9]+){u})?" for u in ("y", "w", "d", "h", "m", "s", "ms")) + ")$"
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}

RULE = {
    "type": "object",
    "required": ["expr"],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"x-kubernetes-int-or-string": True},
        "for": {"type": "string", "pattern": DURATION},
        "keep_firing_for": {"type": "string", "pattern": DURATION, "minLength": 1},
        "labels": STRINGS,
        "annotations": STRINGS,
    },
}

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "PrometheusRule", "listKind": "PrometheusRuleList",
                  "plural": "prometheusrules", "singular": "prometheusrule"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "spec": {"type": "object", "properties": {"groups": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": {"type": "string", "pattern": DURATION},
                                "query_offset": {"type": "string", "pattern": DURATION},
                                "limit": {"type": "integer"},
                                "labels": STRINGS,
                                "partial_response_strategy": {"type": "string"},
                                "rules": {"type": "array", "items": RULE},
                            },
                        },
                    }}},
                },
            }},
        }],
    },
}


def strict(dynamic: DynamicClient, obj: dict[str, Any], dry_run: bool = True) -> dict[str, Any]:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    options: dict[str, Any] = {"query_params": [("fieldValidation", "Strict")]}
    if dry_run:
        options["dry_run"] = "All"
    return resource.create(body=obj, namespace=obj["metadata"].get("namespace"),
                           **options).to_dict()


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render_chart("--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true")


@pytest.fixture(scope="module")
def dynamic(apiserver, rendered) -> Iterator[DynamicClient]:
    with apiserver.admin_client() as admin:
        extensions = client.ApiextensionsV1Api(admin)
        try:
            extensions.create_custom_resource_definition(CRD)
        except ApiException as err:
            if err.status != 409:
                raise
        namespace = find(rendered, "Namespace", "nodefeatures")
        try:
            client.CoreV1Api(admin).create_namespace(namespace)
        except ApiException as err:
            if err.status != 409:
                raise
        deadline = time.monotonic() + 30
        while True:
            fresh = DynamicClient(admin)
            try:
                fresh.resources.get(api_version="monitoring.coreos.com/v1",
                                    kind="PrometheusRule")
                break
            except ResourceNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield fresh
        extensions.delete_custom_resource_definition(CRD["metadata"]["name"])


def test_the_prometheus_rule_is_accepted_strictly_and_stored_whole(dynamic, rendered) -> None:
    rule = find(rendered, "PrometheusRule", "nodefeatures")
    stored = strict(dynamic, rule)
    assert stored["spec"] == rule["spec"], "a field was pruned by the schema"


def test_a_misspelt_rule_key_is_refused(dynamic, rendered) -> None:
    """The check above could not pass by accident."""
    rule = copy.deepcopy(find(rendered, "PrometheusRule", "nodefeatures"))
    rule["spec"]["groups"][0]["rules"][0]["annotation"] = {"summary": "x"}
    with pytest.raises(ApiException) as caught:
        strict(dynamic, rule)
    assert caught.value.status in (400, 422)
    assert "annotation" in caught.value.body


def test_the_dashboard_configmap_is_accepted_strictly(dynamic, rendered) -> None:
    board = find(rendered, "ConfigMap", "nodefeatures-grafana-dashboard")
    stored = strict(dynamic, board)
    assert json.loads(stored["data"]["nodefeatures.json"])["uid"] == "nodefeatures"
