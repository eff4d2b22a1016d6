"""The planner: ordered, verified steps from the cluster as crdguard sees it to target versions.

A step applies a released bundle (Gateway API, Inference Extension) or moves a chart
release (kgateway-crds, a catalogued controller) to another released version. Every
write a step makes is judged by crdguard's own engine (``review_change``) and, for
Gateway API CRDs, by the ``safe-upgrades`` policy installed at that point; a step with
one refused write is never planned. The search is uniform-cost over (steps, version
distance), so the plan has the fewest steps and, among those, the smallest moves.

Release facts come from ``webhook/rules/releases/`` (:mod:`webhook.rules.releases`);
commands are rendered last, from how each release was installed (Helm, Flux, plain).
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from webhook.rules.catalog import Catalog, Failure
from webhook.rules.detect import ComponentRelease, Installation, detect_releases, image_matches, parse_image
from webhook.rules.engine import Change, Conflict, audit, review_change
from webhook.rules.inventory import ClusterView, Inventory
from webhook.rules.objects import (
    APPLICATION_KIND,
    ARGOCD_GROUP,
    CRD_GROUP,
    CRD_KIND,
    DEPLOYMENT_KIND,
    HELMCHART_KIND,
    HELMRELEASE_GROUP,
    HELMRELEASE_KIND,
    K3S_GROUP,
    K3S_HELMCHART_KIND,
    OCIREPOSITORY_GROUP,
    OCIREPOSITORY_KIND,
    ApplicationSummary,
    Container,
    CRDInfo,
    DeploymentSummary,
    HelmChartSummary,
    HelmReleaseSummary,
    K3sHelmChartSummary,
    ObjectRef,
    OCIRepositorySummary,
    Summary,
)
from webhook.rules.releases import Release, ReleaseSet, SafeUpgradesPolicy, component_release_sets
from webhook.rules.versions import Version

GATEWAY_API = "gateway-api"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MAX_STEPS = 6
_DELETED = object()


class PlanningTimedOut(Exception):
    """The search ran past its deadline (a webhook request cannot wait for long plans)."""


class PlanError(ValueError):
    """A target the planner cannot understand (unknown component, version or channel)."""


@dataclass(frozen=True, slots=True)
class Target:
    component: str
    version: str
    channel: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        component, sep, rest = text.partition("=")
        if not sep or not component or not rest:
            raise PlanError(f"--to {text!r}: expected COMPONENT=VERSION[:CHANNEL]")
        version, _, channel = rest.partition(":")
        return cls(component.strip(), version.strip(), channel.strip() or None)


@dataclass(frozen=True, slots=True)
class Step:
    component: str
    version: str
    channel: str | None
    release: tuple[str, str] | None  # (name, namespace) of the chart release
    commands: tuple[str, ...]
    summary: str
    notes: tuple[str, ...] = ()  # e.g. a feature silently off in the state this step leaves

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"component": self.component, "version": self.version}
        if self.channel:
            data["channel"] = self.channel
        if self.release:
            data["release"] = {"name": self.release[0], "namespace": self.release[1]}
        data["commands"] = list(self.commands)
        data["summary"] = self.summary
        data["notes"] = list(self.notes)
        return data


@dataclass(frozen=True, slots=True)
class Plan:
    possible: bool
    reason: str
    steps: tuple[Step, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "possible": self.possible,
            "reason": self.reason,
            "steps": [s.to_json() for s in self.steps],
            "notes": list(self.notes),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


# -- a cluster view with the plan's writes on top ----------------------------------------------


class PlanView:
    """``base`` with many objects replaced (or deleted): the cluster after some steps."""

    def __init__(
        self,
        base: ClusterView,
        catalog: Catalog,
        crds: Mapping[str, CRDInfo | None],
        objects: Mapping[ObjectRef, Summary | None],
    ) -> None:
        self.base, self.catalog, self.crds, self.objects = base, catalog, crds, objects

    def crd(self, name: str) -> CRDInfo | None:
        return self.crds[name] if name in self.crds else self.base.crd(name)

    def summary(self, ref: ObjectRef) -> Summary | None:
        if ref.kind == CRD_KIND:
            return self.crd(ref.name)
        return self.objects[ref] if ref in self.objects else self.base.summary(ref)

    def releases(self, component: str) -> Iterator[ComponentRelease]:
        for release in self.base.releases(component):
            if release.source not in self.objects:
                yield release
        for ref in self.objects:
            yield from (r for r in self.releases_from(ref) if r.component == component)

    def releases_from(self, ref: ObjectRef) -> tuple[ComponentRelease, ...]:
        if ref not in self.objects:
            return self.base.releases_from(ref)
        summary = self.objects[ref]
        return detect_releases(summary, self.catalog, self._oci) if summary else ()

    def helmreleases_using(self, oci: ObjectRef) -> Iterable[ObjectRef]:
        return self.base.helmreleases_using(oci)

    def _oci(self, ref: ObjectRef) -> OCIRepositorySummary | None:
        found = self.summary(ref)
        return found if isinstance(found, OCIRepositorySummary) else None


@dataclass(frozen=True, eq=False)
class State:
    crds: tuple[tuple[str, CRDInfo | None], ...]
    objects: tuple[tuple[ObjectRef, Summary | None], ...]
    versions: tuple[tuple[str, str, str | None], ...]  # component, version, channel
    policy: SafeUpgradesPolicy | None
    moves: tuple[str, ...] = ()
    # Conflicts the steps so far introduced that crdguard only warns about (a feature silently
    # off), as (conflict key, what the user loses); the state is allowed, but not healthy.
    warned: tuple[tuple[tuple[object, ...], str], ...] = ()

    @property
    def key(self) -> tuple[object, ...]:
        # Summaries hold mappings (labels): their repr is their identity here.
        objects = tuple((ref, repr(s)) for ref, s in self.objects)
        return (self.crds, objects, self.versions, self.policy.bundle_version if self.policy else None)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self.key == other.key

    def version(self, component: str) -> tuple[str, str | None] | None:
        return next(((v, c) for name, v, c in self.versions if name == component), None)

    def view(self, base: ClusterView, catalog: Catalog) -> PlanView:
        return PlanView(base, catalog, dict(self.crds), dict(self.objects))


# -- reading the current state -----------------------------------------------------------------


def _channel(info: CRDInfo) -> str | None:
    # summarize_crd writes "<group> <version> <channel> channel" from the bundle annotations.
    words = (info.bundle or "").split()
    return words[-2] if len(words) == 4 and words[-1] == "channel" else None


def _bundle_version(info: CRDInfo) -> str | None:
    words = (info.bundle or "").split()
    return words[1] if len(words) >= 2 else None


def nearest_release(release_set: ReleaseSet, version_text: str) -> Release | None:
    """The upstream release a (possibly custom) version maps to: same x.y.z, else the newest below."""
    try:
        wanted = Version.parse(version_text)
    except ValueError:
        return None
    core = Version(wanted.major, wanted.minor, wanted.patch)
    below = [r for r in release_set.releases if not core < Version.parse(r.version)]
    return max(below, key=lambda r: Version.parse(r.version), default=None)


def _installation(release: ComponentRelease, view: ClusterView) -> Installation:
    """``release.installation``, followed to the object that holds the version: a Deployment made by
    a Flux HelmRelease or an Argo CD Application is moved by editing that object."""
    inst = release.installation
    if (
        release.source.kind == DEPLOYMENT_KIND
        and inst.owner is not None
        and inst.manager in ("flux", "argocd")
    ):
        for found in view.releases_from(inst.owner):
            if found.component == release.component:
                return found.installation
    return inst


@dataclass(frozen=True, slots=True)
class _Controller:
    """One installed release of a catalogued component, with every object that reveals it."""

    component: str
    current: Release | None
    version_text: str
    sources: tuple[ComponentRelease, ...]
    installation: Installation


def controllers(view: ClusterView, catalog: Catalog, releases: Mapping[str, ReleaseSet]) -> list[_Controller]:
    """Installed releases of catalogued components; a HelmRelease and the Deployment it made are one."""
    found: list[_Controller] = []
    for component in catalog.components:
        release_set = releases.get(component)
        if release_set is None:
            continue
        groups: dict[tuple[str, ...], list[ComponentRelease]] = {}
        for release in view.releases(component):
            groups.setdefault(release.identity, []).append(release)
        for group in groups.values():
            # The running image wins over a chart version for what runs now; the object that
            # installed it (HelmRelease, Application, k3s HelmChart) is what a fix edits.
            group.sort(key=lambda r: r.source.kind != DEPLOYMENT_KIND)
            first = group[0]
            manager = next((r for r in group if r.source.kind != DEPLOYMENT_KIND), first)
            found.append(
                _Controller(
                    component,
                    nearest_release(release_set, first.version_text),
                    first.version_text,
                    tuple(group),
                    _installation(manager, view),
                )
            )
    return found


# -- the planner -------------------------------------------------------------------------------


@dataclass
class Planner:
    """Searches steps over one cluster view; reusable for several goals on the same view."""

    view: ClusterView
    catalog: Catalog
    releases: Mapping[str, ReleaseSet]
    deadline: float | None = None  # time.monotonic() after which search() gives up
    _controllers: list[_Controller] = field(init=False)
    _installed: frozenset[str] = field(init=False)
    _start: State = field(init=False)
    notes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        # Every catalogued component with releases can move; the generated release data wins.
        self.releases = {**component_release_sets(self.catalog), **self.releases}
        self._controllers = controllers(self.view, self.catalog, self.releases)
        # What the search must tell apart: the rules of the controllers installed, and of those a
        # CRD chart serves (installing that chart is a move even before its controller runs).
        self._installed = frozenset(c.component for c in self._controllers) | {
            rs.crds_for for rs in self.releases.values() if rs.crds_for is not None
        }
        self.notes = []
        versions: list[tuple[str, str, str | None]] = []
        for ctl in self._controllers:
            if ctl.current is None:
                continue
            versions.append((ctl.component, ctl.current.version, None))
            if ctl.current.version != ctl.version_text:
                self.notes.append(
                    f"{ctl.component} {ctl.version_text} is not an upstream release; "
                    f"planned as upstream {ctl.current.version}"
                )
        policy = None
        for name, release_set in self.releases.items():
            current = self._installed_bundle(release_set)
            if current is not None:
                versions.append((name, current.version, current.channel))
                policy = policy if name != GATEWAY_API else self._installed_policy()
        self._start = State((), (), tuple(sorted(versions, key=lambda v: v[0])), policy)

    # The policy ships in every Gateway API bundle from v1.5.0: assume the newest bundle seen brought it.
    def _installed_policy(self) -> SafeUpgradesPolicy | None:
        gateway = self.releases.get(GATEWAY_API)
        if gateway is None:
            return None
        best: Release | None = None
        for release in gateway.releases:
            if release.policy is None:
                continue
            if any(self._crd_stamp(c.name) == (release.version, release.channel) for c in release.crds[:3]):
                if best is None or Version.parse(best.version) < Version.parse(release.version):
                    best = release
        return best.policy if best else None

    def _crd_stamp(self, name: str) -> tuple[str | None, str | None] | None:
        info = self.view.crd(name)
        return (_bundle_version(info), _channel(info)) if info else None

    def _installed_bundle(self, release_set: ReleaseSet) -> Release | None:
        """Which release of a bundle or CRD chart is installed: the best match of the CRDs seen."""
        if release_set.kind == "bundle":
            stamps: dict[tuple[str | None, str | None], int] = {}
            for crd in {c.name for r in release_set.releases for c in r.crds}:
                stamp = self._crd_stamp(crd)
                if stamp is not None and stamp[0] is not None:
                    stamps[stamp] = stamps.get(stamp, 0) + 1
            if not stamps:
                return None
            version, channel = max(stamps, key=lambda s: (stamps[s], Version.parse(s[0] or "0.0.0")))
            return release_set.find(version or "", channel) or release_set.find(version or "")
        if release_set.crds_for is None:
            return None
        installed = {c.name for r in release_set.releases for c in r.crds if self.view.crd(c.name)}
        if not installed:
            return None
        owner = next((c for c in self._controllers if c.component == release_set.crds_for), None)
        # CRD charts carry no version label: releases with the CRD set installed, nearest the controller.
        matching = [r for r in release_set.releases if {c.name for c in r.crds} == installed]
        if not matching:
            return None
        if owner is not None and owner.current is not None:
            near = Version.parse(owner.current.version)
            return min(matching, key=lambda r: _distance(Version.parse(r.version), near))
        return max(matching, key=lambda r: Version.parse(r.version))

    @property
    def start(self) -> State:
        return self._start

    # -- moves ---------------------------------------------------------------------------------
    def _moves(
        self, state: State, blocked: set[str], wanted: Mapping[str, Target]
    ) -> Iterator[tuple[str, Release]]:
        for name, release_set in self.releases.items():
            if name in blocked:
                continue
            current = state.version(name)
            if release_set.kind == "chart" and not self._chart_installed(name):
                continue
            if name == "inference-extension" and current is None and name not in wanted:
                continue
            candidates = [r for r in release_set.releases if current != (r.version, r.channel)]
            target = wanted.get(name)
            if target is not None:
                chosen = [r for r in candidates if r.version == target.version]
                chosen = [r for r in chosen if target.channel in (None, r.channel)] + _representatives(
                    candidates, current, self.catalog, state.policy, self._installed
                )
            else:
                chosen = _representatives(candidates, current, self.catalog, state.policy, self._installed)
            unique = {id(r): r for r in chosen}
            yield from ((name, r) for r in unique.values())

    def _chart_installed(self, name: str) -> bool:
        release_set = self.releases[name]
        if release_set.crds_for is not None:
            return True  # installing a CRD chart is non-destructive, with or without its controller
        return any(c.component == name for c in self._controllers)

    def _writes(self, state: State, component: str, release: Release) -> list[Change]:
        """The writes a step makes, in the order the API server sees them."""
        release_set = self.releases[component]
        view = state.view(self.view, self.catalog)
        changes: list[Change] = []
        if release_set.kind == "bundle" or release_set.crds_for is not None:
            new_names = {c.name for c in release.crds}
            for crd in release.crds:
                old = view.crd(crd.name)
                op = "UPDATE" if old is not None else "CREATE"
                ref = ObjectRef(CRD_KIND, None, crd.name)
                changes.append(Change(op, CRD_GROUP, CRD_KIND, ref, crd.info(), old))
            if release_set.kind == "chart":
                # helm upgrade removes what the new chart version no longer has.
                for name in sorted({c.name for r in release_set.releases for c in r.crds} - new_names):
                    old = view.crd(name)
                    if old is not None:
                        ref = ObjectRef(CRD_KIND, None, name)
                        changes.append(Change("DELETE", CRD_GROUP, CRD_KIND, ref, None, old))
            return changes
        controller = release.controller or release.version
        for ctl in self._controllers:
            if ctl.component != component:
                continue
            for source in sorted(ctl.sources, key=lambda r: r.source.kind == DEPLOYMENT_KIND):
                chart_version = _chart_version(release.version, ctl.installation.chart_version)
                moved = _moved(
                    view.summary(source.source), view, controller, chart_version, self.catalog, component
                )
                for ref, before, after, group, kind in moved:
                    changes.append(Change("UPDATE", group, kind, ref, after, before))
        return changes

    def _step(self, state: State, component: str, release: Release) -> tuple[State | None, str]:
        """The state after the step, or None and why it is refused."""
        crds = dict(state.crds)
        objects = dict(state.objects)
        policy = state.policy
        warned = dict(state.warned)
        view = state.view(self.view, self.catalog)
        for change in self._writes(state, component, release):
            why = _policy_refusal(policy, change)
            if why:
                return None, why
            verdict = review_change(change, view, self.catalog)
            if not verdict.allowed:
                first = verdict.denied[0]
                return None, (
                    f"crdguard would deny it: {first.release.component} {first.release.version_text} "
                    f"needs {first.rule.crd_kind} {first.rule.served_version or '(the CRD)'}"
                )
            for conflict in verdict.resolved:
                warned.pop(conflict.key, None)
            for conflict in verdict.warned:
                warned[conflict.key] = (
                    f"{conflict.rule.crd_kind} is ignored by {conflict.release.component}"
                    if conflict.rule.failure is Failure.FEATURE_OFF
                    else f"{conflict.release.component} warns about {conflict.rule.crd_kind}"
                )
            if change.kind == CRD_KIND:
                crds[change.ref.name] = change.new if isinstance(change.new, CRDInfo) else None
            else:
                objects[change.ref] = change.new
            view = PlanView(self.view, self.catalog, crds, objects)
        if release.policy is not None:
            policy = release.policy
        versions = [v for v in state.versions if v[0] != component]
        versions.append((component, release.version, release.channel))
        return (
            State(
                tuple(sorted(crds.items())),
                tuple(sorted(objects.items())),
                tuple(sorted(versions, key=lambda v: v[0])),
                policy,
                (*state.moves, component),
                tuple(sorted(warned.items())),
            ),
            "",
        )

    def search(
        self,
        goal: Callable[[State], bool],
        *,
        frozen: Iterable[str] = (),
        wanted: Mapping[str, Target] | None = None,
    ) -> tuple[list[tuple[str, Release]] | None, list[str]]:
        """Cheapest sequence of moves reaching ``goal``; or None with the refusals met on the way.

        Cost: fewest steps, then smallest moves; a path through a state with a warned conflict (a
        feature silently off) costs one and a half steps more, so a healthy path wins even when it
        takes one extra step.
        """
        frozen = set(frozen)
        wanted = wanted or {}
        counter = itertools.count()
        heap: list[tuple[int, int, int, int, bool, State, list[tuple[str, Release]]]] = [
            (0, 0, 0, next(counter), False, self._start, [])
        ]
        seen: set[tuple[State, bool]] = set()
        refusals: list[str] = []
        while heap:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise PlanningTimedOut
            _, steps, distance, _, unhealthy, state, path = heapq.heappop(heap)
            if goal(state):
                return path, refusals
            if (state, unhealthy) in seen or steps >= MAX_STEPS:
                continue
            seen.add((state, unhealthy))
            blocked = frozen | set(state.moves[-1:]) | {c for c in state.moves if state.moves.count(c) >= 2}
            for component, release in self._moves(state, blocked, wanted):
                after, why = self._step(state, component, release)
                if after is None:
                    refusals.append(f"{component} {release.label}: {why}")
                    continue
                sick = unhealthy or bool(after.warned)
                if (after, sick) in seen:
                    continue
                cost = _move_cost(self.releases[component], state.version(component), release)
                heapq.heappush(
                    heap,
                    (
                        2 * (steps + 1) + (3 if sick else 0),
                        steps + 1,
                        distance + cost,
                        next(counter),
                        sick,
                        after,
                        [*path, (component, release)],
                    ),
                )
        return None, refusals

    def states(self, path: list[tuple[str, Release]]) -> list[State]:
        """The state after each step of ``path`` (which the search found passable)."""
        found, state = [], self._start
        for component, release in path:
            after, why = self._step(state, component, release)
            assert after is not None, why
            found.append(after)
            state = after
        return found

    def plan(self, targets: Iterable[Target]) -> Plan:
        wanted = {t.component: t for t in targets}
        for target in wanted.values():
            release_set = self.releases.get(target.component)
            if release_set is None:
                raise PlanError(
                    f"unknown component {target.component!r} (known: {', '.join(sorted(self.releases))})"
                )
            if release_set.find(target.version, target.channel) is None:
                known = ", ".join(sorted({r.label for r in release_set.releases}, key=_label_key))
                raise PlanError(
                    f"{target.component} has no release {target.version} {target.channel or ''}".rstrip()
                    + f" (known: {known})"
                )
            if release_set.kind == "chart" and not self._chart_installed(target.component):
                raise PlanError(f"{target.component} is not installed in this cluster (nothing to move)")

        def reached(state: State) -> bool:
            for target in wanted.values():
                current = state.version(target.component)
                if current is None or current[0] != target.version:
                    return False
                if target.channel is not None and current[1] != target.channel:
                    return False
            return True

        path, refusals = self.search(reached, wanted=wanted)
        if path is None:
            return Plan(False, self._blocked(wanted, refusals), (), tuple(self.notes))
        return Plan(True, "", tuple(self.render(path, custom_builds=False)), tuple(self.notes))

    def _blocked(self, wanted: Mapping[str, Target], refusals: list[str]) -> str:
        gateway = self._start.version(GATEWAY_API)
        policy = self._start.policy
        parts = []
        if gateway is not None and policy is not None:
            known = [r.version for r in self.releases[GATEWAY_API].releases]
            parts.append(
                f"Gateway API {gateway[0]} {gateway[1]} is installed; its safe-upgrades policy refuses "
                f"bundle versions below {policy.floor(known)}"
                + (
                    " and the experimental channel over standard CRDs"
                    if gateway[1] == "standard" and policy.refuses_experimental_over_standard
                    else ""
                )
            )
        unique = list(dict.fromkeys(r.split(": ", 1)[1] for r in refusals))
        if unique:
            parts.append("refused on the way: " + "; ".join(unique[:4]))
        goal = ", ".join(
            f"{t.component} {t.version}" + (f" {t.channel}" if t.channel else "") for t in wanted.values()
        )
        return (
            f"no order of known releases reaches {goal}: " + ". ".join(parts)
            if parts
            else (f"no order of known releases reaches {goal}")
        )

    # -- commands --------------------------------------------------------------------------------
    def render(
        self, path: list[tuple[str, Release]], *, retry: bool = False, custom_builds: bool = True
    ) -> list[Step]:
        """Steps with their commands; a step after which a feature is silently off says until when,
        and the first step says which custom builds were planned as which upstream release."""
        steps = [self._render(component, release) for component, release in path]
        if steps and self.notes and custom_builds:
            steps[0] = replace(steps[0], notes=(*self.notes, *steps[0].notes))
        states = self.states(path)
        windows: dict[str, tuple[int, int | None]] = {}  # what is lost -> (first step, step it ends)
        for n, state in enumerate(states, 1):
            lost = {text for _, text in state.warned}
            for text in lost:
                windows.setdefault(text, (n, None))
            for text, (first, end) in list(windows.items()):
                if end is None and text not in lost:
                    windows[text] = (first, n)
        for text, (first, end) in windows.items():
            if end is not None:
                note = f"{text} between steps {first} and {end}"
            elif retry:
                note = f"{text} from step {first} until the retried change"
            else:
                note = f"{text} from step {first} on"
            step = steps[first - 1]
            steps[first - 1] = replace(step, notes=(*step.notes, note))
        return steps

    def _render(self, component: str, release: Release) -> Step:
        release_set = self.releases[component]
        if release_set.kind == "bundle":
            command = release_set.install.format(version=release.version, channel=release.channel or "")
            what = f"Apply {_title(component)} {release.label}"
            return Step(component, release.version, release.channel, None, (command,), what)
        owner = release_set.crds_for or component
        ctl = next((c for c in self._controllers if c.component == owner), None)
        inst = ctl.installation if ctl else Installation()
        namespace = inst.release_namespace or release_set.namespace or "default"
        commands: tuple[str, ...]
        if release_set.crds_for is not None:
            name = release_set.release_name or component
            if inst.manager == "flux":
                # The CRD chart's HelmRelease is conventionally named after it, beside the controller's.
                hr = ObjectRef(HELMRELEASE_KIND, inst.owner.namespace if inst.owner else namespace, name)
                commands = (_patch_command(hr, "/spec/chart/spec/version", release.version, "flux"),)
            else:
                commands = (_helm(name, release_set, release.version, namespace, install=True),)
            return Step(
                component,
                release.version,
                None,
                (name, namespace),
                commands,
                f"Upgrade {component} to {release.version}",
            )
        name = inst.release_name or release_set.release_name or component
        chart_version = _chart_version(release.version, inst.chart_version)
        if inst.manager in ("flux", "argocd", "k3s") and inst.owner is not None:
            if inst.version_field is not None:
                commands = (_patch_command(inst.owner, inst.version_field, chart_version, inst.manager),)
            else:
                commands = ()  # the version is an image tag in the owner's values: no one command sets it
        elif release_set.install and (inst.manager == "helm" or ctl is None or _chart_rendered(inst)):
            commands = (_helm(name, release_set, chart_version, namespace, install=False),)
        else:
            commands = self._set_image(ctl, component, release)
        moving_up = (
            ctl is None
            or ctl.current is None
            or Version.parse(ctl.current.version) < Version.parse(release.version)
        )
        summary = f"{'Upgrade' if moving_up else 'Move'} {component} to {release.version}"
        if not commands and inst.owner is not None:
            summary += f" (set the image tag in the values of {inst.owner})"
        return Step(component, release.version, None, (name, namespace), commands, summary)

    def _set_image(self, ctl: _Controller | None, component: str, release: Release) -> tuple[str, ...]:
        """A Deployment nothing else manages: set its image."""
        deployment = next((s for s in ctl.sources if s.source.kind == DEPLOYMENT_KIND), None) if ctl else None
        if deployment is None:
            return ()
        summary = self.view.summary(deployment.source)
        if not isinstance(summary, DeploymentSummary):
            return ()
        return tuple(
            f"kubectl set image deployment/{deployment.source.name} -n {deployment.source.namespace} "
            f"{c.name}={_retag(c.image, release.controller or release.version)}"
            for c in summary.containers
            if _is_component_image(c, self.catalog)
        )


# -- helpers -----------------------------------------------------------------------------------


def _title(component: str) -> str:
    return {"gateway-api": "Gateway API", "inference-extension": "Gateway API Inference Extension"}.get(
        component, component
    )


def _label_key(label: str) -> tuple[Version, str]:
    version, _, channel = label.partition(" ")
    return Version.parse(version), channel


def _distance(a: Version, b: Version) -> int:
    return abs(a.major - b.major) * 10000 + abs(a.minor - b.minor) * 100 + abs(a.patch - b.patch)


def _move_cost(release_set: ReleaseSet, current: tuple[str, str | None] | None, release: Release) -> int:
    if current is None:
        return 1
    cost = _distance(Version.parse(current[0]), Version.parse(release.version))
    return cost + (1 if current[1] != release.channel else 0)


def _representatives(
    candidates: list[Release],
    current: tuple[str, str | None] | None,
    catalog: Catalog,
    policy: SafeUpgradesPolicy | None,
    installed: frozenset[str],
) -> list[Release]:
    """One release per distinct effect on what the ``installed`` components read (CRDs served,
    bundle-version windows, the rules a controller version is under; channel and policy too): the
    nearest one. Components not in the cluster do not split classes, so the whole catalog costs
    no more than the components installed."""
    here = Version.parse(current[0]) if current else None
    rules = [r for name in installed for r in catalog.rules_by_component.get(name, ())]
    read = {r.crd for r in rules}
    windows = [r for r in rules if r.bundle_window is not None]
    classes: dict[object, Release] = {}
    for release in candidates:
        stamped = [c for c in release.crds[:1] if c.name.endswith(GATEWAY_GROUP)]
        if policy is not None and any(policy.refuses_version(c.bundle_version) for c in stamped):
            continue
        bundle_version = next((c.bundle_version for c in release.crds if c.bundle_version), None)
        running = Version.parse(release.controller or release.version)
        effect = (
            release.channel,
            tuple(sorted((c.name, c.versions) for c in release.crds if c.name in read)),
            release.policy is not None and release.policy.refused_versions,
            tuple(r.id for r in windows if r.bundle_window is not None and bundle_version in r.bundle_window),
            tuple(
                r.id for r in catalog.rules_by_component.get(release.component, ()) if running in r.versions
            ),
        )
        best = classes.get(effect)
        if best is None or (
            here is not None
            and _distance(Version.parse(release.version), here) < _distance(Version.parse(best.version), here)
        ):
            classes[effect] = release
    return list(classes.values())


def _moved(
    old: Summary | None,
    view: ClusterView,
    controller: str,
    chart_version: str,
    catalog: Catalog,
    component: str,
) -> list[tuple[ObjectRef, Summary | None, Summary, str, str]]:
    """The objects a chart move rewrites, as (ref, before, after, API group, kind)."""
    if isinstance(old, DeploymentSummary):
        containers = tuple(
            replace(c, image=_retag(c.image, controller)) if _is_component_image(c, catalog) else c
            for c in old.containers
        )
        labels = dict(old.labels)
        for each in catalog.components.values():
            label = labels.get(each.detect.chart_label, "")
            for chart in each.detect.charts:
                if label.startswith(chart + "-"):
                    labels[each.detect.chart_label] = f"{chart}-{chart_version}"
        return [(old.ref, old, replace(old, containers=containers, labels=labels), "apps", DEPLOYMENT_KIND)]
    if isinstance(old, HelmReleaseSummary):
        if old.chart_ref is not None:
            source = view.summary(old.chart_ref)
            if isinstance(source, OCIRepositorySummary):
                moved: Summary = replace(source, tag=chart_version, semver=None, digest=None)
                return [(source.ref, source, moved, OCIREPOSITORY_GROUP, OCIREPOSITORY_KIND)]
            if isinstance(source, HelmChartSummary):
                moved = replace(source, version=chart_version)
                return [(source.ref, source, moved, OCIREPOSITORY_GROUP, HELMCHART_KIND)]
            return []
        moved = replace(old, version=chart_version)
        return [(old.ref, old, moved, HELMRELEASE_GROUP, HELMRELEASE_KIND)]
    if isinstance(old, ApplicationSummary):
        charts = catalog.components[component].detect.charts
        sources = tuple(replace(s, version=chart_version) if s.chart in charts else s for s in old.sources)
        return [(old.ref, old, replace(old, sources=sources), ARGOCD_GROUP, APPLICATION_KIND)]
    if isinstance(old, K3sHelmChartSummary):
        return [(old.ref, old, replace(old, version=chart_version), K3S_GROUP, HELMCHART_KIND)]
    return []


def _is_component_image(container: Container, catalog: Catalog) -> bool:
    image = parse_image(container.image)
    return any(image_matches(image, c.detect.images) for c in catalog.components.values())


def _retag(image: str, tag: str) -> str:
    repo = image.split("@", 1)[0]
    if repo.rfind(":") > repo.rfind("/"):
        repo = repo[: repo.rfind(":")]
    return f"{repo}:{tag}"


def _helm(name: str, release_set: ReleaseSet, version: str, namespace: str, *, install: bool) -> str:
    verb = "upgrade --install" if install else "upgrade"
    keep = "" if install else " --reset-then-reuse-values"
    chart = release_set.install
    if release_set.chart_name and not chart.startswith("oci://") and "://" in chart:
        chart = f"{release_set.chart_name} --repo {chart}"  # a classic chart repository
    return f"helm {verb} {name} {chart} --version {version} -n {namespace}{keep}"


_OWNER_RESOURCE = {
    HELMRELEASE_KIND: "helmrelease",
    OCIREPOSITORY_KIND: "ocirepository",
    HELMCHART_KIND: "helmchart.source.toolkit.fluxcd.io",
    APPLICATION_KIND: "application",
    K3S_HELMCHART_KIND: "helmchart.helm.cattle.io",
}


def _patch_command(owner: ObjectRef, field: str, version: str, manager: str) -> str:
    """``kubectl patch`` of the field that holds the chart version in the object that installs it."""
    where = f"{_OWNER_RESOURCE.get(owner.kind, owner.kind.lower())}/{owner.name} -n {owner.namespace}"
    if manager == "argocd":
        # "add" sets the member whether or not targetRevision is written (empty means latest).
        ops = [{"op": "add", "path": field, "value": version}]
        return f"kubectl patch {where} --type json -p '{json.dumps(ops, separators=(',', ':'))}'"
    patch: dict[str, object] = {}
    node = patch
    *parents, last = field.strip("/").split("/")
    for key in parents:
        node = node.setdefault(key, {})  # type: ignore[assignment]
    node[last] = version
    if owner.kind == OCIREPOSITORY_KIND:
        # Flux's precedence is digest, then semver, then tag: clear the two that would win.
        node.update({"semver": None, "digest": None})
    return f"kubectl patch {where} --type merge -p '{json.dumps(patch, separators=(',', ':'))}'"


def _chart_rendered(inst: Installation) -> bool:
    """No Helm annotation, but the chart's labels (instance, helm.sh/chart): a Helm release."""
    return not inst.manager and bool(inst.release_name or inst.chart_version)


