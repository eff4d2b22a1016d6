"""Faults against a real control plane: the API server stopped, watches dropped or expired (410),
a replica killed mid-load, and every replica down (failurePolicy Fail vs Ignore).

Each test runs real ``crdguard serve --kubeconfig`` processes against a control plane of this
module's own (it is stopped, restarted and given other flags).
"""

from __future__ import annotations

import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import KGATEWAY_NS, deployment, gateway_api_bundle, named
from relkit.kube import (
    apply,
    client_cert_files,
    delete,
    namespace,
    own_control_plane,
    plain_kubeconfig,
    wait_until,
    webhook_configuration,
)
from relkit.load import ReviewLoad, refusal_error
from relkit.net import KubeProxy, TcpBalancer
from relkit.report import Record
from relkit.reviews import demo_cases, incident_review
from relkit.serve import Serve, free_port, make_certs

from .cluster import ControlPlane

BTP = "backendtlspolicies.gateway.networking.k8s.io"
OUTAGE_SECONDS = 30
RESYNC_BOUND = 10.0  # seconds from a change after the API server is back to crdguard judging by it
# Without it kube-apiserver waits for open watches (crdguard's) until it is killed 30 s later.
FAST_SHUTDOWN = "--shutdown-watch-termination-grace-period=2s"


@pytest.fixture(scope="module")
def plane(upstream: Path) -> Iterator[ControlPlane]:
    with own_control_plane([FAST_SHUTDOWN]) as cp:
        # Gateway API v1.3.0 experimental: BackendTLSPolicy served as v1alpha3 only, as in the incident.
        btp = named(gateway_api_bundle(upstream, "v1.3.0", "experimental"), BTP)
        apply(cp, btp, namespace(KGATEWAY_NS))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{BTP}")
        yield cp


@pytest.fixture()
def kgateway_v204(plane: ControlPlane) -> Iterator[None]:
    """kgateway v2.0.4 (reads BackendTLSPolicy v1alpha3) is the only controller installed."""
    apply(plane, deployment("v2.0.4"))
    yield
    for ns in ("team-b", "team-c"):
        delete(plane, "deployment", "kgateway", ns)
    delete(plane, "deployment", "probe", KGATEWAY_NS)
    delete(plane, "deployment", "conflicting", KGATEWAY_NS)
    apply(plane, deployment("v2.0.4"))


def incident_allowed(serve: Serve, uid: str = "probe") -> bool:
    """Would crdguard let the Gateway API v1.4.0 standard BackendTLSPolicy CRD in now? (A refusal
    that is not a denial, e.g. an internal error, fails the test rather than read as "no".)"""
    response = serve.review(incident_review(uid))
    if not response["allowed"]:
        assert not (refused := refusal_error(response)), refused
    return bool(response["allowed"])


def watch(serve: Serve, resource: str) -> dict[str, Any]:
    info: dict[str, Any] = serve.state()["watches"][resource]
    return info


def metric(samples: dict[str, float], name: str, resource: str) -> float | None:
    return samples.get(f'crdguard_watch_{name}{{resource="{resource}"}}')


