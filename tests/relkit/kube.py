"""Helpers for tests against the real control plane of tests/e2e/cluster.py."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from e2e.cluster import ControlPlane
from e2e.conftest import locate_tools

T = TypeVar("T")


@contextmanager
def own_control_plane(extra_apiserver_args: Iterable[str] = ()) -> Iterator[ControlPlane]:
    """A control plane of the test's own, for tests that restart it or need special flags."""
    kube_bin_dir, helm = locate_tools()
    with ControlPlane(kube_bin_dir, helm, extra_apiserver_args=list(extra_apiserver_args)) as plane:
        yield plane


def apply(
    plane: ControlPlane, *objects: Mapping[str, Any], kubeconfig: Path | str | None = None, check: bool = True
) -> Any:
    return plane.kubectl(
        "apply",
        "--filename=-",
        input=yaml.safe_dump_all([dict(o) for o in objects]),
        kubeconfig=kubeconfig,
        check=check,
    )


def delete(plane: ControlPlane, kind: str, name: str, namespace: str | None = None) -> None:
    args = ["delete", kind, name, "--ignore-not-found", "--wait=false"]
    if namespace:
        args.append(f"--namespace={namespace}")
    plane.kubectl(*args)


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def client_cert_files(kubeconfig: Path, directory: Path) -> tuple[Path, Path]:
    """The client certificate and key embedded in a kubeconfig, written to files."""
    config = yaml.safe_load(kubeconfig.read_text())
    user = config["users"][0]["user"]
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "client.crt", directory / "client.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    return cert, key


def plain_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig for an unauthenticated plain-HTTP server (the proxy in tests/relkit/net.py)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "proxy", "cluster": {"server": server}}],
        "users": [{"name": "proxy", "user": {}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
        "current-context": "proxy",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def token_kubeconfig(path: Path, plane: ControlPlane, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": plane.server,
                    "certificate-authority-data": base64.b64encode(plane.ca.cert_pem).decode(),
                },
            }
        ],
        "users": [{"name": "crdguard", "user": {"token": token}}],
        "contexts": [{"name": "crdguard", "context": {"cluster": "e2e", "user": "crdguard"}}],
        "current-context": "crdguard",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def webhook_configuration(
    name: str,
    url: str,
    ca_bundle: bytes,
    *,
    failure_policy: str = "Fail",
    timeout_seconds: int = 5,
    resources: Iterable[tuple[str, str]] = (("apps", "deployments"),),
) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration shaped like the chart's, with a URL instead of a Service."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{group or 'core'}-{resource}.crdguard.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "matchPolicy": "Equivalent",
                "failurePolicy": failure_policy,
                "timeoutSeconds": timeout_seconds,
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                "rules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": [resource],
                        "operations": ["CREATE", "UPDATE"],
                    }
                ],
            }
            for group, resource in resources
        ],
    }


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def to_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
