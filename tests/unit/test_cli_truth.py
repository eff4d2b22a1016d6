"""The CLI tells the truth: exit codes for every bad input and environment, pipeline formats, pre-commit.

Each case runs ``crdguard`` as a subprocess with a controlled environment (no $KUBECONFIG, an
empty $HOME) so that the kubectl-like lookup of cluster access finds only what the case gives it.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from helpers import BTP, REPO_ROOT, Obj, configmap, crd, deployment, helmrelease

from webhook.cli import build_parser

DEMO = REPO_ROOT / "examples" / "demo"
SCHEMA = REPO_ROOT / "schema"
V1_ONLY = crd(BTP, {"v1": True, "v1alpha3": False}, bundle_version="v1.4.0", channel="standard")
CRDGUARD = Path(sys.executable).parent / "crdguard"  # the console script pip installed


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def run(*args: str, home: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRDGUARD_", "KUBE"))}
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, "HOME": str(home), **(env or {})},
        timeout=120,
    )


def write(path: Path, *objects: Obj | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(o if isinstance(o, str) else yaml.safe_dump(o) for o in objects))
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def kubeconfig(path: Path, server: str, token: str = "nobody") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    return write(path, config)


def assert_one_line_error(done: Any, code: int, *fragments: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0]


# -- bad input and environment ----------------------------------------------------------------


CASES = [
    pytest.param(
        [
            "serve",
            "--insecure",
            "--cluster",
            "examples/demo/cluster",
            "--policy-reports",
            "--leader-lease=a/b",
        ],
        {},
        2,
        ["--policy-reports writes to the API server"],
        id="policy reports over a fixed state exit 2",
    ),
    pytest.param(
        ["serve", "--insecure", "--kubeconfig", "{closed}", "--policy-reports"],
        {},
        2,
        ["--policy-reports needs --leader-lease NAMESPACE/NAME"],
        id="policy reports without a Lease exit 2 before connecting",
    ),
    pytest.param(
        ["serve", "--insecure", "--kubeconfig", "{closed}", "--policy-reports", "--leader-lease=nons"],
        {},
        2,
        ["--leader-lease NAMESPACE/NAME"],
        id="a Lease without a namespace exits 2",
    ),
    pytest.param(
        ["serve", "--insecure", "--kubeconfig", "{closed}", "--leader-lease=a/b"],
        {},
        2,
        ["--leader-lease elects the PolicyReport writer"],
        id="a Lease without policy reports exits 2",
    ),
    pytest.param(["audit"], {}, 2, ["no cluster to audit"], id="audit with no source at all exits 2"),
    pytest.param(["serve", "--insecure"], {}, 2, ["no cluster to follow"], id="serve with no source exits 2"),
    pytest.param(
        ["audit", "--kubeconfig", "/nope"],
        {},
        2,
        ["--kubeconfig /nope: no such file"],
        id="a missing kubeconfig exits 2",
    ),
    pytest.param(
        ["audit"], {"KUBECONFIG": "/nope"}, 2, ["$KUBECONFIG=/nope"], id="a KUBECONFIG naming no file exits 2"
    ),
    pytest.param(
        ["audit", "--kubeconfig", "{garbage}"],
        {},
        2,
        ["not a usable kubeconfig"],
        id="a garbage kubeconfig exits 2",
    ),
    pytest.param(
        ["audit", "--in-cluster"],
        {},
        2,
        ["not running in a Kubernetes pod"],
        id="in-cluster outside a pod exits 2",
    ),
    pytest.param(
        ["audit", "--kubeconfig", "{closed}"],
        {},
        3,
        ["https://127.0.0.1:", "unreachable (Connection refused)"],
        id="an API server on a closed port exits 3 naming it",
    ),
    pytest.param(
        ["check", "--kubeconfig", "{closed}", "examples/demo/incoming"],
        {},
        3,
        ["unreachable"],
        id="check against an unreachable live cluster exits 3",
    ),
    pytest.param(
        ["audit", "--context", "absent"],
        {"KUBECONFIG": "{closed}"},
        2,
        ["absent"],
        id="an unknown context exits 2",
    ),
    pytest.param(
        ["--log-level", "bogus", "audit", "--cluster", "examples/demo/cluster"],
        {},
        2,
        ["--log-level 'bogus'"],
        id="an unknown log level exits 2",
    ),
    pytest.param(
        ["audit", "--cluster", "examples/demo/cluster", "--kubeconfig", "{closed}"],
        {},
        2,
        ["cannot be combined"],
        id="a saved state and a live cluster together exit 2",
    ),
    pytest.param(
        ["check", "{empty}"],
        {},
        2,
        ["no Kubernetes objects", "nothing to check"],
        id="an empty manifest exits 2",
    ),
    pytest.param(["check", "-"], {}, 2, ["no Kubernetes objects in -"], id="empty stdin exits 2"),
    pytest.param(
        ["certs", "--out", "{out}", "--hosts", "localhost", "--days", "-5"],
        {},
        2,
        ["--days -5"],
        id="certs for a negative number of days exits 2",
    ),
    pytest.param(
        ["certs", "--out", "{out}", "--hosts", "localhost", "--days", "0"],
        {},
        2,
        ["--days 0"],
        id="certs that would be born expired exit 2",
    ),
    pytest.param(
        ["certs", "--out", "{out}", "--hosts", "foo bar"],
        {},
        2,
        ["'foo bar' is neither an IP address nor a DNS name"],
        id="a host name with a space exits 2",
    ),
    pytest.param(
        ["certs", "--out", "{out}", "--hosts", "Crdguard_svc"],
        {},
        2,
        ["'Crdguard_svc'"],
        id="a host name with upper case and an underscore exits 2",
    ),
    pytest.param(
        ["serve", "--insecure", "--cluster", "examples/demo/cluster", "--plan-budget", "0"],
        {},
        2,
        ["--plan-budget 0"],
        id="a planning budget of no time exits 2",
    ),
]


@pytest.mark.parametrize(("args", "env", "code", "fragments"), CASES)
def test_bad_input_and_environment(
    tmp_path: Path, home: Path, args: list[str], env: dict[str, str], code: int, fragments: list[str]
) -> None:
    garbage = tmp_path / "garbage.kubeconfig"
    garbage.write_text("clusters: [this is: not a kubeconfig\n")
    values = {
        "garbage": str(garbage),
        "closed": kubeconfig(tmp_path / "closed.kubeconfig", f"https://127.0.0.1:{closed_port()}"),
        "empty": write(tmp_path / "empty.yaml", "# nothing here\n"),
        "out": str(tmp_path / "certs"),
    }
    argv = [a.format(**values) if a.startswith("{") else a for a in args]
    done = run(*argv, home=home, env={k: v.format(**values) for k, v in env.items()}, stdin="")
    assert_one_line_error(done, code, *fragments)
    assert done.stdout == ""
    assert not (tmp_path / "certs").exists()


def test_certs_refuse_to_replace_a_ca_without_force(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "certs"
    assert run("certs", "--out", str(out), "--hosts", "localhost", home=home).returncode == 0
    ca = (out / "ca.crt").read_bytes()
    again = run("certs", "--out", str(out), "--hosts", "localhost", home=home)
    assert_one_line_error(again, 2, "already holds ca.crt, tls.crt, tls.key", "--force")
    assert (out / "ca.crt").read_bytes() == ca
    forced = run("certs", "--out", str(out), "--hosts", "localhost", "--force", home=home)
    assert forced.returncode == 0, forced.stderr
    assert (out / "ca.crt").read_bytes() != ca


def test_kubeconfig_from_home_is_used_like_kubectl(tmp_path: Path, home: Path) -> None:
    """No flag, no $KUBECONFIG: ~/.kube/config is the cluster (here an unreachable one, hence exit 3)."""
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig(home / ".kube" / "config", server)
    done = run("audit", home=home)
    assert_one_line_error(done, 3, server)


def test_serve_says_serving_only_after_the_bind(tmp_path: Path, home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run(
            "serve", "--insecure", "--cluster", "examples/demo/cluster", "--port", str(port), home=home
        )
    assert_one_line_error(done, 2, f"cannot listen on 127.0.0.1:{port}", "Address already in use")
    assert "serving on" not in done.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly(home: Path) -> None:
    """`crdguard check ... | head -1`: no BrokenPipeError on stderr, and the verdict's exit code."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRDGUARD_", "KUBE"))}
    # Far more than a pipe buffer (64 KiB), so the writer really finds the reader gone.
    manifests = " ".join(["examples/demo/incoming"] * 200)
    cli = f"{shlex.quote(sys.executable)} -m webhook.cli"
    script = f"set -o pipefail; {cli} check --cluster examples/demo/cluster {manifests} | head -c 1"
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**clean, "HOME": str(home)},
    )
    assert done.stdout == "D"
    assert done.stderr == ""
    assert done.returncode == 1


