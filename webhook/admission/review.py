"""The AdmissionReview wire format: parse a request, build the response. No HTTP, no rules.

Two kinds of error stay apart (as in kopf and controller-runtime): a malformed
review is a :class:`ReviewError` (HTTP 400); a bad object is a verdict with
``allowed: false`` inside a well-formed response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.admission.wire import NotNarrow, decode_narrow
from webhook.rules.catalog import Catalog
from webhook.rules.engine import Change

SUPPORTED_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class ReviewError(ValueError):
    """A request that is not a usable AdmissionReview; the message says which field is wrong."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    api_version: str
    uid: str
    operation: str
    group: str
    version: str
    kind: str
    namespace: str | None
    name: str
    obj: Mapping[str, Any] | None
    old_obj: Mapping[str, Any] | None
    dry_run: bool

    def to_change(self, catalog: Catalog) -> Change:
        """The change as the rules see it: the one place request fields become a Change."""
        return Change.from_objects(
            self.operation,
            self.group,
            self.kind,
            self.namespace,
            self.name,
            self.obj,
            self.old_obj,
            catalog,
            self.dry_run,
        )


def _reject_constant(name: str) -> float:
    raise ReviewError(f"invalid JSON: {name} is not a JSON number")


_full_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def decode(body: bytes) -> Any:
    """The parsed review. Well-formed reviews take the narrow decoder; anything it refuses is
    decoded in full, so malformed input gets the precise error messages below."""
    try:
        # Strict UTF-8 first: json.loads(bytes) would guess UTF-16/32 and let encoded surrogates pass.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReviewError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return decode_narrow(text)
    except NotNarrow:
        pass
    try:
        return _full_decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise ReviewError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ReviewError("body is not acceptable JSON: nested too deeply") from None
    except ReviewError:
        raise
    except ValueError:
        # e.g. an integer longer than sys.get_int_max_str_digits(): a 400, never a 500.
        raise ReviewError("body is not acceptable JSON: a number is out of range") from None


def _field(mapping: Mapping[str, Any], key: str, kind: type, where: str, required: bool = True) -> Any:
    value = mapping.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{where}.{key} is required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        expected = {str: "a string", dict: "an object", bool: "a boolean"}[kind]
        raise ReviewError(f"{where}.{key} must be {expected}, got {type(value).__name__}")
    return value


def parse_review(document: Any) -> AdmissionRequest:
    if not isinstance(document, dict):
        raise ReviewError(f"an AdmissionReview must be a JSON object, got {type(document).__name__}")
    api_version = _field(document, "apiVersion", str, "review")
    if api_version not in SUPPORTED_API_VERSIONS:
        raise ReviewError(
            f"unsupported AdmissionReview apiVersion {api_version!r}; "
            f"supported: {', '.join(SUPPORTED_API_VERSIONS)}"
        )
    kind = _field(document, "kind", str, "review")
    if kind != "AdmissionReview":
        raise ReviewError(f"kind must be 'AdmissionReview', got {kind!r}")
    request = _field(document, "request", dict, "review")
    uid = _field(request, "uid", str, "request")
    if not uid:
        raise ReviewError("request.uid must not be empty")
    operation = _field(request, "operation", str, "request")
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    gvk = _field(request, "kind", dict, "request")
    group = _field(gvk, "group", str, "request.kind", required=False) or ""
    version = _field(gvk, "version", str, "request.kind")
    resource_kind = _field(gvk, "kind", str, "request.kind")
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        operation=operation,
        group=group,
        version=version,
        kind=resource_kind,
        namespace=_field(request, "namespace", str, "request", required=False) or None,
        name=_field(request, "name", str, "request", required=False) or "",
        obj=_field(request, "object", dict, "request", required=False),
        old_obj=_field(request, "oldObject", dict, "request", required=False),
        dry_run=bool(_field(request, "dryRun", bool, "request", required=False)),
    )


def build_response(
    request: AdmissionRequest,
    allowed: bool,
    message: str = "",
    warnings: list[str] | None = None,
    audit_annotations: Mapping[str, str] | None = None,
    internal_error: bool = False,
) -> bytes:
    """The one place a response is built: uid, apiVersion and kind always echo the request.

    A refusal is 403 Forbidden; ``internal_error`` makes it 500 InternalError, so the API server,
    its client and any check can tell a bug in crdguard from a conflict it found."""
    response: dict[str, Any] = {"uid": request.uid, "allowed": allowed}
    if not allowed:
        code, reason = (500, "InternalError") if internal_error else (403, "Forbidden")
        response["status"] = {"code": code, "reason": reason, "message": message}
    if warnings:
        response["warnings"] = warnings
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    review = {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}
    return json.dumps(review, separators=(",", ":")).encode()
