"""``crdguard serve``: the admission webhook."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from types import FrameType
from typing import Any

from webhook.cli.common import EXIT_OK, UsageError, add_common, catalog_of
from webhook.rules.catalog import Catalog, Enforcement
from webhook.state.files import StaticState, inventory_from_files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the admission webhook")
    add_common(serve)
    serve.add_argument("--kubeconfig", help="follow a live cluster with list+watch")
    serve.add_argument("--in-cluster", action="store_true", help="follow the cluster this pod runs in")
    serve.add_argument("--cert-dir", help="directory with tls.crt and tls.key (reloaded when they change)")
    serve.add_argument("--insecure", action="store_true", help="plain HTTP, for local debugging only")
    serve.add_argument("--client-ca-file", help="require API server client certificates signed by this CA")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--max-body-bytes", type=int, default=int(3 * 1024 * 1024 * 1.1))
    serve.add_argument("--body-timeout", type=float, default=10.0, help="seconds to receive a body")
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
    serve.set_defaults(func=run)


def state_of(args: argparse.Namespace, catalog: Catalog) -> Any:
    if getattr(args, "kubeconfig", None) or getattr(args, "in_cluster", False):
        from webhook.state.watch import WatchedState

        return WatchedState.connect(catalog, kubeconfig=args.kubeconfig)
    return StaticState(inventory_from_files(args.cluster, catalog), list(args.cluster))


def registration_of(args: argparse.Namespace, state: Any, serving: Any) -> Any:
    """The WebhookRegistration for --register-webhook, ready once the state synced and the port is bound."""
    from webhook.state.registration import DesiredWebhooks, Peers, RegistrationError, WebhookRegistration

    if not (getattr(args, "kubeconfig", None) or getattr(args, "in_cluster", False)):
        raise UsageError("--register-webhook writes to the API server: give --kubeconfig or --in-cluster")
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


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from webhook.admission.app import ServiceConfig, create_app
    from webhook.admission.tls import ReloadingTLS

    if not args.insecure and not args.cert_dir:
        raise UsageError(
            "serve needs --cert-dir DIR (with tls.crt and tls.key), or --insecure for plain HTTP"
        )
    if args.insecure and args.client_ca_file:
        raise UsageError("--client-ca-file needs TLS; it cannot be combined with --insecure")
    catalog = catalog_of(args)
    state = state_of(args, catalog)
    serving = _Server()
    background = []
    if getattr(state, "kube", None) is not None:
        from webhook.state.conflicts import ConflictTracker

        state.tracker = ConflictTracker(state.kube, state, events=not args.no_conflict_events)
        background.append(state.tracker)
    if args.register_webhook:
        background.append(registration_of(args, state, serving))
    config = ServiceConfig(
        catalog=catalog,
        state=state,
        enforcement=Enforcement(args.enforcement),
        max_body_bytes=args.max_body_bytes,
        body_timeout_seconds=args.body_timeout,
        background=tuple(background),
    )
    tls = None
    if not args.insecure:
        try:
            tls = ReloadingTLS(args.cert_dir, args.client_ca_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--cert-dir {args.cert_dir}: cannot load tls.crt/tls.key: {exc}") from None
        tls.start()
    server_config = uvicorn.Config(
        create_app(config),
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
    logging.getLogger("crdguard").info("serving on %s://%s:%d", scheme, args.host, args.port)
    serving.serve_with(server_config, on_exit=[task.stop for task in background])
    if tls:
        tls.stop()
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

    def serve_with(self, config: Any, on_exit: list[Any]) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if not self.should_exit and sig in (signal.SIGTERM, signal.SIGINT):
                    for stop in on_exit:
                        stop()
                super().handle_exit(sig, frame)

        self.server = Server(config)
        self.server.run()
