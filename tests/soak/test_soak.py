"""`make soak`: the soak of tests/relkit/soak.py for CRDGUARD_SOAK_SECONDS (default 600)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from relkit.soak import check_soak

pytestmark = pytest.mark.soak


def test_soak(upstream: Path, tmp_path: Path) -> None:
    seconds = float(os.environ.get("CRDGUARD_SOAK_SECONDS", "600"))
    check_soak(upstream, tmp_path, seconds)
