"""A cluster view kept from list+watch: the state layer's only contact with the Kubernetes API.

Reviews never call the API server: they read the Inventory that these watches
fill. Objects are cut down to the summaries the rules read as they arrive
(a CRD bundle is megabytes; a HelmRelease's values may hold secrets).

Per resource type, one thread: list (paginated) -> replace the type in the
inventory -> watch from the list's resourceVersion with bookmarks. A 410 Gone
or any broken stream leads to a relist after a jittered exponential backoff,
so an object changed while the watch was down is never missed.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from webhook.rules.catalog import Catalog
from webhook.rules.inventory import Inventory
from webhook.rules.objects import (
    APPLICATION_KIND,
    ARGOCD_GROUP,
    CRD_GROUP,
    CRD_KIND,
    DEPLOYMENT_KIND,
    HELMCHART_KIND,
    HELMRELEASE_GROUP,
    HELMRELEASE_KIND,
    K3S_GROUP,
    OCIREPOSITORY_GROUP,
    OCIREPOSITORY_KIND,
    ObjectRef,
    ref_kind,
    summarize,
)
from webhook.state.errors import (
    ClusterConfigError,
    ClusterForbidden,
    ClusterUnauthorised,
    ClusterUnreachable,
)

log = logging.getLogger("crdguard.watch")


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    crd: str | None  # the CRD that must serve ``version`` before this type can be watched
    label: str = ""  # its name in /state and logs, when the plural alone is ambiguous (helmcharts)

    @property
    def name(self) -> str:
        return self.label or self.plural

    @property
    def ref_kind(self) -> str:
        """The kind as the inventory's ObjectRefs spell it."""
        return ref_kind(self.group, self.kind)

    @property
    def path(self) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/{self.plural}"


RESOURCES = (
    Resource(CRD_GROUP, "v1", "customresourcedefinitions", CRD_KIND, None),
    Resource("apps", "v1", "deployments", DEPLOYMENT_KIND, None),
    Resource(HELMRELEASE_GROUP, "v2", "helmreleases", HELMRELEASE_KIND, f"helmreleases.{HELMRELEASE_GROUP}"),
    Resource(
        OCIREPOSITORY_GROUP,
        "v1",
        "ocirepositories",
        OCIREPOSITORY_KIND,
        f"ocirepositories.{OCIREPOSITORY_GROUP}",
    ),
    Resource(
        OCIREPOSITORY_GROUP,
        "v1",
        "helmcharts",
        HELMCHART_KIND,
        f"helmcharts.{OCIREPOSITORY_GROUP}",
        label=f"helmcharts.{OCIREPOSITORY_GROUP}",
    ),
    Resource(ARGOCD_GROUP, "v1alpha1", "applications", APPLICATION_KIND, f"applications.{ARGOCD_GROUP}"),
    Resource(
        K3S_GROUP,
        "v1",
        "helmcharts",
        HELMCHART_KIND,
        f"helmcharts.{K3S_GROUP}",
        label=f"helmcharts.{K3S_GROUP}",
    ),
)
PAGE_SIZE = {CRD_KIND: 10}  # CRDs are large: small pages bound the memory a list takes
DEFAULT_PAGE_SIZE = 100


class Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


@dataclass
class WatchStatus:
    resource: Resource
    synced: bool = False  # a full list has completed at least once
    connected: bool = False
    waiting_for_crd: bool = False
    lists: int = 0
    relists_after_gone: int = 0
    errors: int = 0
    events: int = 0
    last_error: str = ""
    last_sync: float = 0.0  # time of the last list or event
    resource_version: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)


