"""The compatibility catalog: the default one encodes FACTS.md; users add and override entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
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
from webhook.rules.catalog import Catalog, CatalogError, Enforcement, Failure, Rule
from webhook.rules.engine import audit
from webhook.rules.versions import Version

EXAMPLES = REPO_ROOT / "examples" / "catalogs"
REPORTED = EXAMPLES / "reported-kgateway-2.1.1-needs-v1alpha3.yaml"
MY_GATEWAY = EXAMPLES / "second-component-my-gateway.yaml"

EXISTS = "exists"  # the requirement of a rule that only needs the CRD to be installed


Need = tuple[str, bool, str | None]


def requirements(catalog: Catalog, version: str, crd_name: str, features: set[str]) -> set[Need]:
    """What kgateway ``version`` needs from ``crd_name``: (served version or EXISTS, missing tolerated,
    the bundle-version window the watch starts in, if any)."""
    found = set()
    for rule in catalog.rules_by_crd.get(crd_name, ()):
        if rule.component != "kgateway" or Version.parse(version) not in rule.versions:
            continue
        if rule.feature is not None and rule.feature not in features:
            continue
        window = str(rule.bundle_window) if rule.bundle_window else None
        found.add((rule.served_version or EXISTS, rule.missing_tolerated, window))
    return found


INFER = {"inferenceExtension"}
# kgateway 2.1+ watch BackendTLSPolicy only for a CRD of bundle v1.4.0 or later (the Istio CRD watcher
# they pin, docs/evidence/kgateway.md); below it the CRD is ignored (the feature-off rule's window).
WATCHED = ("v1", True, "[1.4.0, *]")
IGNORED = ("v1", True, "[*, 1.3.99]")

# One row per statement of FACTS.md's kgateway table as docs/evidence/kgateway.md verified and
# corrected it, with the version at both ends of each line.
FACTS = [
    ("2.0.0", BTP, set(), {("v1alpha3", True, None)}, "kgateway 2.0.0 reads BackendTLSPolicy v1alpha3"),
    ("v2.0.4", BTP, set(), {("v1alpha3", True, None)}, "kgateway 2.0.4 reads BackendTLSPolicy v1alpha3"),
    ("2.1.0", BTP, set(), {WATCHED, IGNORED}, "kgateway 2.1.0 reads BackendTLSPolicy v1 from bundle v1.4.0"),
    ("v2.1.2", BTP, set(), {WATCHED, IGNORED}, "kgateway 2.1.2 reads BackendTLSPolicy v1 from bundle v1.4.0"),
    ("v2.2.0", BTP, set(), {WATCHED, IGNORED}, "kgateway 2.2.0 reads BackendTLSPolicy v1 from bundle v1.4.0"),
    ("v2.4.0", BTP, set(), {WATCHED, IGNORED}, "kgateway 2.4.0 reads BackendTLSPolicy v1 from bundle v1.4.0"),
    ("v2.0.4", BCP, set(), set(), "kgateway 2.0.4 does not need BackendConfigPolicy"),
    (
        "v2.1.1",
        BCP,
        set(),
        {(EXISTS, False, None)},
        "kgateway 2.1.1 fails without the BackendConfigPolicy CRD",
    ),
    ("v2.2.0", BCP, set(), set(), "kgateway 2.2.0 watches BackendConfigPolicy through a delayed informer"),
    (
        "v2.0.4",
        INFERENCEPOOL_X,
        INFER,
        {("v1alpha2", True, None)},
        "kgateway 2.0 inference reads x-k8s v1alpha2",
    ),
    ("v2.0.4", INFERENCEPOOL, INFER, set(), "kgateway 2.0 inference does not read k8s.io pools"),
    ("v2.1.1", INFERENCEPOOL, INFER, {("v1", True, None)}, "kgateway 2.1 inference reads k8s.io v1"),
    ("v2.2.0", INFERENCEPOOL, INFER, {("v1", True, None)}, "kgateway 2.2 inference reads k8s.io v1"),
    ("v2.4.0", INFERENCEPOOL, INFER, set(), "kgateway 2.4 has no InferencePool support"),
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
    catalog: Catalog, version: str, crd_name: str, features: set[str], needed: set[Need]
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
            "kgateway-2.1-reads-backendtlspolicy-v1", ">=2.1.0 <2.2.0", BTP, "v1", True, None,
            id="kgateway 2.1 reads BackendTLSPolicy v1 and tolerates its absence",
        ),
        pytest.param(
            "kgateway-2.1-ignores-backendtlspolicy-below-bundle-v1.4", ">=2.1.0 <2.2.0", BTP, "v1", True,
            None, id="kgateway 2.1 ignores a BackendTLSPolicy CRD below bundle v1.4.0",
        ),
        pytest.param(
            "kgateway-2.1-requires-backendconfigpolicy-crd", ">=2.1.0 <2.2.0", BCP, None, False, None,
            id="kgateway 2.1 requires the BackendConfigPolicy CRD",
        ),
        pytest.param(
            "kgateway-2.0-reads-inferencepool-x-k8s-v1alpha2", ">=2.0.0 <2.1.0", INFERENCEPOOL_X, "v1alpha2",
            True, IFX,
            id="kgateway 2.0 with inference reads x-k8s InferencePool v1alpha2",
        ),
        pytest.param(
            "kgateway-2.1-reads-inferencepool-v1", ">=2.1.0 <2.3.0", INFERENCEPOOL, "v1", True, IFX,
            id="kgateway 2.1 and 2.2 with inference read InferencePool v1",
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


CATALOG_DIR = REPO_ROOT / "webhook" / "rules" / "catalog"
EVIDENCE_NOTES = REPO_ROOT / "docs" / "evidence"
CASE_FILES = REPO_ROOT / "tests" / "catalog_cases"


def test_every_catalogued_component_has_its_file_rules_table_cases_and_evidence_notes(
    catalog: Catalog,
) -> None:
    # One catalog file per component (kgateway's 2.2+ rules sit in a second file of its own).
    owners = {path.stem.split("-2.")[0] for path in CATALOG_DIR.glob("*.yaml")}
    assert owners == set(catalog.components)
    for name in catalog.components:
        assert catalog.rules_by_component.get(name), f"{name} has no rule"
        assert (CASE_FILES / f"{name}.yaml").is_file(), f"{name} has no table cases"
        assert (EVIDENCE_NOTES / f"{name}.md").is_file(), f"{name} has no research notes"
    for rule in catalog.rules.values():
        assert rule.id.startswith(f"{rule.component}-"), rule.id


def test_every_component_is_detected_by_image_paths_of_two_segments_or_more(catalog: Catalog) -> None:
    for name, component in catalog.components.items():
        assert component.detect.images, f"{name} has no image"
        for image in component.detect.images:
            # A last segment alone ("gateway", "operator") would match unrelated images.
            assert len(image.split("/")) >= 2 and all(image.split("/")), f"{name}: {image}"


def _declared_enforcement() -> dict[str, str]:
    declared = {}
    for path in CATALOG_DIR.glob("*.yaml"):
        for raw in yaml.safe_load(path.read_text()).get("rules", []):
            if "enforcement" in raw:
                declared[raw["id"]] = raw["enforcement"]
    return declared


def test_enforcement_follows_the_failure_unless_the_notes_explain_otherwise(catalog: Catalog) -> None:
    declared = _declared_enforcement()
    for rule in catalog.rules.values():
        if rule.id not in declared:
            assert rule.enforcement is rule.failure.default_enforcement, rule.id
        elif rule.enforcement is not rule.failure.default_enforcement:
            # A rule that stops a crash from being denied (or denies a feature-off) is a decision
            # its component's research notes state.
            notes = (EVIDENCE_NOTES / f"{rule.component}.md").read_text()
            assert f"enforcement: {rule.enforcement}" in notes, rule.id
    stops = [r for r in catalog.rules.values() if r.failure is not Failure.FEATURE_OFF]
    assert sum(r.enforcement is Enforcement.DENY for r in stops) > len(stops) // 2


def test_default_catalog_rules_name_their_kind_explain_and_cite_upstream(catalog: Catalog) -> None:
    for rule in catalog.rules.values():
        assert rule.crd_kind and rule.crd_kind[0].isupper(), rule.id
        assert len(rule.explanation) > 40, rule.id
        assert not rule.fix, f"{rule.id}: fixes are planned from release data, not written in the catalog"
        assert rule.evidence, rule.id
        for evidence in rule.evidence:
            owner, _, name = evidence.repo.partition("/")
            assert owner and name and "/" not in name, f"{rule.id}: {evidence.repo}"
            assert evidence.tag and evidence.path and not evidence.path.startswith("/"), rule.id
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
      experimentalGatewayAPI:
        default: true
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
    assert requirements(catalog, "2.1.1", BTP, set()) == {WATCHED, IGNORED}
    reported = load_catalog([str(REPORTED)])
    assert requirements(reported, "2.1.1", BTP, set()) == {WATCHED, IGNORED, ("v1alpha3", True, None)}
    # It is about one release; neighbours keep the default rules.
    assert requirements(reported, "2.1.2", BTP, set()) == {WATCHED, IGNORED}
    assert requirements(reported, "2.0.4", BTP, set()) == {("v1alpha3", True, None)}


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


# -- the rule model's fields ------------------------------------------------------------------


def test_every_default_catalog_rule_cites_evidence_with_an_identifier(catalog: Catalog) -> None:
    for rule in catalog.rules.values():
        assert rule.evidence, rule.id
        for evidence in rule.evidence:
            assert evidence.identifier, f"{rule.id}: {evidence} names no identifier"


COMPONENT = """\
components:
  - name: gw
    detect:
      images: [example/gw]
      charts: [gw]
    features:
      alpha: {default: true, env: {name: GW_ALPHA, value: "1"}, args: [--alpha], disableArgs: [--no-alpha],
              helmValue: {path: alpha.enabled, value: true}}
    install:
      chart: oci://example.com/charts/gw
      chartName: gw
      namespace: gw-system
      releaseName: gw
      releases: [v1.0.0, v1.1.0]
      bundledCRDs:
        - {versions: ">=1.1.0", gatewayAPI: v1.5.1, channel: experimental}
