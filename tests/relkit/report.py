"""docs/reliability.md, written by the tests themselves.

A test wraps its body in ``with Record(...) as rec:``, notes numbers on the way
(``rec.note(cases=812)``) and states its result at the end (``rec.done("...")``).
On leaving the block the record is stored in docs/reliability.json under the
test's id, with the outcome pytest will report: passed only when the block ran
to ``done`` without an exception, skipped (with the reason) on a skip, failed
otherwise. The markdown is then rendered again from every stored record, so a
partial run updates its own rows and keeps the others (each row says when it ran).

Set CRDGUARD_RELIABILITY_REPORT=0 to leave the files alone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "docs" / "reliability.json"
DOC = REPO_ROOT / "docs" / "reliability.md"

SECTIONS = {
    "input": "Bad input (HTTP and CLI)",
    "clients": "Slow and many clients",
    "faults": "Faults against the real control plane",
    "certs": "Certificates and shutdown",
    "soak": "Soak",
    "security": "Security",
}

PREAMBLE = """\
# Reliability and security, measured

Every row below was written by the test named in it, at the end of its last
run on the machine and date shown (`tests/relkit/report.py` renders this file
from `docs/reliability.json`; do not edit either by hand). A row says
**failed** or **skipped** when that is what happened. Only the tests run since
the last full run are newer; run `make test` (and `make soak`) to refresh all.

**What was tested.** The last cell of each row names the code that ran, e.g.
`8be808f-dirty diff 5d1c0e9a7f21 +1 untracked`:

- `8be808f` is `git describe --always` at the run: the commit checked out.
- `-dirty` means tracked files differed from that commit (as `git describe
  --always --dirty` says), so the row describes that commit plus local changes;
  without it, the commit alone. This file and `docs/reliability.json` do not
  count: the tests write them while they run.
- `diff 5d1c0e9a7f21` is the first 12 hex digits of the SHA-256 of
  `git diff HEAD --binary -- . ':(exclude)docs/reliability.md'
  ':(exclude)docs/reliability.json'`, followed, when there are untracked files
  (`+N untracked`), by each one's name and content. Rows with the same describe
  and hash ran the same code; `diff e3b0c44298fc` (the hash of nothing) on a
  row without `-dirty` and untracked files means exactly the commit.
- A row that shows only a commit and "tree state unknown" was written before
  the tree was recorded: it may describe local changes on top of that commit.

The servers under test are real `crdguard serve` processes; "control plane"
means a real etcd and kube-apiserver built from the Kubernetes sources
(`hack/kube-tools.sh`). All traffic stays on 127.0.0.1.

## Decisions these tests pin down

- **`/readyz` while a watch is down.** Ready stays true once every watched type
  has been listed once: answering from the last known state beats failing every
  admission call, and the API server cannot change anything crdguard reads while
  crdguard cannot reach it either. Staleness is visible instead in `/metrics`:
  `crdguard_watch_connected{resource}` drops to 0 and
  `crdguard_watch_seconds_since_last_sync{resource}` grows (alert on it, e.g.
  above 300 s); `/state` shows `connected`, `errors` and `lastError` per type.
