"""The soak: review load against ``crdguard serve --kubeconfig`` following a real API server
while objects are created and deleted continuously, and the cluster's kgateway and CRDs change
under it phase after phase.

- Phases: every PHASE_SECONDS the cluster moves to the next of PHASES: kgateway's Deployment
  flips between v2.0.4 and v2.1.1, the BackendTLSPolicy CRD between real Gateway API bundles
  (v1.3.0 experimental, v1.4.0 standard), and the BackendConfigPolicy CRD (real kgateway-crds
  v2.1.1) comes and goes. Most payloads change their decision at each flip.
- Payloads: CRD updates, creations and deletions (real upstream CRDs), kgateway Deployments created
  and upgraded, and a ConfigMap (not judged).
- Reference: ``relkit.soak_reference``, the catalog's facts as a hand-written table; never the
  rules engine. The whole decision is compared: allowed, the denied rule ids, the warnings and
  the existing conflicts (the response does not carry resolved conflicts, so they cannot be).
- A review is checked against its phase when it started after crdguard's watch had passed the
  phase's last write and ended before the next phase began; the others (a few around each flip)
  must still be answered, uid echoed, without error.
- Churn: other apps' Deployments, ConfigMaps, other charts' HelmReleases and CRDs outside the
  catalog are created and deleted all the time (about 6 writes a second).
- RSS of the serve process is sampled every second: growth after warm-up must stay under 5%.
"""

from __future__ import annotations

import copy
import http.client
import itertools
import json
import random
import ssl
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.cluster import ControlPlane
from helpers import admission_review, configmap, deployment, gateway_api_bundle, kgateway_crds, named

from relkit import soak_reference as ref
from relkit.kube import apply, client_cert_files, namespace, own_control_plane, wait_until
from relkit.load import Case, Results, ReviewLoad
from relkit.report import Record
from relkit.serve import Serve, make_certs

PHASE_SECONDS = 20.0
RSS_GROWTH_LIMIT = 0.05
LOAD_THREADS = 3
SERVER_FIELDS = ("uid", "resourceVersion", "managedFields", "creationTimestamp", "generation", "selfLink")


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
    reference: dict[str, ref.Decision] = field(default_factory=dict)


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
    def flipped(self) -> list[int]:
        """For each flip, how many payloads' reference decisions changed."""
        return flips(self.phases)

    @property
    def errors(self) -> int:
        return len(self.results.failures) + len(self.mismatches)

    def summary(self) -> str:
        calls = len(self.results.calls)
        return (
            f"{calls} reviews in {self.seconds:.0f} s ({calls / self.seconds:.0f}/s, "
            f"p99 {self.results.latency_ms(0.99):.1f} ms) over {len(self.phases)} phases; "
            f"{len(self.results.failures)} failed; {self.checked} checked against the hand-written "
            "reference table, "
            f"{len(self.mismatches)} wrong (whole decisions; payloads changing decision per flip: "
            f"{self.flipped}); "
            f"{self.transition} sent around a flip (answered, not compared); "
            f"{sum(self.churn_ops.values())} churn writes ({sum(self.churn_failed.values())} refused); "
            f"RSS {self.rss_baseline / 2**20:.1f} MiB after warm-up → "
            f"{self.rss_final / 2**20:.1f} MiB at the "
            f"end ({self.rss_growth:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%})"
        )


@dataclass(frozen=True)
class ClusterPhase:
    kgateway: str
    btp: str  # Gateway API bundle of the BackendTLSPolicy CRD
    bcp: bool  # BackendConfigPolicy CRD installed


# Consecutive phases differ in the kgateway line and the BackendTLSPolicy bundle, so the soak
# flips most verdicts each time; the BackendConfigPolicy CRD follows kgateway-crds or not.
PHASES = (
    ClusterPhase("v2.0.4", "v1.3.0 experimental", False),
    ClusterPhase("v2.1.1", "v1.4.0 standard", True),
    ClusterPhase("v2.0.4", "v1.4.0 standard", True),
    ClusterPhase("v2.1.1", "v1.3.0 experimental", False),
)