def test_apiserver_outage(plane: ControlPlane, kgateway_v204: None) -> None:
    with Record(
        "faults",
        f"kube-apiserver stopped for {OUTAGE_SECONDS} s",
        f"`crdguard serve --kubeconfig` follows a real API server; reviews are sent throughout while the "
        f"API server is stopped for {OUTAGE_SECONDS} s and started again. Samples /readyz and the watch "
        "metrics every second; after the restart upgrades kgateway to v2.1.1 (which changes the "
        "verdict on the incident) and measures how long crdguard takes to judge by it.",
    ) as rec:
        with Serve("--kubeconfig", str(plane.kubeconfig)) as serve:
            assert incident_allowed(serve) is False
            lists_before = watch(serve, "deployments")["lists"]
            load = ReviewLoad(serve.connection, demo_cases(), threads=2, pause=0.02).start()
            time.sleep(2)
            plane.stop_apiserver()
            stopped = time.monotonic()
            samples = []
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                metrics = serve.metrics()
                ready_status, _ = serve.get("/readyz")
                samples.append(
                    (
                        ready_status,
                        metric(metrics, "connected", "deployments"),
                        metric(metrics, "connected", "customresourcedefinitions"),
                        metric(metrics, "seconds_since_last_sync", "deployments") or 0.0,
                    )
                )
                time.sleep(1)
            during = load.stop()
            state_during = serve.state()
            plane.start_apiserver()
            back = time.monotonic()
            apply(plane, deployment("v2.1.1"))
            changed = time.monotonic()
            wait_until(lambda: incident_allowed(serve), 60, what="the change after the restart judged")
            reflected = time.monotonic() - changed
            since_ready = time.monotonic() - back
            resynced = wait_until(
                lambda: (
                    watch(serve, "deployments")["connected"]
                    and watch(serve, "deployments")["lists"] > lists_before
                ),
                30,
                what="deployments relisted",
            )
            metrics = serve.metrics()
        not_ready = [s for s in samples if s[0] != 200]
        disconnected = [s for s in samples if s[1] == 0.0 and s[2] == 0.0]
        max_stale = max(s[3] for s in samples)
        assert not during.failures, during.summary()
        assert not not_ready, "readyz must stay 200 while the watch is down (documented decision)"
        assert disconnected, "crdguard_watch_connected must drop to 0 during the outage"
        assert max_stale >= OUTAGE_SECONDS - 5
        assert state_during["watches"]["deployments"]["errors"] > 0
        assert resynced
        assert metric(metrics, "connected", "deployments") == 1.0
        assert reflected < RESYNC_BOUND
        first_disconnected = samples.index(disconnected[0])
        rec.note(
            reviews=len(during.calls),
            p99_ms=round(during.latency_ms(0.99), 1),
            readyz_samples=len(samples),
            disconnected_after_s=first_disconnected,
            max_seconds_since_last_sync=round(max_stale, 1),
            restart_s=round(changed - back, 1),
            change_reflected_s=round(reflected, 2),
            judged_after_ready_s=round(since_ready, 2),
            errors=state_during["watches"]["deployments"]["errors"],
        )
        rec.done(
            f"{len(during.calls)} reviews during the outage, 0 failed, all judged from the last known state "
            f"(p99 {during.latency_ms(0.99):.1f} ms); /readyz 200 in all {len(samples)} samples; "
            f"crdguard_watch_connected 0 within {first_disconnected + 1} s, seconds_since_last_sync rose to "
            f"{max_stale:.0f}; kgateway v2.1.1 applied right after the restart: the verdict flipped to "
            f"allowed {reflected:.1f} s after the apply returned, {since_ready:.1f} s after the API server "
            f"was ready (bound {RESYNC_BOUND:.0f} s)"
        )


def _through_proxy(plane: ControlPlane, tmp_path: Path) -> tuple[KubeProxy, Path]:
    context = ssl.create_default_context(cafile=str(plane.ca_cert_path))
    context.load_cert_chain(*map(str, client_cert_files(plane.kubeconfig, tmp_path / "admin")))
    proxy = KubeProxy(plane.apiserver_port, context).start()
    assert isinstance(proxy, KubeProxy)
    return proxy, plain_kubeconfig(tmp_path / "proxy.kubeconfig", proxy.url)


