"""The README's catalog table is the default catalog, rendered by hack/catalog_table.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from helpers import REPO_ROOT

from webhook.rules.catalog import Catalog

SCRIPT = REPO_ROOT / "hack" / "catalog_table.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("catalog_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_catalog(catalog: Catalog) -> None:
    table = _script().render(catalog)
    assert table in (REPO_ROOT / "README.md").read_text(), "run python3 hack/catalog_table.py"


def test_the_table_has_one_row_per_rule_with_its_evidence(catalog: Catalog) -> None:
    rows = [line for line in _script().render(catalog).splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(catalog.rules)
    for rule in catalog.rules.values():
        (row,) = [r for r in rows if f"| `{rule.id}` |" in r]
        assert row.startswith(f"| {rule.component} |")
        # Six cells: no identifier may break the row with a literal "|".
        assert row.count(" | ") == 5, rule.id
        for evidence in rule.evidence:
            assert f"{evidence.repo}@{evidence.tag} `{evidence.path}`" in row, rule.id


def test_check_mode_passes_on_the_readme_and_fails_on_a_stale_copy_that_a_rewrite_repairs(
    tmp_path: Path,
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True
        )

    assert run("--check").returncode == 0
    script = _script()
    stale = tmp_path / "README.md"
    stale.write_text(
        script.replaced((REPO_ROOT / "README.md").read_text(), f"{script.START}\nold\n{script.END}")
    )
    failed = run("--check", "--readme", str(stale))
    assert failed.returncode == 1 and "stale" in failed.stderr
    assert run("--readme", str(stale)).returncode == 0
    assert stale.read_text() == (REPO_ROOT / "README.md").read_text()
