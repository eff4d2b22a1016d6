"""``crdguard plan`` and the fixes in every denial: planned, then replayed step by step.

The replay never asks the planner whether its steps work: it applies the real upstream
objects of each step (bundles from ../shared/upstream or the Gateway API Go module,
kgateway-crds CRDs, the kgateway objects moved to the step's version) through crdguard's
engine, and checks every Gateway API CRD write against the safe-upgrades policy read
from the real ValidatingAdmissionPolicy installed at that point.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bundles import gateway_api_objects
from helpers import (
    KGATEWAY_NS,
    Cluster,
    Obj,
    application,
    argocd_source,
    crd,
    deployment,
    flux_helmchart,
    gateway_api_bundle,
    helmrelease,
    helmrelease_chartref,
    k3s_helmchart,
    key_of,
    kgateway_crds,
    ocirepository,
    upstream_objects,
    with_version,
)

from webhook.catalogs import load_releases
from webhook.cli import main
from webhook.rules.catalog import Catalog
from webhook.rules.messages import denial_message
from webhook.rules.objects import summarize_crd
from webhook.rules.plan import PlanError, Planner, RecentFixes, Step, Target, fixes_for
from webhook.rules.releases import SAFE_UPGRADES_POLICY, SafeUpgradesPolicy, policy_facts

BUNDLES = ["v1.2.0", "v1.3.0", "v1.4.0", "v1.4.1", "v1.5.1"]
CHANNELS = ["standard", "experimental"]
KGATEWAY = ["v2.0.4", "v2.1.1"]

INSTALLS: dict[str, Callable[[str], list[Obj]]] = {
    "Deployment": lambda v: [deployment(v)],
    "HelmRelease": lambda v: [helmrelease(v, namespace="flux-system")],
    "OCIRepository": lambda v: [
        ocirepository(v, namespace="flux-system"),
        helmrelease_chartref(namespace="flux-system"),
    ],
}


def installed(
    upstream: Path, catalog: Catalog, bundle: tuple[str, str], kgateway: str, install: str
) -> Cluster:
    return Cluster(
        catalog,
        [
            *gateway_api_bundle(upstream, *bundle),
            *kgateway_crds(upstream, kgateway),
            *INSTALLS[install](kgateway),
        ],
    )


# -- replaying steps with real objects ---------------------------------------------------------


class Replay:
    """Follows steps literally on a Cluster; fails on the first write crdguard or the policy refuses."""

    def __init__(self, upstream: Path, cluster: Cluster) -> None:
        self.upstream = upstream
        self.cluster = cluster

    def policy(self) -> SafeUpgradesPolicy | None:
        for obj in self.cluster.objects.values():
            if obj["kind"] == "ValidatingAdmissionPolicy" and obj["metadata"]["name"] == SAFE_UPGRADES_POLICY:
                return policy_facts(obj)
        return None

    def apply(self, objects: list[Obj], what: str) -> None:
        policy = self.policy()
        for obj in objects:
            if obj["kind"] == "CustomResourceDefinition" and policy is not None:
                if obj["spec"].get("group") == "gateway.networking.k8s.io":
                    old = self.cluster.objects.get(key_of(obj))
                    annotations = obj["metadata"].get("annotations", {})
                    old_channel = (
                        (old or {})
                        .get("metadata", {})
                        .get("annotations", {})
                        .get("gateway.networking.k8s.io/channel")
                        if old
                        else None
                    )
                    why = policy.refusal(
                        obj["metadata"]["name"],
                        old_channel if old else None,
                        annotations.get("gateway.networking.k8s.io/channel"),
                        annotations.get("gateway.networking.k8s.io/bundle-version"),
                    )
                    assert not why, f"{what}: {why}"
            verdict = self.cluster.apply(obj)
            assert verdict.allowed, f"{what}: crdguard denies {obj['kind']} {obj['metadata']['name']}"

    def step(self, step: Step) -> None:
        what = f"step {step.component} {step.version} {step.channel or ''}"
        if step.component == "gateway-api":
            assert step.channel is not None
            self.apply(gateway_api_objects(step.version, step.channel), what)
        elif step.component == "kgateway-crds":
            new = upstream_objects(self.upstream, f"kgateway/{step.version}/crds")
            self.apply(new, what)
            names = {o["metadata"]["name"] for o in new}
            for obj in list(self.cluster.objects.values()):
                if (
                    obj["kind"] == "CustomResourceDefinition"
                    and obj["metadata"]["name"].endswith(".gateway.kgateway.dev")
                    and obj["metadata"]["name"] not in names
                ):
                    assert self.cluster.delete(obj).allowed, (
                        f"{what}: helm would delete {obj['metadata']['name']}"
                    )
        elif step.component == "kgateway":
            # What the chart upgrade (or Flux, after the patch) writes: the source first, then the Deployment.
            moved = [
                with_version(o, step.version)
                for o in self.cluster.objects.values()
                if (o["kind"] == "HelmRelease" and "chart" in o["spec"]) or o["kind"] == "OCIRepository"
            ]
            moved += [
                with_version(o, step.version)
                for o in self.cluster.objects.values()
                if o["kind"] == "Deployment"
            ]
            self.apply(moved, what)
        else:
            raise AssertionError(f"no replay for {step.component}")


# -- the planner, table-driven -----------------------------------------------------------------


INCIDENT_PATH = [
    ("gateway-api", "v1.4.0", "experimental"),
    ("kgateway-crds", "v2.1.1", None),
    ("kgateway", "v2.1.1", None),
]

PLANS = [
    pytest.param(
        ("v1.3.0", "experimental"), "v2.0.4", ["kgateway=v2.1.1"],
        INCIDENT_PATH,
        id="the incident state to kgateway 2.1.1 goes through v1.4.0 experimental first",
    ),
    pytest.param(
        ("v1.3.0", "experimental"), "v2.0.4", ["kgateway=v2.1.1", "gateway-api=v1.4.0:standard"],
        [*INCIDENT_PATH, ("gateway-api", "v1.4.0", "standard")],
        id="to v1.4.0 standard with kgateway 2.1.1 ends with standard after the controller moved",
    ),
    pytest.param(
        ("v1.5.1", "standard"), "v2.0.4", ["kgateway=v2.1.1"],
        [("kgateway-crds", "v2.1.1", None), ("kgateway", "v2.1.1", None)],
        id="v1.5.1 standard already serves v1 so kgateway 2.1.1 needs only its CRDs first",
    ),
    pytest.param(
        ("v1.4.0", "experimental"), "v2.1.1", ["gateway-api=v1.4.0:standard"],
        [("gateway-api", "v1.4.0", "standard")],
        id="with kgateway 2.1.1 standard v1.4.0 is one step",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("bundle", "kgateway", "targets", "expected"), PLANS)
def test_plan_steps(
    upstream: Path,
    catalog: Catalog,
    bundle: tuple[str, str],
    kgateway: str,
    targets: list[str],
    expected: list[Any],
) -> None:
    cluster = installed(upstream, catalog, bundle, kgateway, "Deployment")
    plan = Planner(cluster.view(), catalog, load_releases()).plan([Target.parse(t) for t in targets])
    assert plan.possible, plan.reason
    assert [(s.component, s.version, s.channel) for s in plan.steps] == expected
    replay = Replay(upstream, cluster)
    for step in plan.steps:
        replay.step(step)


BLOCKED = [
    pytest.param(
        ("v1.5.1", "standard"), "v2.0.4", "gateway-api=v1.4.0:experimental",
        ["v1.5.1 standard is installed", "safe-upgrades policy refuses bundle versions below v1.5.0"],
        id="v1.5.1 standard's policy blocks going back to v1.4.0 experimental",
    ),
    pytest.param(
        ("v1.5.1", "standard"), "v2.0.4", "gateway-api=v1.5.1:experimental",
        ["the experimental channel over standard"],
        id="v1.5.1 standard's policy blocks experimental over standard",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("bundle", "kgateway", "target", "fragments"), BLOCKED)
def test_no_plan_names_the_blocking_constraint(
    upstream: Path,
    catalog: Catalog,
    bundle: tuple[str, str],
    kgateway: str,
    target: str,
    fragments: list[str],
) -> None:
    cluster = installed(upstream, catalog, bundle, kgateway, "Deployment")
    plan = Planner(cluster.view(), catalog, load_releases()).plan([Target.parse(target)])
    assert not plan.possible and not plan.steps
    for fragment in fragments:
        assert fragment in plan.reason


HR_TARGET = {
    **helmrelease("v2.0.4", namespace="flux-system"),
    "spec": {**helmrelease("v2.0.4")["spec"], "targetNamespace": "edge"},
}
MULTI_SOURCE_APP = application(
    sources=[
        {"repoURL": "https://github.com/example/config", "path": "gateway", "targetRevision": "main"},
        {**argocd_source("v2.0.4"), "helm": {"releaseName": "gw"}},
    ]
)
GW_CTRL = deployment("v2.0.4", name="gw-ctrl", namespace="edge")
GW_CTRL["metadata"]["annotations"] = {
    "meta.helm.sh/release-name": "gw-ctrl",
    "meta.helm.sh/release-namespace": "edge",
}

COMMANDS = [
    pytest.param(
        [GW_CTRL],
        ("gw-ctrl", "edge"),
        "helm upgrade gw-ctrl oci://cr.kgateway.dev/kgateway-dev/charts/kgateway --version v2.1.1 -n edge "
        "--reset-then-reuse-values",
        id="a Helm release named gw-ctrl in edge gets helm upgrade of gw-ctrl in edge, not a second kgateway",
    ),
    pytest.param(
        [deployment("v2.0.4")],
        ("kgateway", KGATEWAY_NS),
        "helm upgrade kgateway oci://cr.kgateway.dev/kgateway-dev/charts/kgateway --version v2.1.1 "
        "-n kgateway-system --reset-then-reuse-values",
        id="a Deployment with the chart's labels and no Helm annotation is still its Helm release",
    ),
    pytest.param(
        [helmrelease("v2.0.4", namespace="flux-system")],
        ("kgateway", "flux-system"),
        "kubectl patch helmrelease/kgateway -n flux-system --type merge "
        """-p '{"spec":{"chart":{"spec":{"version":"v2.1.1"}}}}'""",
        id="a Flux HelmRelease gets a patch of its chart version, not helm upgrade",
    ),
    pytest.param(
        [HR_TARGET],
        ("edge-kgateway", "edge"),
        "kubectl patch helmrelease/kgateway -n flux-system --type merge "
        """-p '{"spec":{"chart":{"spec":{"version":"v2.1.1"}}}}'""",
        id="a HelmRelease with targetNamespace edge is patched where it lives (release edge-kgateway, edge)",
    ),
    pytest.param(
        [ocirepository("v2.0.4", namespace="flux-system"), helmrelease_chartref(namespace="flux-system")],
        ("kgateway", "flux-system"),
        "kubectl patch ocirepository/kgateway -n flux-system --type merge "
        """-p '{"spec":{"ref":{"tag":"v2.1.1","semver":null,"digest":null}}}'""",
        id="a chartRef HelmRelease gets a patch of its OCIRepository's tag (semver and digest cleared)",
    ),
    pytest.param(
        [flux_helmchart("v2.0.4", namespace="flux-system"),
         helmrelease_chartref(namespace="flux-system", kind="HelmChart")],
        ("kgateway", "flux-system"),
        "kubectl patch helmchart.source.toolkit.fluxcd.io/kgateway -n flux-system --type merge "
        """-p '{"spec":{"version":"v2.1.1"}}'""",
        id="a chartRef to a Flux HelmChart gets a patch of that HelmChart's version",
    ),
    pytest.param(
        [application("v2.0.4")],
        ("kgateway", KGATEWAY_NS),
        "kubectl patch application/kgateway -n argocd --type json "
        """-p '[{"op":"add","path":"/spec/source/targetRevision","value":"v2.1.1"}]'""",
        id="an Argo CD Application gets a json patch of spec.source.targetRevision",
    ),
    pytest.param(
        [MULTI_SOURCE_APP],
        ("gw", KGATEWAY_NS),
        "kubectl patch application/kgateway -n argocd --type json "
        """-p '[{"op":"add","path":"/spec/sources/1/targetRevision","value":"v2.1.1"}]'""",
        id="a multi-source Application gets the chart source's targetRevision patched, not the Git one",
    ),
    pytest.param(
        [k3s_helmchart("v2.0.4")],
        ("kgateway", KGATEWAY_NS),
        "kubectl patch helmchart.helm.cattle.io/kgateway -n kube-system --type merge "
        """-p '{"spec":{"version":"v2.1.1"}}'""",
        id="a k3s HelmChart gets a merge patch of spec.version",
    ),
    pytest.param(
        [deployment("v2.0.4", labels={"app.kubernetes.io/name": "kgateway"})],
        ("kgateway", KGATEWAY_NS),
        "kubectl set image deployment/kgateway -n kgateway-system "
        "kgateway=cr.kgateway.dev/kgateway-dev/kgateway:v2.1.1",
        id="a Deployment no chart rendered gets its image set",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("objects", "release", "command"), COMMANDS)
def test_commands_fit_how_kgateway_was_installed(
    upstream: Path, catalog: Catalog, objects: list[Obj], release: tuple[str, str], command: str
) -> None:
    cluster = Cluster(
        catalog,
        [
            *gateway_api_bundle(upstream, "v1.4.0", "experimental"),
            *kgateway_crds(upstream, "v2.1.1"),
            *objects,
        ],
    )
    plan = Planner(cluster.view(), catalog, load_releases()).plan([Target("kgateway", "v2.1.1")])
    assert plan.possible, plan.reason
    assert [(s.component, s.version) for s in plan.steps] == [("kgateway", "v2.1.1")]
    assert plan.steps[0].release == release
    assert plan.steps[0].commands == (command,)


def test_a_custom_build_tag_is_planned_as_its_upstream_release(upstream: Path, catalog: Catalog) -> None:
    cluster = Cluster(catalog, [*gateway_api_bundle(upstream, "v1.4.0", "experimental"),
                                *kgateway_crds(upstream, "v2.1.1"), deployment("v2.1.1-corp.3")])  # fmt: skip
    plan = Planner(cluster.view(), catalog, load_releases()).plan(
        [Target("gateway-api", "v1.4.0", "standard")]
    )
    assert plan.possible
    assert "kgateway v2.1.1-corp.3 is not an upstream release; planned as upstream v2.1.1" in plan.notes


@pytest.mark.parametrize(
    ("size", "reused"),
    [(64, True), (0, False)],
    ids=[
        "a repeated denial reuses its fixes until an object the planner reads is written",
        "size 0 plans every time",
    ],
)
def test_recent_fixes_are_reused_until_what_the_planner_reads_is_written(
    upstream: Path, catalog: Catalog, size: int, reused: bool
) -> None:
    state = [*gateway_api_bundle(upstream, "v1.4.0", "experimental"), *kgateway_crds(upstream, "v2.1.1"),
             deployment("v2.1.1")]  # fmt: skip
    cluster = Cluster(catalog, state)
    bcp = next(o for o in state if o["metadata"]["name"] == "backendconfigpolicies.gateway.kgateway.dev")
    view = cluster.view()
    verdict = cluster.delete(bcp)
    assert not verdict.allowed and verdict.change is not None
    recent, releases = RecentFixes(size), load_releases()
    first = recent.fixes_for(verdict.change, view, catalog, releases)
    again = recent.fixes_for(verdict.change, view, catalog, releases)
    assert first and again == first == fixes_for(verdict.change, view, catalog, releases)
    assert (again[0] is first[0]) is reused
    view.upsert(
        summarize_crd(crd("widgets.example.com", {"v1": True}))
    )  # a CRD neither the catalog nor a release set names: the plan cannot change
    assert (recent.fixes_for(verdict.change, view, catalog, releases)[0] is first[0]) is reused
    cluster_crd = view.crd(bcp["metadata"]["name"])
    assert cluster_crd is not None
    view.upsert(cluster_crd)  # a CRD the planner reads: what was planned before is not reused
    after_write = recent.fixes_for(verdict.change, view, catalog, releases)
    assert after_write == first and after_write[0] is not first[0]


def test_a_spent_planning_budget_keeps_the_denial_and_says_the_fixes_were_not_computed(
    upstream: Path, catalog: Catalog
) -> None:
    state = [*gateway_api_bundle(upstream, "v1.4.0", "experimental"), *kgateway_crds(upstream, "v2.1.1"),
             deployment("v2.1.1")]  # fmt: skip
    cluster = Cluster(catalog, state)
    bcp = next(o for o in state if o["metadata"]["name"] == "backendconfigpolicies.gateway.kgateway.dev")
    view = cluster.view()
    verdict = cluster.delete(bcp)
    assert not verdict.allowed and verdict.change is not None
    recent, releases = RecentFixes(), load_releases()
    # A budget already spent: the first search gives up at once (the webhook's case on a big cluster).
    cut = recent.fixes_for(verdict.change, view, catalog, releases, budget_seconds=0.0)
    assert [(f.steps, f.retry) for f in cut] == [((), False)]
    assert cut[0].summary.startswith("Not computed:") and "crdguard plan" in cut[0].summary
    # Not cached: the next request, with time to spare, gets the verified fixes.
    full = recent.fixes_for(verdict.change, view, catalog, releases, budget_seconds=60.0)
    assert full == fixes_for(verdict.change, view, catalog, releases) and all(f.steps for f in full)


def test_a_denial_under_a_custom_build_says_which_upstream_release_it_was_planned_as(
    upstream: Path, catalog: Catalog
) -> None:
    state = [*gateway_api_bundle(upstream, "v1.4.0", "experimental"), *kgateway_crds(upstream, "v2.1.1"),
             deployment("v2.1.1-corp.3")]  # fmt: skip
    cluster = Cluster(catalog, state)
    bcp = next(o for o in state if o["metadata"]["name"] == "backendconfigpolicies.gateway.kgateway.dev")
    view = cluster.view()
    verdict = cluster.delete(bcp)
    assert not verdict.allowed and verdict.change is not None
    fixes = fixes_for(verdict.change, view, catalog, load_releases())
    message = denial_message(verdict, fixes)
    assert "note: kgateway v2.1.1-corp.3 is not an upstream release; planned as upstream v2.1.1" in message
    # The commands name upstream releases, never the custom tag.
    assert all("corp" not in c for f in fixes for s in f.steps for c in s.commands)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("nginx=v1.0.0", id="an unknown component"),
        pytest.param("gateway-api=v9.9.9", id="an unknown release"),
        pytest.param("gateway-api=v1.4.0:beta", id="an unknown channel"),
    ],
)
def test_bad_targets_are_plan_errors(upstream: Path, catalog: Catalog, target: str) -> None:
    cluster = installed(upstream, catalog, ("v1.4.0", "experimental"), "v2.0.4", "Deployment")
    with pytest.raises(PlanError):
        Planner(cluster.view(), catalog, load_releases()).plan([Target.parse(target)])


# -- the CLI -------------------------------------------------------------------------------------


def test_plan_cli_json_and_exit_codes(
    upstream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    state = tmp_path / "cluster.yaml"
    objects = [*gateway_api_bundle(upstream, "v1.3.0", "experimental"), *kgateway_crds(upstream, "v2.0.4"),
               deployment("v2.0.4")]  # fmt: skip
    state.write_text(yaml.safe_dump_all(objects))
    assert main(["plan", "--cluster", str(state), "--to", "kgateway=v2.1.1", "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["possible"] is True and out["reason"] == ""
    assert [s["component"] for s in out["steps"]] == ["gateway-api", "kgateway-crds", "kgateway"]
    assert out["steps"][0]["channel"] == "experimental"
    assert out["steps"][2]["release"] == {"name": "kgateway", "namespace": KGATEWAY_NS}
    assert all(s["commands"] for s in out["steps"])
    assert main(["plan", "--cluster", str(state), "--to", "kgateway"]) == 2
    assert "expected COMPONENT=VERSION" in capsys.readouterr().err
    v151 = tmp_path / "v151.yaml"
    v151.write_text(
        yaml.safe_dump_all([*gateway_api_bundle(upstream, "v1.5.1", "standard"), deployment("v2.0.4")])
    )
    assert main(["plan", "--cluster", str(v151), "--to", "gateway-api=v1.4.0:experimental"]) == 1
    assert "No plan:" in capsys.readouterr().out


# -- every fix crdguard prints, over the upstream matrix, replays cleanly ---------------------------


def _denied_transitions() -> list[Any]:
    rows = []
    for before, after, kgateway, install in itertools.product(
        itertools.product(BUNDLES, CHANNELS), itertools.product(BUNDLES, CHANNELS), KGATEWAY, INSTALLS
    ):
        rows.append(
            pytest.param(
                before,
                after,
                kgateway,
                install,
                id=f"kgateway {kgateway} as {install} on {' '.join(before)} applying {' '.join(after)}",
            )
        )
    return rows  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after", "kgateway", "install"), _denied_transitions())
def test_every_printed_fix_replays_cleanly(
    upstream: Path,
    catalog: Catalog,
    before: tuple[str, str],
    after: tuple[str, str],
    kgateway: str,
    install: str,
) -> None:
    releases = load_releases()
    probe = installed(upstream, catalog, before, kgateway, install)
    denied = None
    for obj in gateway_api_bundle(upstream, *after):
        view = probe.view()
        verdict = probe.apply(obj)
        if not verdict.allowed:
            assert verdict.change is not None
            denied, fixes = obj, fixes_for(verdict.change, view, catalog, releases)
            break
    if denied is None:
        return
    assert fixes, "a denial without a verified fix"
    for fix in fixes:
        replay = Replay(upstream, installed(upstream, catalog, before, kgateway, install))
        # The denial comes mid-bundle: what was applied before it stays applied.
        for obj in gateway_api_bundle(upstream, *after):
            if obj is denied:
                break
            replay.cluster.apply(obj)
        for step in fix.steps:
            replay.step(step)
        if fix.retry:
            replay.apply(gateway_api_bundle(upstream, *after), f"retrying {' '.join(after)}")


# -- other catalogued components: plans from the catalog's install block ---------------------------


def _controller(name: str, namespace: str, image: str, args: tuple[str, ...] = ()) -> Obj:
    obj = deployment(
        "v0", name=name, namespace=namespace, image=image, labels={"app.kubernetes.io/name": name}
    )
    obj["spec"]["template"]["spec"]["containers"][0]["name"] = name
    if args:
        obj["spec"]["template"]["spec"]["containers"][0]["args"] = list(args)
    return obj


def test_envoy_gateway_1_8_0_on_v1_4_1_standard_is_denied_with_v1_5_1_first(
    upstream: Path, catalog: Catalog
) -> None:
    cluster = Cluster(catalog, gateway_api_bundle(upstream, "v1.4.1", "standard"))
    view = cluster.view()
    verdict = cluster.apply(
        _controller("envoy-gateway", "envoy-gateway-system", "docker.io/envoyproxy/gateway:v1.8.0")
    )
    assert not verdict.allowed and verdict.change is not None
    fixes = fixes_for(verdict.change, view, catalog, load_releases())
    message = denial_message(verdict, fixes)
    assert "First apply Gateway API v1.5.1 standard, then retry this change" in message
    assert "releases/download/v1.5.1/standard-install.yaml" in message
    (fix,) = fixes
    assert fix.retry and [(s.component, s.version, s.channel) for s in fix.steps] == [
        ("gateway-api", "v1.5.1", "standard")
    ]


CILIUM_1_19 = (
    "cilium-operator",
    "kube-system",
    "quay.io/cilium/operator-generic:v1.19.1",
    ("--enable-gateway-api",),
)


def test_cilium_plan_to_v1_5_1_standard_finds_the_order(upstream: Path, catalog: Catalog) -> None:
    cluster = Cluster(
        catalog, [*gateway_api_bundle(upstream, "v1.4.1", "experimental"), _controller(*CILIUM_1_19)]
    )
    plan = Planner(cluster.view(), catalog, load_releases()).plan(
        [Target("gateway-api", "v1.5.1", "standard")]
    )
    assert plan.possible, plan.reason
    assert [(s.component, s.channel) for s in plan.steps] == [
        ("gateway-api", "experimental"),
        ("cilium", None),
        ("gateway-api", "standard"),
    ]
    assert plan.steps[1].commands == (
        "kubectl set image deployment/cilium-operator -n kube-system "
        f"cilium-operator=quay.io/cilium/operator-generic:{plan.steps[1].version}",
    )


def test_a_path_through_a_warned_state_says_which_feature_is_off_between_which_steps(
    upstream: Path, catalog: Catalog
) -> None:
    cluster = installed(upstream, catalog, ("v1.3.0", "experimental"), "v2.0.4", "Deployment")
    releases = load_releases()
    planner = Planner(cluster.view(), catalog, releases)
    # kgateway 2.1.1 before the bundle moves: allowed, but 2.1 ignores a v1.3.0 BackendTLSPolicy CRD.
    unhealthy = [
        ("kgateway-crds", releases["kgateway-crds"].find("v2.1.1")),
        ("kgateway", releases["kgateway"].find("v2.1.1")),
        ("gateway-api", releases["gateway-api"].find("v1.4.0", "experimental")),
    ]
    steps = planner.render([(c, r) for c, r in unhealthy if r is not None])
    assert [s.notes for s in steps] == [
        (),
        ("BackendTLSPolicy is ignored by kgateway between steps 2 and 3",),
        (),
    ]
    # The planner itself prefers the healthy order, even at the same number of steps.
    plan = planner.plan([Target("kgateway", "v2.1.1")])
    assert [s.component for s in plan.steps] == ["gateway-api", "kgateway-crds", "kgateway"]
    assert all(not s.notes for s in plan.steps)
