"""PolicyReports on the real API server: written by the one replica holding the Lease.

crdguard runs as local processes with the chart's ServiceAccount token, RBAC
rendered with ``audit.policyReports.enabled=true``. The wgpolicyk8s.io CRDs are
read at test time from the kyverno Go module at a tag (``config/crds/policyreport``),
the CRDs Kyverno and Policy Reporter install; they are not kept in this repository.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bundles import BundleUnavailable, go_module_dir
from relkit.kube import apply, own_control_plane, token_kubeconfig, wait_until

from .cluster import ControlPlane
from .conftest import unavailable
from .guard import Guard
from .test_webhook import BTLS, kgateway_deployment

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "crdguard"
RULE = "kgateway-2.0-reads-backendtlspolicy-v1alpha3"
REPORT_CRDS_MODULE = ("github.com/kyverno/kyverno", "v1.13.4")
NAMESPACE = "crdguard"
LEASE = ["--policy-reports", f"--leader-lease={NAMESPACE}/crdguard"]


def report_crds() -> list[Path]:
    try:
        module = go_module_dir(*REPORT_CRDS_MODULE)
    except BundleUnavailable as exc:
        unavailable(f"the PolicyReport CRDs come from the kyverno Go module: {exc}")
    return sorted((module / "config" / "crds" / "policyreport").glob("wgpolicyk8s.io_*.yaml"))


@pytest.fixture(scope="module")
def cluster(upstream: Path) -> Iterator[ControlPlane]:
    crds = report_crds()
    with own_control_plane() as plane:
        plane.kubectl(
            "apply", "--server-side", "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml")
        )
        for crd in crds:
            plane.kubectl("apply", "--server-side", "-f", str(crd))
        plane.kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{BTLS}",
            "crd/policyreports.wgpolicyk8s.io",
            "crd/clusterpolicyreports.wgpolicyk8s.io",
            "--timeout=60s",
        )
        plane.kubectl("create", "namespace", "kube-system", check=False)
        yield plane


@pytest.fixture(scope="module")
def chart_kubeconfig(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token of the chart's ServiceAccount, with exactly the chart's RBAC for policy reports."""
    rendered = cluster.helm(
        "template",
        "crdguard",
        str(CHART),
        f"--namespace={NAMESPACE}",
        "--set=image.repository=registry.example/c",
        "--set=audit.policyReports.enabled=true",
    ).stdout
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    cluster.kubectl("create", "namespace", NAMESPACE)
    apply(cluster, *[d for d in yaml.safe_load_all(rendered) if d and d["kind"] in kinds])
    token = cluster.kubectl("create", "token", "crdguard", f"--namespace={NAMESPACE}").stdout.strip()
    return token_kubeconfig(tmp_path_factory.mktemp("token") / "kubeconfig", cluster, token)


def get_json(cluster: ControlPlane, *args: str) -> Any:
    done = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def reports(guard: Guard) -> dict[str, Any]:
    return dict(guard.state()["policyReports"])


def writes_counted(guard: Guard) -> float:
    url = f"http://127.0.0.1:{guard.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    (value,) = [
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("crdguard_policy_report_writes_total ")
    ]
    return value


def kube_system_results(cluster: ControlPlane) -> list[dict[str, Any]] | None:
    report = get_json(cluster, "policyreport", "crdguard", "-n", "kube-system")
    return None if report is None else list(report["results"])


