"""Incidents of other Gateway API implementations, replayed with kubectl against a real kube-apiserver.

crdguard runs as a local process registered through the chart's own ValidatingWebhookConfiguration
(now covering the whole catalog). Gateway API bundles are the real install files. The steps build on
each other (one cluster), so they run in order.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import ControlPlane
from .conftest import locate_tools
from .guard import Guard, register_with_the_chart

pytestmark = pytest.mark.e2e

EG_NAMESPACE = "envoy-gateway-system"
LISTENERSETS = "listenersets.gateway.networking.k8s.io"
TLSROUTES = "tlsroutes.gateway.networking.k8s.io"


def controller(name: str, namespace: str, image: str, args: list[str] | None = None, **labels: str) -> str:
    """A Deployment running ``image``, shaped like the component's chart renders it."""
    container: dict[str, Any] = {"name": name, "image": image, **({"args": args} if args else {})}
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            },
        }
    )


def apply(cluster: ControlPlane, *args: str, manifest: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-f", "-"] if manifest is not None else []
    return cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", *args, *extra, input=manifest, check=False
    )


def crd_names(cluster: ControlPlane) -> set[str]:
    listed = json.loads(cluster.kubectl("get", "crd", "-o", "json").stdout)["items"]
    return {item["metadata"]["name"] for item in listed}


def wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} did not hold within {timeout}s")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ControlPlane]:
    kube_bin_dir, helm = locate_tools()
    with ControlPlane(kube_bin_dir, helm) as plane:
        yield plane


