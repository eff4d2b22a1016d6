"""The admission decision, over the real upstream manifests and small built objects.

Expectations come from FACTS.md, written here as tables (``SERVED``, ``READS``):
never from what the code under test computes.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BCP,
    BTP,
    INFERENCEPOOL,
    INFERENCEPOOL_X,
    KGATEWAY_NS,
    Cluster,
    Obj,
    configmap,
    crd,
    deployment,
    gateway_api_bundle,
    helmrelease,
    helmrelease_chartref,
    kgateway_crds,
    named,
    ocirepository,
    upstream_objects,
    with_version,
)

from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog, Enforcement
from webhook.rules.engine import audit
from webhook.rules.messages import WARNING_LIMIT, audit_annotations, denial_message, warnings
from webhook.rules.objects import summarize_crd

BUNDLES = ["v1.2.0", "v1.3.0", "v1.4.0", "v1.4.1", "v1.5.1"]
CHANNELS = ["standard", "experimental"]

# FACTS.md, Gateway API table: the BackendTLSPolicy versions each bundle lists, with their served flag
# (None: the bundle has no BackendTLSPolicy CRD).
SERVED: dict[tuple[str, str], dict[str, bool] | None] = {
    ("v1.2.0", "standard"): None,
    ("v1.3.0", "standard"): None,
    ("v1.2.0", "experimental"): {"v1alpha3": True},
    ("v1.3.0", "experimental"): {"v1alpha3": True},
    ("v1.4.0", "standard"): {"v1": True, "v1alpha3": False},
    ("v1.4.1", "standard"): {"v1": True, "v1alpha3": False},
    ("v1.5.1", "standard"): {"v1": True, "v1alpha3": False},
    ("v1.4.0", "experimental"): {"v1": True, "v1alpha3": True},
    ("v1.4.1", "experimental"): {"v1": True, "v1alpha3": True},
    ("v1.5.1", "experimental"): {"v1": True, "v1alpha3": True},
}

# FACTS.md, kgateway table: the BackendTLSPolicy version each release reads.
READS = {"v2.0.4": "v1alpha3", "v2.1.1": "v1"}

# docs/evidence/kgateway.md: kgateway 2.1 pins an Istio CRD watcher whose minimumCRDVersions has
# backendtlspolicies v1.4.0, so its delayed BackendTLSPolicy informer never starts for a CRD of an
# older bundle (silently ignored); 2.0.4's pinned watcher has no such minimum.
WATCH_FROM_BUNDLE = {"v2.1.1": (1, 4, 0)}

IGNORED_RULE = "kgateway-2.1-ignores-backendtlspolicy-below-bundle-v1.4"

# A Gateway API CRD no catalogued controller reads.
UNREAD = "backendlbpolicies.gateway.networking.k8s.io"


def btp_state(bundle: tuple[str, str] | None, kgateway: str) -> str | None:
    """None when kgateway is fine with the bundle's BackendTLSPolicy CRD; "conflict" when its watch
    fails (a missing CRD is tolerated, a CRD without the read version served is not); "ignored"
    when the watch never starts because the CRD's bundle is below the watcher's minimum."""
    served = SERVED[bundle] if bundle else None
    if served is None or bundle is None:
        return None
    minimum = WATCH_FROM_BUNDLE.get(kgateway)
    if minimum is not None and tuple(int(p) for p in bundle[0].lstrip("v").split(".")) < minimum:
        return "ignored"
    return None if served.get(READS[kgateway], False) else "conflict"


def btp_conflict(bundle: tuple[str, str] | None, kgateway: str) -> bool:
    return btp_state(bundle, kgateway) == "conflict"


# -- what each upstream bundle serves ---------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "channel"),
    [pytest.param(v, c, id=f"Gateway API {v} {c} serves what FACTS says") for v in BUNDLES for c in CHANNELS],
)
def test_upstream_backendtlspolicy_served_versions(upstream: Path, version: str, channel: str) -> None:
    bundle = gateway_api_bundle(upstream, version, channel)
    found = [o for o in bundle if o["metadata"]["name"] == BTP]
    expected = SERVED[(version, channel)]
    if expected is None:
        assert found == []
        return
    (info,) = [summarize_crd(o) for o in found]
    assert info.served == frozenset(v for v, on in expected.items() if on)
    assert set(info.listed) == set(expected)
    assert info.bundle is not None and version in info.bundle and channel in info.bundle


@pytest.mark.parametrize(
    ("version", "channel"),
    [
        pytest.param(v, c, id=f"every CRD of Gateway API {v} {c} says its bundle")
        for v in BUNDLES
        for c in CHANNELS
    ],
)
def test_upstream_bundle_annotations_are_read(upstream: Path, version: str, channel: str) -> None:
    crds = [
        o for o in gateway_api_bundle(upstream, version, channel) if o["kind"] == "CustomResourceDefinition"
    ]
    assert len(crds) >= 5
    for obj in crds:
        info = summarize_crd(obj)
        assert info.bundle == f"gateway.networking.k8s.io {version} {channel} channel"
        assert info.served  # every Gateway API CRD serves something


def test_listed_is_not_served_in_v1_4_0_standard(upstream: Path) -> None:
    """The check the incident used (`{.spec.versions[*].name}`) lists v1alpha3; it is not served."""
    info = summarize_crd(named(gateway_api_bundle(upstream, "v1.4.0", "standard"), BTP))
    assert info.listed == ("v1", "v1alpha3")
    assert "v1alpha3" not in info.served
    assert info.describe_served() == "v1 (listed but not served: v1alpha3)"


# -- the transition matrix: bundle X installed, kgateway K running, bundle Y applied -----------


def kgateway_as_deployment(version: str) -> list[Obj]:
    return [deployment(version)]


def kgateway_as_labelled_deployment(version: str) -> list[Obj]:
    # A mirrored image of another name: only the chart's labels say what and which version it is.
    return [deployment(version, image=f"mirror.example.com/gw/controller:{version}")]


def kgateway_as_helmrelease(version: str) -> list[Obj]:
    return [helmrelease(version, namespace="flux-system")]


def kgateway_as_oci_chartref(version: str) -> list[Obj]:
    return [ocirepository(version, namespace="flux-system"), helmrelease_chartref(namespace="flux-system")]


INSTALLS: dict[str, Callable[[str], list[Obj]]] = {
    "Deployment": kgateway_as_deployment,
    "labelled Deployment": kgateway_as_labelled_deployment,
    "HelmRelease": kgateway_as_helmrelease,
    "HelmRelease chartRef OCIRepository": kgateway_as_oci_chartref,
}


def installed(
    upstream: Path, catalog: Catalog, bundle: tuple[str, str], kgateway: str, install: str
) -> Cluster:
    """Bundle X, the kgateway-crds of the same release as kgateway, and kgateway itself."""
    return Cluster(
        catalog,
        [
            *gateway_api_bundle(upstream, *bundle),
            *kgateway_crds(upstream, kgateway),
            *INSTALLS[install](kgateway),
        ],
    )


def _transition_rows() -> list[Any]:
    rows = []
    for before, after, kgateway in itertools.product(SERVED, SERVED, READS):
        was, now = btp_state(before, kgateway), btp_state(after, kgateway)
        denied = now == "conflict" and was != "conflict"
        warned = now == "ignored" and was != "ignored"
        verdict = "denied" if denied else "allowed with a warning" if warned else "allowed"
        rows.append(
            pytest.param(
                before,
                after,
                kgateway,
                denied,
                warned,
                id=f"kgateway {kgateway} on {' '.join(before)} then applying {' '.join(after)} is {verdict}",
            )
        )
    return rows


@pytest.mark.parametrize("install", list(INSTALLS))
@pytest.mark.parametrize(("before", "after", "kgateway", "denied", "warned"), _transition_rows())
def test_applying_a_gateway_api_bundle_over_another(
    upstream: Path,
    catalog: Catalog,
    install: str,
    before: tuple[str, str],
    after: tuple[str, str],
    kgateway: str,
    denied: bool,
    warned: bool,
) -> None:
    cluster = installed(upstream, catalog, before, kgateway, install)
    bundle = gateway_api_bundle(upstream, *after)
    verdicts = cluster.apply_all(bundle)
    assert {name for name, v in verdicts.items() if not v.allowed} == ({BTP} if denied else set())
    if BTP not in verdicts:
        return
    btp = verdicts[BTP]
    if denied:
        # kgateway 2.1 never reaches a denial on a released bundle: from v1.4.0 every bundle serves v1.
        assert {c.rule.id for c in btp.denied} == {"kgateway-2.0-reads-backendtlspolicy-v1alpha3"}
        assert len(btp.denied) == 1
    elif warned:
        assert {c.rule.id for c in btp.warned} == {IGNORED_RULE}
        assert any("BackendTLSPolicy" in w for w in warnings(btp))
    elif btp_state(before, kgateway) is not None and btp_state(before, kgateway) == btp_state(
        after, kgateway
    ):
        # Already broken and still broken: allowed, but said.
        assert btp.existing and any("existing conflict" in w for w in warnings(btp))
    else:
        assert not btp.existing and not warnings(btp)


# Named transitions from the incident and its fixes, with the verdict written out.
@pytest.mark.parametrize(
    ("before", "after", "kgateway", "allowed"),
    [
        pytest.param(
            ("v1.3.0", "experimental"),
            ("v1.4.0", "standard"),
            "v2.0.4",
            False,
            id="the incident: v1.4.0 standard over v1.3.0 experimental under kgateway 2.0.4 is denied",
        ),
        pytest.param(
            ("v1.2.0", "standard"),
            ("v1.4.0", "standard"),
            "v2.0.4",
            False,
            id="llm-d's script: v1.4.0 standard with no BackendTLSPolicy before, kgateway 2.0.4, is denied",
        ),
        pytest.param(
            ("v1.2.0", "standard"),
            ("v1.4.0", "experimental"),
            "v2.0.4",
            True,
            id="v1.4.0 experimental still serves v1alpha3 for kgateway 2.0.4 and is allowed",
        ),
        pytest.param(
            ("v1.2.0", "standard"),
            ("v1.4.0", "standard"),
            "v2.1.1",
            True,
            id="v1.4.0 standard under kgateway 2.1.1 is allowed",
        ),
        pytest.param(
            ("v1.4.0", "standard"),
            ("v1.3.0", "experimental"),
            "v2.1.1",
            True,
            id="rolling back to v1.3.0 experimental under kgateway 2.1.1 is allowed: it ignores that CRD",
        ),
        pytest.param(
            ("v1.4.0", "standard"),
            ("v1.2.0", "standard"),
            "v2.1.1",
            True,
            id="the team's workaround, v1.2.0 standard over v1.4.0, leaves the CRD in place and is allowed",
        ),
        pytest.param(
            ("v1.4.0", "experimental"),
            ("v1.5.1", "standard"),
            "v2.0.4",
            False,
            id="moving from experimental to v1.5.1 standard under kgateway 2.0.4 is denied",
        ),
    ],
)
def test_incident_transitions(
    upstream: Path,
    catalog: Catalog,
    before: tuple[str, str],
    after: tuple[str, str],
    kgateway: str,
    allowed: bool,
) -> None:
    cluster = installed(upstream, catalog, before, kgateway, "Deployment")
    verdicts = cluster.apply_all(gateway_api_bundle(upstream, *after))
    assert all(v.allowed for v in verdicts.values()) is allowed


# -- kgateway-crds and kgateway of different minor versions ----------------------------------


@pytest.mark.parametrize("install", list(INSTALLS))
@pytest.mark.parametrize(
    ("crds", "allowed"),
    [
        pytest.param("v2.0.4", False, id="kgateway 2.1.1 beside kgateway-crds 2.0.4 is denied"),
        pytest.param("v2.1.1", True, id="kgateway 2.1.1 beside kgateway-crds 2.1.1 is allowed"),
    ],
)
def test_kgateway_needs_kgateway_crds_of_its_minor(
    upstream: Path, catalog: Catalog, install: str, crds: str, allowed: bool
) -> None:
    cluster = Cluster(
        catalog, [*gateway_api_bundle(upstream, "v1.4.0", "standard"), *kgateway_crds(upstream, crds)]
    )
    verdicts = [cluster.apply(obj) for obj in INSTALLS[install]("v2.1.1")]
    assert all(v.allowed for v in verdicts) is allowed
    if not allowed:
        (denial,) = [v for v in verdicts if not v.allowed]
        (conflict,) = denial.denied
        assert conflict.rule.crd == BCP and conflict.crd is None


@pytest.mark.parametrize(
    ("running", "allowed"),
    [
        pytest.param(
            [deployment("v2.1.1")], False, id="deleting BackendConfigPolicy under kgateway 2.1.1 is denied"
        ),
        pytest.param(
            [helmrelease("v2.1.1")],
            False,
            id="deleting BackendConfigPolicy under a 2.1.1 HelmRelease is denied",
        ),
        pytest.param(
            [deployment("v2.0.4")], True, id="deleting BackendConfigPolicy under kgateway 2.0.4 is allowed"
        ),
        pytest.param([], True, id="deleting BackendConfigPolicy with no kgateway is allowed"),
    ],
)
def test_deleting_the_backendconfigpolicy_crd(
    upstream: Path, catalog: Catalog, running: list[Obj], allowed: bool
) -> None:
    cluster = Cluster(
        catalog,
        [*gateway_api_bundle(upstream, "v1.4.0", "standard"), *kgateway_crds(upstream, "v2.1.1"), *running],
    )
    verdict = cluster.delete(named(kgateway_crds(upstream, "v2.1.1"), BCP))
    assert verdict.allowed is allowed


def test_installing_the_missing_kgateway_crds_resolves_the_skew(upstream: Path, catalog: Catalog) -> None:
    cluster = Cluster(catalog, [*kgateway_crds(upstream, "v2.0.4"), deployment("v2.1.1")])
    assert [c.rule.crd for c in audit(cluster.view(), catalog)] == [BCP]
    verdicts = cluster.apply_all(kgateway_crds(upstream, "v2.1.1"))
    assert all(v.allowed and not warnings(v) for v in verdicts.values())
    assert [c.rule.crd for c in verdicts[BCP].resolved] == [BCP]
    assert audit(cluster.view(), catalog) == []


# -- the inference extension ------------------------------------------------------------------

GIE = "gateway-api-inference-extension/v1.2.0/manifests.yaml"
INFER_ON = {"KGW_ENABLE_INFER_EXT": "true"}


def without_served(obj: Obj, version: str) -> Obj:
    obj = copy.deepcopy(obj)
    for entry in obj["spec"]["versions"]:
        if entry["name"] == version:
            entry["served"] = False
    return obj


@pytest.mark.parametrize(
    ("kgateway", "pools", "allowed"),
    [
        pytest.param(
            deployment("v2.1.1", env=INFER_ON),
            "v1.2.0",
            True,
            id="GIE v1.2.0 serves inference.networking.k8s.io v1 for kgateway 2.1.1 and is allowed",
        ),
        pytest.param(
            deployment("v2.0.4", env=INFER_ON),
            "v1.2.0",
            True,
            id="GIE v1.2.0 still serves x-k8s v1alpha2 for kgateway 2.0.4 and is allowed",
        ),
        pytest.param(
            deployment("v2.1.1", env=INFER_ON),
            "v1 not served",
            False,
            id="an InferencePool CRD that stops serving v1 under kgateway 2.1.1 inference is denied",
        ),
        pytest.param(
            deployment("v2.1.1", env={"KGW_ENABLE_INFER_EXT": "false"}),
            "v1 not served",
            True,
            id="the same CRD is allowed when kgateway's inference extension is off",
        ),
        pytest.param(
            helmrelease("v2.1.1", values={"inferenceExtension": {"enabled": True}}),
            "v1 not served",
            False,
            id="a HelmRelease turning inference on is checked like the env flag",
        ),
        pytest.param(
            helmrelease("v2.1.1", values={"inferenceExtension": {"enabled": False}}),
            "v1 not served",
            True,
            id="a HelmRelease with inference off is not checked against InferencePool",
        ),
    ],
)
def test_inference_extension_crds(
    upstream: Path, catalog: Catalog, kgateway: Obj, pools: str, allowed: bool
) -> None:
    cluster = Cluster(
        catalog,
        [
            *gateway_api_bundle(upstream, "v1.4.0", "standard"),
            *kgateway_crds(upstream, kgateway_version(kgateway)),
            kgateway,
        ],
    )
    incoming = upstream_objects(upstream, GIE)
    if pools == "v1 not served":
        incoming = [without_served(named(incoming, INFERENCEPOOL), "v1")]
    verdicts = cluster.apply_all(incoming)
    assert all(v.allowed for v in verdicts.values()) is allowed
    if not allowed:
        assert [n for n, v in verdicts.items() if not v.allowed] == [INFERENCEPOOL]


def kgateway_version(obj: Obj) -> str:
    if obj["kind"] == "Deployment":
        return str(obj["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1])
    return str(obj["spec"]["chart"]["spec"]["version"])


def test_inference_crds_may_be_removed_while_kgateway_reads_them(upstream: Path, catalog: Catalog) -> None:
    """FACTS: a missing CRD is tolerated (the delayed informer leaves the feature off)."""
    pools = upstream_objects(upstream, GIE)
    cluster = Cluster(
        catalog, [*pools, *kgateway_crds(upstream, "v2.1.1"), deployment("v2.1.1", env=INFER_ON)]
    )
    for name in (INFERENCEPOOL, INFERENCEPOOL_X):
        assert cluster.delete(named(pools, name)).allowed


# -- invariants: a change that only removes conflicts is never denied -------------------------


@pytest.mark.parametrize(
    ("release", "upgrade"),
    [
        pytest.param(
            deployment("v2.0.4"),
            [with_version(deployment("v2.0.4"), "v2.1.1")],
            id="upgrading the Deployment",
        ),
        pytest.param(helmrelease("v2.0.4"), [helmrelease("v2.1.1")], id="upgrading the HelmRelease version"),
        pytest.param(
            [ocirepository("v2.0.4"), helmrelease_chartref()],
            [ocirepository("v2.1.1")],
            id="moving the OCIRepository tag of a chartRef HelmRelease",
        ),
    ],
)
def test_upgrading_kgateway_out_of_the_incident_is_allowed(
    upstream: Path, catalog: Catalog, release: Obj | list[Obj], upgrade: list[Obj]
) -> None:
    releases = release if isinstance(release, list) else [release]
    cluster = Cluster(
        catalog,
        [*gateway_api_bundle(upstream, "v1.4.0", "standard"), *kgateway_crds(upstream, "v2.1.1"), *releases],
    )
    assert len(audit(cluster.view(), catalog)) == 1
    for obj in upgrade:
        verdict = cluster.apply(obj)
        assert verdict.allowed and not warnings(verdict)
        assert [c.rule.id for c in verdict.resolved] == ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"]
    assert audit(cluster.view(), catalog) == []


def test_upgrading_kgateway_without_its_crds_trades_one_conflict_for_another(
    upstream: Path, catalog: Catalog
) -> None:
    """Not a pure removal: 2.1.1 with kgateway-crds 2.0.4 adds the BackendConfigPolicy conflict."""
    cluster = Cluster(
        catalog,
        [
            *gateway_api_bundle(upstream, "v1.4.0", "standard"),
            *kgateway_crds(upstream, "v2.0.4"),
            deployment("v2.0.4"),
        ],
    )
    verdict = cluster.apply(deployment("v2.1.1"))
    assert not verdict.allowed
    assert [c.rule.crd for c in verdict.denied] == [BCP]
    assert [c.rule.crd for c in verdict.resolved] == [BTP]


@pytest.mark.parametrize(
    "release",
    [
        pytest.param(deployment("v2.0.4"), id="deleting the kgateway Deployment"),
        pytest.param(helmrelease("v2.0.4"), id="deleting the kgateway HelmRelease"),
        pytest.param(ocirepository("v2.0.4"), id="deleting the OCIRepository a HelmRelease installs from"),
    ],
)
def test_uninstalling_kgateway_is_allowed(upstream: Path, catalog: Catalog, release: Obj) -> None:
    cluster = Cluster(
        catalog,
        [*gateway_api_bundle(upstream, "v1.4.0", "standard"), release, helmrelease_chartref(name="from-oci")],
    )
    assert audit(cluster.view(), catalog)
    verdict = cluster.delete(release)
    assert verdict.allowed and not warnings(verdict)
    assert audit(cluster.view(), catalog) == []


def test_reinstalling_a_channel_that_serves_v1alpha3_is_allowed(upstream: Path, catalog: Catalog) -> None:
    cluster = Cluster(catalog, [*gateway_api_bundle(upstream, "v1.4.0", "standard"), deployment("v2.0.4")])
    verdicts = cluster.apply_all(gateway_api_bundle(upstream, "v1.4.0", "experimental"))
    assert all(v.allowed and not warnings(v) for v in verdicts.values())
    assert len(verdicts[BTP].resolved) == 1
    assert audit(cluster.view(), catalog) == []


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda up: named(gateway_api_bundle(up, "v1.4.1", "standard"), BTP),
            id="re-applying a v1-only CRD",
        ),
        pytest.param(lambda up: with_version(deployment("v2.0.4"), "v2.0.5"), id="a kgateway patch upgrade"),
        pytest.param(
            lambda up: deployment("v2.0.4", env={"LOG_LEVEL": "debug"}), id="an unrelated Deployment edit"
        ),
    ],
)
def test_a_change_that_leaves_an_existing_conflict_is_allowed_with_a_warning(
    upstream: Path, catalog: Catalog, change: Callable[[Path], Obj]
) -> None:
    cluster = Cluster(catalog, [*gateway_api_bundle(upstream, "v1.4.0", "standard"), deployment("v2.0.4")])
    verdict = cluster.apply(change(upstream))
    assert verdict.allowed
    assert [c.rule.id for c in verdict.existing] == ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"]
    (warning,) = warnings(verdict)
    assert warning.startswith("crdguard: existing conflict: kgateway")
    assert "kgateway-system/kgateway" in warning
    assert audit_annotations(verdict)["existing-conflicts"] == "kgateway-2.0-reads-backendtlspolicy-v1alpha3"


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        pytest.param(KGATEWAY_NS, "kgateway", id="usual names"),
        pytest.param("n" * 63, "d" * 63, id="names at the 63-character limit"),
        pytest.param("team-" + "x" * 58, "kgateway-" + "y" * 54, id="long names"),
    ],
)
@pytest.mark.parametrize("kind", ["Deployment", "HelmRelease"])
def test_every_warning_stays_under_120_characters(
    catalog: Catalog, namespace: str, name: str, kind: str
) -> None:
    version = "v2.0.4-rc.1+build.20251213.very.long.metadata"
    release = (
        deployment(version, namespace=namespace, name=name)
        if kind == "Deployment"
        else helmrelease(version, namespace=namespace, name=name)
    )
    ranged = helmrelease(">=2.0.0 <2.1.0 " + "x" * 80, namespace=namespace, name=name[:60] + "-r")
    v1_only = crd(BTP, {"v1": True, "v1alpha3": False})
    # An existing conflict and an unchecked version ...
    broken = Cluster(catalog, [v1_only, release, ranged])
    verdicts = [broken.review("UPDATE", release), broken.review("UPDATE", v1_only)]
    # ... and a new conflict in warn mode.
    lenient = Cluster(catalog, [release])
    lenient.enforcement = Enforcement.WARN
    verdicts.append(lenient.apply(v1_only))
    found = [w for v in verdicts for w in warnings(v)]
    assert {w.split(":")[1].strip() for w in found} == {
        "existing conflict",
        "not checked, version not exact",
        "new conflict (warn)",
    }
    assert all(len(w) < 120 for w in found), [w for w in found if len(w) >= 120]
    assert all(len(w) <= WARNING_LIMIT for w in found)


# -- versions that are not one release --------------------------------------------------------


@pytest.mark.parametrize(
    "release",
    [
        pytest.param([helmrelease("*")], id="a HelmRelease at version star"),
        pytest.param([helmrelease(">=2.0.0")], id="a HelmRelease at a version range"),
        pytest.param([helmrelease("2.0")], id="a HelmRelease at a partial version"),
        pytest.param([helmrelease(None)], id="a HelmRelease without a version (Flux's default is star)"),
        pytest.param(
            [ocirepository(None, semver=">=2.0.0"), helmrelease_chartref()],
            id="an OCIRepository semver range",
        ),
        pytest.param(
            [ocirepository("v2.0.4", digest="sha256:" + "a" * 64), helmrelease_chartref()],
            id="an OCIRepository pinned by digest (which wins over its tag)",
        ),
        pytest.param([deployment("latest")], id="a Deployment running the latest tag"),
        pytest.param(
            [
                deployment(
                    "v2.0.4",
                    image="cr.kgateway.dev/kgateway-dev/kgateway@sha256:" + "b" * 64,
                    labels={"app.kubernetes.io/name": "kgateway"},
                )
            ],
            id="a Deployment running an image by digest without a chart label",
        ),
    ],
)
def test_a_version_that_is_not_exact_is_allowed_with_an_unchecked_warning(
    catalog: Catalog, release: list[Obj]
) -> None:
    cluster = Cluster(catalog, [crd(BTP, {"v1alpha3": True}), *release])
    verdict = cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False}))
    assert verdict.allowed
    assert not verdict.denied
    (warning,) = warnings(verdict)
    assert "not exact" in warning and "not checked" in warning
    assert len(warning) < 120


# -- enforcement modes ------------------------------------------------------------------------


def _rule_override(tmp_path: Path, enforcement: str) -> str:
    path = tmp_path / f"{enforcement}.yaml"
    path.write_text(
        f"""\
