"""Conflicts kept current as the cluster changes: ``audit`` without rescanning everything.

``ConflictSet.refresh`` re-checks only the (rule, release) pairs a set of changed
objects can affect: every release of a component that reads a changed CRD, and
every release a changed Deployment, HelmRelease or OCIRepository (through the
HelmReleases that use it) reveals. After any sequence of changes, refreshing
with the objects they touched leaves ``conflicts`` equal to ``audit(view)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from webhook.rules.catalog import Catalog
from webhook.rules.engine import Conflict, audit, check
from webhook.rules.inventory import ClusterView
from webhook.rules.objects import CRD_KIND, OCIREPOSITORY_KIND, ObjectRef

ConflictKey = tuple[str, tuple[str, ...], str]  # Conflict.key: rule, release identity, CRD


@dataclass(frozen=True, slots=True)
class ConflictChanges:
    appeared: tuple[Conflict, ...]
    resolved: tuple[Conflict, ...]


class ConflictSet:
    """The conflicts present in a cluster view, updated from the objects that changed."""

    def __init__(self) -> None:
        self._conflicts: dict[ConflictKey, Conflict] = {}

    @property
    def conflicts(self) -> list[Conflict]:
        return sorted(self._conflicts.values(), key=lambda c: (c.release.source, c.rule.id))

    def rebuild(self, view: ClusterView, catalog: Catalog) -> ConflictChanges:
        """Every conflict from scratch (the first sync, or a relist of a whole type)."""
        fresh = {c.key: c for c in audit(view, catalog)}
        return self._swap(set(self._conflicts), fresh)

    def refresh(self, view: ClusterView, catalog: Catalog, touched: Iterable[ObjectRef]) -> ConflictChanges:
        crds: set[str] = set()
        sources: set[ObjectRef] = set()
        for ref in touched:
            if ref.kind == CRD_KIND:
                crds.add(ref.name)
                continue
            sources.add(ref)
            if ref.kind == OCIREPOSITORY_KIND:
                sources.update(view.helmreleases_using(ref))
        # A changed CRD re-checks every release of the components that read it; a changed object
        # re-checks the whole release it belongs to (a HelmRelease and its Deployment are one).
        components = {rule.component for crd in crds for rule in catalog.rules_by_crd.get(crd, ())}
        identities = {c.release.identity for c in self._conflicts.values() if c.release.source in sources}
        for source in sources:
            identities.update(release.identity for release in view.releases_from(source))
        touched_components = components | {identity[0] for identity in identities}
        stale = {
            k
            for k, c in self._conflicts.items()
            if c.release.component in components or c.release.identity in identities
        }
        fresh: dict[ConflictKey, Conflict] = {}
        for component in touched_components:
            releases = [
                r for r in view.releases(component) if component in components or r.identity in identities
            ]
            # As audit does: the running Deployment first, then the objects that install it.
            releases.sort(key=lambda r: (r.source.kind != "Deployment", r.source))
            for release in releases:
                for rule in catalog.rules_by_component.get(component, ()):
                    found = check(rule, release, view)
                    if isinstance(found, Conflict):
                        fresh.setdefault(found.key, found)
        return self._swap(stale, fresh)

    def _swap(self, stale: set[ConflictKey], fresh: dict[ConflictKey, Conflict]) -> ConflictChanges:
        previous = dict(self._conflicts)
        for key in stale:
            self._conflicts.pop(key, None)
        self._conflicts.update(fresh)
        appeared = tuple(c for k, c in fresh.items() if k not in previous)
        resolved = tuple(c for k, c in previous.items() if k not in self._conflicts)
        return ConflictChanges(appeared, resolved)
