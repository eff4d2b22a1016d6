"""``crdguard audit``: the conflicts present in a cluster now (exit 1 if any)."""

from __future__ import annotations

import argparse
import json

from webhook.cli.common import EXIT_DENIED, EXIT_OK, add_common, catalog_of
from webhook.rules.engine import audit
from webhook.rules.messages import describe_conflict
from webhook.state.files import inventory_from_files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit_cmd = sub.add_parser("audit", help="list the conflicts present in a cluster now (exit 1 if any)")
    add_common(audit_cmd)
    audit_cmd.add_argument("--kubeconfig")
    audit_cmd.add_argument("--in-cluster", action="store_true")
    audit_cmd.add_argument("--output", choices=["text", "json"], default="text")
    audit_cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
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
                        "needs": c.rule.needed_version,
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
