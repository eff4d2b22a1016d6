"""Sources of what is installed: Argo CD Applications, k3s/RKE2 HelmCharts, Flux chartRef to HelmCharts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from helpers import (
    BTP,
    KGATEWAY_NS,
    KGATEWAY_OCI,
    Cluster,
    application,
    argocd_source,
    crd,
    deployment,
    flux_helmchart,
    helmrelease_chartref,
    inventory,
    k3s_helmchart,
)

from webhook.rules.catalog import Catalog
from webhook.rules.detect import ComponentRelease, Installation
from webhook.rules.engine import audit
from webhook.rules.objects import (
    APPLICATION_KIND,
    HELMCHART_KIND,
    K3S_HELMCHART_KIND,
    ObjectRef,
    summarize,
)

APP = ObjectRef(APPLICATION_KIND, "argocd", "kgateway")
K3S = ObjectRef(K3S_HELMCHART_KIND, "kube-system", "kgateway")
FLUX_CHART = ObjectRef(HELMCHART_KIND, KGATEWAY_NS, "kgateway")
INFER = "inferenceExtension"


def found(catalog: Catalog, *objects: dict[str, Any]) -> list[ComponentRelease]:
    return sorted(inventory(catalog, objects).releases("kgateway"), key=lambda r: r.source)


def argocd(
    release: str = "kgateway",
    namespace: str | None = KGATEWAY_NS,
    version: str = "v2.1.1",
    source: str = "/spec/source",
) -> Installation:
    return Installation("argocd", release, namespace, APP, version, f"{source}/targetRevision")


def k3s(namespace: str = KGATEWAY_NS, version: str = "v2.1.1") -> Installation:
    return Installation("k3s", "kgateway", namespace, K3S, version, "/spec/version")


# (objects, [(version_text, features, installation)] expected for kgateway)
Expected = list[tuple[str, frozenset[str], Installation]]
# kgateway's default-on feature (KGW_ENABLE_EXPERIMENTAL_GATEWAY_API_FEATURES; rules from 2.2 read it).
DEFAULTS: frozenset[str] = frozenset({"experimentalGatewayAPI"})
CASES: list[Any] = [
    # -- Argo CD Application -----------------------------------------------------------------
    pytest.param(
        [application("v2.0.4")],
        [("v2.0.4", DEFAULTS, argocd(version="v2.0.4"))],
        id="an Application's chart and targetRevision say the version; the Application is the owner",
    ),
    pytest.param(
        [application(sources=[argocd_source("v2.0.4", chart=None, repo_url=KGATEWAY_OCI)])],
        [("v2.0.4", DEFAULTS, argocd(version="v2.0.4", source="/spec/sources/0"))],
        id="an oci:// repoURL without chart names the chart by its last segment",
    ),
    pytest.param(
        [
            application(
                sources=[
                    {"repoURL": "https://git.example/values.git", "targetRevision": "main", "ref": "values"},
                    argocd_source("v2.1.1", helm={"valueFiles": ["$values/kgateway.yaml"]}),
                ]
            )
        ],
        [("v2.1.1", DEFAULTS, argocd(source="/spec/sources/1"))],
        id="spec.sources with a values-only ref source reveals the chart source alone",
    ),
    pytest.param(
        [application(helm={"releaseName": "gw"})],
        [("v2.1.1", DEFAULTS, argocd(release="gw"))],
        id="helm.releaseName names the release (default: the Application's name)",
    ),
    pytest.param(
        [application(helm={"namespace": "gateways"})],
        [("v2.1.1", DEFAULTS, argocd(namespace="gateways"))],
        id="helm.namespace overrides the destination namespace",
    ),
    pytest.param(
        [application(helm={"values": "controller:\n  image:\n    tag: v2.0.4\n"})],
        [("v2.0.4", DEFAULTS, replace(argocd(), version_field=None))],
        id="an image tag in helm.values (a YAML string) is what runs",
    ),
    pytest.param(
        [
            application(
                helm={
                    "values": "image:\n  tag: v2.0.4\n",
                    "valuesObject": {"inferenceExtension": {"enabled": True}},
                }
            )
        ],
        [("v2.1.1", DEFAULTS | {INFER}, argocd())],
        id="helm.valuesObject replaces helm.values, as Argo CD renders one or the other",
    ),
    pytest.param(
        [
            application(
                helm={
                    "valuesObject": {"image": {"tag": "v2.0.4"}},
                    "parameters": [
                        {"name": "image.tag", "value": "v2.1.2"},
                        {"name": "inferenceExtension.enabled", "value": "true"},
                    ],
                }
            )
        ],
        [("v2.1.2", DEFAULTS | {INFER}, replace(argocd(), version_field=None))],
        id="helm.parameters override the values and switch features as Go booleans",
    ),
    pytest.param(
        [application("2.1.*")],
        [("2.1.*", DEFAULTS, argocd(version="2.1.*"))],
        id="a targetRevision range is kept as written (not one exact version)",
    ),
    pytest.param(
        [application(destination={"name": "in-cluster", "namespace": KGATEWAY_NS})],
        [("v2.1.1", DEFAULTS, argocd())],
        id="the in-cluster destination name is this cluster",
    ),
    pytest.param(
        [application(destination={"server": "https://prod.example:6443", "namespace": KGATEWAY_NS})],
        [],
        id="an Application aimed at another cluster installs nothing here",
    ),
    pytest.param(
        [
            application(
                sources=[{"repoURL": "https://git.example/kgateway.git", "path": "install/helm/kgateway"}]
            )
        ],
        [],
        id="a Git path source names no chart version",
    ),
    pytest.param(
        [application(sources=[argocd_source(chart="kgateway-crds")])],
        [],
        id="an Application of another chart is not kgateway",
    ),
    # -- k3s / RKE2 HelmChart ----------------------------------------------------------------
    pytest.param(
        [k3s_helmchart("v2.0.4")],
        [("v2.0.4", DEFAULTS, k3s(version="v2.0.4"))],
        id="a k3s HelmChart with an oci:// chart; release named after it in targetNamespace",
    ),
    pytest.param(
        [k3s_helmchart(chart="kgateway", repo="https://charts.example/kgateway")],
        [("v2.1.1", DEFAULTS, k3s())],
        id="a k3s HelmChart with a chart name and repo",
    ),
    pytest.param(
        [k3s_helmchart(target_namespace=None)],
        [("v2.1.1", DEFAULTS, k3s(namespace="kube-system"))],
        id="without targetNamespace the release goes to the HelmChart's namespace",
    ),
    pytest.param(
        [k3s_helmchart(values_content="inferenceExtension:\n  enabled: true\nimage:\n  tag: v2.0.4\n")],
        [("v2.0.4", DEFAULTS | {INFER}, replace(k3s(), version_field=None))],
        id="valuesContent (a YAML string) sets the image tag and switches features",
    ),
    pytest.param(
        [
            k3s_helmchart(
                values_content="image:\n  tag: v2.0.3\n",
                extra={"values": {"image": {"tag": "v2.0.4"}}, "set": {"image.tag": "v2.0.5"}},
            )
        ],
        [("v2.0.5", DEFAULTS, replace(k3s(), version_field=None))],
        id="spec.set beats spec.values, which beats valuesContent",
    ),
    pytest.param(
        [k3s_helmchart(values_content="image: [unclosed\n")],
        [("v2.1.1", DEFAULTS, k3s())],
        id="valuesContent that is not YAML reveals nothing but leaves the chart version",
    ),
    pytest.param(
        [k3s_helmchart(None)],
        [("*", DEFAULTS, k3s(version="*"))],
        id="a k3s HelmChart without a version installs the latest (not checkable)",
    ),
    pytest.param(
        [k3s_helmchart(chart="https://charts.example/kgateway-v2.1.1.tgz")],
        [],
        id="a chart archive URL names no chart crdguard can match",
    ),
    # -- Flux HelmRelease.spec.chartRef to a HelmChart -----------------------------------------
    pytest.param(
        [flux_helmchart("v2.0.4"), helmrelease_chartref(kind="HelmChart")],
        [
            (
                "v2.0.4",
                DEFAULTS,
                Installation("flux", "kgateway", KGATEWAY_NS, FLUX_CHART, "v2.0.4", "/spec/version"),
            )
        ],
        id="a chartRef to a Flux HelmChart takes its chart and version; the HelmChart is the owner",
    ),
    pytest.param(
        [flux_helmchart(None, chart="./install/helm/kgateway"), helmrelease_chartref(kind="HelmChart")],
        [("*", DEFAULTS, Installation("flux", "kgateway", KGATEWAY_NS, FLUX_CHART, "*", "/spec/version"))],
        id="a HelmChart path from a GitRepository names the chart; no version means the latest",
    ),
    pytest.param(
        [helmrelease_chartref(kind="HelmChart")],
        [],
        id="a chartRef to a HelmChart not in the cluster reveals nothing",
    ),
    pytest.param(
        [k3s_helmchart("v2.0.4", namespace=KGATEWAY_NS), helmrelease_chartref(kind="HelmChart")],
        [
            (
                "v2.0.4",
                DEFAULTS,
                Installation(
                    "k3s",
                    "kgateway",
                    KGATEWAY_NS,
                    ObjectRef(K3S_HELMCHART_KIND, KGATEWAY_NS, "kgateway"),
                    "v2.0.4",
                    "/spec/version",
                ),
            )
        ],
        id="a k3s HelmChart of the same name is not the Flux HelmChart a chartRef names",
    ),
]


@pytest.mark.parametrize(("objects", "expected"), CASES)
def test_detection(catalog: Catalog, objects: list[dict[str, Any]], expected: Expected) -> None:
    releases = found(catalog, *objects)
    assert [(r.version_text, r.features, r.installation) for r in releases] == expected


def test_an_image_override_names_the_values_in_the_detail(catalog: Catalog) -> None:
    (release,) = found(catalog, application(helm={"parameters": [{"name": "image.tag", "value": "v2.0.4"}]}))
    assert release.source == APP
    assert (
        release.detail == "chart kgateway from cr.kgateway.dev/kgateway-dev/charts, values image.tag=v2.0.4"
    )


@pytest.mark.parametrize(
    ("group", "obj"),
    [
        pytest.param(
            "argoproj.io",
            application(
                helm={
                    "values": "auth:\n  password: hunter2\nimage:\n  tag: v2.0.4\n",
                    "parameters": [{"name": "db.password", "value": "hunter2"}],
                }
            ),
            id="an Application keeps no values beyond the catalog's paths",
        ),
        pytest.param(
            "helm.cattle.io",
            k3s_helmchart(
                values_content="auth:\n  password: hunter2\nimage:\n  tag: v2.0.4\n",
                extra={"set": {"db.password": "hunter2"}, "values": {"token": "hunter2"}},
            ),
            id="a k3s HelmChart keeps no values beyond the catalog's paths",
        ),
    ],
)
def test_summaries_keep_only_the_values_the_catalog_reads(
    catalog: Catalog, group: str, obj: dict[str, Any]
) -> None:
    summary = summarize(group, obj["kind"], obj, catalog)
    assert summary is not None
    assert "hunter2" not in repr(summary)
    assert "image.tag='v2.0.4'" in repr(summary) or "'image.tag': 'v2.0.4'" in repr(summary)


V1_4_STANDARD_BTP = crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0", channel="standard")


@pytest.mark.parametrize(
    ("obj", "source"),
    [
        pytest.param(application("v2.0.4"), "Application argocd/kgateway", id="an Argo CD Application"),
        pytest.param(
            k3s_helmchart("v2.0.4"), "HelmChart.helm.cattle.io kube-system/kgateway", id="a k3s HelmChart"
        ),
    ],
)
def test_installing_kgateway_2_0_4_on_v1_4_standard_is_denied(
    catalog: Catalog, obj: dict[str, Any], source: str
) -> None:
    cluster = Cluster(catalog, [V1_4_STANDARD_BTP])
    verdict = cluster.apply(obj)
    assert not verdict.allowed
    assert [(c.rule.id, str(c.release.source)) for c in verdict.denied] == [
        ("kgateway-2.0-reads-backendtlspolicy-v1alpha3", source)
    ]


def test_moving_a_flux_helmchart_to_kgateway_2_0_4_on_v1_4_standard_is_denied(catalog: Catalog) -> None:
    cluster = Cluster(
        catalog, [V1_4_STANDARD_BTP, flux_helmchart("v2.1.1"), helmrelease_chartref(kind="HelmChart")]
    )
    verdict = cluster.apply(flux_helmchart("v2.0.4"))
    assert not verdict.allowed
    (conflict,) = verdict.denied
    assert conflict.release.source == ObjectRef("HelmRelease", KGATEWAY_NS, "kgateway")
    assert conflict.release.installation.owner == FLUX_CHART


def test_an_application_and_the_deployment_it_rendered_are_one_conflict(catalog: Catalog) -> None:
    # Argo CD tracks what it applied with an annotation "<app>:<group>/<kind>:<namespace>/<name>".
    rendered = deployment("v2.0.4")
    rendered["metadata"]["annotations"] = {
        "argocd.argoproj.io/tracking-id": "kgateway:apps/Deployment:kgateway-system/kgateway"
    }
    cluster = Cluster(catalog, [V1_4_STANDARD_BTP, application("v2.0.4"), rendered])
    conflicts = audit(cluster.view(), catalog)
    assert [(c.rule.id, c.release.source.kind) for c in conflicts] == [
        ("kgateway-2.0-reads-backendtlspolicy-v1alpha3", "Deployment")
    ]


def test_a_relist_of_flux_helmcharts_keeps_the_k3s_ones(catalog: Catalog) -> None:
    view = inventory(catalog, [k3s_helmchart("v2.0.4"), flux_helmchart("v2.0.4")])
    view.replace_all(HELMCHART_KIND, [])
    assert view.refs(HELMCHART_KIND) == []
    assert [str(r.source) for r in view.releases("kgateway")] == [
        "HelmChart.helm.cattle.io kube-system/kgateway"
    ]
