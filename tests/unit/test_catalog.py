"""The compatibility catalog: the default one encodes FACTS.md; users add and override entries."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    BCP,
    BTP,
    INFERENCEPOOL,
    INFERENCEPOOL_X,
    REPO_ROOT,
    Cluster,
    crd,
    deployment,
    gateway_api_bundle,
    helmrelease,
    kgateway_crds,
    named,
)

from webhook.catalogs import load_catalog
from webhook.manifests import ManifestError
from webhook.rules.catalog import Catalog, CatalogError, Enforcement, Rule
from webhook.rules.versions import Version

EXAMPLES = REPO_ROOT / "examples" / "catalogs"
REPORTED = EXAMPLES / "reported-kgateway-2.1.1-needs-v1alpha3.yaml"
MY_GATEWAY = EXAMPLES / "second-component-my-gateway.yaml"

EXISTS = "exists"  # the requirement of a rule that only needs the CRD to be installed


def requirements(catalog: Catalog, version: str, crd_name: str, features: set[str]) -> set[tuple[str, bool]]:
    """What kgateway ``version`` needs from ``crd_name``: (served version or EXISTS, missing tolerated)."""
    found = set()
    for rule in catalog.rules_by_crd.get(crd_name, ()):
        if rule.component != "kgateway" or Version.parse(version) not in rule.versions:
            continue
        if rule.feature is not None and rule.feature not in features:
            continue
        found.add((rule.served_version or EXISTS, rule.missing_tolerated))
    return found


INFER = {"inferenceExtension"}

# One row per statement of FACTS.md's kgateway table, with the version at both ends of each line.
FACTS = [
    ("2.0.0", BTP, set(), {("v1alpha3", True)}, "kgateway 2.0.0 reads BackendTLSPolicy v1alpha3"),
    ("v2.0.4", BTP, set(), {("v1alpha3", True)}, "kgateway 2.0.4 reads BackendTLSPolicy v1alpha3"),
    ("2.1.0", BTP, set(), {("v1", True)}, "kgateway 2.1.0 reads BackendTLSPolicy v1"),
    ("v2.1.1", BTP, set(), {("v1", True)}, "kgateway 2.1.1 reads BackendTLSPolicy v1"),
    ("v2.2.0", BTP, set(), {("v1", True)}, "kgateway 2.2.0 reads BackendTLSPolicy v1"),
    ("v2.0.4", BCP, set(), set(), "kgateway 2.0.4 does not need BackendConfigPolicy"),
    ("v2.1.1", BCP, set(), {(EXISTS, False)}, "kgateway 2.1.1 fails without the BackendConfigPolicy CRD"),
    ("v2.2.0", BCP, set(), {(EXISTS, False)}, "kgateway 2.2.0 fails without the BackendConfigPolicy CRD"),
    ("v2.0.4", INFERENCEPOOL_X, INFER, {("v1alpha2", True)}, "kgateway 2.0 inference reads x-k8s v1alpha2"),
    ("v2.0.4", INFERENCEPOOL, INFER, set(), "kgateway 2.0 inference does not read k8s.io pools"),
    ("v2.1.1", INFERENCEPOOL, INFER, {("v1", True)}, "kgateway 2.1 inference reads k8s.io v1"),
    ("v2.1.1", INFERENCEPOOL_X, INFER, set(), "kgateway 2.1 inference does not read x-k8s pools"),
    ("v2.0.4", INFERENCEPOOL_X, set(), set(), "kgateway 2.0 without inference reads no pools"),
    ("v2.1.1", INFERENCEPOOL, set(), set(), "kgateway 2.1 without inference reads no pools"),
    ("1.9.0", BTP, set(), set(), "kgateway before 2.0 is outside every rule"),
]


@pytest.mark.parametrize(
    ("version", "crd_name", "features", "needed"),
    [pytest.param(*row[:4], id=row[4]) for row in FACTS],
)
def test_default_catalog_encodes_each_fact(
    catalog: Catalog, version: str, crd_name: str, features: set[str], needed: set[tuple[str, bool]]
) -> None:
    assert requirements(catalog, version, crd_name, features) == needed


IFX = "inferenceExtension"


# Rule ids are part of the interface (metrics labels, audit annotations, --catalog overrides).
@pytest.mark.parametrize(
    ("rule_id", "versions", "crd_name", "served", "tolerated", "feature"),
    [
        pytest.param(
            "kgateway-2.0-reads-backendtlspolicy-v1alpha3", ">=2.0.0 <2.1.0", BTP, "v1alpha3", True, None,
            id="kgateway 2.0 reads BackendTLSPolicy v1alpha3 and tolerates its absence",
        ),
        pytest.param(
            "kgateway-2.1-reads-backendtlspolicy-v1", ">=2.1.0", BTP, "v1", True, None,
            id="kgateway 2.1 and later read BackendTLSPolicy v1 and tolerate its absence",
        ),
        pytest.param(
            "kgateway-2.1-requires-backendconfigpolicy-crd", ">=2.1.0", BCP, None, False, None,
            id="kgateway 2.1 and later require the BackendConfigPolicy CRD",
        ),
        pytest.param(
            "kgateway-2.0-reads-inferencepool-x-k8s-v1alpha2", ">=2.0.0 <2.1.0", INFERENCEPOOL_X, "v1alpha2",
            True, IFX,
            id="kgateway 2.0 with inference reads x-k8s InferencePool v1alpha2",
        ),
        pytest.param(
            "kgateway-2.1-reads-inferencepool-v1", ">=2.1.0", INFERENCEPOOL, "v1", True, IFX,
            id="kgateway 2.1 with inference reads InferencePool v1",
        ),
    ],
)  # fmt: skip
def test_default_catalog_rules_by_id(
    catalog: Catalog,
    rule_id: str,
    versions: str,
    crd_name: str,
    served: str | None,
    tolerated: bool,
    feature: str | None,
) -> None:
    rule = catalog.rules[rule_id]
    assert (rule.component, str(rule.versions), rule.crd, rule.served_version) == (
        "kgateway",
        versions,
        crd_name,
        served,
    )
    assert (rule.missing_tolerated, rule.feature) == (tolerated, feature)


def test_default_catalog_has_no_rule_beyond_the_facts(catalog: Catalog) -> None:
    assert len(catalog.rules) == 5
    assert set(catalog.components) == {"kgateway"}


def test_default_catalog_rules_name_their_kind_explain_fix_and_cite_upstream(catalog: Catalog) -> None:
    upstream_repos = {
        "kgateway-dev/kgateway",
        "kubernetes-sigs/gateway-api",
        "kubernetes-sigs/gateway-api-inference-extension",
    }
    for rule in catalog.rules.values():
        assert rule.crd_kind and rule.crd_kind[0].isupper(), rule.id
        assert len(rule.explanation) > 40, rule.id
        assert rule.fix and all(step.commands for step in rule.fix), rule.id
        assert rule.evidence, rule.id
        assert {e.repo for e in rule.evidence} <= upstream_repos, rule.id
        assert all(e.tag.startswith("v") and e.path for e in rule.evidence), rule.id
        assert rule.enforcement is Enforcement.DENY, rule.id
        assert rule.source.startswith("default catalog"), rule.id


def test_default_catalog_recognises_kgateway_as_its_chart_installs_it(catalog: Catalog) -> None:
    kgateway = catalog.components["kgateway"]
    assert kgateway.detect.images == ("kgateway-dev/kgateway",)
    assert "kgateway" in kgateway.detect.charts
    assert kgateway.detect.labels.get("app.kubernetes.io/name") == "kgateway"
    # FACTS: app.kubernetes.io/version is stuck at 1.16.0 and must not be a signal.
    assert "app.kubernetes.io/version" not in kgateway.detect.labels
    infer = kgateway.features["inferenceExtension"]
    assert infer.env is not None and (infer.env.name, infer.env.value) == ("KGW_ENABLE_INFER_EXT", "true")
    assert infer.helm_value is not None
    assert (infer.helm_value.path, infer.helm_value.value) == (("inferenceExtension", "enabled"), True)


# -- --catalog FILE: later files win by id --------------------------------------------------


def _override(path: Path, rule_id: str, enforcement: str, explanation: str) -> str:
    base = load_catalog().rules[rule_id]
    path.write_text(
        f"""\
