"""WebhookRegistration's decisions: the webhooks read from the file, the caBundle kept, and
whether shutting down leaves them registered. Its writes on the real API server are in
tests/e2e/test_install_safety.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.state.registration import (
    VWC_PATH,
    DesiredWebhooks,
    Peers,
    RegistrationError,
    WebhookRegistration,
)

NAME = "crdguard"
WEBHOOK = {
    "name": "crds.crdguard.io",
    "clientConfig": {"service": {"name": NAME, "namespace": "crdguard", "path": "/validate"}},
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
}


def config_text(**overrides: Any) -> str:
    doc = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [WEBHOOK],
    } | overrides
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a: [", "cannot read the webhook configuration", id="YAML that does not parse"),
        pytest.param("kind: ConfigMap\n", "expected one ValidatingWebhookConfiguration", id="another kind"),
        pytest.param(config_text(webhooks=[]), "at least one webhook", id="no webhooks"),
        pytest.param(config_text(metadata={}), "needs metadata.name", id="no name"),
    ],
)
def test_a_file_crdguard_cannot_register_is_refused_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(text)
    with pytest.raises(RegistrationError, match=message) as raised:
        DesiredWebhooks.from_file(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="cannot read"):
        DesiredWebhooks.from_file(tmp_path / "absent.yaml")


def test_the_webhooks_and_name_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(config_text())
    desired = DesiredWebhooks.from_file(path)
    assert (desired.name, desired.webhooks, desired.source) == (NAME, [WEBHOOK], str(path))


def with_ca(webhook: dict[str, Any], ca: str) -> dict[str, Any]:
    return webhook | {"clientConfig": webhook["clientConfig"] | {"caBundle": ca}}


@pytest.mark.parametrize(
    ("desired", "current", "expected_ca"),
    [
        pytest.param(WEBHOOK, [], None, id="nothing injected and none in the file: no caBundle"),
        pytest.param(WEBHOOK, [with_ca(WEBHOOK, "INJECTED")], "INJECTED", id="an injected caBundle is kept"),
        pytest.param(
            with_ca(WEBHOOK, "FILE"), [with_ca(WEBHOOK, "INJECTED")], "FILE", id="the file's caBundle wins"
        ),
        pytest.param(
            WEBHOOK,
            [with_ca(WEBHOOK | {"name": "other.crdguard.io"}, "INJECTED")],
            None,
            id="a caBundle of another webhook is not borrowed",
        ),
    ],
)
def test_ca_bundle_handling(
    desired: dict[str, Any], current: list[dict[str, Any]], expected_ca: str | None
) -> None:
    (merged,) = DesiredWebhooks(NAME, [desired]).merged_with(current)
    assert merged["clientConfig"].get("caBundle") == expected_ca
    assert {k: v for k, v in merged["clientConfig"].items() if k != "caBundle"} == WEBHOOK["clientConfig"]


class Cluster:
    """The configuration and the Service's EndpointSlices, as the registration reads and writes them."""

    def __init__(self, endpoints: list[dict[str, Any]]) -> None:
        self.config: dict[str, Any] = {"metadata": {"name": NAME}, "webhooks": []}
        self.slices = {"items": [{"endpoints": endpoints}]}
        self.slice_queries: list[Any] = []

    def get(self, path: str, query: Any, timeout: float) -> Any:
        if path == f"{VWC_PATH}/{NAME}":
            return copy.deepcopy(self.config)
        assert path == "/apis/discovery.k8s.io/v1/namespaces/crdguard/endpointslices"
        self.slice_queries.append(query)
        return self.slices

    def send(self, method: str, path: str, body: Any, timeout: float = 10) -> Any:
        assert (method, path) == ("PUT", f"{VWC_PATH}/{NAME}")
        self.config = copy.deepcopy(body)
        return body


OWN_IP = "10.0.0.1"


def endpoint(ip: str, ready: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": {"ready": ready}}


@pytest.mark.parametrize(
    ("endpoints", "kept"),
    [
        pytest.param([endpoint(OWN_IP, True)], False, id="the last replica removes the webhooks"),
        pytest.param(
            [endpoint(OWN_IP, True), endpoint("10.0.0.2", True)],
            True,
            id="another ready replica keeps them registered",
        ),
        pytest.param(
            [endpoint(OWN_IP, True), endpoint("10.0.0.2", False)],
            False,
            id="another replica that is not ready does not count",
        ),
        pytest.param([], False, id="no endpoints at all removes them"),
    ],
)
def test_shutdown_removes_the_webhooks_unless_another_replica_is_ready(
    endpoints: list[dict[str, Any]], kept: bool
) -> None:
    cluster = Cluster(endpoints)
    registration = WebhookRegistration(
        cluster,  # type: ignore[arg-type]
        DesiredWebhooks(NAME, [WEBHOOK]),
        ready=lambda: True,
        peers=Peers("crdguard", NAME, OWN_IP),
    )
    registration.reconcile()
    assert cluster.config["webhooks"] == [WEBHOOK]
    registration.stop()
    assert cluster.config["webhooks"] == ([WEBHOOK] if kept else [])
    assert cluster.slice_queries == [{"labelSelector": f"kubernetes.io/service-name={NAME}"}]


def test_a_replica_that_never_registered_writes_nothing_on_shutdown() -> None:
    cluster = Cluster([])
    cluster.config["webhooks"] = [WEBHOOK]  # registered by another replica
    registration = WebhookRegistration(cluster, DesiredWebhooks(NAME, [WEBHOOK]), ready=lambda: False)  # type: ignore[arg-type]
    registration.stop()
    assert cluster.config["webhooks"] == [WEBHOOK]
