"""The compatibility catalog: which component versions read which CRD API versions.

The catalog is data. This module only turns parsed YAML documents into typed,
validated, indexed entries; reading files is the caller's job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from webhook.rules.versions import Version, VersionError, VersionRange

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


# Go's strconv.ParseBool, which controllers' env and flag parsing use.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def go_bool(text: str) -> bool | None:
    """``text`` as Go's ``strconv.ParseBool`` reads it; None when Go would return an error."""
    if text in GO_TRUE:
        return True
    if text in GO_FALSE:
        return False
    return None


@dataclass(frozen=True, slots=True)
class EnvFlag:
    """On when the variable holds ``value``; a boolean ``value`` is compared as Go parses booleans."""

    name: str
    value: str

    def reads(self, text: str) -> bool | None:
        """True (on), False (off) or None (this variable says nothing) for the text it holds."""
        wanted = go_bool(self.value)
        if wanted is None:
            return text == self.value if text else None
        found = go_bool(text)
        return None if found is None else found == wanted


@dataclass(frozen=True, slots=True)
class ValuesFlag:
    path: tuple[str, ...]
    value: object

    @property
    def key(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Feature:
    """An optional part of a component that changes what it reads (e.g. an inference extension)."""

    name: str
    default: bool
    env: EnvFlag | None
    args: tuple[str, ...]  # on when a container arg equals one, or is "<arg>=<true>"
    disable_args: tuple[str, ...]  # off when a container arg equals one; wins over everything
    helm_value: ValuesFlag | None

    @property
    def arg_names(self) -> frozenset[str]:
        return frozenset(self.args) | frozenset(self.disable_args)


@dataclass(frozen=True, slots=True)
class ImageValues:
    """Chart values that set the controller image; the first non-empty path of each list wins."""

    registry: tuple[tuple[str, ...], ...] = ()
    repository: tuple[tuple[str, ...], ...] = ()
    tag: tuple[tuple[str, ...], ...] = ()

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        return (*self.registry, *self.repository, *self.tag)


@dataclass(frozen=True, slots=True)
class Detection:
    """How a running or released component is recognised in the cluster."""

    images: tuple[str, ...]  # repository paths without registry, e.g. "kgateway-dev/kgateway"
    labels: Mapping[str, str]
    charts: frozenset[str]
    chart_label: str
    tag_suffixes: tuple[str, ...] = ()
    image_values: ImageValues = ImageValues()


@dataclass(frozen=True, slots=True)
class BundledCRDs:
    """The Gateway API bundle a chart itself installs, for chart versions in ``versions``."""

    versions: VersionRange
    gateway_api: str
    channel: str


@dataclass(frozen=True, slots=True)
class Install:
    """How the component is installed, for the planner and the fix commands.

    ``chart``, ``chart_name`` and ``release_name`` are None for a component with no chart whose
    version is the controller's (Contour has no official chart; Traefik's and Kong's charts have
    their own version numbers).
    """

    chart: str | None
    chart_name: str | None
    namespace: str
    release_name: str | None
    releases: tuple[str, ...]
    bundled_crds: tuple[BundledCRDs, ...]


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    detect: Detection
    features: Mapping[str, Feature]
    install: Install | None = None


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
    identifier: str | None = None  # a string that appears in that file at that tag

    def __str__(self) -> str:
        return f"{self.repo}@{self.tag} {self.path}"


class Failure(StrEnum):
    """What the controller does when the rule is broken."""

    CRASH = "crash"
    NEVER_READY = "never-ready"
    HANGS = "hangs"
    FEATURE_OFF = "feature-off"

    @property
    def default_enforcement(self) -> Enforcement:
        # A silently disabled feature still serves traffic: warn; anything that stops the controller: deny.
        return Enforcement.WARN if self is Failure.FEATURE_OFF else Enforcement.DENY


@functools.lru_cache(maxsize=256)
def _bundle_version(text: str) -> Version | None:
    try:
        return Version.parse(text)
    except VersionError:
        return None


@dataclass(frozen=True, slots=True)
class BundleWindow:
    """The bundle-version annotation values (inclusive) for which the controller starts the watch."""

    min: Version | None
    max: Version | None

    def __contains__(self, text: object) -> bool:
        # A CRD without the annotation is outside every window: a controller that gates its watch
        # on the annotation cannot read a version from it, so it does not start the watch.
        if not isinstance(text, str):
            return False
        found = _bundle_version(text)
        if found is None:
            return False
        return (self.min is None or found >= self.min) and (self.max is None or found <= self.max)

    def __str__(self) -> str:
        return f"[{self.min or '*'}, {self.max or '*'}]"


@dataclass(frozen=True, slots=True)
class Rule:
    """One fact: ``component`` at ``versions`` reads ``crd`` and needs something of it.

    Exactly one of ``served_version`` (the CRD, when present, serves it), ``listed_version``
    (if the CRD lists it, it must be served) or neither (the CRD only has to exist).
    """

    id: str
    component: str
    versions: VersionRange
    crd: str
    crd_kind: str
    served_version: str | None
    missing_tolerated: bool
    feature: str | None
    enforcement: Enforcement
    explanation: str
    fix: tuple[FixStep, ...]
    evidence: tuple[Evidence, ...]
    source: str
    failure: Failure = Failure.CRASH
    listed_version: str | None = None
    bundle_window: BundleWindow | None = None

    @property
    def needed_version(self) -> str | None:
        """The API version this rule is about, whichever way it is required."""
        return self.served_version or self.listed_version


@dataclass(frozen=True)
class Catalog:
    components: Mapping[str, Component]
    rules: Mapping[str, Rule]
    rules_by_crd: Mapping[str, tuple[Rule, ...]] = field(init=False)
    rules_by_component: Mapping[str, tuple[Rule, ...]] = field(init=False)
    detected_env: frozenset[str] = field(init=False)
    detected_args: frozenset[str] = field(init=False)  # container args a feature reads
    values_paths: frozenset[tuple[str, ...]] = field(init=False)  # chart values paths detection reads

    def __post_init__(self) -> None:
        by_crd: dict[str, list[Rule]] = {}
        by_component: dict[str, list[Rule]] = {}
        for rule in self.rules.values():
            by_crd.setdefault(rule.crd, []).append(rule)
            by_component.setdefault(rule.component, []).append(rule)
        object.__setattr__(self, "rules_by_crd", {k: tuple(v) for k, v in by_crd.items()})
        object.__setattr__(self, "rules_by_component", {k: tuple(v) for k, v in by_component.items()})
        features = [f for c in self.components.values() for f in c.features.values()]
        object.__setattr__(self, "detected_env", frozenset(f.env.name for f in features if f.env))
        object.__setattr__(self, "detected_args", frozenset(a for f in features for a in f.arg_names))
        object.__setattr__(
            self,
            "values_paths",
            frozenset(
                {f.helm_value.path for f in features if f.helm_value}
                | {p for c in self.components.values() for p in c.detect.image_values.paths}
            ),
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
    "bundleVersion",
    "failure",
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


def _strings(value: Any, where: str, what: str) -> tuple[str, ...]:
    items = _list(value, where, what)
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise CatalogError(f"{where}: {what} must be a list of non-empty strings")
    return tuple(item.strip() for item in items)


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


def _image_path(text: str, where: str) -> str:
    # Detection ignores the registry, so an entry naming one could never match.
    path = text.strip().strip("/")
    first = path.split("/", 1)[0]
    if "/" not in path or ":" in path or "@" in path or "." in first or first == "localhost":
        raise CatalogError(
            f"{where}: detect.images entry {text!r} must be a repository path without registry or tag, "
            "with at least two segments (e.g. 'envoyproxy/gateway', 'library/traefik')"
        )
    return path


def _values_paths(raw: Mapping[str, Any], key: str, where: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(p.split(".")) for p in _strings(raw.get(key, []), where, f"imageValues.{key}"))


def _detection(raw: Mapping[str, Any], where: str) -> Detection:
    _known(raw, {"images", "labels", "charts", "chartLabel", "tagSuffixes", "imageValues"}, where)
    labels = _mapping(raw.get("labels", {}), where, "detect.labels")
    image_values = _mapping(raw.get("imageValues", {}), where, "detect.imageValues")
    _known(image_values, {"registry", "repository", "tag"}, f"{where}.imageValues")
    return Detection(
        images=tuple(_image_path(i, where) for i in _strings(raw.get("images", []), where, "images")),
        labels={str(k): str(v) for k, v in labels.items()},
        charts=frozenset(_strings(raw.get("charts", []), where, "charts")),
        chart_label=_str(raw, "chartLabel", where, "helm.sh/chart"),
        tag_suffixes=_strings(raw.get("tagSuffixes", []), where, "tagSuffixes"),
        image_values=ImageValues(
            registry=_values_paths(image_values, "registry", where),
            repository=_values_paths(image_values, "repository", where),
            tag=_values_paths(image_values, "tag", where),
        ),
    )


def _feature(name: str, value: Any, where: str) -> Feature:
    raw = _mapping(value, where, "feature")
    _known(raw, {"default", "env", "args", "disableArgs", "helmValue"}, where)
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise CatalogError(f"{where}: default must be true or false")
    env = None
    if raw.get("env") is not None:
        env_raw = _mapping(raw["env"], where, "env")
        _known(env_raw, {"name", "value"}, f"{where}.env")
        value_text = env_raw.get("value", "true")
        if isinstance(value_text, bool):
            value_text = str(value_text).lower()
        if not isinstance(value_text, str) or not value_text:
            raise CatalogError(f"{where}.env: value must be a non-empty string")
        env = EnvFlag(_str(env_raw, "name", f"{where}.env"), value_text)
    helm_value = None
    if raw.get("helmValue") is not None:
        hv = _mapping(raw["helmValue"], where, "helmValue")
        _known(hv, {"path", "value"}, f"{where}.helmValue")
        helm_value = ValuesFlag(
            tuple(_str(hv, "path", f"{where}.helmValue").split(".")), hv.get("value", True)
        )
    return Feature(
        name=name,
        default=default,
        env=env,
        args=_strings(raw.get("args", []), where, "args"),
        disable_args=_strings(raw.get("disableArgs", []), where, "disableArgs"),
        helm_value=helm_value,
    )


def _install(value: Any, where: str) -> Install:
    raw = _mapping(value, where, "install")
    _known(raw, {"chart", "chartName", "namespace", "releaseName", "releases", "bundledCRDs"}, where)
    bundled = []
    for i, item in enumerate(_list(raw.get("bundledCRDs", []), where, "bundledCRDs")):
        bwhere = f"{where}.bundledCRDs[{i}]"
        braw = _mapping(item, bwhere, "bundledCRDs entry")
        _known(braw, {"versions", "gatewayAPI", "channel"}, bwhere)
        channel = _str(braw, "channel", bwhere)
        if channel not in ("standard", "experimental"):
            raise CatalogError(f"{bwhere}: channel must be 'standard' or 'experimental', got {channel!r}")
        bundled.append(
            BundledCRDs(
                _range(_str(braw, "versions", bwhere), bwhere), _str(braw, "gatewayAPI", bwhere), channel
            )
        )
    releases = _strings(raw.get("releases", []), where, "releases")
    for release in releases:
        try:
            Version.parse(release)
        except VersionError as exc:
            raise CatalogError(f"{where}: releases: {exc}") from None
    return Install(
        chart=_str(raw, "chart", where) if "chart" in raw else None,
        chart_name=_str(raw, "chartName", where) if "chartName" in raw else None,
        namespace=_str(raw, "namespace", where),
        release_name=_str(raw, "releaseName", where) if "releaseName" in raw else None,
        releases=releases,
        bundled_crds=tuple(bundled),
    )


def _component(value: Any, where: str) -> Component:
    raw = _mapping(value, where, "component")
    _known(raw, {"name", "detect", "features", "install"}, where)
    name = _str(raw, "name", where)
    detect = _detection(_mapping(raw.get("detect", {}), where, "detect"), f"{where}: detect")
    features = {
        str(fname): _feature(str(fname), fvalue, f"{where}: features.{fname}")
        for fname, fvalue in _mapping(raw.get("features", {}), where, "features").items()
    }
    install = _install(raw["install"], f"{where}: install") if raw.get("install") is not None else None
    return Component(name=name, detect=detect, features=features, install=install)


def _range(text: str, where: str) -> VersionRange:
    try:
        return VersionRange.parse(text)
    except VersionError as exc:
        raise CatalogError(f"{where}: versions: {exc}") from None


def _window(value: Any, where: str) -> BundleWindow | None:
    if value is None:
        return None
    raw = _mapping(value, where, "bundleVersion")
    _known(raw, {"min", "max"}, f"{where}: bundleVersion")
    bounds: dict[str, Version | None] = {}
    for key in ("min", "max"):
        text = raw.get(key)
        if text is None:
            bounds[key] = None
            continue
        try:
            bounds[key] = Version.parse(str(text))
        except VersionError as exc:
            raise CatalogError(f"{where}: bundleVersion.{key}: {exc}") from None
    low, high = bounds["min"], bounds["max"]
    if low is None and high is None:
        raise CatalogError(f"{where}: bundleVersion needs min, max or both")
    if low is not None and high is not None and low > high:
        raise CatalogError(f"{where}: bundleVersion.min {low} is above max {high}")
    return BundleWindow(low, high)


_REQUIREMENTS = ("servedVersion", "listedMustBeServed", "exists")


def _rule(value: Any, where: str, source: str) -> Rule:
    raw = _mapping(value, where, "rule")
    unknown = set(raw) - _RULE_FIELDS
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {sorted(unknown)}")
    rule_id = _str(raw, "id", where)
    where = f"{where} ({rule_id})"
    versions = _range(str(raw.get("versions", "")), where)
    requires = _mapping(raw.get("requires"), where, "requires")
    _known(requires, set(_REQUIREMENTS), f"{where}: requires")
    given = [key for key in _REQUIREMENTS if key in requires]
    if len(given) != 1 or (given == ["exists"] and requires["exists"] is not True):
        raise CatalogError(
            f"{where}: requires needs exactly one of servedVersion: <version>, "
            f"listedMustBeServed: <version> or exists: true (got {given or 'none'})"
        )
    needed = requires.get(given[0])
    if given[0] != "exists" and (not isinstance(needed, str) or not needed.strip()):
        raise CatalogError(f"{where}: requires.{given[0]} must be a string")
    needed_version = needed.strip() if isinstance(needed, str) else None
    feature = raw.get("feature")
    if feature is not None and (not isinstance(feature, str) or not feature):
        raise CatalogError(f"{where}: feature must be the name of one of the component's features")
    missing = raw.get("whenCRDMissing", "tolerate")
    if missing not in ("tolerate", "conflict"):
        raise CatalogError(f"{where}: whenCRDMissing must be 'tolerate' or 'conflict'")
    try:
        failure = Failure(str(raw.get("failure")))
    except ValueError:
        choices = ", ".join(f.value for f in Failure)
        raise CatalogError(f"{where}: failure must be one of {choices}, got {raw.get('failure')!r}") from None
    try:
        enforcement = Enforcement(raw.get("enforcement", failure.default_enforcement))
    except ValueError:
        raise CatalogError(f"{where}: enforcement must be one of deny, warn, audit") from None
    fix = []
    for i, step in enumerate(_list(raw.get("fix", []), where, "fix")):
        step_raw = _mapping(step, f"{where}: fix[{i}]", "fix step")
        _known(step_raw, {"summary", "commands", "notes"}, f"{where}: fix[{i}]")
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
    for i, item in enumerate(_list(raw.get("evidence", []), where, "evidence")):
        ewhere = f"{where}: evidence[{i}]"
        ev = _mapping(item, ewhere, "evidence")
        _known(ev, {"repo", "tag", "path", "identifier"}, ewhere)
        identifier = _str(ev, "identifier", ewhere) if "identifier" in ev else None
        evidence.append(
            Evidence(_str(ev, "repo", ewhere), _str(ev, "tag", ewhere), _str(ev, "path", ewhere), identifier)
        )
    crd = _str(raw, "crd", where)
    if crd.count(".") < 2:
        raise CatalogError(f"{where}: crd must be a CRD name, <plural>.<group>, got {crd!r}")
    crd_kind = _str(raw, "crdKind", where)
    if not crd_kind[0].isupper() or not crd_kind.isalnum():
        raise CatalogError(
            f"{where}: crdKind must be the Kind the controller watches (e.g. BackendTLSPolicy)"
        )
    return Rule(
        id=rule_id,
        component=_str(raw, "component", where),
        versions=versions,
        crd=crd,
        crd_kind=crd_kind,
        served_version=needed_version if given[0] == "servedVersion" else None,
        listed_version=needed_version if given[0] == "listedMustBeServed" else None,
        missing_tolerated=missing == "tolerate",
        bundle_window=_window(raw.get("bundleVersion"), where),
        failure=failure,
        feature=feature,
        enforcement=enforcement,
        explanation=" ".join(_str(raw, "explanation", where).split()),
        fix=tuple(fix),
        evidence=tuple(evidence),
        source=source,
    )
