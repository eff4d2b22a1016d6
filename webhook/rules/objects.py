"""The few fields of cluster objects that the rules read, and how to cut them from raw objects.

A CRD bundle is megabytes and a HelmRelease's values may hold secrets: everything
downstream (state cache, engine, logs) sees only these summaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.rules.catalog import Catalog

CRD_GROUP = "apiextensions.k8s.io"
CRD_KIND = "CustomResourceDefinition"
DEPLOYMENT_KIND = "Deployment"
HELMRELEASE_KIND = "HelmRelease"
OCIREPOSITORY_KIND = "OCIRepository"
HELMRELEASE_GROUP = "helm.toolkit.fluxcd.io"
OCIREPOSITORY_GROUP = "source.toolkit.fluxcd.io"

# The kinds whose changes can create a conflict, by (group, kind).
JUDGED_KINDS = {
    (CRD_GROUP, CRD_KIND),
    ("apps", DEPLOYMENT_KIND),
    (HELMRELEASE_GROUP, HELMRELEASE_KIND),
    (OCIREPOSITORY_GROUP, OCIREPOSITORY_KIND),
}


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True, slots=True)
class CRDInfo:
    name: str
    served: frozenset[str]
    listed: tuple[str, ...]
    bundle: str | None = None  # e.g. "gateway.networking.k8s.io v1.4.0 standard channel", for messages
    bundle_version: str | None = None  # the "<group>/bundle-version" annotation, e.g. "v1.4.0"

    def describe_served(self) -> str:
        served = ", ".join(v for v in self.listed if v in self.served) or "no version"
        hidden = [v for v in self.listed if v not in self.served]
        return served + (f" (listed but not served: {', '.join(hidden)})" if hidden else "")


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    env: Mapping[str, str]  # only the variables the catalog reads
    args: tuple[str, ...] = ()  # only the command and args elements a catalog feature names


# Annotations that say who installed a Deployment; every other annotation is dropped.
HELM_RELEASE_NAME = "meta.helm.sh/release-name"
HELM_RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
ARGOCD_TRACKING_ID = "argocd.argoproj.io/tracking-id"
OWNER_ANNOTATIONS = (HELM_RELEASE_NAME, HELM_RELEASE_NAMESPACE, ARGOCD_TRACKING_ID)


@dataclass(frozen=True, slots=True)
class DeploymentSummary:
    ref: ObjectRef
    labels: Mapping[str, str]
    containers: tuple[Container, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)  # only OWNER_ANNOTATIONS


@dataclass(frozen=True, slots=True)
class HelmReleaseSummary:
    ref: ObjectRef
    chart: str | None
    version: str | None
    chart_ref: ObjectRef | None  # an OCIRepository, namespace resolved
    chart_values: Mapping[str, object]  # only the values paths the catalog reads, by dotted path
    release_name: str | None = None  # spec.releaseName
    target_namespace: str | None = None  # spec.targetNamespace
    storage_namespace: str | None = None  # spec.storageNamespace


@dataclass(frozen=True, slots=True)
class OCIRepositorySummary:
    ref: ObjectRef
    url: str
    tag: str | None
    semver: str | None
    digest: str | None


Summary = CRDInfo | DeploymentSummary | HelmReleaseSummary | OCIRepositorySummary


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def summarize_crd(obj: Mapping[str, Any]) -> CRDInfo:
    meta = _meta(obj)
    versions = _dict(obj.get("spec")).get("versions")
    listed: list[str] = []
    served: set[str] = set()
    for version in versions if isinstance(versions, list) else []:
        if isinstance(version, Mapping) and isinstance(version.get("name"), str):
            listed.append(version["name"])
            if version.get("served") is True:
                served.add(version["name"])
    annotations = _dict(meta.get("annotations"))
    bundle = bundle_version = None
    for key, value in annotations.items():
        # Gateway API and the inference extension both stamp "<group>/bundle-version".
        if isinstance(key, str) and key.endswith("/bundle-version") and isinstance(value, str):
            group = key.split("/", 1)[0]
            channel = annotations.get(f"{group}/channel")
            bundle = f"{group} {value}" + (f" {channel} channel" if channel else "")
            bundle_version = value
    return CRDInfo(str(meta.get("name") or ""), frozenset(served), tuple(listed), bundle, bundle_version)


def summarize_deployment(obj: Mapping[str, Any], catalog: Catalog) -> DeploymentSummary:
    meta = _meta(obj)
    pod_spec = _dict(_dict(_dict(obj.get("spec")).get("template")).get("spec"))
    containers = []
    raw_containers = pod_spec.get("containers")
    for raw in raw_containers if isinstance(raw_containers, list) else []:
        if not isinstance(raw, Mapping):
            continue
        env = {}
        raw_env = raw.get("env")
        for item in raw_env if isinstance(raw_env, list) else []:
            if (
                isinstance(item, Mapping)
                and isinstance(item.get("name"), str)
                and item["name"] in catalog.detected_env
                and isinstance(item.get("value"), str)
            ):
                env[item["name"]] = item["value"]
        args = tuple(
            arg
            for key in ("command", "args")
            for arg in _items(raw.get(key))
            if isinstance(arg, str)
            and (arg in catalog.detected_args or arg.split("=", 1)[0] in catalog.detected_args)
        )
        containers.append(Container(str(raw.get("name") or ""), str(raw.get("image") or ""), env, args))
    labels = {str(k): str(v) for k, v in _dict(meta.get("labels")).items()}
    raw_annotations = _dict(meta.get("annotations"))
    annotations = {k: str(raw_annotations[k]) for k in OWNER_ANNOTATIONS if _text(raw_annotations.get(k))}
    ref = ObjectRef(DEPLOYMENT_KIND, _text(meta.get("namespace")), str(meta.get("name") or ""))
    return DeploymentSummary(ref, labels, tuple(containers), annotations)


def summarize_helmrelease(obj: Mapping[str, Any], catalog: Catalog) -> HelmReleaseSummary:
    meta = _meta(obj)
    namespace = _text(meta.get("namespace"))
    spec = _dict(obj.get("spec"))
    chart_spec = _dict(_dict(spec.get("chart")).get("spec"))
    chart_ref_raw = _dict(spec.get("chartRef"))
    chart_ref = None
    if _text(chart_ref_raw.get("name")):
        chart_ref = ObjectRef(
            str(chart_ref_raw.get("kind") or OCIREPOSITORY_KIND),
            _text(chart_ref_raw.get("namespace")) or namespace,
            chart_ref_raw["name"],
        )
    return HelmReleaseSummary(
        ref=ObjectRef(HELMRELEASE_KIND, namespace, str(meta.get("name") or "")),
        chart=_text(chart_spec.get("chart")),
        version=_text(chart_spec.get("version")) if chart_spec else None,
        chart_ref=chart_ref,
        chart_values=read_values(_dict(spec.get("values")), catalog),
        release_name=_text(spec.get("releaseName")),
        target_namespace=_text(spec.get("targetNamespace")),
        storage_namespace=_text(spec.get("storageNamespace")),
    )


def read_values(values: Mapping[str, Any], catalog: Catalog) -> dict[str, object]:
    """The chart values at the paths the catalog reads (features, image overrides), by dotted path.

    The rest of the values (which may hold secrets) never leaves here.
    """
    found: dict[str, object] = {}
    for path in catalog.values_paths:
        node: Any = values
        for key in path:
            node = _dict(node).get(key)
        if isinstance(node, bool | int | float | str):
            found[".".join(path)] = node
    return found


def summarize_ocirepository(obj: Mapping[str, Any]) -> OCIRepositorySummary:
    meta = _meta(obj)
    spec = _dict(obj.get("spec"))
    ref = _dict(spec.get("ref"))
    return OCIRepositorySummary(
        ref=ObjectRef(OCIREPOSITORY_KIND, _text(meta.get("namespace")), str(meta.get("name") or "")),
        url=str(spec.get("url") or ""),
        tag=_text(ref.get("tag")),
        semver=_text(ref.get("semver")),
        digest=_text(ref.get("digest")),
    )


def summarize(group: str, kind: str, obj: Mapping[str, Any], catalog: Catalog) -> Summary | None:
    """The summary of a judged object, or None for kinds the rules never read."""
    if kind == CRD_KIND and group == CRD_GROUP:
        return summarize_crd(obj)
    if kind == DEPLOYMENT_KIND and group == "apps":
        return summarize_deployment(obj, catalog)
    if kind == HELMRELEASE_KIND and group == HELMRELEASE_GROUP:
        return summarize_helmrelease(obj, catalog)
    if kind == OCIREPOSITORY_KIND and group == OCIREPOSITORY_GROUP:
        return summarize_ocirepository(obj)
    return None


def summary_ref(summary: Summary) -> ObjectRef:
    if isinstance(summary, CRDInfo):
        return ObjectRef(CRD_KIND, None, summary.name)
    return summary.ref