"""


def _gw_rule(**fields: str) -> str:
    rule = {
        "id": "gw-rule",
        "component": "gw",
        "versions": '">=1.0.0"',
        "crd": "tlsroutes.gateway.networking.k8s.io",
        "crdKind": "TLSRoute",
        "requires": "{listedMustBeServed: v1alpha2}",
        "failure": "crash",
        "explanation": "gw reads TLSRoute v1alpha2 when listed",
    }
    rule.update(fields)
    body = "\n".join(f"    {k}: {v}" for k, v in rule.items() if v != "<drop>" and k != "id")
    return HEADER + COMPONENT + f"rules:\n  - id: {rule['id']}\n{body}\n"


def _load_text(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "team-catalog.yaml"
    path.write_text(text)
    return load_catalog([str(path)])


def test_new_fields_load_into_the_model(tmp_path: Path) -> None:
    loaded = _load_text(tmp_path, _gw_rule(bundleVersion="{min: v1.5.0, max: v1.5.99}"))
    rule = loaded.rules["gw-rule"]
    assert (rule.listed_version, rule.served_version, rule.crd_kind) == ("v1alpha2", None, "TLSRoute")
    assert rule.bundle_window is not None and str(rule.bundle_window) == "[1.5.0, 1.5.99]"
    assert (rule.failure, rule.enforcement, rule.fix) == (Failure.CRASH, Enforcement.DENY, ())
    gw = loaded.components["gw"]
    alpha = gw.features["alpha"]
    assert (alpha.default, alpha.args, alpha.disable_args) == (True, ("--alpha",), ("--no-alpha",))
    assert alpha.env is not None and alpha.env.reads("TRUE") is True and alpha.env.reads("0") is False
    assert gw.install is not None
    assert (gw.install.chart_name, gw.install.namespace, gw.install.release_name) == ("gw", "gw-system", "gw")
    assert gw.install.releases == ("v1.0.0", "v1.1.0")
    (bundled,) = gw.install.bundled_crds
    assert (bundled.gateway_api, bundled.channel, Version.parse("1.1.3") in bundled.versions) == (
        "v1.5.1",
        "experimental",
        True,
    )


@pytest.mark.parametrize(
    ("failure", "enforcement"),
    [
        pytest.param("crash", Enforcement.DENY, id="a crash denies by default"),
        pytest.param(
            "never-ready", Enforcement.DENY, id="a controller that never gets ready denies by default"
        ),
        pytest.param("hangs", Enforcement.DENY, id="a hanging controller denies by default"),
        pytest.param("feature-off", Enforcement.WARN, id="a feature silently off warns by default"),
    ],
)
def test_failure_sets_the_default_enforcement(tmp_path: Path, failure: str, enforcement: Enforcement) -> None:
    assert _load_text(tmp_path, _gw_rule(failure=failure)).rules["gw-rule"].enforcement is enforcement


def test_feature_off_can_still_be_configured_to_deny(tmp_path: Path) -> None:
    rule = _load_text(tmp_path, _gw_rule(failure="feature-off", enforcement="deny")).rules["gw-rule"]
    assert rule.enforcement is Enforcement.DENY


BAD_FIELDS = [
    (_gw_rule(crdKind="<drop>"), ["(gw-rule)", "field 'crdKind'"], "a rule without crdKind is refused"),
    (
        _gw_rule(crdKind="tlsroutes"),
        ["(gw-rule)", "crdKind must be the Kind"],
        "a plural as crdKind is refused",
    ),
    (_gw_rule(failure="<drop>"), ["(gw-rule)", "failure must be one of crash"], "a rule without failure"),
    (_gw_rule(failure="explodes"), ["(gw-rule)", "'explodes'"], "an unknown failure is refused"),
    (
        _gw_rule(requires="{servedVersion: v1, exists: true}"),
        ["(gw-rule)", "exactly one of", "servedVersion", "exists"],
        "two requirements at once are refused",
    ),
    (
        _gw_rule(requires="{listedMustBeServed: 2}"),
        ["(gw-rule)", "requires.listedMustBeServed must be a string"],
        "a numeric listed version is refused",
    ),
    (_gw_rule(requires="{exists: false}"), ["(gw-rule)", "exactly one of"], "exists false is refused"),
    (_gw_rule(bundleVersion="{}"), ["(gw-rule)", "bundleVersion needs min, max"], "an empty window"),
    (
        _gw_rule(bundleVersion="{min: v1.6.0, max: v1.5.0}"),
        ["(gw-rule)", "min 1.6.0 is above max 1.5.0"],
        "a window upside down is refused",
    ),
    (
        _gw_rule(bundleVersion="{min: one}"),
        ["(gw-rule)", "bundleVersion.min", "'one'"],
        "a window bound that is not a version",
    ),
    (_gw_rule(bundleVersion="{low: v1.5.0}"), ["bundleVersion", "['low']"], "a misspelt window field"),
    (
        _gw_rule(evidence="[{repo: a/b, tag: v1, path: x.go, ident: y}]"),
        ["evidence[0]", "unknown field(s) ['ident']"],
        "a misspelt evidence field is refused",
    ),
    (
        _gw_rule(evidence="[{repo: a/b, tag: v1, path: x.go, identifier: ''}]"),
        ["evidence[0]", "field 'identifier'"],
        "an empty identifier is refused",
    ),
    (_gw_rule(crd="tlsroutes"), ["(gw-rule)", "crd must be a CRD name"], "a CRD name without group"),
    (
        _gw_rule().replace("images: [example/gw]", "images: [gw]"),
        ["components[0]: detect", "'gw' must be a repository path"],
        "a one-segment image is refused (it would match unrelated images)",
    ),
    (
        _gw_rule().replace("images: [example/gw]", "images: [ghcr.io/example/gw]"),
        ["'ghcr.io/example/gw' must be a repository path without registry"],
        "an image with a registry is refused (detection ignores registries)",
    ),
    (
        _gw_rule().replace("images: [example/gw]", "images: [example/gw:v1]"),
        ["without registry or tag"],
        "an image with a tag is refused",
    ),
    (
        _gw_rule().replace("charts: [gw]", "charts: [gw]\n      imageValues: {tags: [image.tag]}"),
        ["imageValues", "unknown field(s) ['tags']"],
        "a misspelt imageValues field is refused",
    ),
    (
        _gw_rule().replace("charts: [gw]", "charts: [gw]\n      tagSuffixes: -distroless"),
        ["tagSuffixes must be a list"],
        "tag suffixes as one string are refused",
    ),
    (
        _gw_rule().replace("default: true", "default: yes-please"),
        ["features.alpha", "default must be true or false"],
        "a feature default that is not a boolean is refused",
    ),
    (
        _gw_rule().replace("args: [--alpha]", "args: --alpha"),
        ["features.alpha", "args must be a list"],
        "feature args as one string are refused",
    ),
    (
        _gw_rule().replace("env: {name: GW_ALPHA", "env: {nme: GW_ALPHA"),
        ["features.alpha.env", "unknown field(s) ['nme']"],
        "a misspelt env field is refused",
    ),
    (
        _gw_rule().replace("chartName: gw", "chartname: gw"),
        ["install", "unknown field(s) ['chartname']"],
        "a misspelt install field is refused",
    ),
    (
        _gw_rule().replace("releases: [v1.0.0, v1.1.0]", "releases: [v1.0.0, latest]"),
        ["install: releases", "'latest'"],
        "an install release that is not a version is refused",
    ),
    (
        _gw_rule().replace("channel: experimental", "channel: beta"),
        ["bundledCRDs[0]", "channel must be 'standard' or 'experimental'"],
        "an unknown bundled channel is refused",
    ),
    (
        _gw_rule().replace('versions: ">=1.1.0", ', 'versions: ">=one", '),
        ["bundledCRDs[0]", "versions:", "'>=one'"],
        "a bundled version range that does not parse is refused",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for t, e, i in BAD_FIELDS])
def test_bad_new_fields_are_refused_naming_file_and_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    with pytest.raises(CatalogError) as raised:
        _load_text(tmp_path, text)
    message = str(raised.value)
    assert str(tmp_path / "team-catalog.yaml") in message
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


TLSROUTE = "tlsroutes.gateway.networking.k8s.io"


@pytest.mark.parametrize(
    ("rule_fields", "served", "annotation", "conflict"),
    [
        pytest.param({}, {"v1": True, "v1alpha2": False}, None, True, id="listed unserved is a conflict"),
        pytest.param({}, {"v1": True}, None, False, id="not listed is tolerated"),
        pytest.param({}, {"v1": True, "v1alpha2": True}, None, False, id="listed and served is fine"),
        pytest.param(
            {"requires": "{servedVersion: v1alpha2}"}, {"v1": True}, None, True,
            id="servedVersion: not listed is a conflict",
        ),
        pytest.param(
            {"bundleVersion": "{min: v1.5.0, max: v1.5.99}"}, {"v1alpha2": False}, "v1.5.1", True,
            id="inside the bundle window the rule applies",
        ),
        pytest.param(
            {"bundleVersion": "{min: v1.5.0, max: v1.5.99}"}, {"v1alpha2": False}, "v1.6.0", False,
            id="above the bundle window the watch never starts",
        ),
        pytest.param(
            {"bundleVersion": "{min: v1.5.0}"}, {"v1alpha2": False}, "v1.4.1", False,
            id="below the bundle window the watch never starts",
        ),
        pytest.param(
            {"bundleVersion": "{min: v1.5.0}"}, {"v1alpha2": False}, None, False,
            id="a CRD without the bundle-version annotation is outside every window",
        ),
    ],
)  # fmt: skip
def test_requirement_kinds_and_bundle_windows(
    tmp_path: Path,
    rule_fields: dict[str, str],
    served: dict[str, bool],
    annotation: str | None,
    conflict: bool,
) -> None:
    loaded = _load_text(tmp_path, _gw_rule(**rule_fields))
    gw = deployment("v1.0.0", name="gw", namespace="gw", image="ghcr.io/example/gw:v1.0.0", labels={})
    view = Cluster(loaded, [gw, crd(TLSROUTE, served, bundle_version=annotation)]).view()
    assert [c.rule.id for c in audit(view, loaded)] == (["gw-rule"] if conflict else [])
