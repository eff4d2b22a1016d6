"""The ``crdguard`` command exactly as scripts call it: subprocesses, exit codes, stdout and stderr."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from helpers import (
    BCP,
    BTP,
    REPO_ROOT,
    Obj,
    admission_review,
    configmap,
    crd,
    deployment,
    gateway_api_bundle,
    kgateway_crds,
    named,
)

DEMO = REPO_ROOT / "examples" / "demo"
REPORTED = REPO_ROOT / "examples" / "catalogs" / "reported-kgateway-2.1.1-needs-v1alpha3.yaml"
JSON_KEYS = {
    "kind", "apiVersion", "name", "namespace", "operation", "allowed", "message", "warnings",
    "audited", "conflicts", "fixes", "file",
}  # fmt: skip

V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0", channel="standard")
BOTH = crd(BTP, {"v1": True, "v1alpha3": True}, bundle_version="v1.4.0", channel="experimental")
BCP_CRD = crd(BCP, {"v1alpha1": True})


def crdguard(*args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args],
        input=stdin.decode() if isinstance(stdin, bytes) else stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )


def write(path: Path, *objects: Obj | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(o if isinstance(o, str) else yaml.safe_dump(o) for o in objects))
    return str(path)


def check_json(*args: str, stdin: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    done = crdguard("check", "--output", "json", *args, stdin=stdin)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def summary(results: Sequence[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return [(r["name"], r["operation"], r["allowed"]) for r in results]


# -- check ------------------------------------------------------------------------------------


def test_the_demo_is_denied() -> None:
    done = crdguard("check", "--cluster", "examples/demo/cluster", "examples/demo/incoming")
    assert done.returncode == 1, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.split() == ["DENIED", "UPDATE", "CustomResourceDefinition", BTP]
    assert f"crdguard denied UPDATE of CustomResourceDefinition {BTP}" in done.stdout
    assert "kgateway v2.0.4 in Deployment kgateway-system/kgateway" in done.stdout
    assert """{range .spec.versions[*]}{.name}={.served}{" "}{end}""" in done.stdout
    assert done.stdout.rstrip().endswith("1 object(s) reviewed, 1 denied")


def test_json_output_has_exactly_the_documented_fields(tmp_path: Path) -> None:
    incoming = write(tmp_path / "in.yaml", V1_ONLY, configmap("settings", "apps"))
    code, results = check_json("--cluster", str(DEMO / "cluster"), incoming)
    assert code == 1
    assert [set(r) for r in results] == [JSON_KEYS, JSON_KEYS]
    denied, allowed = results
    assert denied == {
        "kind": "CustomResourceDefinition",
        "apiVersion": "apiextensions.k8s.io/v1",
        "name": BTP,
        "namespace": None,
        "operation": "UPDATE",
        "allowed": False,
        "message": denied["message"],
        "warnings": [],
        "file": incoming,
        "audited": [],
        "conflicts": [
            {
                "rule": "kgateway-2.0-reads-backendtlspolicy-v1alpha3",
                "component": "kgateway",
                "version": "v2.0.4",
                "source": {"kind": "Deployment", "namespace": "kgateway-system", "name": "kgateway"},
                "crd": BTP,
                "needs": "v1alpha3",
                "served": ["v1"],
            }
        ],
        "fixes": denied["fixes"],
    }
    assert denied["message"].startswith("crdguard denied UPDATE of CustomResourceDefinition")
    assert [f["retry"] for f in denied["fixes"]] == [True, False]
    assert all(set(s) >= {"component", "version", "commands"} for f in denied["fixes"] for s in f["steps"])
    assert allowed == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "name": "settings",
        "namespace": "apps",
        "operation": "CREATE",
        "allowed": True,
        "message": "",
        "warnings": [],
        "file": incoming,
        "audited": [],
        "conflicts": [],
        "fixes": [],
    }


def test_warnings_appear_in_json_and_text(tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1_ONLY, deployment("v2.0.4"))
    incoming = write(tmp_path / "in.yaml", V1_ONLY)
    code, results = check_json("--cluster", cluster, incoming)
    assert code == 0
    (warning,) = results[0]["warnings"]
    assert warning.startswith("crdguard: existing conflict: kgateway v2.0.4")
    text = crdguard("check", "--cluster", cluster, incoming)
    assert text.returncode == 0
    assert f"    warning: {warning}" in text.stdout.splitlines()


def test_a_denied_object_is_not_applied_to_the_state(tmp_path: Path) -> None:
    """Were the first denial applied, the second copy would be an existing conflict, and allowed."""
    incoming = write(tmp_path / "in.yaml", V1_ONLY, V1_ONLY, deployment("v2.1.1"))
    code, results = check_json("--cluster", str(DEMO / "cluster"), incoming)
    assert code == 1
    assert summary(results) == [
        (BTP, "UPDATE", False),
        (BTP, "UPDATE", False),
        ("kgateway", "UPDATE", False),  # still v1alpha3-only and no BackendConfigPolicy CRD
    ]


def test_allowed_objects_are_applied_and_seen_by_later_ones(tmp_path: Path) -> None:
    incoming = write(
        tmp_path / "in.yaml",
        BCP_CRD,  # kgateway-crds 2.1 first,
        BOTH,  # then Gateway API experimental (v1 and v1alpha3),
        deployment("v2.1.1"),  # then kgateway 2.1.1: allowed only because of the two above,
        V1_ONLY,  # then v1.4.0 standard: allowed only because kgateway now reads v1.
        configmap(),
        configmap(),  # the second copy finds the first: an UPDATE.
    )
    code, results = check_json("--cluster", str(DEMO / "cluster"), incoming)
    assert code == 0, results
    assert summary(results) == [
        (BCP, "CREATE", True),
        (BTP, "UPDATE", True),
        ("kgateway", "UPDATE", True),
        (BTP, "UPDATE", True),
        ("settings", "CREATE", True),
        ("settings", "UPDATE", True),
    ]


def test_delete_reviews_every_object_as_a_deletion(tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1_ONLY, BCP_CRD, deployment("v2.1.1"))
    only_crd = write(tmp_path / "crd.yaml", BCP_CRD)
    code, results = check_json("--cluster", cluster, "--delete", only_crd)
    assert code == 1
    assert summary(results) == [(BCP, "DELETE", False)]
    assert results[0]["message"].startswith(f"crdguard denied deletion of CustomResourceDefinition {BCP}")
    # Uninstalling kgateway first makes the CRD deletion safe: the later object sees the earlier one gone.
    both = write(tmp_path / "both.yaml", deployment("v2.1.1"), BCP_CRD)
    code, results = check_json("--cluster", cluster, "--delete", both)
    assert code == 0
    assert summary(results) == [("kgateway", "DELETE", True), (BCP, "DELETE", True)]


def test_a_list_is_expanded(tmp_path: Path) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": [configmap("a"), configmap("b"), V1_ONLY]}
    code, results = check_json("--cluster", str(DEMO / "cluster"), write(tmp_path / "list.yaml", listed))
    assert code == 1
    assert summary(results) == [("a", "CREATE", True), ("b", "CREATE", True), (BTP, "UPDATE", False)]


def test_directories_are_read_in_sorted_order_and_json_files_too(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    write(folder / "b.yaml", configmap("from-b"))
    (folder / "a.json").write_text(json.dumps(configmap("from-a")))
    write(folder / "nested" / "c.yml", configmap("from-c"))
    (folder / "README.md").write_text("not a manifest")
    code, results = check_json(str(folder))
    assert code == 0
    assert [r["name"] for r in results] == ["from-a", "from-b", "from-c"]


def test_stdin_is_read_for_a_dash() -> None:
    code, results = check_json("--cluster", str(DEMO / "cluster"), "-", stdin=yaml.safe_dump(V1_ONLY))
    assert code == 1
    assert summary(results) == [(BTP, "UPDATE", False)]


def test_a_directory_of_cluster_state_and_several_manifests(tmp_path: Path) -> None:
    first = write(tmp_path / "1.yaml", configmap("one"))
    second = write(tmp_path / "2.yaml", configmap("two"))
    code, results = check_json("--cluster", str(DEMO / "cluster"), first, second)
    assert code == 0 and [r["name"] for r in results] == ["one", "two"]


@pytest.mark.parametrize(
    ("files", "fragments"),
    [
        pytest.param(
            {"bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\nkey: [unclosed\n"},
            ["bad.yaml (document 2)", "invalid YAML"],
            id="invalid YAML in the second document names file and document",
        ),
        pytest.param(
            {"scalar.yaml": "just a string\n"},
            ["scalar.yaml (document 1)", "expected a Kubernetes object"],
            id="a document that is not an object is named",
        ),
        pytest.param(
            {"nameless.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"},
            ["nameless.yaml (document 1)", "ConfigMap has no metadata.name"],
            id="an object without a name is named",
        ),
        pytest.param(
            {"kindless.yaml": "apiVersion: v1\nmetadata: {name: x}\n"},
            ["kindless.yaml (document 1)", "apiVersion and kind are required"],
            id="an object without a kind is named",
        ),
        pytest.param(
            {"latin1.yaml": b"data: \xe9\n"},
            ["latin1.yaml", "not UTF-8"],
            id="a file that is not UTF-8 is named",
        ),
    ],
)
def test_unreadable_input_exits_2_naming_the_spot(
    tmp_path: Path, files: dict[str, str | bytes], fragments: list[str]
) -> None:
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths.append(str(path))
    done = crdguard("check", *paths)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["check", "absent.yaml"], id="a missing manifest exits 2"),
        pytest.param(
            ["check", "--cluster", "absent-dir", "examples/demo/incoming"],
            id="a missing cluster path exits 2",
        ),
        pytest.param(
            ["check", "--catalog", "absent.yaml", "examples/demo/incoming"], id="a missing catalog exits 2"
        ),
        pytest.param(["audit", "--cluster", "absent-dir"], id="audit of a missing path exits 2"),
    ],
)
def test_missing_files_exit_2(args: list[str]) -> None:
    done = crdguard(*args)
    assert done.returncode == 2
    assert "no such file or directory" in done.stderr
    assert "absent" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broken_catalog_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("apiVersion: crdguard.io/v1alpha1\nkind: CompatibilityCatalog\nrules:\n  - id: x\n")
    done = crdguard("check", "--catalog", str(catalog), "examples/demo/incoming")
    assert done.returncode == 2
    assert str(catalog) in done.stderr and "rules[0]" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no command exits 2"),
        pytest.param(["check"], id="check without a manifest exits 2"),
        pytest.param(["check", "--output", "xml", "x.yaml"], id="an unknown output format exits 2"),
        pytest.param(["serve"], id="serve without --cert-dir or --insecure exits 2"),
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    done = crdguard(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error" in done.stderr


def test_serve_on_an_occupied_metrics_port_exits_2_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = crdguard(
            "serve",
            "--insecure",
            "--cluster",
            "examples/demo/cluster",
            "--port",
            "0",
            "--metrics-port",
            str(port),
        )
    assert done.returncode == 2
    assert f"--metrics-port {port}: cannot listen" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_the_reported_rule_catalog_changes_the_verdict(upstream: Path, tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", *kgateway_crds(upstream, "v2.1.1"), deployment("v2.1.1"))
    incoming = write(tmp_path / "btp.yaml", named(gateway_api_bundle(upstream, "v1.4.0", "standard"), BTP))
    assert crdguard("check", "--cluster", cluster, incoming).returncode == 0
    done = crdguard("check", "--catalog", str(REPORTED), "--cluster", cluster, incoming)
    assert done.returncode == 1
    assert "reported-kgateway-2.1.1-reads-backendtlspolicy-v1alpha3" in done.stdout


def test_a_whole_upstream_bundle_through_the_cli(upstream: Path) -> None:
    bundle = upstream / "gateway-api" / "v1.4.0" / "standard-install.yaml"
    code, results = check_json("--cluster", str(DEMO / "cluster"), str(bundle))
    assert code == 1
    assert [r["name"] for r in results if not r["allowed"]] == [BTP]
    assert len(results) == len(gateway_api_bundle(upstream, "v1.4.0", "standard"))


# -- review -----------------------------------------------------------------------------------


def test_review_answers_an_admission_review_on_stdin() -> None:
    request = (DEMO / "review-backendtlspolicy-v1.json").read_text()
    done = crdguard("review", "--cluster", "examples/demo/cluster", stdin=request)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == json.loads(request)["request"]["uid"]
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 403


def test_review_of_an_allowed_request_in_v1beta1() -> None:
    review = admission_review("CREATE", configmap(), api_version="admission.k8s.io/v1beta1", uid="abc")
    done = crdguard("review", stdin=json.dumps(review))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "apiVersion": "admission.k8s.io/v1beta1",
        "kind": "AdmissionReview",
        "response": {"uid": "abc", "allowed": True},
    }


@pytest.mark.parametrize(
    ("stdin", "error"),
    [
        pytest.param("not json", "body is not valid JSON", id="review of text that is not JSON exits 2"),
        pytest.param("", "body is not valid JSON", id="review of empty stdin exits 2"),
        pytest.param(
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}),
            "request.uid is required",
            id="review without a uid exits 2",
        ),
    ],
)
def test_review_of_malformed_input_exits_2(stdin: str, error: str) -> None:
    done = crdguard("review", stdin=stdin)
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"stdin: {error}" in done.stderr
    assert "Traceback" not in done.stderr


# -- certs ------------------------------------------------------------------------------------


def test_certs_writes_a_ca_and_a_serving_pair_and_prints_the_ca_bundle(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    done = crdguard("certs", "--out", str(out), "--hosts", "localhost,127.0.0.1,crdguard.crdguard.svc")
    assert done.returncode == 0, done.stderr
    ca_pem = (out / "ca.crt").read_bytes()
    assert base64.b64decode(done.stdout.strip()) == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    serving = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "crdguard.crdguard.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (out / "tls.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (out / "tls.key").stat().st_mode & 0o077 == 0


def test_certs_without_hosts_exits_2(tmp_path: Path) -> None:
    done = crdguard("certs", "--out", str(tmp_path), "--hosts", " , ")
    assert done.returncode == 2
    assert "--hosts needs at least one" in done.stderr


# -- audit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "code", "last_line"),
    [
        pytest.param(
            [V1_ONLY, deployment("v2.0.4")], 1, "1 conflict(s) found", id="audit of a conflict exits 1"
        ),
        pytest.param(
            [BOTH, deployment("v2.0.4")], 0, "No conflicts found.", id="audit without conflicts exits 0"
        ),
    ],
)
def test_audit_reports_the_conflicts_present(
    tmp_path: Path, state: list[Obj], code: int, last_line: str
) -> None:
    cluster = write(tmp_path / "cluster.yaml", *state)
    done = crdguard("audit", "--cluster", cluster)
    assert done.returncode == code, done.stderr
    assert done.stdout.splitlines()[-1] == last_line
    if code:
        assert "[1] kgateway v2.0.4 in Deployment kgateway-system/kgateway" in done.stdout
        assert "Now, " in done.stdout


def test_audit_json(tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1_ONLY, deployment("v2.0.4"))
    done = crdguard("audit", "--output", "json", "--cluster", cluster)
    assert done.returncode == 1
    (conflict,) = json.loads(done.stdout)["conflicts"]
    assert conflict["rule"] == "kgateway-2.0-reads-backendtlspolicy-v1alpha3"
    assert conflict["source"] == {"kind": "Deployment", "namespace": "kgateway-system", "name": "kgateway"}
    assert (conflict["crd"], conflict["crdInstalled"], conflict["served"], conflict["needs"]) == (
        BTP,
        True,
        ["v1"],
        "v1alpha3",
    )
