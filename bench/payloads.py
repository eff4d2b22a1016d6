"""The benchmark's scenario and its AdmissionReview bodies, built from the real upstream manifests.

Scenario (the reported incident, before the upgrade): Gateway API v1.3.0
experimental CRDs, kgateway-crds v2.0.4, the Inference Extension v1.2.0 CRDs,
the Flux CRDs, kgateway v2.0.4 running in ``kgateway-system`` with its
inference extension on (a Deployment and the Flux HelmRelease that installed
it), and a few unrelated apps.

Payloads: what the API server would send crdguard while that cluster is
upgraded and operated, as AdmissionReview v1 requests with server-populated
metadata (uid, resourceVersion, managedFields, status). The classes and their
share of the requests in the mixed run (``CLASS_SHARES``):

=====================  =====  =====================================================================
class                  share  payloads
=====================  =====  =====================================================================
crd-gwapi-update         10%  UPDATE of every Gateway API CRD, v1.3.0 experimental -> v1.4.0
                              standard (BackendTLSPolicy denied) and -> v1.4.0 experimental;
                              object + oldObject, up to ~1 MB for HTTPRoute
crd-create                5%  CREATE of CRDs not yet installed (XMesh, ListenerSet,
                              BackendConfigPolicy)
crd-kgateway              5%  UPDATE of the kgateway CRDs v2.0.4 -> v2.1.1
crd-delete                3%  DELETE of CRDs (oldObject only)
helmrelease              15%  Flux HelmReleases: kgateway v2.0.4 -> v2.1.1 (denied), a range
                              version, other charts
deployment-kgateway      12%  kgateway Deployments: v2.0.4 -> v2.1.1 (denied), scale, new installs
deployment-other         25%  Deployments of other apps
configmap                25%  ConfigMaps
=====================  =====  =====================================================================

Within a class every payload has the same share. Nothing from the upstream
folder is copied into the repository: bodies are built into a temporary
directory at run time.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
Obj = dict[str, Any]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

CLASS_SHARES: dict[str, int] = {
    "crd-gwapi-update": 10,
    "crd-create": 5,
    "crd-kgateway": 5,
    "crd-delete": 3,
    "helmrelease": 15,
    "deployment-kgateway": 12,
    "deployment-other": 25,
    "configmap": 25,
}

KGATEWAY_NS = "kgateway-system"
KGATEWAY_IMAGE = "cr.kgateway.dev/kgateway-dev/kgateway"
CREATED = "2025-12-13T10:00:00Z"
UPDATED = "2025-12-13T14:00:00Z"


def upstream_dir() -> Path:
    return Path(os.environ.get("CRDGUARD_UPSTREAM") or REPO_ROOT.parent / "shared" / "upstream")


# -- reading upstream ---------------------------------------------------------------------------------


def _documents(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as handle:
        return [d for d in yaml.load_all(handle, Loader=_Loader) if isinstance(d, dict)]


def _crds(path: Path) -> dict[str, Obj]:
    return {d["metadata"]["name"]: d for d in _documents(path) if d.get("kind") == "CustomResourceDefinition"}


@dataclass(frozen=True)
class Upstream:
    """The upstream CRDs and chart values the scenario and payloads are made of."""

    gwapi_130_exp: dict[str, Obj]
    gwapi_140_std: dict[str, Obj]
    gwapi_140_exp: dict[str, Obj]
    gwapi_141_std: dict[str, Obj]
    gwapi_141_exp: dict[str, Obj]
    gwapi_151_std: dict[str, Obj]
    gwapi_151_exp: dict[str, Obj]
    kgateway_204: dict[str, Obj]
    kgateway_211: dict[str, Obj]
    inference_120: dict[str, Obj]
    flux: dict[str, Obj]
    kgateway_values_204: Obj
    kgateway_values_211: Obj

    @classmethod
    def load(cls, root: Path) -> Upstream:
        if not (root / "gateway-api").is_dir():
            raise FileNotFoundError(f"upstream manifests not found at {root} (set CRDGUARD_UPSTREAM)")
        gw = root / "gateway-api"

        def kgw(version: str) -> dict[str, Obj]:
            found: dict[str, Obj] = {}
            for path in sorted((root / "kgateway" / version / "crds").glob("*.yaml")):
                found.update(_crds(path))
            return found

        def values(version: str) -> Obj:
            loaded = _documents(root / "kgateway" / version / "chart-kgateway" / "values.yaml")
            return loaded[0] if loaded else {}

        flux: dict[str, Obj] = {}
        for name in ("helmreleases", "ocirepositories", "helmcharts"):
            flux.update(_crds(root / "flux" / f"{name}.yaml"))
        return cls(
            gwapi_130_exp=_crds(gw / "v1.3.0" / "experimental-install.yaml"),
            gwapi_140_std=_crds(gw / "v1.4.0" / "standard-install.yaml"),
            gwapi_140_exp=_crds(gw / "v1.4.0" / "experimental-install.yaml"),
            gwapi_141_std=_crds(gw / "v1.4.1" / "standard-install.yaml"),
            gwapi_141_exp=_crds(gw / "v1.4.1" / "experimental-install.yaml"),
            gwapi_151_std=_crds(gw / "v1.5.1" / "standard-install.yaml"),
            gwapi_151_exp=_crds(gw / "v1.5.1" / "experimental-install.yaml"),
            kgateway_204=kgw("v2.0.4"),
            kgateway_211=kgw("v2.1.1"),
            inference_120=_crds(root / "gateway-api-inference-extension" / "v1.2.0" / "manifests.yaml"),
            flux=flux,
            kgateway_values_204=values("v2.0.4"),
            kgateway_values_211=values("v2.1.1"),
        )


# -- server-populated fields ----------------------------------------------------------------------------


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "crdguard-bench/" + "/".join(parts)))


def fields_v1(value: Any) -> Any:
    """A managedFields ``fieldsV1`` shaped like the API server's: field names only, keyed list items."""
    if isinstance(value, Mapping):
        return {f"f:{k}": fields_v1(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(i, Mapping) and "name" in i for i in value):
        return {
            "k:" + json.dumps({"name": i["name"]}, separators=(",", ":")): {".": {}, **fields_v1(i)}
            for i in value
        }
    return {}


def _stored(obj: Obj, *, manager: str, generation: int = 1, resource_version: int = 1000) -> Obj:
    """``obj`` as the API server stores and sends it: uid, resourceVersion, managedFields, status."""
    stored = copy.deepcopy(obj)
    meta = stored.setdefault("metadata", {})
    name, namespace = meta["name"], meta.get("namespace", "")
    applied = {k: v for k, v in stored.items() if k not in ("apiVersion", "kind", "status")}
    meta.update(
        {
            "uid": _uid(stored["kind"], namespace, name),
            "resourceVersion": str(resource_version),
            "generation": generation,
            "creationTimestamp": CREATED,
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Apply",
                    "apiVersion": stored["apiVersion"],
                    "time": UPDATED if generation > 1 else CREATED,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(applied),
                }
            ],
        }
    )
    if stored["kind"] == "CustomResourceDefinition":
        spec = stored["spec"]
        stored["status"] = {
            "acceptedNames": spec["names"],
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": CREATED, "reason": r, "message": m}
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        }
    elif stored["kind"] == "Deployment":
        replicas = stored["spec"].get("replicas", 1)
        stored["status"] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }
    elif stored["kind"] == "HelmRelease":
        stored["status"] = {
            "observedGeneration": generation,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "UpgradeSucceeded",
                    "lastTransitionTime": UPDATED,
                }
            ],
            "lastAttemptedRevision": stored["spec"].get("chart", {}).get("spec", {}).get("version", ""),
        }
    return stored


