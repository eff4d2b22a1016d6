"""Conflicts visible all the time: ``serve`` keeps ``audit`` current over its watch cache.

A kgateway v2.0.4 Deployment in kube-system (a namespace the webhook never
reviews) with Gateway API v1.4.0 standard installed is a conflict that no
admission review would ever show. crdguard runs as a local process against a
real kube-apiserver with the chart's ServiceAccount token.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from relkit.kube import apply, own_control_plane, token_kubeconfig, wait_until

from .cluster import ControlPlane
from .guard import Guard
from .test_webhook import BTLS, kgateway_deployment

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "crdguard"
RULE = "kgateway-2.0-reads-backendtlspolicy-v1alpha3"


@pytest.fixture(scope="module")
def cluster(upstream: Path) -> Iterator[ControlPlane]:
    with own_control_plane() as plane:
        plane.kubectl(
            "apply", "--server-side", "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml")
        )
        plane.kubectl("wait", "--for=condition=Established", f"crd/{BTLS}", "--timeout=60s")
        plane.kubectl("create", "namespace", "kube-system", check=False)
        yield plane


@pytest.fixture(scope="module")
def chart_kubeconfig(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token of the chart's ServiceAccount, with exactly the chart's RBAC."""
    rendered = cluster.helm(
        "template",
        "crdguard",
        str(CHART),
        "--namespace=crdguard",
        "--set=image.repository=registry.example/c",
    ).stdout
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    cluster.kubectl("create", "namespace", "crdguard")
    apply(cluster, *[d for d in yaml.safe_load_all(rendered) if d and d["kind"] in kinds])
    token = cluster.kubectl("create", "token", "crdguard", "--namespace=crdguard").stdout.strip()
    return token_kubeconfig(tmp_path_factory.mktemp("token") / "kubeconfig", cluster, token)


def metrics(guard: Guard) -> dict[str, float]:
    # The metrics port (plain HTTP), not the admission port: that one serves only reviews and probes.
    with urllib.request.urlopen(f"http://127.0.0.1:{guard.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith("crdguard_conflicts")
        for name, _, value in [line.rpartition(" ")]
    }


def test_a_conflict_in_kube_system_is_exported_and_gets_an_event(
    cluster: ControlPlane, chart_kubeconfig: Path, tmp_path: Path
) -> None:
    guard = Guard(tmp_path, ["--kubeconfig", str(chart_kubeconfig)])
    try:
        guard.wait_ready()
        wait_until(
            lambda: "crdguard_conflicts_total" in metrics(guard), timeout=10, what="the conflict metrics"
        )
        assert metrics(guard)["crdguard_conflicts_total"] == 0.0
        cluster.kubectl("apply", "-f", "-", input=kgateway_deployment("v2.0.4", namespace="kube-system"))

        series = (
            f'crdguard_conflicts{{component="kgateway",crd="{BTLS}",name="kgateway",'
            f'namespace="kube-system",rule="{RULE}"}}'
        )
        wait_until(lambda: metrics(guard).get(series) == 1.0, timeout=30, what="the conflict exported")
        assert metrics(guard)["crdguard_conflicts_total"] == 1.0

        def events() -> list[dict[str, object]]:
            listed = cluster.kubectl(
                "get", "events", "-n", "kube-system", "--field-selector=reason=CRDConflict", "-o", "json"
            ).stdout
            return list(json.loads(listed)["items"])

        (event,) = wait_until(events, timeout=30, what="an Event on the Deployment")
        deployment = json.loads(
            cluster.kubectl("get", "deployment", "kgateway", "-n", "kube-system", "-o", "json").stdout
        )
        assert event["involvedObject"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": "kube-system",
            "name": "kgateway",
            "uid": deployment["metadata"]["uid"],
        }
        assert event["type"] == "Warning"
        assert RULE in str(event["message"])

        # Resolved (kgateway gone): the series disappears.
        cluster.kubectl("delete", "deployment", "kgateway", "-n", "kube-system")
        wait_until(lambda: series not in metrics(guard), timeout=30, what="the conflict resolved")
        assert metrics(guard)["crdguard_conflicts_total"] == 0.0
    finally:
        guard.close()
