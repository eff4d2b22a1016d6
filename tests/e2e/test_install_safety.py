"""An install that cannot lock a cluster, on a real kube-apiserver.

There is no kubelet here, so the chart's Deployment never gets a pod: exactly an
install whose image cannot be pulled. Helm installs the webhook configuration
empty; the webhooks arrive only when a crdguard that has synced writes them
(``serve --register-webhook``). That crdguard runs here as a local process, as
the pod would: with the file from the release's ConfigMap and a token of the
release's ServiceAccount (so the chart's RBAC is what it has). The steps build on
each other, so they run in order.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from relkit.kube import own_control_plane, token_kubeconfig, wait_until

from .cluster import ControlPlane, free_port
from .guard import Guard, make_certs
from .test_webhook import BTLS, kgateway_deployment

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "crdguard"
UNPULLABLE = ["--set", "image.repository=registry.invalid/crdguard"]
CLUSTER_SCOPED = "validatingwebhookconfigurations,clusterroles,clusterrolebindings"
WEBHOOKS = sorted(
    [  # as webhook_names lists them
        "crds.crdguard.io",
        "deployments.crdguard.io",
        "flux.crdguard.io",
        "argocd.crdguard.io",
        "k3s.crdguard.io",
    ]
)


@pytest.fixture(scope="module")
def cluster(upstream: Path) -> Iterator[ControlPlane]:
    """Gateway API v1.3.0 experimental and kgateway v2.0.4: the incident's starting point."""
    with own_control_plane() as plane:
        apply(plane, "-f", str(upstream / "gateway-api/v1.3.0/experimental-install.yaml"), check=True)
        plane.kubectl("wait", "--for=condition=Established", f"crd/{BTLS}", "--timeout=60s")
        plane.kubectl("create", "namespace", "kgateway-system")
        apply(plane, manifest=kgateway_deployment("v2.0.4"), check=True)
        yield plane


def apply(
    cluster: ControlPlane, *args: str, manifest: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    extra = ["-f", "-"] if manifest is not None else []
    return cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", *args, *extra, input=manifest, check=check
    )


def cluster_scoped(cluster: ControlPlane) -> list[str]:
    """Every cluster-scoped object of the kinds a release creates, crdguard's or not."""
    names = cluster.kubectl("get", CLUSTER_SCOPED, "--output=name").stdout.split()
    return sorted(n for n in names if "crdguard" in n or "guard-" in n)