# -- the scenario's objects -----------------------------------------------------------------------------


def kgateway_deployment(
    version: str,
    *,
    namespace: str = KGATEWAY_NS,
    name: str = "kgateway",
    inference: bool = True,
    replicas: int = 1,
) -> Obj:
    """kgateway's controller Deployment as its chart (install/helm/kgateway) renders it."""
    labels = {
        "app.kubernetes.io/name": "kgateway",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/version": "1.16.0",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": f"kgateway-{version}",
        "kgateway": "kgateway",
    }
    selector = {
        "app.kubernetes.io/name": "kgateway",
        "app.kubernetes.io/instance": name,
        "kgateway": "kgateway",
    }
    env: list[Obj] = [
        {
            "name": "GOMEMLIMIT",
            "valueFrom": {"resourceFieldRef": {"divisor": "1", "resource": "limits.memory"}},
        },
        {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"divisor": "1", "resource": "limits.cpu"}}},
        {"name": "KGW_LOG_LEVEL", "value": "info"},
        {"name": "KGW_XDS_SERVICE_NAME", "value": name},
        {"name": "KGW_XDS_SERVICE_PORT", "value": "9977"},
        {"name": "KGW_DEFAULT_IMAGE_REGISTRY", "value": "cr.kgateway.dev/kgateway-dev"},
        {"name": "KGW_DEFAULT_IMAGE_TAG", "value": version},
        {"name": "KGW_DEFAULT_IMAGE_PULL_POLICY", "value": "IfNotPresent"},
        {"name": "KGW_ENABLE_INFER_EXT", "value": "true" if inference else "false"},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                "meta.helm.sh/release-name": name,
                "meta.helm.sh/release-namespace": namespace,
                "deployment.kubernetes.io/revision": "1",
            },
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {**selector, "app.kubernetes.io/version": "1.16.0"}},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "kgateway",
                            "image": f"{KGATEWAY_IMAGE}:{version}",
                            "imagePullPolicy": "IfNotPresent",
                            "env": env,
                            "ports": [
                                {"name": "grpc-xds", "containerPort": 9977, "protocol": "TCP"},
                                {"name": "health", "containerPort": 9093, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": 9092, "protocol": "TCP"},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": 9093, "scheme": "HTTP"},
                                "initialDelaySeconds": 3,
                                "periodSeconds": 10,
                            },
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True,
                            },
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                        }
                    ],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    }


