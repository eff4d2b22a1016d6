"""Recognise installed components (and their versions) from object summaries, as the catalog says.

Detection does not guess: an image matches a component only on whole trailing path segments of
its repository (registry ignored), and a version is read only from an image tag, the chart label
of a Deployment whose image carries no tag, a chart version, or an image tag set in chart values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from webhook.rules.catalog import Catalog, Component, Detection, Feature, go_bool
from webhook.rules.objects import (
    APPLICATION_KIND,
    ARGOCD_TRACKING_ID,
    HELM_RELEASE_NAME,
    HELM_RELEASE_NAMESPACE,
    HELMRELEASE_KIND,
    ApplicationSummary,
    Container,
    DeploymentSummary,
    HelmChartSummary,
    HelmReleaseSummary,
    K3sHelmChartSummary,
    ObjectRef,
    OCIRepositorySummary,
    Summary,
    chart_name,
)
from webhook.rules.versions import Version

FLUX_NAME_LABEL = "helm.toolkit.fluxcd.io/name"
FLUX_NAMESPACE_LABEL = "helm.toolkit.fluxcd.io/namespace"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
DOCKER_HUB = "docker.io"


@dataclass(frozen=True, slots=True)
class Installation:
    """How a release was installed: what a fix must edit, and the names it must use."""

    manager: str = ""  # "helm" | "flux" | "argocd" | "k3s" | "" (unknown)
    release_name: str | None = None
    release_namespace: str | None = None
    owner: ObjectRef | None = None  # the object a fix must edit (HelmRelease, or the OCIRepository or
    # Flux HelmChart the version comes from; Argo CD Application; k3s HelmChart); None for a plain
    # Helm release or an unmanaged Deployment
    chart_version: str | None = None
    version_field: str | None = None  # JSON pointer to the chart version in ``owner``, when known


@dataclass(frozen=True, slots=True)
class ComponentRelease:
    """One place where a component shows up: a Deployment running it, or a HelmRelease, Argo CD
    Application or k3s HelmChart installing it."""

    component: str
    version: Version | None  # None: not one exact version (a range, "*", a digest)
    version_text: str  # as written, for messages
    source: ObjectRef
    detail: str  # the image, chart or OCI URL that revealed it
    features: frozenset[str]
    installation: Installation = Installation()

    def describe(self) -> str:
        return f"{self.component} {self.version_text} ({self.source}, {self.detail})"

    @property
    def identity(self) -> tuple[str, ...]:
        """One release, however many objects reveal it: a HelmRelease and the Deployment it created
        share the Helm release name and namespace."""
        install = self.installation
        if install.release_name:
            return (self.component, install.release_namespace or "", install.release_name)
        return (self.component, str(self.source))


# Finds the object a HelmRelease's spec.chartRef names (an OCIRepository or Flux HelmChart).
SourceLookup = Callable[[ObjectRef], Summary | None]


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str
    path: str  # repository path without registry; Docker Hub official images as "library/<name>"
    tag: str | None
    digest: str | None


# Every component's detection parses the same few images of a Deployment again; they repeat across
# reviews too. Bounded: image names come from the cluster.
@functools.lru_cache(maxsize=1024)
def parse_image(image: str) -> ImageRef:
    name, _, digest = image.partition("@")
    tag = None
    if name.rfind(":") > name.rfind("/"):
        name, _, tag = name.rpartition(":")
    first, slash, rest = name.partition("/")
    # Docker's rule: the first segment is a registry when it has a dot or port, or is localhost.
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    if registry in (DOCKER_HUB, "index.docker.io") and "/" not in path:
        path = f"library/{path}"
    return ImageRef(registry, path, tag or None, digest or None)


def image_matches(image: ImageRef, paths: Iterable[str]) -> bool:
    """True when the repository path ends in one of ``paths`` on whole segments."""
    return any(image.path == p or image.path.endswith("/" + p) for p in paths)


def version_of_tag(tag: str, detect: Detection) -> str:
    for suffix in detect.tag_suffixes:
        if tag.endswith(suffix) and len(tag) > len(suffix):
            return tag[: -len(suffix)]
    return tag


def _chart_label_version(labels: Mapping[str, str], detect: Detection) -> str | None:
    label = labels.get(detect.chart_label, "")
    for chart in sorted(detect.charts, key=len, reverse=True):
        if label.startswith(chart + "-") and label[len(chart) + 1 :]:
            return label[len(chart) + 1 :]
    return None


def _same(found: object, wanted: object) -> bool:
    # Chart values are YAML: "true", true and "1" all switch a Go boolean on.
    if isinstance(wanted, bool):
        parsed = found if isinstance(found, bool) else go_bool(str(found))
        return parsed is wanted
    return found == wanted


def _feature_in_containers(feature: Feature, containers: Iterable[Container]) -> bool:
    decided: bool | None = None
    containers = tuple(containers)
    for container in containers:
        for arg in container.args:
            # A catalog arg may carry its own value (--feature-gates=GatewayAlpha=true): equal is enough.
            if arg in feature.disable_args:
                return False
            if arg in feature.args:
                decided = True
                continue
            name, eq, value = arg.partition("=")
            if name in feature.disable_args and (not eq or go_bool(value) is True):
                return False
            if name in feature.args:
                on = True if not eq else go_bool(value)
                decided = on if on is not None else decided  # the last occurrence wins, as in Go's flag
    if decided is not None:
        return decided
    if feature.env is not None:
        for container in containers:
            if feature.env.name in container.env:
                said = feature.env.reads(container.env[feature.env.name])
                if said is not None:
                    return said
    return feature.default


def deployment_installation(summary: DeploymentSummary, detect: Detection) -> Installation:
    labels, annotations = summary.labels, summary.annotations
    namespace = summary.ref.namespace
    release_name = annotations.get(HELM_RELEASE_NAME) or labels.get(INSTANCE_LABEL)
    release_namespace = annotations.get(HELM_RELEASE_NAMESPACE) or namespace
    chart_version = _chart_label_version(labels, detect)
    if labels.get(FLUX_NAME_LABEL):
        owner = ObjectRef(
            HELMRELEASE_KIND, labels.get(FLUX_NAMESPACE_LABEL) or namespace, labels[FLUX_NAME_LABEL]
        )
        return Installation(
            "flux", release_name, release_namespace, owner, chart_version, "/spec/chart/spec/version"
        )
    tracking = annotations.get(ARGOCD_TRACKING_ID, "")
    if tracking:
        # "<app>:<group>/<kind>:<namespace>/<name>"; apps outside Argo CD's namespace are "<ns>_<app>".
        app = tracking.split(":", 1)[0]
        app_namespace, _, app_name = app.rpartition("_")
        owner = ObjectRef(APPLICATION_KIND, app_namespace or None, app_name)
        return Installation("argocd", release_name, release_namespace, owner, chart_version)
    helm = HELM_RELEASE_NAME in annotations or labels.get(MANAGED_BY_LABEL) == "Helm"
    return Installation("helm" if helm else "", release_name, release_namespace, None, chart_version)


def detect_deployment(summary: DeploymentSummary, catalog: Catalog) -> tuple[ComponentRelease, ...]:
    found = []
    for component in catalog.components.values():
        release = _detect_in_deployment(summary, component)
        if release is not None:
            found.append(release)
    return tuple(found)


def _detect_in_deployment(summary: DeploymentSummary, component: Component) -> ComponentRelease | None:
    detect = component.detect
    container = next(
        (c for c in summary.containers if image_matches(parse_image(c.image), detect.images)), None
    )
    labelled = bool(detect.labels) and all(summary.labels.get(k) == v for k, v in detect.labels.items())
    if container is None and not labelled:
        return None
    features = frozenset(
        name
        for name, feature in component.features.items()
        if _feature_in_containers(feature, [container] if container is not None else summary.containers)
    )
    installation = deployment_installation(summary, detect)

    def release(version_text: str, detail: str) -> ComponentRelease:
        version = Version.exact(version_text)
        return ComponentRelease(
            component.name, version, version_text, summary.ref, detail, features, installation
        )

    if container is not None:
        image = parse_image(container.image)
        if image.tag is not None:
            # A tag that is not a version ("latest", "main-3f2a") was chosen over the chart's:
            # the chart label would not say what runs.
            return release(version_of_tag(image.tag, detect), f"image {container.image}")
    # Pinned by digest, untagged, or labelled but running an image of another name: the chart
    # label says which chart version rendered the Deployment.
    chart_version = _chart_label_version(summary.labels, detect)
    if chart_version is not None:
        shown = f"image {container.image}, " if container is not None else ""
        return release(
            chart_version, f"{shown}label {detect.chart_label}={summary.labels[detect.chart_label]}"
        )
    if container is not None:
        image = parse_image(container.image)
        text = f"@{image.digest}" if image.digest else "latest"
        return release(text, f"image {container.image}")
    return ComponentRelease(
        component.name, None, "(unknown version)", summary.ref, "labels", features, installation
    )


def _first_value(values: Mapping[str, object], paths: Iterable[tuple[str, ...]]) -> tuple[str, str] | None:
    for path in paths:
        key = ".".join(path)
        value = values.get(key)
        if value is not None and str(value):
            return key, str(value)
    return None


def _chart_releases(
    catalog: Catalog,
    chart: str,
    version_text: str,
    detail: str,
    chart_values: Mapping[str, object],
    source: ObjectRef,
    installation: Installation,
    values_owner: ObjectRef,
) -> list[ComponentRelease]:
    """The releases of catalogued components that installing ``chart`` at ``version_text`` makes.

    A controller image tag set in ``chart_values`` is what runs, whatever the chart version; then
    the fix edits those values, in ``values_owner``.
    """
    found: list[ComponentRelease] = []
    for component in catalog.components.values():
        detect = component.detect
        if chart not in detect.charts:
            continue
        features = frozenset(
            name
            for name, feature in component.features.items()
            if (
                _same(chart_values[feature.helm_value.key], feature.helm_value.value)
                if feature.helm_value is not None and feature.helm_value.key in chart_values
                else feature.default
            )
        )
        running, shown, install = version_text, detail, installation
        image_values = detect.image_values
        overrides = [
            value
            for paths in (image_values.registry, image_values.repository, image_values.tag)
            if (value := _first_value(chart_values, paths)) is not None
        ]
        if overrides:
            shown = f"{detail}, values " + ", ".join(f"{path}={value}" for path, value in overrides)
        tag = _first_value(chart_values, image_values.tag)
        if tag is not None:
            # The version a fix must change is this value, not the chart's.
            running = version_of_tag(tag[1], detect)
            install = replace(installation, owner=values_owner, version_field=None)
        found.append(
            ComponentRelease(
                component.name, Version.exact(running), running, source, shown, features, install
            )
        )
    return found


def detect_helmrelease(
    summary: HelmReleaseSummary, catalog: Catalog, lookup: SourceLookup
) -> tuple[ComponentRelease, ...]:
    chart, version_text, detail = summary.chart, summary.version or "*", ""
    owner, version_field = summary.ref, "/spec/chart/spec/version"
    if chart is not None:
        detail = f"chart {chart}"
    elif summary.chart_ref is not None:
        found = lookup(summary.chart_ref)
        if isinstance(found, OCIRepositorySummary):
            chart = chart_name(found.url)
            # Flux's precedence: digest, then semver, then tag.
            version_text = f"@{found.digest}" if found.digest else found.semver or found.tag or "latest"
            detail = f"{summary.chart_ref} {found.url}"
            version_field = "/spec/ref/tag"
        elif isinstance(found, HelmChartSummary) and found.chart:
            chart = chart_name(found.chart)
            version_text = found.version or "*"  # Flux's default: the latest version
            detail = f"{summary.chart_ref} chart {found.chart}"
            version_field = "/spec/version"
        else:
            return ()
        owner = found.ref
    if chart is None:
        return ()
    namespace = summary.target_namespace or summary.ref.namespace
    # Flux's default release name is "[<targetNamespace>-]<name>".
    release_name = summary.release_name or (
        f"{summary.target_namespace}-{summary.ref.name}" if summary.target_namespace else summary.ref.name
    )
    installation = Installation("flux", release_name, namespace, owner, version_text, version_field)
    return tuple(
        _chart_releases(
            catalog, chart, version_text, detail, summary.chart_values, summary.ref, installation, summary.ref
        )
    )


def detect_application(summary: ApplicationSummary, catalog: Catalog) -> tuple[ComponentRelease, ...]:
    if not summary.in_cluster:
        return ()  # it installs into another cluster, which this crdguard does not guard
    found: list[ComponentRelease] = []
    for source in summary.sources:
        version_text = source.version or "*"  # an empty targetRevision is the latest chart version
        namespace = source.namespace or summary.destination_namespace
        release_name = source.release_name or summary.ref.name  # Argo CD's default: the app's name
        installation = Installation(
            "argocd", release_name, namespace, summary.ref, version_text, f"{source.pointer}/targetRevision"
        )
        detail = f"chart {source.chart} from {source.repo_url}"
        found += _chart_releases(
            catalog,
            source.chart,
            version_text,
            detail,
            source.chart_values,
            summary.ref,
            installation,
            summary.ref,
        )
    return tuple(found)


def detect_k3s_helmchart(summary: K3sHelmChartSummary, catalog: Catalog) -> tuple[ComponentRelease, ...]:
    if summary.chart is None:
        return ()
    version_text = summary.version or "*"  # helm-controller installs the latest without a version
    # helm-controller installs release <HelmChart name> into targetNamespace, else its own namespace.
    namespace = summary.target_namespace or summary.ref.namespace
    installation = Installation(
        "k3s", summary.ref.name, namespace, summary.ref, version_text, "/spec/version"
    )
    detail = f"chart {summary.chart_text}" + (f" from {summary.repo}" if summary.repo else "")
    return tuple(
        _chart_releases(
            catalog,
            summary.chart,
            version_text,
            detail,
            summary.chart_values,
            summary.ref,
            installation,
            summary.ref,
        )
    )


def detect_releases(summary: object, catalog: Catalog, lookup: SourceLookup) -> tuple[ComponentRelease, ...]:
    """Every component release an object reveals; CRDs, OCIRepositories and Flux HelmCharts reveal
    none themselves (a HelmRelease that points at one does)."""
    if isinstance(summary, DeploymentSummary):
        return detect_deployment(summary, catalog)
    if isinstance(summary, HelmReleaseSummary):
        return detect_helmrelease(summary, catalog, lookup)
    if isinstance(summary, ApplicationSummary):
        return detect_application(summary, catalog)
    if isinstance(summary, K3sHelmChartSummary):
        return detect_k3s_helmchart(summary, catalog)
    return ()
