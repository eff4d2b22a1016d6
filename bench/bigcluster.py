"""A big cluster on a real kube-apiserver (etcd + kube-apiserver from hack/kube-tools.sh).

tests/e2e/cluster.py's control plane, loaded over its REST API by parallel
clients (one keep-alive TLS connection each; the API server has no bulk create,
so parallel POSTs are as fast as it allows):

* CRDs: the scenario's real upstream CRDs, the Flux HelmRelease/OCIRepository
  CRDs, a minimal Argo CD ``Application`` CRD (``argoproj.io/v1alpha1``, schema
  ``x-kubernetes-preserve-unknown-fields``: Argo CD's own CRD is not in the
  upstream folder and its Go module is not fetched here), then synthetic CRDs
  up to the count: every ``real_every``-th a copy of a real upstream CRD under a
  made-up group (tens to hundreds of KB), the others small;
* Deployments across 200 namespaces, of which ``controllers`` run kgateway
  v2.0.4 (a catalogued component, the scenario's version, so verdicts stay those
  of the scenario), the rest other applications;
* Flux HelmReleases and Argo CD Applications of other charts.

No controller-manager runs: Deployments create no Pods, which is what the
webhook's watch sees in a real cluster anyway (it reads Deployments, not Pods).
"""

from __future__ import annotations

import http.client
import itertools
import json
import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.payloads import (
    Obj,
    Upstream,
    app_deployment,
    helmrelease,
    kgateway_deployment,
    scenario_objects,
)

NAMESPACES = 200
_PLURALS = {
    "CustomResourceDefinition": ("apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
    "Namespace": ("api/v1", "namespaces"),
    "Deployment": ("apis/apps/v1", "deployments"),
    "HelmRelease": ("apis/helm.toolkit.fluxcd.io/v2", "helmreleases"),
    "Application": ("apis/argoproj.io/v1alpha1", "applications"),
}


@dataclass(frozen=True)
class Counts:
    deployments: int = 50_000
    controllers: int = 200
    crds: int = 3_000
    helmreleases: int = 2_000
    applications: int = 2_000
    real_every: int = 20

    def describe(self) -> str:
        return (
            f"{self.deployments:,} Deployments ({self.controllers} catalogued controllers), "
            f"{self.crds:,} CRDs, {self.helmreleases:,} HelmReleases, "
            f"{self.applications:,} Argo CD Applications"
        )


def _fresh(obj: Obj) -> Obj:
    """An object as a client creates it: no server-populated metadata or status."""
    meta = obj["metadata"]
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return {k: v for k, v in obj.items() if k not in ("status", "metadata")} | {"metadata": keep}


def argo_application_crd() -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "applications.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "scope": "Namespaced",
            "names": {"plural": "applications", "singular": "application", "kind": "Application",
                      "listKind": "ApplicationList", "shortNames": ["app", "apps"]},
            "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }  # fmt: skip


def small_crd(i: int) -> Obj:
    group = f"op{i:04d}.bench.example.com"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}", "labels": {"app.kubernetes.io/part-of": f"operator-{i}"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {"name": v, "served": True, "storage": v == "v1",
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {
                         "size": {"type": "integer"}, "image": {"type": "string"},
                         "replicas": {"type": "integer", "minimum": 0}}},
                     "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}
                for v in ("v1", "v1beta1")
            ],
        },
    }  # fmt: skip


def renamed_crd(crd: Obj, i: int) -> Obj:
    # *.k8s.io groups need an API-approval annotation: move the copy out of that domain.
    group = f"op{i:04d}." + crd["spec"]["group"].replace(".k8s.io", ".example.com")
    plural = crd["spec"]["names"]["plural"]
    copy = json.loads(json.dumps(_fresh(crd)))
    copy["metadata"] = {"name": f"{plural}.{group}"}
    copy["spec"]["group"] = group
    return copy


def application(i: int) -> Obj:
    chart = ("podinfo", "redis", "grafana", "loki", "external-dns")[i % 5]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": f"{chart}-{i:04d}", "namespace": f"ns-{i % NAMESPACES:03d}"},
        "spec": {
            "project": "default",
            "source": {"repoURL": f"https://charts.example.com/{chart}", "chart": chart,
                       "targetRevision": f"{1 + i % 4}.{i % 9}.0", "helm": {"values": "replicaCount: 2\n"}},
            "destination": {"server": "https://kubernetes.default.svc",
                            "namespace": f"ns-{i % NAMESPACES:03d}"},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }  # fmt: skip


