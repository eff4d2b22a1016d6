"""Conflicts as ``wgpolicyk8s.io/v1alpha2`` PolicyReports, the format Kyverno, Falco and kube-bench share.

Each conflict is reported on the two objects a fix changes: in the PolicyReport
``crdguard`` of the namespace of the object that installs the controller
(its Deployment or HelmRelease), and in the ClusterPolicyReport ``crdguard``
on the CRD (cluster-scoped) that lacks what the controller reads. A namespace
without conflicts has no crdguard PolicyReport; the ClusterPolicyReport stays,
with a zero summary, so a dashboard can tell "no conflicts" from "not running".

Only the replica holding the Lease writes (``LeaderLease``); it lists the
reports it manages (by label) when it becomes leader and every ``resync_seconds``,
and otherwise writes only what differs from what it last wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.rules.catalog import Failure
from webhook.rules.engine import Conflict
from webhook.rules.messages import describe_conflict
from webhook.state.lease import LeaderLease
from webhook.state.watch import RESOURCES, KubeClient

log = logging.getLogger("crdguard.policyreports")

API_VERSION = "wgpolicyk8s.io/v1alpha2"
REPORT_NAME = "crdguard"
POLICY = "crdguard"
MANAGED_BY = {"app.kubernetes.io/managed-by": "crdguard"}
LABEL_SELECTOR = "app.kubernetes.io/managed-by=crdguard"
CRD_API_VERSION = "apiextensions.k8s.io/v1"
_API_VERSION_BY_KIND = {r.kind: f"{r.group}/{r.version}" if r.group else r.version for r in RESOURCES}

ReportKey = tuple[str, str]  # (namespace, "" for the ClusterPolicyReport; name)
ConflictKey = tuple[str, tuple[str, ...], str]


def severity(conflict: Conflict) -> str:
    """A controller that crashes, never gets ready or hangs is down: high; a feature off: medium."""
    return "medium" if conflict.rule.failure is Failure.FEATURE_OFF else "high"


def conflict_text(conflict: Conflict) -> str:
    """The conflict in one sentence pair: what needs what, and what the CRD serves now."""
    head, state = describe_conflict(conflict, 1, after_change=False).splitlines()[:2]
    return f"{head.removeprefix('[1] ')} {state.strip()} Run `crdguard audit` for the fix."


def properties(conflict: Conflict) -> dict[str, str]:
    source = conflict.release.source
    return {
        "component": conflict.release.component,
        "version": conflict.release.version_text,
        "crd": conflict.rule.crd,
        "needs": conflict.rule.needed_version or "",
        "served": ",".join(sorted(conflict.crd.served)) if conflict.crd else "",
        "crdInstalled": "true" if conflict.crd is not None else "false",
        "source": f"{source.kind}/{source.namespace}/{source.name}" if source.namespace else str(source),
    }


def source_reference(conflict: Conflict) -> dict[str, str]:
    source = conflict.release.source
    reference = {"apiVersion": _API_VERSION_BY_KIND.get(source.kind, ""), "kind": source.kind}
    if source.namespace:
        reference["namespace"] = source.namespace
    return reference | {"name": source.name}


def result(conflict: Conflict, resources: list[dict[str, str]], seen_at: int) -> dict[str, Any]:
    return {
        "policy": POLICY,
        "rule": conflict.rule.id,
        "category": "CRD compatibility",
        "source": "crdguard",
        "result": "fail",
        "severity": severity(conflict),
        "scored": True,
        "message": conflict_text(conflict),
        "resources": resources,
        "properties": properties(conflict),
        "timestamp": {"seconds": seen_at, "nanos": 0},
    }


def summary(results: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    for found in results:
        counts[found["result"]] += 1
    return counts


def report(namespace: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": REPORT_NAME, "labels": dict(MANAGED_BY)}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport" if namespace else "ClusterPolicyReport",
        "metadata": metadata,
        "results": results,
        "summary": summary(results),
    }


def desired_reports(
    conflicts: Iterable[Conflict], seen_at: Mapping[ConflictKey, int]
) -> dict[ReportKey, dict[str, Any]]:
    """Every report crdguard should hold for these conflicts (the ClusterPolicyReport always)."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    on_crds: list[dict[str, Any]] = []
    for conflict in conflicts:
        when = seen_at.get(conflict.key, 0)
        namespace = conflict.release.source.namespace
        if namespace:
            by_namespace.setdefault(namespace, []).append(
                result(conflict, [source_reference(conflict)], when)
            )
        crd = [{"apiVersion": CRD_API_VERSION, "kind": "CustomResourceDefinition", "name": conflict.rule.crd}]
        # A CRD that is absent is still what the fix installs: named in properties, no resource.
        on_crds.append(result(conflict, crd if conflict.crd is not None else [], when))
    reports = {(ns, REPORT_NAME): report(ns, results) for ns, results in sorted(by_namespace.items())}
    reports[("", REPORT_NAME)] = report("", on_crds)
    return reports


