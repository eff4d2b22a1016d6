"""Wrong verdicts found by trying crdguard as a new user would (issue 8, item 5): each failed before."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import BCP, BTP, REPO_ROOT, Obj, admission_review, crd, deployment, inventory

from webhook.admission.app import ServiceConfig, judge, respond
from webhook.admission.review import parse_review
from webhook.rules.catalog import Catalog
from webhook.state.files import StaticState

V1ALPHA3_ONLY = crd(BTP, {"v1alpha3": True}, bundle_version="v1.3.0", channel="experimental")
V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0", channel="standard")
BCP_CRD = crd(BCP, {"v1alpha1": True})


def without_namespace(obj: Obj) -> Obj:
    moved = copy.deepcopy(obj)
    moved["metadata"].pop("namespace", None)
    return moved


def crdguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def write(path: Path, *objects: Obj) -> str:
    path.write_text(yaml.safe_dump_all(objects))
    return str(path)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("default", None, id="namespace default then no namespace is one object"),
        pytest.param(None, "default", id="no namespace then namespace default is one object"),
    ],
)
def test_check_places_an_object_without_namespace_in_default(
    tmp_path: Path, first: str | None, second: str | None
) -> None:
    # kgateway 2.0.4, then the same Deployment at 2.1.1, then v1.4.0 standard's BackendTLSPolicy: only
    # 2.1.1 runs, so it is allowed; a stale 2.0.4 entry under another key would deny it.
    def placed(obj: Obj, namespace: str | None) -> Obj:
        return copy.deepcopy(obj) if namespace else without_namespace(obj)

    cluster = write(tmp_path / "cluster.yaml", crd(BTP, {"v1": True, "v1alpha3": True}), BCP_CRD)
    old = placed(deployment("v2.0.4", namespace="default"), first)
    new = placed(deployment("v2.1.1", namespace="default"), second)
    incoming = write(tmp_path / "in.yaml", old, new, V1_ONLY)
    done = crdguard("check", "--output", "json", "--cluster", cluster, incoming)
    results = json.loads(done.stdout)
    assert [(r["operation"], r["namespace"], r["allowed"]) for r in results] == [
        ("CREATE", "default", True),
        ("UPDATE", "default", True),
        ("UPDATE", None, True),
    ]


def test_check_delete_finds_an_object_written_without_namespace(tmp_path: Path) -> None:
    controller = without_namespace(deployment("v2.1.1", namespace="default"))
    cluster = write(tmp_path / "cluster.yaml", V1_ONLY, BCP_CRD, controller)
    incoming = write(tmp_path / "in.yaml", deployment("v2.1.1", namespace="default"), BCP_CRD)
    done = crdguard("check", "--output", "json", "--delete", "--cluster", cluster, incoming)
    # Once kgateway is deleted, nothing needs the BackendConfigPolicy CRD.
    assert [r["allowed"] for r in json.loads(done.stdout)] == [True, True]


def test_check_in_audit_mode_still_says_what_it_found(tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1ALPHA3_ONLY, deployment("v2.0.4"))
    incoming = write(tmp_path / "in.yaml", V1_ONLY)
    done = crdguard("check", "--enforcement", "audit", "--cluster", cluster, incoming)
    assert done.returncode == 0
    assert "audit: crdguard: new conflict (audit): kgateway v2.0.4" in done.stdout


def test_delete_review_without_old_object_judges_the_object_the_cluster_holds(catalog: Catalog) -> None:
    state = StaticState(inventory(catalog, [V1_ONLY, BCP_CRD, deployment("v2.1.1")]), [])
    config = ServiceConfig(catalog=catalog, state=state)
    review = admission_review("DELETE", None, BCP_CRD)
    review["request"]["oldObject"] = None
    request = parse_review(review)
    verdict = judge(request, config)
    assert not verdict.allowed, "deleting the CRD kgateway 2.1.1 needs is a new conflict, not an existing one"
    assert verdict.existing == ()
    answer = json.loads(respond(request, verdict, config))
    assert (
        "First " in answer["response"]["status"]["message"]
        or "Fix" in answer["response"]["status"]["message"]
    )


def test_check_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1ALPHA3_ONLY, deployment("v2.0.4"))
    incoming = write(
        tmp_path / "in.yaml", *([V1_ONLY] * 1), *[deployment(f"v2.0.{i}", name=f"k{i}") for i in range(300)]
    )
    done = subprocess.run(
        f"{sys.executable} -m webhook.cli check --cluster {cluster} {incoming} | head -1",
        shell=True, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert done.stdout.startswith("DENIED")
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
