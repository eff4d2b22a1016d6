"""The compatibility catalog: which component versions read which CRD API versions.

The catalog is data. This module only turns parsed YAML documents into typed,
validated, indexed entries; reading files is the caller's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from webhook.rules.versions import VersionError, VersionRange

CATALOG_API_VERSION = "crdguard.io/v1alpha1"
CATALOG_KIND = "CompatibilityCatalog"


class CatalogError(ValueError):
    """A catalog document that cannot be used; the message names the source and field."""


class Enforcement(StrEnum):
    """What happens when a rule finds a new conflict. Ordered from strictest."""

    DENY = "deny"
    WARN = "warn"
    AUDIT = "audit"

    def capped_by(self, ceiling: Enforcement) -> Enforcement:
        """The weaker of this and ``ceiling``: a global ``warn`` softens every ``deny``."""
        order = [Enforcement.DENY, Enforcement.WARN, Enforcement.AUDIT]
        return order[max(order.index(self), order.index(ceiling))]


@dataclass(frozen=True, slots=True)
class EnvFlag:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ValuesFlag:
    path: tuple[str, ...]
    value: object


@dataclass(frozen=True, slots=True)
class Feature:
    """An optional part of a component that changes what it reads (e.g. an inference extension)."""

    name: str
    env: EnvFlag | None
    helm_value: ValuesFlag | None


@dataclass(frozen=True, slots=True)
class Detection:
    """How a running or released component is recognised in the cluster."""

    images: frozenset[str]
    labels: Mapping[str, str]
    charts: frozenset[str]
    chart_label: str


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    detect: Detection
    features: Mapping[str, Feature]


@dataclass(frozen=True, slots=True)
class FixStep:
    summary: str
    commands: tuple[str, ...]  # shell commands, shown after "$ "
    notes: tuple[str, ...] = ()  # the same step for other tools (helmfile, Flux), in words


@dataclass(frozen=True, slots=True)
class Evidence:
    repo: str
    tag: str
    path: str

    def __str__(self) -> str:
        return f"{self.repo}@{self.tag} {self.path}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One fact: ``component`` at ``versions`` reads ``crd`` and needs ``served_version`` of it."""

    id: str
    component: str
    versions: VersionRange
    crd: str
    crd_kind: str
    served_version: str | None  # None: the CRD only has to exist
    missing_tolerated: bool
    feature: str | None
    enforcement: Enforcement
    explanation: str
    fix: tuple[FixStep, ...]
    evidence: tuple[Evidence, ...]
    source: str


@dataclass(frozen=True)
class Catalog:
    components: Mapping[str, Component]
    rules: Mapping[str, Rule]
    rules_by_crd: Mapping[str, tuple[Rule, ...]] = field(init=False)
    rules_by_component: Mapping[str, tuple[Rule, ...]] = field(init=False)
    detected_env: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        by_crd: dict[str, list[Rule]] = {}
        by_component: dict[str, list[Rule]] = {}
        for rule in self.rules.values():
            by_crd.setdefault(rule.crd, []).append(rule)
            by_component.setdefault(rule.component, []).append(rule)
        object.__setattr__(self, "rules_by_crd", {k: tuple(v) for k, v in by_crd.items()})
        object.__setattr__(self, "rules_by_component", {k: tuple(v) for k, v in by_component.items()})
        object.__setattr__(
            self,
            "detected_env",
            frozenset(f.env.name for c in self.components.values() for f in c.features.values() if f.env),
        )

    @property
    def crd_names(self) -> frozenset[str]:
        return frozenset(self.rules_by_crd)

    @classmethod
    def merge(cls, documents: Iterable[tuple[str, Any]]) -> Catalog:
        """Build one catalog from ``(source, parsed document)`` pairs; later entries win by id."""
        components: dict[str, Component] = {}
        rules: dict[str, Rule] = {}
        for source, document in documents:
            if document is None:
                continue
            doc = _mapping(document, source, "document")
            if doc.get("apiVersion") != CATALOG_API_VERSION or doc.get("kind") != CATALOG_KIND:
                raise CatalogError(
                    f"{source}: expected apiVersion {CATALOG_API_VERSION!r} and kind "
                    f"{CATALOG_KIND!r}, got {doc.get('apiVersion')!r} and {doc.get('kind')!r}"
                )
            unknown = set(doc) - {"apiVersion", "kind", "components", "rules"}
            if unknown:
                raise CatalogError(f"{source}: unknown top-level field(s) {sorted(unknown)}")
            for i, raw in enumerate(_list(doc.get("components", []), source, "components")):
                component = _component(raw, f"{source}: components[{i}]")
                components[component.name] = component
            for i, raw in enumerate(_list(doc.get("rules", []), source, "rules")):
                rule = _rule(raw, f"{source}: rules[{i}]", source)
                rules[rule.id] = rule
        for rule in rules.values():
            owner = components.get(rule.component)
            if owner is None:
                raise CatalogError(
                    f"{rule.source}: rule {rule.id!r} names component {rule.component!r}, "
                    f"which no catalog defines (known: {sorted(components)})"
                )
            if rule.feature is not None and rule.feature not in owner.features:
                raise CatalogError(
                    f"{rule.source}: rule {rule.id!r} names feature {rule.feature!r}, which "
                    f"component {rule.component!r} does not define"
                )
        return cls(components=components, rules=rules)