def test_every_flag_and_argument_has_help() -> None:
    parser = build_parser()
    missing = []
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert subparsers is not None
    for name, sub in [("crdguard", parser), *subparsers.items()]:
        for action in sub._actions:
            if action.dest not in ("help", "command") and not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")
        assert "exit codes:" in (sub.epilog or ""), name
    assert missing == []


def test_version_and_help_show_the_exit_codes(home: Path) -> None:
    version = run("--version", home=home)
    assert version.returncode == 0 and version.stdout.startswith("crdguard 0.")
    helped = run("audit", "--help", home=home)
    assert helped.returncode == 0
    assert "3  the cluster is unreachable or refused the credentials" in helped.stdout


# -- audit says what it could not check ---------------------------------------------------------


def test_audit_names_what_it_could_not_check(tmp_path: Path, home: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1_ONLY, helmrelease(">=2.0.0", name="ranged"))
    done = run("audit", "--cluster", cluster, home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "No conflicts found." not in done.stdout
    assert any(
        line.startswith("Not checked: kgateway >=2.0.0 (HelmRelease kgateway-system/ranged") for line in lines
    )
    assert lines[-1] == "Nothing checked: no component release with an exact version was found."


def test_audit_of_a_cluster_without_components_does_not_claim_a_pass(tmp_path: Path, home: Path) -> None:
    done = run("audit", "--cluster", write(tmp_path / "c.yaml", V1_ONLY, configmap()), home=home)
    assert done.returncode == 0
    assert (
        done.stdout.splitlines()[-1]
        == "Nothing checked: no component release with an exact version was found."
    )


# -- pipeline formats ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validators() -> dict[str, Any]:
    return {
        name: jsonschema_rs.validator_for(json.loads((SCHEMA / f"{name}.schema.json").read_text()))
        for name in ("check", "audit")
    }


def errors_of(validator: Any, instance: Any) -> list[str]:
    return [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(instance)]


def test_check_json_matches_its_schema(tmp_path: Path, home: Path, validators: dict[str, Any]) -> None:
    cluster = write(tmp_path / "cluster.yaml", V1_ONLY, deployment("v2.0.4"))
    incoming = write(tmp_path / "in.yaml", V1_ONLY, configmap(), deployment("v2.1.1"))
    done = run("check", "--output", "json", "--cluster", cluster, incoming, home=home)
    assert done.returncode == 1, done.stderr
    results = json.loads(done.stdout)
    assert [(r["allowed"], bool(r["warnings"])) for r in results] == [
        (True, True),
        (True, False),
        (False, False),
    ]
    assert {r["file"] for r in results} == {incoming}
    assert errors_of(validators["check"], results) == []
    broken = [dict(results[0], operation="PATCH")]
    assert errors_of(validators["check"], broken) != [], "the schema must reject what crdguard never writes"


def test_audit_json_matches_its_schema(tmp_path: Path, home: Path, validators: dict[str, Any]) -> None:
    cluster = write(
        tmp_path / "cluster.yaml",
        V1_ONLY,
        deployment("v2.0.4"),
        helmrelease("*", name="floating", namespace="apps"),
    )
    done = run("audit", "--output", "json", "--cluster", cluster, home=home)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert errors_of(validators["audit"], report) == []
    (conflict,) = report["conflicts"]
    assert (conflict["rule"], conflict["component"], conflict["version"]) == (
        "kgateway-2.0-reads-backendtlspolicy-v1alpha3",
        "kgateway",
        "v2.0.4",
    )
    assert conflict["source"] == {"kind": "Deployment", "namespace": "kgateway-system", "name": "kgateway"}
    assert (conflict["crd"], conflict["needs"], conflict["served"]) == (BTP, "v1alpha3", ["v1"])
    commands = [c for fix in conflict["fixes"] for step in fix["steps"] for c in step["commands"]]
    # The planner's way out: a bundle that serves v1alpha3 again, or kgateway moved to a line reading v1.
    assert any(
        "experimental-install.yaml" in c or ("helm upgrade kgateway " in c and "-n kgateway-system" in c)
        for c in commands
    ), commands
    assert [u["source"]["name"] for u in report["unchecked"]] == ["floating"]
    assert (report["read"]["releases"], report["checked"]) == (2, 1)


def test_junit_has_a_testcase_per_object_and_a_failure_per_denial(tmp_path: Path, home: Path) -> None:
    incoming = write(tmp_path / "in.yaml", configmap("a"), V1_ONLY, configmap("b"))
    done = run("check", "--output", "junit", "--cluster", "examples/demo/cluster", incoming, home=home)
    assert done.returncode == 1, done.stderr
    suites = ET.fromstring(done.stdout)
    cases = suites.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == [
        "CREATE ConfigMap default/a",
        f"UPDATE CustomResourceDefinition {BTP}",
        "CREATE ConfigMap default/b",
    ]
    assert [c.find("failure") is not None for c in cases] == [False, True, False]
    assert suites.get("failures") == "1" and suites.get("tests") == "3"
    failure = cases[1].find("failure")
    assert failure is not None and "kgateway v2.0.4" in (failure.text or "")


def test_junit_for_audit_fails_the_conflicting_release(tmp_path: Path, home: Path) -> None:
    cluster = write(tmp_path / "c.yaml", V1_ONLY, deployment("v2.0.4"))
    done = run("audit", "--output", "junit", "--cluster", cluster, home=home)
    assert done.returncode == 1
    (case,) = ET.fromstring(done.stdout).findall("./testsuite/testcase")
    assert case.get("name") == "kgateway v2.0.4 in Deployment kgateway-system/kgateway"
    failure = case.find("failure")
    assert failure is not None and "kgateway-2.0-reads-backendtlspolicy-v1alpha3" in (
        failure.get("message") or ""
    )


def test_github_annotations_point_at_the_file(tmp_path: Path, home: Path) -> None:
    cluster = write(tmp_path / "c.yaml", V1_ONLY, deployment("v2.0.4"))
    incoming = write(tmp_path / "in, odd:name.yaml", V1_ONLY, deployment("v2.1.1"))
    done = run("check", "--output", "github", "--cluster", cluster, incoming, home=home)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    escaped = incoming.replace(":", "%3A").replace(",", "%2C")
    assert lines[0].startswith(f"::warning file={escaped},title=crdguard%3A UPDATE CustomResourceDefinition")
    assert lines[1].startswith(
        f"::error file={escaped},title=crdguard denied UPDATE Deployment kgateway-system/kgateway::"
    )
    assert "%0A" in lines[1] and "\n" not in lines[1]
    assert lines[-1] == "2 object(s) reviewed, 1 denied"


# -- pre-commit -----------------------------------------------------------------------------------


def hook() -> dict[str, Any]:
    (entry,) = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    return dict(entry)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "repo"
    write(root / "deploy" / "gateway-api.yaml", V1_ONLY)
    write(root / "deploy" / "settings.yaml", configmap())
    (root / "README.md").write_text("not a manifest\n")
    state = [(DEMO / "cluster" / name).read_text() for name in sorted(os.listdir(DEMO / "cluster"))]
    write(root / "state" / "cluster.yaml", *state)
    yield root


def run_hook(root: Path, files: list[str], args: list[str]) -> Any:
    """What pre-commit does: filter the files by the hook's patterns, run entry + args + files in the repo."""
    import re

    spec = hook()
    chosen = [f for f in files if re.search(spec["files"], f) and not re.search(spec["exclude"], f)]
    argv = [str(CRDGUARD) if word == "crdguard" else word for word in shlex.split(spec["entry"])]
    return chosen, subprocess.run(
        [*argv, *args, *chosen], capture_output=True, text=True, cwd=root, timeout=120
    )


def test_the_pre_commit_hook_denies_a_breaking_manifest(repo: Path) -> None:
    spec = hook()
    assert (spec["id"], spec["language"], spec["pass_filenames"]) == ("crdguard-check", "python", True)
    files = ["README.md", "deploy/gateway-api.yaml", "deploy/settings.yaml"]
    chosen, done = run_hook(repo, files, ["--cluster", "state/cluster.yaml"])
    assert chosen == ["deploy/gateway-api.yaml", "deploy/settings.yaml"]
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0].startswith("DENIED  UPDATE CustomResourceDefinition")
    chosen, done = run_hook(repo, ["deploy/settings.yaml"], ["--cluster", "state/cluster.yaml"])
    assert done.returncode == 0, done.stderr
