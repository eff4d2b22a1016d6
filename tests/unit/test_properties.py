"""Properties of the engine over random clusters and changes, checked against ``audit()``.

``audit(view)`` lists every conflict present in a cluster. Whatever the cluster and
the change, the engine must deny exactly when the change adds a conflict to that
list, never when it only removes some, give the same answer twice, and never raise.
"""

from __future__ import annotations

import json
from typing import Any

from helpers import (
    BCP,
    BTP,
    HTTPROUTE,
    INFERENCEPOOL,
    INFERENCEPOOL_X,
    Obj,
    admission_review,
    change,
    configmap,
    crd,
    deployment,
    helmrelease,
    helmrelease_chartref,
    inventory,
    ocirepository,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission.app import respond
from webhook.admission.review import ReviewError, parse_review
from webhook.catalogs import load_catalog
from webhook.rules.catalog import Enforcement
from webhook.rules.engine import Verdict, audit, review_change
from webhook.rules.inventory import Inventory
from webhook.rules.messages import audit_annotations, denial_message, warnings
from webhook.rules.objects import summarize, summary_ref
from webhook.state.files import group_of

CATALOG = load_catalog()  # hypothesis runs many examples per test; fixtures are per test, not per example
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

API_VERSIONS = ["v1alpha2", "v1alpha3", "v1beta1", "v1"]
TAGS = ["v2.0.0", "2.0.4", "v2.0.4", "v2.1.0-rc.1", "v2.1.0", "v2.1.1", "2.2.0", "1.9.0", "latest"]
RANGES = ["*", ">=2.0.0", "2.1", ">=2.0.0 <2.1.0"]
INFER_VALUES = {"inferenceExtension": {"enabled": True}}


def crds(name: str) -> st.SearchStrategy[Obj]:
    return st.dictionaries(st.sampled_from(API_VERSIONS), st.booleans(), max_size=4).map(
        lambda s: crd(name, s)
    )


def kgateway_deployments(name: str, namespace: str) -> st.SearchStrategy[Obj]:
    return st.builds(
        lambda tag, infer, labelled_only: deployment(
            tag,
            name=name,
            namespace=namespace,
            env={"KGW_ENABLE_INFER_EXT": "true"} if infer else None,
            image=f"mirror.example.com/controller:{tag}" if labelled_only else None,
        ),
        st.sampled_from(TAGS),
        st.booleans(),
        st.booleans(),
    )


# Every object a random cluster may hold, by slot; a change replaces, adds or deletes one slot.
SLOTS: dict[str, st.SearchStrategy[Obj]] = {
    "btp": crds(BTP),
    "bcp": crds(BCP),
    "pool": crds(INFERENCEPOOL),
    "pool-x": crds(INFERENCEPOOL_X),
    "httproute": crds(HTTPROUTE),
    "deployment": kgateway_deployments("kgateway", "kgateway-system"),
    "deployment-2": kgateway_deployments("gw2", "team"),
    "helmrelease": st.builds(
        lambda version, infer: helmrelease(
            version, namespace="flux-system", values=INFER_VALUES if infer else {}
        ),
        st.sampled_from([*TAGS, *RANGES, None]),
        st.booleans(),
    ),
    "helmrelease-oci": st.builds(
        lambda infer: helmrelease_chartref(
            name="from-oci", namespace="flux-system", values=INFER_VALUES if infer else None
        ),
        st.booleans(),
    ),
    "ocirepository": st.builds(
        lambda tag, semver, digest: ocirepository(tag, namespace="flux-system", semver=semver, digest=digest),
        st.sampled_from([*TAGS, None]),
        st.sampled_from([None, ">=2.0.0", "2.1.1"]),
        st.sampled_from([None, "sha256:" + "c" * 64]),
    ),
    "nginx": st.just(
        deployment("1.27", name="nginx", namespace="web", image="nginx:1.27", labels={"app": "nginx"})
    ),
    "configmap": st.just(configmap()),
}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Obj], str, str, Obj | None, Obj | None, bool]:
    """A cluster, and one change to it that the API server could send (CREATE only of absent objects)."""
    state = draw(st.fixed_dictionaries({}, optional=SLOTS))  # type: ignore[arg-type]
    slot = draw(st.sampled_from(sorted(SLOTS)))
    operation = draw(st.sampled_from(["UPDATE", "DELETE"])) if slot in state else "CREATE"
    new = None if operation == "DELETE" else draw(SLOTS[slot])
    return state, slot, operation, new, state.get(slot), draw(st.booleans())


