"""Bad input to the CLI: the HTTP corpus through ``crdguard review``, bad manifests through
``crdguard check``. Exit 0 or 1 with an answer, or 2 with a one-line error; never a traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from relkit.report import Record
from relkit.reviews import DEMO_CLUSTER

from webhook.cli import main

from .corpus import corpus

pytestmark = pytest.mark.slow  # real server processes; minutes, not seconds


LAUGHS = "\n".join(
    [
        'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)),
        "apiVersion: apps/v1",
        "kind: Deployment",
        "metadata: {name: kgateway, namespace: kgateway-system, labels: *l8, annotations: *l8}",
        "spec: {template: {spec: {containers: *l8}}}",
    ]
)

BAD_MANIFESTS: dict[str, bytes] = {
    "truncated YAML": b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: [kgateway",
    "tab indentation": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: x\n",
    "binary garbage": bytes(range(256)) * 8,
    "invalid UTF-8": b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \xff}\n",
    "100,000-deep flow sequence": b"a: " + b"[" * 100_000 + b"]" * 100_000,
    "billion laughs (aliases 9^9 wide)": LAUGHS.encode(),
    "a list, not an object": b"- a\n- b\n",
    "a scalar document": b"just text\n",
    "kind missing": b"apiVersion: v1\nmetadata: {name: x}\n",
    "metadata is a string": b"apiVersion: apps/v1\nkind: Deployment\nmetadata: x\n",
    "List with a non-object item": b"apiVersion: v1\nkind: List\nitems: [1, null, x]\n",
    "YAML tag for a Python object": b"!!python/object/apply:os.system ['echo pwned']\n",
    "CRD versions is a string": (
        b"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        b"metadata: {name: backendtlspolicies.gateway.networking.k8s.io}\nspec: {versions: v1}\n"
    ),
}


def test_review_command_on_http_corpus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Record(
        "input",
        "`crdguard review` on the same corpus",
        "Feeds every case of the HTTP corpus (bodies within the limit) to `crdguard review` on stdin, "
        "in-process: exit 0 with a JSON AdmissionReview, or exit 2 with a one-line error, never an "
        "exception.",
    ) as rec:
        cases = [c for c in corpus() if len(c.body) < 4 * 2**20 and not c.chunked]
        codes: Counter[int] = Counter()
        problems = []
        for case in cases:
            stdin = io.TextIOWrapper(io.BytesIO(case.body))
            monkeypatch.setattr(sys, "stdin", stdin)
            try:
                code = main(["review", "--cluster", str(DEMO_CLUSTER)])
            except BaseException as exc:
                problems.append(f"{case.group}: {case.name}: {type(exc).__name__}: {exc}")
                continue
            out, err = capsys.readouterr()
            codes[code] += 1
            if code == 0:
                if '"response"' not in out:
                    problems.append(f"{case.group}: {case.name}: exit 0 without an answer")
            elif code == 2:
                if "Traceback" in err or len(err.strip().splitlines()) != 1:
                    problems.append(f"{case.group}: {case.name}: not a one-line error: {err[:300]!r}")
            else:
                problems.append(f"{case.group}: {case.name}: exit {code}")
        assert not problems, "\n".join(problems[:30])
        rec.note(cases=len(cases), exit_codes=dict(codes))
        rec.done(
            f"{len(cases)} cases: {codes[0]} x exit 0 with an answer, {codes[2]} x exit 2 with a one-line "
            "error; 0 exceptions"
        )


def test_check_command_on_bad_manifests(tmp_path: Path) -> None:
    with Record(
        "input",
        "`crdguard check` on bad manifests",
        "Runs the real `crdguard check` (subprocess, 1 GiB address-space limit) on truncated YAML, "
        "binary garbage, invalid UTF-8, a 100,000-deep sequence, a billion-laughs alias bomb, Python "
        "tags and objects of the wrong shape: exit 0/1/2 with readable output, no traceback.",
    ) as rec:
        codes: Counter[int] = Counter()
        problems = []
        for name, content in BAD_MANIFESTS.items():
            path = tmp_path / f"{len(codes)}-{abs(hash(name))}.yaml"
            path.write_bytes(content)
            result = subprocess.run(
                [sys.executable, "-m", "webhook.cli", "check", "--cluster", str(DEMO_CLUSTER), str(path)],
                capture_output=True,
                text=True,
                timeout=120,
                preexec_fn=_limit_memory,
            )
            codes[result.returncode] += 1
            if result.returncode not in (0, 1, 2) or "Traceback" in result.stderr:
                problems.append(f"{name}: exit {result.returncode}: {result.stderr[-500:]}")
            if result.returncode == 2 and not result.stderr.startswith("crdguard check: error: "):
                problems.append(f"{name}: unexpected error text {result.stderr[:200]!r}")
        assert not (tmp_path / "pwned").exists()
        assert not problems, "\n".join(problems)
        rec.note(cases=len(BAD_MANIFESTS), exit_codes=dict(codes))
        summary = ", ".join(f"{n} x exit {c}" for c, n in sorted(codes.items()))
        rec.done(f"{len(BAD_MANIFESTS)} manifests: {summary}; 0 tracebacks, every run under the 1 GiB limit")


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