def webhook_names(cluster: ControlPlane, name: str) -> list[str]:
    config = json.loads(cluster.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json").stdout)
    return sorted(w["name"] for w in config.get("webhooks") or [])


def restore_v1_3_experimental(cluster: ControlPlane, upstream: Path) -> None:
    # v1.4.0 standard stored v1, which v1.3.0's CRD does not list: recreate the CRD instead.
    cluster.kubectl("delete", "crd", BTLS, "--wait=true")
    apply(cluster, "-f", str(upstream / "gateway-api/v1.3.0/experimental-install.yaml"), check=True)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{BTLS}", "--timeout=60s")


def test_an_install_whose_pods_never_start_blocks_no_kgateway_change(
    cluster: ControlPlane, upstream: Path
) -> None:
    before = cluster_scoped(cluster)
    installed = cluster.helm(
        "install", "guard", str(CHART), "--namespace", "guard", "--create-namespace", *UNPULLABLE
    )
    assert "Nothing is guarded yet" in installed.stdout
    assert "ImagePullBackOff" in installed.stdout, "the notes say what to check when pods do not start"
    assert webhook_names(cluster, "guard-crdguard") == [], "Helm registered a webhook before any pod ran"

    result = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml"))

    assert result.returncode == 0, result.stderr
    assert "crdguard" not in result.stderr
    changed = apply(cluster, manifest=kgateway_deployment("v2.0.5"))
    assert changed.returncode == 0, changed.stderr
    restore_v1_3_experimental(cluster, upstream)
    apply(cluster, manifest=kgateway_deployment("v2.0.4"), check=True)

    assert set(cluster_scoped(cluster)) - set(before) == {
        "clusterrole.rbac.authorization.k8s.io/guard-crdguard",
        "clusterrolebinding.rbac.authorization.k8s.io/guard-crdguard",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/guard-crdguard",
    }
    cluster.helm("uninstall", "guard", "--namespace", "guard")
    assert cluster_scoped(cluster) == before


def test_helm_install_wait_fails_visibly_when_no_pod_becomes_ready(cluster: ControlPlane) -> None:
    before = cluster_scoped(cluster)
    result = cluster.helm(
        "install",
        "guard-wait",
        str(CHART),
        "--namespace",
        "guard-wait",
        "--create-namespace",
        "--wait",
        "--timeout",
        "20s",
        *UNPULLABLE,
        check=False,
    )
    assert result.returncode != 0
    assert "INSTALLATION FAILED" in result.stderr, result.stderr
    status = cluster.helm("status", "guard-wait", "--namespace", "guard-wait", "--output=json").stdout
    assert json.loads(status)["info"]["status"] == "failed"
    assert webhook_names(cluster, "guard-wait-crdguard") == []
    cluster.helm("uninstall", "guard-wait", "--namespace", "guard-wait")
    assert cluster_scoped(cluster) == before


@pytest.fixture(scope="module")
def url_release(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A release for a crdguard outside the cluster (webhook.url on 127.0.0.1), its webhook file and
    a kubeconfig with its ServiceAccount's token."""
    workdir = tmp_path_factory.mktemp("registration")
    ca_bundle = make_certs(workdir / "certs")
    port = free_port()
    before = cluster_scoped(cluster)
    cluster.helm(
        "install",
        "guard-url",
        str(CHART),
        "--namespace",
        "guard-url",
        "--create-namespace",
        "--set",
        f"webhook.url=https://127.0.0.1:{port}/validate",
        "--set",
        "tls.mode=existingSecret",
        "--set",
        f"tls.caBundle={ca_bundle}",
    )
    configmap = json.loads(
        cluster.kubectl(
            "get", "configmap", "guard-url-crdguard-webhook", "-n", "guard-url", "-o", "json"
        ).stdout
    )
    webhook_file = workdir / "webhook.yaml"
    webhook_file.write_text(configmap["data"]["webhook.yaml"])
    token = cluster.kubectl("create", "token", "guard-url-crdguard", "-n", "guard-url").stdout.strip()
    kubeconfig = token_kubeconfig(workdir / "token.kubeconfig", cluster, token)
    yield {"workdir": workdir, "port": port, "file": webhook_file, "kubeconfig": kubeconfig, "before": before}
    if cluster.helm("status", "guard-url", "--namespace", "guard-url", check=False).returncode == 0:
        cluster.helm("uninstall", "guard-url", "--namespace", "guard-url")


def test_crdguard_registers_its_webhooks_once_synced_and_removes_them_on_sigterm(
    cluster: ControlPlane, url_release: dict[str, Any], upstream: Path
) -> None:
    assert yaml.safe_load(url_release["file"].read_text())["metadata"]["name"] == "guard-url-crdguard"
    assert webhook_names(cluster, "guard-url-crdguard") == []
    guard = Guard(
        url_release["workdir"],
        ["--kubeconfig", str(url_release["kubeconfig"]), "--register-webhook", str(url_release["file"])],
        port=url_release["port"],
    )
    try:
        guard.wait_ready()
        wait_until(
            lambda: webhook_names(cluster, "guard-url-crdguard") == WEBHOOKS,
            timeout=30,
            what="crdguard registered its webhooks",
        )
        assert guard.state()["objects"].get("ComponentRelease") == 1

        denied = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml"))

        assert denied.returncode != 0
        assert 'admission webhook "crds.crdguard.io" denied the request' in denied.stderr
        assert "kgateway v2.0.4 in Deployment kgateway-system/kgateway" in denied.stderr

        guard.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the SIGTERM once its graceful shutdown is over (as in the reliability tests).
        assert guard.process.wait(timeout=60) == -signal.SIGTERM
    finally:
        guard.close()
    assert webhook_names(cluster, "guard-url-crdguard") == []
    assert "removed the webhooks of ValidatingWebhookConfiguration guard-url-crdguard" in guard.log_tail(80)
    dry_run = apply(
        cluster, "--dry-run=server", "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml")
    )
    assert dry_run.returncode == 0, "with crdguard gone, nothing is blocked"


def test_uninstall_after_registration_leaves_no_cluster_scoped_object(
    cluster: ControlPlane, url_release: dict[str, Any]
) -> None:
    assert "validatingwebhookconfiguration.admissionregistration.k8s.io/guard-url-crdguard" in cluster_scoped(
        cluster
    )
    cluster.helm("uninstall", "guard-url", "--namespace", "guard-url")
    assert cluster_scoped(cluster) == url_release["before"]
