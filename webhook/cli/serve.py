"""``crdguard serve``: the admission webhook."""

from __future__ import annotations

import argparse
import logging
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
    serve.set_defaults(func=run)


def state_of(args: argparse.Namespace, catalog: Catalog) -> Any:
    if getattr(args, "kubeconfig", None) or getattr(args, "in_cluster", False):
        from webhook.state.watch import WatchedState

        return WatchedState.connect(catalog, kubeconfig=args.kubeconfig)
    return StaticState(inventory_from_files(args.cluster, catalog), list(args.cluster))


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
    config = ServiceConfig(
        catalog=catalog,
        state=state_of(args, catalog),
        enforcement=Enforcement(args.enforcement),
        max_body_bytes=args.max_body_bytes,
        body_timeout_seconds=args.body_timeout,
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
    uvicorn.Server(server_config).run()
    if tls:
        tls.stop()
    return EXIT_OK
