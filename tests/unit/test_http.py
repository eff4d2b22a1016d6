"""The HTTP service through httpx, as the API server talks to it: every bad input has a 4xx that says why."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from helpers import (
    BTP,
    REPO_ROOT,
    Obj,
    admission_review,
    configmap,
    crd,
    deployment,
    gateway_api_bundle,
    helmrelease,
    inventory,
    named,
)

from webhook.admission.app import DEFAULT_MAX_BODY, ServiceConfig, create_app
from webhook.admission.metrics_server import MetricsServer
from webhook.admission.tls import ReloadingTLS
from webhook.certs import make_certificates
from webhook.rules.catalog import Catalog, Enforcement
from webhook.rules.inventory import Inventory
from webhook.state.files import StaticState, inventory_from_files

DEMO = REPO_ROOT / "examples" / "demo"
JSON = {"Content-Type": "application/json"}
V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False})
V1ALPHA3_ONLY = crd(BTP, {"v1alpha3": True})


class RecordingState:
    """A ClusterState that records the lifespan calls and can report not ready."""

    def __init__(self, view: Inventory, ready: bool = True) -> None:
        self.view = view
        self.ready = ready
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def readiness(self) -> tuple[bool, str]:
        return self.ready, "synced" if self.ready else "waiting for the first list of CRDs"

    def describe(self) -> dict[str, Any]:
        return {"mode": "recording", "objects": self.view.counts()}


class Service:
    """httpx against the ASGI app in one event loop, inside the app's lifespan (as uvicorn runs it)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._runner = asyncio.Runner()
        self._lifespan: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crdguard")

    def __enter__(self) -> Service:
        self._runner.__enter__()
        self._runner.run(self._lifespan.__aenter__())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._runner.run(self._client.aclose())
        self._runner.run(self._lifespan.__aexit__(kind, error, tb))
        self._runner.__exit__(kind, error, tb)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self._client.request(method, path, **kwargs))

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def client_for(config: ServiceConfig) -> Iterator[Service]:
    with Service(create_app(config)) as client:
        yield client


@pytest.fixture
def demo(catalog: Catalog) -> Iterator[Service]:
    """The service over the demo cluster state: kgateway 2.0.4 and a v1alpha3-only BackendTLSPolicy CRD."""
    paths = [str(DEMO / "cluster")]
    yield from client_for(ServiceConfig(catalog, StaticState(inventory_from_files(paths, catalog), paths)))


def post(client: Service, review: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    body = review if isinstance(review, bytes) else json.dumps(review).encode()
    return client.post("/validate", content=body, headers=JSON if headers is None else headers)


# -- well-formed reviews ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "api_version",
    [
        pytest.param("admission.k8s.io/v1", id="a v1 review is answered in v1"),
        pytest.param("admission.k8s.io/v1beta1", id="a v1beta1 review is answered in v1beta1"),
    ],
)
@pytest.mark.parametrize(
    ("obj", "allowed"),
    [pytest.param(V1_ONLY, False, id="denied"), pytest.param(configmap(), True, id="allowed")],
)
def test_review_is_answered_in_its_version_with_the_uid(
    demo: Service, api_version: str, obj: Obj, allowed: bool
) -> None:
    uid = f"uid-{api_version[-7:]}-{allowed}"
    review = admission_review(
        "UPDATE", obj, V1ALPHA3_ONLY if obj is V1_ONLY else None, uid=uid, api_version=api_version
    )
    answer = post(demo, review)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["apiVersion"] == api_version and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == uid
    assert body["response"]["allowed"] is allowed
    if allowed:
        assert "status" not in body["response"]


def test_the_demo_review_is_denied_with_403_and_the_message(demo: Service) -> None:
    review = json.loads((DEMO / "review-backendtlspolicy-v1.json").read_text())
    answer = post(demo, review)
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith("crdguard denied UPDATE of CustomResourceDefinition " + BTP)
    assert "kgateway v2.0.4 in Deployment kgateway-system/kgateway" in message
    assert "{range .spec.versions[*]}{.name}={.served}" in message


