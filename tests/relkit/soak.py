"""The soak: mixed review load against ``crdguard serve --kubeconfig`` following a real API server
while objects are created and deleted continuously.

- The cluster holds the benchmark's scenario (bench/payloads.py: the incident's cluster, built from
  the real upstream CRDs); the load sends the benchmark's payloads, in its class shares.
- Churn: other apps' Deployments, ConfigMaps, other charts' HelmReleases and CRDs outside the
  catalog are created and deleted all the time (about 6 writes a second).
- Phases: every PHASE_SECONDS kgateway (its Deployment and HelmRelease) flips between v2.0.4 and
  v2.1.1, which changes verdicts. Once crdguard's watch has passed the flip's resourceVersion, the reference
  verdict of every payload is computed offline: the rules engine on a snapshot of the cluster
  (``kubectl get -o json``), independent of crdguard's watch cache.
- A review is checked against the reference of its phase when it started after crdguard had
  synced the phase and ended before the next flip began; the others (a few around each flip)
  must still be answered, uid echoed, without error.
- RSS of the serve process is sampled every second: growth after warm-up must stay under 5%.
"""

from __future__ import annotations

import copy
import http.client
import importlib
import json
import random
import ssl
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.cluster import ControlPlane
from helpers import REPO_ROOT

from relkit.kube import apply, client_cert_files, namespace, own_control_plane, wait_until
from relkit.load import Case, Results, ReviewLoad
from relkit.report import Record
from relkit.serve import Serve, make_certs
from webhook.admission.review import parse_review
from webhook.catalogs import load_catalog
from webhook.rules.catalog import Enforcement
from webhook.rules.engine import review_change
from webhook.rules.inventory import Inventory
from webhook.state.files import add_objects

PHASE_SECONDS = 20.0
RSS_GROWTH_LIMIT = 0.05
LOAD_THREADS = 3
SERVER_FIELDS = ("uid", "resourceVersion", "managedFields", "creationTimestamp", "generation", "selfLink")


def bench_payloads() -> Any:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # bench/ is not part of the installed package
    return importlib.import_module("bench.payloads")


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as a client would apply it: no server-populated fields."""
    copied = copy.deepcopy(obj)
    copied.pop("status", None)
    for key in SERVER_FIELDS:
        copied.get("metadata", {}).pop(key, None)
    return copied


class Rest:
    """JSON over one keep-alive HTTPS connection to kube-apiserver, as admin."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        cert, key = client_cert_files(plane.kubeconfig, workdir / "churn-admin")
        self.context = ssl.create_default_context(cafile=str(plane.ca_cert_path))
        self.context.load_cert_chain(str(cert), str(key))
        self.port = plane.apiserver_port
        self.conn: http.client.HTTPSConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> int:
        for _ in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=30
                )
            try:
                self.conn.request(
                    method,
                    path,
                    body=json.dumps(body) if body is not None else None,
                    headers={"Content-Type": "application/json"},
                )
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return 0


