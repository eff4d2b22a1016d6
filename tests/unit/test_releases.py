"""The release data (webhook/rules/releases/) is a regeneration of upstream, and says what FACTS says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import BTP, REPO_ROOT, gateway_api_bundle

from webhook.catalogs import load_releases
from webhook.rules.objects import summarize_crd
from webhook.rules.releases import ReleaseSet


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_releases", REPO_ROOT / "hack" / "gen_releases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_releases"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerated(upstream: Path) -> dict[str, dict[str, Any]]:
    return generator().generate(upstream, offline=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def releases() -> dict[str, ReleaseSet]:
    return load_releases()


def _key(entry: dict[str, Any]) -> tuple[str, str | None]:
    return (entry["version"], entry.get("channel"))


@pytest.mark.parametrize(
    "file", ["gateway-api.yaml", "inference-extension.yaml", "kgateway-crds.yaml", "kgateway.yaml"]
)
def test_checked_in_data_equals_a_regeneration_from_the_upstream_folder(
    regenerated: dict[str, dict[str, Any]], file: str
) -> None:
    import yaml

    checked_in = yaml.safe_load((REPO_ROOT / "webhook" / "rules" / "releases" / file).read_text())
    fresh = regenerated[file]
    assert {k: v for k, v in checked_in.items() if k != "releases"} == {
        k: v for k, v in fresh.items() if k != "releases"
    }
    stored = {_key(e): e for e in checked_in["releases"]}
    assert fresh["releases"], "the upstream folder yields no release for " + file
    for entry in fresh["releases"]:
        assert stored.get(_key(entry)) == entry, f"{file} {_key(entry)} differs from upstream"


GATEWAY_API_TAGS = [
    "v1.2.0", "v1.2.1", "v1.3.0", "v1.4.0", "v1.4.1", "v1.5.0", "v1.5.1",
    "v1.6.0", "v1.6.1", "v1.6.2", "v1.6.3", "v1.7.0",
]  # fmt: skip


def test_every_gateway_api_release_from_v1_2_0_is_there_in_both_channels(
    releases: dict[str, ReleaseSet],
) -> None:
    found = {(r.version, r.channel) for r in releases["gateway-api"].releases}
    assert found == {(v, c) for v in GATEWAY_API_TAGS for c in ("standard", "experimental")}


# FACTS.md, Gateway API table: BackendTLSPolicy listed versions with their served flag.
BTP_SERVED = {
    ("v1.2.0", "standard"): None,
    ("v1.3.0", "standard"): None,
    ("v1.2.0", "experimental"): {"v1alpha3": True},
    ("v1.3.0", "experimental"): {"v1alpha3": True},
    ("v1.4.0", "standard"): {"v1": True, "v1alpha3": False},
    ("v1.5.1", "standard"): {"v1": True, "v1alpha3": False},
    ("v1.6.3", "standard"): {"v1": True, "v1alpha3": False},
    ("v1.4.0", "experimental"): {"v1": True, "v1alpha3": True},
    ("v1.6.3", "experimental"): {"v1": True, "v1alpha3": True},
}


@pytest.mark.parametrize(
    ("version", "channel"),
    [pytest.param(v, c, id=f"Gateway API {v} {c} BackendTLSPolicy is as FACTS says") for v, c in BTP_SERVED],
)
def test_backendtlspolicy_facts(releases: dict[str, ReleaseSet], version: str, channel: str) -> None:
    release = releases["gateway-api"].find(version, channel)
    assert release is not None
    crd = next((c for c in release.crds if c.name == BTP), None)
    expected = BTP_SERVED[(version, channel)]
    if expected is None:
        assert crd is None
        return
    assert crd is not None
    assert {n: s for n, s, _ in crd.versions} == expected
    assert crd.bundle_version == version and crd.channel == channel


@pytest.mark.parametrize(
    ("version", "has_policy"),
    [
        pytest.param("v1.4.1", False, id="v1.4.1 ships no safe-upgrades policy"),
        pytest.param("v1.5.0", True, id="v1.5.0 ships the safe-upgrades policy"),
        pytest.param("v1.7.0", True, id="v1.7.0 ships the safe-upgrades policy"),
    ],
)
def test_safe_upgrades_policy_is_recorded(
    releases: dict[str, ReleaseSet], version: str, has_policy: bool
) -> None:
    for channel in ("standard", "experimental"):
        release = releases["gateway-api"].find(version, channel)
        assert release is not None
        assert (release.policy is not None) == has_policy


@pytest.mark.parametrize(
    ("policy_of", "applying", "refused"),
    [
        pytest.param("v1.5.1", "v1.4.1", True, id="v1.5.1's policy refuses bundle version v1.4.1"),
        pytest.param("v1.5.1", "v1.5.0", False, id="v1.5.1's policy accepts bundle version v1.5.0"),
        pytest.param("v1.6.3", "v1.5.1", True, id="v1.6.3's policy refuses bundle version v1.5.1"),
        pytest.param("v1.6.3", "v1.7.0", False, id="v1.6.3's policy accepts bundle version v1.7.0"),
        pytest.param("v1.7.0", "v1.6.3", True, id="v1.7.0's policy refuses bundle version v1.6.3"),
    ],
)
def test_policy_floor_read_from_its_cel(
    releases: dict[str, ReleaseSet], policy_of: str, applying: str, refused: bool
) -> None:
    release = releases["gateway-api"].find(policy_of, "standard")
    assert release is not None and release.policy is not None
    assert release.policy.refuses_version(applying) == refused


def test_policy_refuses_experimental_over_standard_only(releases: dict[str, ReleaseSet]) -> None:
    release = releases["gateway-api"].find("v1.5.1", "standard")
    assert release is not None and release.policy is not None
    policy = release.policy
    assert policy.refusal(BTP, "standard", "experimental", "v1.5.1")
    assert not policy.refusal(BTP, "experimental", "experimental", "v1.5.1")
    assert not policy.refusal(BTP, "experimental", "standard", "v1.5.1")
    assert not policy.refusal(BTP, None, "experimental", "v1.5.1")  # a CREATE is never refused for channel


def test_crd_facts_summarize_like_the_real_crd(upstream: Path, releases: dict[str, ReleaseSet]) -> None:
    bundle = gateway_api_bundle(upstream, "v1.4.0", "standard")
    real = {
        o["metadata"]["name"]: summarize_crd(o) for o in bundle if o["kind"] == "CustomResourceDefinition"
    }
    release = releases["gateway-api"].find("v1.4.0", "standard")
    assert release is not None
    assert {c.name: c.info() for c in release.crds} == real


def test_kgateway_crds_v2_0_4_lacks_backendconfigpolicies(releases: dict[str, ReleaseSet]) -> None:
    names = {
        v: {c.name for c in r.crds} for v, r in ((r.version, r) for r in releases["kgateway-crds"].releases)
    }
    assert len(names["v2.0.4"]) == 6 and "backendconfigpolicies.gateway.kgateway.dev" not in names["v2.0.4"]
    assert len(names["v2.1.1"]) == 7 and "backendconfigpolicies.gateway.kgateway.dev" in names["v2.1.1"]


def test_kgateway_chart_runs_the_controller_of_its_version(releases: dict[str, ReleaseSet]) -> None:
    assert {r.version: r.controller for r in releases["kgateway"].releases} == {
        "v2.0.4": "v2.0.4",
        "v2.1.1": "v2.1.1",
    }
