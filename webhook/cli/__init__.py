"""The ``crdguard`` command: one module per subcommand, each wiring catalog, state and service."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from webhook import __version__
from webhook.cli import audit, certs, check, plan, review, serve
from webhook.cli.common import (
    EXIT_CLUSTER,
    EXIT_CODES_EPILOG,
    EXIT_DENIED,
    EXIT_OK,
    EXIT_USAGE,
    LOG_LEVELS,
    UsageError,
    setup_logging,
)
from webhook.manifests import ManifestError
from webhook.rules.catalog import CatalogError
from webhook.state.errors import ClusterAccessError, ClusterConfigError

__all__ = ["EXIT_CLUSTER", "EXIT_DENIED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

COMMANDS = (check, plan, review, serve, certs, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdguard",
        description="Stop CRD and controller version conflicts before they reach a cluster.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crdguard {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("CRDGUARD_LOG_LEVEL", "info"),
        help=f"{', '.join(LOG_LEVELS)} (default: $CRDGUARD_LOG_LEVEL, else info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    for subparser in sub.choices.values():
        subparser.epilog = EXIT_CODES_EPILOG
        subparser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # `crdguard --help | head -1`
        return _quiet_stdout(EXIT_OK)
    try:
        setup_logging(args.log_level)
        return int(args.func(args))
    except (UsageError, ManifestError, CatalogError, ClusterConfigError) as exc:
        print(f"crdguard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ClusterAccessError as exc:
        print(f"crdguard {args.command}: error: cluster {exc}", file=sys.stderr)
        return EXIT_CLUSTER
    except BrokenPipeError:  # the reader went away; commands' own output goes through emit()
        return _quiet_stdout(EXIT_OK)
    except KeyboardInterrupt:
        return 130


def _quiet_stdout(code: int) -> int:
    # Python would report the broken pipe again when it flushes stdout at exit.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code
