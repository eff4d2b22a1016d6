"""The denial a developer reads in ``kubectl apply`` output must say what to do, concretely."""

from __future__ import annotations

import pytest
from helpers import BCP, BTP, Cluster, Obj, crd, deployment, helmrelease, helmrelease_chartref, ocirepository

from webhook.catalogs import load_releases
from webhook.rules.catalog import Catalog
from webhook.rules.engine import Verdict, audit
from webhook.rules.messages import denial_message, describe_conflict, verify_command, warnings
from webhook.rules.plan import fixes_for

VERIFY_BTP = (
    "kubectl get crd backendtlspolicies.gateway.networking.k8s.io "
    """-o jsonpath='{range .spec.versions[*]}{.name}={.served}{" "}{end}'"""
)
VERIFY_BCP = (
    "kubectl get crd backendconfigpolicies.gateway.kgateway.dev "
    """-o jsonpath='{range .spec.versions[*]}{.name}={.served}{" "}{end}'"""
)

V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0", channel="standard")
V1ALPHA3_ONLY = crd(BTP, {"v1alpha3": True}, bundle_version="v1.3.0", channel="experimental")
BCP_CRD = crd(BCP, {"v1alpha1": True})


def _denied(catalog: Catalog, state: list[Obj], operation: str, obj: Obj) -> Verdict:
    cluster = Cluster(catalog, state)
    verdict = cluster.delete(obj) if operation == "DELETE" else cluster.apply(obj)
    assert not verdict.allowed, "the scenario must be a denial"
    assert verdict.change is not None and verdict.change.operation == operation
    return verdict


def _message(catalog: Catalog, state: list[Obj], operation: str, obj: Obj) -> str:
    """The denial with the fixes the planner computes from the state before the change."""
    verdict = _denied(catalog, state, operation, obj)
    assert verdict.change is not None
    fixes = fixes_for(verdict.change, Cluster(catalog, state).view(), catalog, load_releases())
    return denial_message(verdict, fixes)


SCENARIOS = [
    pytest.param(
        [V1ALPHA3_ONLY, deployment("v2.0.4")],
        "UPDATE",
        V1_ONLY,
        [
            "crdguard denied UPDATE of CustomResourceDefinition backendtlspolicies.gateway.networking.k8s.io",
            "kgateway v2.0.4 in Deployment kgateway-system/kgateway",
            "(image cr.kgateway.dev/kgateway-dev/kgateway:v2.0.4)",
            "needs BackendTLSPolicy gateway.networking.k8s.io/v1alpha3 to be served",
            "After this change, backendtlspolicies.gateway.networking.k8s.io "
            "[gateway.networking.k8s.io v1.4.0 standard channel] serves v1 (listed but not served: v1alpha3)",
            "--version v2.1.1 -n kgateway-system",
            "helm upgrade --install kgateway-crds oci://cr.kgateway.dev/kgateway-dev/charts/kgateway-crds",
            "gateway-api/releases/download/v1.4.0/experimental-install.yaml",
            "then retry this change",
            "Keep kgateway v2.0.4 and apply Gateway API v1.4.0 experimental instead",
            f"Verify: {VERIFY_BTP}",
            "kgateway-dev/kgateway@v2.0.4 internal/kgateway/extensions2/plugins/backendtlspolicy/plugin.go",
        ],
        id="the incident: v1.4.0 standard under kgateway 2.0.4",
    ),
    pytest.param(
        [V1_ONLY, BCP_CRD, deployment("v2.1.1")],
        "DELETE",
        BCP_CRD,
        [
            "crdguard denied deletion of CustomResourceDefinition backendconfigpolicies.gateway.kgateway.dev",
            "kgateway v2.1.1 in Deployment kgateway-system/kgateway",
            "needs the CRD backendconfigpolicies.gateway.kgateway.dev to be installed",
            "After this change, backendconfigpolicies.gateway.kgateway.dev is not installed",
            "charts/kgateway --version v2.0.4 -n kgateway-system",
            f"Verify: {VERIFY_BCP}",
        ],
        id="deleting the BackendConfigPolicy CRD under kgateway 2.1.1",
    ),
    pytest.param(
        [V1_ONLY],
        "CREATE",
        deployment("v2.1.1"),
        [
            "crdguard denied CREATE of Deployment kgateway-system/kgateway",
            "kgateway v2.1.1 in Deployment kgateway-system/kgateway",
            "needs the CRD backendconfigpolicies.gateway.kgateway.dev to be installed",
            "First upgrade kgateway-crds to v2.1.1, then retry this change",
            f"Verify: {VERIFY_BCP}",
        ],
        id="installing kgateway 2.1.1 without its kgateway-crds",
    ),
    pytest.param(
        [V1ALPHA3_ONLY],
        "CREATE",
        helmrelease("v2.1.1", namespace="flux-system", values={"replicaCount": 2}),
        [
            "crdguard denied CREATE of HelmRelease flux-system/kgateway",
            "kgateway v2.1.1 in HelmRelease flux-system/kgateway (chart kgateway)",
            # The v1.3.0 BackendTLSPolicy CRD is ignored by 2.1 (a warning); the missing
            # BackendConfigPolicy CRD is the one denial.
            "it would introduce 1 CRD conflict",
            "needs the CRD backendconfigpolicies.gateway.kgateway.dev to be installed",
            "charts/kgateway-crds --version v2.1.1",
        ],
        id="a Flux HelmRelease of kgateway 2.1.1 over v1alpha3-only CRDs",
    ),
    pytest.param(
        [V1_ONLY, crd(BCP, {"v1alpha1": True}), helmrelease_chartref(namespace="flux-system")],
        "CREATE",
        ocirepository("v2.0.4", namespace="flux-system"),
        [
            "crdguard denied CREATE of OCIRepository flux-system/kgateway",
            "kgateway v2.0.4 in HelmRelease flux-system/kgateway "
            "(OCIRepository flux-system/kgateway oci://cr.kgateway.dev/kgateway-dev/charts/kgateway)",
            "needs BackendTLSPolicy gateway.networking.k8s.io/v1alpha3 to be served",
        ],
        id="an OCIRepository that makes a chartRef HelmRelease install kgateway 2.0.4",
    ),
]


