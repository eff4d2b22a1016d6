"""Small builders for the objects crdguard reads, and a way to review changes against them.

Every builder returns a plain dict shaped like the real object (only the fields
crdguard reads, plus enough to be a valid Kubernetes object), so the same dict
can go through the engine, an AdmissionReview or a YAML file for the CLI.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webhook.manifests import load_objects
from webhook.rules.catalog import Catalog, Enforcement
from webhook.rules.engine import Change, Verdict, review_change
from webhook.rules.inventory import Inventory
from webhook.state.files import add_objects, group_of

REPO_ROOT = Path(__file__).resolve().parents[1]

KGATEWAY_IMAGE = "cr.kgateway.dev/kgateway-dev/kgateway"
KGATEWAY_OCI = "oci://cr.kgateway.dev/kgateway-dev/charts/kgateway"
KGATEWAY_NS = "kgateway-system"

BTP = "backendtlspolicies.gateway.networking.k8s.io"
BCP = "backendconfigpolicies.gateway.kgateway.dev"
INFERENCEPOOL = "inferencepools.inference.networking.k8s.io"
INFERENCEPOOL_X = "inferencepools.inference.networking.x-k8s.io"
HTTPROUTE = "httproutes.gateway.networking.k8s.io"

Obj = dict[str, Any]


# -- builders -------------------------------------------------------------------------------


def crd(
    name: str,
    served: Mapping[str, bool],
    *,
    bundle_version: str | None = None,
    channel: str | None = None,
) -> Obj:
    """A CRD listing ``served``'s versions in order, each with its served flag."""
    group = name.split(".", 1)[1]
    plural = name.split(".", 1)[0]
    annotations = {}
    if bundle_version:
        annotations[f"{group}/bundle-version"] = bundle_version
    if channel:
        annotations[f"{group}/channel"] = channel
    storage = next((v for v, on in served.items() if on), None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name, **({"annotations": annotations} if annotations else {})},
        "spec": {
            "group": group,
            "names": {"plural": plural, "kind": plural.capitalize()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": on,
                    "storage": version == storage,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
                for version, on in served.items()
            ],
        },
    }


def deployment(
    version: str = "v2.1.1",
    *,
    name: str = "kgateway",
    namespace: str = KGATEWAY_NS,
    image: str | None = None,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Obj:
    """The kgateway controller Deployment as its chart renders it (``image`` overrides the image)."""
    labels = (
        {
            "app.kubernetes.io/name": "kgateway",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/version": "1.16.0",  # the chart's stale appVersion; never a signal
            "helm.sh/chart": f"kgateway-{version}",
            "kgateway": "kgateway",
        }
        if labels is None
        else dict(labels)
    )
    container: Obj = {"name": "kgateway", "image": image or f"{KGATEWAY_IMAGE}:{version}"}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": labels.get("app.kubernetes.io/name", name)}
            },
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def helmrelease(
    version: str | None = "v2.1.1",
    *,
    name: str = "kgateway",
    namespace: str = KGATEWAY_NS,
    chart: str = "kgateway",
    values: Mapping[str, Any] | None = None,
) -> Obj:
    """A Flux HelmRelease with ``spec.chart.spec`` (``version`` None: the field is left out)."""
    chart_spec: Obj = {"chart": chart, "sourceRef": {"kind": "HelmRepository", "name": "kgateway"}}
    if version is not None:
        chart_spec["version"] = version
    spec: Obj = {"interval": "10m", "chart": {"spec": chart_spec}}
    if values is not None:
        spec["values"] = dict(values)
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def helmrelease_chartref(
    oci_name: str = "kgateway",
    *,
    name: str = "kgateway",
    namespace: str = KGATEWAY_NS,
    oci_namespace: str | None = None,
    values: Mapping[str, Any] | None = None,
    kind: str = "OCIRepository",
) -> Obj:
    """A Flux HelmRelease whose chart comes from an OCIRepository (or ``kind``) via ``spec.chartRef``."""
    chart_ref: Obj = {"kind": kind, "name": oci_name}
    if oci_namespace is not None:
        chart_ref["namespace"] = oci_namespace
    spec: Obj = {"interval": "10m", "chartRef": chart_ref}
    if values is not None:
        spec["values"] = dict(values)
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ocirepository(
    tag: str | None = "v2.1.1",
    *,
    name: str = "kgateway",
    namespace: str = KGATEWAY_NS,
    url: str = KGATEWAY_OCI,
    semver: str | None = None,
    digest: str | None = None,
) -> Obj:
    ref = {k: v for k, v in (("tag", tag), ("semver", semver), ("digest", digest)) if v is not None}
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"interval": "10m", "url": url, "ref": ref},
    }


