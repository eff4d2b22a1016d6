"""The narrow decoder must give every review exactly the answer the full JSON parse gives."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    KGATEWAY_OCI,
    admission_review,
    application,
    argocd_source,
    configmap,
    deployment,
    flux_helmchart,
    gateway_api_bundle,
    helmrelease,
    helmrelease_chartref,
    inventory,
    k3s_helmchart,
    kgateway_crds,
    ocirepository,
)

from webhook.admission.app import ServiceConfig, judge, respond
from webhook.admission.review import parse_review
from webhook.admission.wire import NotNarrow, decode_narrow
from webhook.rules.catalog import Catalog
from webhook.state.files import StaticState

INFER = {"KGW_ENABLE_INFER_EXT": "true"}


def answers(body: bytes, config: ServiceConfig) -> tuple[bytes, bytes]:
    full = parse_review(json.loads(body))
    narrow = parse_review(decode_narrow(body.decode()))
    return respond(full, judge(full, config)), respond(narrow, judge(narrow, config))


def reviews(upstream: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """Every payload class the webhook sees, built from the real manifests."""
    old = {o["metadata"]["name"]: o for o in gateway_api_bundle(upstream, "v1.3.0", "experimental")}
    found: list[tuple[str, Mapping[str, Any]]] = []
    for version, channel in (("v1.4.0", "standard"), ("v1.4.0", "experimental"), ("v1.2.0", "experimental")):
        for obj in gateway_api_bundle(upstream, version, channel):
            name = obj["metadata"]["name"]
            found.append(
                (f"UPDATE {name} to {version} {channel}", admission_review("UPDATE", obj, old.get(name)))
            )
    for obj in kgateway_crds(upstream, "v2.1.1"):
        found.append((f"CREATE {obj['metadata']['name']}", admission_review("CREATE", obj)))
        found.append((f"DELETE {obj['metadata']['name']}", admission_review("DELETE", None, obj)))
    for version in ("v2.0.4", "v2.1.1", "v2.1.0-rc.1"):
        found.append((f"kgateway {version} Deployment", admission_review("CREATE", deployment(version))))
        found.append(
            (
                f"kgateway {version} Deployment with inference",
                admission_review("CREATE", deployment(version, env=INFER)),
            )
        )
        found.append((f"kgateway {version} HelmRelease", admission_review("UPDATE", helmrelease(version))))
        found.append(
            (
                f"kgateway {version} HelmRelease with values",
                admission_review(
                    "CREATE",
                    helmrelease(version, values={"inferenceExtension": {"enabled": True}, "x": [1, {}]}),
                ),
            )
        )
        found.append(
            (f"kgateway {version} OCIRepository", admission_review("CREATE", ocirepository(version)))
        )
    found.append(("HelmRelease with a chartRef", admission_review("CREATE", helmrelease_chartref())))
    named_release = helmrelease("v2.0.4")
    named_release["spec"].update({"releaseName": "gw", "targetNamespace": "team-b", "storageNamespace": "x"})
    found.append(
        ("HelmRelease with releaseName and targetNamespace", admission_review("CREATE", named_release))
    )
    for version in ("v2.0.4", "v2.1.1"):
        values = f"image:\n  tag: {version}\ninferenceExtension:\n  enabled: true\n"
        found += [
            (f"Application {version}", admission_review("CREATE", application(version))),
            (
                f"Application {version} with values, valuesObject and parameters",
                admission_review(
                    "CREATE",
                    application(
                        "v2.1.1",
                        helm={
                            "values": values,
                            "valuesObject": {"image": {"tag": version}},
                            "parameters": [{"name": "inferenceExtension.enabled", "value": "true"}],
                            "releaseName": "gw",
                        },
                    ),
                ),
            ),
            (
                f"multi-source Application {version}",
                admission_review(
                    "UPDATE",
                    application(
                        sources=[
                            {"repoURL": "x", "ref": "v"},
                            argocd_source(version, chart=None, repo_url=KGATEWAY_OCI),
                        ]
                    ),
                    application("v2.1.1"),
                ),
            ),
            (f"k3s HelmChart {version}", admission_review("CREATE", k3s_helmchart(version))),
            (
                f"k3s HelmChart {version} with valuesContent and set",
                admission_review(
                    "CREATE",
                    k3s_helmchart("v2.1.1", values_content=values, extra={"set": {"image.tag": version}}),
                ),
            ),
            (
                f"Flux HelmChart {version}",
                admission_review("UPDATE", flux_helmchart(version), flux_helmchart()),
            ),
        ]
    args_deployment = deployment("v2.0.4")
    args_deployment["spec"]["template"]["spec"]["containers"][0].update(command=["/kgateway"], args=["--x=1"])
    found.append(("Deployment with command and args", admission_review("CREATE", args_deployment)))
    found.append(("HelmRelease with version *", admission_review("CREATE", helmrelease("*"))))
    found.append(("an unrelated ConfigMap", admission_review("CREATE", configmap())))
    found.append(("an unrelated Deployment", admission_review("CREATE", deployment(image="nginx:1.27"))))
    return found


@pytest.fixture(scope="module")
def config(upstream: Path, catalog: Catalog) -> ServiceConfig:
    state = [*gateway_api_bundle(upstream, "v1.4.0", "standard"), *kgateway_crds(upstream, "v2.0.4")]
    state += [deployment("v2.0.4", namespace="team-a", env=INFER), ocirepository("v2.0.4")]
    state += [flux_helmchart("v2.1.1"), helmrelease_chartref(kind="HelmChart", name="by-helmchart")]
    return ServiceConfig(catalog=catalog, state=StaticState(inventory(catalog, state), []))


def test_every_payload_class_gets_the_same_answer_from_both_decoders(
    upstream: Path, config: ServiceConfig
) -> None:
    cases = reviews(upstream)
    different = []
    decisions = set()
    for name, review in cases:
        full, narrow = answers(json.dumps(review).encode(), config)
        decisions.add(json.loads(full)["response"]["allowed"])
        if full != narrow:
            different.append(name)
    assert len(cases) > 40
    assert decisions == {True, False}  # the table exercises denials as well as allows
    assert different == []


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{", '{"apiVersion": NaN}', '{"request": []}', '{"request": {"object": 1}}', "[" * 100_000],
    ids=[
        "empty text is refused",
        "an array is refused",
        "truncated JSON is refused",
        "NaN is refused",
        "a request that is a list is refused",
        "an object that is a number is refused",
        "deep nesting is refused without a crash",
    ],
)
def test_the_narrow_decoder_hands_what_it_cannot_shape_to_the_full_parser(text: str) -> None:
    with pytest.raises(NotNarrow):
        decode_narrow(text)
