"""``crdguard serve``: the admission webhook."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import uuid
from types import FrameType
from typing import Any

from webhook.cli.common import EXIT_OK, UsageError, add_cluster_access, add_common, catalog_of, resolve_access
from webhook.rules.catalog import Catalog, Enforcement
from webhook.state.files import StaticState, inventory_from_files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the admission webhook",
        description="Run the admission webhook. It follows the cluster of --kubeconfig, else $KUBECONFIG, "
        "else ~/.kube/config, else the in-cluster service account (list+watch, read-only); --cluster "
        "serves a fixed state from files instead. With no source at all it refuses to start.",
    )
    add_common(serve)
    add_cluster_access(serve, "follow (list+watch)")
    serve.add_argument(
        "--cert-dir", metavar="DIR", help="directory with tls.crt and tls.key (reloaded when they change)"
    )
    serve.add_argument("--insecure", action="store_true", help="plain HTTP, for local debugging only")
    serve.add_argument(
        "--client-ca-file", metavar="FILE", help="require API server client certificates signed by this CA"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8443, help="port to listen on (default 8443)")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(3 * 1024 * 1024 * 1.1),
        help="largest request body accepted (default: the API server's 3 MiB limit + 10%%)",
    )
    serve.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics (and /state), plain HTTP"
    )
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics port (0.0.0.0 for Prometheus in the cluster; 127.0.0.1 for a sidecar)",
    )
    serve.add_argument(
        "--metrics-cert-dir",
        metavar="DIR",
        help="serve the metrics port over TLS with tls.crt and tls.key from this directory",
    )
    serve.add_argument(
        "--enable-state-endpoint",
        action="store_true",
        help="serve GET /state (the cluster inventory crdguard holds) on the metrics port",
    )
    serve.add_argument("--body-timeout", type=float, default=10.0, help="seconds to receive a body")
    serve.add_argument(
        "--plan-budget",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="longest time spent planning the fixes of one denial (default 2; keep it below the "
        "webhook's timeoutSeconds); past it the denial says to run crdguard plan",
    )
    serve.add_argument("--keep-alive", type=int, default=75, help="idle keep-alive timeout, seconds")
    serve.add_argument(
        "--graceful-shutdown", type=int, default=20, help="seconds to finish in-flight reviews"
    )
    serve.add_argument(
        "--register-webhook",
        metavar="FILE",
        help="ValidatingWebhookConfiguration whose webhooks crdguard writes into the existing object of "
        "that name once its cluster view has synced and it serves, and removes on shutdown (the chart "
        "mounts this file); needs --kubeconfig or --in-cluster",
    )
    serve.add_argument(
        "--peers-service",
        metavar="NAMESPACE/NAME",
        help="with --register-webhook: on shutdown, keep the webhooks registered while another ready "
        "endpoint of this Service (not --pod-ip) can answer",
    )
    serve.add_argument(
        "--pod-ip",
        default=os.environ.get("POD_IP", ""),
        help="this replica's address in --peers-service (default: $POD_IP)",
    )
    serve.add_argument(
        "--no-conflict-events",
        action="store_true",
        help="with a live cluster: export crdguard_conflicts but create no Kubernetes Event when a "
        "conflict appears",
    )
    serve.add_argument(
        "--policy-reports",
        action="store_true",
        help="with a live cluster: keep wgpolicyk8s.io/v1alpha2 PolicyReports (namespace of the conflicting "
        "object) and a ClusterPolicyReport (on the CRDs) equal to the current conflicts; only the replica "
        "holding --leader-lease writes them",
    )
    serve.add_argument(
        "--leader-lease",
        metavar="NAMESPACE/NAME",
        help="with --policy-reports: the coordination.k8s.io Lease that elects the one replica writing "
        "the reports (created if absent)",
    )
    serve.set_defaults(func=run)


NO_SOURCE = (
    "no cluster to follow: pass --kubeconfig FILE, set $KUBECONFIG, have ~/.kube/config, run in a pod, "
    "or serve a fixed state on purpose with --cluster PATH"
)


def state_of(args: argparse.Namespace, catalog: Catalog) -> Any:
    if args.cluster:
        if args.kubeconfig or args.in_cluster:
            raise UsageError("--cluster serves a fixed state; it cannot be combined with a live cluster")
        return StaticState(inventory_from_files(args.cluster, catalog), list(args.cluster))
    access = resolve_access(args, default=True)
    if access is None:
        raise UsageError(NO_SOURCE)
    from webhook.state.watch import WatchedState

    return WatchedState.connect(catalog, access.kubeconfig, access.context, access.in_cluster)


def listen(host: str, port: int) -> socket.socket:
    """The bound listening socket, so that a failed bind is a clear error before anything is logged."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"--host {host}: cannot listen: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def registration_of(args: argparse.Namespace, state: Any, serving: Any) -> Any:
    """The WebhookRegistration for --register-webhook, ready once the state synced and the port is bound."""
    from webhook.state.registration import DesiredWebhooks, Peers, RegistrationError, WebhookRegistration

    if not hasattr(state, "kube"):
        raise UsageError("--register-webhook writes to the API server: it needs a live cluster")
    try:
        desired = DesiredWebhooks.from_file(args.register_webhook)
    except RegistrationError as exc:
        raise UsageError(f"--register-webhook {exc}") from None
    peers = None
    if args.peers_service:
        namespace, _, service = args.peers_service.partition("/")
        if not namespace or not service:
            raise UsageError(f"--peers-service must be NAMESPACE/NAME, got {args.peers_service!r}")
        peers = Peers(namespace, service, args.pod_ip)
    return WebhookRegistration(
        state.kube, desired, ready=lambda: serving.started and state.readiness()[0], peers=peers
    )