def test_a_conflict_in_kube_system_is_reported_and_disappears_when_resolved(
    cluster: ControlPlane, chart_kubeconfig: Path, tmp_path: Path
) -> None:
    guard = Guard(tmp_path, ["--kubeconfig", str(chart_kubeconfig), *LEASE])
    try:
        guard.wait_ready()
        # Before any conflict: an empty ClusterPolicyReport (running, nothing found), no PolicyReport.
        empty = wait_until(
            lambda: get_json(cluster, "clusterpolicyreport", "crdguard"), timeout=30, what="the report"
        )
        assert empty["results"] == [] and empty["summary"]["fail"] == 0
        assert kube_system_results(cluster) is None

        cluster.kubectl("apply", "-f", "-", input=kgateway_deployment("v2.0.4", namespace="kube-system"))
        (found,) = wait_until(lambda: kube_system_results(cluster), timeout=30, what="the PolicyReport")
        deployment = get_json(cluster, "deployment", "kgateway", "-n", "kube-system")
        assert found["resources"] == [
            {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "kube-system", "name": "kgateway"}
        ]
        assert deployment is not None
        assert (found["policy"], found["rule"], found["result"], found["severity"]) == (
            "crdguard",
            RULE,
            "fail",
            "high",
        )
        assert found["properties"] | {"version": ""} == {
            "component": "kgateway",
            "version": "",
            "crd": BTLS,
            "needs": "v1alpha3",
            "served": "v1",
            "crdInstalled": "true",
            "source": "Deployment/kube-system/kgateway",
        }
        assert found["properties"]["version"].lstrip("v") == "2.0.4"
        assert "kgateway" in found["message"] and "v1alpha3" in found["message"]
        report = get_json(cluster, "policyreport", "crdguard", "-n", "kube-system")
        assert report["summary"]["fail"] == 1

        on_crd = get_json(cluster, "clusterpolicyreport", "crdguard")
        (crd_result,) = on_crd["results"]
        assert crd_result["rule"] == RULE
        assert crd_result["resources"] == [
            {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "name": BTLS}
        ]
        assert on_crd["summary"]["fail"] == 1

        # Resolved (kgateway gone): the namespace's report goes, the cluster report empties.
        cluster.kubectl("delete", "deployment", "kgateway", "-n", "kube-system")
        wait_until(lambda: kube_system_results(cluster) is None, timeout=30, what="the PolicyReport deleted")
        cleared = wait_until(
            lambda: (r := get_json(cluster, "clusterpolicyreport", "crdguard")) and not r["results"] and r,
            timeout=30,
            what="the ClusterPolicyReport emptied",
        )
        assert cleared["summary"]["fail"] == 0
    finally:
        guard.close()


def test_of_two_replicas_only_the_lease_holder_writes_and_the_other_takes_over(
    cluster: ControlPlane, chart_kubeconfig: Path, tmp_path: Path
) -> None:
    guards = [Guard(tmp_path / name, ["--kubeconfig", str(chart_kubeconfig), *LEASE]) for name in ("a", "b")]
    try:
        for guard in guards:
            guard.wait_ready()

        def one_leader() -> list[Guard]:
            leaders = [g for g in guards if reports(g)["leader"]]
            return leaders if len(leaders) == 1 else []

        (leader,) = wait_until(one_leader, timeout=30, what="one leader")
        (follower,) = [g for g in guards if g is not leader]
        lease = get_json(cluster, "lease", "crdguard", "-n", NAMESPACE)
        assert lease["spec"]["holderIdentity"] == reports(leader)["identity"]

        cluster.kubectl("apply", "-f", "-", input=kgateway_deployment("v2.0.4", namespace="kube-system"))
        wait_until(lambda: kube_system_results(cluster), timeout=30, what="the PolicyReport")
        # Both replicas see the conflict; only the leader wrote anything.
        wait_until(lambda: all(g.state()["conflicts"] for g in guards), timeout=30, what="both see it")
        assert writes_counted(leader) > 0
        assert writes_counted(follower) == 0.0 and not reports(follower)["leader"]

        # The leader stops and hands the Lease back: the other replica takes over and keeps the
        # reports current (the conflict resolved after the hand-over disappears).
        leader.close()
        wait_until(lambda: reports(follower)["leader"], timeout=30, what="the follower leading")
        lease = get_json(cluster, "lease", "crdguard", "-n", NAMESPACE)
        assert lease["spec"]["holderIdentity"] == reports(follower)["identity"]
        cluster.kubectl("delete", "deployment", "kgateway", "-n", "kube-system")
        wait_until(lambda: kube_system_results(cluster) is None, timeout=30, what="the PolicyReport deleted")
        assert writes_counted(follower) > 0
    finally:
        for guard in guards:
            guard.close()
