"""The incident's denial, then its fix followed literally, on a real kube-apiserver with crdguard registered.

Release URLs in the printed commands are replaced by the same bundles from ../shared/upstream, and
a chart upgrade by the objects it writes (kgateway-crds: its CRDs; kgateway: its Deployment at the
new version). No step may be denied, and the originally denied apply must then pass.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .cluster import ControlPlane
from .guard import Guard

# One control plane and one registered crdguard per module, as test_webhook's story sets them up.
from .test_webhook import apply, cluster, eventually, guard, kgateway_deployment

__all__ = ["cluster", "guard"]

NAMESPACE = "kgateway-system"
BTLS = "backendtlspolicies.gateway.networking.k8s.io"
RELEASE_URL = re.compile(
    r"releases/download/(?P<version>v[^/]+)/(?P<channel>standard|experimental)-install\.yaml"
)
CHART = re.compile(
    r"helm upgrade (?:--install )?(?P<release>\S+) oci://\S+/(?P<chart>[^/\s]+) --version (?P<version>\S+)"
)
WATCH_SETTLE = 2.0  # seconds for crdguard's watch to see a write before the next step is judged


def fix_a_commands(message: str) -> list[str]:
    """The commands of option a), in order, as printed in the denial."""
    block = message.split("  a) ", 1)[1].split("  b) ", 1)[0]
    assert "Retry this change" in block, block
    return [line.strip()[2:] for line in block.splitlines() if line.strip().startswith("$ ")]


def run_literally(cluster: ControlPlane, upstream: Path, command: str) -> None:
    if command.startswith("kubectl apply --server-side -f https://"):
        found = RELEASE_URL.search(command)
        assert found, command
        result = apply(
            cluster,
            "-f",
            str(upstream / "gateway-api" / found["version"] / f"{found['channel']}-install.yaml"),
        )
    else:
        found = CHART.search(command)
        assert found, f"a step this test cannot follow: {command}"
        assert f"-n {NAMESPACE}" in command
        if found["chart"] == "kgateway-crds":
            result = apply(cluster, "-f", str(upstream / "kgateway" / found["version"] / "crds"))
        else:
            assert found["chart"] == "kgateway" and found["release"] == "kgateway"
            result = apply(cluster, manifest=kgateway_deployment(found["version"]))
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    time.sleep(WATCH_SETTLE)


def test_following_the_denials_fix_literally_lets_the_denied_apply_through(
    cluster: ControlPlane, guard: Guard, upstream: Path
) -> None:
    assert (
        apply(cluster, "-f", str(upstream / "gateway-api/v1.3.0/experimental-install.yaml")).returncode == 0
    )
    assert apply(cluster, "-f", str(upstream / "kgateway/v2.0.4/crds")).returncode == 0
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{BTLS}", "--timeout=60s")
    assert apply(cluster, manifest=kgateway_deployment("v2.0.4")).returncode == 0
    eventually(lambda: guard.state()["objects"].get("ComponentRelease", 0) == 1, what="kgateway seen")

    denied = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml"))
    assert denied.returncode != 0
    assert f"crdguard denied UPDATE of CustomResourceDefinition {BTLS}" in denied.stderr
    commands = fix_a_commands(denied.stderr)
    assert commands, denied.stderr
    time.sleep(WATCH_SETTLE)

    for command in commands:
        run_literally(cluster, upstream, command)

    retried = apply(cluster, "-f", str(upstream / "gateway-api/v1.4.0/standard-install.yaml"))
    assert retried.returncode == 0, retried.stderr
    served = cluster.kubectl(
        "get", "crd", BTLS, "-o", "jsonpath={range .spec.versions[*]}{.name}={.served}{' '}{end}"
    )
    assert served.stdout.split() == ["v1=true", "v1alpha3=false"]