_RULE_FIELDS = {
    "id",
    "component",
    "versions",
    "crd",
    "crdKind",
    "requires",
    "whenCRDMissing",
    "feature",
    "enforcement",
    "explanation",
    "fix",
    "evidence",
}


def _mapping(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{where}: {what} must be a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, where: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise CatalogError(f"{where}: {what} must be a list, got {type(value).__name__}")
    return value


def _str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: field {key!r} must be a non-empty string")
    return value.strip()


def _known(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    # A misspelt key would otherwise be ignored and silently turn detection or a rule off.
    unknown = set(raw) - allowed
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {sorted(map(str, unknown))}")


def _component(value: Any, where: str) -> Component:
    raw = _mapping(value, where, "component")
    _known(raw, {"name", "detect", "features"}, where)
    name = _str(raw, "name", where)
    detect = _mapping(raw.get("detect", {}), where, "detect")
    _known(detect, {"images", "labels", "charts", "chartLabel"}, f"{where}: detect")
    labels = _mapping(detect.get("labels", {}), where, "detect.labels")
    features: dict[str, Feature] = {}
    for fname, fvalue in _mapping(raw.get("features", {}), where, "features").items():
        fwhere = f"{where}: features.{fname}"
        fraw = _mapping(fvalue, fwhere, "feature")
        _known(fraw, {"env", "helmValue"}, fwhere)
        env = fraw.get("env")
        helm_value = fraw.get("helmValue")
        if env is not None:
            env = _mapping(env, fwhere, "env")
        if helm_value is not None:
            helm_value = _mapping(helm_value, fwhere, "helmValue")
        features[fname] = Feature(
            name=fname,
            env=EnvFlag(_str(env, "name", f"{fwhere}.env"), str(env.get("value", "true")))
            if env is not None
            else None,
            helm_value=ValuesFlag(
                tuple(_str(helm_value, "path", f"{fwhere}.helmValue").split(".")),
                helm_value.get("value", True),
            )
            if helm_value is not None
            else None,
        )
    return Component(
        name=name,
        detect=Detection(
            images=frozenset(str(i) for i in _list(detect.get("images", []), where, "images")),
            labels={str(k): str(v) for k, v in labels.items()},
            charts=frozenset(str(c) for c in _list(detect.get("charts", []), where, "charts")),
            chart_label=str(detect.get("chartLabel", "helm.sh/chart")),
        ),
        features=features,
    )


def _rule(value: Any, where: str, source: str) -> Rule:
    raw = _mapping(value, where, "rule")
    unknown = set(raw) - _RULE_FIELDS
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {sorted(unknown)}")
    rule_id = _str(raw, "id", where)
    where = f"{where} ({rule_id})"
    try:
        versions = VersionRange.parse(str(raw.get("versions", "")))
    except VersionError as exc:
        raise CatalogError(f"{where}: versions: {exc}") from None
    requires = _mapping(raw.get("requires"), where, "requires")
    _known(requires, {"servedVersion", "exists"}, f"{where}: requires")
    feature = raw.get("feature")
    if feature is not None and (not isinstance(feature, str) or not feature):
        raise CatalogError(f"{where}: feature must be the name of one of the component's features")
    served = requires.get("servedVersion")
    if served is not None and not isinstance(served, str):
        raise CatalogError(f"{where}: requires.servedVersion must be a string")
    if served is None and requires.get("exists") is not True:
        raise CatalogError(f"{where}: requires needs servedVersion: <version> or exists: true")
    missing = raw.get("whenCRDMissing", "tolerate")
    if missing not in ("tolerate", "conflict"):
        raise CatalogError(f"{where}: whenCRDMissing must be 'tolerate' or 'conflict'")
    try:
        enforcement = Enforcement(raw.get("enforcement", "deny"))
    except ValueError:
        raise CatalogError(f"{where}: enforcement must be one of deny, warn, audit") from None
    fix = []
    for i, step in enumerate(_list(raw.get("fix", []), where, "fix")):
        step_raw = _mapping(step, f"{where}: fix[{i}]", "fix step")
        commands = _list(step_raw.get("commands", []), where, "fix.commands")
        notes = _list(step_raw.get("notes", []), where, "fix.notes")
        fix.append(
            FixStep(
                _str(step_raw, "summary", where),
                tuple(str(c) for c in commands),
                tuple(str(n) for n in notes),
            )
        )
    evidence = []
    for item in _list(raw.get("evidence", []), where, "evidence"):
        ev = _mapping(item, where, "evidence")
        evidence.append(Evidence(_str(ev, "repo", where), _str(ev, "tag", where), _str(ev, "path", where)))
    crd = _str(raw, "crd", where)
    return Rule(
        id=rule_id,
        component=_str(raw, "component", where),
        versions=versions,
        crd=crd,
        crd_kind=str(raw.get("crdKind") or crd.split(".", 1)[0]),
        served_version=served,
        missing_tolerated=missing == "tolerate",
        feature=feature,
        enforcement=enforcement,
        explanation=" ".join(_str(raw, "explanation", where).split()),
        fix=tuple(fix),
        evidence=tuple(evidence),
        source=source,
    )
