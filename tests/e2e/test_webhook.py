"""The reported incident, replayed with kubectl against a real kube-apiserver and etcd.

crdguard runs as a local process (``serve --kubeconfig``, TLS on 127.0.0.1) and is
registered through the chart's own ValidatingWebhookConfiguration, rendered with
``webhook.url``. Every object is a real upstream manifest applied with kubectl.
The steps build on each other (one cluster, one story), so they run in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import ControlPlane
from .conftest import locate_tools
from .guard import Guard, register_with_the_chart

NAMESPACE = "kgateway-system"
BTLS = "backendtlspolicies.gateway.networking.k8s.io"
SERVED = "jsonpath={range .spec.versions[*]}{.name}={.served}{' '}{end}"


def kgateway_deployment(version: str, namespace: str = NAMESPACE) -> str:
    """A Deployment shaped like the kgateway chart's (labels, container, image)."""
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "kgateway",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/name": "kgateway", "app.kubernetes.io/instance": "kgateway"},
            },
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "kgateway"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "kgateway"}},
                    "spec": {
                        "containers": [
                            {"name": "kgateway", "image": f"cr.kgateway.dev/kgateway-dev/kgateway:{version}"}
                        ]
                    },
                },
            },
        }
    )


def kgateway_helmrelease(name: str, version: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "interval": "10m",
                "chart": {
                    "spec": {
                        "chart": "kgateway",
                        "version": version,
                        "sourceRef": {"kind": "HelmRepository", "name": "kgateway"},
                    }
                },
                "values": {"inferenceExtension": {"enabled": False}},
            },
        }
    )


def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"{what} did not hold within {timeout}s")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ControlPlane]:
    # Its own control plane: this story registers a webhook that must not leak into other tests.
    kube_bin_dir, helm = locate_tools()
    with ControlPlane(kube_bin_dir, helm) as plane:
        yield plane


