"""crdguard registers its own webhooks, and only while it can answer them.

The chart creates the ValidatingWebhookConfiguration empty (no webhooks: it
sends nothing, so it can lock nothing) and renders the webhooks crdguard should
register into a file. Once the cluster view has synced, ``WebhookRegistration``
writes those webhooks into the configuration, and keeps them there (a replica
that shut down may have removed them while this one still serves). On shutdown
it empties the configuration again, unless another replica behind the same
Service is ready to answer.

It never creates or deletes the configuration: Helm does both, so ``helm
uninstall`` removes it whether or not a pod ever started, and RBAC can name the
one object crdguard may touch (``create`` cannot be limited by name).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from webhook.state.watch import KubeClient

log = logging.getLogger("crdguard.registration")

VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


class RegistrationError(ValueError):
    """The webhook file is not a ValidatingWebhookConfiguration crdguard can register."""


@dataclass(frozen=True)
class DesiredWebhooks:
    name: str
    webhooks: list[dict[str, Any]]
    source: str = ""

    @classmethod
    def from_file(cls, path: str | Path) -> DesiredWebhooks:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            # One line: a YAML error spans several (the problem, then where it is).
            detail = " ".join(str(exc).split())
            raise RegistrationError(f"{path}: cannot read the webhook configuration: {detail}") from None
        if not isinstance(doc, Mapping) or doc.get("kind") != "ValidatingWebhookConfiguration":
            raise RegistrationError(f"{path}: expected one ValidatingWebhookConfiguration document")
        name = (doc.get("metadata") or {}).get("name")
        webhooks = doc.get("webhooks")
        if not isinstance(name, str) or not name or not isinstance(webhooks, list) or not webhooks:
            raise RegistrationError(f"{path}: needs metadata.name and at least one webhook")
        return cls(name, [dict(w) for w in webhooks], str(path))

    def merged_with(self, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The desired webhooks, keeping a caBundle another writer put in (cert-manager's cainjector)
        where the file has none: without it crdguard and cainjector would overwrite each other."""
        injected = {w.get("name"): (w.get("clientConfig") or {}).get("caBundle") for w in current}
        merged = []
        for webhook in self.webhooks:
            client = dict(webhook.get("clientConfig") or {})
            if "caBundle" not in client and injected.get(webhook.get("name")):
                client["caBundle"] = injected[webhook.get("name")]
            merged.append({**webhook, "clientConfig": client})
        return merged


@dataclass(frozen=True)
class Peers:
    """The Service whose ready endpoints, other than this pod, mean "another replica serves"."""

    namespace: str
    service: str
    own_ip: str


class WebhookRegistration:
    """Fills the configuration's webhooks once ``ready()`` holds; empties them on ``stop()``."""

    def __init__(
        self,
        kube: KubeClient,
        desired: DesiredWebhooks,
        ready: Callable[[], bool],
        peers: Peers | None = None,
        resync_seconds: float = 30.0,
    ) -> None:
        self.kube = kube
        self.desired = desired
        self.ready = ready
        self.peers = peers
        self.resync_seconds = resync_seconds
        self.registered = False
        self._stop = threading.Event()
        self._stopped = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return f"{VWC_PATH}/{self.desired.name}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crdguard-registration", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Idempotent: the first call unregisters (if this replica is the last one serving)."""
        if not self._stopped.acquire(blocking=False):
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.registered:
            return
        try:
            others = self._other_ready_endpoints()
        except Exception as exc:
            # Unknown: remove ours; a replica still serving writes them back within resync_seconds.
            log.warning("cannot tell whether another replica serves (%s); removing the webhooks", exc)
            others = 0
        if others:
            log.info(
                "leaving the webhooks of %s registered: %d other replica(s) ready", self.desired.name, others
            )
            return
        try:
            self._write([])
            log.info("removed the webhooks of ValidatingWebhookConfiguration %s", self.desired.name)
        except Exception as exc:
            log.error("could not remove the webhooks of %s: %s", self.desired.name, exc)

    def reconcile(self) -> None:
        """Make the configuration hold the desired webhooks (a GET, and a PUT only when they differ).

        The file is read again each time: a mounted ConfigMap changes in place (a new caBundle)."""
        if self.desired.source:
            try:
                self.desired = DesiredWebhooks.from_file(self.desired.source)
            except RegistrationError as exc:
                log.error("%s; keeping the webhooks read before", exc)
        current = self.kube.get(self.path, {}, timeout=10)
        wanted = self.desired.merged_with(current.get("webhooks") or [])
        if current.get("webhooks") != wanted:
            current["webhooks"] = wanted
            self.kube.send("PUT", self.path, current)
            log.info("registered the webhooks of ValidatingWebhookConfiguration %s", self.desired.name)
        self.registered = True

    def _write(self, webhooks: list[dict[str, Any]]) -> None:
        current = self.kube.get(self.path, {}, timeout=10)
        current["webhooks"] = webhooks
        self.kube.send("PUT", self.path, current)

    def _other_ready_endpoints(self) -> int:
        if self.peers is None:
            return 0
        slices = self.kube.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{self.peers.namespace}/endpointslices",
            {"labelSelector": f"kubernetes.io/service-name={self.peers.service}"},
            timeout=10,
        )
        ready = 0
        for endpoint_slice in slices.get("items") or []:
            for endpoint in endpoint_slice.get("endpoints") or []:
                conditions = endpoint.get("conditions") or {}
                if conditions.get("ready") and self.peers.own_ip not in (endpoint.get("addresses") or []):
                    ready += 1
        return ready

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.ready():
                self._stop.wait(0.2)
                continue
            try:
                self.reconcile()
            except ApiException as exc:
                # 404: the configuration was deleted (the escape hatch) or the chart is not installed;
                # 409: another replica wrote at the same time. Either way, retry soon.
                log.error(
                    "cannot register the webhooks of %s (HTTP %s): %s",
                    self.desired.name,
                    exc.status,
                    str(exc.reason)[:200],
                )
                self._stop.wait(min(2.0, self.resync_seconds))
                continue
            except Exception as exc:
                log.error("cannot register the webhooks of %s: %s", self.desired.name, exc)
                self._stop.wait(min(2.0, self.resync_seconds))
                continue
            self._stop.wait(self.resync_seconds)
