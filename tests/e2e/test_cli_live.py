"""``crdguard check`` and ``audit`` against a real kube-apiserver: read-only, kubectl's way of finding it.

A control plane of the module's own, so the planted objects cannot meet other tests' state: the
incident's cluster (Gateway API v1.3.0 experimental, BackendTLSPolicy v1alpha3 served; kgateway
v2.0.4 running), plus Flux's HelmRelease CRD with a floating release, plus a planted conflict
(kgateway v2.1.1 without kgateway-crds v2.1's BackendConfigPolicy CRD).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import BTP, deployment, helmrelease
from relkit.kube import apply, namespace, own_control_plane, token_kubeconfig

from .cluster import ControlPlane
from .guard import REPO_ROOT

PLANTED_NS = "team-planted"
SERVED = "jsonpath={range .spec.versions[*]}{.name}={.served}{' '}{end}"


@pytest.fixture(scope="module")
def plane(upstream: Path) -> Iterator[ControlPlane]:
    with own_control_plane() as plane:
        plane.kubectl(
            "apply",
            "--server-side",
            f"--filename={upstream / 'gateway-api' / 'v1.3.0' / 'experimental-install.yaml'}",
        )
        plane.kubectl("apply", "--server-side", f"--filename={upstream / 'flux' / 'helmreleases.yaml'}")
        plane.kubectl(
            "wait", "--for=condition=Established", "crd/helmreleases.helm.toolkit.fluxcd.io", "--timeout=60s"
        )
        apply(plane, namespace("kgateway-system"), namespace(PLANTED_NS), namespace("apps"))
        apply(plane, deployment("v2.0.4"), helmrelease(">=2.0.0", name="floating", namespace="apps"))
        yield plane


def crdguard(*args: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRDGUARD_", "KUBE"))}
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, "HOME": str(home), **env},
        timeout=120,
    )


def served(plane: ControlPlane) -> str:
    return plane.kubectl("get", f"crd/{BTP}", f"--output={SERVED}").stdout.strip()


def test_check_kubeconfig_denies_the_incident_bundle_against_the_live_cluster(
    plane: ControlPlane, upstream: Path, tmp_path: Path
) -> None:
    before = served(plane)
    assert before == "v1alpha3=true"
    bundle = upstream / "gateway-api" / "v1.4.0" / "standard-install.yaml"
    done = crdguard("check", "--kubeconfig", str(plane.kubeconfig), str(bundle), env={}, home=tmp_path)
    assert done.returncode == 1, done.stderr
    denied = [line for line in done.stdout.splitlines() if line.startswith("DENIED")]
    assert denied == [f"DENIED  UPDATE CustomResourceDefinition {BTP}"]
    assert "kgateway v2.0.4 in Deployment kgateway-system/kgateway" in done.stdout
    assert served(plane) == before, "check must never write to the cluster"


def test_audit_with_only_KUBECONFIG_set_finds_the_planted_conflict(
    plane: ControlPlane, tmp_path: Path
) -> None:
    apply(plane, deployment("v2.1.1", namespace=PLANTED_NS))
    done = crdguard("audit", "--output", "json", env={"KUBECONFIG": str(plane.kubeconfig)}, home=tmp_path)
    assert done.returncode == 1, done.stderr
    report = yaml.safe_load(done.stdout)
    found = {(c["rule"], c["source"]["namespace"]) for c in report["conflicts"]}
    assert ("kgateway-2.1-requires-backendconfigpolicy-crd", PLANTED_NS) in found
    assert report["source"].startswith(plane.server) and "$KUBECONFIG" in report["source"]
    assert [(u["source"]["kind"], u["source"]["name"]) for u in report["unchecked"]] == [
        ("HelmRelease", "floating")
    ]


@pytest.mark.parametrize("command", [["audit"], ["check", "examples/demo/incoming"]], ids=["audit", "check"])
def test_an_unauthorised_token_exits_3_naming_the_server(
    plane: ControlPlane, tmp_path: Path, command: list[str]
) -> None:
    bad = token_kubeconfig(tmp_path / "bad.kubeconfig", plane, "not-a-valid-token")
    done = crdguard(*command, "--kubeconfig", str(bad), env={}, home=tmp_path)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert plane.server in line and "unauthorised (401" in line
    assert done.stdout == ""


def test_a_kubectl_snapshot_is_a_cluster_for_offline_checks(
    plane: ControlPlane, upstream: Path, tmp_path: Path
) -> None:
    """The README's route: `kubectl get crd,deploy,helmreleases... -A -o yaml > state.yaml`, --cluster."""
    state = tmp_path / "state.yaml"
    listed = plane.kubectl("get", "crd,deploy,helmreleases.helm.toolkit.fluxcd.io", "-A", "-o", "yaml")
    state.write_text(listed.stdout)
    snapshot: dict[str, Any] = yaml.safe_load(listed.stdout)
    assert snapshot["kind"] == "List"
    bundle = upstream / "gateway-api" / "v1.4.0" / "standard-install.yaml"
    offline = crdguard("check", "--cluster", str(state), str(bundle), env={}, home=tmp_path)
    live = crdguard("check", "--kubeconfig", str(plane.kubeconfig), str(bundle), env={}, home=tmp_path)
    assert offline.returncode == live.returncode == 1
    assert offline.stdout == live.stdout
