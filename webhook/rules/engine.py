"""The admission decision: compare the conflicts before and after one change.

``review_change`` is a pure function of the change, the cluster view and the
catalog. It denies only what a change adds; what was already broken is a
warning, and a change that only removes conflicts is always allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.rules.catalog import Catalog, Enforcement, Rule
from webhook.rules.detect import ComponentRelease
from webhook.rules.inventory import ClusterView, Overlay
from webhook.rules.objects import (
    CRD_GROUP,
    CRD_KIND,
    JUDGED_KINDS,
    CRDInfo,
    ObjectRef,
    Summary,
    ref_kind,
    summarize,
)

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"


@dataclass(frozen=True, slots=True)
class Change:
    """One requested write, as the rules see it."""

    operation: str
    group: str
    kind: str
    ref: ObjectRef
    new: Summary | None
    old: Summary | None
    dry_run: bool = False

    @classmethod
    def from_objects(
        cls,
        operation: str,
        group: str,
        kind: str,
        namespace: str | None,
        name: str,
        obj: Mapping[str, Any] | None,
        old_obj: Mapping[str, Any] | None,
        catalog: Catalog,
        dry_run: bool = False,
    ) -> Change:
        new = summarize(group, kind, obj, catalog) if obj is not None else None
        old = summarize(group, kind, old_obj, catalog) if old_obj is not None else None
        if not name:
            meta = (obj or old_obj or {}).get("metadata")
            name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
        ref = ObjectRef(ref_kind(group, kind), None if kind == CRD_KIND else (namespace or None), name)
        return cls(operation, group, kind, ref, new, old, dry_run)


@dataclass(frozen=True, slots=True)
class Conflict:
    """``release`` needs something from ``rule.crd`` that the CRD (``crd``, None if absent) lacks."""

    rule: Rule
    release: ComponentRelease
    crd: CRDInfo | None

    @property
    def key(self) -> tuple[str, tuple[str, ...], str]:
        # By release identity: a HelmRelease and the Deployment it created are one conflict.
        return (self.rule.id, self.release.identity, self.rule.crd)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    change: Change | None = None
    denied: tuple[Conflict, ...] = ()
    warned: tuple[Conflict, ...] = ()  # new conflicts whose enforcement is "warn"
    audited: tuple[Conflict, ...] = ()  # new conflicts whose enforcement is "audit"
    existing: tuple[Conflict, ...] = ()  # already present before the change, still present
    unchecked: tuple[ComponentRelease, ...] = ()  # versions that are not one exact version
    resolved: tuple[Conflict, ...] = ()
    judged: bool = field(default=False)

    @property
    def decision(self) -> str:
        if not self.allowed:
            return "denied"
        if self.warned or self.existing or self.unchecked:
            return "warned"
        if self.audited:
            return "audited"
        return "allowed"

    @property
    def rule_ids(self) -> tuple[str, ...]:
        conflicts = self.denied or self.warned or self.audited or self.existing
        return tuple(sorted({c.rule.id for c in conflicts}))


ALLOWED = Verdict(allowed=True)


def is_judged(group: str, kind: str, operation: str) -> bool:
    if (group, kind) not in JUDGED_KINDS:
        return False
    if kind == CRD_KIND and group == CRD_GROUP:
        return operation in (CREATE, UPDATE, DELETE)
    return operation in (CREATE, UPDATE)


def review_change(
    change: Change,
    view: ClusterView,
    catalog: Catalog,
    enforcement: Enforcement = Enforcement.DENY,
) -> Verdict:
    """Judge one change against the cluster as ``view`` shows it before the change."""
    if not is_judged(change.group, change.kind, change.operation):
        return ALLOWED
    if change.kind == CRD_KIND and change.ref.name not in catalog.rules_by_crd:
        return ALLOWED  # no installed controller reads this CRD, as far as the catalog knows
    before = Overlay(view, catalog, change.ref, change.old)
    after = Overlay(view, catalog, change.ref, change.new)
    crds = {change.ref.name} if change.kind == CRD_KIND else set()
    sources = before.affected | after.affected
    old_conflicts, _ = _conflicts(before, catalog, crds, sources)
    new_conflicts, unchecked = _conflicts(after, catalog, crds, sources)
    if not old_conflicts and not new_conflicts and not unchecked:
        return Verdict(allowed=True, change=change, judged=True)

    added = [c for k, c in new_conflicts.items() if k not in old_conflicts]
    by_mode: dict[Enforcement, list[Conflict]] = {e: [] for e in Enforcement}
    for conflict in added:
        by_mode[conflict.rule.enforcement.capped_by(enforcement)].append(conflict)
    return Verdict(
        allowed=not by_mode[Enforcement.DENY],
        change=change,
        denied=tuple(by_mode[Enforcement.DENY]),
        warned=tuple(by_mode[Enforcement.WARN]),
        audited=tuple(by_mode[Enforcement.AUDIT]),
        existing=tuple(c for k, c in new_conflicts.items() if k in old_conflicts),
        unchecked=tuple(unchecked),
        resolved=tuple(c for k, c in old_conflicts.items() if k not in new_conflicts),
        judged=True,
    )


def _conflicts(
    view: ClusterView, catalog: Catalog, crds: Iterable[str], sources: Iterable[ObjectRef]
) -> tuple[dict[tuple[str, tuple[str, ...], str], Conflict], list[ComponentRelease]]:
    """Conflicts that involve the given CRDs or the releases the given objects reveal."""
    pairs: list[tuple[Rule, ComponentRelease]] = []
    # Many rules of a CRD share a component: list its releases once (an overlay detects them anew).
    by_component: dict[str, tuple[ComponentRelease, ...]] = {}
    for crd in crds:
        for rule in catalog.rules_by_crd.get(crd, ()):
            releases = by_component.get(rule.component)
            if releases is None:
                releases = by_component[rule.component] = tuple(view.releases(rule.component))
            pairs.extend((rule, release) for release in releases)
    for source in sources:
        for release in view.releases_from(source):
            pairs.extend((rule, release) for rule in catalog.rules_by_component.get(release.component, ()))
    found: dict[tuple[str, tuple[str, ...], str], Conflict] = {}
    unchecked: dict[ObjectRef, ComponentRelease] = {}
    for rule, release in pairs:
        conflict = check(rule, release, view)
        if isinstance(conflict, Conflict):
            found.setdefault(conflict.key, conflict)
        elif conflict is UNKNOWN:
            unchecked[release.source] = release
    return found, list(unchecked.values())


class _Unknown:
    """The rule cannot be checked: the release's version is not one exact version."""


