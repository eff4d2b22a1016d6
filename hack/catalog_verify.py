#!/usr/bin/env python3
"""Check every catalog rule's evidence against upstream source at its release tag.

Each rule in ``webhook/rules/catalog/*.yaml`` cites evidence ``{repo, tag, path, identifier}``.
This script obtains the repository at that tag through the Go module proxy
(``go mod download -json <module>@<tag>``), reads ``path`` there and checks that
``identifier`` literally appears in it. It writes a Markdown report with one row per evidence
and exits 1 when any evidence is contradicted: the file is there at that tag but does not
contain the identifier. Evidence that cannot be obtained here (a tag without a leading ``v`` is
no Go module version; a version the proxy does not serve; a path outside the module download)
is reported with the reason and does not fail the run.

Usage: python3 hack/catalog_verify.py [--catalog-dir DIR | FILE ...] [--out docs/catalog-evidence.md]
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

# Repositories whose Go module path is not github.com/<owner>/<name>.
MODULE_PATHS: dict[str, str] = {
    "kubernetes-sigs/gateway-api": "sigs.k8s.io/gateway-api",
    "kubernetes-sigs/gateway-api-inference-extension": "sigs.k8s.io/gateway-api-inference-extension",
    "kubernetes-sigs/controller-runtime": "sigs.k8s.io/controller-runtime",
    "kubernetes/client-go": "k8s.io/client-go",
    "kubernetes/apimachinery": "k8s.io/apimachinery",
    "kubernetes/api": "k8s.io/api",
    "kubernetes/apiextensions-apiserver": "k8s.io/apiextensions-apiserver",
    "istio/istio": "istio.io/istio",
}

# A Go module version: vMAJOR.MINOR.PATCH with optional pre-release and build metadata.
_MODULE_VERSION = re.compile(r"^v(?P<major>0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
_URL = re.compile(r"https?://\S+")
DOWNLOAD_TIMEOUT_SECONDS = 900


class Result(enum.Enum):
    VERIFIED = "verified"
    MISSING = "identifier missing"
    NO_IDENTIFIER = "no identifier"
    UNOBTAINABLE = "not obtainable here"


@dataclass(frozen=True)
class Evidence:
    source: str  # catalog file name
    rule: str
    repo: str
    tag: str
    path: str
    identifier: str | None


@dataclass(frozen=True)
class Check:
    evidence: Evidence
    result: Result
    detail: str


@dataclass(frozen=True)
class Download:
    """A module download: the directory it unpacked to, or why there is none."""

    module: str
    directory: Path | None
    reason: str


def module_candidates(repo: str, tag: str) -> list[str]:
    """Module paths to try for ``repo`` at ``tag``, the most likely first."""
    base = MODULE_PATHS.get(repo, f"github.com/{repo}")
    match = _MODULE_VERSION.match(tag)
    if match is not None:
        major = int(match["major"])
        if major >= 2:
            # A module at v2+ normally lives at <path>/vN; without a go.mod it is "+incompatible".
            return [f"{base}/v{major}", base]
    return [base]


def _clean(message: str) -> str:
    """One line of a go command's error, without addresses of the hosts it talked to."""
    text = _URL.sub("(address omitted)", message.strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:300] if lines else "no error text"


def _explain(error: str) -> str:
    lowered = error.lower()
    if "403" in lowered or "not available" in lowered or "410" in lowered or "404" in lowered:
        return "the module proxy reachable here does not serve this version"
    if "unknown revision" in lowered or "invalid version" in lowered:
        return f"no such module version ({_clean(error)})"
    return _clean(error)


