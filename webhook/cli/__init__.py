"""The ``crdguard`` command: one module per subcommand, each wiring catalog, state and service."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from webhook import __version__
from webhook.cli import audit, certs, check, review, serve
from webhook.cli.common import EXIT_DENIED, EXIT_OK, EXIT_USAGE, UsageError, setup_logging
from webhook.manifests import ManifestError
from webhook.rules.catalog import CatalogError

__all__ = ["EXIT_DENIED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

COMMANDS = (check, review, serve, certs, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdguard", description="Stop CRD and controller version conflicts before they reach a cluster."
    )
    parser.add_argument("--version", action="version", version=f"crdguard {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("CRDGUARD_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except (UsageError, ManifestError, CatalogError) as exc:
        print(f"crdguard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