class KubeClient:
    """Raw JSON requests through the official client's configuration, auth and TLS."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.requests = 0  # every request made to the API server, for /state and metrics

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    def get(self, path: str, query: Mapping[str, str | int], timeout: float) -> Any:
        response = self._request(path, query, timeout)
        try:
            status = response.status
            data = response.read()
        finally:
            response.response.release_conn()
        self._raise_for(status, path, data)
        return json.loads(data)

    def send(self, method: str, path: str, body: Any, timeout: float = 10) -> Any:
        """A write (POST, PUT, PATCH as merge patch); ApiException on any status >= 400."""
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        method, url, headers, data, post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        self.requests += 1
        response = self.api_client.call_api(method, url, headers, data, post, _request_timeout=(5, timeout))
        try:
            status = response.status
            payload = response.read()
        finally:
            response.response.release_conn()
        if status >= 400:
            raise ApiException(status=status, reason=payload[:300].decode(errors="replace"))
        return json.loads(payload) if payload else None

    def stream(self, path: str, query: Mapping[str, str | int], timeout: float) -> Any:
        response = self._request(path, query, timeout)
        if response.status >= 400:
            try:
                data = response.read()
            finally:
                response.response.release_conn()
            self._raise_for(response.status, path, data)
        return response.response

    def _raise_for(self, status: int, path: str, data: bytes) -> None:
        if status == 410:
            raise Gone(path)
        reason = data[:200].decode(errors="replace")
        if status == 401:
            cause = f"unauthorised (401: the credentials were refused) listing {path}"
            raise ClusterUnauthorised(self.server, f"{cause}: {_status_message(data)}")
        if status == 403:
            raise ClusterForbidden(self.server, f"forbidden (403) listing {path}: {_status_message(data)}")
        if status >= 400:
            raise ApiException(status=status, reason=reason)

    def _request(self, path: str, query: Mapping[str, str | int], timeout: float) -> Any:
        method, url, headers, body, post = self.api_client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        self.requests += 1
        try:
            return self.api_client.call_api(method, url, headers, body, post, _request_timeout=(5, timeout))
        except urllib3.exceptions.HTTPError as exc:
            raise ClusterUnreachable(self.server, _network_cause(exc)) from exc


def _status_message(data: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else the body's start."""
    try:
        message = json.loads(data).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else data[:200].decode(errors="replace").strip() or "no message"


def _network_cause(exc: Exception) -> str:
    # urllib3 wraps the socket error (refused, unresolvable, TLS) in MaxRetryError.reason.
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "CERTIFICATE_VERIFY_FAILED",
    ):
        if marker in text:
            return f"unreachable ({marker})"
    return f"unreachable ({type(reason).__name__}: {text[:200]})"


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, in_cluster: bool = False
) -> client.ApiClient:
    """A client for ``kubeconfig`` (a path, or a KUBECONFIG-style list) and ``context``, or the pod's own.

    Raises ClusterConfigError naming the file and what is wrong with it.
    """
    configuration = client.Configuration()
    if in_cluster:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise ClusterConfigError(
                "in-cluster config", f"not running in a Kubernetes pod ({exc})"
            ) from None
        return client.ApiClient(configuration)
    if not kubeconfig:
        raise ClusterConfigError("kubeconfig", "no kubeconfig given")
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except Exception as exc:  # the loader raises ConfigException, YAML, type and key errors alike
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ClusterConfigError(kubeconfig, f"not a usable kubeconfig: {detail}") from None
    return client.ApiClient(configuration)


def _iter_list(kube: KubeClient, resource: Resource) -> Iterator[tuple[list[Any], str]]:
    """Pages of items, and the list's resourceVersion once the last page is read."""
    query: dict[str, str | int] = {"limit": PAGE_SIZE.get(resource.kind, DEFAULT_PAGE_SIZE)}
    while True:
        page = kube.get(resource.path, query, timeout=60)
        metadata = page.get("metadata") or {}
        yield page.get("items") or [], str(metadata.get("resourceVersion") or "")
        token = metadata.get("continue")
        if not token:
            return
        query["continue"] = token


def list_into(kube: KubeClient, resource: Resource, inventory: Inventory, catalog: Catalog) -> str:
    """Replace ``resource``'s objects in ``inventory`` with a fresh list; returns its resourceVersion."""
    summaries = []
    version = ""
    for items, page_version in _iter_list(kube, resource):
        version = page_version
        for item in items:
            summary = summarize(resource.group, resource.kind, item, catalog)
            if summary is not None:
                summaries.append(summary)
    inventory.replace_all(resource.ref_kind, summaries)
    return version


def crd_serves(inventory: Inventory, name: str, version: str) -> bool:
    crd = inventory.crd(name)
    return crd is not None and version in crd.served