def flux_helmchart(
    version: str | None = "v2.1.1",
    *,
    name: str = "kgateway",
    namespace: str = KGATEWAY_NS,
    chart: str = "kgateway",
) -> Obj:
    """A Flux HelmChart (source.toolkit.fluxcd.io/v1), as a HelmRelease's chartRef may name it."""
    spec: Obj = {
        "interval": "10m",
        "chart": chart,
        "sourceRef": {"kind": "HelmRepository", "name": "kgateway"},
    }
    if version is not None:
        spec["version"] = version
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def argocd_source(
    version: str | None = "v2.1.1",
    *,
    chart: str | None = "kgateway",
    repo_url: str = "cr.kgateway.dev/kgateway-dev/charts",
    helm: Mapping[str, Any] | None = None,
) -> Obj:
    """One Argo CD Application source (a Helm chart from an OCI registry, by default)."""
    source: Obj = {"repoURL": repo_url}
    if chart is not None:
        source["chart"] = chart
    if version is not None:
        source["targetRevision"] = version
    if helm is not None:
        source["helm"] = dict(helm)
    return source


def application(
    version: str | None = "v2.1.1",
    *,
    name: str = "kgateway",
    namespace: str = "argocd",
    sources: Sequence[Obj] | None = None,
    destination: Mapping[str, str] | None = None,
    helm: Mapping[str, Any] | None = None,
) -> Obj:
    """An Argo CD Application (argoproj.io/v1alpha1) installing kgateway into kgateway-system.

    ``sources`` given: spec.sources (multi-source); otherwise spec.source.
    """
    spec: Obj = {
        "project": "default",
        "destination": dict(
            destination or {"server": "https://kubernetes.default.svc", "namespace": KGATEWAY_NS}
        ),
    }
    if sources is not None:
        spec["sources"] = [dict(s) for s in sources]
    else:
        spec["source"] = argocd_source(version, helm=helm)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def k3s_helmchart(
    version: str | None = "v2.1.1",
    *,
    name: str = "kgateway",
    namespace: str = "kube-system",
    chart: str = KGATEWAY_OCI,
    repo: str | None = None,
    target_namespace: str | None = KGATEWAY_NS,
    values_content: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Obj:
    """A k3s/RKE2 HelmChart (helm.cattle.io/v1); by default the kgateway OCI chart."""
    spec: Obj = {"chart": chart}
    for key, value in (
        ("version", version),
        ("repo", repo),
        ("targetNamespace", target_namespace),
        ("valuesContent", values_content),
    ):
        if value is not None:
            spec[key] = value
    spec.update(extra or {})
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def configmap(
    name: str = "settings", namespace: str = "default", data: Mapping[str, str] | None = None
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data or {"key": "value"}),
    }


def admission_review(
    operation: str,
    obj: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None = None,
    *,
    uid: str = "0b7c1d2e-0000-4000-8000-000000000001",
    api_version: str = "admission.k8s.io/v1",
    dry_run: bool = False,
) -> Obj:
    """The AdmissionReview the API server would send for ``operation`` on ``obj`` (or ``old``)."""
    subject = obj if obj is not None else old
    assert subject is not None
    group, version = split_api_version(subject["apiVersion"])
    meta = subject["metadata"]
    request: Obj = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": subject["kind"]},
        "resource": {"group": group, "version": version, "resource": subject["kind"].lower() + "s"},
        "name": meta["name"],
        "operation": operation,
        "userInfo": {"username": "tester"},
        "object": copy.deepcopy(obj) if obj is not None else None,
        "oldObject": copy.deepcopy(old) if old is not None else None,
        "dryRun": dry_run,
    }
    if meta.get("namespace"):
        request["namespace"] = meta["namespace"]
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def with_version(obj: Obj, version: str) -> Obj:
    """A copy of a kgateway Deployment, HelmRelease or OCIRepository moved to ``version``."""
    moved = copy.deepcopy(obj)
    kind = moved["kind"]
    if kind == "Deployment":
        container = moved["spec"]["template"]["spec"]["containers"][0]
        container["image"] = container["image"].rsplit(":", 1)[0] + f":{version}"
        moved["metadata"]["labels"]["helm.sh/chart"] = f"kgateway-{version}"
    elif kind == "HelmRelease":
        moved["spec"]["chart"]["spec"]["version"] = version
    elif kind == "OCIRepository":
        moved["spec"]["ref"] = {"tag": version}
    else:
        raise ValueError(kind)
    return moved


