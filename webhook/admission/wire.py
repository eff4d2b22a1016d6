"""A narrow decoder for AdmissionReviews: build only the fields crdguard reads.

An HTTPRoute CRD UPDATE is over half a megabyte of JSON, nearly all of it an
OpenAPI schema that no rule reads; building it into Python objects was the
largest single cost of a review. msgspec still checks the whole document's
syntax but materialises only the fields below: the review envelope, and of each
object what ``webhook.rules.objects`` summarises. Keep the two in step: a field
a rule starts reading must be added here (the tests compare both decoders on
every payload class).
"""

from __future__ import annotations

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
    command: Any = None
    args: Any = None


class _PodSpec(_Base):
    containers: list[_Container] | None = None


class _PodTemplate(_Base):
    spec: _PodSpec | None = None


class _CRDVersion(_Base):
    name: Any = None
    served: Any = None


class _Spec(_Base):
    versions: list[_CRDVersion] | None = None  # CustomResourceDefinition
    template: _PodTemplate | None = None  # Deployment
    # HelmRelease (an object: chart.spec.chart, .version), Flux and k3s HelmChart (a string).
    chart: Any = None
    chartRef: Any = None  # HelmRelease
    # HelmRelease, k3s HelmChart: the catalog's values paths are read from them.
    values: Any = None
    releaseName: Any = None  # HelmRelease
    targetNamespace: Any = None  # HelmRelease, k3s HelmChart
    storageNamespace: Any = None  # HelmRelease
    url: Any = None  # OCIRepository
    ref: Any = None  # OCIRepository
    version: Any = None  # Flux and k3s HelmChart
    repo: Any = None  # k3s HelmChart
    valuesContent: Any = None  # k3s HelmChart
    set: Any = None  # k3s HelmChart
    source: Any = None  # Argo CD Application
    sources: Any = None  # Argo CD Application
    destination: Any = None  # Argo CD Application


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


class NotNarrow(ValueError):
    """The document does not fit the narrow shape (or is not JSON): decode it in full instead."""


def decode_narrow(text: str) -> Any:
    """The review as plain data holding only what crdguard reads."""
    try:
        return msgspec.to_builtins(_decoder.decode(text))
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise NotNarrow(str(exc)) from None