class ModuleFetcher:
    """Downloads each (module, tag) once, through the ordinary ``go`` client."""

    def __init__(self, go: str = "go") -> None:
        self._go = go
        self._cache: dict[tuple[str, str], Download] = {}
        self._workdir = tempfile.mkdtemp(prefix="catalog-verify-")

    def fetch(self, repo: str, tag: str) -> Download:
        key = (repo, tag)
        if key not in self._cache:
            self._cache[key] = self._fetch(repo, tag)
        return self._cache[key]

    def _fetch(self, repo: str, tag: str) -> Download:
        candidates = module_candidates(repo, tag)
        if _MODULE_VERSION.match(tag) is None:
            return Download(
                candidates[0],
                None,
                f"tag {tag!r} is not a Go module version (module versions are v<major>.<minor>.<patch>)",
            )
        reasons: list[str] = []
        for module in candidates:
            directory, error = self._download(module, tag)
            if directory is not None:
                return Download(module, directory, "")
            reasons.append(f"{module}: {_explain(error)}")
        return Download(candidates[0], None, "; ".join(reasons))

    def _download(self, module: str, tag: str) -> tuple[Path | None, str]:
        env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", GO111MODULE="on")
        try:
            proc = subprocess.run(
                [self._go, "mod", "download", "-json", f"{module}@{tag}"],
                cwd=self._workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=DOWNLOAD_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError:
            return None, "the go command is not installed"
        except subprocess.TimeoutExpired:
            return None, f"go mod download took longer than {DOWNLOAD_TIMEOUT_SECONDS} s"
        info: dict[str, object] = {}
        if proc.stdout.strip():
            try:
                loaded = json.loads(proc.stdout)
            except json.JSONDecodeError:
                loaded = {}
            if isinstance(loaded, dict):
                info = loaded
        directory = info.get("Dir")
        if isinstance(directory, str) and directory and Path(directory).is_dir():
            return Path(directory), ""
        error = info.get("Error")
        archive = info.get("Zip")
        if isinstance(error, str) and "requires go" in error and isinstance(archive, str):
            # The module needs a newer Go than this one, so go will not unpack it; the verified
            # zip is in the download cache all the same, and reading files needs no toolchain.
            unpacked = self._unpack(Path(archive), module, tag)
            if unpacked is not None:
                return unpacked, ""
        return None, error if isinstance(error, str) and error else (proc.stderr or "no Dir in go output")

    def _unpack(self, archive: Path, module: str, tag: str) -> Path | None:
        prefix = f"{module}@{tag}/"
        target = Path(self._workdir) / "unpacked" / re.sub(r"[^A-Za-z0-9._-]", "_", f"{module}@{tag}")
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.infolist():
                    name = member.filename
                    if member.is_dir() or not name.startswith(prefix) or ".." in Path(name).parts:
                        continue
                    destination = target / name[len(prefix) :]
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(bundle.read(member))
        except (OSError, zipfile.BadZipFile):
            return None
        return target if target.is_dir() else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def check(evidence: Evidence, fetcher: ModuleFetcher) -> Check:
    download = fetcher.fetch(evidence.repo, evidence.tag)
    if download.directory is None:
        if evidence.identifier is None:
            return Check(
                evidence, Result.NO_IDENTIFIER, f"nothing to grep; not obtainable here: {download.reason}"
            )
        return Check(evidence, Result.UNOBTAINABLE, download.reason)
    where = download.directory / evidence.path
    label = f"{download.module}@{evidence.tag}"
    if not where.exists():
        if evidence.identifier is None:
            return Check(evidence, Result.NO_IDENTIFIER, f"nothing to grep; {evidence.path} not in {label}")
        return Check(
            evidence,
            Result.UNOBTAINABLE,
            f"{evidence.path} is not in the {label} module download "
            "(wrong path, or a file outside that module such as a nested module)",
        )
    if evidence.identifier is None:
        kind = "directory" if where.is_dir() else "file"
        return Check(evidence, Result.NO_IDENTIFIER, f"{kind} present in {label}; nothing to grep")
    files = sorted(p for p in where.rglob("*") if p.is_file()) if where.is_dir() else [where]
    for file in files:
        text = _read_text(file)
        if text is not None and evidence.identifier in text:
            shown = file.relative_to(download.directory).as_posix()
            return Check(evidence, Result.VERIFIED, f"found in {shown} ({label})")
    return Check(
        evidence, Result.MISSING, f"{evidence.path} is in {label} but does not contain the identifier"
    )


def _evidence_items(document: object, source: str) -> Iterable[Evidence]:
    if not isinstance(document, dict):
        raise ValueError(f"{source}: not a mapping")
    rules = document.get("rules") or []
    if not isinstance(rules, list):
        raise ValueError(f"{source}: rules must be a list")
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise ValueError(f"{source}: rules[{index}] is not a mapping")
        rule_id = str(rule.get("id", f"rules[{index}]"))
        items = rule.get("evidence") or []
        if not isinstance(items, list):
            raise ValueError(f"{source}: rule {rule_id}: evidence must be a list")
        for number, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{source}: rule {rule_id}: evidence[{number}] is not a mapping")
            missing = [key for key in ("repo", "tag", "path") if not item.get(key)]
            if missing:
                raise ValueError(f"{source}: rule {rule_id}: evidence[{number}] lacks {', '.join(missing)}")
            identifier = item.get("identifier")
            yield Evidence(
                source=source,
                rule=rule_id,
                repo=str(item["repo"]),
                tag=str(item["tag"]),
                path=str(item["path"]).strip("/"),
                identifier=None if identifier is None or identifier == "" else str(identifier),
            )


def load_evidence(files: Sequence[Path]) -> list[Evidence]:
    found: list[Evidence] = []
    for file in files:
        with file.open(encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
        found.extend(_evidence_items(document, file.name))
    return found


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    body = _cell(text)
    fence = "``" if "`" in body else "`"
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def render(checks: Sequence[Check]) -> str:
    counts = {result: sum(1 for c in checks if c.result is result) for result in Result}
    lines = [
        "# Catalog evidence",
        "",
        "Written by `hack/catalog_verify.py`: each rule's evidence, read at its tag from the Go module",
        "download of its repository, and whether the cited identifier appears in the cited file.",
        "",
        "| result | count |",
        "| --- | --- |",
        *(f"| {result.value} | {counts[result]} |" for result in Result),
        "",
        "| catalog | rule | repository@tag | path | identifier | result | detail |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in checks:
        e = c.evidence
        lines.append(
            f"| {_cell(e.source)} | {_cell(e.rule)} | {_cell(e.repo)}@{_cell(e.tag)} | {_code(e.path)} "
            f"| {_code(e.identifier) if e.identifier else '-'} | {c.result.value} | {_cell(c.detail)} |"
        )
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "files", nargs="*", type=Path, help="catalog files (default: every *.yaml in --catalog-dir)"
    )
    parser.add_argument("--catalog-dir", type=Path, default=Path("webhook/rules/catalog"))
    parser.add_argument("--out", type=Path, default=Path("docs/catalog-evidence.md"))
    parser.add_argument("--go", default="go", help="the go command (default: go)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    files: list[Path] = list(args.files) or sorted(args.catalog_dir.glob("*.yaml"))
    if not files:
        print(f"catalog-verify: no catalog files in {args.catalog_dir}", file=sys.stderr)
        return 2
    try:
        evidence = load_evidence(files)
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"catalog-verify: {err}", file=sys.stderr)
        return 2
    fetcher = ModuleFetcher(args.go)
    checks: list[Check] = []
    for item in evidence:
        result = check(item, fetcher)
        checks.append(result)
        print(f"{result.result.value:20} {item.rule} {item.repo}@{item.tag} {item.path}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(checks), encoding="utf-8")
    contradicted = [c for c in checks if c.result is Result.MISSING]
    summary = ", ".join(f"{sum(1 for c in checks if c.result is r)} {r.value}" for r in Result)
    print(f"catalog-verify: {len(checks)} evidence: {summary}; report: {args.out}", file=sys.stderr)
    for c in contradicted:
        e = c.evidence
        print(
            f"CONTRADICTED: {e.source} {e.rule}: {e.repo}@{e.tag} {e.path}: {e.identifier!r}", file=sys.stderr
        )
    return 1 if contradicted else 0


if __name__ == "__main__":
    sys.exit(main())