@pytest.fixture(scope="module")
def guard(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    workdir = tmp_path_factory.mktemp("guard")
    running = Guard(workdir, ["--kubeconfig", str(cluster.kubeconfig)])
    try:
        running.wait_ready()
        register_with_the_chart(cluster, running)
        cluster.kubectl("create", "namespace", NAMESPACE)
        yield running
    finally:
        running.close()


def apply(cluster: ControlPlane, *args: str, manifest: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-f", "-"] if manifest is not None else []
    return cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", *args, *extra, input=manifest, check=False
    )


def served(cluster: ControlPlane, crd: str) -> str:
    return cluster.kubectl("get", "crd", crd, "-o", SERVED).stdout.strip()


def bundle_version(cluster: ControlPlane, crd: str) -> str:
    out = cluster.kubectl("get", "crd", crd, "-o", "json").stdout
    return str(json.loads(out)["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"])


def test_incident_v1_4_standard_over_kgateway_2_0_4_is_denied_with_the_fix(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    assert (
        apply(cluster, "-f", str(upstream / "gateway-api/v1.3.0/experimental-install.yaml")).returncode == 0
    )
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{BTLS}", "--timeout=60s")
    created = apply(cluster, manifest=kgateway_deployment("v2.0.4"))
    assert created.returncode == 0, created.stderr
    # The watch cache follows the cluster: wait until crdguard has seen kgateway.
    eventually(lambda: guard.state()["objects"].get("ComponentRelease", 0) == 1, what="kgateway seen")

    result = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml"))

    assert result.returncode != 0
    stderr = result.stderr
    assert 'admission webhook "crds.crdguard.io" denied the request' in stderr
    assert f"crdguard denied UPDATE of CustomResourceDefinition {BTLS}" in stderr
    assert "kgateway v2.0.4 in Deployment kgateway-system/kgateway" in stderr
    assert "needs BackendTLSPolicy gateway.networking.k8s.io/v1alpha3 to be served" in stderr
    assert "serves v1 (listed but not served: v1alpha3)" in stderr
    assert "--version v2.1.1 -n kgateway-system" in stderr
    assert "v1.4.0/experimental-install.yaml" in stderr
    assert "{range .spec.versions[*]}{.name}={.served}" in stderr
    # Only BackendTLSPolicy was refused: the rest of the bundle moved to v1.4.0.
    assert served(cluster, BTLS) == "v1alpha3=true"
    assert bundle_version(cluster, BTLS) == "v1.3.0"
    assert bundle_version(cluster, "httproutes.gateway.networking.k8s.io") == "v1.4.0"
    assert bundle_version(cluster, "gateways.gateway.networking.k8s.io") == "v1.4.0"


def test_server_side_dry_run_gets_the_same_verdict(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    result = apply(
        cluster, "--dry-run=server", "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml")
    )
    assert result.returncode != 0
    assert f"crdguard denied UPDATE of CustomResourceDefinition {BTLS}" in result.stderr


def test_audit_reports_a_conflict_that_bypassed_the_webhook(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    # kube-system is excluded from the namespaced webhook, so this kgateway is never reviewed.
    assert apply(cluster, manifest=kgateway_deployment("v2.1.1", namespace="kube-system")).returncode == 0
    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook.cli",
            "audit",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 1, audit.stderr
    found = {(c["rule"], c["source"]["namespace"]) for c in json.loads(audit.stdout)["conflicts"]}
    # No BackendConfigPolicy CRD yet; v1.3.0 experimental's BackendTLSPolicy CRD (v1alpha3 only) is below
    # the bundle v1.4.0 from which kgateway 2.1 watches it, so it is ignored (docs/evidence/kgateway.md).
    assert found == {
        ("kgateway-2.1-ignores-backendtlspolicy-below-bundle-v1.4", "kube-system"),
        ("kgateway-2.1-requires-backendconfigpolicy-crd", "kube-system"),
    }
    cluster.kubectl("delete", "deployment", "kgateway", "-n", "kube-system")
    clean = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "audit", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stdout
    assert "No conflicts found." in clean.stdout


def test_deleting_the_conflicting_deployment_lets_the_apply_through(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    cluster.kubectl("delete", "deployment", "kgateway", "-n", NAMESPACE)
    bundle = str(upstream / "gateway-api/v1.4.0/standard-install.yaml")
    eventually(lambda: apply(cluster, "-f", bundle).returncode == 0, what="v1.4.0 standard applies")
    assert served(cluster, BTLS) == "v1=true v1alpha3=false"


def test_kgateway_2_1_1_with_its_crds_passes_on_v1_4_standard(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    crds = apply(cluster, "-f", str(upstream / "kgateway/v2.1.1/crds"))
    assert crds.returncode == 0, crds.stderr
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/backendconfigpolicies.gateway.kgateway.dev",
        "--timeout=60s",
    )
    # The watch delivers the new CRD within moments; until then crdguard would still see it missing.
    manifest = kgateway_deployment("v2.1.1")
    eventually(lambda: apply(cluster, manifest=manifest).returncode == 0, what="kgateway v2.1.1 applies")


def test_the_reverse_v1alpha3_only_crd_under_kgateway_2_1_is_allowed_with_a_warning(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    eventually(lambda: guard.state()["objects"].get("ComponentRelease", 0) == 1, what="kgateway 2.1.1 seen")
    # The API server itself refuses to drop a stored version, so the reverse arrives as a CREATE.
    # kgateway 2.1 starts its BackendTLSPolicy watch only for a CRD of bundle v1.4.0 or later (the Istio
    # CRD watcher it pins): v1.3.0's CRD is silently ignored, not a failed watch, so crdguard warns.
    removed = cluster.kubectl("delete", "crd", BTLS, check=False)
    assert removed.returncode == 0, removed.stderr
    eventually(lambda: cluster.kubectl("get", "crd", BTLS, check=False).returncode != 0, what="CRD gone")
    result = apply(cluster, "-f", str(upstream / "gateway-api/v1.3.0/experimental-install.yaml"))
    assert result.returncode == 0, result.stderr
    assert (
        "crdguard: new conflict (warn): kgateway v2.1.1 (kgateway-system/kgateway) needs BackendTLSPolicy v1"
        in result.stderr
    )
    assert bundle_version(cluster, BTLS) == "v1.3.0"
    restored = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml"))
    assert restored.returncode == 0, restored.stderr
    assert "crdguard" not in restored.stderr


def test_deleting_the_backendconfigpolicy_crd_under_kgateway_2_1_is_denied(
    cluster: ControlPlane, guard: Guard
) -> None:
    result = cluster.kubectl("delete", "crd", "backendconfigpolicies.gateway.kgateway.dev", check=False)
    assert result.returncode != 0
    assert "crdguard denied deletion of CustomResourceDefinition backendconfigpolicies" in result.stderr
    # The verified way out while the CRD stays needed: kgateway back to 2.0.x first, then retry.
    assert "charts/kgateway --version v2.0.4 -n kgateway-system" in result.stderr
    assert "Retry this change" in result.stderr


@pytest.mark.parametrize(
    ("version", "allowed"),
    [("v2.0.4", False), ("v2.1.1", True)],
    ids=["a Flux HelmRelease for kgateway v2.0.4 is denied", "one for v2.1.1 passes"],
)
def test_flux_helmrelease_on_v1_4_standard(
    cluster: ControlPlane, guard: Guard, upstream: Path, version: str, allowed: bool
) -> None:
    assert apply(cluster, "-f", str(upstream / "flux/helmreleases.yaml")).returncode == 0
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/helmreleases.helm.toolkit.fluxcd.io", "--timeout=60s"
    )
    eventually(lambda: guard.state()["watches"]["helmreleases"]["synced"], what="HelmRelease watch synced")
    result = apply(cluster, manifest=kgateway_helmrelease(f"kgateway-{version.replace('.', '-')}", version))
    assert (result.returncode == 0) is allowed, result.stderr
    if not allowed:
        assert f"kgateway {version} in HelmRelease kgateway-system/kgateway-v2-0-4" in result.stderr
        assert "needs BackendTLSPolicy gateway.networking.k8s.io/v1alpha3 to be served" in result.stderr


READER = "crdguard-e2e-reader"
# A ClusterRole like the chart's, and a FlowSchema that gives the reader's requests their own
# name in the API server's priority-and-fairness metrics.
READER_ACCESS = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {READER}}}
rules:
  - {{apiGroups: [apiextensions.k8s.io], resources: [customresourcedefinitions], verbs: [get, list, watch]}}
  - {{apiGroups: [apps], resources: [deployments], verbs: [get, list, watch]}}
  - {{apiGroups: [helm.toolkit.fluxcd.io], resources: [helmreleases], verbs: [get, list, watch]}}
  - {{apiGroups: [source.toolkit.fluxcd.io], resources: [ocirepositories], verbs: [get, list, watch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {READER}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {READER}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {READER}}}]
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {{name: {READER}}}
spec:
  matchingPrecedence: 100
  priorityLevelConfiguration: {{name: workload-low}}
  distinguisherMethod: {{type: ByUser}}
  rules:
    - subjects: [{{kind: User, user: {{name: {READER}}}}}]
      resourceRules:
        - {{verbs: ["*"], apiGroups: ["*"], resources: ["*"], clusterScope: true, namespaces: ["*"]}}
      nonResourceRules:
        - {{verbs: ["*"], nonResourceURLs: ["*"]}}
"""


def requests_by(cluster: ControlPlane, flow_schema: str) -> float:
    """Requests the API server dispatched for ``flow_schema``, from its own /metrics (read as admin).

    ``apiserver_request_total`` has no user or user-agent label; priority and fairness counts
    every request by the FlowSchema its user matched, so a FlowSchema for crdguard's user alone
    counts crdguard's requests: lists, gets and the start of every watch."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_flowcontrol_dispatched_requests_total{") and (
            f'flow_schema="{flow_schema}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_reviews_make_no_api_server_requests(
    cluster: ControlPlane, guard: Guard, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """crdguard with its own user, judging 50 reviews; the API server counts its requests."""
    cluster.kubectl("apply", "-f", "-", input=READER_ACCESS)
    reader = Guard(
        tmp_path_factory.mktemp("reader"), ["--kubeconfig", str(cluster.make_user_kubeconfig(READER))]
    )
    try:
        reader.wait_ready()
        eventually(
            lambda: reader.state()["objects"] == guard.state()["objects"], what="the reader holds the cluster"
        )
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "batch",
                "operation": "CREATE",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "namespace": "team-a",
                "name": "kgateway",
                "object": yaml.safe_load(kgateway_deployment("v2.0.4", namespace="team-a")),
            },
        }
        before = requests_by(cluster, READER)
        verdicts = [
            reader.post("/validate", json.dumps(review).encode())[1]["response"]["allowed"] for _ in range(50)
        ]
        after = requests_by(cluster, READER)
    finally:
        reader.close()
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=READER_ACCESS)
    assert verdicts == [False] * 50  # v1.4.0 standard is installed: every review denies kgateway 2.0.4
    # The count sees crdguard: its start-up lists and watches are there, one per watched type at least.
    assert before >= 4
    assert after - before == 0
