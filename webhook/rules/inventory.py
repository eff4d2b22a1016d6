"""What is installed: the cluster view the rules read, and an in-memory index that implements it.

The index is pure data structures. The state layer fills it (from files or
from watches); the engine reads it through :class:`ClusterView` and never
scans it: every question is a dictionary lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from webhook.rules.catalog import Catalog
from webhook.rules.detect import ComponentRelease, detect_releases
from webhook.rules.objects import (
    CHART_SOURCE_KINDS,
    CRD_KIND,
    ApplicationSummary,
    CRDInfo,
    DeploymentSummary,
    HelmReleaseSummary,
    K3sHelmChartSummary,
    ObjectRef,
    Summary,
    summary_ref,
)


class ClusterView(Protocol):
    def crd(self, name: str) -> CRDInfo | None: ...

    def summary(self, ref: ObjectRef) -> Summary | None: ...

    def releases(self, component: str) -> Iterable[ComponentRelease]: ...

    def releases_from(self, ref: ObjectRef) -> tuple[ComponentRelease, ...]: ...

    def helmreleases_using(self, source: ObjectRef) -> Iterable[ObjectRef]: ...


@dataclass(frozen=True, slots=True)
class _State:
    """One consistent picture of the cluster. Never changed once published: writers build a new one."""

    crds: Mapping[str, CRDInfo]
    summaries: Mapping[ObjectRef, Summary]
    releases: Mapping[ObjectRef, tuple[ComponentRelease, ...]]
    by_component: Mapping[str, Mapping[ObjectRef, tuple[ComponentRelease, ...]]]
    users: Mapping[ObjectRef, frozenset[ObjectRef]]  # OCIRepository or HelmChart -> HelmReleases


_EMPTY = _State({}, {}, {}, {}, {})


class Inventory:
    """A ClusterView kept up to date by ``upsert``/``remove``; safe to read while one thread writes.

    Readers never lock and never see half an update: a write copies the indexes it changes,
    fills the copies, and publishes them all at once by replacing one reference (an atomic store
    in CPython). A reader that calls several methods may see two states, each whole.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._write = threading.Lock()
        self._state = _EMPTY
        # Write counters: what was computed from the view is stale once something it read is written.
        self._revision = 0
        self._objects_written = 0  # the revision of the last write of anything but a CRD
        self._crds_written: dict[str, int] = {}  # CRD name -> the revision of its last write
        self._touched: set[ObjectRef] = set()  # written since the last drain_touched()

    def revision_for(self, crd_names: frozenset[str]) -> tuple[int, int]:
        """A token that changes with every write of an object other than a CRD or of one of ``crd_names``.

        What reads CRDs only by those names (the planner: the catalog's and the release sets' CRDs)
        and every other object may keep its result while the token is the same: a cluster creating
        unrelated CRDs does not make it stale.
        """
        written = self._crds_written
        return self._objects_written, max((written.get(n, 0) for n in crd_names), default=0)

    # -- ClusterView ---------------------------------------------------------------------
    def crd(self, name: str) -> CRDInfo | None:
        return self._state.crds.get(name)

    def summary(self, ref: ObjectRef) -> Summary | None:
        state = self._state
        if ref.kind == CRD_KIND:
            return state.crds.get(ref.name)
        return state.summaries.get(ref)

    def releases(self, component: str) -> Iterator[ComponentRelease]:
        for found in self._state.by_component.get(component, {}).values():
            yield from found

    def releases_from(self, ref: ObjectRef) -> tuple[ComponentRelease, ...]:
        return self._state.releases.get(ref, ())

    def helmreleases_using(self, source: ObjectRef) -> frozenset[ObjectRef]:
        """The HelmReleases whose spec.chartRef names ``source`` (an OCIRepository or HelmChart)."""
        return self._state.users.get(source, frozenset())

    # -- writes --------------------------------------------------------------------------
    def upsert(self, summary: Summary) -> None:
        with self._write:
            self._touched.add(summary_ref(summary))
            self._state = self._changed(self._state, summary_ref(summary), summary)
            self._wrote([summary_ref(summary)])

    def remove(self, ref: ObjectRef) -> None:
        with self._write:
            self._touched.add(ref)
            self._state = self._changed(self._state, ref, None)
            self._wrote([ref])

    def replace_all(self, kind: str, summaries: Iterable[Summary]) -> None:
        """Make ``kind`` hold exactly ``summaries`` (a relist), keeping other kinds; published at once."""
        fresh = {summary_ref(s): s for s in summaries}
        with self._write:
            state = self._state
            written = [ref for ref in self._refs(state, kind) if ref not in fresh]
            for ref in written:
                self._touched.add(ref)
                state = self._changed(state, ref, None)
            for ref, summary in fresh.items():
                self._touched.add(ref)
                state = self._changed(state, ref, summary)
            self._state = state
            self._wrote([*written, *fresh])

    def _wrote(self, refs: Iterable[ObjectRef]) -> None:
        self._revision += 1
        for ref in refs:
            if ref.kind == CRD_KIND:
                self._crds_written[ref.name] = self._revision
            else:
                self._objects_written = self._revision

    def drain_touched(self) -> set[ObjectRef]:
        """The objects written (upserted or removed) since the last call, for incremental audits."""
        with self._write:
            touched, self._touched = self._touched, set()
        return touched

    def refs(self, kind: str) -> list[ObjectRef]:
        return self._refs(self._state, kind)

    def counts(self) -> dict[str, int]:
        state = self._state
        counts: dict[str, int] = {CRD_KIND: len(state.crds)}
        for ref in state.summaries:
            counts[ref.kind] = counts.get(ref.kind, 0) + 1
        counts["ComponentRelease"] = sum(len(v) for v in state.releases.values())
        return counts

    @staticmethod
    def _refs(state: _State, kind: str) -> list[ObjectRef]:
        if kind == CRD_KIND:
            return [ObjectRef(kind, None, name) for name in state.crds]
        return [ref for ref in state.summaries if ref.kind == kind]

    def _changed(self, state: _State, ref: ObjectRef, summary: Summary | None) -> _State:
        """``state`` with the object at ``ref`` replaced by ``summary`` (None: removed), as a new state."""
        if ref.kind == CRD_KIND:
            crds = dict(state.crds)
            if isinstance(summary, CRDInfo):
                crds[ref.name] = summary
            else:
                crds.pop(ref.name, None)
            return replace(state, crds=crds)
        summaries = dict(state.summaries)
        users = dict(state.users)
        old = summaries.pop(ref, None)
        if isinstance(old, HelmReleaseSummary) and old.chart_ref is not None:
            left = users.get(old.chart_ref, frozenset()) - {ref}
            if left:
                users[old.chart_ref] = left
            else:
                users.pop(old.chart_ref, None)
        if summary is not None:
            summaries[ref] = summary
            if isinstance(summary, HelmReleaseSummary) and summary.chart_ref is not None:
                users[summary.chart_ref] = users.get(summary.chart_ref, frozenset()) | {ref}
        releases = dict(state.releases)
        by_component = dict(state.by_component)

        # The object itself, and for a chart source the HelmReleases whose chart and version it holds.
        for target in (ref, *(users.get(ref, ()) if ref.kind in CHART_SOURCE_KINDS else ())):
            _reindex(target, summaries.get(target), self.catalog, summaries.get, releases, by_component)
        if isinstance(summary, _KEPT_ONLY_WITH_RELEASES) and ref not in releases:
            # Most Deployments run, and most Applications and k3s HelmCharts install, no catalogued
            # component, and nothing else refers to them: keep nothing of them.
            del summaries[ref]
        return _State(
            crds=state.crds, summaries=summaries, releases=releases, by_component=by_component, users=users
        )


