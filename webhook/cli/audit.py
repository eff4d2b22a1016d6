"""``crdguard audit``: the conflicts present in a cluster now (exit 1 if any)."""

from __future__ import annotations

import argparse

from webhook.catalogs import load_releases
from webhook.cli import output
from webhook.cli.common import (
    EXIT_DENIED,
    EXIT_OK,
    UsageError,
    add_cluster_access,
    add_common,
    catalog_of,
    emit,
    kube_client,
    resolve_access,
)
from webhook.rules.catalog import Catalog
from webhook.rules.engine import UNKNOWN, audit, check
from webhook.rules.inventory import Inventory
from webhook.rules.messages import describe_conflict, describe_fixes
from webhook.rules.plan import fixes_for_conflict
from webhook.state.files import inventory_from_files

NO_SOURCE = (
    "no cluster to audit: pass --kubeconfig FILE, set $KUBECONFIG, have ~/.kube/config, run in a pod, "
    "or give a saved state with --cluster PATH"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit_cmd = sub.add_parser(
        "audit",
        help="list the conflicts present in a cluster now (exit 1 if any)",
        description="List the conflicts present in a cluster now. The cluster is the one of --kubeconfig, "
        "else $KUBECONFIG, else ~/.kube/config, else the in-cluster service account (as kubectl); "
        "--cluster reads a saved state instead.",
    )
    add_common(audit_cmd)
    add_cluster_access(audit_cmd, "audit")
    audit_cmd.add_argument("--output", choices=output.FORMATS, default="text", help=output.FORMAT_HELP)
    audit_cmd.set_defaults(func=run)


def read_state(args: argparse.Namespace, catalog: Catalog) -> tuple[Inventory, str, list[str]]:
    """The inventory to audit, where it came from, and the sources that could not be read."""
    if args.cluster:
        if args.kubeconfig or args.in_cluster:
            raise UsageError("--cluster reads a saved state; it cannot be combined with a live cluster")
        return inventory_from_files(args.cluster, catalog), "files " + ", ".join(args.cluster), []
    access = resolve_access(args, default=True)
    if access is None:
        raise UsageError(NO_SOURCE)
    from webhook.state.watch import snapshot_inventory

    kube = kube_client(access)
    inventory, unread = snapshot_inventory(kube, catalog)
    return inventory, f"{kube.server} via {access.describe()}", unread


def run(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    inventory, origin, unread = read_state(args, catalog)
    releases = [r for component in catalog.rules_by_component for r in inventory.releases(component)]
    unchecked = [
        r
        for r in releases
        if any(check(rule, r, inventory) is UNKNOWN for rule in catalog.rules_by_component[r.component])
    ]
    conflicts = audit(inventory, catalog)
    known = load_releases()
    fixes = {c.key: fixes_for_conflict(c, inventory, catalog, known) for c in conflicts}
    report = output.AuditReport(origin, inventory.counts(), releases, conflicts, unchecked, unread, fixes)
    if args.output == "json":
        emit(output.to_json(report.to_json()))
    elif args.output == "junit":
        emit(output.audit_junit(report))
    elif args.output == "github":
        emit(output.audit_github(report))
    else:
        emit(text(report))
    return EXIT_DENIED if report.conflicts else EXIT_OK


def text(report: output.AuditReport) -> str:
    crds = report.counts.get("CustomResourceDefinition", 0)
    lines = [f"Read {crds} CRDs and {len(report.releases)} component release(s) from {report.origin}."]
    for i, conflict in enumerate(report.conflicts, 1):
        lines.append(describe_conflict(conflict, i, after_change=False))
        lines.extend("    " + line for line in describe_fixes(report.fixes.get(conflict.key, ())))
    lines.extend(
        f"Not checked: {r.describe()}: its version is not one exact version." for r in report.unchecked
    )
    lines.extend(f"Could not read: {reason}" for reason in report.unread)
    checked = len(report.releases) - len(report.unchecked)
    if report.conflicts:
        lines.append(f"{len(report.conflicts)} conflict(s) found")
    elif checked == 0:
        lines.append("Nothing checked: no component release with an exact version was found.")
    elif report.unchecked or report.unread:
        lines.append(
            f"No conflicts found in the {checked} release(s) checked; some could not be checked (above)."
        )
    else:
        lines.append("No conflicts found.")
    return "\n".join(lines) + "\n"
