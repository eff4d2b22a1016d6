"""pip-audit over requirements.lock: fail on a known vulnerability that has a fixed version.

A vulnerability without a fix is listed in docs/reliability.md but does not fail the test:
nothing can be done about it but watch. It runs only with `make audit-deps` (marker
``audit_deps``); there, an advisory service that cannot be reached (no network, or an index
that serves no per-version metadata) is a failure with the reason: an audit that could not
look must not pass.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT
from relkit.report import Record

pytestmark = [pytest.mark.slow, pytest.mark.audit_deps]  # reaches the advisory service


LOCK = REPO_ROOT / "requirements.lock"


def test_pip_audit_locked_dependencies(tmp_path: Path) -> None:
    with Record(
        "security",
        "pip-audit over requirements.lock",
        "Runs `pip-audit -r requirements.lock --no-deps --disable-pip` against the PyPI advisory data. "
        "Fails on a vulnerability with a fixed version available; lists the others.",
    ) as rec:
        if importlib.util.find_spec("pip_audit") is None:
            pytest.fail("pip-audit is not installed (it is a dev dependency: make venv)", pytrace=False)
        out = tmp_path / "audit.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--requirement",
                str(LOCK),
                "--no-deps",
                "--disable-pip",
                "--progress-spinner=off",
                "--format=json",
                f"--output={out}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if not out.exists():
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
            pytest.fail(f"the advisory service could not be reached: {reason}", pytrace=False)
        report = json.loads(out.read_text())
        dependencies = report.get("dependencies", [])
        audited = [d for d in dependencies if "skip_reason" not in d]
        if not audited:
            sample = dependencies[0].get("skip_reason", "") if dependencies else "empty report"
            pytest.fail(
                f"the advisory service answered for none of the {len(dependencies)} locked packages "
                f"(e.g. {sample!r}): the package index here serves no per-version metadata",
                pytrace=False,
            )
        vulns = [(d["name"], d["version"], v) for d in audited for v in d.get("vulns", [])]
        fixable = [
            f"{n} {ver}: {v['id']} (fixed in {', '.join(v['fix_versions'])})"
            for n, ver, v in vulns
            if v.get("fix_versions")
        ]
        unfixed = [f"{n} {ver}: {v['id']} (no fix yet)" for n, ver, v in vulns if not v.get("fix_versions")]
        skipped = [d["name"] for d in dependencies if "skip_reason" in d]
        rec.note(audited=len(audited), skipped=skipped, fixable=fixable, unfixed=unfixed)
        assert not fixable, "upgrade: " + "; ".join(fixable)
        rec.done(
            f"{len(audited)} locked packages audited, {len(vulns)} known vulnerabilities"
            + (f" without a fix: {'; '.join(unfixed)}" if unfixed else "")
            + (f"; not audited: {', '.join(skipped)}" if skipped else "")
        )