- **failurePolicy.** With every replica down, `Fail` (the chart's default)
  rejects each matched write with `failed calling webhook`; `Ignore` lets it
  through unchecked. Unmatched objects are never affected. How fast each answer
  comes is measured below; it depends on whether the address refuses
  connections (immediate) or swallows them (the webhook's `timeoutSeconds`).
- **Resync after an outage.** Failed lists and watches are retried with a
  jittered backoff capped at 5 s, so crdguard judges by the cluster again within
  seconds of the API server's return.
- **SIGTERM.** uvicorn stops accepting, finishes every request it has begun
  (up to `--graceful-shutdown`, 20 s by default, under the chart's 30 s
  terminationGracePeriodSeconds), then re-raises the signal: the container
  exits with status 143. A Service keeps sending new connections to a
  terminating pod for a moment; a preStop sleep of a few seconds covers that.
- **Dependency audit.** `pip-audit` over `requirements.lock` fails the test only
  for a vulnerability that has a fixed version (something to do); others are
  listed here. Where the advisory service cannot be reached, the test skips and
  says so.
- **Slow clients.** A body must arrive within `--body-timeout` seconds (HTTP
  408 after). uvicorn has no timeout for a connection that sends no request at
  all; idle connections cost a file descriptor and a few KB each, and the API
  server is the only legitimate client (restrict the port with a NetworkPolicy).
"""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _machine() -> str:
    return (
        f"{os.cpu_count()} CPU, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
    )


# The files these tests write: a run that rewrites them must not call its own tree dirty.
WRITTEN_HERE = (DATA, DOC)


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, timeout=30).stdout


def tree_identity(repo: Path = REPO_ROOT, ignore: tuple[Path, ...] = WRITTEN_HERE) -> dict[str, Any]:
    """What was tested: ``git describe --always`` (``-dirty`` when tracked files differ from HEAD,
    as ``git describe --dirty`` says, but not counting the files in ``ignore``), and a hash of the
    code under test. The hash covers ``git diff HEAD --binary`` (without ``ignore``) and every
    untracked, not ignored file by name and content, so two runs with the same hash ran the same code.
    """
    excludes = [f":(exclude){path.relative_to(repo)}" for path in ignore if path.is_relative_to(repo)]
    try:
        describe = _git(repo, "describe", "--always").decode().strip()
        diff = _git(repo, "diff", "HEAD", "--binary", "--", ".", *excludes)
        untracked = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", "--", ".", *excludes)
    except (OSError, subprocess.SubprocessError):
        return {"describe": "", "diff": "", "untracked": 0}
    digest = hashlib.sha256(diff)
    names = sorted(n for n in untracked.decode().split("\0") if n)
    for name in names:
        digest.update(b"\0untracked\0" + name.encode() + b"\0")
        digest.update((repo / name).read_bytes() if (repo / name).is_file() else b"")
    return {
        "describe": describe + ("-dirty" if diff else ""),
        "diff": digest.hexdigest()[:12],
        "untracked": len(names),
    }


def describe_tree(identity: dict[str, Any]) -> str:
    """One line for a row: ``b078841-dirty diff 3f2a…`` (and the untracked files, if any)."""
    if not identity.get("describe"):
        return ""
    untracked = identity.get("untracked", 0)
    extra = f" +{untracked} untracked" if untracked else ""
    return f"{identity['describe']} diff {identity['diff']}{extra}"


def _current_test() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return current.rsplit(" (", 1)[0] if current else ""


def enabled() -> bool:
    return os.environ.get("CRDGUARD_RELIABILITY_REPORT", "1") != "0"


class Record:
    """One row of docs/reliability.md; see the module docstring."""

    def __init__(self, section: str, title: str, what: str, key: str | None = None) -> None:
        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r}")
        self.section = section
        self.title = title
        self.what = what
        self.key = key or _current_test() or title
        self.numbers: dict[str, Any] = {}
        self.result: str | None = None

    def note(self, **numbers: Any) -> None:
        self.numbers.update(numbers)

    def done(self, result: str) -> None:
        self.result = result

    def __enter__(self) -> Record:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and exc_type.__name__ == "Skipped":
            outcome, result = "skipped", str(getattr(exc, "msg", exc) or exc)
        elif exc_type is not None or self.result is None:
            outcome = "failed"
            reason = (
                f"{exc_type.__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                if exc_type
                else ""
            )
            result = f"{reason or 'did not finish'}"
        else:
            outcome, result = "passed", self.result
        if enabled():
            store(
                self.key,
                {
                    "section": self.section,
                    "title": self.title,
                    "what": self.what,
                    "result": result,
                    "numbers": self.numbers,
                    "outcome": outcome,
                    "when": _now(),
                    "tree": tree_identity(),
                    "machine": _machine(),
                },
            )


def load() -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(DATA.read_text())
    except (OSError, ValueError):
        return {}
    return data


def store(key: str, entry: dict[str, Any]) -> None:
    records = load()
    records[key] = entry
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    DOC.write_text(render(records))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render(records: dict[str, dict[str, Any]]) -> str:
    lines = [PREAMBLE]
    for section, heading in SECTIONS.items():
        rows = sorted((k, r) for k, r in records.items() if r.get("section") == section)
        if not rows:
            continue
        lines += [
            f"## {heading}",
            "",
            "| Test | What it does | Result | Outcome | Run |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, r in rows:
            outcome = {"passed": "passed", "failed": "**failed**", "skipped": "**skipped**"}[r["outcome"]]
            where = key.split("::", 1)
            test = (
                f"{r['title']}<br>`{where[0].removeprefix('tests/')}::{where[1]}`"
                if len(where) == 2
                else r["title"]
            )
            tested = (
                describe_tree(r["tree"]) if "tree" in r else f"{r.get('commit') or ''} (tree state unknown)"
            )
            run = f"{r['when']}<br>`{tested}`"
            lines.append(
                f"| {_cell(test)} | {_cell(r['what'])} | {_cell(r['result'])} | {outcome} | {_cell(run)} |"
            )
        lines.append("")
    machines = sorted({r.get("machine", "") for r in records.values()} - {""})
    if machines:
        lines += ["Machines: " + "; ".join(machines) + ".", ""]
    return "\n".join(lines)


def fmt(value: float, unit: str = "") -> str:
    """A number as a person reads it: 3 significant digits."""
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()
