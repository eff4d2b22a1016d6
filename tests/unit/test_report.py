"""docs/reliability.md rows name the code that ran: ``git describe`` with ``-dirty`` and a diff hash."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from relkit import report


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.invalid")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "docs").mkdir()
    (tmp_path / "code.py").write_text("answer = 1\n")
    (tmp_path / "docs" / "reliability.md").write_text("rows\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def identity(repo: Path) -> dict[str, object]:
    return report.tree_identity(repo, ignore=(repo / "docs" / "reliability.md",))


EMPTY = hashlib.sha256(b"").hexdigest()[:12]


def change_code(repo: Path) -> None:
    (repo / "code.py").write_text("answer = 2\n")


def rewrite_the_report(repo: Path) -> None:
    (repo / "docs" / "reliability.md").write_text("new rows\n")


def add_untracked_test(repo: Path) -> None:
    (repo / "test_new.py").write_text("def test(): pass\n")


def add_ignored_log(repo: Path) -> None:
    (repo / "run.log").write_text("noise\n")


@pytest.mark.parametrize(
    ("edit", "dirty", "same_hash", "untracked"),
    [
        pytest.param(lambda repo: None, False, True, 0, id="a clean tree is the commit with the empty hash"),
        pytest.param(change_code, True, False, 0, id="a changed tracked file makes the tree dirty"),
        pytest.param(
            rewrite_the_report, False, True, 0, id="the report the tests write does not make the tree dirty"
        ),
        pytest.param(
            add_untracked_test, False, False, 1, id="an untracked file changes the hash and is counted"
        ),
        pytest.param(add_ignored_log, False, True, 0, id="an ignored file changes nothing"),
    ],
)
def test_tree_identity(
    repo: Path, edit: Callable[[Path], None], dirty: bool, same_hash: bool, untracked: int
) -> None:
    edit(repo)
    found = identity(repo)
    head = git(repo, "rev-parse", "--short", "HEAD")
    assert found["describe"] == head + ("-dirty" if dirty else "")
    assert (found["diff"] == EMPTY) is same_hash
    assert found["untracked"] == untracked


def test_the_hash_follows_the_content_of_the_change(repo: Path) -> None:
    change_code(repo)
    first = identity(repo)["diff"]
    (repo / "code.py").write_text("answer = 3\n")
    assert identity(repo)["diff"] not in (first, EMPTY)
    change_code(repo)
    assert identity(repo)["diff"] == first


def test_the_hash_is_the_documented_command_when_nothing_is_untracked(repo: Path) -> None:
    change_code(repo)
    diff = subprocess.run(
        ["git", "-C", str(repo), "diff", "HEAD", "--binary", "--", ".", ":(exclude)docs/reliability.md"],
        capture_output=True,
        check=True,
    ).stdout
    assert identity(repo)["diff"] == hashlib.sha256(diff).hexdigest()[:12]


def test_every_rendered_row_names_describe_and_hash() -> None:
    tree = {"describe": "abc1234-dirty", "diff": "0123456789ab", "untracked": 2}
    row = {"section": "soak", "title": "t", "what": "w", "result": "r", "outcome": "passed", "when": "now"}
    text = report.render({"tests/x.py::test_a": {**row, "tree": tree}, "tests/x.py::test_b": row})
    assert "| now<br>`abc1234-dirty diff 0123456789ab +2 untracked` |" in text
    assert "(tree state unknown)" in text.split("test_b")[1]


def test_a_record_stores_the_tree_of_this_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(report, "DATA", tmp_path / "reliability.json")
    monkeypatch.setattr(report, "DOC", tmp_path / "reliability.md")
    monkeypatch.setenv("CRDGUARD_RELIABILITY_REPORT", "1")
    with report.Record("soak", "t", "w", key="k") as rec:
        rec.done("ok")
    stored = report.load()["k"]["tree"]
    assert stored == report.tree_identity()
    assert stored["describe"].startswith(git(report.REPO_ROOT, "rev-parse", "--short", "HEAD"))
