"""The soak of `make soak`, for 60 seconds, in every `make test` (CI)."""

from __future__ import annotations

import os
from pathlib import Path

from relkit.soak import check_soak


def test_soak_60_seconds(upstream: Path, tmp_path: Path) -> None:
    check_soak(upstream, tmp_path, float(os.environ.get("CRDGUARD_SOAK_SHORT_SECONDS", "60")))
