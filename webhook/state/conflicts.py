"""Conflicts kept current over the watch cache, and a Kubernetes Event when one appears.

Runs beside the watches: once the view has synced it computes every conflict
once (``ConflictSet.rebuild``), then re-checks only what the objects written
since the last pass touch (``Inventory.drain_touched`` -> ``ConflictSet.refresh``).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.rules.engine import Conflict
from webhook.rules.messages import describe_conflict
from webhook.rules.tracking import ConflictChanges, ConflictSet
from webhook.state.watch import RESOURCES, KubeClient

log = logging.getLogger("crdguard.conflicts")

REASON = "CRDConflict"
NO_CHANGES = ConflictChanges((), ())
_BY_KIND = {r.kind: r for r in RESOURCES}


def event_name(conflict: Conflict) -> str:
    """One name per conflict: replicas and restarts within the Event TTL (1 h) report it once."""
    key = f"{conflict.rule.id}|{conflict.release.source}|{conflict.rule.crd}"
    return f"{conflict.release.source.name}.crdguard-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class ConflictTracker:
    def __init__(self, kube: KubeClient, state: Any, interval: float = 1.0, events: bool = True) -> None:
        self.kube = kube
        self.state = state
        self.interval = interval
        self.events = events
        self.conflict_set = ConflictSet()
        self.events_created = 0
        self.synced = threading.Event()  # set once every conflict has been computed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def conflicts(self) -> list[Conflict]:
        return self.conflict_set.conflicts

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crdguard-conflicts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self.state.readiness()[0]:
            if self._stop.wait(0.2):
                return
        inventory, catalog = self.state.inventory, self.state.catalog
        inventory.drain_touched()
        changes = self.conflict_set.rebuild(inventory, catalog)
        self.synced.set()
        while True:
            for conflict in changes.appeared:
                log.warning(
                    "conflict: %s", describe_conflict(conflict, 1, after_change=False).splitlines()[0]
                )
                if self.events:
                    self._record_event(conflict)
            for conflict in changes.resolved:
                log.info("conflict resolved: rule %s, %s", conflict.rule.id, conflict.release.source)
            if self._stop.wait(self.interval):
                return
            touched = inventory.drain_touched()
            changes = self.conflict_set.refresh(inventory, catalog, touched) if touched else NO_CHANGES

    def _record_event(self, conflict: Conflict) -> None:
        source = conflict.release.source
        resource = _BY_KIND.get(source.kind)
        if resource is None or not source.namespace:
            return
        try:
            obj = self.kube.get(
                f"{_namespaced(resource.path, source.namespace)}/{source.name}", {}, timeout=10
            )
        except Exception as exc:
            log.warning("cannot read %s for its Event: %s", source, exc)
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = (
            f"{conflict.release.component} {conflict.release.version_text} needs "
            f"{conflict.rule.crd} {conflict.rule.served_version or ''}".rstrip()
            + f" (rule {conflict.rule.id}); run `crdguard audit` for the fix"
        )
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(conflict), "namespace": source.namespace},
            "involvedObject": {
                "apiVersion": f"{resource.group}/{resource.version}" if resource.group else resource.version,
                "kind": source.kind,
                "namespace": source.namespace,
                "name": source.name,
                "uid": (obj.get("metadata") or {}).get("uid", ""),
            },
            "reason": REASON,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "crdguard"},
            "reportingComponent": "crdguard",
            "reportingInstance": "crdguard",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.send("POST", f"/api/v1/namespaces/{source.namespace}/events", event)
            self.events_created += 1
        except ApiException as exc:
            if exc.status != 409:  # 409: already reported by another replica or an earlier run
                log.warning("cannot create the Event for %s: HTTP %s %s", source, exc.status, exc.reason)


def _namespaced(path: str, namespace: str) -> str:
    prefix, _, plural = path.rpartition("/")
    return f"{prefix}/namespaces/{namespace}/{plural}"