apiVersion: crdguard.io/v1alpha1
kind: CompatibilityCatalog
rules:
  - id: {rule_id}
    component: {base.component}
    versions: "{base.versions}"
    crd: {base.crd}
    crdKind: {base.crd_kind}
    requires: {{servedVersion: {base.served_version}}}
    failure: {base.failure}
    enforcement: {enforcement}
    explanation: {explanation}
"""
    )
    return str(path)


RULE = "kgateway-2.0-reads-backendtlspolicy-v1alpha3"


@pytest.mark.parametrize(
    ("order", "winner", "enforcement"),
    [
        pytest.param(("warn", "audit"), "audit", Enforcement.AUDIT, id="the last of two files wins"),
        pytest.param(
            ("audit", "warn"), "warn", Enforcement.WARN, id="reversing the files reverses the winner"
        ),
        pytest.param(("warn",), "warn", Enforcement.WARN, id="one file overrides the default entry"),
    ],
)
def test_catalog_files_override_rules_by_id(
    tmp_path: Path, order: tuple[str, ...], winner: str, enforcement: Enforcement
) -> None:
    files = [_override(tmp_path / f"{mode}.yaml", RULE, mode, f"overridden by {mode}") for mode in order]
    merged = load_catalog(files)
    rule = merged.rules[RULE]
    assert rule.enforcement is enforcement
    assert rule.explanation == f"overridden by {winner}"
    assert rule.source.startswith(str(tmp_path / f"{winner}.yaml"))
    # An override replaces the entry; it does not add a second rule for the same CRD.
    assert sum(r.id == RULE for r in merged.rules_by_crd[BTP]) == 1
    assert set(merged.rules) == set(load_catalog().rules)


def test_a_catalog_file_can_replace_a_component_by_name(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(
        """\