def _chart_version(release_version: str, installed: str | None) -> str:
    """The chart version to write, spelled like the installed one: Cilium's and NGINX Gateway
    Fabric's charts drop the tag's "v", kgateway's and Envoy Gateway's keep it."""
    if installed and installed[:1].isdigit() and release_version.startswith("v"):
        return release_version[1:]
    return release_version


# -- fixes for a denied change -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fix:
    """One way out of a denial: ``steps`` replay cleanly; ``retry``: the denied change then passes."""

    summary: str
    retry: bool
    steps: tuple[Step, ...]

    def to_json(self) -> dict[str, object]:
        return {"summary": self.summary, "retry": self.retry, "steps": [s.to_json() for s in self.steps]}


def _owner_of_crd(releases: Mapping[str, ReleaseSet], crd: str) -> str | None:
    return next(
        (n for n, rs in releases.items() if any(c.name == crd for r in rs.releases for c in r.crds)), None
    )


def _retried(change: Change, view: ClusterView) -> Change:
    """The same write made later: its old object is whatever is there by then."""
    old = view.crd(change.ref.name) if change.kind == CRD_KIND else view.summary(change.ref)
    operation = (
        change.operation if change.operation == "DELETE" else ("UPDATE" if old is not None else "CREATE")
    )
    return replace(change, operation=operation, old=old)


