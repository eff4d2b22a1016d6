"""Renderers for pipelines: JSON records, JUnit XML and GitHub Actions annotations.

The JSON shapes are a contract, documented in schema/check.schema.json and schema/audit.schema.json.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.rules.detect import ComponentRelease
from webhook.rules.engine import Conflict
from webhook.rules.messages import describe_conflict
from webhook.rules.plan import Fix

FORMATS = ("text", "json", "junit", "github")
FORMAT_HELP = "text (default), json (schema/*.schema.json), junit (JUnit XML) or github (Actions annotations)"


def source_record(release: ComponentRelease) -> dict[str, Any]:
    ref = release.source
    return {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name}


def conflict_record(conflict: Conflict, index: int, fixes: Sequence[Fix] = ()) -> dict[str, Any]:
    rule, release = conflict.rule, conflict.release
    return {
        "rule": rule.id,
        "component": release.component,
        "version": release.version_text,
        "source": source_record(release),
        "crd": rule.crd,
        "crdInstalled": conflict.crd is not None,
        "needs": rule.needed_version,
        "served": sorted(conflict.crd.served) if conflict.crd else [],
        "enforcement": rule.enforcement.value,
        "message": describe_conflict(conflict, index, after_change=False),
        "fixes": [f.to_json() for f in fixes],
    }


def unchecked_record(release: ComponentRelease) -> dict[str, Any]:
    return {
        "component": release.component,
        "version": release.version_text,
        "source": source_record(release),
        "reason": "the version is not one exact version (a range, '*' or a digest)",
    }


@dataclass
class AuditReport:
    origin: str  # where the state came from, in words
    counts: Mapping[str, int]
    releases: list[ComponentRelease]
    conflicts: list[Conflict]
    unchecked: list[ComponentRelease]
    unread: list[str] = field(default_factory=list)  # sources that could not be read, with the reason
    fixes: Mapping[tuple[str, tuple[str, ...], str], Sequence[Fix]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.origin,
            "read": {"crds": self.counts.get("CustomResourceDefinition", 0), "releases": len(self.releases)},
            "checked": len(self.releases) - len(self.unchecked),
            "conflicts": [
                conflict_record(c, i, self.fixes.get(c.key, ())) for i, c in enumerate(self.conflicts, 1)
            ],
            "unchecked": [unchecked_record(r) for r in self.unchecked],
            "unread": self.unread,
        }


# -- JUnit --------------------------------------------------------------------------------------


def _junit(suite_name: str, cases: Sequence[tuple[str, str, str | None, str, str]]) -> str:
    """cases: (classname, name, failure message or None, failure text, system-out)."""
    failures = sum(1 for c in cases if c[2] is not None)
    suites = ET.Element("testsuites", name="crdguard", tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(
        suites, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures), errors="0"
    )
    for classname, name, failure, text, out in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name)
        if failure is not None:
            ET.SubElement(case, "failure", message=failure, type="crdguard").text = text
        if out:
            ET.SubElement(case, "system-out").text = out
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def check_junit(results: Iterable[Mapping[str, Any]]) -> str:
    cases = []
    for r in results:
        message = str(r["message"])
        cases.append(
            (
                str(r.get("file") or "manifests"),
                f"{r['operation']} {r['kind']} {_where(r)}",
                None if r["allowed"] else message.splitlines()[0],
                message,
                "\n".join(f"warning: {w}" for w in r["warnings"]),
            )
        )
    return _junit("crdguard check", cases)


def audit_junit(report: AuditReport) -> str:
    by_release: dict[Any, list[tuple[int, Conflict]]] = {}
    for i, conflict in enumerate(report.conflicts, 1):
        by_release.setdefault(conflict.release.source, []).append((i, conflict))
    cases = []
    for release in report.releases:
        found = by_release.get(release.source, [])
        text = "\n".join(describe_conflict(c, i, after_change=False) for i, c in found)
        failure = f"{len(found)} conflict(s): " + ", ".join(c.rule.id for _, c in found) if found else None
        out = "not checked: the version is not one exact version" if release in report.unchecked else ""
        cases.append(
            (
                f"{report.origin}",
                f"{release.component} {release.version_text} in {release.source}",
                failure,
                text,
                out,
            )
        )
    return _junit("crdguard audit", cases)


# -- GitHub Actions -------------------------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, title: str, file: str | None = None) -> str:
    props = ([f"file={_escape_property(file)}"] if file else []) + [f"title={_escape_property(title)}"]
    return f"::{level} {','.join(props)}::{_escape_data(message)}\n"


def check_github(results: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for r in results:
        file = r.get("file") if r.get("file") not in (None, "<stdin>") else None
        subject = f"{r['operation']} {r['kind']} {_where(r)}"
        if not r["allowed"]:
            lines.append(annotation("error", str(r["message"]), f"crdguard denied {subject}", file))
        lines.extend(annotation("warning", w, f"crdguard: {subject}", file) for w in r["warnings"])
    denied = sum(not r["allowed"] for r in results)
    return "".join(lines) + f"{len(results)} object(s) reviewed, {denied} denied\n"


def audit_github(report: AuditReport) -> str:
    lines = [
        annotation("error", describe_conflict(c, i, after_change=False), f"crdguard conflict: {c.rule.id}")
        for i, c in enumerate(report.conflicts, 1)
    ]
    lines.extend(
        annotation("warning", unchecked_record(r)["reason"], f"crdguard could not check {r.describe()}")
        for r in report.unchecked
    )
    lines.extend(annotation("warning", reason, "crdguard could not read") for reason in report.unread)
    return "".join(lines) + f"{len(report.conflicts)} conflict(s) found\n"


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _where(r: Mapping[str, Any]) -> str:
    return f"{r['namespace']}/{r['name']}" if r["namespace"] else str(r["name"])