def app_deployment(name: str, namespace: str, image: str, *, containers: int = 1, replicas: int = 2) -> Obj:
    """A Deployment of some other application (no catalogued component)."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", "team": namespace}
    pods = []
    for i in range(containers):
        pods.append(
            {
                "name": name if i == 0 else f"{name}-sidecar-{i}",
                "image": image if i == 0 else f"registry.example.com/platform/log-shipper:1.{i}.0",
                "args": ["--port=8080", "--log-format=json"],
                "env": [
                    {"name": "APP_ENV", "value": "production"},
                    {
                        "name": "OTEL_EXPORTER_OTLP_ENDPOINT",
                        "value": "http://otel-collector.observability:4317",
                    },
                    {
                        "name": "DB_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": f"{name}-db", "key": "password"}},
                    },
                ],
                "ports": [{"name": "http", "containerPort": 8080 + i, "protocol": "TCP"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080 + i}, "periodSeconds": 10},
                "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "50m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
            }
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "containers": pods,
                    "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                },
            },
        },
    }


def helmrelease(name: str, namespace: str, chart: str, version: str, values: Obj, repo: str) -> Obj:
    """A Flux HelmRelease (helm.toolkit.fluxcd.io/v2) installing ``chart`` from a HelmRepository."""
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": "10m",
            "releaseName": name,
            "chart": {
                "spec": {
                    "chart": chart,
                    "version": version,
                    "sourceRef": {"kind": "HelmRepository", "name": repo, "namespace": "flux-system"},
                    "interval": "1h",
                }
            },
            "install": {"crds": "CreateReplace", "remediation": {"retries": 3}},
            "upgrade": {"crds": "CreateReplace", "remediation": {"retries": 3, "remediateLastFailure": True}},
            "values": values,
        },
    }


def kgateway_values(upstream: Upstream, version: str, *, inference: bool = True) -> Obj:
    """The chart's own values.yaml with llm-d's overrides (inference extension on, hardened pods)."""
    base = upstream.kgateway_values_211 if version.startswith("v2.1") else upstream.kgateway_values_204
    values = copy.deepcopy(base)
    values["inferenceExtension"] = {**(values.get("inferenceExtension") or {}), "enabled": inference}
    values["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    values["podSecurityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True}
    return values


def configmap(name: str, namespace: str, entries: int) -> Obj:
    data = {
        f"setting-{i}.properties": f"key.{i}=value-{i}\nretries={i % 5}\n" * (1 + i % 4)
        for i in range(entries)
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
        "data": data,
    }


OTHER_RELEASES = (
    ("cert-manager", "cert-manager", "cert-manager", "v1.19.1", "jetstack"),
    ("ingress-nginx", "ingress-nginx", "ingress-nginx", "4.13.3", "ingress-nginx"),
    ("podinfo", "team-a", "podinfo", "6.9.2", "podinfo"),
)
OTHER_APPS = (
    ("checkout", "shop", "registry.example.com/shop/checkout:3.4.1", 2),
    ("catalog", "shop", "registry.example.com/shop/catalog:1.12.0", 1),
    ("frontend", "web", "registry.example.com/web/frontend:2025.12.1", 3),
)


def _gateway_crds(upstream: Upstream) -> dict[str, Obj]:
    return {
        **upstream.gwapi_130_exp,
        **upstream.kgateway_204,
        **upstream.inference_120,
        **upstream.flux,
    }


def scenario_objects(upstream: Upstream) -> list[Obj]:
    """The cluster before the upgrade, as stored (server-populated fields included)."""
    objects = [_stored(crd, manager="kubectl") for crd in _gateway_crds(upstream).values()]
    objects.append(_stored(kgateway_deployment("v2.0.4"), manager="helm-controller"))
    objects.append(
        _stored(
            helmrelease(
                "kgateway", KGATEWAY_NS, "kgateway", "v2.0.4", kgateway_values(upstream, "v2.0.4"), "kgateway"
            ),
            manager="kustomize-controller",
        )
    )
    objects.append(
        _stored(
            helmrelease("kgateway-crds", KGATEWAY_NS, "kgateway-crds", "v2.0.4", {}, "kgateway"),
            manager="flux",
        )
    )
    for name, namespace, chart, version, repo in OTHER_RELEASES:
        objects.append(
            _stored(helmrelease(name, namespace, chart, version, {"replicaCount": 2}, repo), manager="flux")
        )
    for name, namespace, image, containers in OTHER_APPS:
        objects.append(
            _stored(app_deployment(name, namespace, image, containers=containers), manager="kubectl")
        )
    return objects


def write_scenario(upstream: Upstream, directory: Path) -> list[Path]:
    """The scenario's objects as JSON files, for ``crdguard serve --cluster``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(scenario_objects(upstream)):
        meta = obj["metadata"]
        path = directory / f"{i:03d}-{obj['kind'].lower()}-{meta.get('namespace', '_')}-{meta['name']}.json"
        path.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")
        paths.append(path)
    return paths