apiVersion: crdguard.io/v1alpha1
kind: CompatibilityCatalog
components:
  - name: kgateway
    detect:
      images: [kgateway-dev/kgateway, platform/kgateway-mirrored]
      charts: [kgateway]
    features:
      inferenceExtension:
        env: {name: KGW_ENABLE_INFER_EXT}
"""
    )
    merged = load_catalog([str(path)])
    images = merged.components["kgateway"].detect.images
    assert images == ("kgateway-dev/kgateway", "platform/kgateway-mirrored")
    assert merged.components["kgateway"].detect.labels == {}
    assert merged.components["kgateway"].features["inferenceExtension"].helm_value is None
    # The default rules still hold, now for the replaced component.
    assert set(merged.rules_by_component["kgateway"]) == set(load_catalog().rules_by_component["kgateway"])


# -- broken catalogs: CatalogError naming the file and the field ----------------------------

HEADER = "apiVersion: crdguard.io/v1alpha1\nkind: CompatibilityCatalog\n"
GOOD_RULE = """\
  - id: my-rule
    component: kgateway
    versions: ">=2.1.0"
    crd: backendtlspolicies.gateway.networking.k8s.io
    crdKind: BackendTLSPolicy
    requires: {servedVersion: v1}
    failure: never-ready
    explanation: kgateway reads v1