def soak_payloads(upstream: Path) -> tuple[list[ref.Payload], dict[str, dict[str, Any]]]:
    """The payloads, and the CRD objects (by bundle name, and "bcp") the phases install."""
    bundles = {
        name: clean(named(gateway_api_bundle(upstream, *name.split(" ")), ref.BTP)) for name in ref.BTP_SERVED
    }
    bcp = clean(named(kgateway_crds(upstream, "v2.1.1"), ref.BCP))
    crds = {**bundles, "bcp": bcp}
    std, exp13, exp14 = (
        bundles["v1.4.0 standard"],
        bundles["v1.3.0 experimental"],
        bundles["v1.4.0 experimental"],
    )
    kgw_ns = ("kgateway-system", "kgateway")
    team = ("team-x", "kgateway")

    def btp(name: str, op: str, new: Any, old: Any, before: str | None, after: str | None) -> ref.Payload:
        return ref.Payload(name, admission_review(op, new, old), ref.BTP, before, after)

    def kgw(name: str, op: str, source: tuple[str, str], new: str, old: str | None) -> ref.Payload:
        review = admission_review(
            op,
            deployment(new, namespace=source[0], name=source[1]),
            deployment(old, namespace=source[0], name=source[1]) if old else None,
        )
        return ref.Payload(name, review, deployment=source, version_before=old, version_after=new)

    payloads = [
        btp("BackendTLSPolicy CRD v1.4.0 standard to v1.3.0 experimental", "UPDATE", exp13, std,
            "v1.4.0 standard", "v1.3.0 experimental"),
        btp("BackendTLSPolicy CRD v1.4.0 standard to v1.4.0 experimental", "UPDATE", exp14, std,
            "v1.4.0 standard", "v1.4.0 experimental"),
        btp("BackendTLSPolicy CRD v1.3.0 experimental to v1.4.0 standard", "UPDATE", std, exp13,
            "v1.3.0 experimental", "v1.4.0 standard"),
        btp("BackendTLSPolicy CRD v1.4.0 standard re-applied", "UPDATE", std, std,
            "v1.4.0 standard", "v1.4.0 standard"),
        btp("BackendTLSPolicy CRD created at v1.4.0 standard", "CREATE", std, None, None, "v1.4.0 standard"),
        btp("BackendTLSPolicy CRD v1.3.0 experimental deleted", "DELETE", None, exp13,
            "v1.3.0 experimental", None),
        ref.Payload("BackendConfigPolicy CRD created", admission_review("CREATE", bcp), ref.BCP, False, True),
        ref.Payload(
            "BackendConfigPolicy CRD deleted", admission_review("DELETE", None, bcp), ref.BCP, True, False
        ),
        kgw("kgateway v2.0.4 created in team-x", "CREATE", team, "v2.0.4", None),
        kgw("kgateway v2.1.1 created in team-x", "CREATE", team, "v2.1.1", None),
        kgw("kgateway upgraded from v2.0.4 to v2.1.1", "UPDATE", kgw_ns, "v2.1.1", "v2.0.4"),
        kgw("kgateway downgraded from v2.1.1 to v2.0.4", "UPDATE", kgw_ns, "v2.0.4", "v2.1.1"),
        kgw("kgateway v2.0.4 re-applied", "UPDATE", kgw_ns, "v2.0.4", "v2.0.4"),
        kgw("kgateway v2.1.1 re-applied", "UPDATE", kgw_ns, "v2.1.1", "v2.1.1"),
        ref.Payload("a ConfigMap (not judged)", admission_review("CREATE", configmap()), judged=False),
    ]  # fmt: skip
    return payloads, crds


def reference_of(phase: ClusterPhase, payloads: list[ref.Payload]) -> dict[str, ref.Decision]:
    cluster = ref.Cluster({("kgateway-system", "kgateway"): phase.kgateway}, phase.btp, phase.bcp)
    return {p.name: ref.expected(cluster, p) for p in payloads}


def flips(phases: list[Phase]) -> list[int]:
    """For each flip, how many payloads changed their reference decision."""
    return [
        sum(1 for name in a.reference if a.reference[name] != b.reference[name])
        for a, b in itertools.pairwise(phases)
    ]


