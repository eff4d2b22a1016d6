"""Every command a fix prints to move a release works as written on a real kube-apiserver.

For each way a controller can be installed (Flux HelmRelease, OCIRepository or HelmChart, Argo
CD Application with one source or several, k3s HelmChart), the object is created with its real
CRD, the planner is asked to move kgateway, and the printed command is run with kubectl exactly
as printed (split as a shell would). Then the field that holds the chart version is read back.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bundles import BundleUnavailable, argocd_application_crd
from helpers import (
    KGATEWAY_NS,
    Cluster,
    application,
    argocd_source,
    flux_helmchart,
    gateway_api_bundle,
    helmrelease,
    helmrelease_chartref,
    k3s_helmchart,
    kgateway_crds,
    ocirepository,
)

from webhook.catalogs import load_catalog, load_releases
from webhook.rules.plan import Planner, Target

from .cluster import ControlPlane
from .conftest import unavailable

pytestmark = pytest.mark.e2e

SOURCE_CRDS = {
    "applications.argoproj.io": None,  # from the Go module
    "helmcharts.helm.cattle.io": "k3s-helm-controller/helmcharts.yaml",
    "helmcharts.source.toolkit.fluxcd.io": "flux/helmcharts.yaml",
    "helmreleases.helm.toolkit.fluxcd.io": "flux/helmreleases.yaml",
    "ocirepositories.source.toolkit.fluxcd.io": "flux/ocirepositories.yaml",
}
NAMESPACES = ("flux-system", "argocd", "kube-system", "edge", KGATEWAY_NS)


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, upstream: Path) -> Iterator[ControlPlane]:
    try:
        argocd_crd = argocd_application_crd()
    except BundleUnavailable as exc:
        unavailable(f"Argo CD's Application CRD is not obtainable: {exc}")
    for name, relative in SOURCE_CRDS.items():
        crd = argocd_crd if relative is None else yaml.safe_load((upstream / relative).read_text())
        assert crd["metadata"]["name"] == name
        control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in SOURCE_CRDS)
    )
    for namespace in NAMESPACES:
        control_plane.kubectl("create", "namespace", namespace, check=False)
    yield control_plane


def _git_and_chart_app() -> dict[str, Any]:
    return application(
        "v2.0.4",
        name="gw-multi",
        sources=[
            {"repoURL": "https://github.com/example/config", "path": "gateway", "targetRevision": "main"},
            argocd_source("v2.0.4"),
        ],
    )


def _helmrelease_with_target() -> dict[str, Any]:
    hr = helmrelease("v2.0.4", name="gw-target", namespace="flux-system")
    hr["spec"]["targetNamespace"] = "edge"
    return hr


# (objects to create, resource/name/namespace to read back, jsonpath of the version, other checks)
CASES = [
    pytest.param(
        [_helmrelease_with_target()],
        ("helmrelease", "gw-target", "flux-system"),
        "{.spec.chart.spec.version}",
        {},
        id="a Flux HelmRelease with targetNamespace: its chart version is patched",
    ),
    pytest.param(
        [
            ocirepository("v2.0.4", name="gw-oci", namespace="flux-system"),
            helmrelease_chartref("gw-oci", name="gw-oci", namespace="flux-system"),
        ],
        ("ocirepository", "gw-oci", "flux-system"),
        "{.spec.ref.tag}",
        {"{.spec.ref.semver}": ""},
        id="an OCIRepository behind a chartRef: its tag is patched",
    ),
    pytest.param(
        [
            flux_helmchart("v2.0.4", name="gw-chart", namespace="flux-system"),
            helmrelease_chartref("gw-chart", name="gw-chart", namespace="flux-system", kind="HelmChart"),
        ],
        ("helmchart.source.toolkit.fluxcd.io", "gw-chart", "flux-system"),
        "{.spec.version}",
        {},
        id="a Flux HelmChart behind a chartRef: its version is patched",
    ),
    pytest.param(
        [application("v2.0.4", name="gw-app")],
        ("application", "gw-app", "argocd"),
        "{.spec.source.targetRevision}",
        {},
        id="an Argo CD Application: spec.source.targetRevision is patched",
    ),
    pytest.param(
        [_git_and_chart_app()],
        ("application", "gw-multi", "argocd"),
        "{.spec.sources[1].targetRevision}",
        {"{.spec.sources[0].targetRevision}": "main"},
        id="a multi-source Application: the chart source is patched and the Git source is left alone",
    ),
    pytest.param(
        [k3s_helmchart("v2.0.4", name="gw-k3s")],
        ("helmchart.helm.cattle.io", "gw-k3s", "kube-system"),
        "{.spec.version}",
        {"{.spec.targetNamespace}": KGATEWAY_NS},
        id="a k3s HelmChart: spec.version is patched",
    ),
]


@pytest.mark.parametrize(("objects", "where", "version_path", "unchanged"), CASES)
def test_the_printed_patch_command_moves_the_version_on_the_api_server(
    cluster: ControlPlane,
    upstream: Path,
    objects: list[dict[str, Any]],
    where: tuple[str, str, str],
    version_path: str,
    unchanged: dict[str, str],
) -> None:
    catalog = load_catalog()
    state = Cluster(
        catalog,
        [
            *gateway_api_bundle(upstream, "v1.4.0", "experimental"),
            *kgateway_crds(upstream, "v2.1.1"),
            *objects,
        ],
    )
    plan = Planner(state.view(), catalog, load_releases()).plan([Target("kgateway", "v2.1.1")])
    assert plan.possible, plan.reason
    (step,) = plan.steps
    (command,) = step.commands
    for obj in objects:
        cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
    argv = shlex.split(command)
    assert argv[0] == "kubectl"
    result = cluster.kubectl(*argv[1:], check=False)
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    resource, name, namespace = where
    read = cluster.kubectl("get", resource, name, "-n", namespace, "-o", f"jsonpath={version_path}")
    assert read.stdout == "v2.1.1", command
    for path, value in unchanged.items():
        assert (
            cluster.kubectl("get", resource, name, "-n", namespace, "-o", f"jsonpath={path}").stdout == value
        )
