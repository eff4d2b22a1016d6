"""The hand-written corpus of bad HTTP input for POST /validate.

Every case names what it tries, carries the exact bytes (and headers), and the
HTTP statuses that are correct answers. A 5xx is never one of them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from helpers import admission_review, crd, deployment, helmrelease, helmrelease_chartref, ocirepository
from relkit.reviews import incident_review

JSON = {"Content-Type": "application/json"}
DEFAULT_LIMIT = int(3 * 1024 * 1024 * 1.1)  # crdguard serve --max-body-bytes default
DEPTH = 100_000


@dataclass(frozen=True)
class BadInput:
    group: str
    name: str
    body: bytes
    expect: frozenset[int]
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    chunked: bool = False  # send with Transfer-Encoding: chunked (no Content-Length)
    declared_length: int | None = None  # a Content-Length header that lies


OK_OR_BAD = frozenset({200, 400})
BAD = frozenset({400})


def _dump(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def templates() -> dict[str, dict[str, Any]]:
    """Well-formed reviews of every judged kind; each is the starting point of mutations."""
    return {
        "crd-update": incident_review("tmpl-crd"),
        "crd-create": admission_review(
            "CREATE", crd("backendtlspolicies.gateway.networking.k8s.io", {"v1": True, "v1alpha3": False})
        ),
        "deployment-create": admission_review(
            "CREATE", deployment("v2.1.1", env={"KGW_ENABLE_INFER_EXT": "true"})
        ),
        "helmrelease-create": admission_review(
            "CREATE", helmrelease("v2.0.4", values={"inferenceExtension": {"enabled": True}})
        ),
        "helmrelease-chartref": admission_review("CREATE", helmrelease_chartref("kgateway")),
        "ocirepository-update": admission_review("UPDATE", ocirepository("v2.1.1"), ocirepository("v2.0.4")),
        "crd-delete": admission_review(
            "DELETE", None, crd("backendtlspolicies.gateway.networking.k8s.io", {"v1alpha3": True})
        ),
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``node``, skipping the bodies of OpenAPI schemas (nothing reads them)."""
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "openAPIV3Schema":
                yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _set(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    copied = copy.deepcopy(document)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


WRONG_VALUES: dict[str, Any] = {
    "null": None,
    "bool": True,
    "int": 7,
    "float": 1.5,
    "string": "x",
    "list": ["x"],
    "object": {"x": 1},
}


def _type_name(value: Any) -> str:
    for name, sample in WRONG_VALUES.items():
        if value is None and sample is None:
            return name
        if type(value) is type(sample):
            return name
    return "?"


def wrong_types() -> Iterator[BadInput]:
    """Each field of each template, replaced by a value of every other JSON type."""
    for template_name, template in templates().items():
        for path in _paths(template):
            node = template
            for key in path:
                node = node[key]
            current = _type_name(node)
            for type_name, value in WRONG_VALUES.items():
                if type_name == current:
                    continue
                where = ".".join(str(p) for p in path)
                yield BadInput(
                    "wrong types",
                    f"{template_name}: {where} = {type_name}",
                    _dump(_set(template, path, value)),
                    OK_OR_BAD,
                )


def truncated() -> Iterator[BadInput]:
    for template_name in ("crd-update", "deployment-create"):
        body = _dump(templates()[template_name])
        cuts = sorted({0, 1, len(body) - 1, *range(0, len(body), max(1, len(body) // 40))})
        for cut in cuts:
            if cut < len(body):
                yield BadInput(
                    "truncated JSON", f"{template_name} cut at byte {cut} of {len(body)}", body[:cut], BAD
                )


def invalid_json() -> Iterator[BadInput]:
    valid = _dump(incident_review("invalid-json"))
    samples: dict[str, tuple[bytes, frozenset[int]]] = {
        "empty body": (b"", BAD),
        "whitespace only": (b" \n\t ", BAD),
        "lone brace": (b"{", BAD),
        "closing brace": (b"}", BAD),
        "missing value": (b'{"a":}', BAD),
        "trailing comma": (b'{"apiVersion":"admission.k8s.io/v1",}', BAD),
        "single quotes": (b"{'apiVersion':'admission.k8s.io/v1'}", BAD),
        "comment": (b'// comment\n{"a":1}', BAD),
        "two documents": (valid + valid, BAD),
        "garbage after document": (valid + b"garbage", BAD),
        "unquoted key": (b"{apiVersion:1}", BAD),
        "undefined": (b"undefined", BAD),
        "NUL byte": (b"\x00", BAD),
        "NUL inside string": (valid.replace(b"invalid-json", b"inv\x00alid"), BAD),
        "control char in string": (valid.replace(b"invalid-json", b"inv\x01alid"), BAD),
        "bad escape": (valid.replace(b"invalid-json", b"inv\\qalid"), BAD),
        "short unicode escape": (valid.replace(b"invalid-json", b"inv\\u12"), BAD),
        "JSON null": (b"null", BAD),
        "JSON number": (b"42", BAD),
        "JSON string": (b'"AdmissionReview"', BAD),
        "JSON array of reviews": (b"[" + valid + b"]", BAD),
        "empty object": (b"{}", BAD),
        "integer of 5000 digits": (b'{"apiVersion":' + b"9" * 5000 + b"}", BAD),
        # Valid JSON that Python's int parser refuses: in a field no rule reads, the narrow
        # decoder skips it (200); read in full it is a 400. Either is a clear answer, never a 500.
        "integer of 5000 digits in object": (
            valid.replace(b'"metadata":{', b'"x":' + b"1" * 5000 + b',"metadata":{', 1),
            OK_OR_BAD,
        ),
        "float 1e999 (overflows to inf)": (
            valid.replace(b'"metadata":{', b'"x":1e999,"metadata":{', 1),
            OK_OR_BAD,
        ),
        "UTF-8 BOM before a valid review": (b"\xef\xbb\xbf" + valid, OK_OR_BAD),
        "UTF-16 encoded review": (valid.decode().encode("utf-16"), OK_OR_BAD),
        "UTF-32 encoded review": (valid.decode().encode("utf-32"), OK_OR_BAD),
    }
    for name, (body, expect) in samples.items():
        yield BadInput("invalid JSON", name, body, expect)


def nan_values() -> Iterator[BadInput]:
    review = _dump(incident_review("nan"))
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        name = literal.decode()
        yield BadInput(
            "NaN and infinities", f"{name} as request.uid", review.replace(b'"nan"', literal, 1), BAD
        )
        yield BadInput(
            "NaN and infinities",
            f"{name} inside request.object",
            review.replace(b'"metadata":{', b'"x":' + literal + b',"metadata":{', 1),
            BAD,
        )
        yield BadInput("NaN and infinities", f"bare {name}", literal, BAD)


def deep_nesting() -> Iterator[BadInput]:
    yield BadInput("nesting 100,000 deep", "arrays", b"[" * DEPTH + b"]" * DEPTH, BAD)
    yield BadInput("nesting 100,000 deep", "objects", b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, BAD)
    yield BadInput("nesting 100,000 deep", "unclosed arrays", b"[" * DEPTH, BAD)
    review = _dump(incident_review("deep"))
    deep_object = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
    yield BadInput(
        "nesting 100,000 deep",
        "inside request.object.spec",
        review.replace(b'"spec":{', b'"spec":{"deep":' + deep_object + b",", 1),
        BAD,
    )
    yield BadInput(
        "nesting 100,000 deep",
        "as request.object.metadata.labels value",
        _dump(admission_review("CREATE", deployment("v2.1.1"))).replace(
            b'"labels":{', b'"labels":{"deep":' + b"[" * DEPTH + b"]" * DEPTH + b",", 1
        ),
        BAD,
    )
    # Just under what the decoder accepts: parsed, then walked by the rules.
    for depth in (500, 900):
        yield BadInput(
            "nesting 100,000 deep",
            f"{depth} deep as a label value (decodable)",
            _dump(admission_review("CREATE", deployment("v2.1.1"))).replace(
                b'"labels":{', b'"labels":{"deep":' + b"[" * depth + b"]" * depth + b",", 1
            ),
            OK_OR_BAD,
        )


def duplicate_keys() -> Iterator[BadInput]:
    review = _dump(incident_review("dup-first"))
    yield BadInput(
        "duplicate keys",
        "request.uid twice",
        review.replace(b'"uid":"dup-first"', b'"uid":"dup-first","uid":"dup-second"', 1),
        OK_OR_BAD,
    )
    yield BadInput(
        "duplicate keys",
        "apiVersion twice, second unknown",
        review.replace(
            b'"apiVersion":"admission.k8s.io/v1"',
            b'"apiVersion":"admission.k8s.io/v1","apiVersion":"x/v9"',
            1,
        ),
        OK_OR_BAD,
    )
    yield BadInput(
        "duplicate keys", "request twice, second empty", review[:-1] + b',"request":{}}', OK_OR_BAD
    )
    yield BadInput(
        "duplicate keys",
        "operation twice",
        review.replace(b'"operation":"UPDATE"', b'"operation":"UPDATE","operation":"DELETE"', 1),
        OK_OR_BAD,
    )


def invalid_utf8() -> Iterator[BadInput]:
    review = _dump(incident_review("utf8"))
    samples = {
        "0xFF byte in a string": b"\xff",
        "overlong encoding of '/'": b"\xc0\xaf",
        "truncated 3-byte sequence": b"\xe2\x82",
        "raw UTF-16 surrogate": b"\xed\xa0\x80",
        "code point above U+10FFFF": b"\xf4\x90\x80\x80",
        "lone continuation byte": b"\x80",
    }
    for name, raw in samples.items():
        yield BadInput(
            "invalid UTF-8",
            f"{name} in request.uid",
            review.replace(b'"utf8"', b'"utf8' + raw + b'"', 1),
            BAD,
        )
        yield BadInput(
            "invalid UTF-8",
            f"{name} in request.object",
            review.replace(b'"metadata":{', b'"x":"' + raw + b'","metadata":{', 1),
            BAD,
        )
    # Escaped lone surrogates are valid JSON text but not valid Unicode.
    yield BadInput(
        "invalid UTF-8",
        "escaped lone surrogate in uid",
        review.replace(b'"utf8"', b'"\\ud800"', 1),
        OK_OR_BAD,
    )
    yield BadInput(
        "invalid UTF-8",
        "escaped lone surrogate in object name",
        review.replace(b'"name":"backendtlspolicies', b'"name":"\\udfffbackendtlspolicies', 1),
        OK_OR_BAD,
    )


def unknown_versions() -> Iterator[BadInput]:
    for api_version in (
        "admission.k8s.io/v2",
        "admission.k8s.io/v1beta2",
        "admission.k8s.io/v1alpha1",
        "v1",
        "",
        "ADMISSION.K8S.IO/V1",
    ):
        review = incident_review("version")
        review["apiVersion"] = api_version
        yield BadInput("unknown AdmissionReview version", repr(api_version), _dump(review), BAD)
    for kind in ("AdmissionReviewList", "admissionreview", "Status"):
        review = incident_review("kind")
        review["kind"] = kind
        yield BadInput("unknown AdmissionReview version", f"kind {kind}", _dump(review), BAD)
    review = incident_review("no-request")
    review["response"] = review.pop("request")
    yield BadInput("unknown AdmissionReview version", "response instead of request", _dump(review), BAD)
    for operation in ("PATCH", "create", "", "CONNECT"):
        review = incident_review("op")
        review["request"]["operation"] = operation
        yield BadInput(
            "unknown AdmissionReview version",
            f"operation {operation!r}",
            _dump(review),
            OK_OR_BAD if operation == "CONNECT" else BAD,
        )


def content_types() -> Iterator[BadInput]:
    body = _dump(incident_review("ctype"))
    for value in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "application/yaml",
        "",
    ):
        yield BadInput(
            "content type",
            repr(value),
            body,
            frozenset({415}),
            headers={"Content-Type": value} if value else {},
        )
    yield BadInput(
        "content type",
        "application/json; charset=utf-8",
        body,
        frozenset({200}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    yield BadInput(
        "content type",
        "APPLICATION/JSON",
        body,
        frozenset({200}),
        headers={"Content-Type": "APPLICATION/JSON"},
    )


def sizes(limit: int = DEFAULT_LIMIT) -> Iterator[BadInput]:
    """The biggest single string that fits, one byte more, and bodies far over the limit."""
    for where in ("request.uid", "an annotation of request.object"):
        review = (
            incident_review("SIZE")
            if where == "request.uid"
            else admission_review("CREATE", deployment("v2.1.1"))
        )
        if where != "request.uid":
            review["request"]["object"]["metadata"]["annotations"] = {"big": "SIZE"}
        envelope = len(_dump(review)) - len("SIZE")
        for extra, expect in ((0, frozenset({200})), (1, frozenset({413}))):
            filler = "x" * (limit - envelope + extra)
            body = _dump(review).replace(b"SIZE", filler.encode(), 1)
            assert len(body) == limit + extra
            label = "exactly the limit" if not extra else "limit + 1 byte"
            yield BadInput(
                "large bodies", f"one string in {where}, body {label} ({len(body)} B)", body, expect
            )
    big = b'{"x":"' + b"y" * (limit * 3) + b'"}'
    yield BadInput("large bodies", f"{len(big) // 2**20} MiB body with Content-Length", big, frozenset({413}))
    yield BadInput(
        "large bodies",
        f"{len(big) // 2**20} MiB body, chunked, no Content-Length",
        big,
        frozenset({413}),
        chunked=True,
    )
    yield BadInput(
        "large bodies",
        "Content-Length of 10 GB, 2-byte body",
        b"{}",
        frozenset({413}),
        declared_length=10 * 2**30,
    )


def corpus(limit: int = DEFAULT_LIMIT) -> list[BadInput]:
    return [
        *truncated(),
        *invalid_json(),
        *deep_nesting(),
        *sizes(limit),
        *wrong_types(),
        *duplicate_keys(),
        *nan_values(),
        *invalid_utf8(),
        *unknown_versions(),
        *content_types(),
    ]