# -- AdmissionReviews ---------------------------------------------------------------------------------

_RESOURCES = {
    "CustomResourceDefinition": ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
    "Deployment": ("apps", "v1", "deployments"),
    "HelmRelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
    "ConfigMap": ("", "v1", "configmaps"),
}
_USERS = {
    "kubectl": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
    "flux": {
        "username": "system:serviceaccount:flux-system:kustomize-controller",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"],
    },
    "helm-controller": {
        "username": "system:serviceaccount:flux-system:helm-controller",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"],
    },
}


@dataclass(frozen=True)
class Payload:
    name: str  # file stem
    cls: str
    review: Obj

    @property
    def uid(self) -> str:
        return str(self.review["request"]["uid"])


def review(
    name: str,
    operation: str,
    new: Obj | None,
    old: Obj | None,
    *,
    user: str = "kubectl",
    dry_run: bool = False,
) -> Obj:
    """An AdmissionReview v1 request as kube-apiserver sends it for ``operation``."""
    sample = new if new is not None else old
    assert sample is not None
    group, version, resource = _RESOURCES[sample["kind"]]
    gvk = {"group": group, "version": version, "kind": sample["kind"]}
    gvr = {"group": group, "version": version, "resource": resource}
    meta = sample["metadata"]
    option_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}[operation]
    options: Obj = {"kind": option_kind, "apiVersion": "meta.k8s.io/v1"}
    if operation != "DELETE":
        options.update(
            {"fieldManager": "kubectl" if user == "kubectl" else "flux", "fieldValidation": "Strict"}
        )
    else:
        options["propagationPolicy"] = "Background"
    request: Obj = {
        "uid": _uid("review", name),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": meta["name"],
        "operation": operation,
        "userInfo": {**_USERS[user], "uid": _uid("user", user)},
        "object": new,
        "oldObject": old,
        "dryRun": dry_run,
        "options": options,
    }
    if meta.get("namespace"):
        request["namespace"] = meta["namespace"]
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def _update(old: Obj, new: Obj, manager: str) -> tuple[Obj, Obj]:
    """Stored old and new, the new one with the old's identity and a bumped generation."""
    stored_old = _stored(old, manager=manager)
    stored_new = _stored(new, manager=manager, generation=2, resource_version=1000)
    stored_new["metadata"]["uid"] = stored_old["metadata"]["uid"]
    return stored_old, stored_new


