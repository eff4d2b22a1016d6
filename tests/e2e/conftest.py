"""Fixtures for the end-to-end tests: a real control plane, shared by the session.

Without the binaries these tests skip locally, with a reason that says what to
do, and fail when ``CI=true``: a skipped end-to-end suite in CI would hide that
it never ran. The ``upstream`` fixture (real CRD bundles) comes from
``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from .cluster import ControlPlane

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
KUBE_TOOLS = REPO_ROOT / "hack" / "kube-tools.sh"
KUBE_BINARIES = ("kube-apiserver", "etcd", "kubectl")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where a skip would go unnoticed."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


def default_tool_paths() -> tuple[Path, Path]:
    """The cache paths from ``hack/kube-tools.sh env``, the one place versions are pinned."""
    result = subprocess.run(["bash", str(KUBE_TOOLS), "env"], capture_output=True, text=True, check=True)
    exports: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exports[name] = shlex.split(value)[0]
    return Path(exports["CRDGUARD_KUBE_BIN_DIR"]), Path(exports["CRDGUARD_HELM"])


def missing_tools(kube_bin_dir: Path, helm: Path) -> list[str]:
    paths = [kube_bin_dir / name for name in KUBE_BINARIES] + [helm]
    return [str(p) for p in paths if not os.access(p, os.X_OK)]


def locate_tools() -> tuple[Path, Path]:
    """Binaries from CRDGUARD_KUBE_BIN_DIR / CRDGUARD_HELM, else the build cache.

    In CI a missing cache is built here (this can take half an hour on two
    cores); locally the test skips and says how to build, rather than start a
    long build by surprise.
    """
    default_bin_dir, default_helm = default_tool_paths()
    kube_bin_dir = Path(os.environ.get("CRDGUARD_KUBE_BIN_DIR") or default_bin_dir)
    helm = Path(os.environ.get("CRDGUARD_HELM") or default_helm)
    missing = missing_tools(kube_bin_dir, helm)
    if not missing:
        return kube_bin_dir, helm

    if (kube_bin_dir, helm) != (default_bin_dir, default_helm):
        unavailable(f"CRDGUARD_KUBE_BIN_DIR/CRDGUARD_HELM point at missing binaries: {missing}")
    if shutil.which("go") is None:
        unavailable(f"Go is not installed, so the control-plane binaries cannot be built: {missing}")
    if not in_ci():
        unavailable(f"control-plane binaries not built yet; run `bash {KUBE_TOOLS.relative_to(REPO_ROOT)}`")
    build = subprocess.run(["bash", str(KUBE_TOOLS), "all"], capture_output=True, text=True)
    if build.returncode != 0:
        tail = "\n".join(build.stderr.splitlines()[-30:])
        pytest.fail(f"hack/kube-tools.sh failed:\n{tail}", pytrace=False)
    return kube_bin_dir, helm


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd and kube-apiserver, started once for the session."""
    kube_bin_dir, helm = locate_tools()
    with ControlPlane(kube_bin_dir, helm) as cluster:
        yield cluster