class RecentFixes:
    """The fixes of the last few denials, reused while the inventory they were planned on is unchanged.

    A denied change comes back: Flux retries a HelmRelease upgrade at every interval, a developer
    re-applies, the API server retries on timeout. Planning costs tens of milliseconds; a lookup
    does not. Only an ``Inventory`` is cached: the planner reads CRDs by the names the catalog and
    the release sets give, so fixes stay valid until one of those CRDs or any other object the
    inventory holds is written. Any other view is planned every time, and so is everything when
    ``size`` is 0.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._fixes: dict[tuple[int, tuple[int, int], str], list[Fix]] = {}
        self._read_crds: dict[tuple[int, int], frozenset[str]] = {}
        # Reviews are judged on several threads: two evicting the same oldest entry at once would
        # fail one of them. The lock guards the dictionaries only, never the planning.
        self._lock = threading.Lock()

    def fixes_for(
        self,
        change: Change,
        view: ClusterView,
        catalog: Catalog,
        releases: Mapping[str, ReleaseSet],
        budget_seconds: float | None = None,
    ) -> list[Fix]:
        if self.size == 0 or not isinstance(view, Inventory) or view.catalog is not catalog:
            return fixes_for(change, view, catalog, releases, budget_seconds)
        with self._lock:
            read = self._read_crds.get((id(catalog), id(releases)))
        if read is None:
            named = {crd.name for rs in releases.values() for r in rs.releases for crd in r.crds}
            read = frozenset(catalog.rules_by_crd) | named
            with self._lock:
                self._read_crds[(id(catalog), id(releases))] = read
        if change.kind == CRD_KIND and change.ref.name not in read:
            read = read | {change.ref.name}  # a retry reads the changed CRD itself
        key = (id(releases), view.revision_for(read), repr(change))
        with self._lock:
            found = self._fixes.get(key)
        if found is None:
            found = fixes_for(change, view, catalog, releases, budget_seconds)
            if not all(fix.steps for fix in found):
                return found  # cut short by the budget: the next request may have the time
            with self._lock:
                while self._fixes and len(self._fixes) >= self.size:
                    del self._fixes[next(iter(self._fixes))]  # the oldest: dicts keep insertion order
                self._fixes[key] = found
        return list(found)


def fixes_for(
    change: Change,
    view: ClusterView,
    catalog: Catalog,
    releases: Mapping[str, ReleaseSet],
    budget_seconds: float | None = None,
) -> list[Fix]:
    """The verified ways out of a denial of ``change`` on ``view`` (the cluster before the change).

    With ``budget_seconds`` (the webhook's case: the API server waits), the search stops when the
    budget is spent; the fixes found by then are kept and a last entry says the rest was not computed.
    """
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    planner = Planner(view, catalog, releases, deadline)
    fixes: list[Fix] = []
    try:
        _plan_fixes(planner, change, view, catalog, fixes)
    except PlanningTimedOut:
        fixes.append(
            Fix(
                f"Not computed: planning more ways out took longer than this request's {budget_seconds:g} s "
                "budget; run `crdguard plan` against the cluster for a verified path",
                False,
                (),
            )
        )
    return fixes


def _plan_fixes(
    planner: Planner, change: Change, view: ClusterView, catalog: Catalog, fixes: list[Fix]
) -> None:
    releases = planner.releases
    if change.kind == CRD_KIND:
        moved = _owner_of_crd(releases, change.ref.name)
        frozen: set[str] = set()  # a bundle may move first (another channel), then the change is retried
        new = change.new if isinstance(change.new, CRDInfo) else None
        requested = (_bundle_version(new), _channel(new)) if new is not None else None
    else:
        revealed = (
            detect_releases(change.new, catalog, PlanView(view, catalog, {}, {})._oci) if change.new else ()
        )
        frozen = {r.component for r in revealed}
        planner._installed |= frozen  # the change brings these controllers: their rules matter
        requested = None
        moved = revealed[0].component if revealed else None

    def passes(state: State) -> bool:
        after = state.view(view, catalog)
        retried = _retried(change, after)
        if not state.moves or _policy_refusal(state.policy, retried):
            return False
        return review_change(retried, after, catalog).allowed

    path, _ = planner.search(passes, frozen=frozen)
    if path:
        steps = planner.render(path, retry=True)
        fixes.append(
            Fix(f"First {_and(_lower(s.summary) for s in steps)}, then retry this change", True, tuple(steps))
        )

    release_set = releases.get(moved or "")
    if release_set is not None and release_set.kind == "bundle" and requested and requested[0]:
        # Keep the controllers: the nearest release of this bundle that they can all live with.
        controllers_now = {c.component for c in planner._controllers} | {
            n for n, rs in releases.items() if rs.crds_for is not None
        }
        want = Version.parse(requested[0])
        current = planner.start.version(release_set.component)
        policy = planner.start.policy
        order = sorted(
            (
                r
                for r in release_set.releases
                if (r.version, r.channel) not in (requested, current)
                and not (policy is not None and release_set.component == GATEWAY_API and r.policy is None)
                and not (
                    policy is not None and any(policy.refuses_version(c.bundle_version) for c in r.crds[:1])
                )
            ),
            key=lambda r: (_distance(Version.parse(r.version), want), r.channel != "experimental"),
        )
        for candidate in order[:6]:

            def there(state: State, c: Release = candidate) -> bool:
                return state.version(release_set.component) == (c.version, c.channel)

            path, _ = planner.search(there, frozen=controllers_now)
            if path:
                steps = planner.render(path)
                kept = ", ".join(
                    f"{c.component} {c.version_text}" for c in planner._controllers if c.current is not None
                )
                fixes.append(
                    Fix(
                        f"Keep {kept} and "
                        + _and(s.summary[0].lower() + s.summary[1:] for s in steps)
                        + " instead",
                        False,
                        tuple(steps),
                    )
                )
                break
    elif moved is not None and change.kind != CRD_KIND:
        revealed_versions = (
            [
                r.version_text
                for r in detect_releases(change.new, catalog, PlanView(view, catalog, {}, {})._oci)
            ]
            if change.new
            else []
        )
        target_set = releases.get(moved)
        target = (
            nearest_release(target_set, revealed_versions[0]) if target_set and revealed_versions else None
        )
        if target is not None and planner._chart_installed(moved):
            plan = planner.plan([Target(moved, target.version)])
            if plan.possible:
                fixes.append(
                    Fix("Do it in this order: " + _and(s.summary for s in plan.steps), False, plan.steps)
                )


def fixes_for_conflict(
    conflict: Conflict, view: ClusterView, catalog: Catalog, releases: Mapping[str, ReleaseSet]
) -> list[Fix]:
    """The verified way out of a conflict that exists now (what ``audit`` reports): the cheapest
    sequence of steps after which it is gone, no step adding a conflict crdguard would deny."""
    planner = Planner(view, catalog, releases)

    def resolved(state: State) -> bool:
        return bool(state.moves) and all(
            c.key != conflict.key for c in audit(state.view(view, catalog), catalog)
        )

    path, _ = planner.search(resolved)
    if not path:
        return []
    steps = planner.render(path)
    return [
        Fix(
            _and(s.summary for s in steps)[:1].upper() + _and(s.summary for s in steps)[1:],
            False,
            tuple(steps),
        )
    ]


def _policy_refusal(policy: SafeUpgradesPolicy | None, change: Change) -> str:
    """Why the installed safe-upgrades policy refuses this CRD write ("" when it does not)."""
    new, old = change.new, change.old
    if policy is None or change.kind != CRD_KIND or not change.ref.name.endswith(GATEWAY_GROUP):
        return ""
    if not isinstance(new, CRDInfo):
        return ""  # the policy matches CREATE and UPDATE only
    old_channel = _channel(old) if isinstance(old, CRDInfo) else None
    return policy.refusal(change.ref.name, old_channel, _channel(new), _bundle_version(new))


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def _and(parts: Iterable[str]) -> str:
    items = list(parts)
    return ", then ".join(items)