def _new(obj: Obj, manager: str) -> Obj:
    """A CREATE's object: defaulted and named, but no resourceVersion yet."""
    stored = _stored(obj, manager=manager)
    stored["metadata"].pop("resourceVersion", None)
    stored.pop("status", None)
    return stored


def build_payloads(upstream: Upstream) -> list[Payload]:
    out: list[Payload] = []

    def add(cls: str, name: str, body: Obj) -> None:
        body["request"]["uid"] = _uid("review", name)  # unique per payload: answers must echo it
        out.append(Payload(name, cls, body))

    before = upstream.gwapi_130_exp
    for target, bundle in (("std140", upstream.gwapi_140_std), ("exp140", upstream.gwapi_140_exp)):
        for name, crd in sorted(bundle.items()):
            if name in before:
                old, new = _update(before[name], crd, "kubectl")
                add(
                    "crd-gwapi-update",
                    f"update-{name.split('.')[0]}-{target}",
                    review(name, "UPDATE", new, old),
                )

    creates = {
        "xmeshes.gateway.networking.x-k8s.io": upstream.gwapi_140_exp,
        "listenersets.gateway.networking.k8s.io": upstream.gwapi_151_std,
        "backendconfigpolicies.gateway.kgateway.dev": upstream.kgateway_211,
    }
    for name, bundle in creates.items():
        add(
            "crd-create",
            f"create-{name.split('.')[0]}",
            review(name, "CREATE", _new(bundle[name], "kubectl"), None),
        )

    for name, crd in sorted(upstream.kgateway_211.items()):
        if name in upstream.kgateway_204:
            old, new = _update(upstream.kgateway_204[name], crd, "helm-controller")
            add(
                "crd-kgateway",
                f"update-{name.split('.')[0]}-v211",
                review(name, "UPDATE", new, old, user="flux"),
            )

    for name in (
        "backendtlspolicies.gateway.networking.k8s.io",
        "inferencepools.inference.networking.x-k8s.io",
        "httproutes.gateway.networking.k8s.io",
    ):
        crd = _gateway_crds(upstream)[name]
        add(
            "crd-delete",
            f"delete-{name.split('.')[0]}-{name.split('.')[-2]}",
            review(name, "DELETE", None, _stored(crd, manager="kubectl")),
        )

    values_204 = kgateway_values(upstream, "v2.0.4")
    hr_old = helmrelease("kgateway", KGATEWAY_NS, "kgateway", "v2.0.4", values_204, "kgateway")
    for label, version, values in (
        ("upgrade-v211", "v2.1.1", kgateway_values(upstream, "v2.1.1")),
        (
            "values-change",
            "v2.0.4",
            {**values_204, "controller": {**values_204.get("controller", {}), "logLevel": "debug"}},
        ),
        ("range-2.1", ">=2.1.0 <2.2.0", kgateway_values(upstream, "v2.1.1")),
    ):
        old, new = _update(
            hr_old, helmrelease("kgateway", KGATEWAY_NS, "kgateway", version, values, "kgateway"), "flux"
        )
        add("helmrelease", f"hr-kgateway-{label}", review("hr", "UPDATE", new, old, user="flux"))
    add(
        "helmrelease",
        "hr-kgateway-create-team-a",
        review(
            "hr",
            "CREATE",
            _new(helmrelease("kgateway", "team-a", "kgateway", "v2.0.4", values_204, "kgateway"), "flux"),
            None,
            user="flux",
        ),
    )
    for name, namespace, chart, version, repo in OTHER_RELEASES:
        old, new = _update(
            helmrelease(name, namespace, chart, version, {"replicaCount": 2}, repo),
            helmrelease(name, namespace, chart, version, {"replicaCount": 3}, repo),
            "flux",
        )
        add("helmrelease", f"hr-{name}-update", review(f"hr-{name}", "UPDATE", new, old, user="flux"))

    dep_old = kgateway_deployment("v2.0.4")
    for label, new_dep in (
        ("upgrade-v211", kgateway_deployment("v2.1.1")),
        ("scale", kgateway_deployment("v2.0.4", replicas=2)),
    ):
        old, new = _update(dep_old, new_dep, "helm-controller")
        add(
            "deployment-kgateway",
            f"deploy-kgateway-{label}",
            review("dep", "UPDATE", new, old, user="helm-controller"),
        )
    for label, new_dep in (
        ("create-v204-team-b", kgateway_deployment("v2.0.4", namespace="team-b", inference=False)),
        ("create-v211-team-c", kgateway_deployment("v2.1.1", namespace="team-c")),
    ):
        add(
            "deployment-kgateway",
            f"deploy-kgateway-{label}",
            review("dep", "CREATE", _new(new_dep, "kubectl"), None),
        )

    for name, namespace, image, containers in OTHER_APPS:
        old, new = _update(
            app_deployment(name, namespace, image, containers=containers),
            app_deployment(name, namespace, image.rsplit(":", 1)[0] + ":next", containers=containers),
            "kubectl",
        )
        add("deployment-other", f"deploy-{name}-update", review(f"dep-{name}", "UPDATE", new, old))
    add(
        "deployment-other",
        "deploy-reports-create",
        review(
            "dep-reports",
            "CREATE",
            _new(
                app_deployment("reports", "analytics", "registry.example.com/analytics/reports:0.9.0"),
                "kubectl",
            ),
            None,
        ),
    )

    for name, namespace, entries in (
        ("feature-flags", "shop", 3),
        ("nginx-conf", "web", 24),
        ("tiny", "team-a", 1),
    ):
        old, new = _update(
            configmap(name, namespace, entries), configmap(name, namespace, entries + 1), "kubectl"
        )
        add("configmap", f"cm-{name}-update", review(f"cm-{name}", "UPDATE", new, old))
    add(
        "configmap",
        "cm-settings-create",
        review("cm-settings", "CREATE", _new(configmap("settings", "analytics", 2), "kubectl"), None),
    )
    return out


