"""Smoke tests of the end-to-end harness against a real kube-apiserver.

They prove the harness, not crdguard: a real server takes the real Gateway API
bundle, serves exactly what the CRDs say, restarts, and enforces RBAC.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import ControlPlane, ControlPlaneError

GATEWAY_API_STANDARD_V1_4_0 = Path("gateway-api/v1.4.0/standard-install.yaml")
BACKEND_TLS_POLICIES = "backendtlspolicies.gateway.networking.k8s.io"
SERVED_FLAGS = '{range .spec.versions[*]}{.name}={.served}{" "}{end}'


def crd_names(bundle: Path) -> list[str]:
    return [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(bundle.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


@pytest.fixture(scope="module")
def gateway_api_standard(control_plane: ControlPlane, upstream: Path) -> list[str]:
    """The Gateway API v1.4.0 standard bundle, server-side applied and Established."""
    bundle = upstream / GATEWAY_API_STANDARD_V1_4_0
    names = crd_names(bundle)
    control_plane.kubectl("apply", "--server-side", "--field-manager=crdguard-e2e", f"--filename={bundle}")
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=90s", *(f"crd/{n}" for n in names)
    )
    return names


def test_standard_bundle_installs_every_crd(
    control_plane: ControlPlane, gateway_api_standard: list[str]
) -> None:
    listed = control_plane.kubectl("get", "crd", "--output=jsonpath={.items[*].metadata.name}").stdout.split()
    assert sorted(gateway_api_standard) == sorted(n for n in listed if "gateway.networking" in n)
    assert BACKEND_TLS_POLICIES in gateway_api_standard


@pytest.mark.parametrize(
    ("crd", "served_flags"),
    [
        pytest.param(
            BACKEND_TLS_POLICIES,
            "v1=true v1alpha3=false",
            id="backendtlspolicies serves v1 and lists v1alpha3 unserved",
        ),
        pytest.param(
            "gateways.gateway.networking.k8s.io",
            "v1=true v1beta1=true",
            id="gateways serves v1 and v1beta1",
        ),
        pytest.param(
            "referencegrants.gateway.networking.k8s.io",
            "v1beta1=true",
            id="referencegrants serves only v1beta1",
        ),
    ],
)
def test_crd_served_flags_as_stored(
    control_plane: ControlPlane, gateway_api_standard: list[str], crd: str, served_flags: str
) -> None:
    result = control_plane.kubectl("get", f"crd/{crd}", f"--output=jsonpath={SERVED_FLAGS}")
    assert result.stdout.strip() == served_flags


@pytest.mark.parametrize(
    ("group_version", "served"),
    [
        pytest.param("gateway.networking.k8s.io/v1", True, id="discovery has backendtlspolicies in v1"),
        pytest.param(
            "gateway.networking.k8s.io/v1alpha3",
            False,
            id="discovery has no backendtlspolicies in v1alpha3",
        ),
    ],
)
def test_discovery_follows_served_flag(
    control_plane: ControlPlane, gateway_api_standard: list[str], group_version: str, served: bool
) -> None:
    result = control_plane.kubectl("get", "--raw", f"/apis/{group_version}", check=False)
    resources = (
        {r["name"] for r in json.loads(result.stdout)["resources"]} if result.returncode == 0 else set()
    )
    assert ("backendtlspolicies" in resources) is served


def test_server_reports_its_build_version(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "--output=json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.35.4"
    assert version["clientVersion"]["gitVersion"] == "v1.35.4"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ("version", "--template={{.Version}}"),
            "v3.21.4",
            id="helm reports its release version",
        ),
        pytest.param(
            ("list", "--all-namespaces", "--output=json"),
            "[]",
            id="helm reaches the cluster and lists no releases",
        ),
    ],
)
def test_helm(control_plane: ControlPlane, args: tuple[str, ...], expected: str) -> None:
    assert control_plane.helm(*args).stdout.strip() == expected


@pytest.mark.parametrize(
    ("user", "groups", "verb_resource", "allowed"),
    [
        pytest.param(
            "alice", ["developers"], ("list", "secrets"), "no", id="a user without grants cannot list secrets"
        ),
        pytest.param(
            "alice",
            ["developers"],
            ("get", "namespaces"),
            "no",
            id="a user without grants cannot get namespaces",
        ),
        pytest.param(None, [], ("list", "secrets"), "yes", id="the admin can list secrets"),
    ],
)
def test_rbac_can_i(
    control_plane: ControlPlane,
    user: str | None,
    groups: list[str],
    verb_resource: tuple[str, str],
    allowed: str,
) -> None:
    kubeconfig = control_plane.make_user_kubeconfig(user, groups) if user else None
    result = control_plane.kubectl(
        "auth", "can-i", *verb_resource, "--namespace=default", kubeconfig=kubeconfig, check=False
    )
    assert result.stdout.strip() == allowed


def test_user_without_grants_is_forbidden_to_list_secrets(control_plane: ControlPlane) -> None:
    kubeconfig = control_plane.make_user_kubeconfig("bob", ["developers"])
    result = control_plane.kubectl(
        "get", "secrets", "--namespace=default", kubeconfig=kubeconfig, check=False
    )
    assert result.returncode != 0
    assert 'User "bob" cannot list resource "secrets"' in result.stderr
    assert "Forbidden" in result.stderr


def test_compaction_expires_old_revisions(control_plane: ControlPlane) -> None:
    before = control_plane.compact_etcd()
    control_plane.kubectl("create", "configmap", "compaction-probe", "--namespace=default")
    after = control_plane.compact_etcd()
    assert after > before
    with pytest.raises(ControlPlaneError, match="compacted"):
        control_plane.etcd_range(b"/registry/", revision=before)


@pytest.fixture(scope="module")
def uncached_control_plane(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """A second cluster whose watches go straight to etcd (no watch cache)."""
    with ControlPlane(control_plane.kube_bin_dir, extra_apiserver_args=["--watch-cache=false"]) as cluster:
        yield cluster


def first_watch_event(cluster: ControlPlane, since: str) -> tuple[str, int | None]:
    watched = cluster.kubectl(
        "get",
        "--raw",
        f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={since}&timeoutSeconds=2",
    )
    event = json.loads(watched.stdout.splitlines()[0])
    return event["type"], event["object"].get("code")


@pytest.mark.parametrize(
    ("cluster_fixture", "restart", "expected"),
    [
        pytest.param(
            "uncached_control_plane",
            False,
            ("ERROR", 410),
            id="without the watch cache a watch from a compacted revision is gone",
        ),
        pytest.param(
            "control_plane",
            False,
            ("ADDED", None),
            id="the watch cache still serves a compacted revision from memory",
        ),
        pytest.param(
            "control_plane",
            True,
            ("ERROR", 410),
            id="a restarted apiserver answers gone for revisions before its cache",
        ),
    ],
)
def test_watch_after_compaction(
    request: pytest.FixtureRequest,
    cluster_fixture: str,
    restart: bool,
    expected: tuple[str, int | None],
) -> None:
    cluster: ControlPlane = request.getfixturevalue(cluster_fixture)
    listed = json.loads(cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/configmaps").stdout)
    since = listed["metadata"]["resourceVersion"]
    # Two writes: a watch "since" R starts at R+1, which compacting at R+1 keeps.
    for _ in range(2):
        name = f"watch-probe-{uuid.uuid4().hex[:8]}"
        cluster.kubectl("create", "configmap", name, "--namespace=default")
    cluster.compact_etcd()
    if restart:
        cluster.stop_apiserver()
        cluster.start_apiserver()

    assert first_watch_event(cluster, since) == expected


def test_crds_survive_apiserver_restart(control_plane: ControlPlane, gateway_api_standard: list[str]) -> None:
    control_plane.stop_apiserver()
    down = control_plane.kubectl("get", f"crd/{BACKEND_TLS_POLICIES}", check=False, timeout=30)
    assert down.returncode != 0

    control_plane.start_apiserver()
    result = control_plane.kubectl("get", f"crd/{BACKEND_TLS_POLICIES}", f"--output=jsonpath={SERVED_FLAGS}")
    assert result.stdout.strip() == "v1=true v1alpha3=false"
