"""A stand-in for kube-apiserver's list and watch endpoints, serving a large synthetic cluster.

It lets the benchmark run ``crdguard serve --kubeconfig`` as shipped, so the large
state goes into crdguard through the watch cache's own code (paginated
``list_into`` -> ``summarize`` -> ``Inventory.replace_all``/``upsert``), and its
memory is measured as a deployed crdguard would use it. (A real kube-apiserver
cannot hold 5,000 CRDs on this machine: each CRD starts its own handlers.)

Served: ``GET`` of the four resources crdguard watches, with ``limit``/``continue``
paging; ``watch=true`` answers a stream that stays open (a bookmark every few
seconds) until ``timeoutSeconds``. Everything else is 404. Plain HTTP on
127.0.0.1 only.

The synthetic objects: CRDs are copies of the real upstream CRDs (all of
Gateway API v1.4.0 experimental, kgateway v2.1.1, Inference Extension v1.2.0,
Flux) under made-up groups, so their size is real (tens to hundreds of KB);
Deployments and HelmReleases are other applications in 200 namespaces. None
runs a catalogued component, so the verdicts stay those of the scenario.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.payloads import Obj, Upstream, _stored, app_deployment, helmrelease, scenario_objects, upstream_dir

RESOURCE_VERSION = "5000"
PATHS = {
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions": (
        "CustomResourceDefinitionList",
        "CustomResourceDefinition",
    ),
    "/apis/apps/v1/deployments": ("DeploymentList", "Deployment"),
    "/apis/helm.toolkit.fluxcd.io/v2/helmreleases": ("HelmReleaseList", "HelmRelease"),
    "/apis/source.toolkit.fluxcd.io/v1/ocirepositories": ("OCIRepositoryList", "OCIRepository"),
}


class Cluster:
    """Objects per kind, as JSON-encoded strings (built once; a list page joins them)."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {kind: [] for _, kind in PATHS.values()}

    def add(self, obj: Obj) -> None:
        self.items[obj["kind"]].append(json.dumps(obj, separators=(",", ":")))

    def add_encoded(self, kind: str, encoded: str) -> None:
        self.items[kind].append(encoded)

    def counts(self) -> dict[str, int]:
        return {kind: len(items) for kind, items in self.items.items()}


def _crd_templates(upstream: Upstream) -> list[tuple[str, str, str]]:
    """(encoded CRD, its group, its plural) for every distinct upstream CRD."""
    crds = {
        **upstream.gwapi_140_exp,
        **upstream.kgateway_211,
        **upstream.inference_120,
        **upstream.flux,
    }
    out = []
    for crd in crds.values():
        stored = _stored(crd, manager="kubectl")
        out.append(
            (json.dumps(stored, separators=(",", ":")), crd["spec"]["group"], crd["spec"]["names"]["plural"])
        )
    return out


def build_cluster(upstream: Upstream, crds: int, deployments: int, helmreleases: int) -> Cluster:
    """The scenario's objects plus the given numbers of synthetic unrelated ones."""
    cluster = Cluster()
    for obj in scenario_objects(upstream):
        cluster.add(obj)
    templates = _crd_templates(upstream)
    for i in range(crds):
        encoded, group, plural = templates[i % len(templates)]
        fresh_group = f"op{i}.{group}"
        # The group appears in the name, spec.group and annotations: rename it everywhere.
        cluster.add_encoded(
            "CustomResourceDefinition",
            encoded.replace(f'"{plural}.{group}"', f'"{plural}.{fresh_group}"').replace(
                f'"group":"{group}"', f'"group":"{fresh_group}"'
            ),
        )
    images = ("registry.example.com/team/api", "docker.io/library/nginx", "quay.io/prometheus/node-exporter")
    for i in range(deployments):
        namespace = f"ns-{i % 200:03d}"
        image = f"{images[i % len(images)]}:1.{i % 30}.{i % 7}"
        obj = app_deployment(f"app-{i:05d}", namespace, image, containers=1 + i % 3, replicas=1 + i % 4)
        cluster.add(_stored(obj, manager="kubectl", resource_version=2000 + i))
    charts = ("podinfo", "redis", "postgresql", "grafana", "loki", "cert-manager", "external-dns")
    for i in range(helmreleases):
        namespace = f"ns-{i % 200:03d}"
        chart = charts[i % len(charts)]
        values = {
            "replicaCount": 1 + i % 3,
            "resources": {"requests": {"cpu": "100m"}},
            "ingress": {"enabled": i % 2 == 0},
        }
        obj = helmrelease(
            f"{chart}-{i:04d}", namespace, chart, f"{1 + i % 5}.{i % 10}.{i % 3}", values, chart
        )
        cluster.add(_stored(obj, manager="flux", resource_version=8000 + i))
    return cluster


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: Cluster
    stopping: threading.Event
    lists: dict[str, int]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the benchmark reads no access log."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        found = PATHS.get(url.path)
        if found is None:
            self._json(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                },
            )
            return
        list_kind, kind = found
        if query.get("watch") in ("true", "1"):
            self._watch(kind, float(query.get("timeoutSeconds", "300")))
            return
        items = self.cluster.items[kind]
        limit = int(query.get("limit", "0") or 0) or len(items) or 1
        start = int(query.get("continue", "0") or 0)
        page = items[start : start + limit]
        more = start + limit < len(items)
        metadata = {"resourceVersion": RESOURCE_VERSION, **({"continue": str(start + limit)} if more else {})}
        head = json.dumps({"kind": list_kind, "apiVersion": "v1", "metadata": metadata})[:-1]
        body = (head + ',"items":[' + ",".join(page) + "]}").encode()
        self.lists[kind] = self.lists.get(kind, 0) + 1
        self._send(200, body)

    def _watch(self, kind: str, timeout: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        bookmark = (
            json.dumps(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": kind, "metadata": {"resourceVersion": RESOURCE_VERSION}},
                }
            ).encode()
            + b"\n"
        )
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(bookmark), bookmark))
                self.wfile.flush()
                self.stopping.wait(5.0)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away
        self.close_connection = True

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(cluster: Cluster, port: int = 0) -> tuple[ThreadingHTTPServer, threading.Event, Callable[[], None]]:
    """Start serving in a thread; returns the server, its stop event and a function that stops it."""
    stopping = threading.Event()
    handler = type("BoundHandler", (Handler,), {"cluster": cluster, "stopping": stopping, "lists": {}})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fakeapi", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        server.shutdown()
        server.server_close()

    return server, stopping, stop


def kubeconfig(server_url: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server_url}}],
            "users": [{"name": "bench", "user": {"token": "bench"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "bench"}}],
            "current-context": "fake",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a synthetic cluster's list/watch endpoints")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crds", type=int, default=5000)
    parser.add_argument("--deployments", type=int, default=5000)
    parser.add_argument("--helmreleases", type=int, default=1000)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="write a kubeconfig for it here")
    args = parser.parse_args()
    cluster = build_cluster(Upstream.load(upstream_dir()), args.crds, args.deployments, args.helmreleases)
    server, _, stop = serve(cluster, args.port)
    args.kubeconfig.write_text(kubeconfig(f"http://127.0.0.1:{server.server_address[1]}"), encoding="utf-8")
    print(json.dumps({"ready": True, "objects": cluster.counts()}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stop()


def iter_sizes(cluster: Cluster) -> Iterator[tuple[str, int]]:
    for kind, items in cluster.items.items():
        yield kind, sum(len(i) for i in items)


if __name__ == "__main__":
    main()
