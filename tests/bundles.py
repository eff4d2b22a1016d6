"""Real Gateway API (and Inference Extension) release bundles, for tests: from the shared upstream
folder, or the Go module.

The shared folder holds the install files of a few tags. Any other tag's CRDs are in
the ``sigs.k8s.io/gateway-api`` Go module (``config/crd/<channel>/``), which the Go
module proxy serves; the install file is those files in name order, as the tag's
``hack/build-install-yaml.sh`` concatenates them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
INFERENCE_EXTENSION_MODULE = "sigs.k8s.io/gateway-api-inference-extension"


class BundleUnavailable(RuntimeError):
    """A bundle that neither the shared folder nor the Go module proxy could provide."""


def upstream_root() -> Path:
    here = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("CRDGUARD_UPSTREAM") or here.parent / "shared" / "upstream")


@functools.cache
def go_module_dir(module: str, version: str) -> Path:
    """The module's source directory in the Go module cache (downloaded once per machine)."""
    go = shutil.which("go")
    if go is None:
        raise BundleUnavailable(f"{module}@{version}: go is not installed")
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [go, "mod", "download", "-json", f"{module}@{version}"],
            cwd=scratch,
            # A tag may need a newer Go than this machine has: go fetches that toolchain as a module.
            env={
                **os.environ,
                "GOFLAGS": "-mod=mod",
                "GO111MODULE": "on",
                "GOWORK": "off",
                "GOTOOLCHAIN": "auto",
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or not info.get("Dir"):
        raise BundleUnavailable(f"{module}@{version}: {info.get('Error') or done.stderr.strip()}")
    return Path(info["Dir"])


def gateway_api_texts(version: str, channel: str) -> list[tuple[str, str]]:
    """``(file name, YAML text)`` of every file of a bundle, in install order."""
    shared = upstream_root() / "gateway-api" / version / f"{channel}-install.yaml"
    if shared.is_file():
        return [(shared.name, shared.read_text())]
    folder = go_module_dir(GATEWAY_API_MODULE, version) / "config" / "crd" / channel
    files = sorted(folder.glob("gateway*.yaml"))
    if not files:
        raise BundleUnavailable(f"{GATEWAY_API_MODULE}@{version} has no config/crd/{channel}/gateway*.yaml")
    return [(f.name, f.read_text()) for f in files]


@functools.cache
def _objects(version: str, channel: str) -> tuple[str, ...]:
    # Cached as JSON text so every caller gets its own fresh copy of the objects.
    return tuple(
        json.dumps(doc)
        for _, text in gateway_api_texts(version, channel)
        for doc in yaml.safe_load_all(text)
        if isinstance(doc, dict)
    )


def gateway_api_objects(version: str, channel: str) -> list[dict[str, Any]]:
    """Every object of a Gateway API bundle (CRDs, and the safe-upgrades policy from v1.5.0)."""
    return [json.loads(doc) for doc in _objects(version, channel)]


def gateway_api_crds(version: str, channel: str) -> list[dict[str, Any]]:
    return [o for o in gateway_api_objects(version, channel) if o.get("kind") == "CustomResourceDefinition"]


def inference_extension_crds(version: str) -> list[dict[str, Any]]:
    """An Inference Extension release's CRDs: its manifests.yaml in the shared folder, or the Go module's
    ``config/crd/bases`` (the CRDs that release's manifests install)."""
    path = upstream_root() / "gateway-api-inference-extension" / version / "manifests.yaml"
    if path.is_file():
        texts = [path.read_text()]
    else:
        folder = go_module_dir(INFERENCE_EXTENSION_MODULE, version) / "config" / "crd" / "bases"
        texts = [f.read_text() for f in sorted(folder.glob("*.yaml"))]
        if not texts:
            raise BundleUnavailable(f"{INFERENCE_EXTENSION_MODULE}@{version} has no config/crd/bases/*.yaml")
    return [
        doc
        for text in texts
        for doc in yaml.safe_load_all(text)
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]


ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3"
ARGOCD_VERSION = "v3.1.0"


def argocd_application_crd(version: str = ARGOCD_VERSION) -> dict[str, Any]:
    """Argo CD's real Application CRD, read from its Go module at a release tag (never committed)."""
    path = go_module_dir(ARGOCD_MODULE, version) / "manifests" / "crds" / "application-crd.yaml"
    if not path.is_file():
        raise BundleUnavailable(f"{ARGOCD_MODULE}@{version} has no manifests/crds/application-crd.yaml")
    crd = yaml.safe_load(path.read_text())
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise BundleUnavailable(f"{path}: not a CustomResourceDefinition")
    return crd
