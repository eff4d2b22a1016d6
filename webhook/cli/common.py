"""What every subcommand shares: exit codes, the usage error, logging, catalog and common flags."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog, Enforcement

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


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


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def catalog_of(args: argparse.Namespace) -> Catalog:
    return load_catalog(args.catalog)


def add_common(p: argparse.ArgumentParser, cluster: bool = True) -> None:
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
