"""PolicyReports from conflicts: what each report holds, and that its summary counts its results."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import BTP, crd, deployment, helmrelease, inventory

from webhook.catalogs import load_catalog
from webhook.rules.engine import Conflict, audit
from webhook.state.policyreports import desired_reports, severity

CATALOG = load_catalog([])
V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False})


def conflicts_of(*objects: dict[str, Any]) -> list[Conflict]:
    return audit(inventory(CATALOG, objects), CATALOG)


def results(reports: dict[tuple[str, str], dict[str, Any]], namespace: str) -> list[tuple[str, str]]:
    return [
        (r["rule"], r["resources"][0]["name"] if r["resources"] else "")
        for r in reports[(namespace, "crdguard")]["results"]
    ]


CASES = [
    pytest.param(
        [V1_ONLY, deployment("v2.0.4", namespace="kube-system")],
        {"kube-system": [("kgateway-2.0-reads-backendtlspolicy-v1alpha3", "kgateway")]},
        [("kgateway-2.0-reads-backendtlspolicy-v1alpha3", BTP)],
        id="a conflicting Deployment in kube-system is reported there and on the CRD",
    ),
    pytest.param(
        [V1_ONLY, deployment("v2.0.4", namespace="team-a"), deployment("v2.0.4", namespace="team-b")],
        {
            "team-a": [("kgateway-2.0-reads-backendtlspolicy-v1alpha3", "kgateway")],
            "team-b": [("kgateway-2.0-reads-backendtlspolicy-v1alpha3", "kgateway")],
        },
        [("kgateway-2.0-reads-backendtlspolicy-v1alpha3", BTP)] * 2,
        id="two namespaces get one report each, the CRD carries both",
    ),
    pytest.param(
        [crd(BTP, {"v1": True}), helmrelease("v2.1.1", namespace="flux-apps")],
        {"flux-apps": [("kgateway-2.1-requires-backendconfigpolicy-crd", "kgateway")]},
        [("kgateway-2.1-requires-backendconfigpolicy-crd", "")],
        id="a missing CRD is reported without a resource on the cluster report",
    ),
    pytest.param([crd(BTP, {"v1alpha3": True}), deployment("v2.0.4")], {}, [], id="no conflict, no report"),
]


@pytest.mark.parametrize(("objects", "namespaced", "on_crds"), CASES)
def test_reports_hold_each_conflict_where_it_is_fixed(
    objects: list[dict[str, Any]],
    namespaced: dict[str, list[tuple[str, str]]],
    on_crds: list[tuple[str, str]],
) -> None:
    reports = desired_reports(conflicts_of(*objects), {})
    assert sorted(ns for ns, _ in reports if ns) == sorted(namespaced)
    for namespace, expected in namespaced.items():
        assert results(reports, namespace) == expected
    assert results(reports, "") == on_crds
    for (namespace, _), report in reports.items():
        assert report["kind"] == ("PolicyReport" if namespace else "ClusterPolicyReport")
        assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
        assert report["metadata"].get("namespace", "") == namespace
        assert report["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "crdguard"}
        assert report["summary"] == {
            "pass": 0,
            "fail": len(report["results"]),
            "warn": 0,
            "error": 0,
            "skip": 0,
        }


def test_a_result_carries_the_rule_the_object_and_the_conflict_facts() -> None:
    (conflict,) = conflicts_of(V1_ONLY, deployment("v2.0.4", namespace="kube-system"))
    reports = desired_reports([conflict], {conflict.key: 1700000000})
    (found,) = reports[("kube-system", "crdguard")]["results"]
    assert found["resources"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "kube-system", "name": "kgateway"}
    ]
    assert (found["policy"], found["result"], found["severity"], found["source"]) == (
        "crdguard",
        "fail",
        "high",
        "crdguard",
    )
    assert found["timestamp"] == {"seconds": 1700000000, "nanos": 0}
    assert found["properties"] == {
        "component": "kgateway",
        "version": conflict.release.version_text,
        "crd": BTP,
        "needs": "v1alpha3",
        "served": "v1",
        "crdInstalled": "true",
        "source": "Deployment/kube-system/kgateway",
    }
    assert found["message"].startswith("kgateway ")
    assert "v1alpha3" in found["message"] and "\n" not in found["message"]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        pytest.param("crash", "high", id="a controller that crashes is high"),
        pytest.param("never-ready", "high", id="a controller that never gets ready is high"),
        pytest.param("hangs", "high", id="a controller that hangs is high"),
        pytest.param("feature-off", "medium", id="a feature turned off is medium"),
    ],
)
def test_severity_follows_what_the_controller_does(failure: str, expected: str) -> None:
    from dataclasses import replace

    from webhook.rules.catalog import Failure

    (conflict,) = conflicts_of(V1_ONLY, deployment("v2.0.4"))
    changed = Conflict(replace(conflict.rule, failure=Failure(failure)), conflict.release, conflict.crd)
    assert severity(changed) == expected
