"""Recognise installed components (and their versions) from object summaries, as the catalog says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webhook.rules.catalog import Catalog, Component
from webhook.rules.objects import (
    OCIREPOSITORY_KIND,
    DeploymentSummary,
    HelmReleaseSummary,
    ObjectRef,
    OCIRepositorySummary,
)
from webhook.rules.versions import Version


@dataclass(frozen=True, slots=True)
class ComponentRelease:
    """One place where a component shows up: a Deployment running it or a HelmRelease installing it."""

    component: str
    version: Version | None  # None: not one exact version (a range, "*", a digest)
    version_text: str  # as written, for messages
    source: ObjectRef
    detail: str  # the image, chart or OCI URL that revealed it
    features: frozenset[str]

    def describe(self) -> str:
        return f"{self.component} {self.version_text} ({self.source}, {self.detail})"


OCILookup = Callable[[ObjectRef], OCIRepositorySummary | None]


def _image_repo_and_tag(image: str) -> tuple[str, str | None]:
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, None if not digest else f"@{digest}"


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
        (
            c
            for c in summary.containers
            if _image_repo_and_tag(c.image)[0].rsplit("/", 1)[-1] in detect.images
        ),
        None,
    )
    labelled = bool(detect.labels) and all(summary.labels.get(k) == v for k, v in detect.labels.items())
    if container is None and not labelled:
        return None
    features = frozenset(
        name
        for name, feature in component.features.items()
        if feature.env is not None
        and any(c.env.get(feature.env.name) == feature.env.value for c in summary.containers)
    )
    if container is not None:
        tag = _image_repo_and_tag(container.image)[1] or "latest"
        return ComponentRelease(
            component.name,
            Version.exact(tag),
            tag,
            summary.ref,
            f"image {container.image}",
            features,
        )
    # Labelled but running an image of another name: the chart label may still say the version.
    chart_label = summary.labels.get(detect.chart_label, "")
    for chart in detect.charts:
        if chart_label.startswith(chart + "-"):
            text = chart_label[len(chart) + 1 :]
            return ComponentRelease(
                component.name,
                Version.exact(text),
                text,
                summary.ref,
                f"label {detect.chart_label}={chart_label}",
                features,
            )
    return ComponentRelease(component.name, None, "(unknown version)", summary.ref, "labels", features)


def detect_helmrelease(
    summary: HelmReleaseSummary, catalog: Catalog, lookup: OCILookup
) -> tuple[ComponentRelease, ...]:
    chart, version_text, detail = summary.chart, summary.version or "*", ""
    if chart is not None:
        detail = f"chart {chart}"
    elif summary.chart_ref is not None and summary.chart_ref.kind == OCIREPOSITORY_KIND:
        oci = lookup(summary.chart_ref)
        if oci is None:
            return ()
        chart = oci.url.rstrip("/").rsplit("/", 1)[-1]
        # Flux's precedence: digest, then semver, then tag.
        version_text = f"@{oci.digest}" if oci.digest else oci.semver or oci.tag or "latest"
        detail = f"{summary.chart_ref} {oci.url}"
    if chart is None:
        return ()
    found = []
    for component in catalog.components.values():
        if chart not in component.detect.charts:
            continue
        features = frozenset(
            name
            for name, feature in component.features.items()
            if feature.helm_value is not None
            and summary.feature_values.get(".".join(feature.helm_value.path)) == feature.helm_value.value
        )
        found.append(
            ComponentRelease(
                component.name,
                Version.exact(version_text),
                version_text,
                summary.ref,
                detail,
                features,
            )
        )
    return tuple(found)


def detect_releases(summary: object, catalog: Catalog, lookup: OCILookup) -> tuple[ComponentRelease, ...]:
    """Every component release an object reveals; CRDs and OCIRepositories reveal none themselves."""
    if isinstance(summary, DeploymentSummary):
        return detect_deployment(summary, catalog)
    if isinstance(summary, HelmReleaseSummary):
        return detect_helmrelease(summary, catalog, lookup)
    return ()