def after(state: dict[str, Obj], slot: str, new: Obj | None) -> dict[str, Obj]:
    changed = dict(state)
    if new is None:
        changed.pop(slot, None)
    else:
        changed[slot] = new
    return changed


def conflict_keys(view: Inventory) -> set[tuple[Any, ...]]:
    return {c.key for c in audit(view, CATALOG)}


def judge(
    state: dict[str, Obj], operation: str, new: Obj | None, old: Obj | None, dry_run: bool, mode: Enforcement
) -> Verdict:
    return review_change(
        change(CATALOG, operation, new, old, dry_run=dry_run),
        inventory(CATALOG, state.values()),
        CATALOG,
        mode,
    )


def said(verdict: Verdict) -> tuple[Any, ...]:
    return (
        verdict.allowed,
        verdict.decision,
        denial_message(verdict) if not verdict.allowed else "",
        tuple(warnings(verdict)),
        tuple(sorted(audit_annotations(verdict).items())),
    )


@SETTINGS
@given(scenarios())
def test_denied_exactly_when_the_change_adds_a_conflict(
    scenario: tuple[dict[str, Obj], str, str, Obj | None, Obj | None, bool],
) -> None:
    state, slot, operation, new, old, dry_run = scenario
    before_keys = conflict_keys(inventory(CATALOG, state.values()))
    after_keys = conflict_keys(inventory(CATALOG, after(state, slot, new).values()))
    verdict = judge(state, operation, new, old, dry_run, Enforcement.DENY)

    added = after_keys - before_keys
    assert verdict.allowed is (not added), (operation, slot, added)
    assert {c.key for c in verdict.denied} == added
    assert {c.key for c in verdict.existing} <= before_keys & after_keys
    assert {c.key for c in verdict.resolved} <= before_keys - after_keys
    if after_keys <= before_keys:
        assert verdict.allowed  # removing conflicts, or changing nothing, is never denied
    assert all(len(w) < 120 for w in warnings(verdict))


@SETTINGS
@given(scenarios(), st.sampled_from([Enforcement.WARN, Enforcement.AUDIT]))
def test_warn_and_audit_never_deny_but_report_what_deny_would(
    scenario: tuple[dict[str, Obj], str, str, Obj | None, Obj | None, bool], mode: Enforcement
) -> None:
    state, _, operation, new, old, dry_run = scenario
    strict = judge(state, operation, new, old, dry_run, Enforcement.DENY)
    lenient = judge(state, operation, new, old, dry_run, mode)
    assert lenient.allowed
    reported = lenient.warned if mode is Enforcement.WARN else lenient.audited
    assert {c.key for c in reported} == {c.key for c in strict.denied}
    if mode is Enforcement.AUDIT and strict.denied:
        assert "conflicts" in audit_annotations(lenient)


@SETTINGS
@given(scenarios())
def test_same_input_same_verdict_and_dry_run_changes_nothing(
    scenario: tuple[dict[str, Obj], str, str, Obj | None, Obj | None, bool],
) -> None:
    state, _, operation, new, old, dry_run = scenario
    first = judge(state, operation, new, old, dry_run, Enforcement.DENY)
    again = judge(state, operation, new, old, dry_run, Enforcement.DENY)
    other = judge(state, operation, new, old, not dry_run, Enforcement.DENY)
    assert said(first) == said(again) == said(other)


