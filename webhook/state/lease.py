"""One replica at a time: a ``coordination.k8s.io/v1`` Lease, held while renewed.

The same protocol as client-go's leader election, small enough to read: a
replica takes the Lease when it is free (no holder) or when its record has not
changed for ``lease_seconds`` *as this replica observed it* (its own monotonic
clock, so clock skew between nodes cannot shorten a lease); the holder renews
every ``retry_seconds`` and stops calling itself leader once it has failed to
renew for ``renew_deadline_seconds`` (< ``lease_seconds``), before any other
replica may take over. Writes carry the resourceVersion read, so two replicas
racing for a free Lease cannot both win. On ``stop()`` the holder hands the
Lease back (no holder), so another replica takes over at its next try instead
of waiting out the lease.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.state.watch import KubeClient

log = logging.getLogger("crdguard.lease")

# client-go's defaults: a holder that stops renewing loses the Lease within 15 s.
LEASE_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10.0
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class LeaseRef:
    namespace: str
    name: str

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    @property
    def collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"


def micro_time(now: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderLease:
    def __init__(
        self,
        kube: KubeClient,
        lease: LeaseRef,
        identity: str,
        lease_seconds: int = LEASE_SECONDS,
        renew_deadline_seconds: float = RENEW_DEADLINE_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < retry_seconds < renew_deadline_seconds < lease_seconds:
            raise ValueError("the Lease needs retry < renew deadline < lease duration")
        self.kube = kube
        self.lease = lease
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.transitions = 0  # times this replica became leader
        self._renewed_at: float | None = None  # when this replica last wrote itself as holder
        self._observed: tuple[str, float] | None = None  # (another holder's record, first seen at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.renew_deadline_seconds

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crdguard-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            current = self.kube.get(self.lease.path, {}, timeout=5)
            if (current.get("spec") or {}).get("holderIdentity") == self.identity:
                current["spec"] |= {"holderIdentity": None, "leaseDurationSeconds": 1}
                self.kube.send("PUT", self.lease.path, current)
                log.info("released Lease %s/%s", self.lease.namespace, self.lease.name)
        except Exception as exc:
            log.warning("cannot release Lease %s/%s (it expires by itself): %s", *self._where(), exc)

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; True when this replica holds the Lease afterwards."""
        now = self.clock()
        try:
            current = self.kube.get(self.lease.path, {}, timeout=5)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.kube.send("POST", self.lease.collection, self._lease_object())
            return self._became_holder(now)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and not self._expired(current, now):
            self._renewed_at = None
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != self.identity:
            transitions += 1
            spec["acquireTime"] = micro_time()
        spec |= {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": micro_time(),
            "leaseTransitions": transitions,
        }
        current["spec"] = spec
        self.kube.send("PUT", self.lease.path, current)  # 409 when another replica wrote first
        return self._became_holder(now)

    def _expired(self, current: dict[str, Any], now: float) -> bool:
        """Another holder's record unchanged for its lease duration, by this replica's clock."""
        record = str((current.get("metadata") or {}).get("resourceVersion", ""))
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
            return False
        duration = int((current.get("spec") or {}).get("leaseDurationSeconds") or self.lease_seconds)
        return now - self._observed[1] >= duration

    def _became_holder(self, now: float) -> bool:
        if self._renewed_at is None:
            self.transitions += 1
            log.info("holding Lease %s/%s as %s", *self._where(), self.identity)
        self._renewed_at = now
        self._observed = None
        return True

    def _where(self) -> tuple[str, str]:
        return self.lease.namespace, self.lease.name

    def _lease_object(self) -> dict[str, Any]:
        now = micro_time()
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.lease.name, "namespace": self.lease.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            was_leader = self.is_leader
            try:
                self.try_acquire_or_renew()
            except ApiException as exc:
                if exc.status != 409:
                    log.warning("Lease %s/%s: HTTP %s %s", *self._where(), exc.status, str(exc.reason)[:200])
            except Exception as exc:
                log.warning("Lease %s/%s: %s", *self._where(), exc)
            if was_leader and not self.is_leader:
                log.warning("lost Lease %s/%s", *self._where())
            self._stop.wait(self.retry_seconds)
