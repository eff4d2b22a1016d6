"""Fixtures shared by every test suite: the default catalog and the real upstream manifests.

The upstream folder (Gateway API bundles, kgateway and inference extension CRDs,
Flux CRDs) lives beside the repository in ``../shared/upstream``, or wherever
``CRDGUARD_UPSTREAM`` points. Without it the tests that read it skip, with the
reason, except in CI, where a skip would hide that they never ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def upstream_path() -> Path:
    return Path(os.environ.get("CRDGUARD_UPSTREAM") or REPO_ROOT.parent / "shared" / "upstream")


@pytest.fixture(scope="session")
def upstream() -> Path:
    """The folder of real upstream manifests; skips (fails when CI=true) if it is absent."""
    path = upstream_path()
    if not (path / "gateway-api").is_dir():
        reason = (
            f"upstream manifests not found at {path}: clone the shared fixtures beside the "
            "repository or set CRDGUARD_UPSTREAM to their folder"
        )
        if in_ci():
            pytest.fail(f"{reason} (CI=true: a skip would hide that these tests never ran)", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The packaged default catalog, as every command loads it without --catalog."""
    return load_catalog()