"""


def _rule_with(**fields: str) -> str:
    """GOOD_RULE with ``fields`` replaced or added (``<drop>``: removed); ``id`` stays first."""
    lines = GOOD_RULE.splitlines()
    if "id" in fields:
        lines[0] = f"  - id: {fields.pop('id')}"
    kept = [line for line in lines if line.startswith("  - ") or line.split(":", 1)[0].strip() not in fields]
    extra = [f"    {key}: {value}" for key, value in fields.items() if value != "<drop>"]
    return HEADER + "rules:\n" + "\n".join(kept + extra) + "\n"


BROKEN = [
    ("- a\n- b\n", ["document must be a mapping, got list"], "a list instead of a catalog is refused"),
    (
        "apiVersion: v1\nkind: ConfigMap\n",
        ["expected apiVersion 'crdguard.io/v1alpha1'", "'ConfigMap'"],
        "another kind of object is refused",
    ),
    (HEADER + "rule: []\n", ["unknown top-level field(s) ['rule']"], "a misspelt top-level field is refused"),
    (HEADER + "rules: {}\n", ["rules must be a list, got dict"], "rules as a mapping are refused"),
    (HEADER + "components:\n", ["components must be a list, got NoneType"], "empty components are refused"),
    (HEADER + "rules:\n  - 3\n", ["rules[0]", "rule must be a mapping"], "a rule that is not a mapping"),
    (_rule_with(id='""'), ["rules[0]", "field 'id'"], "a rule with an empty id is refused"),
    (_rule_with(crd="<drop>"), ["(my-rule)", "field 'crd'"], "a rule without a CRD is refused"),
    (_rule_with(explanation='""'), ["(my-rule)", "field 'explanation'"], "an empty explanation is refused"),
    (_rule_with(crdname="x"), ["rules[0]", "unknown field(s) ['crdname']"], "a misspelt rule field"),
    (_rule_with(versions='">=two"'), ["(my-rule)", "versions:", "'>=two'"], "an unparseable range"),
    (_rule_with(requires="<drop>"), ["(my-rule)", "requires must be a mapping"], "a rule without requires"),
    (
        _rule_with(requires="{}"),
        ["(my-rule)", "requires needs exactly one of servedVersion"],
        "requires with nothing required",
    ),
    (
        _rule_with(requires="{servedVersion: 1}"),
        ["(my-rule)", "requires.servedVersion must be a string"],
        "a numeric served version is refused",
    ),
    (
        _rule_with(requires="{servedversion: v1}"),
        ["(my-rule)", "requires", "unknown field(s) ['servedversion']"],
        "a misspelt requirement is refused",
    ),
    (_rule_with(whenCRDMissing="ignore"), ["(my-rule)", "whenCRDMissing"], "an unknown missing-CRD mode"),
    (_rule_with(enforcement="block"), ["(my-rule)", "enforcement must be one of"], "an unknown enforcement"),
    (
        _rule_with(component="my-gateway"),
        ["my-rule", "'my-gateway'", "no catalog defines"],
        "unknown component",
    ),
    (_rule_with(feature="gpu"), ["my-rule", "feature 'gpu'", "does not define"], "a feature not defined"),
    (_rule_with(feature="[a, b]"), ["(my-rule)", "feature must be"], "a feature that is a list is refused"),
    (
        _rule_with(fix="[{summary: upgrade, commands: helm upgrade}]"),
        ["(my-rule)", "fix.commands must be a list"],
        "fix commands as one string are refused",
    ),
    (_rule_with(fix="[{commands: []}]"), ["(my-rule)", "field 'summary'"], "a fix step without a summary"),
    (
        _rule_with(evidence="[{repo: kgateway-dev/kgateway, path: go.mod}]"),
        ["(my-rule)", "field 'tag'"],
        "evidence without a tag is refused",
    ),
    (
        HEADER + "components:\n  - name: gw\n    detect: {image: [gw]}\n",
        ["components[0]: detect", "unknown field(s) ['image']"],
        "a misspelt detect field is refused",
    ),
    (
        HEADER + "components:\n  - name: gw\n    detect: {images: gw}\n",
        ["components[0]", "images must be a list"],
        "images as one string are refused",
    ),
    (
        HEADER + "components:\n  - name: gw\n    feature: {}\n",
        ["components[0]", "unknown field(s) ['feature']"],
        "a misspelt component field is refused",
    ),
    (
        HEADER + "components:\n  - name: gw\n    features: {infer: {env: GW_INFER}}\n",
        ["features.infer", "env must be a mapping"],
        "a feature env that is a string is refused",
    ),
    (
        HEADER + "components:\n  - name: gw\n    features: {infer: {env: {value: 'true'}}}\n",
        ["features.infer.env", "field 'name'"],
        "a feature env without a name is refused",
    ),
    (HEADER + "components:\n  - detect: {}\n", ["components[0]", "field 'name'"], "a nameless component"),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for t, e, i in BROKEN])
def test_broken_catalog_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "team-catalog.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as raised:
        load_catalog([str(path)])
    message = str(raised.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("rules: [\n", ["document 1", "invalid YAML"], id="invalid YAML names file and document"),
        pytest.param(
            HEADER + "---\nrules: {{\n",
            ["document 2", "invalid YAML"],
            id="invalid YAML in a later document names that document",
        ),
    ],
)
def test_unparseable_catalog_names_file_and_document(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "team-catalog.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as raised:
        load_catalog([str(path)])
    assert str(path) in str(raised.value)
    for fragment in expected:
        assert fragment in str(raised.value)


def test_missing_catalog_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_catalog([str(tmp_path / "absent.yaml")])


# -- examples/catalogs ------------------------------------------------------------------------


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_examples_include_the_reported_rule_and_a_second_component() -> None:
    assert REPORTED in EXAMPLE_FILES
    assert MY_GATEWAY in EXAMPLE_FILES


@pytest.mark.parametrize("path", [pytest.param(p, id=f"{p.name} loads") for p in EXAMPLE_FILES])
def test_every_example_catalog_loads_and_adds_rules(path: Path) -> None:
    default = load_catalog()
    merged = load_catalog([str(path)])
    added: list[Rule] = [r for r in merged.rules.values() if r.id not in default.rules]
    assert added, f"{path.name} adds no rule"
    for rule in added:
        assert rule.source.startswith(str(path))
        assert rule.fix and rule.evidence and rule.explanation


def test_reported_rule_is_not_what_upstream_says(catalog: Catalog) -> None:
    """The default catalog must keep FACTS.md: kgateway 2.1.1 reads v1, not v1alpha3."""
    assert requirements(catalog, "2.1.1", BTP, set()) == {("v1", True)}
    reported = load_catalog([str(REPORTED)])
    assert requirements(reported, "2.1.1", BTP, set()) == {("v1", True), ("v1alpha3", True)}
    # It is about one release; neighbours keep the default rules.
    assert requirements(reported, "2.1.2", BTP, set()) == {("v1", True)}
    assert requirements(reported, "2.0.4", BTP, set()) == {("v1alpha3", True)}


@pytest.mark.parametrize(
    ("catalog_files", "allowed"),
    [
        pytest.param((), True, id="the default catalog allows v1.4.0 standard beside kgateway 2.1.1"),
        pytest.param((REPORTED,), False, id="the reported rule denies v1.4.0 standard beside kgateway 2.1.1"),
    ],
)
@pytest.mark.parametrize("kgateway", ["deployment", "helmrelease"])
def test_reported_rule_denies_v1_only_backendtlspolicy_beside_kgateway_2_1_1(
    upstream: Path, catalog_files: tuple[Path, ...], allowed: bool, kgateway: str
) -> None:
    loaded = load_catalog([str(p) for p in catalog_files])
    release = deployment("v2.1.1") if kgateway == "deployment" else helmrelease("v2.1.1")
    cluster = Cluster(loaded, [*kgateway_crds(upstream, "v2.1.1"), release])
    incoming = named(gateway_api_bundle(upstream, "v1.4.0", "standard"), BTP)
    verdict = cluster.apply(incoming)
    assert verdict.allowed is allowed
    if not allowed:
        assert [c.rule.id for c in verdict.denied] == [
            "reported-kgateway-2.1.1-reads-backendtlspolicy-v1alpha3"
        ]
        # The fix the rule offers is a channel that serves what it needs, and it does.
        experimental = named(gateway_api_bundle(upstream, "v1.4.0", "experimental"), BTP)
        assert cluster.apply(experimental).allowed


@pytest.mark.parametrize(
    ("source", "version", "catalog_files", "allowed", "warned"),
    [
        pytest.param("image", "v3.2.0", (), True, False, id="the default catalog does not know my-gateway"),
        pytest.param(
            "image", "v3.2.0", (MY_GATEWAY,), False, False, id="my-gateway 3 found by image is denied"
        ),
        pytest.param(
            "label", "v3.2.0", (MY_GATEWAY,), False, False, id="my-gateway 3 found by label is denied"
        ),
        pytest.param(
            "chart", "3.2.0", (MY_GATEWAY,), False, False, id="my-gateway 3 found by chart is denied"
        ),
        pytest.param(
            "image", "v4.1.0", (MY_GATEWAY,), True, False, id="my-gateway 4 reads v1 and is allowed"
        ),
    ],
)
def test_second_component_is_only_a_catalog_entry(
    catalog_files: tuple[Path, ...], source: str, version: str, allowed: bool, warned: bool
) -> None:
    loaded = load_catalog([str(p) for p in catalog_files])
    if source == "image":
        release = deployment(
            version,
            name="edge",
            namespace="gateways",
            image=f"registry.example.com/platform/my-gateway:{version}",
            labels={},
        )
    elif source == "label":
        release = deployment(
            version,
            name="edge",
            namespace="gateways",
            image="registry.example.com/platform/controller:build-77",
            labels={"app.kubernetes.io/name": "my-gateway", "helm.sh/chart": f"my-gateway-{version}"},
        )
    else:
        release = helmrelease(version, name="edge", namespace="gateways", chart="my-gateway")
    cluster = Cluster(loaded, [release, crd(BTP, {"v1alpha3": True})])
    verdict = cluster.apply(crd(BTP, {"v1": True, "v1alpha3": False}))
    assert verdict.allowed is allowed
    if not allowed:
        assert {c.release.component for c in verdict.denied} == {"my-gateway"}
        assert {str(c.release.source) for c in verdict.denied} == {f"{release['kind']} gateways/edge"}


def test_second_component_warn_rule_allows_with_a_warning() -> None:
    loaded = load_catalog([str(MY_GATEWAY)])
    cluster = Cluster(
        loaded,
        [
            deployment(
                "v4.0.0", name="edge", namespace="gateways", image="platform/my-gateway:v4.0.0", labels={}
            )
        ],
    )
    verdict = cluster.apply(crd(BTP, {"v1alpha3": True}))
    assert verdict.allowed
    assert [c.rule.id for c in verdict.warned] == ["my-gateway-4-reads-backendtlspolicy-v1"]
    assert not verdict.denied