# The denials run: each denied change of the incident and its variants, and beside it an allowed
# change of the same object and about the same size, so the two classes differ only in the verdict.
DENIAL_SHARES: dict[str, int] = {"denied": 50, "allowed-twin": 50}
BACKENDTLSPOLICY = "backendtlspolicies.gateway.networking.k8s.io"


def build_denials(upstream: Upstream) -> list[Payload]:
    """The incident (v1.4.0 standard BackendTLSPolicy over kgateway 2.0.4; kgateway 2.1.1 with
    kgateway-crds 2.0.4) and its variants, each paired with an allowed twin."""
    out: list[Payload] = []

    def add(cls: str, name: str, body: Obj) -> None:
        body["request"]["uid"] = _uid("denials", name)
        out.append(Payload(name, cls, body))

    old_crd = upstream.gwapi_130_exp[BACKENDTLSPOLICY]
    for tag, standard, experimental in (
        ("140", upstream.gwapi_140_std, upstream.gwapi_140_exp),
        ("141", upstream.gwapi_141_std, upstream.gwapi_141_exp),
        ("151", upstream.gwapi_151_std, upstream.gwapi_151_exp),
    ):
        for cls, label, bundle in (("denied", "std", standard), ("allowed-twin", "exp", experimental)):
            old, new = _update(old_crd, bundle[BACKENDTLSPOLICY], "kubectl")
            add(cls, f"update-backendtlspolicies-{label}{tag}", review("btp", "UPDATE", new, old))
    dep_old = kgateway_deployment("v2.0.4")
    for cls, label, new_dep in (
        ("denied", "upgrade-v211", kgateway_deployment("v2.1.1")),
        ("allowed-twin", "scale", kgateway_deployment("v2.0.4", replicas=2)),
        ("denied", "upgrade-v211-no-inference", kgateway_deployment("v2.1.1", inference=False)),
        ("allowed-twin", "no-inference", kgateway_deployment("v2.0.4", inference=False)),
    ):
        old, new = _update(dep_old, new_dep, "helm-controller")
        add(cls, f"deploy-kgateway-{label}", review("dep", "UPDATE", new, old, user="helm-controller"))
    for cls, label, version in (("denied", "v211", "v2.1.1"), ("allowed-twin", "v204", "v2.0.4")):
        new_dep = kgateway_deployment(version, namespace="team-c")
        add(cls, f"deploy-kgateway-create-{label}", review("dep", "CREATE", _new(new_dep, "kubectl"), None))
    values_204 = kgateway_values(upstream, "v2.0.4")
    hr_old = helmrelease("kgateway", KGATEWAY_NS, "kgateway", "v2.0.4", values_204, "kgateway")
    for cls, label, version, values in (
        ("denied", "upgrade-v211", "v2.1.1", kgateway_values(upstream, "v2.1.1")),
        ("allowed-twin", "values-change", "v2.0.4", {**values_204, "replicaCount": 2}),
    ):
        new_hr = helmrelease("kgateway", KGATEWAY_NS, "kgateway", version, values, "kgateway")
        old, new = _update(hr_old, new_hr, "flux")
        add(cls, f"hr-kgateway-{label}", review("hr", "UPDATE", new, old, user="flux"))
    return out


