"""Read Kubernetes objects from YAML/JSON files, directories and stdin, with errors that name the spot."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SUFFIXES = {".yaml", ".yml", ".json"}


class ManifestError(ValueError):
    """A file that cannot be read or parsed; the message names the file and the document."""


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # "path (document N)"
    body: Any


def read_text(path: str) -> tuple[str, str]:
    """``(name, text)`` of a file, or of stdin for ``-``."""
    if path == "-":
        return "<stdin>", sys.stdin.read()
    try:
        return path, Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None


def expand(paths: list[str]) -> list[str]:
    """Files in the order given; a directory contributes its YAML/JSON files, sorted, recursively."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if path != "-" and p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if f.suffix in _SUFFIXES and f.is_file())
        elif path != "-" and not p.exists():
            raise ManifestError(f"{path}: no such file or directory")
        else:
            files.append(path)
    return files


def parse_documents(name: str, text: str) -> Iterator[Document]:
    """Every non-empty YAML document of ``text`` (JSON is YAML)."""
    index = 0
    try:
        for index, body in enumerate(yaml.load_all(text, Loader=_Loader), 1):
            if body is not None:
                yield Document(f"{name} (document {index})", body)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{name} (document {index + 1}):{where}: invalid YAML: {problem}") from None


def load_objects(paths: list[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(source, object)`` for every Kubernetes object in ``paths``; ``kind: List`` is expanded."""
    for path in expand(paths):
        name, text = read_text(path)
        for doc in parse_documents(name, text):
            yield from _objects(doc.source, doc.body)


def _objects(source: str, body: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(body, Mapping):
        raise ManifestError(f"{source}: expected a Kubernetes object (a mapping), got {type(body).__name__}")
    kind = body.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(body.get("items"), list):
        for i, item in enumerate(body["items"]):
            yield from _objects(f"{source} items[{i}]", item)
        return
    if not isinstance(kind, str) or not isinstance(body.get("apiVersion"), str):
        raise ManifestError(f"{source}: not a Kubernetes object: apiVersion and kind are required")
    meta = body.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ManifestError(f"{source}: {kind} has no metadata.name")
    yield source, body
