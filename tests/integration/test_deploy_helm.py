"""The Helm chart's output against a real kube-apiserver: every object `helm template`
renders, with every optional part that needs no third-party CRD turned on, is accepted
with dryRun=All and strict field validation; NFD's CRDs are created and then hold
NodeFeatureRule, NodeFeature and NodeFeatureGroup objects as NFD writes them, and refuse
malformed ones. On fresh control planes, the real `helm install` and `helm uninstall`:
the chart's CRDs go with the release, and CRDs someone else installed are neither taken
over nor removed.

With NFD's source at hand (NODEFEATURES_NFD_GIT: a clone, bare or not, of
kubernetes-sigs/node-feature-discovery; NODEFEATURES_NFD_REF, default v0.19.0), NFD's
own sample objects are accepted strictly and kept whole, and objects stored under NFD's
CRDs keep working once ours replace them. Without it those tests skip.

The PodMonitor and ServiceMonitor are left out: their CRDs belong to the Prometheus
Operator (tests/deploy/test_helm_chart.py checks what they select).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import kubeharness
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from manifests import CHART, DEPLOY, render, render_chart, run_helm

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


NODE_FEATURE_GROUP = """\
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureGroup
metadata:
  name: nodefeatures-helm-test
  namespace: default
spec:
  featureGroupRules:
    - name: avx512
      vars: {avx512: "true"}
      matchFeatures:
        - feature: cpu.cpuid
          matchExpressions:
            AVX512F: {op: Exists}
      matchAny:
        - matchFeatures:
            - feature: kernel.version
              matchExpressions:
                major: {op: Gt, value: ["5"], type: version}
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
            fresh.resources.get(api_version="nfd.k8s-sigs.io/v1alpha1", kind="NodeFeatureGroup")
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
    for text in (NODE_FEATURE_RULE, NODE_FEATURE, NODE_FEATURE_GROUP):
        obj = yaml.safe_load(text)
        stored = strict(crds, obj, dry_run=True)
        assert stored["spec"] == obj["spec"], "a field was pruned by the schema"


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][0].pop("name"), "name"),
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][1]["taints"][0].update(effect="Often"),
     "effect"),
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][0].update(label={"a": "b"}), "label"),
    ("NodeFeature", lambda o: o["spec"]["labels"].update(count=3), "labels"),
    # NFD's own schema refuses these too: an unknown operator, a misspelt field, a
    # feature set without its elements.
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][0]["matchFeatures"][0][
        "matchExpressions"]["gdrdrv"].update(op="Exist"), "Exist"),
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][0]["matchFeatures"][0][
        "matchExpressions"]["gdrdrv"].update(values=["x"]), "values"),
    ("NodeFeatureRule", lambda o: o["spec"]["rules"][2]["matchFeatures"][0][
        "matchName"].pop("op"), "op"),
    ("NodeFeature", lambda o: o["spec"]["features"]["flags"]["cpu.cpuid"].pop("elements"),
     "elements"),
    ("NodeFeatureGroup", lambda o: o["spec"].pop("featureGroupRules"), "featureGroupRules"),
])
def test_nfd_crds_refuse_malformed_objects(crds, kind, change, message) -> None:
    obj = yaml.safe_load({"NodeFeatureRule": NODE_FEATURE_RULE, "NodeFeature": NODE_FEATURE,
                          "NodeFeatureGroup": NODE_FEATURE_GROUP}[kind])
    change(obj)
    with pytest.raises(ApiException) as caught:
        strict(crds, obj, dry_run=True)
    assert caught.value.status in (400, 422), caught.value.body
    assert message in caught.value.body


# ----- NFD's own objects and CRDs (needs NFD's source) -----------------------------------

NFD_REF = os.environ.get("NODEFEATURES_NFD_REF", "v0.19.0")


