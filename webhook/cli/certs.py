"""``crdguard certs``: a CA and a serving certificate, for development and bootstrap."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from webhook.cli.common import EXIT_OK, UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="write a CA and a serving certificate (for dev and bootstrap)")
    certs.add_argument("--out", required=True, metavar="DIR")
    certs.add_argument("--hosts", required=True, help="comma-separated DNS names and IP addresses")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