def lease_of(args: argparse.Namespace) -> Any:
    """The LeaseRef of --leader-lease, checked before any connection is made."""
    from webhook.state.lease import LeaseRef

    if args.leader_lease and not args.policy_reports:
        raise UsageError("--leader-lease elects the PolicyReport writer: it needs --policy-reports")
    if not args.policy_reports:
        return None
    if args.cluster:
        raise UsageError("--policy-reports writes to the API server: it needs a live cluster, not --cluster")
    namespace, _, name = (args.leader_lease or "").partition("/")
    if not namespace or not name or "/" in name:
        raise UsageError(
            "--policy-reports needs --leader-lease NAMESPACE/NAME (the Lease that elects the writer)"
        )
    return LeaseRef(namespace, name)


def policy_reports_of(state: Any, lease_ref: Any) -> list[Any]:
    """The PolicyReportWriter and its Lease, writer first: it stops before the Lease is handed
    back, so no report is written by a replica that no longer leads."""
    from webhook.state.lease import LeaderLease
    from webhook.state.policyreports import PolicyReportWriter

    # Unique per process, as client-go does: a restarted pod must not renew its predecessor's Lease.
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    lease = LeaderLease(state.kube, lease_ref, identity)
    state.reporter = PolicyReportWriter(state.kube, state.tracker.conflicts, state.tracker.synced, lease)
    return [state.reporter, lease]


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from webhook.admission.app import ServiceConfig, create_app
    from webhook.admission.metrics_server import MetricsServer
    from webhook.admission.tls import ReloadingTLS

    if not args.insecure and not args.cert_dir:
        raise UsageError(
            "serve needs --cert-dir DIR (with tls.crt and tls.key), or --insecure for plain HTTP"
        )
    if args.insecure and args.client_ca_file:
        raise UsageError("--client-ca-file needs TLS; it cannot be combined with --insecure")
    lease_ref = lease_of(args)
    catalog = catalog_of(args)
    state = state_of(args, catalog)
    serving = _Server()
    background = []
    if getattr(state, "kube", None) is not None:
        from webhook.state.conflicts import ConflictTracker

        state.tracker = ConflictTracker(state.kube, state, events=not args.no_conflict_events)
        background.append(state.tracker)
    if lease_ref is not None:
        background.extend(policy_reports_of(state, lease_ref))
    if args.register_webhook:
        background.append(registration_of(args, state, serving))
    config = ServiceConfig(
        catalog=catalog,
        state=state,
        enforcement=Enforcement(args.enforcement),
        max_body_bytes=args.max_body_bytes,
        body_timeout_seconds=args.body_timeout,
        plan_budget_seconds=args.plan_budget,
        background=tuple(background),
    )
    if not args.plan_budget > 0:
        raise UsageError(f"--plan-budget {args.plan_budget}: expected a number of seconds above 0")
    if not 0 <= args.port < 65536:  # 0: any free port, as the tests use
        raise UsageError(f"--port {args.port}: expected 0 to 65535")
    sock = listen(args.host, args.port)
    tls = None
    if not args.insecure:
        try:
            tls = ReloadingTLS(args.cert_dir, args.client_ca_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--cert-dir {args.cert_dir}: cannot load tls.crt/tls.key: {exc}") from None
        tls.start()
    metrics_tls = None
    if args.metrics_cert_dir:
        try:
            metrics_tls = ReloadingTLS(args.metrics_cert_dir)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"--metrics-cert-dir {args.metrics_cert_dir}: cannot load tls.crt/tls.key: {exc}"
            ) from None
        metrics_tls.start()
    app = create_app(config)
    try:
        metrics_server = MetricsServer(
            app.state.metrics,
            args.metrics_host,
            args.metrics_port,
            state=config.state if args.enable_state_endpoint else None,
            tls=metrics_tls,
        )
    except OSError as exc:
        raise UsageError(
            f"--metrics-host {args.metrics_host} --metrics-port {args.metrics_port}: "
            f"cannot listen: {exc.strerror}"
        ) from None
    metrics_server.start()
    server_config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_keep_alive=args.keep_alive,
        timeout_graceful_shutdown=args.graceful_shutdown,
        ssl_context_factory=(lambda _config, _default: tls.context) if tls else None,
    )
    scheme = "https" if tls else "http"
    log = logging.getLogger("crdguard")
    log.info("serving on %s://%s:%d", scheme, args.host, args.port)
    log.info(
        "metrics on %s://%s:%d/metrics%s",
        "https" if metrics_tls else "http",
        args.metrics_host,
        metrics_server.port,
        " and /state" if args.enable_state_endpoint else "",
    )
    try:
        serving.serve_with(server_config, on_exit=[task.stop for task in background], sockets=[sock])
    finally:
        metrics_server.stop()
        for reloading in (tls, metrics_tls):
            if reloading:
                reloading.stop()
    return EXIT_OK


class _Server:
    """uvicorn's Server, started late (the registration needs to see ``started``), that runs
    ``on_exit`` as soon as a signal asks it to stop, while it still answers: webhooks are
    unregistered before the listener closes, not after the last review."""

    def __init__(self) -> None:
        self.server: Any = None

    @property
    def started(self) -> bool:
        return bool(self.server is not None and self.server.started)

    def serve_with(self, config: Any, on_exit: list[Any], sockets: list[socket.socket]) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if not self.should_exit and sig in (signal.SIGTERM, signal.SIGINT):
                    for stop in on_exit:
                        stop()
                super().handle_exit(sig, frame)

        self.server = Server(config)
        self.server.run(sockets=sockets)