@pytest.fixture(scope="module")
def guard(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    running = Guard(tmp_path_factory.mktemp("guard"), ["--kubeconfig", str(cluster.kubeconfig)])
    try:
        running.wait_ready()
        register_with_the_chart(cluster, running)
        cluster.kubectl("create", "namespace", EG_NAMESPACE)
        yield running
    finally:
        running.close()


def test_envoy_gateway_1_8_0_on_v1_4_1_standard_is_denied_naming_listenerset_v1(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    """envoyproxy/gateway#8991: 1.8.0 watches ListenerSet and TLSRoute v1 unconditionally and crash-loops."""
    installed = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.1/standard-install.yaml"))
    assert installed.returncode == 0, installed.stderr
    assert LISTENERSETS not in crd_names(cluster)
    wait_for(lambda: guard.state()["objects"].get("CustomResourceDefinition", 0) >= 5, "CRDs seen")
    result = apply(
        cluster,
        manifest=controller(
            "envoy-gateway",
            EG_NAMESPACE,
            "docker.io/envoyproxy/gateway:v1.8.0",
            **{"control-plane": "envoy-gateway"},
        ),
    )
    assert result.returncode != 0, result.stdout
    stderr = result.stderr
    assert 'admission webhook "deployments.crdguard.io" denied the request' in stderr
    assert f"crdguard denied CREATE of Deployment {EG_NAMESPACE}/envoy-gateway" in stderr
    assert "it would introduce 2 CRD conflicts" in stderr
    assert "envoy-gateway v1.8.0 in Deployment envoy-gateway-system/envoy-gateway" in stderr
    assert "needs ListenerSet gateway.networking.k8s.io/v1 to be served" in stderr
    assert f"{LISTENERSETS} is not installed" in stderr
    assert "needs TLSRoute gateway.networking.k8s.io/v1 to be served" in stderr
    assert "Rule envoy-gateway-1.8-requires-listenerset-v1" in stderr
    # The planner's way out, replayed through crdguard and the safe-upgrades policy before it is offered.
    assert "a) First apply Gateway API v1.5.1 standard, then retry this change" in stderr
    assert "releases/download/v1.5.1/standard-install.yaml" in stderr
    notfound = cluster.kubectl("get", "deployment", "envoy-gateway", "-n", EG_NAMESPACE, check=False)
    assert notfound.returncode != 0


def test_envoy_gateway_1_8_0_is_allowed_once_v1_5_1_is_installed(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    """The way out the notes give: Gateway API v1.5.1 first (what the 1.8 chart itself bundles)."""
    upgraded = apply(cluster, "-f", str(upstream / "gateway-api/v1.5.1/standard-install.yaml"))
    assert upgraded.returncode == 0, upgraded.stderr
    wait_for(lambda: guard.state()["objects"].get("CustomResourceDefinition", 0) >= 7, "v1.5.1 CRDs seen")
    manifest = controller(
        "envoy-gateway",
        EG_NAMESPACE,
        "docker.io/envoyproxy/gateway:v1.8.0",
        **{"control-plane": "envoy-gateway"},
    )
    wait_for(lambda: apply(cluster, manifest=manifest).returncode == 0, "envoy gateway 1.8.0 applies")
    # Back to v1.4.1 standard for the next step; the Deployment leaves first, or crdguard would
    # (rightly) refuse to take ListenerSet v1 away from it.
    cluster.kubectl("delete", "deployment", "envoy-gateway", "-n", EG_NAMESPACE)
    wait_for(lambda: guard.state()["objects"].get("ComponentRelease", 0) == 0, "envoy gateway gone")
    for crd in (LISTENERSETS, TLSROUTES):
        cluster.kubectl("delete", "crd", crd)
    wait_for(lambda: not {LISTENERSETS, TLSROUTES} & crd_names(cluster), "v1.5.1-only CRDs gone")


def test_v1_5_1_standard_with_cilium_1_19_running_is_denied_for_tlsroute(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    """cilium/cilium#44920, kubernetes-sigs/kubespray#13222: the 1.19 operator exits on v1.5 standard."""
    assert TLSROUTES not in crd_names(cluster)
    # The operator runs in kube-system, whose Deployments are never sent to crdguard; its watch
    # still sees it. Gateway API switched on as the catalog reads it (--enable-gateway-api).
    operator = controller(
        "cilium-operator",
        "kube-system",
        "quay.io/cilium/operator-generic:v1.19.1",
        args=["--config-dir=/tmp/cilium/config-map", "--enable-gateway-api"],
        **{"io.cilium/app": "operator"},
    )
    created = apply(cluster, manifest=operator)
    assert created.returncode == 0, created.stderr
    wait_for(lambda: guard.state()["objects"].get("ComponentRelease", 0) == 1, "cilium operator seen")
    result = apply(cluster, "-f", str(upstream / "gateway-api/v1.5.1/standard-install.yaml"))
    assert result.returncode != 0
    stderr = result.stderr
    assert 'admission webhook "crds.crdguard.io" denied the request' in stderr
    assert f"crdguard denied CREATE of CustomResourceDefinition {TLSROUTES}" in stderr
    assert "cilium v1.19.1 in Deployment kube-system/cilium-operator" in stderr
    assert "needs TLSRoute gateway.networking.k8s.io/v1alpha2 to be served if the CRD lists it" in stderr
    assert "serves v1 (listed but not served: v1alpha2, v1alpha3)" in stderr
    assert "Rule cilium-1.19-tlsroute-v1alpha2-listed-must-be-served" in stderr
    # Only TLSRoute was refused; the rest of the bundle (ListenerSet among it) went in.
    assert TLSROUTES not in crd_names(cluster)
    assert LISTENERSETS in crd_names(cluster)


def test_v1_5_1_standard_with_cilium_1_19_and_gateway_api_off_is_allowed(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    operator = controller(
        "cilium-operator",
        "kube-system",
        "quay.io/cilium/operator-generic:v1.19.1",
        args=["--config-dir=/tmp/cilium/config-map"],
        **{"io.cilium/app": "operator"},
    )
    assert apply(cluster, manifest=operator).returncode == 0
    bundle = str(upstream / "gateway-api/v1.5.1/standard-install.yaml")
    wait_for(lambda: apply(cluster, "-f", bundle).returncode == 0, "v1.5.1 standard applies")
    assert TLSROUTES in crd_names(cluster)