apiVersion: crdguard.io/v1alpha1
kind: CompatibilityCatalog
rules:
  - id: kgateway-2.0-reads-backendtlspolicy-v1alpha3
    component: kgateway
    versions: ">=2.0.0 <2.1.0"
    crd: {BTP}
    crdKind: BackendTLSPolicy
    requires: {{servedVersion: v1alpha3}}
    failure: never-ready
    enforcement: {enforcement}
    explanation: kgateway 2.0.x watches BackendTLSPolicy at v1alpha3.
"""
    )
    return str(path)


@pytest.mark.parametrize(
    ("rule_mode", "global_mode", "outcome"),
    [
        pytest.param(None, Enforcement.DENY, "denied", id="deny by default"),
        pytest.param(None, Enforcement.WARN, "warned", id="a global warn allows with a warning"),
        pytest.param(None, Enforcement.AUDIT, "audited", id="a global audit allows with an audit annotation"),
        pytest.param("warn", Enforcement.DENY, "warned", id="a rule in warn mode allows with a warning"),
        pytest.param(
            "audit", Enforcement.DENY, "audited", id="a rule in audit mode allows with an annotation"
        ),
        pytest.param(
            "audit", Enforcement.WARN, "audited", id="the weaker of rule audit and global warn wins"
        ),
        pytest.param(
            "warn", Enforcement.AUDIT, "audited", id="the weaker of rule warn and global audit wins"
        ),
        pytest.param("deny", Enforcement.DENY, "denied", id="a rule explicitly in deny mode denies"),
    ],
)
def test_enforcement_modes(
    upstream: Path, tmp_path: Path, rule_mode: str | None, global_mode: Enforcement, outcome: str
) -> None:
    loaded = load_catalog([_rule_override(tmp_path, rule_mode)] if rule_mode else [])
    cluster = Cluster(loaded, [deployment("v2.0.4")])
    cluster.enforcement = global_mode
    verdict = cluster.apply(named(gateway_api_bundle(upstream, "v1.4.0", "standard"), BTP))
    assert verdict.decision == outcome
    assert verdict.allowed is (outcome != "denied")
    rule = "kgateway-2.0-reads-backendtlspolicy-v1alpha3"
    if outcome == "warned":
        (warning,) = warnings(verdict)
        assert warning.startswith("crdguard: new conflict (warn): kgateway v2.0.4")
        assert "needs BackendTLSPolicy v1alpha3" in warning
    if outcome == "audited":
        assert warnings(verdict) == []
        annotations = audit_annotations(verdict)
        assert (
            rule in annotations["conflicts"]
            and "Deployment kgateway-system/kgateway" in annotations["conflicts"]
        )
    if outcome == "denied":
        assert [c.rule.id for c in verdict.denied] == [rule]


@pytest.mark.parametrize(
    ("operation", "obj"),
    [
        pytest.param("UPDATE", crd(BTP, {"v1": True, "v1alpha3": False}), id="a denied CRD update"),
        pytest.param("UPDATE", crd(BTP, {"v1": True, "v1alpha3": True}), id="an allowed CRD update"),
        pytest.param("CREATE", deployment("v2.1.1", name="second"), id="a denied Deployment create"),
        pytest.param("UPDATE", deployment("v2.0.4", env={"A": "b"}), id="an allowed Deployment update"),
    ],
)
def test_dry_run_gets_the_same_verdict(catalog: Catalog, operation: str, obj: Obj) -> None:
    cluster = Cluster(catalog, [crd(BTP, {"v1alpha3": True}), deployment("v2.0.4")])
    real = cluster.review(operation, obj)
    dry = cluster.review(operation, obj, dry_run=True)
    assert dry.change is not None and dry.change.dry_run
    assert (dry.allowed, dry.decision, warnings(dry)) == (real.allowed, real.decision, warnings(real))
    if not real.allowed:
        assert denial_message(dry) == denial_message(real)


# -- what the engine does not judge -----------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "obj"),
    [
        pytest.param("CREATE", configmap(), id="a ConfigMap is allowed at once"),
        pytest.param("UPDATE", crd(UNREAD, {"v1": False}), id="a CRD no rule reads is allowed at once"),
        pytest.param(
            "DELETE", crd(UNREAD, {"v1": True}), id="deleting a CRD no rule reads is allowed at once"
        ),
        pytest.param("DELETE", deployment("v2.0.4"), id="deleting a Deployment is allowed at once"),
        pytest.param("DELETE", helmrelease("v2.0.4"), id="deleting a HelmRelease is allowed at once"),
        pytest.param("CONNECT", deployment("v2.0.4"), id="a CONNECT is allowed at once"),
        pytest.param(
            "CREATE",
            {**deployment("v2.0.4"), "apiVersion": "extensions.example.com/v1"},
            id="a Deployment kind of another group is allowed at once",
        ),
    ],
)
def test_unrelated_changes_are_not_judged(catalog: Catalog, operation: str, obj: Obj) -> None:
    assert UNREAD not in catalog.crd_names
    # A cluster in conflict, so judging anything would at least produce a warning.
    cluster = Cluster(
        catalog, [crd(BTP, {"v1": True, "v1alpha3": False}), deployment("v2.0.4", name="other")]
    )
    verdict = cluster.review(operation, obj)
    assert verdict.allowed and not verdict.judged
    assert warnings(verdict) == [] and audit_annotations(verdict) == {}


def test_a_deployment_of_another_app_is_allowed_without_warnings(catalog: Catalog) -> None:
    cluster = Cluster(catalog, [crd(BTP, {"v1": True, "v1alpha3": False}), deployment("v2.0.4")])
    verdict = cluster.apply(
        deployment("1.27", name="nginx", namespace="web", image="nginx:1.27", labels={"app": "nginx"})
    )
    assert verdict.allowed and not verdict.existing and warnings(verdict) == []


def test_one_denial_lists_each_conflicting_release_once(catalog: Catalog) -> None:
    cluster = Cluster(
        catalog,
        [
            crd(BTP, {"v1alpha3": True}, bundle_version="v1.3.0"),
            deployment("v2.0.4"),
            helmrelease("v2.0.4", namespace="flux-system"),
            deployment("v2.1.1", name="canary"),
        ],
    )
    verdict = cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0"))
    assert not verdict.allowed
    assert sorted(str(c.release.source) for c in verdict.denied) == [
        "Deployment kgateway-system/kgateway",
        "HelmRelease flux-system/kgateway",
    ]
    # The canary reads v1 from bundle v1.4.0 on: its old finding (a v1.3.0 CRD it ignores) is resolved.
    assert [str(c.release.source) for c in verdict.resolved] == ["Deployment kgateway-system/canary"]


def test_a_chartref_to_an_oci_repository_in_another_namespace_is_followed(catalog: Catalog) -> None:
    cluster = Cluster(
        catalog,
        [
            crd(BTP, {"v1alpha3": True}),
            ocirepository("v2.0.4", namespace="flux-system"),
            helmrelease_chartref(namespace="apps", oci_namespace="flux-system"),
        ],
    )
    verdict = cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False}))
    assert not verdict.allowed
    (conflict,) = verdict.denied
    assert str(conflict.release.source) == "HelmRelease apps/kgateway"
    assert conflict.release.version_text == "v2.0.4"


def test_an_oci_repository_of_another_chart_is_not_kgateway(catalog: Catalog) -> None:
    cluster = Cluster(
        catalog,
        [
            crd(BTP, {"v1alpha3": True}),
            ocirepository("v2.0.4", url="oci://registry.example.com/charts/podinfo"),
            helmrelease_chartref(),
        ],
    )
    assert cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False})).allowed
