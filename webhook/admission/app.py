"""The HTTP service: FastAPI routes over the wire format and the rules.

The admission port serves only ``/validate``, ``/healthz`` and ``/readyz``; metrics and
``/state`` have their own port (``webhook.admission.metrics_server``). This layer alone knows
HTTP: it caps the body, checks Content-Type, answers
in the AdmissionReview version it was asked in, and turns malformed input
into 4xx answers that say what is wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from webhook.admission.review import AdmissionRequest, ReviewError, build_response, decode, parse_review
from webhook.catalogs import load_releases
from webhook.rules.catalog import Catalog, Enforcement
from webhook.rules.engine import Verdict, review_change
from webhook.rules.inventory import ClusterView
from webhook.rules.messages import audit_annotations, denial_message, warnings
from webhook.rules.plan import RecentFixes
from webhook.rules.releases import ReleaseSet

# The API server caps request bodies at 3 MiB; leave room for the review envelope.
DEFAULT_MAX_BODY = int(3 * 1024 * 1024 * 1.1)

decision_log = logging.getLogger("crdguard.decision")
log = logging.getLogger("crdguard")


class ClusterState(Protocol):
    """Where the cluster view comes from: static files, or watches kept by the state layer."""

    @property
    def view(self) -> ClusterView: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, str]: ...

    def describe(self) -> dict[str, Any]: ...


class Background(Protocol):
    """Work that runs beside the service (webhook registration, conflict tracking)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ServiceConfig:
    catalog: Catalog
    state: ClusterState
    enforcement: Enforcement = Enforcement.DENY
    max_body_bytes: int = DEFAULT_MAX_BODY
    body_timeout_seconds: float = 10.0
    background: tuple[Background, ...] = ()
    releases: Mapping[str, ReleaseSet] = field(default_factory=load_releases)
    recent_fixes: RecentFixes = field(default_factory=RecentFixes, compare=False)
    # Planning the fixes of a denial stops after this long: the API server waits (timeoutSeconds).
    plan_budget_seconds: float = 2.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reviews = Counter(
            "crdguard_admission_reviews",
            "AdmissionReviews answered, by decision and rule",
            ["decision", "rule"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crdguard_admission_review_duration_seconds",
            "Time to judge one AdmissionReview, body read to response built",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.rejected = Counter(
            "crdguard_http_rejected_requests",
            "Requests refused before judging, by HTTP status",
            ["status"],
            registry=self.registry,
        )


class StateCollector:
    """Exports what the cluster state reports about itself (sync, staleness, API requests)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        described = self.state.describe()
        objects = GaugeMetricFamily(
            "crdguard_state_objects", "Objects held in the cluster view", labels=["kind"]
        )
        for kind, count in described.get("objects", {}).items():
            objects.add_metric([kind], count)
        yield objects
        ready = GaugeMetricFamily("crdguard_state_ready", "1 when every watched type has synced once")
        ready.add_metric([], 1.0 if self.state.readiness()[0] else 0.0)
        yield ready
        if "apiRequests" in described:
            yield GaugeMetricFamily(
                "crdguard_kube_api_requests",
                "Requests made to the API server",
                value=described["apiRequests"],
            )
        if "conflicts" in described:
            labels = ["rule", "component", "namespace", "name", "crd"]
            conflicts = GaugeMetricFamily(
                "crdguard_conflicts",
                "1 per conflict present in the cluster now (crdguard audit)",
                labels=labels,
            )
            for found in described["conflicts"]:
                conflicts.add_metric([found[label] for label in labels], 1.0)
            yield conflicts
            yield GaugeMetricFamily(
                "crdguard_conflicts_total",
                "Conflicts present in the cluster now",
                value=len(described["conflicts"]),
            )
        if "policyReports" in described:
            reports = described["policyReports"]
            yield GaugeMetricFamily(
                "crdguard_policy_reports_leader",
                "1 while this replica holds the Lease and writes the PolicyReports",
                value=1.0 if reports["leader"] else 0.0,
            )
            yield CounterMetricFamily(
                "crdguard_policy_report_writes",
                "PolicyReports and ClusterPolicyReports created, updated or deleted by this replica",
                value=reports["writes"],
            )
        watches = described.get("watches", {})
        for name, help_text in (
            ("connected", "1 while the watch stream of a type is open"),
            ("synced", "1 once a type has been listed"),
            ("secondsSinceLastSync", "Seconds since the last list, event or bookmark of a type"),
            ("relistsAfterGone", "Relists after a 410 Gone"),
            ("errors", "Failed lists or watches"),
        ):
            family = GaugeMetricFamily(f"crdguard_watch_{_snake(name)}", help_text, labels=["resource"])
            for resource, info in watches.items():
                if info.get(name) is not None:
                    family.add_metric([resource], float(info[name]))
            yield family


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _error(status: int, message: str, metrics: Metrics) -> JSONResponse:
    metrics.rejected.labels(str(status)).inc()
    return JSONResponse({"error": message, "status": status}, status_code=status)


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body; BodyTooLarge once it grows past ``limit`` (never buffer an oversize body),
    TimeoutError when it trickles in slower than ``timeout`` allows in total."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    async with asyncio.timeout(timeout):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    return b"".join(chunks)


_REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "request"],
    "properties": {
        "apiVersion": {"type": "string", "enum": ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]},
        "kind": {"type": "string", "enum": ["AdmissionReview"]},
        "request": {
            "type": "object",
            "required": ["uid", "operation", "kind"],
            "properties": {
                "uid": {"type": "string", "minLength": 1},
                "operation": {"type": "string", "enum": ["CREATE", "UPDATE", "DELETE", "CONNECT"]},
                "kind": {
                    "type": "object",
                    "required": ["version", "kind"],
                    "properties": {
                        "group": {"type": "string"},
                        "version": {"type": "string"},
                        "kind": {"type": "string"},
                    },
                },
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "object": {"type": ["object", "null"]},
                "oldObject": {"type": ["object", "null"]},
                "dryRun": {"type": "boolean"},
            },
        },
    },
}


def judge(request: AdmissionRequest, config: ServiceConfig) -> Verdict:
    change = request.to_change(config.catalog)
    if change.operation == "DELETE" and change.old is None:
        # Without oldObject, the object being deleted is the one the cluster holds now.
        old = config.state.view.summary(change.ref)
        change = dataclasses.replace(change, old=old)
    return review_change(change, config.state.view, config.catalog, config.enforcement)


def respond(request: AdmissionRequest, verdict: Verdict, config: ServiceConfig | None = None) -> bytes:
    if verdict.allowed and not verdict.judged:
        return build_response(request, True)
    fixes = None
    if not verdict.allowed and config is not None and verdict.change is not None:
        # Denials are rare: planning the way out from the state before the change is worth its time.
        fixes = config.recent_fixes.fixes_for(
            verdict.change, config.state.view, config.catalog, config.releases, config.plan_budget_seconds
        )
    return build_response(
        request,
        verdict.allowed,
        "" if verdict.allowed else denial_message(verdict, fixes),
        warnings(verdict),
        audit_annotations(verdict),
    )


_encode_line = msgspec.json.Encoder().encode


def _log_decision(request: AdmissionRequest, verdict: Verdict, seconds: float) -> None:
    # Names and rule ids only: never object bodies, so HelmRelease values cannot leak here.
    # msgspec, not json.dumps: the line is written for nearly every review (a third of its cost).
    # A request may carry a lone surrogate (valid JSON escape, not encodable as UTF-8): msgspec
    # refuses those, so that rare line falls back to json.dumps, which escapes them.
    line = {
        "event": "admission",
        "uid": request.uid,
        "operation": request.operation,
        "kind": request.kind,
        "namespace": request.namespace,
        "name": request.name or (verdict.change.ref.name if verdict.change else ""),
        "dryRun": request.dry_run,
        "decision": verdict.decision,
        "rules": list(verdict.rule_ids),
        "conflicts": [
            {"rule": c.rule.id, "component": c.release.component, "source": str(c.release.source)}
            for c in verdict.denied + verdict.warned + verdict.audited
        ],
        "ms": round(seconds * 1000, 3),
    }
    try:
        decision_log.info(_encode_line(line).decode())
    except UnicodeEncodeError:
        decision_log.info(json.dumps(line, separators=(",", ":")))


def create_app(config: ServiceConfig) -> FastAPI:
    metrics = Metrics()
    metrics.registry.register(StateCollector(config.state))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        config.state.start()
        for task in config.background:
            task.start()
        try:
            yield
        finally:
            for task in reversed(config.background):
                task.stop()
            config.state.stop()

    app = FastAPI(
        title="crdguard",
        summary="Validating admission webhook for CRD / controller version conflicts",
        lifespan=lifespan,
        # Only the API server and the probes talk to this port; the schema stays in app.openapi().
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = metrics
    app.state.config = config

    @app.post(
        "/validate",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _REVIEW_SCHEMA}}}
        },
        responses={
            200: {"description": "AdmissionReview with the response"},
            400: {"description": "Malformed AdmissionReview"},
            408: {"description": "Body not received in time"},
            413: {"description": "Body over the limit"},
            415: {"description": "Content-Type is not application/json"},
        },
    )
    async def validate(request: Request) -> Response:
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return _error(415, f"Content-Type must be application/json, got {content_type!r}", metrics)
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_seconds)
        except BodyTooLarge:
            return _error(413, f"body is larger than the limit of {config.max_body_bytes} bytes", metrics)
        except TimeoutError:
            return _error(408, f"body not received within {config.body_timeout_seconds} seconds", metrics)
        try:
            review = parse_review(decode(body))
        except ReviewError as exc:
            return _error(400, str(exc), metrics)
        try:
            verdict = judge(review, config)
            payload = respond(review, verdict, config)
        except Exception:
            # A bug must not become a 500 the API server cannot explain: answer "errored".
            log.exception("internal error judging %s %s", review.kind, review.name)
            metrics.reviews.labels("errored", "none").inc()
            return Response(
                build_response(
                    review, False, "crdguard internal error; see the crdguard logs", internal_error=True
                ),
                media_type="application/json",
            )
        seconds = time.perf_counter() - started
        metrics.latency.observe(seconds)
        metrics.reviews.labels(verdict.decision, ",".join(verdict.rule_ids) or "none").inc()
        if verdict.judged:
            _log_decision(review, verdict, seconds)
        return Response(payload, media_type="application/json")

    @app.get("/healthz")
    def healthz() -> Mapping[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "The cluster state has not synced"}})
    def readyz() -> JSONResponse:
        ready, reason = config.state.readiness()
        return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)

    return app