def _set_phase(plane: ControlPlane, phase: ClusterPhase, crds: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Moves the cluster to ``phase``; returns the resourceVersion of its last write per watched type."""
    applied = plane.kubectl(
        "apply",
        "--filename=-",
        "--output=jsonpath={.metadata.resourceVersion}",
        input=json.dumps(clean(deployment(phase.kgateway))),
    )
    if not phase.bcp:
        plane.kubectl("delete", "crd", ref.BCP, "--ignore-not-found", "--wait=true", "--timeout=60s")
    # A CRD cannot drop a stored version: replace the BackendTLSPolicy CRD rather than update it.
    plane.kubectl("delete", "crd", ref.BTP, "--ignore-not-found", "--wait=true", "--timeout=60s")
    last = 0
    for obj in ([crds["bcp"]] if phase.bcp else []) + [crds[phase.btp]]:
        done = plane.kubectl(
            "create", "--filename=-", "--output=jsonpath={.metadata.resourceVersion}", input=json.dumps(obj),
            check=False,
        )  # fmt: skip
        if done.returncode != 0 and "AlreadyExists" in done.stderr:
            done = plane.kubectl(
                "get", "crd", obj["metadata"]["name"], "--output=jsonpath={.metadata.resourceVersion}"
            )
        last = int(done.stdout.strip())
    return {"deployments": int(applied.stdout.strip()), "customresourcedefinitions": last}


def run_soak(plane: ControlPlane, upstream: Path, seconds: float, workdir: Path) -> SoakResult:
    payloads, crds = soak_payloads(upstream)
    apply(plane, *(namespace(n) for n in ["kgateway-system", "team-x", *(f"churn-{i}" for i in range(3))]))
    # HelmReleases are part of the churn: their CRD (real, from Flux) is installed once.
    plane.kubectl("apply", "--server-side", "--filename", str(upstream / "flux" / "helmreleases.yaml"))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=120s", "crd/helmreleases.helm.toolkit.fluxcd.io"
    )

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
        cases = [Case.of(p.name, p.review, None) for p in payloads]
        random.Random(5).shuffle(cases)
        load = ReviewLoad(
            serve.connection,
            cases,
            threads=LOAD_THREADS,
            pause=0.002,
            limit=seconds + 600,
            decide=ref.observed,
        )
        phases: list[Phase] = []
        started = time.monotonic()
        sampler.start()
        churn.start()
        load.start()
        index = 0
        while True:
            cluster = PHASES[index % len(PHASES)]
            bcp = "present" if cluster.bcp else "absent"
            phase = Phase(
                f"{cluster.kgateway}, BackendTLSPolicy {cluster.btp}, BackendConfigPolicy {bcp}",
                time.monotonic(),
            )
            wanted = _set_phase(plane, cluster, crds)

            def seen(wanted: dict[str, int] = wanted) -> bool:
                watches = serve.state()["watches"]
                return all(int(watches[r]["resourceVersion"] or 0) >= rv for r, rv in wanted.items())

            wait_until(seen, 60, what=f"phase {index} seen")
            phase.synced = time.monotonic()
            phase.reference = reference_of(cluster, payloads)
            phases.append(phase)
            end_of_phase = phase.flip_started + PHASE_SECONDS
            if end_of_phase >= started + seconds:
                time.sleep(max(0.0, started + seconds - time.monotonic()))
                break
            time.sleep(max(0.0, end_of_phase - time.monotonic()))
            index += 1
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
            if ('"level":"error"' in line or '"level":"warning"' in line or "Traceback" in line)
            # The conflicts the phases plant are reported as warnings by continuous audit: expected.
            and '"logger":"crdguard.conflicts"' not in line
        ]

    checked = 0
    transition = 0
    mismatches = []
    for call in results.calls:
        at = max((i for i, p in enumerate(phases) if p.flip_started <= call.started), default=None)
        if at is None:
            transition += 1
            continue
        phase = phases[at]
        next_flip = phases[at + 1].flip_started if at + 1 < len(phases) else ended
        if call.started < phase.synced or call.ended >= next_flip:
            transition += 1
            continue
        checked += 1
        if not call.error and call.decision != phase.reference[call.case]:
            mismatches.append(
                f"{call.case} in phase {at} ({phase.version}): got {call.decision}; "
                f"reference {phase.reference[call.case]}"
            )

    warm = started + max(10.0, 0.2 * seconds)
    after_warm = [r for t, r in rss if t >= warm]
    warm_tail = [r for t, r in rss if warm - 5 <= t < warm] or after_warm[:5]
    final_tail = [r for t, r in rss if t >= ended - max(5.0, 0.1 * seconds)]
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
        classes={},
    )


def check_soak(upstream: Path, tmp_path: Path, seconds: float) -> None:
    with (
        Record(
            "soak",
            f"Soak, {seconds:.0f} s",
            f"{seconds:.0f} s of 15 payloads (CRD updates, creations and deletions from real upstream "
            "bundles, kgateway Deployments, a ConfigMap; 3 clients) against `crdguard serve "
            "--kubeconfig` following a real API server, while other apps' Deployments, ConfigMaps, "
            "HelmReleases and CRDs are created and deleted continuously and, every 20 s, kgateway "
            "flips between v2.0.4 and v2.1.1, the BackendTLSPolicy CRD between Gateway API v1.3.0 "
            "experimental and v1.4.0 standard, and the BackendConfigPolicy CRD comes and goes. "
            "Whole decisions (allowed, denied rules, warnings, existing conflicts) are compared with "
            "a hand-written table of the catalog's facts (tests/relkit/soak_reference.py), not with "
            "the rules engine; RSS is sampled each second.",
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
        )
        assert not result.results.failures, result.results.summary()
        assert not result.mismatches, result.mismatches[:10]
        assert result.checked > 0.8 * len(result.results.calls)
        # Each flip must change most judged payloads' decisions, or the soak re-checks one answer.
        assert all(n >= 5 for n in result.flipped), result.flipped
        assert all(w["errors"] == 0 for w in result.watch_state["watches"].values()), result.watch_state
        assert not result.error_lines, result.error_lines[:5]
        assert not result.churn_failed, result.churn_failed
        assert result.rss_growth < RSS_GROWTH_LIMIT, result.summary()
        rec.done(result.summary())