@SETTINGS
@given(scenarios())
def test_an_inventory_kept_up_to_date_equals_one_built_afresh(
    scenario: tuple[dict[str, Obj], str, str, Obj | None, Obj | None, bool],
) -> None:
    """What the CLI and the watch do (upsert/remove one object) must agree with rebuilding."""
    state, slot, _, new, old, _ = scenario
    kept = inventory(CATALOG, state.values())
    subject = new if new is not None else old
    assert subject is not None
    summary = summarize(group_of(subject), subject["kind"], subject, CATALOG)
    if summary is not None:
        if new is None:
            kept.remove(summary_ref(summary))
        else:
            kept.upsert(summary)
    fresh = inventory(CATALOG, after(state, slot, new).values())
    assert conflict_keys(kept) == conflict_keys(fresh)


# -- no input makes the engine raise ----------------------------------------------------------

FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations", "spec", "versions",
    "served", "template", "containers", "image", "env", "value", "chart", "chartRef", "version", "values",
    "ref", "url", "tag", "semver", "digest", "items", "inferenceExtension", "enabled",
]  # fmt: skip
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)
JUDGED = [
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
    ("apps", "v1", "Deployment"),
    ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
    ("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
    ("", "v1", "ConfigMap"),
]


def with_junk(obj: Obj, path: list[str], value: Any) -> Obj:
    """``obj`` (re-serialised) with the field at ``path`` replaced by ``value``, creating what is missing."""
    copied: Obj = json.loads(json.dumps(obj))
    node: Any = copied
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return copied


REAL_OBJECTS = [
    crd(BTP, {"v1": True}),
    deployment("v2.1.1", env={"KGW_ENABLE_INFER_EXT": "true"}),
    helmrelease("v2.1.1", values=INFER_VALUES),
    helmrelease_chartref(),
    ocirepository("v2.1.1"),
]
REAL_PATHS = [
    ["metadata"], ["metadata", "name"], ["metadata", "labels"], ["metadata", "annotations"], ["spec"],
    ["spec", "versions"], ["spec", "template", "spec", "containers"], ["spec", "chart", "spec"],
    ["spec", "chart", "spec", "version"], ["spec", "chartRef"], ["spec", "values"],
    ["spec", "values", "inferenceExtension"], ["spec", "ref"], ["spec", "url"],
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(JUDGED),
    st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]),
    st.one_of(junk, st.builds(with_junk, st.sampled_from(REAL_OBJECTS), st.sampled_from(REAL_PATHS), junk)),
    st.one_of(st.none(), junk),
    st.sampled_from([[], REAL_OBJECTS]),
)
def test_malformed_objects_never_make_the_engine_raise(
    gvk: tuple[str, str, str], operation: str, obj: Any, old: Any, state: list[Obj]
) -> None:
    group, version, kind = gvk
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "operation": operation,
            "kind": {"group": group, "version": version, "kind": kind},
            "name": "kgateway",
            "namespace": "kgateway-system",
            "object": obj,
            "oldObject": old,
        },
    }
    try:
        request = parse_review(json.loads(json.dumps(review)))
    except ReviewError:
        return  # a 400 with a message: the HTTP tests check those
    verdict = review_change(
        request.to_change(CATALOG),
        inventory(CATALOG, state),
        CATALOG,
    )
    answer = json.loads(respond(request, verdict))
    assert answer["response"]["uid"] == "u"
    assert answer["response"]["allowed"] is verdict.allowed


def test_the_review_envelope_of_a_scenario_parses() -> None:
    """The property tests build changes directly; the same objects must also survive the wire format."""
    request = parse_review(admission_review("UPDATE", deployment("v2.1.1"), deployment("v2.0.4")))
    assert (request.group, request.kind, request.namespace, request.name) == (
        "apps",
        "Deployment",
        "kgateway-system",
        "kgateway",
    )