def nfd_file(path: str) -> str:
    """A file of NFD's source at NFD_REF, or skip without it."""
    git_dir = os.environ.get("NODEFEATURES_NFD_GIT")
    if not git_dir:
        pytest.skip("NODEFEATURES_NFD_GIT is not set (a clone of node-feature-discovery)")
    result = subprocess.run(["git", "-C", git_dir, "show", f"{NFD_REF}:{path}"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.skip(f"NFD's {path} at {NFD_REF}: {result.stderr.strip()}")
    return result.stdout


def nfd_samples() -> list[dict[str, Any]]:
    listing = nfd_file("deployment/nodefeaturerule/samples/")  # git show lists a tree
    names = [line for line in listing.splitlines()[1:] if line.endswith(".yaml")]
    paths = [f"deployment/nodefeaturerule/samples/{n}" for n in names]
    paths.append("deployment/base/nfd-crds/cr-sample.yaml")
    samples = [d for p in paths for d in yaml.safe_load_all(nfd_file(p)) if d]
    assert len(samples) >= 10, paths
    return samples


def test_nfds_own_samples_are_accepted_strictly_and_kept_whole(crds) -> None:
    for sample in nfd_samples():
        stored = strict(crds, sample, dry_run=True)
        assert stored["spec"] == sample["spec"], sample["metadata"]["name"]


def wait_served(api: client.ApiClient, kinds: set[str], present: bool = True) -> None:
    deadline = time.monotonic() + CRD_WAIT_S
    while True:
        served: set[str] = set()
        try:
            resources = api.call_api("/apis/nfd.k8s-sigs.io/v1alpha1", "GET",
                                     auth_settings=["BearerToken"], _preload_content=False)
            served = {r["kind"] for r in json.loads(resources.data)["resources"]}
        except ApiException as err:
            if err.status != 404:
                raise
        if (kinds <= served) if present else not (kinds & served):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{kinds} served: {served}, wanted present={present}")
        time.sleep(0.2)


@pytest.fixture
def fresh_plane() -> Iterator[kubeharness.ControlPlane]:
    """A control plane of its own: installing and uninstalling the whole chart (the
    namespace, cluster-wide CRDs) must not touch the session's server."""
    with kubeharness.control_plane() as plane:
        yield plane


def crd_names(api: client.ApiClient) -> set[str]:
    return {c.metadata.name for c in
            client.ApiextensionsV1Api(api).list_custom_resource_definition().items}


NFD_CRD_NAMES = {"nodefeatures.nfd.k8s-sigs.io", "nodefeaturerules.nfd.k8s-sigs.io",
                 "nodefeaturegroups.nfd.k8s-sigs.io"}
KINDS = {"NodeFeature", "NodeFeatureRule", "NodeFeatureGroup"}


def test_objects_stored_under_nfds_crds_keep_working_under_ours(fresh_plane) -> None:
    nfd_crds = [d for d in yaml.safe_load_all(nfd_file(
        "deployment/base/nfd-crds/nfd-api-crds.yaml")) if d]
    samples = nfd_samples()
    with fresh_plane.admin_client() as api:
        for crd in nfd_crds:
            client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        wait_served(api, KINDS)
        dynamic = DynamicClient(api)
        # What an NFD cluster holds: its samples, and a taint NFD's schema lets through.
        odd = yaml.safe_load(NODE_FEATURE_RULE)
        odd["spec"]["rules"][1]["taints"][0]["effect"] = "Sometimes"
        for obj in [*samples, odd, yaml.safe_load(NODE_FEATURE),
                    yaml.safe_load(NODE_FEATURE_GROUP)]:
            strict(dynamic, obj, dry_run=False)
        # Ours replace NFD's, as `kubectl apply -k deploy/nfd-crds` would.
        extensions = client.ApiextensionsV1Api(api)
        for crd in render(DEPLOY / "nfd-crds"):
            current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
        dynamic = DynamicClient(api)
        # Ours are in force once a new object with the odd taint is refused.
        new = json.loads(json.dumps(odd))
        new["metadata"]["name"] = "nodefeatures-helm-test-new"
        deadline = time.monotonic() + CRD_WAIT_S
        while True:
            try:
                strict(dynamic, new, dry_run=True)
            except ApiException as err:
                assert "effect" in err.body, err.body
                break
            assert time.monotonic() < deadline, "our CRD's schema never took effect"
            time.sleep(0.2)
        rules = dynamic.resources.get(api_version="nfd.k8s-sigs.io/v1alpha1",
                                      kind="NodeFeatureRule")
        for obj in [*samples, odd]:
            stored = rules.get(name=obj["metadata"]["name"]).to_dict()
            assert stored["spec"] == obj["spec"]
            # Updates that leave the spec as it was are accepted, the odd taint too
            # (ratcheting).
            rules.patch(name=obj["metadata"]["name"],
                        content_type="application/merge-patch+json",
                        body={"metadata": {"labels": {"touched": "yes"}}})


def helm_on(plane: kubeharness.ControlPlane, *args: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_helm(*args, f"--kubeconfig={plane.kubeconfig_path}", "--timeout=60s",
                    check=check)


def test_helm_uninstall_removes_the_crds_it_installed(fresh_plane) -> None:
    helm_on(fresh_plane, "install", "nf", str(CHART), "--set", "nfdCRDs.enabled=true")
    with fresh_plane.admin_client() as api:
        assert crd_names(api) >= NFD_CRD_NAMES
        wait_served(api, KINDS)
        strict(DynamicClient(api), yaml.safe_load(NODE_FEATURE_RULE), dry_run=False)
        for name in NFD_CRD_NAMES:
            crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
            assert crd.metadata.annotations["meta.helm.sh/release-name"] == "nf"
        # Without --wait: no namespace controller runs here to finish deleting namespace
        # nodefeatures, while the API server itself removes CRDs and their objects.
        helm_on(fresh_plane, "uninstall", "nf")
        started = time.monotonic()
        while NFD_CRD_NAMES & crd_names(api):
            left = NFD_CRD_NAMES & crd_names(api)
            assert time.monotonic() < started + 3 * CRD_WAIT_S, [
                (n, client.ApiextensionsV1Api(api).read_custom_resource_definition(n).status)
                for n in left]
            time.sleep(0.2)
        print(f"CRDs deleted {time.monotonic() - started:.1f} s after helm uninstall")
        wait_served(api, KINDS, present=False)


def test_helm_leaves_crds_someone_else_installed_alone(fresh_plane) -> None:
    """NFD's own installation (here: deploy/nfd-crds applied without Helm) owns the
    CRDs: the chart refuses to adopt them, installs beside them with nfdCRDs off, and
    its uninstall leaves them and their objects."""
    with fresh_plane.admin_client() as api:
        for crd in render(DEPLOY / "nfd-crds"):
            client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        wait_served(api, KINDS)
        strict(DynamicClient(api), yaml.safe_load(NODE_FEATURE_RULE), dry_run=False)
        refused = helm_on(fresh_plane, "install", "nf", str(CHART),
                          "--set", "nfdCRDs.enabled=true", check=False)
        assert refused.returncode != 0
        assert "invalid ownership metadata" in refused.stderr, refused.stderr
        assert "CustomResourceDefinition" in refused.stderr, refused.stderr
        assert any(name in refused.stderr for name in NFD_CRD_NAMES), refused.stderr
        helm_on(fresh_plane, "uninstall", "nf", check=False)  # a failed release, if kept
        helm_on(fresh_plane, "install", "nf2", str(CHART))
        helm_on(fresh_plane, "uninstall", "nf2")
        assert crd_names(api) >= NFD_CRD_NAMES
        rules = DynamicClient(api).resources.get(api_version="nfd.k8s-sigs.io/v1alpha1",
                                                 kind="NodeFeatureRule")
        assert rules.get(name="nodefeatures-helm-test").to_dict()["spec"]["rules"]
        for name in NFD_CRD_NAMES:
            crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
            assert "meta.helm.sh/release-name" not in (crd.metadata.annotations or {})