def test_dropped_watch_relists_without_missing_objects(
    plane: ControlPlane, kgateway_v204: None, tmp_path: Path
) -> None:
    proxy, kubeconfig = _through_proxy(plane, tmp_path)
    with Record(
        "faults",
        "Dropped watch",
        "crdguard reaches the API server through a proxy that resets every open connection and refuses "
        "new ones for 5 s; meanwhile kgateway v2.0.4 is added in a second namespace and the first one is "
        "upgraded to v2.1.1. After the network is back, crdguard must hold exactly the new state.",
    ) as rec:
        try:
            apply(plane, deployment("v2.1.1"))
            with Serve("--kubeconfig", str(kubeconfig)) as serve:
                assert wait_until(lambda: incident_allowed(serve), 20)
                lists = watch(serve, "deployments")["lists"]
                proxy.refuse = True
                proxy.drop()
                apply(plane, namespace("team-b"), deployment("v2.0.4", namespace="team-b"))
                time.sleep(5)
                judged_while_cut = incident_allowed(serve)
                proxy.refuse = False
                cut = time.monotonic()
                wait_until(lambda: not incident_allowed(serve), 60, what="team-b's kgateway v2.0.4 seen")
                seen_after = time.monotonic() - cut
                info = watch(serve, "deployments")
                objects = serve.state()["objects"]
        finally:
            proxy.close()
        assert judged_while_cut is True  # the last known state, until the relist
        assert info["lists"] > lists
        assert objects.get("Deployment") == 2
        rec.note(relist_s=round(seen_after, 2), lists=[lists, info["lists"]], errors=info["errors"])
        rec.done(
            f"watch errors counted ({info['errors']}), deployments relisted ({lists} → {info['lists']} "
            "lists); the "
            f"object added while cut off was judged by {seen_after:.1f} s after the network returned; "
            f"{objects.get('Deployment')} Deployments held, as in the cluster"
        )


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("compaction", id="etcd compaction, watch cache off"),
        pytest.param("restart", id="apiserver restart and compaction, watch cache on"),
    ],
)
def test_410_gone_relists_without_missing_objects(
    plane: ControlPlane, kgateway_v204: None, tmp_path: Path, how: str
) -> None:
    proxy, kubeconfig = _through_proxy(plane, tmp_path)
    title = {
        "compaction": "410 Gone after etcd compaction",
        "restart": "410 Gone after an API server restart (watch cache on)",
    }[how]
    what = {
        "compaction": "API server with --watch-cache=false; kgateway v2.1.1 installed (the incident is "
        "allowed). The proxy between crdguard and the API server stalls the watch streams (events "
        "dropped); kgateway v2.0.4 is added in team-b; etcd is compacted; then the streams end cleanly, "
        "so crdguard watches again from its last resourceVersion, which is gone.",
        "restart": "Default watch cache; kgateway v2.1.1 installed and v2.0.4 in team-b (the incident is "
        "denied). The proxy stalls the watch streams; team-b's v2.0.4 is deleted and a v2.1.1 added in "
        "team-c; etcd is compacted and the API server restarts (fresh watch cache); then the streams "
        "end cleanly and crdguard watches again from a resourceVersion that is gone. (A restart alone "
        "gives no 410 here: the new server replays the missed events from etcd, which also misses nothing.)",
    }[how]
    with Record("faults", title, what) as rec:
        try:
            apply(plane, deployment("v2.1.1"))
            if how == "compaction":
                plane.stop_apiserver()
                plane.start_apiserver([FAST_SHUTDOWN, "--watch-cache=false"])
            else:
                apply(plane, namespace("team-b"), deployment("v2.0.4", namespace="team-b"))
            with Serve("--kubeconfig", str(kubeconfig)) as serve:
                wait_until(
                    lambda: serve.state()["objects"].get("Deployment") == (1 if how == "compaction" else 2),
                    30,
                )
                before = watch(serve, "deployments")
                proxy.pause()
                revision = 0
                if how == "compaction":
                    apply(plane, namespace("team-b"), deployment("v2.0.4", namespace="team-b"))
                    _bump(plane)
                    revision = plane.compact_etcd()
                else:
                    delete(plane, "deployment", "kgateway", "team-b")
                    apply(plane, namespace("team-c"), deployment("v2.1.1", namespace="team-c"))
                    # Without compaction the restarted server replays the missed events from etcd.
                    _bump(plane)
                    revision = plane.compact_etcd()
                    plane.stop_apiserver()
                    plane.start_apiserver()
                stale_verdict = incident_allowed(serve)
                dropped = proxy.dropped_events_bytes
                proxy.end_watches()
                ended = time.monotonic()
                try:
                    info = wait_until(
                        lambda: (
                            (w := watch(serve, "deployments"))["relistsAfterGone"]
                            > before["relistsAfterGone"]
                            and w
                        ),
                        60,
                        what="a relist after 410 Gone",
                    )
                except AssertionError as exc:
                    raise AssertionError(
                        f"{exc}\nbefore: {before}\nnow: {serve.state()}\nproxy: {proxy.history}"
                    ) from None
                wait_until(
                    lambda: incident_allowed(serve) is not stale_verdict, 30, what="the new state judged"
                )
                relisted = time.monotonic() - ended
                objects = serve.state()["objects"]
                names = _deployment_namespaces(plane)
        finally:
            if how == "compaction":
                plane.stop_apiserver()
                plane.start_apiserver([FAST_SHUTDOWN])
            proxy.close()
        # Judged from the state before the stall until the relist, then from the cluster's.
        assert stale_verdict is (how == "compaction")
        assert info["relistsAfterGone"] >= 1
        assert names == ({KGATEWAY_NS, "team-b"} if how == "compaction" else {KGATEWAY_NS, "team-c"})
        assert objects.get("Deployment") == len(names)
        rec.note(
            relists_after_gone=info["relistsAfterGone"],
            relist_s=round(relisted, 2),
            compacted_revision=revision,
            dropped_event_bytes=dropped,
        )
        change = "the v2.0.4 added" if how == "compaction" else "the v2.0.4 deleted"
        rec.done(
            f"relistsAfterGone {before['relistsAfterGone']} → {info['relistsAfterGone']} for deployments; "
            f"{dropped} bytes of events were never delivered"
            + f"; etcd compacted at revision {revision}"
            + f"; {relisted:.1f} s after the streams ended, the verdict on the incident followed {change} "
            f"during the stall and /state held the cluster's {len(names)} Deployments: no object missed"
        )


