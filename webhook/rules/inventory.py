"""What is installed: the cluster view the rules read, and an in-memory index that implements it.

The index is pure data structures. The state layer fills it (from files or
from watches); the engine reads it through :class:`ClusterView` and never
scans it: every question is a dictionary lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

from webhook.rules.catalog import Catalog
from webhook.rules.detect import ComponentRelease, detect_releases
from webhook.rules.objects import (
    OCIREPOSITORY_KIND,
    CRDInfo,
    DeploymentSummary,
    HelmReleaseSummary,
    ObjectRef,
    OCIRepositorySummary,
    Summary,
    summary_ref,
)


class ClusterView(Protocol):
    def crd(self, name: str) -> CRDInfo | None: ...

    def summary(self, ref: ObjectRef) -> Summary | None: ...

    def releases(self, component: str) -> Iterable[ComponentRelease]: ...

    def releases_from(self, ref: ObjectRef) -> tuple[ComponentRelease, ...]: ...

    def helmreleases_using(self, oci: ObjectRef) -> Iterable[ObjectRef]: ...


class Inventory:
    """A ClusterView kept up to date by ``upsert``/``remove``; safe to read while one thread writes.

    Readers never lock: inner indexes are replaced, not mutated, so a reader
    iterating one sees a consistent snapshot of it.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._write = threading.Lock()
        self._crds: dict[str, CRDInfo] = {}
        self._summaries: dict[ObjectRef, Summary] = {}
        self._releases: dict[ObjectRef, tuple[ComponentRelease, ...]] = {}
        self._by_component: dict[str, dict[ObjectRef, tuple[ComponentRelease, ...]]] = {}
        self._users: dict[ObjectRef, frozenset[ObjectRef]] = {}  # OCIRepository -> HelmReleases
        self.generation = 0
        self._touched: set[ObjectRef] = set()  # written since the last drain_touched()

    # -- ClusterView ---------------------------------------------------------------------
    def crd(self, name: str) -> CRDInfo | None:
        return self._crds.get(name)

    def summary(self, ref: ObjectRef) -> Summary | None:
        if ref.kind == "CustomResourceDefinition":
            return self._crds.get(ref.name)
        return self._summaries.get(ref)

    def releases(self, component: str) -> Iterator[ComponentRelease]:
        for found in self._by_component.get(component, {}).values():
            yield from found

    def releases_from(self, ref: ObjectRef) -> tuple[ComponentRelease, ...]:
        return self._releases.get(ref, ())

    def helmreleases_using(self, oci: ObjectRef) -> frozenset[ObjectRef]:
        return self._users.get(oci, frozenset())

    # -- writes --------------------------------------------------------------------------
    def upsert(self, summary: Summary) -> None:
        with self._write:
            self._touched.add(summary_ref(summary))
            self._remove_locked(summary_ref(summary))
            if isinstance(summary, CRDInfo):
                self._crds[summary.name] = summary
            else:
                self._summaries[summary.ref] = summary
                if isinstance(summary, HelmReleaseSummary) and summary.chart_ref is not None:
                    users = self._users.get(summary.chart_ref, frozenset())
                    self._users[summary.chart_ref] = users | {summary.ref}
                self._index(summary.ref)
                if isinstance(summary, DeploymentSummary) and summary.ref not in self._releases:
                    # Most Deployments run no catalogued component: keep nothing of them.
                    del self._summaries[summary.ref]
                if isinstance(summary, OCIRepositorySummary):
                    for user in self._users.get(summary.ref, ()):
                        self._index(user)
            self.generation += 1

    def remove(self, ref: ObjectRef) -> None:
        with self._write:
            self._touched.add(ref)
            self._remove_locked(ref)
            self.generation += 1

    def replace_all(self, kind: str, summaries: Iterable[Summary]) -> None:
        """Make ``kind`` hold exactly ``summaries`` (a relist), keeping other kinds."""
        fresh = {summary_ref(s): s for s in summaries}
        stale = [ref for ref in self.refs(kind) if ref not in fresh]
        for ref in stale:
            self.remove(ref)
        for summary in fresh.values():
            self.upsert(summary)

    def drain_touched(self) -> set[ObjectRef]:
        """The objects written (upserted or removed) since the last call, for incremental audits."""
        with self._write:
            touched, self._touched = self._touched, set()
        return touched

    def refs(self, kind: str) -> list[ObjectRef]:
        if kind == "CustomResourceDefinition":
            return [ObjectRef(kind, None, name) for name in list(self._crds)]
        return [ref for ref in list(self._summaries) if ref.kind == kind]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {"CustomResourceDefinition": len(self._crds)}
        for ref in list(self._summaries):
            counts[ref.kind] = counts.get(ref.kind, 0) + 1
        counts["ComponentRelease"] = sum(len(v) for v in list(self._releases.values()))
        return counts

    def _remove_locked(self, ref: ObjectRef) -> None:
        if ref.kind == "CustomResourceDefinition":
            self._crds.pop(ref.name, None)
            return
        old = self._summaries.pop(ref, None)
        if isinstance(old, HelmReleaseSummary) and old.chart_ref is not None:
            users = self._users.get(old.chart_ref, frozenset()) - {ref}
            if users:
                self._users[old.chart_ref] = users
            else:
                self._users.pop(old.chart_ref, None)
        self._index(ref)
        if ref.kind == OCIREPOSITORY_KIND:
            for user in self._users.get(ref, ()):
                self._index(user)

    def _index(self, ref: ObjectRef) -> None:
        """Recompute the releases one object reveals and swap them into the indexes."""
        old = self._releases.pop(ref, ())
        summary = self._summaries.get(ref)
        new = detect_releases(summary, self.catalog, self._oci) if summary else ()
        if new:
            self._releases[ref] = new
        for component in {r.component for r in old} | {r.component for r in new}:
            table = dict(self._by_component.get(component, {}))
            table.pop(ref, None)
            mine = tuple(r for r in new if r.component == component)
            if mine:
                table[ref] = mine
            self._by_component[component] = table

    def _oci(self, ref: ObjectRef) -> OCIRepositorySummary | None:
        found = self._summaries.get(ref)
        return found if isinstance(found, OCIRepositorySummary) else None


