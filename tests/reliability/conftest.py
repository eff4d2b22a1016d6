"""Fixtures of the reliability tests: real ``crdguard serve`` processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit.reviews import DEMO_CLUSTER
from relkit.serve import Serve, make_certs


@pytest.fixture(scope="module")
def demo_http() -> Iterator[Serve]:
    """``crdguard serve --insecure`` on the demo state (kgateway v2.0.4)."""
    with Serve("--cluster", str(DEMO_CLUSTER)) as serve:
        yield serve


@pytest.fixture()
def cert_dir(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "certs")