# -- upstream manifests ---------------------------------------------------------------------


@functools.cache
def _load(path: str) -> tuple[Obj, ...]:
    return tuple(dict(obj) for _, obj in load_objects([path]))


def upstream_objects(upstream: Path, *relative: str) -> list[Obj]:
    """The objects in upstream files or folders, parsed once per session and shared: copy before
    changing one (a bundle is megabytes; copying it for every test would dominate the suite)."""
    found: list[Obj] = []
    for rel in relative:
        path = upstream / rel
        if not path.exists():
            raise FileNotFoundError(f"upstream fixture missing: {path}")
        found.extend(_load(str(path)))
    return found


def gateway_api_bundle(upstream: Path, version: str, channel: str) -> list[Obj]:
    return upstream_objects(upstream, f"gateway-api/{version}/{channel}-install.yaml")


def kgateway_crds(upstream: Path, version: str) -> list[Obj]:
    return upstream_objects(upstream, f"kgateway/{version}/crds")


def named(objects: Iterable[Obj], name: str) -> Obj:
    return next(o for o in objects if o["metadata"]["name"] == name)


# -- reviewing changes ----------------------------------------------------------------------


def key_of(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    namespace = None if obj["kind"] == "CustomResourceDefinition" else obj["metadata"].get("namespace")
    return (group_of(obj), obj["kind"], namespace, obj["metadata"]["name"])


def inventory(catalog: Catalog, objects: Iterable[Mapping[str, Any]]) -> Inventory:
    found = Inventory(catalog)
    add_objects(found, list(objects))
    return found


def change(
    catalog: Catalog,
    operation: str,
    obj: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None = None,
    *,
    dry_run: bool = False,
) -> Change:
    subject = obj if obj is not None else old
    assert subject is not None
    group, _ = split_api_version(subject["apiVersion"])
    return Change.from_objects(
        operation,
        group,
        subject["kind"],
        subject["metadata"].get("namespace"),
        subject["metadata"]["name"],
        obj,
        old,
        catalog,
        dry_run,
    )


class Cluster:
    """Objects keyed as the API server keys them; reviews each change as crdguard would.

    ``apply``/``delete`` choose CREATE, UPDATE or DELETE from what is stored (as
    ``crdguard check`` does) and store the change only when it is allowed.
    """

    def __init__(self, catalog: Catalog, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self.catalog = catalog
        self.objects: dict[tuple[str, str, str | None, str], Obj] = {}
        for obj in objects:
            self.objects[key_of(obj)] = dict(obj)
        self.enforcement = Enforcement.DENY

    def view(self) -> Inventory:
        return inventory(self.catalog, self.objects.values())

    def review(self, operation: str, obj: Mapping[str, Any], *, dry_run: bool = False) -> Verdict:
        old = self.objects.get(key_of(obj))
        if operation == "DELETE":
            new, old = None, old if old is not None else obj
        else:
            new = obj
        return review_change(
            change(self.catalog, operation, new, old, dry_run=dry_run),
            self.view(),
            self.catalog,
            self.enforcement,
        )

    def apply(self, obj: Mapping[str, Any]) -> Verdict:
        operation = "UPDATE" if key_of(obj) in self.objects else "CREATE"
        verdict = self.review(operation, obj)
        if verdict.allowed:
            self.objects[key_of(obj)] = dict(obj)
        return verdict

    def apply_all(self, objects: Sequence[Mapping[str, Any]]) -> dict[str, Verdict]:
        return {o["metadata"]["name"]: self.apply(o) for o in objects}

    def delete(self, obj: Mapping[str, Any]) -> Verdict:
        verdict = self.review("DELETE", obj)
        if verdict.allowed:
            self.objects.pop(key_of(obj), None)
        return verdict
