"""Detection that does not guess: image paths, tags, digests, chart labels, values, switches, owners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BTP,
    KGATEWAY_NS,
    Cluster,
    crd,
    deployment,
    helmrelease,
    helmrelease_chartref,
    inventory,
    ocirepository,
)

from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog
from webhook.rules.detect import ComponentRelease, ImageRef, Installation, parse_image
from webhook.rules.engine import audit
from webhook.rules.objects import ObjectRef

DIGEST = "sha256:" + "c" * 64
HEADER = "apiVersion: crdguard.io/v1alpha1\nkind: CompatibilityCatalog\n"


def releases(catalog: Catalog, *objects: dict[str, Any]) -> list[ComponentRelease]:
    view = inventory(catalog, objects)
    return sorted(view.releases("kgateway"), key=lambda r: r.source)


def only(catalog: Catalog, obj: dict[str, Any]) -> ComponentRelease | None:
    found = releases(catalog, obj)
    assert len(found) <= 1
    return found[0] if found else None


NO_LABELS: dict[str, str] = {}


@pytest.mark.parametrize(
    ("image", "labels", "version"),
    [
        pytest.param(
            "cr.kgateway.dev/kgateway-dev/kgateway:v2.0.4", NO_LABELS, "v2.0.4", id="the upstream image"
        ),
        pytest.param("cr.kgateway.dev/kgateway-dev/kgateway:2.0.4", NO_LABELS, "2.0.4", id="a tag without v"),
        pytest.param(
            "mirror.corp:5000/kgateway-dev/kgateway:v2.1.1",
            NO_LABELS,
            "v2.1.1",
            id="a mirror keeping the path",
        ),
        pytest.param(
            "harbor.corp/proxy/kgateway-dev/kgateway:v2.1.1",
            NO_LABELS,
            "v2.1.1",
            id="a proxy cache adding a prefix",
        ),
        pytest.param(
            "kgateway-dev/kgateway:v2.1.1", NO_LABELS, "v2.1.1", id="a Docker Hub image without registry"
        ),
        pytest.param(
            f"cr.kgateway.dev/kgateway-dev/kgateway:v2.0.4@{DIGEST}",
            NO_LABELS,
            "v2.0.4",
            id="tag at digest uses the tag",
        ),
        pytest.param(
            f"cr.kgateway.dev/kgateway-dev/kgateway@{DIGEST}",
            {"helm.sh/chart": "kgateway-v2.0.4"},
            "v2.0.4",
            id="a digest-only image falls back to the chart label",
        ),
        pytest.param(
            "cr.kgateway.dev/kgateway-dev/kgateway",
            {"helm.sh/chart": "kgateway-v2.1.1"},
            "v2.1.1",
            id="an untagged image falls back to the chart label",
        ),
        pytest.param(
            f"cr.kgateway.dev/kgateway-dev/kgateway@{DIGEST}",
            NO_LABELS,
            f"@{DIGEST}",
            id="a digest-only image without a chart label has no version",
        ),
        pytest.param(
            "cr.kgateway.dev/kgateway-dev/kgateway:latest",
            {"helm.sh/chart": "kgateway-v2.0.4"},
            "latest",
            id="a tag that is not a version is not replaced by the chart label",
        ),
    ],
)
def test_deployment_version_from_image(
    catalog: Catalog, image: str, labels: dict[str, str], version: str
) -> None:
    found = only(catalog, deployment("v9.9.9", image=image, labels=labels))
    assert found is not None
    assert found.version_text == version


@pytest.mark.parametrize(
    "image",
    [
        pytest.param("example.com/other/kgateway:v2.0.4", id="another repository ending in kgateway"),
        pytest.param("kgateway:v2.0.4", id="a Docker Hub library image named kgateway"),
        pytest.param("example.com/kgateway-dev/kgateway-extras:v2.0.4", id="a longer last segment"),
        pytest.param("example.com/my-kgateway-dev/kgateway:v2.0.4", id="a longer first segment"),
    ],
)
def test_unrelated_images_are_not_the_component(catalog: Catalog, image: str) -> None:
    assert only(catalog, deployment("v2.0.4", image=image, labels={})) is None


@pytest.mark.parametrize(
    ("image", "registry", "path", "tag", "digest"),
    [
        pytest.param("traefik:v3.6.0", "docker.io", "library/traefik", "v3.6.0", None, id="a library image"),
        pytest.param(
            "docker.io/traefik", "docker.io", "library/traefik", None, None, id="an untagged library image"
        ),
        pytest.param("localhost/a/b:1", "localhost", "a/b", "1", None, id="localhost is a registry"),
        pytest.param("r.io:443/a/b@" + DIGEST, "r.io:443", "a/b", None, DIGEST, id="a registry with a port"),
        pytest.param(
            "envoyproxy/gateway:v1.8.0", "docker.io", "envoyproxy/gateway", "v1.8.0", None, id="Docker Hub"
        ),
    ],
)
def test_parse_image(image: str, registry: str, path: str, tag: str | None, digest: str | None) -> None:
    assert parse_image(image) == ImageRef(registry, path, tag, digest)


def _catalog_with(tmp_path: Path, component: str) -> Catalog:
    """A catalog of the default one plus ``component``, named so that it replaces none of the defaults
    (a replaced component would drop features the default rules name)."""
    path = tmp_path / "extra.yaml"
    path.write_text(HEADER + "components:\n" + component)
    loaded = load_catalog([str(path)])
    assert len(loaded.components) == len(load_catalog().components) + 1
    return loaded


def test_several_images_and_library_images_and_tag_suffixes(tmp_path: Path) -> None:
    loaded = _catalog_with(
        tmp_path,
        """\
  - name: operators
    detect:
      images: [cilium/operator-generic, cilium/operator-aws, library/traefik]
      tagSuffixes: [-distroless]
