"""ConflictSet: refreshed with the objects each change touched, it always equals ``audit``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import (
    BCP,
    BTP,
    crd,
    deployment,
    helmrelease,
    helmrelease_chartref,
    inventory,
    ocirepository,
)

from webhook.catalogs import load_catalog
from webhook.rules.engine import audit
from webhook.rules.inventory import Inventory
from webhook.rules.objects import summarize
from webhook.rules.tracking import ConflictSet

CATALOG = load_catalog([])


def upsert(obj: dict[str, object]) -> Callable[[Inventory], None]:
    def run(view: Inventory) -> None:
        group = str(obj["apiVersion"]).rpartition("/")[0]
        summary = summarize(group, str(obj["kind"]), obj, CATALOG)
        assert summary is not None
        view.upsert(summary)

    return run


def remove_crd(name: str) -> Callable[[Inventory], None]:
    from webhook.rules.objects import CRD_KIND, ObjectRef

    return lambda view: view.remove(ObjectRef(CRD_KIND, None, name))


V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0")
V1ALPHA3 = crd(BTP, {"v1alpha3": True}, bundle_version="v1.3.0")
# kgateway 2.1 ignores a BackendTLSPolicy CRD below bundle v1.4.0 (feature off, a warning).
IGNORED = "kgateway-2.1-ignores-backendtlspolicy-below-bundle-v1.4"
STEPS = [
    pytest.param(
        [upsert(V1_ONLY)],
        1,
        ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"],
        id="a CRD update adds a conflict",
    ),
    pytest.param([upsert(V1ALPHA3)], 0, [], id="the CRD restored resolves it"),
    pytest.param(
        [upsert(V1_ONLY), upsert(deployment("v2.1.1", image=None))],
        1,
        ["kgateway-2.1-requires-backendconfigpolicy-crd"],
        id="upgrading kgateway swaps one conflict for another",
    ),
    pytest.param(
        [upsert(deployment("v2.0.4", namespace="kube-system")), upsert(V1_ONLY)],
        2,
        ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"],
        id="a second kgateway in kube-system counts too",
    ),
    pytest.param(
        [upsert(V1_ONLY), remove_crd(BTP)],
        0,
        [],
        id="removing the CRD resolves it (a missing CRD is tolerated)",
    ),
    pytest.param(
        [upsert(helmrelease_chartref()), upsert(ocirepository("v2.1.1"))],
        2,
        [IGNORED, "kgateway-2.1-requires-backendconfigpolicy-crd"],
        id="an OCIRepository's tag reaches the HelmRelease that uses it",
    ),
    pytest.param(
        [upsert(crd(BCP, {"v1alpha1": True})), upsert(deployment("v2.1.1"))],
        1,
        [IGNORED],
        id="kgateway 2.1 with v1.3.0's v1alpha3-only CRD ignores BackendTLSPolicy",
    ),
    pytest.param(
        [upsert(helmrelease("v2.0.4")), upsert(V1_ONLY), upsert(deployment("v2.1.1"))],
        2,
        ["kgateway-2.0-reads-backendtlspolicy-v1alpha3", "kgateway-2.1-requires-backendconfigpolicy-crd"],
        id="a HelmRelease and its Deployment are one release, re-checked together when either changes",
    ),
]


@pytest.mark.parametrize(("steps", "count", "rules"), STEPS)
def test_refreshed_conflicts_equal_a_full_audit(
    steps: list[Callable[[Inventory], None]], count: int, rules: list[str]
) -> None:
    view = inventory(CATALOG, [deployment("v2.0.4"), V1ALPHA3])
    tracked = ConflictSet()
    tracked.rebuild(view, CATALOG)
    view.drain_touched()
    for step in steps:
        step(view)
        tracked.refresh(view, CATALOG, view.drain_touched())
        assert [c.key for c in tracked.conflicts] == [c.key for c in audit(view, CATALOG)]
    assert len(tracked.conflicts) == count
    assert sorted({c.rule.id for c in tracked.conflicts}) == rules


def test_refresh_reports_what_appeared_and_what_was_resolved() -> None:
    view = inventory(CATALOG, [deployment("v2.0.4"), V1ALPHA3])
    tracked = ConflictSet()
    assert tracked.rebuild(view, CATALOG).appeared == ()
    view.drain_touched()
    upsert(V1_ONLY)(view)
    appeared = tracked.refresh(view, CATALOG, view.drain_touched())
    assert [c.rule.id for c in appeared.appeared] == ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"]
    assert appeared.resolved == ()
    upsert(V1ALPHA3)(view)
    resolved = tracked.refresh(view, CATALOG, view.drain_touched())
    assert (resolved.appeared, [c.rule.id for c in resolved.resolved]) == (
        (),
        ["kgateway-2.0-reads-backendtlspolicy-v1alpha3"],
    )
