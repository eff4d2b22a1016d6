"""Argo CD Applications, k3s HelmCharts and Flux chartRef HelmCharts, judged on a real kube-apiserver.

crdguard runs as a local process watching the cluster and is registered through the chart's
ValidatingWebhookConfiguration (``webhook.url``), as in test_webhook.py. The CRDs are the real
ones: Argo CD's Application CRD from its Go module at a release tag (read at test time, never
committed), k3s helm-controller's and Flux's from the shared upstream folder. The cluster holds
Gateway API v1.4.0 standard, the incident's bundle: kgateway v2.0.4 must be refused however it
arrives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bundles import BundleUnavailable, argocd_application_crd
from helpers import (
    KGATEWAY_NS,
    application,
    flux_helmchart,
    helmrelease_chartref,
    k3s_helmchart,
)

from .cluster import ControlPlane
from .conftest import locate_tools, unavailable
from .guard import REPO_ROOT, Guard, register_with_the_chart
from .test_webhook import apply, eventually

pytestmark = pytest.mark.e2e

SOURCE_CRDS = {
    "applications.argoproj.io": None,  # from the Go module
    "helmcharts.helm.cattle.io": "k3s-helm-controller/helmcharts.yaml",
    "helmcharts.source.toolkit.fluxcd.io": "flux/helmcharts.yaml",
    "helmreleases.helm.toolkit.fluxcd.io": "flux/helmreleases.yaml",
}
WATCHES = ("applications", "helmcharts.helm.cattle.io", "helmcharts.source.toolkit.fluxcd.io", "helmreleases")
V2_0_4_DENIAL = "needs BackendTLSPolicy gateway.networking.k8s.io/v1alpha3 to be served"


@pytest.fixture(scope="module")
def cluster(upstream: Path) -> Iterator[ControlPlane]:
    try:
        argocd_crd = argocd_application_crd()
    except BundleUnavailable as exc:
        unavailable(f"Argo CD's Application CRD is not obtainable: {exc}")
    kube_bin_dir, helm = locate_tools()
    with ControlPlane(kube_bin_dir, helm) as plane:
        for name, relative in SOURCE_CRDS.items():
            crd = argocd_crd if relative is None else yaml.safe_load((upstream / relative).read_text())
            assert crd["metadata"]["name"] == name
            plane.kubectl("create", "-f", "-", input=json.dumps(crd))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in SOURCE_CRDS)
        )
        assert apply(plane, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml")).returncode == 0
        # kgateway-crds v2.1.1: so v2.1.1 is compatible and only v2.0.4 is refused.
        assert apply(plane, "-f", str(upstream / "kgateway/v2.1.1/crds")).returncode == 0
        for namespace in ("argocd", KGATEWAY_NS):
            plane.kubectl("create", "namespace", namespace)
        yield plane


@pytest.fixture(scope="module")
def guard(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    running = Guard(tmp_path_factory.mktemp("guard"), ["--kubeconfig", str(cluster.kubeconfig)])
    try:
        running.wait_ready()
        # The chart installs its configuration empty; crdguard registers the webhooks its ConfigMap holds.
        register_with_the_chart(cluster, running)
        # Every watch of a source kind starts once its CRD serves the version.
        eventually(
            lambda: all(guard_watch(running, name)["synced"] for name in WATCHES),
            what="source watches synced",
        )
        yield running
    finally:
        running.close()


def guard_watch(guard: Guard, name: str) -> dict[str, Any]:
    return dict(guard.state()["watches"][name])


def manifest(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj)


@pytest.mark.parametrize(
    ("make", "source", "webhook"),
    [
        pytest.param(
            application, "Application argocd/kgateway", "argocd.crdguard.io", id="an Argo CD Application"
        ),
        pytest.param(
            k3s_helmchart,
            "HelmChart.helm.cattle.io kube-system/kgateway",
            "k3s.crdguard.io",
            id="a k3s HelmChart in kube-system",
        ),
    ],
)
def test_installing_kgateway_2_0_4_on_v1_4_standard_is_denied_and_2_1_1_passes(
    cluster: ControlPlane, guard: Guard, make: Any, source: str, webhook: str
) -> None:
    denied = apply(cluster, manifest=manifest(make("v2.0.4")))
    assert denied.returncode != 0
    assert f'admission webhook "{webhook}" denied the request' in denied.stderr
    assert f"kgateway v2.0.4 in {source}" in denied.stderr
    assert V2_0_4_DENIAL in denied.stderr
    assert "serves v1 (listed but not served: v1alpha3)" in denied.stderr
    passed = apply(cluster, manifest=manifest(make("v2.1.1")))
    assert passed.returncode == 0, passed.stderr


def test_an_application_with_an_image_override_in_helm_values_is_denied(
    cluster: ControlPlane, guard: Guard
) -> None:
    # The chart is v2.1.1, but helm.values pins the controller image to v2.0.4: that is what runs.
    app = application("v2.1.1", name="pinned", helm={"values": "controller:\n  image:\n    tag: v2.0.4\n"})
    result = apply(cluster, manifest=manifest(app))
    assert result.returncode != 0
    assert "kgateway v2.0.4 in Application argocd/pinned" in result.stderr
    assert "values controller.image.tag=v2.0.4" in result.stderr


def test_flux_helmrelease_with_chartref_to_a_helmchart(cluster: ControlPlane, guard: Guard) -> None:
    # A HelmChart alone installs nothing: creating it at v2.0.4 is allowed.
    assert apply(cluster, manifest=manifest(flux_helmchart("v2.0.4", name="old"))).returncode == 0
    eventually(
        lambda: guard_watch(guard, "helmcharts.source.toolkit.fluxcd.io")["events"] >= 1,
        what="HelmChart seen",
    )
    release = helmrelease_chartref("old", name="kgateway-old", kind="HelmChart")
    denied = apply(cluster, manifest=manifest(release))
    assert denied.returncode != 0
    assert 'admission webhook "flux.crdguard.io" denied the request' in denied.stderr
    assert "kgateway v2.0.4 in HelmRelease kgateway-system/kgateway-old" in denied.stderr
    assert V2_0_4_DENIAL in denied.stderr

    # At v2.1.1 the pair is allowed; moving the HelmChart back to v2.0.4 is then denied.
    assert apply(cluster, manifest=manifest(flux_helmchart("v2.1.1", name="new"))).returncode == 0
    release = helmrelease_chartref("new", name="kgateway-new", kind="HelmChart")
    created = apply(cluster, manifest=manifest(release))
    assert created.returncode == 0, created.stderr
    eventually(lambda: guard.state()["objects"].get("ComponentRelease", 0) >= 3, what="HelmRelease seen")
    moved = apply(cluster, manifest=manifest(flux_helmchart("v2.0.4", name="new")))
    assert moved.returncode != 0
    assert "kgateway v2.0.4 in HelmRelease kgateway-system/kgateway-new" in moved.stderr


def test_audit_reads_the_new_sources_from_the_cluster(cluster: ControlPlane, guard: Guard) -> None:
    # Applied with the webhook out of the way: what audit finds must come from its own list.
    cluster.kubectl("delete", "validatingwebhookconfiguration", "crdguard")
    try:
        # Different release names: an Application and a HelmChart installing one release are one conflict.
        for obj in (application("v2.0.4", name="bypass"), k3s_helmchart("v2.0.4", name="bypass-k3s")):
            assert apply(cluster, manifest=manifest(obj)).returncode == 0
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
            cwd=REPO_ROOT,
        )
        assert audit.returncode == 1, audit.stderr
        sources = {(c["source"]["kind"], c["source"]["name"]) for c in json.loads(audit.stdout)["conflicts"]}
        assert {("Application", "bypass"), ("HelmChart.helm.cattle.io", "bypass-k3s")} <= sources
    finally:
        cluster.kubectl("delete", "applications.argoproj.io", "bypass", "-n", "argocd")
        cluster.kubectl("delete", "helmcharts.helm.cattle.io", "bypass-k3s", "-n", "kube-system")