_KEPT_ONLY_WITH_RELEASES = (DeploymentSummary, ApplicationSummary, K3sHelmChartSummary)


def _reindex(
    ref: ObjectRef,
    summary: Summary | None,
    catalog: Catalog,
    lookup: Callable[[ObjectRef], Summary | None],
    releases: dict[ObjectRef, tuple[ComponentRelease, ...]],
    by_component: dict[str, Mapping[ObjectRef, tuple[ComponentRelease, ...]]],
) -> None:
    """Recompute the releases one object reveals into ``releases`` and ``by_component`` (both copies)."""
    old = releases.pop(ref, ())
    new = detect_releases(summary, catalog, lookup) if summary is not None else ()
    if new:
        releases[ref] = new
    for component in {r.component for r in old} | {r.component for r in new}:
        table = dict(by_component.get(component, {}))
        table.pop(ref, None)
        mine = tuple(r for r in new if r.component == component)
        if mine:
            table[ref] = mine
        by_component[component] = table


class Overlay:
    """``base`` as it would be with one object replaced by ``summary`` (None: deleted)."""

    def __init__(self, base: ClusterView, catalog: Catalog, ref: ObjectRef, summary: Summary | None) -> None:
        self.base = base
        self.catalog = catalog
        self.ref = ref
        self.changed = summary
        users: set[ObjectRef] = set()
        if ref.kind in CHART_SOURCE_KINDS:
            users.update(base.helmreleases_using(ref))
        self.affected = frozenset({ref, *users})

    def crd(self, name: str) -> CRDInfo | None:
        if self.ref.kind == CRD_KIND and self.ref.name == name:
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
        return detect_releases(summary, self.catalog, self.summary) if summary else ()

    def helmreleases_using(self, source: ObjectRef) -> Iterable[ObjectRef]:
        return self.base.helmreleases_using(source)