@pytest.mark.parametrize(("state", "operation", "obj", "fragments"), SCENARIOS)
def test_denial_message_says_what_why_and_how_to_fix(
    catalog: Catalog, state: list[Obj], operation: str, obj: Obj, fragments: list[str]
) -> None:
    message = _message(catalog, state, operation, obj)
    for fragment in fragments:
        assert fragment in message, f"missing {fragment!r} in:\n{message}"
    assert "${" not in message, "every template variable is filled"
    assert "Why: " in message and "Fix, one of (each path replayed step by step" in message
    # The misleading check from the incident must not be offered.
    assert "{.spec.versions[*].name}" not in message


def test_fix_commands_are_shown_as_commands_in_order(catalog: Catalog) -> None:
    message = _message(catalog, [V1ALPHA3_ONLY, deployment("v2.0.4")], "UPDATE", V1_ONLY)
    commands = [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("$ ")]
    # kgateway 2.1.1 ignores the v1.3.0 BackendTLSPolicy CRD (below bundle v1.4.0) rather than failing on
    # it, so path a) needs no intermediate Gateway API bundle before the upgrade.
    assert commands == [
        "helm upgrade --install kgateway-crds oci://cr.kgateway.dev/kgateway-dev/charts/kgateway-crds "
        "--version v2.1.1 -n kgateway-system",
        "helm upgrade kgateway oci://cr.kgateway.dev/kgateway-dev/charts/kgateway "
        "--version v2.1.1 -n kgateway-system --reset-then-reuse-values",
        "kubectl apply --server-side -f "
        "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.4.0/experimental-install.yaml",
    ]
    # kgateway-crds before kgateway: the CRDs must exist when the controller starts.
    assert message.index("kgateway-crds oci://") < message.index("kgateway oci://")


def test_one_block_per_conflicting_object(catalog: Catalog) -> None:
    state = [V1ALPHA3_ONLY, deployment("v2.0.4"), helmrelease("v2.0.4", namespace="flux-system")]
    message = _message(catalog, state, "UPDATE", V1_ONLY)
    assert "it would introduce 2 CRD conflicts" in message
    blocks = [line for line in message.splitlines() if line.startswith("[")]
    assert len(blocks) == 2
    assert sum("Deployment kgateway-system/kgateway" in b for b in blocks) == 1
    assert sum("HelmRelease flux-system/kgateway" in b for b in blocks) == 1
    assert message.count("Verify: ") == 2


def test_one_conflict_reads_singular(catalog: Catalog) -> None:
    message = _message(catalog, [V1ALPHA3_ONLY, deployment("v2.0.4")], "UPDATE", V1_ONLY)
    assert "it would introduce 1 CRD conflict with an installed controller." in message


@pytest.mark.parametrize(
    ("crd_name", "expected"),
    [
        pytest.param(
            BTP, VERIFY_BTP, id="the verify command shows the served flag of BackendTLSPolicy versions"
        ),
        pytest.param(BCP, VERIFY_BCP, id="the verify command shows the served flag of BackendConfigPolicy"),
    ],
)
def test_verify_command_shows_served_flags(crd_name: str, expected: str) -> None:
    assert verify_command(crd_name) == expected


def test_audit_description_speaks_of_now(catalog: Catalog) -> None:
    cluster = Cluster(catalog, [V1_ONLY, deployment("v2.0.4")])
    (conflict,) = audit(cluster.view(), catalog)
    text = describe_conflict(conflict, 1, after_change=False)
    assert "    Now, backendtlspolicies.gateway.networking.k8s.io" in text
    assert "After this change" not in text
    assert text.startswith("[1] kgateway v2.0.4 in Deployment kgateway-system/kgateway")


def test_rolling_back_to_v1alpha3_only_under_kgateway_2_1_warns_and_names_the_kind(catalog: Catalog) -> None:
    """kgateway 2.1 does not start its BackendTLSPolicy watch for a CRD below bundle v1.4.0
    (docs/evidence/kgateway.md): the rollback is allowed, and the warning says what is lost."""
    cluster = Cluster(catalog, [V1_ONLY, BCP_CRD, deployment("v2.1.1")])
    verdict = cluster.apply(V1ALPHA3_ONLY)
    assert verdict.allowed
    assert [c.rule.id for c in verdict.warned] == ["kgateway-2.1-ignores-backendtlspolicy-below-bundle-v1.4"]
    assert warnings(verdict) == [
        "crdguard: new conflict (warn): kgateway v2.1.1 (kgateway-system/kgateway) needs BackendTLSPolicy v1"
    ]
