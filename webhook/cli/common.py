"""What every subcommand shares: exit codes, the usage error, logging, catalog, flags, cluster access."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog, Enforcement

EXIT_OK, EXIT_DENIED, EXIT_USAGE, EXIT_CLUSTER = 0, 1, 2, 3
LOG_LEVELS = ("debug", "info", "warning", "error")

EXIT_CODES_EPILOG = """exit codes:
  0  ok: nothing denied, no conflict found
  1  denied (check) or a conflict exists (audit)
  2  usage or input error: bad flags, unreadable or empty input, no usable kubeconfig
  3  the cluster is unreachable or refused the credentials"""


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
    if level.lower() not in LOG_LEVELS:
        raise UsageError(f"--log-level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 warns of every retry of a refused connection; crdguard's own error names the cause once.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if level.lower() == "debug" else logging.ERROR)


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
            help="files or directories holding the cluster's current objects, e.g. the output of "
            "`kubectl get crd,deploy,helmreleases.helm.toolkit.fluxcd.io -A -o yaml` (repeatable)",
        )
    p.add_argument(
        "--enforcement",
        choices=[e.value for e in Enforcement],
        default="deny",
        help="ceiling over every rule's enforcement: deny (default), warn or audit",
    )
    # Also accepted after the subcommand, so the image's "crdguard serve" entrypoint can take it.
    p.add_argument("--log-level", default=argparse.SUPPRESS, help="debug, info, warning or error")


def add_cluster_access(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help=f"{what} the cluster of this kubeconfig (default: $KUBECONFIG, else ~/.kube/config, "
        "else the in-cluster service account)",
    )
    p.add_argument("--context", help="kubeconfig context to use (default: its current-context)")
    p.add_argument(
        "--in-cluster", action="store_true", help=f"{what} the cluster this pod runs in (service account)"
    )


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """Where the live cluster comes from, resolved as kubectl does."""

    kubeconfig: str | None  # a path, or a KUBECONFIG-style list of paths
    context: str | None
    in_cluster: bool
    origin: str  # how it was chosen, for messages: "--kubeconfig", "$KUBECONFIG", ...

    def describe(self) -> str:
        where = "in-cluster service account" if self.in_cluster else f"kubeconfig {self.kubeconfig}"
        return f"{where} ({self.origin}" + (f", context {self.context})" if self.context else ")")


def resolve_access(args: argparse.Namespace, default: bool) -> ClusterAccess | None:
    """The flags' cluster; with ``default``, else $KUBECONFIG, ~/.kube/config, in-cluster; else None."""
    kubeconfig = getattr(args, "kubeconfig", None)
    context = getattr(args, "context", None)
    if getattr(args, "in_cluster", False):
        if kubeconfig:
            raise UsageError("--kubeconfig and --in-cluster exclude each other")
        return ClusterAccess(None, None, True, "--in-cluster")
    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
        return ClusterAccess(kubeconfig, context, False, "--kubeconfig")
    if not default:
        if context:
            raise UsageError("--context needs a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config)")
        return None
    env = os.environ.get("KUBECONFIG", "")
    if env:
        present = [p for p in env.split(os.pathsep) if p and Path(p).is_file()]
        if not present:
            raise UsageError(f"$KUBECONFIG={env}: no such file")
        return ClusterAccess(os.pathsep.join(present), context, False, "$KUBECONFIG")
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return ClusterAccess(str(home), context, False, "~/.kube/config")
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not context:
        return ClusterAccess(None, None, True, "in-cluster, from KUBERNETES_SERVICE_HOST")
    return None


def kube_client(access: ClusterAccess) -> Any:
    """A KubeClient for ``access`` (config errors raise ClusterConfigError, handled in main)."""
    from webhook.state.watch import KubeClient, load_api_client

    return KubeClient(load_api_client(access.kubeconfig, access.context, access.in_cluster))


def emit(text: str) -> None:
    """Write ``text`` to stdout; a reader that went away (``| head -1``) ends the output quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain when it flushes stdout at exit; point it at /dev/null instead.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