def _path(namespace: str, name: str = "") -> str:
    if namespace:
        collection = f"/apis/{API_VERSION}/namespaces/{namespace}/policyreports"
    else:
        collection = f"/apis/{API_VERSION}/clusterpolicyreports"
    return f"{collection}/{name}" if name else collection


def _content(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return (doc.get("results") or [], doc.get("summary"), {k: labels.get(k) for k in MANAGED_BY})


class PolicyReportWriter:
    """Keeps the reports equal to ``desired_reports(conflicts())`` while ``lease`` is held."""

    def __init__(
        self,
        kube: KubeClient,
        conflicts: Callable[[], list[Conflict]],
        synced: threading.Event,
        lease: LeaderLease,
        interval: float = 1.0,
        resync_seconds: float = 60.0,
    ) -> None:
        self.kube = kube
        self.conflicts = conflicts
        self.synced = synced
        self.lease = lease
        self.interval = interval
        self.resync_seconds = resync_seconds
        self.writes = 0
        self._live: dict[ReportKey, dict[str, Any]] | None = None  # None: list before writing
        self._listed_at = 0.0
        self._seen_at: dict[ConflictKey, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> dict[str, Any]:
        return {"leader": self.lease.is_leader, "identity": self.lease.identity, "writes": self.writes}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crdguard-policyreports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def reconcile(self) -> None:
        """One pass: nothing unless leader and the conflicts are computed; else write the differences."""
        if not self.lease.is_leader or not self.synced.is_set():
            self._live = None  # another replica may write meanwhile: list again before writing
            return
        if self._live is None or time.monotonic() - self._listed_at >= self.resync_seconds:
            self._live = self._list()
            self._listed_at = time.monotonic()
        conflicts = self.conflicts()
        now = int(time.time())
        self._seen_at = {c.key: self._seen_at.get(c.key, now) for c in conflicts}
        desired = desired_reports(conflicts, self._seen_at)
        live = self._live
        try:
            for key, doc in desired.items():
                current = live.get(key)
                if current is None:
                    live[key] = self.kube.send("POST", _path(key[0]), doc)
                elif _content(current) != _content(doc):
                    doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    live[key] = self.kube.send("PUT", _path(*key), doc)
                else:
                    continue
                self.writes += 1
                log.info(
                    "wrote %s %s: %d conflict(s)",
                    doc["kind"],
                    "/".join(filter(None, key)),
                    len(doc["results"]),
                )
            for key in [k for k in live if k not in desired]:
                self.kube.send("DELETE", _path(*key), None)
                del live[key]
                self.writes += 1
                log.info("deleted PolicyReport %s: no conflicts left there", "/".join(key))
        except ApiException:
            self._live = None  # changed by someone else (409) or gone (404): list again
            raise

    def _list(self) -> dict[ReportKey, dict[str, Any]]:
        live: dict[ReportKey, dict[str, Any]] = {}
        query = {"labelSelector": LABEL_SELECTOR}
        for path in (f"/apis/{API_VERSION}/policyreports", _path("")):
            for item in self.kube.get(path, query, timeout=30).get("items") or []:
                metadata = item.get("metadata") or {}
                live[(metadata.get("namespace") or "", metadata.get("name", ""))] = item
        return live

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except ApiException as exc:
                if exc.status == 404:
                    log.error("cannot write PolicyReports: are the wgpolicyk8s.io CRDs installed? (HTTP 404)")
                else:
                    log.error("cannot write PolicyReports: HTTP %s %s", exc.status, str(exc.reason)[:200])
                self._stop.wait(10 * self.interval)
            except Exception as exc:
                log.error("cannot write PolicyReports: %s", exc)
                self._stop.wait(10 * self.interval)
            self._stop.wait(self.interval)
