"""The chart's audit and monitoring options, rendered with helm template: each option adds only the
RBAC, arguments and objects it needs, and only when it is on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT, locate_tools

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "crdguard"
RELEASE = NAMESPACE = "crdguard"
FULLNAME = "crdguard"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, binary = locate_tools()
    return binary


def render(helm: Path, home: Path, *sets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env |= {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
    argv = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    argv += ["--set=image.repository=registry.example/crdguard", *(f"--set={s}" for s in sets)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=check, timeout=120)


def docs(helm: Path, home: Path, *sets: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(render(helm, home, *sets).stdout) if d]


def of_kind(rendered: list[Doc], kind: str) -> list[Doc]:
    return [d for d in rendered if d["kind"] == kind]


def cluster_rules(rendered: list[Doc]) -> set[tuple[str, str, tuple[str, ...]]]:
    (role,) = of_kind(rendered, "ClusterRole")
    return {(r["apiGroups"][0], r["resources"][0], tuple(r["verbs"])) for r in role["rules"]}


def args(rendered: list[Doc]) -> list[str]:
    (deployment,) = of_kind(rendered, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


EVENTS = ("", "events", ("create",))
REPORT_VERBS = ("get", "list", "create", "update", "delete")
REPORTS = {
    ("wgpolicyk8s.io", "policyreports", REPORT_VERBS),
    ("wgpolicyk8s.io", "clusterpolicyreports", REPORT_VERBS),
}
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [FULLNAME],
        "verbs": ["get", "update"],
    },
]
REPORT_ARGS = ["--policy-reports", f"--leader-lease={NAMESPACE}/{FULLNAME}"]


@pytest.mark.parametrize(
    ("sets", "events", "reports"),
    [
        pytest.param([], True, False, id="by default Events are written and no PolicyReport"),
        pytest.param(["audit.events.enabled=false"], False, False, id="Events off grants nothing on events"),
        pytest.param(
            ["audit.policyReports.enabled=true"], True, True, id="policy reports on add their RBAC and Lease"
        ),
        pytest.param(
            ["audit.events.enabled=false", "audit.policyReports.enabled=true"],
            False,
            True,
            id="policy reports without Events",
        ),
    ],
)
def test_each_audit_option_brings_only_its_own_rbac_and_arguments(
    helm: Path, tmp_path: Path, sets: list[str], events: bool, reports: bool
) -> None:
    rendered = docs(helm, tmp_path, *sets)
    rules = cluster_rules(rendered)
    assert (EVENTS in rules) is events
    assert rules & REPORTS == (REPORTS if reports else set())
    assert not {r for r in rules if r[0] in ("wgpolicyk8s.io", "") and r not in REPORTS | {EVENTS}}
    leader_roles = [r for r in of_kind(rendered, "Role") if r["metadata"]["name"] == f"{FULLNAME}-leader"]
    assert [r["rules"] for r in leader_roles] == ([LEASE_RULES] if reports else [])
    bindings = [b for b in of_kind(rendered, "RoleBinding") if b["metadata"]["name"] == f"{FULLNAME}-leader"]
    assert [(b["roleRef"]["name"], b["subjects"][0]["name"]) for b in bindings] == (
        [(f"{FULLNAME}-leader", FULLNAME)] if reports else []
    )
    assert ("--no-conflict-events" in args(rendered)) is not events
    assert [a for a in args(rendered) if a in REPORT_ARGS or a.startswith("--leader-lease")] == (
        REPORT_ARGS if reports else []
    )


def test_the_report_arguments_parse_with_crdguards_own_parser(helm: Path, tmp_path: Path) -> None:
    from webhook.cli import build_parser

    rendered = docs(helm, tmp_path, "audit.policyReports.enabled=true", "audit.events.enabled=false")
    parsed = build_parser().parse_args(["serve", *args(rendered)])
    assert (parsed.policy_reports, parsed.leader_lease, parsed.no_conflict_events) == (
        True,
        f"{NAMESPACE}/{FULLNAME}",
        True,
    )
    (deployment,) = of_kind(rendered, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize(
    ("sets", "kind"),
    [
        pytest.param([], None, id="no PrometheusRule or dashboard by default"),
        pytest.param(["metrics.prometheusRule.enabled=true"], "PrometheusRule", id="the PrometheusRule on"),
        pytest.param(["metrics.grafanaDashboard.enabled=true"], "ConfigMap", id="the dashboard on"),
    ],
)
def test_monitoring_objects_only_when_on(
    helm: Path, tmp_path: Path, sets: list[str], kind: str | None
) -> None:
    rendered = docs(helm, tmp_path, *sets)
    rules = of_kind(rendered, "PrometheusRule")
    dashboards = [
        d for d in of_kind(rendered, "ConfigMap") if d["metadata"]["name"] == f"{FULLNAME}-dashboard"
    ]
    assert len(rules) == (kind == "PrometheusRule")
    assert len(dashboards) == (kind == "ConfigMap")


def test_the_alert_fires_per_conflict_after_the_configured_time(helm: Path, tmp_path: Path) -> None:
    rendered = docs(
        helm,
        tmp_path,
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.for=15m",
        "metrics.prometheusRule.labels.release=prometheus",
    )
    (rule_object,) = of_kind(rendered, "PrometheusRule")
    assert rule_object["metadata"]["labels"]["release"] == "prometheus"
    ((group,),) = [rule_object["spec"]["groups"]]
    (alert,) = group["rules"]
    assert alert["alert"] == "CRDGuardConflict"
    assert alert["expr"] == "max by (rule, component, namespace, name, crd) (crdguard_conflicts) > 0"
    assert (alert["for"], alert["labels"]) == ("15m", {"severity": "warning"})
    for label in ("component", "rule", "namespace", "name", "crd"):
        assert f"$labels.{label}" in alert["annotations"]["summary"] + alert["annotations"]["description"]
    assert "crdguard audit" in alert["annotations"]["runbook"]
    assert "crdguard plan" in alert["annotations"]["runbook"]


def test_the_dashboard_configmap_carries_the_file_and_the_sidecar_label(helm: Path, tmp_path: Path) -> None:
    rendered = docs(
        helm,
        tmp_path,
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.namespace=monitoring",
        "metrics.grafanaDashboard.annotations.grafana_folder=crdguard",
    )
    (config_map,) = [
        d for d in of_kind(rendered, "ConfigMap") if d["metadata"]["name"] == f"{FULLNAME}-dashboard"
    ]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "crdguard"}
    shipped = json.loads((CHART / "dashboards" / "crdguard.json").read_text())
    assert json.loads(config_map["data"]["crdguard.json"]) == shipped


def test_the_service_monitor_keeps_the_conflicts_namespace_label(helm: Path, tmp_path: Path) -> None:
    (monitor,) = of_kind(docs(helm, tmp_path, "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("audit.policyReport.enabled=true", "policyReport", id="a misspelt audit option"),
        pytest.param("audit.events.enabled=yes", "/audit/events/enabled", id="events not a boolean"),
        pytest.param(
            "metrics.prometheusRule.for=soon", "/metrics/prometheusRule/for", id="a for that is no duration"
        ),
        pytest.param(
            "metrics.grafanaDashboard.namespace=Not_A_Name", "namespace", id="a bad dashboard namespace"
        ),
    ],
)
def test_schema_rejects(helm: Path, tmp_path: Path, value: str, message: str) -> None:
    result = render(helm, tmp_path, value, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr
