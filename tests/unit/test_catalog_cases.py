"""Every component's table cases (tests/catalog_cases/<component>.yaml) over real bundles.

Each case installs the real Gateway API (and Inference Extension) CRDs, a Deployment running the
component's image at the case's version with the case's features switched on as the catalog
defines them, runs ``audit``, and compares the exact set of rule ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from bundles import BundleUnavailable, gateway_api_crds, inference_extension_crds, upstream_root
from conftest import in_ci
from helpers import REPO_ROOT, crd, deployment, upstream_objects

from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog, Component, Feature
from webhook.rules.engine import audit
from webhook.rules.inventory import Inventory
from webhook.state.files import add_objects

CASES = REPO_ROOT / "tests" / "catalog_cases"
CASE_FIELDS = {"id", "version", "features", "gatewayAPI", "inferenceExtension", "upstreamCRDs", "conflicts"}


def _cases() -> list[Any]:
    params = []
    for path in sorted(CASES.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        for case in document["cases"]:
            params.append(
                pytest.param(document["component"], document["image"], case, id=f"{path.stem}: {case['id']}")
            )
    return params


def test_every_case_file_is_well_formed(catalog: Catalog) -> None:
    files = sorted(CASES.glob("*.yaml"))
    assert files, "no table cases"
    for path in files:
        document = yaml.safe_load(path.read_text())
        assert {"component", "image", "cases"} <= set(document) <= {"component", "image", "cases", "quiet"}
        assert document["component"] == path.stem
        assert document["component"] in catalog.components, path.name
        ids = [case["id"] for case in document["cases"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate case ids"
        rules = set(catalog.rules_by_component[document["component"]])
        quiet = document.get("quiet", {})
        assert set(quiet) <= {r.id for r in rules}, f"{path.name}: quiet names unknown rules"
        assert all(isinstance(why, str) and why.strip() for why in quiet.values()), path.name
        for case in document["cases"]:
            assert set(case) <= CASE_FIELDS and {"id", "version", "conflicts"} <= set(case), case["id"]
            assert set(case["conflicts"]) <= {r.id for r in rules}, case["id"]


def test_every_rule_of_a_component_with_cases_is_broken_by_some_case(catalog: Catalog) -> None:
    for path in sorted(CASES.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        broken = {rule for case in document["cases"] for rule in case["conflicts"]}
        rules = {r.id for r in catalog.rules_by_component[document["component"]]}
        # Rules behind a feature need the feature's CRDs at an old release that the shared
        # bundles may not have; every other rule must be shown to fire, or be listed under
        # `quiet` with the reason no released bundle breaks it (and then no case may break it).
        unfeatured = {r.id for r in catalog.rules_by_component[document["component"]] if r.feature is None}
        quiet = set(document.get("quiet", {}))
        assert unfeatured - quiet <= broken <= rules, path.name
        assert not quiet & broken, f"{path.name}: a quiet rule is broken by a case: {sorted(quiet & broken)}"


def _quiet_rules(catalog: Catalog) -> list[Any]:
    params = []
    for path in sorted(CASES.glob("*.yaml")):
        for rule_id in yaml.safe_load(path.read_text()).get("quiet", {}):
            params.append(pytest.param(rule_id, id=f"{rule_id} fires on a CRD listing its version unserved"))
    return params


@pytest.mark.parametrize("rule_id", _quiet_rules(load_catalog()))
def test_a_quiet_rule_still_fires_on_a_crd_that_breaks_it(catalog: Catalog, rule_id: str) -> None:
    """No released bundle breaks a quiet rule; a hand-made CRD inside its window shows it is not dead."""
    rule = catalog.rules[rule_id]
    component = catalog.components[rule.component]
    window = rule.bundle_window
    inside = window.min or window.max if window else None
    assert rule.needed_version is not None, "a quiet rule names a version"
    broken = crd(
        rule.crd, {"v9": True, rule.needed_version: False}, bundle_version=f"v{inside}" if inside else None
    )
    (release_version,) = {f"v{bound}" for op, bound in rule.versions.comparators if op in (">=", "=")}
    features = [rule.feature] if rule.feature else []
    image = f"example.com/{component.detect.images[0]}"
    controller = _controller(component, image, release_version, features)
    view = Inventory(catalog)
    add_objects(view, [broken, controller])
    found = {c.rule.id for c in audit(view, catalog)}
    assert rule_id in found


def _switch(container: dict[str, Any], feature: Feature, on: bool) -> None:
    """Set ``feature`` on or off in a container as the catalog says the controller reads it."""
    if on and feature.args:
        container.setdefault("args", []).append(feature.args[0])
    elif not on and feature.disable_args:
        container.setdefault("args", []).append(feature.disable_args[0])
    elif feature.env is not None:
        value = feature.env.value if on else ("false" if feature.env.value.lower() == "true" else "")
        container.setdefault("env", []).append({"name": feature.env.name, "value": value})
    else:
        raise AssertionError(f"feature {feature.name} has no switch a Deployment can set")


def _controller(component: Component, image: str, version: str, features: list[str]) -> dict[str, Any]:
    obj = deployment(
        version,
        name=component.name,
        namespace=f"{component.name}-system",
        image=f"{image}:{version}",
        labels={},
    )
    container = obj["spec"]["template"]["spec"]["containers"][0]
    for name, feature in component.features.items():
        on = name in features
        if on != feature.default:
            _switch(container, feature, on)
    return obj


@pytest.mark.parametrize(("component_name", "image", "case"), _cases())
def test_catalog_case(
    catalog: Catalog, upstream: Path, component_name: str, image: str, case: dict[str, Any]
) -> None:
    component = catalog.components[component_name]
    unknown = set(case.get("features", [])) - set(component.features)
    assert not unknown, f"unknown features {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    try:
        if case.get("gatewayAPI"):
            objects += gateway_api_crds(case["gatewayAPI"]["version"], case["gatewayAPI"]["channel"])
        if case.get("inferenceExtension"):
            objects += inference_extension_crds(case["inferenceExtension"])
    except BundleUnavailable as exc:
        reason = f"{exc} (bundles come from {upstream_root()} or the Go module proxy)"
        if in_ci():  # in CI a missing real bundle is a failure, never a silent skip
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    objects += [dict(o) for o in upstream_objects(upstream, *case.get("upstreamCRDs", []))]
    controller = _controller(component, image, case["version"], case.get("features", []))
    view = Inventory(catalog)
    add_objects(view, [*objects, controller])
    (release,) = view.releases(component_name)
    assert str(release.version) == case["version"].lstrip("v")
    assert release.features == frozenset(case.get("features", []))
    assert sorted({c.rule.id for c in audit(view, catalog)}) == sorted(case["conflicts"])