def write_payloads(
    payloads: Iterable[Payload], directory: Path, shares: Mapping[str, int] = CLASS_SHARES
) -> Obj:
    """Bodies as ``<name>.json``, and ``manifest.json`` (file, class, weight, uid, bytes) for the loadgen."""
    directory.mkdir(parents=True, exist_ok=True)
    payloads = list(payloads)
    per_class: dict[str, int] = {}
    for p in payloads:
        per_class[p.cls] = per_class.get(p.cls, 0) + 1
    entries = []
    for p in payloads:
        body = json.dumps(p.review, separators=(",", ":")).encode()
        (directory / f"{p.name}.json").write_bytes(body)
        entries.append(
            {
                "file": f"{p.name}.json",
                "class": p.cls,
                # Every class gets its share of the requests whatever its number of payloads.
                "weight": max(1, round(shares[p.cls] * 1200 / per_class[p.cls])),
                "uid": p.uid,
                "bytes": len(body),
                "operation": p.review["request"]["operation"],
                "kind": p.review["request"]["kind"]["kind"],
            }
        )
    manifest = {"shares": dict(shares), "payloads": entries}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.json")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def iter_classes(manifest: Mapping[str, Any]) -> Iterator[tuple[str, list[Obj]]]:
    classes: dict[str, list[Obj]] = {}
    for entry in manifest["payloads"]:
        classes.setdefault(entry["class"], []).append(entry)
    yield from classes.items()


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the benchmark's payloads and scenario state")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    upstream = Upstream.load(upstream_dir())
    manifest = write_payloads(build_payloads(upstream), args.out / "payloads")
    write_scenario(upstream, args.out / "cluster")
    for cls, entries in iter_classes(manifest):
        sizes = sorted(e["bytes"] for e in entries)
        print(f"{cls:22} {len(entries):3} payloads, {sizes[0] // 1024}-{sizes[-1] // 1024} KiB")


if __name__ == "__main__":
    main()