class Overlay:
    """``base`` as it would be with one object replaced by ``summary`` (None: deleted)."""

    def __init__(self, base: ClusterView, catalog: Catalog, ref: ObjectRef, summary: Summary | None) -> None:
        self.base = base
        self.catalog = catalog
        self.ref = ref
        self.changed = summary
        users: set[ObjectRef] = set()
        if ref.kind == OCIREPOSITORY_KIND:
            users.update(base.helmreleases_using(ref))
        self.affected = frozenset({ref, *users})

    def crd(self, name: str) -> CRDInfo | None:
        if self.ref.kind == "CustomResourceDefinition" and self.ref.name == name:
            return self.changed if isinstance(self.changed, CRDInfo) else None
        return self.base.crd(name)

    def summary(self, ref: ObjectRef) -> Summary | None:
        return self.changed if ref == self.ref else self.base.summary(ref)

    def releases(self, component: str) -> Iterator[ComponentRelease]:
        for release in self.base.releases(component):
            if release.source not in self.affected:
                yield release
        for ref in self.affected:
            for release in self.releases_from(ref):
                if release.component == component:
                    yield release

    def releases_from(self, ref: ObjectRef) -> tuple[ComponentRelease, ...]:
        if ref not in self.affected:
            return self.base.releases_from(ref)
        summary = self.summary(ref)
        return detect_releases(summary, self.catalog, self._oci) if summary else ()

    def helmreleases_using(self, oci: ObjectRef) -> Iterable[ObjectRef]:
        return self.base.helmreleases_using(oci)

    def _oci(self, ref: ObjectRef) -> OCIRepositorySummary | None:
        found = self.summary(ref)
        return found if isinstance(found, OCIRepositorySummary) else None