""",
    )
    for image, version in [
        ("quay.io/cilium/operator-generic:v1.19.1", "v1.19.1"),
        ("quay.io/cilium/operator-aws:v1.19.2-distroless", "v1.19.2"),
        ("traefik:v3.6.0", "v3.6.0"),
        ("mirror.corp/library/traefik:3.6.1", "3.6.1"),
    ]:
        view = inventory(loaded, [deployment(image=image, labels={}, name="x", namespace="y")])
        (found,) = view.releases("operators")
        assert found.version_text == version, image
    view = inventory(loaded, [deployment(image="quay.io/cilium/cilium:v1.19.1", labels={}, name="x")])
    assert list(view.releases("operators")) == []


@pytest.mark.parametrize(
    ("value", "on"),
    [
        *[
            pytest.param(v, True, id=f"KGW_ENABLE_INFER_EXT={v} turns inference on")
            for v in ("1", "t", "T", "TRUE", "true", "True")
        ],
        *[
            pytest.param(v, False, id=f"KGW_ENABLE_INFER_EXT={v} leaves it off")
            for v in ("0", "f", "F", "FALSE", "false", "False", "yes", "")
        ],
    ],
)
def test_env_switches_are_read_as_go_parses_booleans(catalog: Catalog, value: str, on: bool) -> None:
    found = only(catalog, deployment("v2.1.1", env={"KGW_ENABLE_INFER_EXT": value}))
    assert found is not None
    assert ("inferenceExtension" in found.features) is on


def test_args_and_disable_args_and_defaults(tmp_path: Path) -> None:
    loaded = _catalog_with(
        tmp_path,
        """\
  - name: proxy
    detect: {images: [library/traefik]}
    features:
      gateway: {args: [--providers.kubernetesgateway]}
      alpha: {default: true, disableArgs: [--no-alpha]}