def _bump(plane: ControlPlane) -> None:
    """One more write, so that compacting at the current revision removes the first missed event
    too (etcd keeps the revision it compacts at)."""
    plane.kubectl("create", "configmap", f"bump-{time.monotonic_ns()}", "--namespace=default")


def _deployment_namespaces(plane: ControlPlane) -> set[str]:
    out = plane.kubectl(
        "get", "deployments", "--all-namespaces", "--output=jsonpath={.items[*].metadata.namespace}"
    )
    return set(out.stdout.split())


def _apply_loop(
    plane: ControlPlane, stop: threading.Event, worker: int, log: list[tuple[float, float, bool, str]]
) -> None:
    """kubectl apply of kgateway v2.0.4 with a new annotation each time: an UPDATE crdguard allows."""
    i = 0
    while not stop.is_set():
        i += 1
        obj = deployment("v2.0.4")
        obj["metadata"]["annotations"] = {"crdguard.io/e2e-apply": f"{worker}-{i}"}
        started = time.monotonic()
        result = apply(plane, obj, check=False)
        log.append((started, time.monotonic(), result.returncode == 0, (result.stderr or "").strip()[-300:]))


def test_killed_replica_behind_one_address(plane: ControlPlane, kgateway_v204: None, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    ports = [free_port(), free_port()]
    replicas = [Serve("--kubeconfig", str(plane.kubeconfig), cert_dir=certs, port=p) for p in ports]
    balancer = TcpBalancer([("127.0.0.1", p) for p in ports])
    with Record(
        "faults",
        "A replica killed mid-load",
        "Two `crdguard serve` replicas behind one address (a round-robin TCP balancer that skips "
        "refusing endpoints, as a Service does once a pod is gone), registered as the webhook for "
        "Deployments with failurePolicy Fail. Two loops run `kubectl apply` on the kgateway Deployment "
        "for 24 s; one replica is SIGKILLed after 8 s. Then a conflicting Deployment must still be denied.",
    ) as rec:
        for replica in replicas:
            replica.start()
        balancer.start()
        try:
            url = f"https://127.0.0.1:{balancer.port}/validate"
            apply(plane, webhook_configuration("crdguard-e2e-faults", url, (certs / "ca.crt").read_bytes()))
            wait_until(
                lambda: "crdguard" in apply(plane, deployment("v2.1.1", name="probe"), check=False).stderr,
                30,
                what="the webhook registered",
            )
            log: list[tuple[float, float, bool, str]] = []
            stop = threading.Event()
            loops = [threading.Thread(target=_apply_loop, args=(plane, stop, w, log)) for w in range(2)]
            started = time.monotonic()
            for loop in loops:
                loop.start()
            time.sleep(8)
            replicas[0].signal(signal.SIGKILL)
            killed = time.monotonic()
            time.sleep(16)
            stop.set()
            for loop in loops:
                loop.join(60)
            denied = apply(plane, deployment("v2.1.1", name="conflicting"), check=False)
            served = dict(balancer.connections)
        finally:
            delete(plane, "validatingwebhookconfiguration", "crdguard-e2e-faults")
            balancer.close()
            for replica in replicas:
                replica.stop()
        failed = [entry for entry in log if not entry[2]]
        after = [entry for entry in log if entry[0] >= killed]
        assert len(after) > 0
        assert not failed, failed[:3]
        assert (
            denied.returncode != 0 and "denied the request" in denied.stderr and "crdguard" in denied.stderr
        )
        assert served.get(ports[1], 0) > 0 and served.get(ports[0], 0) > 0
        rec.note(
            applies=len(log),
            after_kill=len(after),
            failed=len(failed),
            connections=served,
            skipped_dead=balancer.skipped,
            seconds=round(time.monotonic() - started, 1),
        )
        rec.done(
            f"{len(log)} `kubectl apply` calls, 0 failed ({len(after)} after the SIGKILL; the balancer "
            "skipped "
            f"the dead endpoint {balancer.skipped} time(s)); a conflicting kgateway v2.1.1 was still denied "
            "by the surviving replica"
        )


def _timed_apply(plane: ControlPlane, obj: dict[str, Any]) -> tuple[bool, float, str]:
    started = time.monotonic()
    result = apply(plane, obj, check=False)
    return result.returncode == 0, time.monotonic() - started, (result.stderr or "").strip()


def test_failure_policy_when_every_replica_is_down(
    plane: ControlPlane, kgateway_v204: None, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    dead_port = free_port()  # nothing listens: what a Service without ready endpoints answers
    hole = TcpBalancer([])
    hole.blackhole = True  # accepts and never answers: hung pods, or packets dropped on the way
    hole.start()
    timeout_seconds = 3
    table: dict[str, dict[str, Any]] = {}
    with Record(
        "faults",
        "Every replica down: failurePolicy Fail vs Ignore",
        "With the webhook for Deployments pointing at an address that refuses connections, then at one "
        f"that accepts and never answers (timeoutSeconds {timeout_seconds}), runs `kubectl apply` on a "
        "Deployment under failurePolicy Fail and Ignore, and on a ConfigMap (not matched); records what "
        "the client sees and how long it waits.",
    ) as rec:
        try:
            for target, port in (("refused", dead_port), ("no answer", hole.port)):
                for policy in ("Fail", "Ignore"):
                    apply(
                        plane,
                        webhook_configuration(
                            "crdguard-e2e-policy",
                            f"https://127.0.0.1:{port}/validate",
                            (certs / "ca.crt").read_bytes(),
                            failure_policy=policy,
                            timeout_seconds=timeout_seconds,
                        ),
                    )
                    want = policy == "Ignore"
                    counter = iter(range(10_000))

                    def attempt(
                        policy: str = policy, counter: Iterator[int] = counter
                    ) -> tuple[bool, float, str]:
                        obj = deployment("v2.0.4")
                        obj["metadata"]["annotations"] = {"crdguard.io/attempt": f"{policy}-{next(counter)}"}
                        return _timed_apply(plane, obj)

                    wait_until(
                        lambda want=want, attempt=attempt: attempt()[0] is want,
                        30,
                        what=f"{policy} in effect",
                    )
                    runs = [attempt() for _ in range(3)]
                    configmap = plane.kubectl(
                        "create",
                        "configmap",
                        f"cm-{policy.lower()}-{port}",
                        "--namespace=default",
                        check=False,
                    )
                    table[f"{target}/{policy}"] = {
                        "succeeded": [r[0] for r in runs],
                        "seconds": [round(r[1], 2) for r in runs],
                        "message": next((r[2] for r in runs if r[2]), ""),
                        "configmap_ok": configmap.returncode == 0,
                    }
        finally:
            delete(plane, "validatingwebhookconfiguration", "crdguard-e2e-policy")
            hole.close()
        for key, row in table.items():
            assert all(row["succeeded"]) if key.endswith("Ignore") else not any(row["succeeded"]), (key, row)
            assert row["configmap_ok"], key
        assert "failed calling webhook" in table["refused/Fail"]["message"]
        rec.note(table=table)

        def cell(key: str) -> str:
            row = table[key]
            outcome = "succeeds" if all(row["succeeded"]) else "rejected"
            message = row["message"].split("failed calling webhook", 1)
            detail = f' ("failed calling webhook{message[1][:90]}…")' if len(message) == 2 else ""
            return f"{key}: {outcome} in {min(row['seconds']):.2f}-{max(row['seconds']):.2f} s{detail}"

        rec.done("; ".join(cell(k) for k in table) + ". ConfigMaps (not matched) were created in every case.")