class Client:
    """Parallel POSTs to one API server, each worker on its own keep-alive TLS connection."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, workers: int) -> None:
        self.host, self.port, self.context, self.workers = host, port, context, workers
        self.deadline = float("inf")  # time.monotonic() after which no more objects are sent
        self.skipped = 0
        self.skipped_deployments = 0
        self.created = 0
        self.failures: list[str] = []

    def _connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)

    def request(self, method: str, path: str, body: Obj | None = None) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_all(self, objects: Iterable[Obj]) -> None:
        """POST every object; 409 (already there) counts as created."""
        work: queue.Queue[Obj | None] = queue.Queue(maxsize=self.workers * 64)
        lock = threading.Lock()

        def worker() -> None:
            conn = self._connection()
            while (obj := work.get()) is not None:
                if time.monotonic() > self.deadline:
                    with lock:
                        self.skipped += 1
                        self.skipped_deployments += obj["kind"] == "Deployment"
                    continue
                base, plural = _PLURALS[obj["kind"]]
                ns = obj["metadata"].get("namespace")
                path = f"/{base}/namespaces/{ns}/{plural}" if ns else f"/{base}/{plural}"
                for attempt in range(5):
                    try:
                        conn.request("POST", path, body=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
                        response = conn.getresponse()
                        answer = response.read()
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = self._connection()
                        continue
                    if response.status in (201, 409):
                        with lock:
                            self.created += 1
                        break
                    if response.status in (429, 500, 503, 504) and attempt < 4:
                        time.sleep(0.2 * (attempt + 1))
                        continue
                    with lock:
                        self.failures.append(f"{obj['kind']} {path}: HTTP {response.status} {answer[:200]!r}")
                    break
            conn.close()

        with ThreadPoolExecutor(self.workers) as pool:
            for _ in range(self.workers):
                pool.submit(worker)
            for obj in objects:
                work.put(obj)
            for _ in range(self.workers):
                work.put(None)

    def wait_established(self, names: Iterable[str], timeout: float = 600) -> None:
        pending = set(names)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            status, body = self.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            if status == 200:
                for crd in json.loads(body)["items"]:
                    conditions = (crd.get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                        pending.discard(crd["metadata"]["name"])
            if pending:
                time.sleep(0.5)
        if pending:
            raise TimeoutError(f"CRDs not established after {timeout:.0f}s: {sorted(pending)[:5]}")


def scenario(upstream: Upstream) -> tuple[list[Obj], list[Obj]]:
    """(CRDs, other objects) of the benchmark's scenario, as a client creates them."""
    objects = [_fresh(o) for o in scenario_objects(upstream)]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    return crds, [o for o in objects if o["kind"] != "CustomResourceDefinition"]


def namespaces(objects: Iterable[Obj]) -> list[Obj]:
    names = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    names |= {f"ns-{i:03d}" for i in range(NAMESPACES)}
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in sorted(names)]


def load_scenario(client: Client, upstream: Upstream) -> None:
    crds, others = scenario(upstream)
    crds.append(argo_application_crd())
    client.create_all(namespaces(others))
    client.create_all(crds)
    client.wait_established(c["metadata"]["name"] for c in crds)
    client.create_all(others)


def extra_crds(upstream: Upstream, counts: Counts, already: int) -> Iterator[Obj]:
    templates = [
        c for bundle in (upstream.gwapi_140_exp, upstream.kgateway_211, upstream.inference_120)
        for c in bundle.values()
    ]  # fmt: skip
    for i in range(max(0, counts.crds - already)):
        yield renamed_crd(templates[i % len(templates)], i) if i % counts.real_every == 0 else small_crd(i)


def deployments(counts: Counts, start: int, stop: int) -> Iterator[Obj]:
    """Deployments ``start``..``stop``: every (deployments / controllers)-th runs kgateway v2.0.4."""
    stride = max(1, counts.deployments // max(1, counts.controllers))
    images = ("registry.example.com/team/api", "docker.io/library/nginx", "quay.io/prometheus/node-exporter")
    for i in range(start, stop):
        namespace = f"ns-{i % NAMESPACES:03d}"
        if i % stride == 0 and i // stride < counts.controllers:
            yield _fresh(kgateway_deployment("v2.0.4", namespace=namespace, name=f"kgateway-{i // stride}"))
        else:
            image = f"{images[i % len(images)]}:1.{i % 30}.{i % 7}"
            yield app_deployment(f"app-{i:05d}", namespace, image, containers=1 + i % 3, replicas=1 + i % 4)


def releases(counts: Counts) -> Iterator[Obj]:
    charts = ("podinfo", "redis", "postgresql", "grafana", "loki", "cert-manager", "external-dns")
    for i in range(counts.helmreleases):
        chart = charts[i % len(charts)]
        values = {"replicaCount": 1 + i % 3, "ingress": {"enabled": i % 2 == 0}}
        yield helmrelease(
            f"{chart}-{i:04d}",
            f"ns-{i % NAMESPACES:03d}",
            chart,
            f"{1 + i % 5}.{i % 10}.{i % 3}",
            values,
            chart,
        )
    for i in range(counts.applications):
        yield application(i)


def load_big(
    client: Client,
    upstream: Upstream,
    counts: Counts,
    checkpoint: Callable[[int], None],
    steps: int = 4,
    budget: float = 1800,
) -> dict[str, Any]:
    """Load everything beyond the scenario; ``checkpoint(deployments so far)`` between steps.

    Creation stops after ``budget`` seconds (checkpoints excluded); what was skipped is reported.
    """
    started = time.monotonic()
    client.deadline = started + budget
    before = client.created
    crds = list(extra_crds(upstream, counts, already=len(scenario(upstream)[0]) + 1))
    client.create_all(crds)  # nothing is created in them: no need to wait until they are established
    crd_seconds = time.monotonic() - started
    client.create_all(releases(counts))
    paused = time.monotonic()
    checkpoint(0)
    client.deadline += time.monotonic() - paused  # checkpoints do not count against the budget
    bounds = [round(counts.deployments * k / steps) for k in range(steps + 1)]
    deploy_seconds = 0.0
    for lo, hi in itertools.pairwise(bounds):
        t = time.monotonic()
        client.create_all(deployments(counts, lo, hi))
        paused = time.monotonic()
        deploy_seconds += paused - t
        checkpoint(hi - client.skipped_deployments)
        client.deadline += time.monotonic() - paused
    client.deadline = float("inf")
    seconds = time.monotonic() - started
    created = client.created - before
    return {
        "seconds": round(seconds, 1),
        "crd_seconds": round(crd_seconds, 1),
        "deployment_seconds": round(deploy_seconds, 1),
        "objects": created,
        "objects_per_second": round(created / seconds, 1) if seconds else 0.0,
        "clients": client.workers,
        "failures": client.failures[:10],
        "failed": len(client.failures),
        "skipped_over_budget": client.skipped,
        "budget_seconds": budget,
    }