""",
    )

    def features(args: list[str]) -> frozenset[str]:
        obj = deployment(image="traefik:v3.6.0", labels={}, name="t", namespace="t")
        obj["spec"]["template"]["spec"]["containers"][0]["args"] = args
        (found,) = inventory(loaded, [obj]).releases("proxy")
        return found.features

    assert features([]) == {"alpha"}
    assert features(["--providers.kubernetesgateway"]) == {"gateway", "alpha"}
    assert features(["--providers.kubernetesgateway=true", "--no-alpha"]) == {"gateway"}
    assert features(["--providers.kubernetesgateway=false"]) == {"alpha"}
    assert features(["--providers.kubernetesgateway", "--providers.kubernetesgateway=0"]) == {"alpha"}


@pytest.mark.parametrize(
    ("values", "version", "detail"),
    [
        pytest.param({}, "v2.1.1", "chart kgateway", id="without overrides the chart version runs"),
        pytest.param({"image": {"tag": "v2.0.4"}}, "v2.0.4", "image.tag=v2.0.4", id="image.tag runs instead"),
        pytest.param(
            {"image": {"tag": "v2.1.1"}, "controller": {"image": {"tag": "v2.0.3"}}},
            "v2.0.3",
            "controller.image.tag=v2.0.3",
            id="controller.image.tag wins over image.tag",
        ),
        pytest.param(
            {"controller": {"image": {"registry": "mirror.corp", "repository": "kgw"}}},
            "v2.1.1",
            "controller.image.registry=mirror.corp",
            id="a registry override keeps the chart version",
        ),
    ],
)
def test_helmrelease_values_that_set_the_image_decide_the_version(
    catalog: Catalog, values: dict[str, Any], version: str, detail: str
) -> None:
    found = only(catalog, helmrelease("v2.1.1", values=values))
    assert found is not None
    assert (found.version_text, detail in found.detail) == (version, True)
    assert found.installation.chart_version == "v2.1.1"


def test_helmrelease_image_override_is_judged_by_the_image(catalog: Catalog) -> None:
    cluster = Cluster(
        catalog, [crd(BTP, {"v1alpha3": True}), helmrelease("v2.1.1", values={"image": {"tag": "v2.0.4"}})]
    )
    verdict = cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False}))
    assert [c.rule.id for c in verdict.denied] == ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"]


def test_digest_only_deployment_with_chart_label_is_checked(catalog: Catalog) -> None:
    obj = deployment("v2.0.4", image=f"cr.kgateway.dev/kgateway-dev/kgateway@{DIGEST}")
    cluster = Cluster(catalog, [crd(BTP, {"v1alpha3": True}), obj])
    verdict = cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False}))
    assert [c.rule.id for c in verdict.denied] == ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"]
    assert not verdict.unchecked


HR = ObjectRef("HelmRelease", "flux-system", "kgateway")
HR_VERSION = "/spec/chart/spec/version"  # where a fix changes the chart version


@pytest.mark.parametrize(
    ("obj", "installation"),
    [
        pytest.param(
            deployment(
                "v2.0.4",
                labels={
                    "app.kubernetes.io/name": "kgateway",
                    "app.kubernetes.io/instance": "gw",
                    "app.kubernetes.io/managed-by": "Helm",
                },
            ),
            Installation("helm", "gw", KGATEWAY_NS, None, None),
            id="a plain Helm release is named by its instance label",
        ),
        pytest.param(
            {
                **deployment("v2.0.4"),
                "metadata": {
                    "name": "kgateway",
                    "namespace": KGATEWAY_NS,
                    "labels": {"helm.sh/chart": "kgateway-v2.0.4"},
                    "annotations": {
                        "meta.helm.sh/release-name": "gw-ctrl",
                        "meta.helm.sh/release-namespace": "edge",
                    },
                },
            },
            Installation("helm", "gw-ctrl", "edge", None, "v2.0.4"),
            id="Helm's ownership annotations win over the labels",
        ),
        pytest.param(
            {
                **deployment("v2.0.4"),
                "metadata": {
                    "name": "kgateway",
                    "namespace": KGATEWAY_NS,
                    "labels": {
                        "helm.toolkit.fluxcd.io/name": "kgateway",
                        "helm.toolkit.fluxcd.io/namespace": "flux-system",
                    },
                    "annotations": {
                        "meta.helm.sh/release-name": "kgateway-system-kgateway",
                        "meta.helm.sh/release-namespace": KGATEWAY_NS,
                    },
                },
            },
            Installation("flux", "kgateway-system-kgateway", KGATEWAY_NS, HR, None, HR_VERSION),
            id="a Flux-managed Deployment is owned by its HelmRelease",
        ),
        pytest.param(
            {
                **helmrelease("v2.0.4", namespace="flux-system"),
                "spec": {**helmrelease("v2.0.4")["spec"], "targetNamespace": KGATEWAY_NS},
            },
            Installation("flux", "kgateway-system-kgateway", KGATEWAY_NS, HR, "v2.0.4", HR_VERSION),
            id="a HelmRelease's default release name is targetNamespace-name",
        ),
        pytest.param(
            {
                **helmrelease("v2.0.4", namespace="flux-system"),
                "spec": {
                    **helmrelease("v2.0.4")["spec"],
                    "releaseName": "gw",
                    "storageNamespace": "flux-system",
                },
            },
            Installation("flux", "gw", "flux-system", HR, "v2.0.4", HR_VERSION),
            id="a HelmRelease's releaseName is the release name",
        ),
    ],
)
def test_installation_says_who_installed_it(
    catalog: Catalog, obj: dict[str, Any], installation: Installation
) -> None:
    found = only(catalog, obj)
    assert found is not None
    assert found.installation == installation


def test_installation_of_an_ocirepository_chart_is_owned_by_the_ocirepository(catalog: Catalog) -> None:
    (found,) = releases(catalog, ocirepository("v2.0.4"), helmrelease_chartref())
    assert found.installation.owner == ObjectRef("OCIRepository", KGATEWAY_NS, "kgateway")
    assert found.installation.chart_version == "v2.0.4"


def test_a_helmrelease_and_the_deployment_it_created_are_one_conflict(catalog: Catalog) -> None:
    hr = {
        **helmrelease("v2.0.4", namespace="flux-system"),
        "spec": {**helmrelease("v2.0.4")["spec"], "targetNamespace": KGATEWAY_NS},
    }
    dep = deployment("v2.0.4")
    dep["metadata"]["labels"].update(
        {"helm.toolkit.fluxcd.io/name": "kgateway", "helm.toolkit.fluxcd.io/namespace": "flux-system"}
    )
    dep["metadata"]["annotations"] = {
        "meta.helm.sh/release-name": "kgateway-system-kgateway",
        "meta.helm.sh/release-namespace": KGATEWAY_NS,
    }
    standard = crd(BTP, {"v1": True, "v1alpha3": False})
    view = inventory(catalog, [hr, dep, standard])
    assert len(list(view.releases("kgateway"))) == 2
    (conflict,) = audit(view, catalog)
    assert conflict.release.source.kind == "Deployment"
    assert conflict.release.installation.owner == HR
    cluster = Cluster(catalog, [hr, dep, crd(BTP, {"v1alpha3": True})])
    verdict = cluster.apply(standard)
    assert len(verdict.denied) == 1


@pytest.mark.parametrize(
    ("args", "features"),
    [
        pytest.param([], {"controller"}, id="with no args only the default-on feature is on"),
        pytest.param(
            ["--feature-gates=GatewayAlpha=true"],
            {"gates", "controller"},
            id="an arg equal to one with its value turns it on",
        ),
        pytest.param(
            ["--feature-gates=Other=true"], {"controller"}, id="another value of the same flag does not"
        ),
        pytest.param(
            ["--enable-controller=false"], set(), id="a disable arg with its value turns the default off"
        ),
        pytest.param(
            ["--enable-controller=true"], {"controller"}, id="the same flag with another value does not"
        ),
    ],
)
def test_feature_args_that_carry_their_own_value(tmp_path: Path, args: list[str], features: set[str]) -> None:
    loaded = _catalog_with(
        tmp_path,
        """\
  - name: gated
    detect: {images: [example/gated]}
    features:
      gates: {args: [--feature-gates=GatewayAlpha=true]}
      controller: {default: true, disableArgs: [--enable-controller=false]}
""",
    )
    obj = deployment(image="example.com/example/gated:1.0.0", labels={}, name="g", namespace="g")
    obj["spec"]["template"]["spec"]["containers"][0]["args"] = args
    (found,) = inventory(loaded, [obj]).releases("gated")
    assert found.features == features