def _churn_object(kind: str, i: int) -> tuple[str, str, dict[str, Any]]:
    """(collection path, item path, body) of the i-th churn object of ``kind``."""
    ns = f"churn-{i % 3}"
    name = f"churn-{i}"
    if kind == "deployment":
        labels = {"app": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": f"registry.example.com/churn/app:{i}"}]},
                },
            },
        }
        base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    elif kind == "configmap":
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"i": str(i)},
        }
        base = f"/api/v1/namespaces/{ns}/configmaps"
    elif kind == "helmrelease":
        body = {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "interval": "10m",
                "chart": {
                    "spec": {
                        "chart": "podinfo",
                        "version": f"6.{i % 10}.0",
                        "sourceRef": {"kind": "HelmRepository", "name": "podinfo"},
                    }
                },
                "values": {"replicaCount": i % 4},
            },
        }
        base = f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases"
    else:
        plural = f"widgets{i}"
        body = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.soak.example.com"},
            "spec": {
                "group": "soak.example.com",
                "names": {"plural": plural, "kind": f"Widget{i}"},
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    return base, f"{base}/{body['metadata']['name']}", body


class Churn(threading.Thread):
    """Creates an object and deletes the one created ``keep`` steps before, until stopped."""

    KINDS = ("deployment", "configmap", "helmrelease", "deployment", "configmap", "helmrelease", "crd")

    def __init__(self, rest: Rest, interval: float = 0.15, keep: int = 14) -> None:
        super().__init__(daemon=True)
        self.rest = rest
        self.interval = interval
        self.keep = keep
        self.stop_event = threading.Event()
        self.ops: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def run(self) -> None:
        i = 0
        while not self.stop_event.is_set():
            kind = self.KINDS[i % len(self.KINDS)]
            collection, _, body = _churn_object(kind, i)
            status = self.rest.call("POST", collection, body)
            self.ops[f"create {kind}"] += 1
            if status not in (200, 201):
                self.failed[f"create {kind}: {status}"] += 1
            if i >= self.keep:
                old = i - self.keep
                _, item, _ = _churn_object(self.KINDS[old % len(self.KINDS)], old)
                status = self.rest.call("DELETE", item)
                self.ops[f"delete {self.KINDS[old % len(self.KINDS)]}"] += 1
                if status not in (200, 202):
                    self.failed[f"delete: {status}"] += 1
            i += 1
            self.stop_event.wait(self.interval)


@dataclass
class Phase:
    version: str
    flip_started: float
    synced: float = 0.0
    reference: dict[str, bool] = field(default_factory=dict)


@dataclass
class SoakResult:
    seconds: float
    results: Results
    phases: list[Phase]
    checked: int
    mismatches: list[str]
    transition: int
    rss: list[tuple[float, int]]
    rss_baseline: int
    rss_final: int
    churn_ops: dict[str, int]
    churn_failed: dict[str, int]
    watch_state: dict[str, Any]
    error_lines: list[str]
    classes: dict[str, int]

    @property
    def rss_growth(self) -> float:
        return self.rss_final / self.rss_baseline - 1.0

    @property
    def flipped(self) -> list[str]:
        """Payloads whose reference verdict differs between the two kgateway versions."""
        if len(self.phases) < 2:
            return []
        first, second = self.phases[0].reference, self.phases[1].reference
        return sorted(name for name in first if first[name] != second[name])

    @property
    def errors(self) -> int:
        return len(self.results.failures) + len(self.mismatches)

    def summary(self) -> str:
        calls = len(self.results.calls)
        return (
            f"{calls} reviews in {self.seconds:.0f} s ({calls / self.seconds:.0f}/s, "
            f"p99 {self.results.latency_ms(0.99):.1f} ms) over {len(self.phases)} phases; "
            f"{len(self.results.failures)} failed; {self.checked} checked against the offline reference, "
            f"{len(self.mismatches)} wrong ({len(self.flipped)} payloads change verdict with each flip); "
            f"{self.transition} sent around a flip (answered, not compared); "
            f"{sum(self.churn_ops.values())} churn writes ({sum(self.churn_failed.values())} refused); "
            f"RSS {self.rss_baseline / 2**20:.1f} MiB after warm-up → "
            f"{self.rss_final / 2**20:.1f} MiB at the "
            f"end ({self.rss_growth:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%})"
        )


def reference(plane: ControlPlane, payloads: list[Any], catalog: Any) -> dict[str, bool]:
    """Each payload's verdict from the rules engine on a snapshot of the cluster (no watch involved)."""
    out = plane.kubectl(
        "get",
        "customresourcedefinitions,deployments,helmreleases,ocirepositories",
        "--all-namespaces",
        "--output=json",
    ).stdout
    inventory = Inventory(catalog)
    add_objects(inventory, json.loads(out)["items"])
    verdicts = {}
    for payload in payloads:
        request = parse_review(payload.review)
        change = request.to_change(catalog)
        verdicts[payload.name] = review_change(change, inventory, catalog, Enforcement.DENY).allowed
    return verdicts


def weighted_cases(
    payloads: list[Any], shares: dict[str, int], slots: int = 200, seed: int = 5
) -> list[Case]:
    by_class: dict[str, list[Any]] = {}
    for payload in payloads:
        by_class.setdefault(payload.cls, []).append(payload)
    cases = []
    for cls, members in by_class.items():
        count = max(len(members), round(slots * shares.get(cls, 1) / sum(shares.values())))
        cases += [
            Case.of(members[i % len(members)].name, members[i % len(members)].review, None)
            for i in range(count)
        ]
    random.Random(seed).shuffle(cases)
    return cases


def _kgateway(bench: Any, source: Any, version: str) -> dict[str, dict[str, Any]]:
    """kgateway at ``version``: its Deployment and the Flux HelmRelease that installed it, with the
    watched resource each belongs to."""
    release = bench.helmrelease(
        "kgateway", bench.KGATEWAY_NS, "kgateway", version, bench.kgateway_values(source, version), "kgateway"
    )
    return {
        "deployments": clean(bench._stored(bench.kgateway_deployment(version), manager="helm-controller")),
        "helmreleases": clean(bench._stored(release, manager="flux")),
    }


def run_soak(plane: ControlPlane, upstream: Path, seconds: float, workdir: Path) -> SoakResult:
    bench = bench_payloads()
    source = bench.Upstream.load(upstream)
    scenario = [clean(o) for o in bench.scenario_objects(source)]
    payloads = bench.build_payloads(source)
    catalog = load_catalog()

    crds = [o for o in scenario if o["kind"] == "CustomResourceDefinition"]
    namespaces = sorted(
        {o["metadata"]["namespace"] for o in scenario if o["metadata"].get("namespace")}
        | {f"churn-{i}" for i in range(3)}
    )
    apply(plane, *(namespace(n) for n in namespaces))
    plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=soak",
        "--filename=-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}),
    )
    plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=120s",
        *(f"crd/{c['metadata']['name']}" for c in crds),
    )
    apply(plane, *(o for o in scenario if o["kind"] != "CustomResourceDefinition"))

    certs = make_certs(workdir / "certs")
    rest = Rest(plane, workdir)
    with Serve("--kubeconfig", str(plane.kubeconfig), cert_dir=certs) as serve:
        rss: list[tuple[float, int]] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(1.0):
                rss.append((time.monotonic(), serve.rss()))

        sampler = threading.Thread(target=sample, daemon=True)
        churn = Churn(rest)
        load = ReviewLoad(
            serve.connection,
            weighted_cases(payloads, bench.CLASS_SHARES),
            threads=LOAD_THREADS,
            pause=0.002,
            limit=seconds + 600,
        )
        phases: list[Phase] = []
        started = time.monotonic()
        sampler.start()
        churn.start()
        load.start()
        version = "v2.0.4"
        while True:
            phase = Phase(version, time.monotonic())
            wanted = {}
            for resource, obj in _kgateway(bench, source, version).items():
                applied = plane.kubectl(
                    "apply",
                    "--filename=-",
                    "--output=jsonpath={.metadata.resourceVersion}",
                    input=json.dumps(obj),
                )
                wanted[resource] = int(applied.stdout.strip())

            def seen(wanted: dict[str, int] = wanted) -> bool:
                watches = serve.state()["watches"]
                return all(int(watches[r]["resourceVersion"] or 0) >= rv for r, rv in wanted.items())

            wait_until(seen, 30, what=f"the flip to {version} seen")
            phase.synced = time.monotonic()
            phase.reference = reference(plane, payloads, catalog)
            phases.append(phase)
            end_of_phase = phase.flip_started + PHASE_SECONDS
            if end_of_phase >= started + seconds:
                time.sleep(max(0.0, started + seconds - time.monotonic()))
                break
            time.sleep(max(0.0, end_of_phase - time.monotonic()))
            version = "v2.1.1" if version == "v2.0.4" else "v2.0.4"
        results = load.stop()
        ended = time.monotonic()
        churn.stop_event.set()
        churn.join(30)
        sampling.set()
        sampler.join(5)
        watch_state = serve.state()
        error_lines = [
            line
            for line in serve.log_lines()
            if '"level":"error"' in line or '"level":"warning"' in line or "Traceback" in line
        ]

    checked = 0
    transition = 0
    mismatches = []
    for call in results.calls:
        index = max((i for i, p in enumerate(phases) if p.flip_started <= call.started), default=None)
        if index is None:
            transition += 1
            continue
        phase = phases[index]
        next_flip = phases[index + 1].flip_started if index + 1 < len(phases) else ended
        if call.started < phase.synced or call.ended >= next_flip:
            transition += 1
            continue
        checked += 1
        if not call.error and call.allowed is not phase.reference[call.case]:
            mismatches.append(
                f"{call.case} in phase {index} ({phase.version}): got {call.allowed}, "
                f"reference {phase.reference[call.case]}"
            )

    warm = started + max(10.0, 0.2 * seconds)
    after_warm = [r for t, r in rss if t >= warm]
    warm_tail = [r for t, r in rss if warm - 5 <= t < warm] or after_warm[:5]
    final_tail = [r for t, r in rss if t >= ended - max(5.0, 0.1 * seconds)]
    classes = Counter(p.cls for p in payloads for c in load.cases if c.name == p.name)
    return SoakResult(
        seconds=ended - started,
        results=results,
        phases=phases,
        checked=checked,
        mismatches=mismatches,
        transition=transition,
        rss=rss,
        rss_baseline=int(statistics.median(warm_tail)),
        rss_final=int(statistics.median(final_tail)),
        churn_ops=dict(churn.ops),
        churn_failed=dict(churn.failed),
        watch_state=watch_state,
        error_lines=error_lines,
        classes=dict(classes),
    )


