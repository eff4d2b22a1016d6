"""A few hundred requests through the benchmark's machinery, so `make bench` cannot rot.

Correctness only, never timings: the payloads build from the upstream manifests,
crdguard and the floor answer every one of them (uid echoed, HTTP 200), crdguard
denies exactly the scenario's conflicting upgrades, the Go load generator drives
both without an error, and OPA running bench/opa/crdguard.rego gives crdguard's
verdict on every payload.

The load generator and OPA are Go programs cached outside the repository by
bench/tools.sh. The OPA comparison is marked ``bench``: `make bench` builds OPA and
runs it; `make test` deselects it. A missing binary is built here when Go is present.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # bench/ is not part of the installed package


from bench import harness, payloads  # noqa: E402
from bench.catalog_serve import KGATEWAY_FILE, catalog_of  # noqa: E402
from bench.opa_data import opa_data  # noqa: E402
from webhook.catalogs import default_catalog_files  # noqa: E402
from webhook.rules.catalog import Catalog  # noqa: E402

# The scenario runs kgateway v2.0.4; these payloads would break it, or start a v2.1.1 without its CRDs.
EXPECTED_DENIED = {
    "update-backendtlspolicies-std140.json",
    "hr-kgateway-upgrade-v211.json",
    "deploy-kgateway-upgrade-v211.json",
    "deploy-kgateway-create-v211-team-c.json",
}
NO_PIN = harness.Cores(None, None)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a skip would hide that this never ran)", pytrace=False)
    pytest.skip(reason)


def go_tool(which: str) -> Path:
    """The cached binary; built here when missing and Go is present (always tried when CI=true)."""
    locate = harness.loadgen_binary if which == "loadgen" else harness.opa_binary
    found = locate()
    if found is not None:
        return found
    if shutil.which("go") is None:
        unavailable(f"Go is not installed, so the {which} binary cannot be built")
    harness.build_tool(which)
    found = locate()
    assert found is not None, f"bench/tools.sh {which} built nothing"
    return found


class Workspace:
    def __init__(self, root: Path, upstream: Path, kgateway_catalog: Catalog) -> None:
        source = payloads.Upstream.load(upstream)
        self.root = root
        self.cert_dir = root / "certs"
        harness.make_certs(self.cert_dir)
        self.payload_dir = root / "payloads"
        self.manifest = payloads.write_payloads(payloads.build_payloads(source), self.payload_dir)
        self.denials_dir = root / "payloads-denials"
        self.denials = payloads.write_payloads(
            payloads.build_denials(source), self.denials_dir, payloads.DENIAL_SHARES
        )
        self.cluster_dir = root / "cluster"
        payloads.write_scenario(source, self.cluster_dir)
        self.opa_data_dir = root / "opa-data"
        self.opa_data_dir.mkdir()
        data = opa_data(payloads.scenario_objects(source), kgateway_catalog)
        (self.opa_data_dir / "data.json").write_text(json.dumps(data))

    def loadgen(self, binary: Path) -> harness.LoadGen:
        return harness.LoadGen(binary, self.payload_dir, self.cert_dir / "ca.crt", NO_PIN)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, upstream: Path) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("bench"), upstream, catalog_of([KGATEWAY_FILE]))


@pytest.fixture(scope="module")
def servers(workspace: Workspace) -> Iterator[dict[str, harness.Server]]:
    w = workspace
    running = {
        "crdguard": harness.crdguard_server(
            harness.free_port(), w.cert_dir, w.root, NO_PIN, cluster=w.cluster_dir
        ),
        "crdguard-kgateway": harness.crdguard_server(
            harness.free_port(),
            w.cert_dir,
            w.root,
            NO_PIN,
            cluster=w.cluster_dir,
            catalog_files=[Path(KGATEWAY_FILE)],
            name="crdguard-kgateway",
        ),
        "floor": harness.floor_server(harness.free_port(), w.cert_dir, w.root, NO_PIN),
        "floor-json-loads": harness.floor_server(
            harness.free_port(), w.cert_dir, w.root, NO_PIN, decode="json-loads"
        ),
    }
    try:
        for server in running.values():
            server.start(timeout=60)
        yield running
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(scope="module")
def crdguard_verdicts(servers: dict[str, harness.Server], workspace: Workspace) -> dict[str, Any]:
    return harness.python_verdicts(servers["crdguard"], workspace.payload_dir)


def test_payloads_cover_every_class_with_real_sizes(workspace: Workspace) -> None:
    entries = workspace.manifest["payloads"]
    assert {e["class"] for e in entries} == set(payloads.CLASS_SHARES)
    assert len({e["uid"] for e in entries}) == len(entries), "every payload needs its own uid"
    largest = max(entries, key=lambda e: e["bytes"])
    assert largest["file"].startswith("update-httproutes") and largest["bytes"] > 300_000


@pytest.mark.parametrize(
    "name",
    ["crdguard", "crdguard-kgateway", "floor", "floor-json-loads"],
    ids=[
        "crdguard answers",
        "crdguard with only kgateway's catalog file answers",
        "the floor answers",
        "the json.loads reference answers",
    ],
)
def test_every_payload_is_answered(
    servers: dict[str, harness.Server], workspace: Workspace, name: str
) -> None:
    report = harness.python_verdicts(servers[name], workspace.payload_dir)
    assert report["errors"] == 0, [v for v in report["verdicts"] if v.get("error")][:3]
    assert report["requests"] == len(workspace.manifest["payloads"])


def test_crdguard_denies_exactly_the_conflicting_upgrades(crdguard_verdicts: dict[str, Any]) -> None:
    denied = {v["file"] for v in crdguard_verdicts["verdicts"] if v["allowed"] is False}
    assert denied == EXPECTED_DENIED


def test_every_denial_is_denied_and_every_twin_allowed(
    servers: dict[str, harness.Server], workspace: Workspace
) -> None:
    report = harness.python_verdicts(servers["crdguard"], workspace.denials_dir)
    assert report["errors"] == 0
    verdicts = {(v["class"], v["allowed"]) for v in report["verdicts"]}
    assert verdicts == {("denied", False), ("allowed-twin", True)}
    assert report["requests"] == len(workspace.denials["payloads"]) >= 10


def test_the_kgateway_only_crdguard_gives_the_same_verdicts_while_the_catalog_is_kgateway_alone(
    servers: dict[str, harness.Server], workspace: Workspace, crdguard_verdicts: dict[str, Any]
) -> None:
    only = harness.python_verdicts(servers["crdguard-kgateway"], workspace.payload_dir)
    assert only["errors"] == 0
    if [name for name, _ in default_catalog_files()] == ["default catalog kgateway.yaml"]:
        assert harness.compare_verdicts(crdguard_verdicts, only) == []
    else:  # more components: the kgateway-only server still denies the kgateway conflicts
        assert {v["file"] for v in only["verdicts"] if v["allowed"] is False} == EXPECTED_DENIED


def test_the_kgateway_only_catalog_is_kgateways_file_alone_inside_the_packaged_one(catalog: Catalog) -> None:
    only = catalog_of([KGATEWAY_FILE])
    assert set(only.components) == {"kgateway"}
    assert set(only.rules) < set(catalog.rules)


@pytest.mark.parametrize("name", ["crdguard", "crdguard-kgateway"], ids=["whole catalog", "kgateway only"])
def test_state_and_metrics_answer_on_the_metrics_port_over_plain_http(
    servers: dict[str, harness.Server], name: str
) -> None:
    state = json.loads(servers[name].metrics_get("/state"))
    assert state["objects"], state
    assert b"crdguard_" in servers[name].metrics_get("/metrics")


def test_loadgen_drives_both_servers_without_errors(
    servers: dict[str, harness.Server], workspace: Workspace, crdguard_verdicts: dict[str, Any]
) -> None:
    loadgen = workspace.loadgen(go_tool("loadgen"))
    verified = loadgen.verdicts(servers["crdguard"].url)
    assert verified["errors"] == 0
    assert harness.compare_verdicts(crdguard_verdicts, verified) == []
    for name, server in servers.items():
        report = loadgen.run(server.url, "closed", conns=4, requests=300, duration="60s", warmup="0s")
        assert (report["errors"], report["requests"]) == (0, 300), (name, report["error_samples"])
        fixed = loadgen.run(server.url, "open", rate=100, conns=8, duration="1s", warmup="0s")
        assert fixed["errors"] == 0 and fixed["dropped"] == 0, (name, fixed["error_samples"])


@pytest.mark.bench  # OPA takes minutes to build and is only the benchmark's comparison: `make bench`
def test_opa_gives_the_kgateway_only_crdguards_verdict_on_every_payload(
    servers: dict[str, harness.Server], workspace: Workspace
) -> None:
    reference = harness.python_verdicts(servers["crdguard-kgateway"], workspace.payload_dir)
    opa = harness.opa_server(
        go_tool("opa"),
        harness.free_port(),
        workspace.cert_dir,
        workspace.opa_data_dir,
        workspace.root,
        NO_PIN,
    )
    opa.start(timeout=60)
    try:
        verdicts = harness.python_verdicts(opa, workspace.payload_dir)
    finally:
        opa.stop()
    assert verdicts["errors"] == 0, [v for v in verdicts["verdicts"] if v.get("error")][:3]
    assert harness.compare_verdicts(reference, verdicts) == []
