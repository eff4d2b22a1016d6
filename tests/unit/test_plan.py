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
    deployment,
    gateway_api_bundle,
    helmrelease,
    helmrelease_chartref,
    key_of,
    kgateway_crds,
    ocirepository,
    upstream_objects,
    with_version,
)

from webhook.catalogs import load_releases
from webhook.cli import main
from webhook.rules.catalog import Catalog
from webhook.rules.plan import PlanError, Planner, Step, Target, fixes_for
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


# kgateway 2.1.1 ignores v1.3.0's BackendTLSPolicy CRD (below bundle v1.4.0: a warning, not a failure,
# docs/evidence/kgateway.md), so no Gateway API bundle has to come first.
INCIDENT_PATH = [
    ("kgateway-crds", "v2.1.1", None),
    ("kgateway", "v2.1.1", None),
]

PLANS = [
    pytest.param(
        ("v1.3.0", "experimental"), "v2.0.4", ["kgateway=v2.1.1"],
        INCIDENT_PATH,
        id="the incident state to kgateway 2.1.1 needs only kgateway-crds first",
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


@pytest.mark.parametrize(
    ("install", "command"),
    [
        pytest.param("Deployment", "helm upgrade kgateway oci://cr.kgateway.dev/kgateway-dev/charts/kgateway "
                     "--version v2.1.1 -n kgateway-system --reset-then-reuse-values",
                     id="a Helm-installed Deployment gets helm upgrade of its own release"),
        pytest.param("HelmRelease", "kubectl patch helmrelease kgateway -n flux-system --type merge "
                     """-p '{"spec":{"chart":{"spec":{"version":"v2.1.1"}}}}'""",
                     id="a Flux HelmRelease gets a patch of its chart version, not helm upgrade"),
        pytest.param("OCIRepository", "kubectl patch ocirepository kgateway -n flux-system --type merge "
                     """-p '{"spec":{"ref":{"tag":"v2.1.1","semver":null,"digest":null}}}'""",
                     id="a chartRef HelmRelease gets a patch of its OCIRepository tag"),
    ],
)  # fmt: skip
def test_commands_fit_how_kgateway_was_installed(
    upstream: Path, catalog: Catalog, install: str, command: str
) -> None:
    cluster = installed(upstream, catalog, ("v1.4.0", "experimental"), "v2.0.4", install)
    plan = Planner(cluster.view(), catalog, load_releases()).plan([Target("kgateway", "v2.1.1")])
    assert plan.steps[-1].commands == (command,)


def test_release_name_comes_from_the_instance_label(upstream: Path, catalog: Catalog) -> None:
    controller = deployment("v2.0.4", name="gw-ctrl", namespace="edge")
    cluster = Cluster(catalog, [*gateway_api_bundle(upstream, "v1.4.0", "experimental"),
                                *kgateway_crds(upstream, "v2.0.4"), controller])  # fmt: skip
    plan = Planner(cluster.view(), catalog, load_releases()).plan([Target("kgateway", "v2.1.1")])
    assert plan.steps[-1].release == ("gw-ctrl", "edge")
    assert plan.steps[-1].commands[0].startswith("helm upgrade gw-ctrl ")
    assert " -n edge" in plan.steps[-1].commands[0]


def test_a_custom_build_tag_is_planned_as_its_upstream_release(upstream: Path, catalog: Catalog) -> None:
    cluster = Cluster(catalog, [*gateway_api_bundle(upstream, "v1.4.0", "experimental"),
                                *kgateway_crds(upstream, "v2.1.1"), deployment("v2.1.1-corp.3")])  # fmt: skip
    plan = Planner(cluster.view(), catalog, load_releases()).plan(
        [Target("gateway-api", "v1.4.0", "standard")]
    )
    assert plan.possible
    assert any("v2.1.1-corp.3" in n and "upstream v2.1.1" in n for n in plan.notes)


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
    assert [s["component"] for s in out["steps"]] == ["kgateway-crds", "kgateway"]
    assert out["steps"][1]["release"] == {"name": "kgateway", "namespace": KGATEWAY_NS}
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