def check_soak(upstream: Path, tmp_path: Path, seconds: float) -> None:
    with (
        Record(
            "soak",
            f"Soak, {seconds:.0f} s",
            f"{seconds:.0f} s of the benchmark's payloads (its class shares, 3 clients) against "
            "`crdguard serve --kubeconfig` following a real API server that holds the benchmark's "
            "scenario, while other apps' Deployments, ConfigMaps, HelmReleases and CRDs are created and "
            "deleted continuously and kgateway (Deployment and HelmRelease) flips between v2.0.4 and "
            "v2.1.1 every 20 s. "
            "Verdicts are compared with the rules engine run offline on a snapshot of the cluster after "
            "each flip; RSS is sampled each second.",
        ) as rec,
        own_control_plane(["--shutdown-watch-termination-grace-period=2s"]) as plane,
    ):
        result = run_soak(plane, upstream, seconds, tmp_path)
        rec.note(
            reviews=len(result.results.calls),
            failed=len(result.results.failures),
            checked=result.checked,
            mismatches=len(result.mismatches),
            phases=len(result.phases),
            flipped=result.flipped,
            rss_mib=[round(result.rss_baseline / 2**20, 1), round(result.rss_final / 2**20, 1)],
            rss_growth=round(result.rss_growth, 4),
            churn=result.churn_ops,
            watch_errors={k: w["errors"] for k, w in result.watch_state["watches"].items()},
            classes=result.classes,
        )
        assert not result.results.failures, result.results.summary()
        assert not result.mismatches, result.mismatches[:10]
        assert result.checked > 0.8 * len(result.results.calls)
        assert len(result.phases) < 2 or result.flipped, "the flips must change some verdicts"
        assert all(w["errors"] == 0 for w in result.watch_state["watches"].values()), result.watch_state
        assert not result.error_lines, result.error_lines[:5]
        assert not result.churn_failed, result.churn_failed
        assert result.rss_growth < RSS_GROWTH_LIMIT, result.summary()
        rec.done(result.summary())
