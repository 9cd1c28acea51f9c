"""The Helm chart's output against a real kube-apiserver: every object `helm template`
renders, with every optional part that needs no third-party CRD turned on, is accepted
with dryRun=All and strict field validation; NFD's CRDs are created and then hold
NodeFeatureRule and NodeFeature objects as NFD writes them, and refuse malformed ones.

The PodMonitor and ServiceMonitor are left out: their CRDs belong to the Prometheus
Operator (tests/deploy/test_helm_chart.py checks what they select).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from manifests import render_chart

pytestmark = pytest.mark.integration

CRD_WAIT_S = 30.0
FIELD_MANAGER = "nodefeatures-helm-test"

EXTRA_HOST_PATHS = [{"name": "vendor", "path": "/opt/vendor", "mountPath": "/host-extra/vendor"},
                    {"name": "machine", "path": "/etc/machine-type", "mountPath": "/extra/mt",
                     "type": "File"}]

NODE_FEATURE_RULE = """\
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: nodefeatures-helm-test
spec:
  rules:
    - name: nvidia.com/gdrcopy
      labels:
        nvidia.com/gdrcopy.capable: "true"
      matchFeatures:
        - feature: kernel.loadedmodule
          matchExpressions:
            gdrdrv: {op: Exists}
    - name: hopper
      labels:
        gpu.hopper: "true"
      vars:
        arch: hopper
      taints:
        - key: example.com/hopper
          effect: NoSchedule
      matchAny:
        - matchFeatures:
            - feature: pci.device
              matchExpressions:
                vendor: {op: In, value: ["10de"]}
    - name: templated
      labelsTemplate: |
        {{ range .pci.device }}vendor-{{ .vendor }}-present=true
        {{ end }}
      matchFeatures:
        - feature: pci.device
          matchName: {op: InRegexp, value: ["^10de"]}
"""

NODE_FEATURE = """\
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeature
metadata:
  name: nodefeatures-helm-test
  namespace: default
  labels:
    nfd.node.kubernetes.io/node-name: node-1
spec:
  features:
    flags:
      cpu.cpuid:
        elements: {AVX2: {}, AVX512F: {}}
    attributes:
      kernel.version:
        elements: {major: "6", minor: "1"}
    instances:
      pci.device:
        elements:
          - attributes: {vendor: "10de", class: "0302"}
  labels:
    feature.node.kubernetes.io/example: "true"
"""


def strict(dynamic: DynamicClient, obj: dict[str, Any], dry_run: bool,
           or_apply: bool = False) -> dict[str, Any]:
    """Create `obj` with strict field validation; with `or_apply`, server-side apply it
    (as strictly) where it exists already: test_deploy.py may have created deploy/'s."""
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    options: dict[str, Any] = {"query_params": [("fieldValidation", "Strict")]}
    if dry_run:
        options["dry_run"] = "All"
    try:
        return resource.create(body=obj, namespace=namespace, **options).to_dict()
    except ApiException as err:
        if not (or_apply and err.status == 409):
            raise
    return resource.server_side_apply(body=obj, namespace=namespace,
                                      field_manager=FIELD_MANAGER, force_conflicts=True,
                                      **options).to_dict()


@pytest.fixture(scope="module")
def admin(apiserver) -> Iterator[client.ApiClient]:
    with apiserver.admin_client() as api:
        yield api


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render_chart("--set", "gpu.enabled=true,nfdCRDs.enabled=true",
                        "--set-json", f"extraHostPaths={json.dumps(EXTRA_HOST_PATHS)}",
                        "--set", "nodeSelector.kubernetes\\.io/os=linux")


@pytest.fixture(scope="module")
def crds(admin, rendered) -> Iterator[DynamicClient]:
    """NFD's CRDs from the chart, created for real and established."""
    dynamic = DynamicClient(admin)
    created = []
    for obj in rendered:
        if obj["kind"] == "CustomResourceDefinition":
            try:
                strict(dynamic, obj, dry_run=False)
                created.append(obj["metadata"]["name"])
            except ApiException as err:
                if err.status != 409:
                    raise
    deadline = time.monotonic() + CRD_WAIT_S
    while True:
        fresh = DynamicClient(admin)
        try:
            fresh.resources.get(api_version="nfd.k8s-sigs.io/v1alpha1", kind="NodeFeatureRule")
            fresh.resources.get(api_version="nfd.k8s-sigs.io/v1alpha1", kind="NodeFeature")
            break
        except ResourceNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield fresh
    extensions = client.ApiextensionsV1Api(admin)
    for name in created:
        extensions.delete_custom_resource_definition(name)


def test_every_rendered_object_is_accepted_strictly(admin, rendered, crds) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Namespace", "ConfigMap", "DaemonSet", "ValidatingAdmissionPolicy",
            "CustomResourceDefinition"} <= kinds
    dynamic = DynamicClient(admin)
    # The namespace must exist for its objects to be dry-run; other tests may have
    # created it already.
    namespace = next(o for o in rendered if o["kind"] == "Namespace")
    try:
        strict(dynamic, namespace, dry_run=False)
    except ApiException as err:
        if err.status != 409:
            raise
    for obj in rendered:
        if obj["kind"] == "CustomResourceDefinition":
            continue  # created by the crds fixture, strictly
        try:
            accepted = strict(dynamic, obj, dry_run=True, or_apply=True)
        except ApiException as err:
            raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {err.body}") from err
        assert accepted["metadata"]["name"] == obj["metadata"]["name"]


def test_strict_validation_rejects_an_unknown_field_in_the_chart_output(admin,
                                                                         rendered) -> None:
    """The check above could not pass by accident: a stray field is refused."""
    dynamic = DynamicClient(admin)
    ds = next(o for o in rendered if o["kind"] == "DaemonSet")
    broken = json.loads(json.dumps(ds))
    broken["metadata"]["name"] = "nodefeatures-strict-probe"
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(ApiException) as caught:
        strict(dynamic, broken, dry_run=True)
    assert caught.value.status in (400, 422)
    assert "volumeMount" in caught.value.body


def test_nfd_crds_hold_nfds_objects(crds) -> None:
    for text in (NODE_FEATURE_RULE, NODE_FEATURE):
        obj = yaml.safe_load(text)
        stored = strict(crds, obj, dry_run=True)
        assert stored["spec"] == obj["spec"], "a field was pruned by the schema"


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][0].pop("name"), "name"),
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][1]["taints"][0].update(effect="Often"),
     "effect"),
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][0].update(label={"a": "b"}), "label"),
    ("NodeFeature", lambda o: o["spec"]["labels"].update(count=3), "labels"),
])
def test_nfd_crds_refuse_malformed_objects(crds, kind, change, message) -> None:
    obj = yaml.safe_load(NODE_FEATURE_RULE if kind == "NodeFeatureRule" else NODE_FEATURE)
    change(obj)
    with pytest.raises(ApiException) as caught:
        strict(crds, obj, dry_run=True)
    assert caught.value.status in (400, 422), caught.value.body
    assert message in caught.value.body
