"""The ``crdguard`` command: wires catalog, state and service together for each subcommand."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webhook import __version__
from webhook.admission.review import ReviewError, decode, parse_review
from webhook.catalogs import load_catalog
from webhook.manifests import ManifestError, load_objects
from webhook.rules.catalog import Catalog, CatalogError, Enforcement
from webhook.rules.engine import Change, audit, review_change
from webhook.rules.inventory import Inventory
from webhook.rules.messages import denial_message, describe_conflict, warnings
from webhook.rules.objects import CRD_KIND, summarize
from webhook.state.files import StaticState, add_objects, group_of, inventory_from_files

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2
NAMESPACED_KINDS = {"Deployment", "HelmRelease", "OCIRepository", "ConfigMap", "Secret", "Service"}


class UsageError(Exception):
    """Bad flags or unreadable input: exit 2 with the message, never a traceback."""


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith("{") and record.name == "crdguard.decision":
            return message
        entry: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name, "msg": message}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, separators=(",", ":"))


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _catalog(args: argparse.Namespace) -> Catalog:
    return load_catalog(args.catalog)


def _object_key(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    kind = str(obj["kind"])
    namespace = meta.get("namespace") or None
    if kind == CRD_KIND:
        namespace = None
    elif namespace is None and kind in NAMESPACED_KINDS:
        namespace = "default"  # as kubectl would place it
    return (group_of(obj), kind, namespace, str(meta["name"]))


def cmd_check(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    cluster = {_object_key(obj): obj for _, obj in load_objects(args.cluster)} if args.cluster else {}
    inventory = Inventory(catalog)
    add_objects(inventory, list(cluster.values()))
    manifests = list(load_objects(args.manifests))
    enforcement = Enforcement(args.enforcement)
    results = []
    for _, obj in manifests:
        key = _object_key(obj)
        group, kind, namespace, name = key
        old = cluster.get(key)
        operation = "DELETE" if args.delete else ("UPDATE" if old is not None else "CREATE")
        change = Change.from_objects(
            operation,
            group,
            kind,
            namespace,
            name,
            None if args.delete else obj,
            old if old is not None else (obj if args.delete else None),
            catalog,
        )
        verdict = review_change(change, inventory, catalog, enforcement)
        if verdict.allowed:
            if args.delete:
                cluster.pop(key, None)
                inventory.remove(change.ref)
            else:
                cluster[key] = obj
                summary = summarize(group, kind, obj, catalog)
                if summary is not None:
                    inventory.upsert(summary)
        results.append(
            {
                "kind": kind,
                "apiVersion": obj["apiVersion"],
                "name": name,
                "namespace": namespace,
                "operation": operation,
                "allowed": verdict.allowed,
                "message": "" if verdict.allowed else denial_message(verdict),
                "warnings": warnings(verdict),
            }
        )
    if args.output == "json":
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            where = f"{r['namespace']}/{r['name']}" if r["namespace"] else r["name"]
            print(f"{'allowed' if r['allowed'] else 'DENIED '} {r['operation']:<6} {r['kind']} {where}")
            for warning in r["warnings"]:
                print(f"    warning: {warning}")
            if not r["allowed"]:
                print("    " + r["message"].replace("\n", "\n    "))
        denied = sum(not r["allowed"] for r in results)
        print(f"{len(results)} object(s) reviewed, {denied} denied")
    return EXIT_DENIED if any(not r["allowed"] for r in results) else EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    from webhook.admission.app import ServiceConfig, judge, respond

    catalog = _catalog(args)
    state = StaticState(inventory_from_files(args.cluster, catalog), list(args.cluster))
    config = ServiceConfig(catalog=catalog, state=state, enforcement=Enforcement(args.enforcement))
    try:
        request = parse_review(decode(sys.stdin.buffer.read()))
    except ReviewError as exc:
        raise UsageError(f"stdin: {exc}") from None
    sys.stdout.write(respond(request, judge(request, config)).decode() + "\n")
    return EXIT_OK


def _state(args: argparse.Namespace, catalog: Catalog) -> Any:
    if getattr(args, "kubeconfig", None) or getattr(args, "in_cluster", False):
        from webhook.state.watch import WatchedState

        return WatchedState.connect(catalog, kubeconfig=args.kubeconfig)
    return StaticState(inventory_from_files(args.cluster, catalog), list(args.cluster))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from webhook.admission.app import ServiceConfig, create_app
    from webhook.admission.tls import ReloadingTLS

    if not args.insecure and not args.cert_dir:
        raise UsageError(
            "serve needs --cert-dir DIR (with tls.crt and tls.key), or --insecure for plain HTTP"
        )
    if args.insecure and args.client_ca_file:
        raise UsageError("--client-ca-file needs TLS; it cannot be combined with --insecure")
    catalog = _catalog(args)
    config = ServiceConfig(
        catalog=catalog,
        state=_state(args, catalog),
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


def cmd_certs(args: argparse.Namespace) -> int:
    from webhook.certs import make_certificates

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if not hosts:
        raise UsageError("--hosts needs at least one DNS name or IP address")
    bundle = make_certificates(hosts, days=args.days)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ca.crt").write_bytes(bundle.ca_crt)
        (out / "tls.crt").write_bytes(bundle.tls_crt)
        key = out / "tls.key"
        key.write_bytes(bundle.tls_key)
        key.chmod(0o600)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write certificates: {exc.strerror}") from None
    print(base64.b64encode(bundle.ca_crt).decode())
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    if args.kubeconfig or args.in_cluster:
        from webhook.state.watch import snapshot_inventory

        inventory = snapshot_inventory(catalog, kubeconfig=args.kubeconfig)
    else:
        inventory = inventory_from_files(args.cluster, catalog)
    conflicts = audit(inventory, catalog)
    if args.output == "json":
        print(
            json.dumps(
                [
                    {
                        "rule": c.rule.id,
                        "component": c.release.component,
                        "version": c.release.version_text,
                        "source": {
                            "kind": c.release.source.kind,
                            "namespace": c.release.source.namespace,
                            "name": c.release.source.name,
                        },
                        "crd": c.rule.crd,
                        "crdInstalled": c.crd is not None,
                        "served": sorted(c.crd.served) if c.crd else [],
                        "needs": c.rule.served_version,
                        "message": describe_conflict(c, i, after_change=False),
                    }
                    for i, c in enumerate(conflicts, 1)
                ],
                indent=2,
            )
        )
    else:
        counts = inventory.counts()
        print(
            f"Read {counts.get('CustomResourceDefinition', 0)} CRDs and "
            f"{counts.get('ComponentRelease', 0)} component release(s)."
        )
        for i, conflict in enumerate(conflicts, 1):
            print(describe_conflict(conflict, i, after_change=False))
        print(f"{len(conflicts)} conflict(s) found" if conflicts else "No conflicts found.")
    return EXIT_DENIED if conflicts else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdguard", description="Stop CRD and controller version conflicts before they reach a cluster."
    )
    parser.add_argument("--version", action="version", version=f"crdguard {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("CRDGUARD_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, cluster: bool = True) -> None:
        p.add_argument(
            "--catalog", action="append", default=[], metavar="FILE", help="extra catalog (repeatable)"
        )
        if cluster:
            p.add_argument(
                "--cluster",
                action="append",
                default=[],
                metavar="PATH",
                help="files or directories holding the cluster's current objects (repeatable)",
            )
        p.add_argument("--enforcement", choices=[e.value for e in Enforcement], default="deny")
        # Also accepted after the subcommand, so the image's "crdguard serve" entrypoint can take it.
        p.add_argument("--log-level", default=argparse.SUPPRESS, help="debug, info, warning, error")

    check = sub.add_parser("check", help="review manifests against a cluster state, as the webhook would")
    common(check)
    check.add_argument("--output", choices=["text", "json"], default="text")
    check.add_argument("--delete", action="store_true", help="review deleting the objects instead")
    check.add_argument("manifests", nargs="+", metavar="MANIFEST")
    check.set_defaults(func=cmd_check)

    review = sub.add_parser("review", help="answer one AdmissionReview read from stdin")
    common(review)
    review.set_defaults(func=cmd_review)

    serve = sub.add_parser("serve", help="run the admission webhook")
    common(serve)
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
    serve.set_defaults(func=cmd_serve)

    certs = sub.add_parser("certs", help="write a CA and a serving certificate (for dev and bootstrap)")
    certs.add_argument("--out", required=True, metavar="DIR")
    certs.add_argument("--hosts", required=True, help="comma-separated DNS names and IP addresses")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(func=cmd_certs)

    audit_cmd = sub.add_parser("audit", help="list the conflicts present in a cluster now (exit 1 if any)")
    common(audit_cmd)
    audit_cmd.add_argument("--kubeconfig")
    audit_cmd.add_argument("--in-cluster", action="store_true")
    audit_cmd.add_argument("--output", choices=["text", "json"], default="text")
    audit_cmd.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except (UsageError, ManifestError, CatalogError) as exc:
        print(f"crdguard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
