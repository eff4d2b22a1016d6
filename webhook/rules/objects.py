"""The few fields of cluster objects that the rules read, and how to cut them from raw objects.

A CRD bundle is megabytes and a HelmRelease's values may hold secrets: everything
downstream (state cache, engine, logs) sees only these summaries.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook.rules.catalog import Catalog

CRD_GROUP = "apiextensions.k8s.io"
CRD_KIND = "CustomResourceDefinition"
DEPLOYMENT_KIND = "Deployment"
HELMRELEASE_KIND = "HelmRelease"
OCIREPOSITORY_KIND = "OCIRepository"
HELMRELEASE_GROUP = "helm.toolkit.fluxcd.io"
OCIREPOSITORY_GROUP = "source.toolkit.fluxcd.io"
HELMCHART_KIND = "HelmChart"  # Flux's (source.toolkit.fluxcd.io) and k3s/RKE2's (helm.cattle.io)
APPLICATION_KIND = "Application"
ARGOCD_GROUP = "argoproj.io"
K3S_GROUP = "helm.cattle.io"
# Two kinds are called HelmChart: in an ObjectRef (which has no group) Flux's keeps the bare name,
# since HelmRelease.spec.chartRef names it so, and k3s's is qualified, as kubectl would name it.
K3S_HELMCHART_KIND = f"{HELMCHART_KIND}.{K3S_GROUP}"
# Kinds a HelmRelease's spec.chartRef may point at that hold its chart name and version.
CHART_SOURCE_KINDS = frozenset({OCIREPOSITORY_KIND, HELMCHART_KIND})
# Argo CD's names for the cluster it runs in; Applications aimed elsewhere install nothing here.
ARGOCD_IN_CLUSTER_SERVER = "https://kubernetes.default.svc"
ARGOCD_IN_CLUSTER_NAME = "in-cluster"

# The kinds whose changes can create a conflict, by (group, kind).
JUDGED_KINDS = {
    (CRD_GROUP, CRD_KIND),
    ("apps", DEPLOYMENT_KIND),
    (HELMRELEASE_GROUP, HELMRELEASE_KIND),
    (OCIREPOSITORY_GROUP, OCIREPOSITORY_KIND),
    (OCIREPOSITORY_GROUP, HELMCHART_KIND),
    (ARGOCD_GROUP, APPLICATION_KIND),
    (K3S_GROUP, HELMCHART_KIND),
}


def ref_kind(group: str, kind: str) -> str:
    """The kind as an ObjectRef spells it (k3s's HelmChart is qualified by its group)."""
    return K3S_HELMCHART_KIND if (group, kind) == (K3S_GROUP, HELMCHART_KIND) else kind


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


@dataclass(frozen=True, slots=True)
class HelmChartSummary:
    """A Flux HelmChart (source.toolkit.fluxcd.io): a chart name or path and a version expression."""

    ref: ObjectRef
    chart: str
    version: str | None  # semver expression; None: latest


@dataclass(frozen=True, slots=True)
class ChartSource:
    """One Helm chart an Argo CD Application renders (spec.source, or an entry of spec.sources)."""

    chart: str  # the chart name: spec.source.chart, or the last segment of an oci:// repoURL
    repo_url: str
    version: str | None  # targetRevision
    chart_values: Mapping[str, object]  # only the paths the catalog reads, by dotted path
    release_name: str | None = None  # helm.releaseName
    namespace: str | None = None  # helm.namespace
    pointer: str = "/spec/source"  # where it sits in the Application (JSON pointer), for fixes


@dataclass(frozen=True, slots=True)
class ApplicationSummary:
    ref: ObjectRef
    sources: tuple[ChartSource, ...]  # Helm chart sources only; Git paths say no chart version
    destination_namespace: str | None
    in_cluster: bool  # destination is the cluster crdguard guards


@dataclass(frozen=True, slots=True)
class K3sHelmChartSummary:
    """A k3s/RKE2 HelmChart (helm.cattle.io): helm-controller installs it as release <name>."""

    ref: ObjectRef
    chart: str | None  # chart name (from spec.chart, a name or oci:// URL)
    chart_text: str  # spec.chart as written, for messages
    repo: str | None
    version: str | None
    target_namespace: str | None
    chart_values: Mapping[str, object]


Summary = (
    CRDInfo
    | DeploymentSummary
    | HelmReleaseSummary
    | OCIRepositorySummary
    | HelmChartSummary
    | ApplicationSummary
    | K3sHelmChartSummary
)


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
    _read_along(values, _values_tree(catalog.values_paths), found)
    return found


# path key -> (the dotted path when a catalog path ends here, the keys below it)
_ValuesTree = Mapping[str, tuple[str | None, "_ValuesTree"]]


@functools.lru_cache(maxsize=8)
def _values_tree(paths: frozenset[tuple[str, ...]]) -> _ValuesTree:
    """The catalog's values paths as a tree, so a walk only descends where some path goes."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for depth, key in enumerate(path):
            dotted, below = node.get(key, (None, {}))
            if depth == len(path) - 1:
                dotted = ".".join(path)
            node[key] = (dotted, below)
            node = below
    return root


def _read_along(values: Any, tree: _ValuesTree, found: dict[str, object]) -> None:
    if not isinstance(values, Mapping):
        return
    for key, (dotted, below) in tree.items():
        node = values.get(key)
        if node is None:
            continue
        if dotted is not None and isinstance(node, bool | int | float | str):
            found[dotted] = node
        if below:
            _read_along(node, below, found)


def read_values_text(text: Any, catalog: Catalog) -> dict[str, object]:
    """``read_values`` of a values file held as a string (Argo CD helm.values, k3s valuesContent).

    Text that is not a YAML mapping reveals nothing: Helm itself would refuse it.
    """
    if not isinstance(text, str) or not text.strip() or not catalog.values_paths:
        return {}
    try:
        parsed = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        return {}
    return read_values(_dict(parsed), catalog)


def read_set_values(pairs: Mapping[str, Any], catalog: Catalog) -> dict[str, object]:
    """``--set`` style values (dotted name -> scalar) at the paths the catalog reads."""
    wanted = {".".join(path) for path in catalog.values_paths}
    return {
        name: value
        for name, value in pairs.items()
        if name in wanted and isinstance(value, bool | int | float | str)
    }


_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def chart_name(reference: str) -> str:
    """The chart name in a chart reference: a name, a path, or an oci:// URL (last segment)."""
    return reference.rstrip("/").rsplit("/", 1)[-1]


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


def summarize_helmchart(obj: Mapping[str, Any]) -> HelmChartSummary:
    meta = _meta(obj)
    spec = _dict(obj.get("spec"))
    return HelmChartSummary(
        ref=ObjectRef(HELMCHART_KIND, _text(meta.get("namespace")), str(meta.get("name") or "")),
        chart=str(spec.get("chart") or ""),
        version=_text(spec.get("version")),
    )


def _argocd_source(raw: Mapping[str, Any], catalog: Catalog, pointer: str) -> ChartSource | None:
    repo_url = str(raw.get("repoURL") or "")
    chart = _text(raw.get("chart"))
    if chart is None and repo_url.startswith("oci://") and not _text(raw.get("path")):
        chart = chart_name(repo_url)  # an OCI Helm source: the repoURL names the chart itself
    if chart is None:
        return None
    helm = _dict(raw.get("helm"))
    # Argo CD renders valuesObject if set, else values; parameters (--set) override either.
    values_object = helm.get("valuesObject")
    if isinstance(values_object, Mapping):
        chart_values = read_values(values_object, catalog)
    else:
        chart_values = read_values_text(helm.get("values"), catalog)
    parameters = {
        str(p.get("name")): p.get("value") for p in _items(helm.get("parameters")) if isinstance(p, Mapping)
    }
    chart_values.update(read_set_values(parameters, catalog))
    return ChartSource(
        chart=chart,
        repo_url=repo_url,
        version=_text(raw.get("targetRevision")),
        chart_values=chart_values,
        release_name=_text(helm.get("releaseName")),
        namespace=_text(helm.get("namespace")),
        pointer=pointer,
    )


def summarize_application(obj: Mapping[str, Any], catalog: Catalog) -> ApplicationSummary:
    meta = _meta(obj)
    spec = _dict(obj.get("spec"))
    raw_sources = [("/spec/source", spec["source"])] if isinstance(spec.get("source"), Mapping) else []
    raw_sources += [
        (f"/spec/sources/{i}", s) for i, s in enumerate(_items(spec.get("sources"))) if isinstance(s, Mapping)
    ]
    sources = tuple(
        s for pointer, raw in raw_sources if (s := _argocd_source(raw, catalog, pointer)) is not None
    )
    destination = _dict(spec.get("destination"))
    server, cluster = _text(destination.get("server")), _text(destination.get("name"))
    return ApplicationSummary(
        ref=ObjectRef(APPLICATION_KIND, _text(meta.get("namespace")), str(meta.get("name") or "")),
        sources=sources,
        destination_namespace=_text(destination.get("namespace")),
        in_cluster=(server or "").rstrip("/") == ARGOCD_IN_CLUSTER_SERVER
        or (server is None and cluster == ARGOCD_IN_CLUSTER_NAME),
    )


def summarize_k3s_helmchart(obj: Mapping[str, Any], catalog: Catalog) -> K3sHelmChartSummary:
    meta = _meta(obj)
    spec = _dict(obj.get("spec"))
    chart_text = str(spec.get("chart") or "")
    # k3s's precedence, lowest first: valuesContent, values, set.
    chart_values = read_values_text(spec.get("valuesContent"), catalog)
    chart_values.update(read_values(_dict(spec.get("values")), catalog))
    chart_values.update(read_set_values(_dict(spec.get("set")), catalog))
    return K3sHelmChartSummary(
        ref=ObjectRef(K3S_HELMCHART_KIND, _text(meta.get("namespace")), str(meta.get("name") or "")),
        # A chart archive URL (https://.../x.tgz) or inline chartContent names no chart we can match.
        chart=chart_name(chart_text) if chart_text and not chart_text.endswith(".tgz") else None,
        chart_text=chart_text,
        repo=_text(spec.get("repo")),
        version=_text(spec.get("version")),
        target_namespace=_text(spec.get("targetNamespace")),
        chart_values=chart_values,
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
    if kind == HELMCHART_KIND and group == OCIREPOSITORY_GROUP:
        return summarize_helmchart(obj)
    if kind == APPLICATION_KIND and group == ARGOCD_GROUP:
        return summarize_application(obj, catalog)
    if kind == HELMCHART_KIND and group == K3S_GROUP:
        return summarize_k3s_helmchart(obj, catalog)
    return None


def summary_ref(summary: Summary) -> ObjectRef:
    if isinstance(summary, CRDInfo):
        return ObjectRef(CRD_KIND, None, summary.name)
    return summary.ref
