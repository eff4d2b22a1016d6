"""``crdguard certs``: a CA and a serving certificate, for development and bootstrap."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import re
from pathlib import Path

from webhook.cli.common import EXIT_OK, UsageError, emit

# A DNS-1123 subdomain (what a Service's DNS name is made of); a leading "*." allows a wildcard.
DNS_1123 = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_DAYS = 3650  # the CA lives twice as long; past ten years a dev certificate is a forgotten one
FILES = ("ca.crt", "tls.crt", "tls.key")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser(
        "certs",
        help="write a CA and a serving certificate (for dev and bootstrap)",
        description="Write ca.crt, tls.crt and tls.key to DIR and print the CA bundle (base64), for "
        "caBundle or tls.caBundle.",
    )
    certs.add_argument("--out", required=True, metavar="DIR", help="directory to write the three files to")
    certs.add_argument(
        "--hosts",
        required=True,
        metavar="H1,H2",
        help="comma-separated DNS names (DNS-1123, e.g. crdguard.crdguard-system.svc) and IP addresses",
    )
    certs.add_argument(
        "--days", type=int, default=365, help=f"serving certificate validity, 1 to {MAX_DAYS} (default 365)"
    )
    certs.add_argument("--force", action="store_true", help="overwrite certificates already in DIR")
    certs.set_defaults(func=run)


def check_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not DNS_1123.match(host) or any(len(label) > 63 for label in host.split(".")):
        raise UsageError(
            f"--hosts: {host!r} is neither an IP address nor a DNS name "
            "(lower-case letters, digits, '-' and '.', labels of at most 63 characters)"
        )
    return host


def run(args: argparse.Namespace) -> int:
    from webhook.certs import make_certificates

    hosts = [check_host(h.strip()) for h in args.hosts.split(",") if h.strip()]
    if not hosts:
        raise UsageError("--hosts needs at least one DNS name or IP address")
    if not 1 <= args.days <= MAX_DAYS:
        raise UsageError(f"--days {args.days}: expected 1 to {MAX_DAYS}")
    out = Path(args.out)
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not args.force:
        raise UsageError(
            f"--out {args.out} already holds {', '.join(existing)}; pass --force to replace them "
            "(clients that trust the old CA will then reject the new certificate)"
        )
    bundle = make_certificates(hosts, days=args.days)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ca.crt").write_bytes(bundle.ca_crt)
        (out / "tls.crt").write_bytes(bundle.tls_crt)
        key = out / "tls.key"
        key.write_bytes(bundle.tls_key)
        key.chmod(0o600)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write certificates: {exc.strerror}") from None
    emit(base64.b64encode(bundle.ca_crt).decode() + "\n")
    return EXIT_OK
