"""Proposal, not wired in: decode an AdmissionReview reading only the fields the rules read.

The profile of ``crdguard serve`` on the benchmark's mix shows ``json.loads`` of
the review as the largest single cost (a third of the samples): an HTTPRoute CRD
UPDATE is 611 KiB of JSON, almost all of it the OpenAPI schema, which no rule
reads. ``decode`` below (a drop-in for ``webhook.admission.review.decode``)
uses msgspec typed decoding: the JSON is still checked in full, but only the
fields that ``parse_review`` and ``webhook.rules.objects.summarize`` read are
built into Python objects; the result is the same plain dict shape, without the
rest. On anything the narrow types do not fit it falls back to ``json.loads``,
so odd input gets exactly today's handling and error messages.

Needs ``msgspec`` (a C extension with wheels). ``python -m bench.proposals.partial_decode
PAYLOAD_DIR CLUSTER_DIR`` checks that crdguard's answer to every payload is byte
for byte the same with either decoder, and times both.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec


class _Base(msgspec.Struct, omit_defaults=True):
    pass


class _Metadata(_Base):
    name: Any = None
    namespace: Any = None
    labels: Any = None
    annotations: Any = None


class _EnvVar(_Base):
    name: Any = None
    value: Any = None


class _Container(_Base):
    name: Any = None
    image: Any = None
    env: list[_EnvVar] | None = None


class _PodSpec(_Base):
    containers: list[_Container] | None = None


class _PodTemplate(_Base):
    spec: _PodSpec | None = None


class _CRDVersion(_Base):
    name: Any = None
    served: Any = None


class _ChartSpec(_Base):
    chart: Any = None
    version: Any = None


class _Chart(_Base):
    spec: _ChartSpec | None = None


class _Spec(_Base):
    versions: list[_CRDVersion] | None = None  # CustomResourceDefinition
    template: _PodTemplate | None = None  # Deployment
    chart: _Chart | None = None  # HelmRelease
    chartRef: Any = None  # HelmRelease
    values: Any = None  # HelmRelease: the catalog's feature paths are read from it
    url: Any = None  # OCIRepository
    ref: Any = None  # OCIRepository


class _Object(_Base):
    apiVersion: Any = None
    kind: Any = None
    metadata: _Metadata | None = None
    spec: _Spec | None = None


class _Request(_Base):
    uid: Any = None
    kind: Any = None
    operation: Any = None
    namespace: Any = None
    name: Any = None
    object: _Object | None = None
    oldObject: _Object | None = None
    dryRun: Any = None


class _Review(_Base):
    apiVersion: Any = None
    kind: Any = None
    request: _Request | None = None


_decoder = msgspec.json.Decoder(_Review)


def decode(body: bytes) -> Any:
    """The review as plain data, holding only what the rules read; ``json.loads`` semantics otherwise."""
    try:
        return msgspec.to_builtins(_decoder.decode(body))
    except (msgspec.ValidationError, msgspec.DecodeError):
        from webhook.admission.review import decode as full_decode

        return full_decode(body)  # the same errors (and messages) as today


def _check(payload_dir: Path, cluster_dir: Path) -> int:
    from webhook.admission import app
    from webhook.admission.review import decode as full_decode
    from webhook.admission.review import parse_review
    from webhook.catalogs import load_catalog
    from webhook.state.files import StaticState, inventory_from_files

    catalog = load_catalog()
    config = app.ServiceConfig(
        catalog=catalog, state=StaticState(inventory_from_files([str(cluster_dir)], catalog), [])
    )
    manifest = json.loads((payload_dir / "manifest.json").read_text())
    bodies = [(e["file"], (payload_dir / e["file"]).read_bytes()) for e in manifest["payloads"]]
    differ = 0
    for name, body in bodies:
        answers = []
        for decoder in (full_decode, decode):
            request = parse_review(decoder(body))
            answers.append(app.respond(request, app.judge(request, config)))
        if answers[0] != answers[1]:
            differ += 1
            print(f"DIFFERENT ANSWER: {name}")
    print(f"{len(bodies)} payloads, {differ} answers differ")
    for label, decoder in (("json.loads (today)", full_decode), ("partial (msgspec)", decode)):
        started = time.perf_counter()
        for _, body in bodies:
            for _ in range(20):
                decoder(body)
        per = (time.perf_counter() - started) / (20 * len(bodies)) * 1e6
        print(f"{label:20} {per:8.1f} us per payload (unweighted mean over the {len(bodies)} payloads)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(_check(Path(sys.argv[1]), Path(sys.argv[2])))