class BrokenView:
    """A cluster view whose every lookup fails, as a bug in the rules would."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"broken view: {name}")


def test_an_internal_error_is_a_500_in_the_review_not_a_403(catalog: Catalog) -> None:
    state = RecordingState(inventory(catalog, [V1ALPHA3_ONLY]))
    state.view = BrokenView()  # type: ignore[assignment]
    for client in client_for(ServiceConfig(catalog, state)):
        answer = post(client, admission_review("UPDATE", V1_ONLY, V1ALPHA3_ONLY))
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 500,
        "reason": "InternalError",
        "message": "crdguard internal error; see the crdguard logs",
    }


@pytest.mark.parametrize("dry_run", [False, True], ids=["a real request", "a dry-run request"])
def test_dry_run_is_judged_like_a_real_request(demo: Service, dry_run: bool) -> None:
    answer = post(demo, admission_review("UPDATE", V1_ONLY, V1ALPHA3_ONLY, dry_run=dry_run)).json()[
        "response"
    ]
    assert answer["allowed"] is False and answer["status"]["code"] == 403


def test_existing_conflicts_come_back_as_warnings_and_audit_annotations(catalog: Catalog) -> None:
    state = RecordingState(inventory(catalog, [V1_ONLY, deployment("v2.0.4")]))
    for client in client_for(ServiceConfig(catalog, state)):
        response = post(client, admission_review("UPDATE", V1_ONLY, V1_ONLY)).json()["response"]
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning.startswith("crdguard: existing conflict: kgateway v2.0.4") and len(warning) < 120
    assert response["auditAnnotations"] == {
        "existing-conflicts": "kgateway-2.0-reads-backendtlspolicy-v1alpha3"
    }


def test_global_audit_mode_allows_and_records_the_conflict(catalog: Catalog) -> None:
    state = RecordingState(inventory(catalog, [V1ALPHA3_ONLY, deployment("v2.0.4")]))
    for client in client_for(ServiceConfig(catalog, state, enforcement=Enforcement.AUDIT)):
        response = post(client, admission_review("UPDATE", V1_ONLY, V1ALPHA3_ONLY)).json()["response"]
    assert response["allowed"] is True
    assert "warnings" not in response
    assert "kgateway-2.0-reads-backendtlspolicy-v1alpha3" in response["auditAnnotations"]["conflicts"]


def test_an_update_of_a_real_large_crd_fits_under_the_default_limit(upstream: Path, demo: Service) -> None:
    """The largest Gateway API CRD as object and oldObject, as the API server sends an UPDATE."""
    bundle = gateway_api_bundle(upstream, "v1.5.1", "experimental")
    largest = max(bundle, key=lambda o: len(json.dumps(o)))
    body = json.dumps(admission_review("UPDATE", largest, largest)).encode()
    assert 200_000 < len(body) < DEFAULT_MAX_BODY
    answer = post(demo, body)
    assert answer.status_code == 200 and answer.json()["response"]["allowed"] is True


def test_a_real_upstream_bundle_crd_is_judged(upstream: Path, demo: Service) -> None:
    incoming = named(gateway_api_bundle(upstream, "v1.4.0", "standard"), BTP)
    response = post(demo, admission_review("UPDATE", incoming, V1ALPHA3_ONLY)).json()["response"]
    assert response["allowed"] is False
    assert "[gateway.networking.k8s.io v1.4.0 standard channel]" in response["status"]["message"]


# -- malformed input: 400/413/415 with a JSON error that says what is wrong -------------------


def _review_with(**changes: Any) -> bytes:
    review = admission_review("CREATE", configmap())
    for path, value in changes.items():
        node = review
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value
    return json.dumps(review).encode()


_DROP = object()

BAD_INPUT = [
    (b"this is not json", 400, "body is not valid JSON", "a body that is not JSON"),
    (b"", 400, "body is not valid JSON", "an empty body"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "\xff"}', 400, "not valid UTF-8", "invalid UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply", "100,000 nested arrays"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "nested too deeply", "100,000 nested objects"),
    (b'{"apiVersion": NaN}', 400, "NaN is not a JSON number", "a NaN"),
    (b'{"apiVersion": -Infinity}', 400, "-Infinity is not a JSON number", "an infinity"),
    (b'{"apiVersion": ' + b"9" * 5000 + b"}", 400, "a number is out of range", "a 5000-digit integer"),
    (b"[]", 400, "must be a JSON object, got list", "a JSON array"),
    (b'"AdmissionReview"', 400, "must be a JSON object, got str", "a JSON string"),
    (_review_with(kind="AdmissionResponse"), 400, "kind must be 'AdmissionReview'", "the wrong kind"),
    (_review_with(kind=_DROP), 400, "review.kind is required", "no kind"),
    (
        _review_with(apiVersion="admission.k8s.io/v2"),
        400,
        "unsupported AdmissionReview apiVersion 'admission.k8s.io/v2'",
        "an unknown apiVersion",
    ),
    (_review_with(apiVersion=_DROP), 400, "review.apiVersion is required", "no apiVersion"),
    (_review_with(apiVersion=1), 400, "review.apiVersion must be a string, got int", "a numeric apiVersion"),
    (_review_with(request=_DROP), 400, "review.request is required", "no request"),
    (_review_with(request=[]), 400, "review.request must be an object, got list", "a request that is a list"),
    (_review_with(request__uid=_DROP), 400, "request.uid is required", "no uid"),
    (_review_with(request__uid=""), 400, "request.uid must not be empty", "an empty uid"),
    (_review_with(request__uid=42), 400, "request.uid must be a string, got int", "a numeric uid"),
    (_review_with(request__object="x"), 400, "request.object must be an object, got str", "a string object"),
    (_review_with(request__object=[1]), 400, "request.object must be an object, got list", "a list object"),
    (
        _review_with(request__oldObject=7),
        400,
        "request.oldObject must be an object, got int",
        "a numeric old",
    ),
    (
        _review_with(request__operation="PATCH"),
        400,
        "request.operation must be one of",
        "an unknown operation",
    ),
    (_review_with(request__operation=_DROP), 400, "request.operation is required", "no operation"),
    (_review_with(request__kind=_DROP), 400, "request.kind is required", "no request kind"),
    (
        _review_with(request__kind="ConfigMap"),
        400,
        "request.kind must be an object, got str",
        "a string kind",
    ),
    (_review_with(request__kind__kind=_DROP), 400, "request.kind.kind is required", "a kind without kind"),
    (
        _review_with(request__dryRun="yes"),
        400,
        "request.dryRun must be a boolean, got str",
        "a string dryRun",
    ),
    (_review_with(request__dryRun=1), 400, "request.dryRun must be a boolean, got int", "a numeric dryRun"),
    (_review_with(request__namespace=3), 400, "request.namespace must be a string, got int", "a numeric ns"),
    (_review_with(request__name=True), 400, "request.name must be a string, got bool", "a boolean name"),
]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [pytest.param(b, s, e, id=f"{i} is answered {s}") for b, s, e, i in BAD_INPUT],
)
def test_bad_input_is_a_4xx_that_says_what_is_wrong(
    demo: Service, body: bytes, status: int, error: str
) -> None:
    answer = post(demo, body)
    assert answer.status_code == status
    payload = answer.json()
    assert payload["status"] == status
    assert error in payload["error"], payload["error"]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        pytest.param({"Content-Type": "text/plain"}, "got 'text/plain'", id="text/plain is answered 415"),
        pytest.param(
            {"Content-Type": "application/yaml"}, "got 'application/yaml'", id="YAML is answered 415"
        ),
        pytest.param({}, "got ''", id="no Content-Type is answered 415"),
    ],
)
def test_wrong_content_type_is_415(demo: Service, headers: dict[str, str], error: str) -> None:
    answer = post(demo, admission_review("CREATE", configmap()), headers=headers)
    assert answer.status_code == 415
    assert "Content-Type must be application/json" in answer.json()["error"]
    assert error in answer.json()["error"]


def test_content_type_parameters_are_accepted(demo: Service) -> None:
    answer = post(
        demo, admission_review("CREATE", configmap()), {"Content-Type": "application/json; charset=utf-8"}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("limit", "size", "status"),
    [
        pytest.param(2048, 2049, 413, id="one byte over a small limit is answered 413"),
        pytest.param(
            DEFAULT_MAX_BODY, DEFAULT_MAX_BODY + 1, 413, id="one byte over the default limit is answered 413"
        ),
        pytest.param(4096, 4096, 200, id="a body of exactly the limit is judged"),
    ],
)
def test_body_over_the_limit_is_413(catalog: Catalog, limit: int, size: int, status: int) -> None:
    review = admission_review("CREATE", configmap(data={"pad": ""}))
    body = json.dumps(review).encode()
    review["request"]["object"]["data"]["pad"] = "x" * (size - len(body))
    body = json.dumps(review).encode()
    assert len(body) == size
    state = RecordingState(inventory(catalog, []))
    for client in client_for(ServiceConfig(catalog, state, max_body_bytes=limit)):
        answer = post(client, body)
    assert answer.status_code == status
    if status == 413:
        assert answer.json()["error"] == f"body is larger than the limit of {limit} bytes"


def test_a_chunked_body_over_the_limit_is_413(catalog: Catalog) -> None:
    """Without a Content-Length the limit still holds, counted as the body streams in."""
    state = RecordingState(inventory(catalog, []))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"{" + b" " * 1000

    for client in client_for(ServiceConfig(catalog, state, max_body_bytes=4096)):
        answer = client.post("/validate", content=chunks(), headers=JSON)
        assert "content-length" not in answer.request.headers
    assert answer.status_code == 413


# -- the other endpoints ----------------------------------------------------------------------


def test_health_and_readiness(demo: Service) -> None:
    assert demo.get("/healthz").json() == {"status": "ok"}
    ready = demo.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_not_ready_state_is_503_with_the_reason(catalog: Catalog) -> None:
    state = RecordingState(inventory(catalog, []), ready=False)
    for client in client_for(ServiceConfig(catalog, state)):
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "reason": "waiting for the first list of CRDs"}


def test_the_lifespan_starts_and_stops_the_state(catalog: Catalog) -> None:
    state = RecordingState(inventory(catalog, []))
    for client in client_for(ServiceConfig(catalog, state)):
        assert state.calls == ["start"]
        client.get("/healthz")
    assert state.calls == ["start", "stop"]


@contextmanager
def metrics_port(client: Service, *, with_state: bool, tls: ReloadingTLS | None = None) -> Iterator[str]:
    """The metrics server ``crdguard serve`` runs beside the app, on a free loopback port."""
    config = client.app.state.config
    server = MetricsServer(
        client.app.state.metrics, "127.0.0.1", 0, state=config.state if with_state else None, tls=tls
    )
    server.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/metrics", id="the admission port does not serve /metrics"),
        pytest.param("/state", id="the admission port does not serve /state"),
        pytest.param("/docs", id="the admission port does not serve the OpenAPI UI"),
    ],
)
def test_the_admission_port_serves_only_validate_and_probes(demo: Service, path: str) -> None:
    assert demo.get(path).status_code == 404


def test_the_admission_port_lists_exactly_its_three_paths(demo: Service) -> None:
    paths = {getattr(route, "path", "") for route in demo.app.routes}
    assert paths == {"/validate", "/healthz", "/readyz"}


def test_state_endpoint_describes_the_view_when_enabled(demo: Service) -> None:
    with metrics_port(demo, with_state=True) as url:
        described = httpx.get(f"{url}/state").json()
    assert described["mode"] == "static"
    assert described["sources"] == [str(DEMO / "cluster")]
    assert described["objects"]["CustomResourceDefinition"] == 1
    assert described["objects"]["ComponentRelease"] == 1


def test_state_endpoint_is_off_unless_enabled(demo: Service) -> None:
    with metrics_port(demo, with_state=False) as url:
        assert httpx.get(f"{url}/state").status_code == 404
        assert httpx.get(f"{url}/metrics").status_code == 200


def test_metrics_count_decisions_by_rule_and_rejections(demo: Service) -> None:
    post(demo, admission_review("UPDATE", V1_ONLY, V1ALPHA3_ONLY))
    post(demo, admission_review("CREATE", configmap()))
    post(demo, b"not json")
    with metrics_port(demo, with_state=False) as url:
        answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    lines = answer.text.splitlines()
    rule = "kgateway-2.0-reads-backendtlspolicy-v1alpha3"
    assert f'crdguard_admission_reviews_total{{decision="denied",rule="{rule}"}} 1.0' in lines
    assert 'crdguard_admission_reviews_total{decision="allowed",rule="none"} 1.0' in lines
    assert 'crdguard_http_rejected_requests_total{status="400"} 1.0' in lines
    assert "crdguard_admission_review_duration_seconds_count 2.0" in lines


def test_metrics_port_serves_tls_with_a_certificate_directory(demo: Service, tmp_path: Path) -> None:
    bundle = make_certificates(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(bundle.tls_crt)
    (tmp_path / "tls.key").write_bytes(bundle.tls_key)
    (tmp_path / "ca.crt").write_bytes(bundle.ca_crt)
    with metrics_port(demo, with_state=False, tls=ReloadingTLS(str(tmp_path))) as url:
        answer = httpx.get(
            f"{url}/metrics", verify=ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        )
    assert answer.status_code == 200
    assert "crdguard_state_ready 1.0" in answer.text.splitlines()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/validate", 405, id="GET on /validate is 405"),
        pytest.param("POST", "/nowhere", 404, id="an unknown path is 404"),
    ],
)
def test_wrong_routes_are_not_500(demo: Service, method: str, path: str, status: int) -> None:
    assert demo.request(method, path).status_code == status


# -- HelmRelease values never leave the request -----------------------------------------------

CANARY = "canary-7f3e9b1c-do-not-log"


@pytest.mark.parametrize(
    ("review", "status"),
    [
        pytest.param(
            admission_review(
                "CREATE",
                helmrelease(
                    "v2.1.1",
                    values={
                        "inferenceExtension": {"enabled": True},
                        "auth": {"token": CANARY},
                        CANARY: CANARY,
                    },
                ),
            ),
            200,
            id="a denied HelmRelease with a secret in its values",
        ),
        pytest.param(
            admission_review("CREATE", helmrelease("v2.0.4", values={"token": CANARY})),
            200,
            id="an allowed HelmRelease with a secret in its values",
        ),
        pytest.param(
            admission_review("CREATE", helmrelease("*", values={"token": CANARY})),
            200,
            id="an unchecked HelmRelease with a secret in its values",
        ),
        pytest.param(
            {
                **admission_review("CREATE", helmrelease("v2.1.1", values={"token": CANARY})),
                "kind": "Wrong",
            },
            400,
            id="a malformed review carrying a HelmRelease with a secret",
        ),
    ],
)
def test_helmrelease_values_never_reach_logs_or_responses(
    demo: Service, caplog: pytest.LogCaptureFixture, review: Obj, status: int
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = post(demo, review)
    assert answer.status_code == status
    assert CANARY not in answer.text
    assert CANARY not in caplog.text
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in repr(record.args)
    if status == 200 and review["request"]["object"]["spec"]["chart"]["spec"]["version"] != "v2.0.4":
        decisions = [json.loads(r.getMessage()) for r in caplog.records if r.name == "crdguard.decision"]
        assert len(decisions) == 1
        assert decisions[0]["kind"] == "HelmRelease" and decisions[0]["uid"] == review["request"]["uid"]