UNKNOWN = _Unknown()


def check(rule: Rule, release: ComponentRelease, view: ClusterView) -> Conflict | _Unknown | None:
    if rule.feature is not None and rule.feature not in release.features:
        return None
    if release.version is None:
        return UNKNOWN
    if release.version not in rule.versions:
        return None
    crd = view.crd(rule.crd)
    if crd is None:
        return None if rule.missing_tolerated else Conflict(rule, release, None)
    if rule.bundle_window is not None and crd.bundle_version not in rule.bundle_window:
        return None  # the controller does not start this watch for that bundle
    if rule.served_version is not None and rule.served_version not in crd.served:
        return Conflict(rule, release, crd)
    if rule.listed_version is not None and (
        rule.listed_version in crd.listed and rule.listed_version not in crd.served
    ):
        return Conflict(rule, release, crd)
    return None


def audit(view: ClusterView, catalog: Catalog) -> list[Conflict]:
    """Every conflict present in ``view`` now: what ``crdguard audit`` reports, one per release."""
    found: dict[tuple[str, tuple[str, ...], str], Conflict] = {}
    for component, rules in catalog.rules_by_component.items():
        # The running Deployment first: of a HelmRelease and the Deployment it created, it is the
        # one that says what runs now.
        releases = sorted(view.releases(component), key=lambda r: (r.source.kind != "Deployment", r.source))
        for release in releases:
            for rule in rules:
                conflict = check(rule, release, view)
                if isinstance(conflict, Conflict):
                    found.setdefault(conflict.key, conflict)
    return sorted(found.values(), key=lambda c: (c.release.source, c.rule.id))