class WatchedState:
    """A ClusterState that follows the cluster: ready once every watched type has been listed."""

    # Retries stop growing at 5 s: a stale view means wrong verdicts, so resync within seconds of the
    # API server's return; 4 failing requests per 2.5-5 s per replica cost it nothing.
    def __init__(self, kube: KubeClient, catalog: Catalog, backoff_max: float = 5.0) -> None:
        self.kube = kube
        self.catalog = catalog
        self.inventory = Inventory(catalog)
        self.backoff_max = backoff_max
        self.status = {r.ref_kind: WatchStatus(r) for r in RESOURCES}
        self._stop = threading.Event()
        self._streams: dict[str, Any] = {}
        self.tracker: Any = None  # a ConflictTracker (state/conflicts.py) when serve tracks conflicts
        self.reporter: Any = None  # a PolicyReportWriter (state/policyreports.py) with --policy-reports

    @classmethod
    def connect(
        cls,
        catalog: Catalog,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
    ) -> WatchedState:
        return cls(KubeClient(load_api_client(kubeconfig, context, in_cluster)), catalog)

    @property
    def view(self) -> Inventory:
        return self.inventory

    def start(self) -> None:
        for status in self.status.values():
            thread = threading.Thread(
                target=self._run, args=(status,), name=f"crdguard-watch-{status.resource.name}", daemon=True
            )
            status.thread = thread
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for stream in list(self._streams.values()):
            # Shut the socket down rather than close() the response: close() waits for the lock the
            # watch thread holds while blocked in read(), i.e. until the API server next sends
            # something (minutes on a quiet watch), which held SIGTERM up past the grace period.
            sock = getattr(getattr(stream, "connection", None), "sock", None)
            try:
                if sock is not None:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # already closed: the thread is exiting anyway
                log.debug("shutting down a watch stream failed", exc_info=True)

    def readiness(self) -> tuple[bool, str]:
        # Ready after the first full list of every type whose CRD is present; afterwards it stays
        # ready while a watch reconnects: the last known state beats no answer (see docs).
        pending = [s.resource.name for s in self.status.values() if not s.synced and not s.waiting_for_crd]
        if pending:
            return False, "waiting for the first full list of: " + ", ".join(pending)
        return True, "synced"

    def describe(self) -> dict[str, Any]:
        now = time.time()
        return {
            "mode": "watch",
            "objects": self.inventory.counts(),
            "apiRequests": self.kube.requests,
            "watches": {
                s.resource.name: {
                    "synced": s.synced,
                    "connected": s.connected,
                    "waitingForCRD": s.waiting_for_crd,
                    "lists": s.lists,
                    "relistsAfterGone": s.relists_after_gone,
                    "errors": s.errors,
                    "events": s.events,
                    "lastError": s.last_error,
                    "secondsSinceLastSync": round(now - s.last_sync, 3) if s.last_sync else None,
                    "resourceVersion": s.resource_version,
                }
                for s in self.status.values()
            },
            **({"conflicts": self._conflicts()} if self.tracker is not None else {}),
            **({"policyReports": self.reporter.describe()} if self.reporter is not None else {}),
        }

    def _conflicts(self) -> list[dict[str, str]]:
        return [
            {
                "rule": c.rule.id,
                "component": c.release.component,
                "kind": c.release.source.kind,
                "namespace": c.release.source.namespace or "",
                "name": c.release.source.name,
                "crd": c.rule.crd,
            }
            for c in self.tracker.conflicts()
        ]

    # -- the watch loop -----------------------------------------------------------------
    def _run(self, status: WatchStatus) -> None:
        resource = status.resource
        failures = 0
        while not self._stop.is_set():
            if resource.crd and not crd_serves(self.inventory, resource.crd, resource.version):
                # Flux, Argo CD or k3s may be installed later: poll the CRD cache (no API calls)
                # until the CRD serves the version.
                status.waiting_for_crd = self.status[CRD_KIND].synced
                if status.synced:
                    self.inventory.replace_all(resource.ref_kind, [])  # the CRD went away
                self._stop.wait(0.5)
                continue
            try:
                status.resource_version = list_into(self.kube, resource, self.inventory, self.catalog)
                status.lists += 1
                status.synced, status.waiting_for_crd, status.connected = True, False, True
                status.last_sync = time.time()
                failures = 0
                self._watch(status)
            except Gone:
                status.relists_after_gone += 1
                log.info("watch of %s expired (410 Gone); relisting", resource.name)
                continue
            except Exception as exc:
                if self._stop.is_set():
                    return
                status.connected = False
                status.errors += 1
                status.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                failures += 1
                delay = min(self.backoff_max, 0.5 * 2 ** min(failures, 8)) * random.uniform(0.5, 1.0)
                log.warning("watch of %s failed (%s); retrying in %.1fs", resource.name, exc, delay)
                self._stop.wait(delay)

    def _watch(self, status: WatchStatus) -> None:
        resource = status.resource
        while not self._stop.is_set():
            if resource.crd and not crd_serves(self.inventory, resource.crd, resource.version):
                return
            server_timeout = random.randint(240, 360)
            stream = self.kube.stream(
                resource.path,
                {
                    "watch": "true",
                    "allowWatchBookmarks": "true",
                    "resourceVersion": status.resource_version,
                    "timeoutSeconds": server_timeout,
                },
                timeout=server_timeout + 30,
            )
            self._streams[resource.ref_kind] = stream
            try:
                for line in iter_resp_lines(stream):
                    if self._stop.is_set():
                        return
                    self._apply(status, json.loads(line))
            finally:
                self._streams.pop(resource.ref_kind, None)
                stream.release_conn()

    def _apply(self, status: WatchStatus, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(status.resource.path)
            raise ApiException(status=obj.get("code"), reason=str(obj.get("message"))[:200])
        metadata = obj.get("metadata") or {}
        if metadata.get("resourceVersion"):
            status.resource_version = metadata["resourceVersion"]
        status.last_sync = time.time()
        if kind == "BOOKMARK":
            return
        status.events += 1
        resource = status.resource
        if kind == "DELETED":
            namespace = None if resource.kind == CRD_KIND else metadata.get("namespace")
            self.inventory.remove(ObjectRef(resource.ref_kind, namespace, str(metadata.get("name") or "")))
            return
        summary = summarize(resource.group, resource.kind, obj, self.catalog)
        if summary is not None:
            self.inventory.upsert(summary)


def snapshot_objects(kube: KubeClient, catalog: Catalog) -> list[dict[str, Any]]:
    """One list of every watched type, whole objects (kind and apiVersion filled in): ``check``'s cluster.

    Read-only, the same paginated lists as the watches; types whose CRD is not served are skipped.
    """
    objects: list[dict[str, Any]] = []
    inventory = Inventory(catalog)  # only to learn which CRDs are served
    for resource in RESOURCES:
        if resource.crd and not crd_serves(inventory, resource.crd, resource.version):
            continue
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        listed = []
        for items, _ in _iter_list(kube, resource):
            for item in items:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", resource.kind)
                listed.append(item)
        if resource.kind == CRD_KIND:
            summaries = [summarize(resource.group, CRD_KIND, item, catalog) for item in listed]
            inventory.replace_all(CRD_KIND, [s for s in summaries if s is not None])
        objects.extend(listed)
    return objects


def snapshot_inventory(kube: KubeClient, catalog: Catalog) -> tuple[Inventory, list[str]]:
    """One list of every type, no watches: what ``crdguard audit`` reads.

    Returns the inventory and the types that could not be listed (403), with the reason; raises
    ClusterForbidden if none could, ClusterUnauthorised or ClusterUnreachable at once.
    """
    inventory = Inventory(catalog)
    unread: list[str] = []
    tried = 0
    for resource in RESOURCES:
        if resource.crd and not crd_serves(inventory, resource.crd, resource.version):
            continue
        tried += 1
        try:
            list_into(kube, resource, inventory, catalog)
        except ClusterForbidden as exc:
            unread.append(f"{resource.plural}.{resource.group or 'core'}: {exc.cause}")
    if unread and len(unread) == tried:
        raise ClusterForbidden(kube.server, "forbidden (403) to list every type: " + "; ".join(unread))
    return inventory, unread
