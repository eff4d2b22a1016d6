"""End to end: how much crdguard adds to ``kubectl apply --server-side`` on a real kube-apiserver.

The control plane is tests/e2e/cluster.py's (etcd + kube-apiserver built from
the Kubernetes Go modules by hack/kube-tools.sh). crdguard serves the scenario
state on 127.0.0.1 and is registered with a ValidatingWebhookConfiguration
built here, in two forms:

* ``matchConditions``: as the chart registers it, only the CRDs the catalog
  reads reach crdguard (one of the bundle's twelve CRDs);
* ``every-crd``: no matchConditions, every CRD write is reviewed.

Each round applies the Gateway API v1.4.0 experimental bundle (allowed in the
scenario: it still serves BackendTLSPolicy v1alpha3) once per mode, in rotating
order, timing the kubectl process, then deletes the bundle again. The ratio is the
median over rounds of each round's with/without ratio (paired, so drift cancels). Before each
timed apply a server-side dry-run of a CRD that crdguard denies proves the
registration is (or is no longer) in force.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from bench.harness import REPO_ROOT, Cores, Server, crdguard_server, free_port

WEBHOOK_NAME = "crdguard-bench"
MODES = ("without", "matchConditions", "every-crd")


def _cluster_module() -> ModuleType:
    path = REPO_ROOT / "tests" / "e2e" / "cluster.py"
    spec = importlib.util.spec_from_file_location("crdguard_bench_cluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kube_bin_dir() -> Path | None:
    """The cached control-plane binaries (hack/kube-tools.sh env), or None when not built."""
    override = os.environ.get("CRDGUARD_KUBE_BIN_DIR")
    if override:
        path = Path(override)
    else:
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "kube-tools.sh"), "env"],
            capture_output=True,
            text=True,
            check=True,
        )
        exports = dict(
            line.removeprefix("export ").partition("=")[::2] for line in result.stdout.splitlines()
        )
        path = Path(shlex.split(exports["CRDGUARD_KUBE_BIN_DIR"])[0])
    ok = all(os.access(path / b, os.X_OK) for b in ("etcd", "kube-apiserver", "kubectl"))
    return path if ok else None


def webhook_configuration(url: str, ca_pem: bytes, crd_names: list[str] | None) -> dict[str, Any]:
    webhook: dict[str, Any] = {
        "name": "crds.crdguard.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "matchPolicy": "Equivalent",
        "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
        "rules": [
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "apiVersions": ["*"],
                "resources": ["customresourcedefinitions"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "scope": "Cluster",
            }
        ],
    }
    if crd_names is not None:
        webhook["matchConditions"] = [
            {"name": "crd-read-by-catalog", "expression": f"request.name in {json.dumps(sorted(crd_names))}"}
        ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_NAME},
        "webhooks": [webhook],
    }


def _reviews_answered(server: Server) -> float:
    """The crdguard_admission_reviews counter summed over labels, from /metrics."""
    body = server.metrics_get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("crdguard_admission_reviews_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(
    upstream: Path,
    scenario_dir: Path,
    cert_dir: Path,
    work: Path,
    catalog_crds: list[str],
    rounds: int = 5,
    log: Any = print,
) -> dict[str, Any]:
    bins = kube_bin_dir()
    if bins is None:
        return {"skipped": "control-plane binaries not built (bash hack/kube-tools.sh k8s)"}
    cluster = _cluster_module()
    bundle = upstream / "gateway-api" / "v1.4.0" / "experimental-install.yaml"
    probe_source = upstream / "gateway-api" / "v1.4.0" / "standard-install.yaml"
    probe = next(
        d
        for d in yaml.safe_load_all(probe_source.read_text())
        if d and d["metadata"]["name"] == "backendtlspolicies.gateway.networking.k8s.io"
    )
    bundle_crds = {
        f"customresourcedefinition.apiextensions.k8s.io/{d['metadata']['name']}"
        for d in yaml.safe_load_all(bundle.read_text())
        if d and d.get("kind") == "CustomResourceDefinition"
    }
    probe_path = work / "probe-backendtlspolicy-v1.4.0-standard.json"
    probe_path.write_text(json.dumps(probe))
    ca_pem = (cert_dir / "ca.crt").read_bytes()
    server = crdguard_server(free_port(), cert_dir, work, Cores(None, None), cluster=scenario_dir)
    configs = {}
    for mode, names in (("matchConditions", catalog_crds), ("every-crd", None)):
        path = work / f"vwc-{mode}.json"
        path.write_text(json.dumps(webhook_configuration(server.url, ca_pem, names)))
        configs[mode] = path

    times: dict[str, list[float]] = {m: [] for m in MODES}
    reviews: dict[str, list[float]] = {m: [] for m in MODES}
    with cluster.ControlPlane(bins) as plane:
        server.start()
        try:

            def denied() -> bool:
                result = plane.kubectl("create", "--dry-run=server", "-f", str(probe_path), check=False)
                if result.returncode == 0:
                    return False
                if "crdguard" in result.stderr:
                    return True
                raise RuntimeError(f"probe failed unexpectedly: {result.stderr.strip()[-500:]}")

            def set_mode(mode: str) -> None:
                if mode == "without":
                    plane.kubectl(
                        "delete", "validatingwebhookconfiguration", WEBHOOK_NAME, "--ignore-not-found"
                    )
                else:
                    plane.kubectl("apply", "-f", str(configs[mode]))
                want = mode != "without"
                deadline = time.monotonic() + 60
                while denied() != want:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"webhook registration did not settle for mode {mode}")
                    time.sleep(0.2)

            def timed_apply() -> float:
                started = time.perf_counter()
                plane.kubectl(
                    "apply", "--server-side", "--field-manager=crdguard-bench", "-f", str(bundle), timeout=300
                )
                return time.perf_counter() - started

            def settle() -> None:
                # Deleting a CRD whose storage is still initializing leaves it Terminating for
                # minutes (the finalizer's list fails and backs off): wait until each lists.
                names = ",".join(sorted(n.rsplit("/", 1)[1] for n in bundle_crds))
                deadline = time.monotonic() + 60
                while plane.kubectl("get", names, "--all-namespaces", check=False).returncode != 0:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bundle's resources did not become listable within 60s")
                    time.sleep(0.2)

            def clean() -> None:
                settle()
                # `--wait=true` can hang on CRDs long after they are gone; poll for them instead.
                plane.kubectl("delete", "-f", str(bundle), "--ignore-not-found", "--wait=false", timeout=120)
                deadline = time.monotonic() + 120
                while set(plane.kubectl("get", "crd", "-o", "name").stdout.split()) & bundle_crds:
                    if time.monotonic() > deadline:
                        left = json.loads(plane.kubectl("get", "crd", "-o", "json").stdout)["items"]
                        state = [
                            (
                                c["metadata"]["name"],
                                c["metadata"].get("finalizers"),
                                c["status"].get("conditions"),
                            )
                            for c in left
                        ]
                        raise RuntimeError(f"the bundle's CRDs were not deleted within 120s: {state}")
                    time.sleep(0.2)

            set_mode("without")  # a first, untimed apply warms kubectl's discovery cache and etcd
            timed_apply()
            clean()
            for i in range(rounds):
                order = MODES[i % len(MODES) :] + MODES[: i % len(MODES)]
                for mode in order:
                    set_mode(mode)
                    before = _reviews_answered(server)
                    times[mode].append(timed_apply())
                    reviews[mode].append(_reviews_answered(server) - before)
                    clean()
                log(
                    f"  apply round {i + 1}/{rounds}: " + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in MODES)
                )
            set_mode("without")
        finally:
            server.stop()
    medians = {m: statistics.median(v) for m, v in times.items()}
    # Paired: each round's applies ran back to back, so their ratio cancels the machine's drift.
    paired = {
        m: statistics.median(t / w for t, w in zip(times[m], times["without"], strict=True))
        for m in MODES[1:]
    }
    return {
        "bundle": "gateway-api v1.4.0 experimental-install.yaml (server-side apply)",
        "rounds": rounds,
        "seconds": times,
        "median_seconds": medians,
        "reviews_per_apply": {m: statistics.median(v) for m, v in reviews.items()},
        "with_vs_without": paired["matchConditions"],
        "every_crd_vs_without": paired["every-crd"],
        "ratio_of_medians": {m: medians[m] / medians["without"] for m in MODES[1:]},
    }
