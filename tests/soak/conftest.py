"""The soak runs only when asked for with ``-m soak`` (``make soak``), never in ``make test``.

The marker is registered here too, so that --strict-markers accepts it even where
pyproject.toml does not list it.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long mixed-load run against a real control plane (make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the soak runs with `make soak` (pytest -m soak tests/soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
