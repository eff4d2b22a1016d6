"""``crdguard check``: review manifests against a cluster state, as the webhook would."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from webhook.cli.common import EXIT_DENIED, EXIT_OK, add_common, catalog_of
from webhook.manifests import load_objects
from webhook.rules.catalog import Enforcement
from webhook.rules.engine import Change, review_change
from webhook.rules.inventory import Inventory
from webhook.rules.messages import denial_message, warnings
from webhook.rules.objects import CRD_KIND, summarize
from webhook.state.files import add_objects, group_of

NAMESPACED_KINDS = {"Deployment", "HelmRelease", "OCIRepository", "ConfigMap", "Secret", "Service"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="review manifests against a cluster state, as the webhook would")
    add_common(check)
    check.add_argument("--output", choices=["text", "json"], default="text")
    check.add_argument("--delete", action="store_true", help="review deleting the objects instead")
    check.add_argument("manifests", nargs="+", metavar="MANIFEST")
    check.set_defaults(func=run)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    kind = str(obj["kind"])
    namespace = meta.get("namespace") or None
    if kind == CRD_KIND:
        namespace = None
    elif namespace is None and kind in NAMESPACED_KINDS:
        namespace = "default"  # as kubectl would place it
    return (group_of(obj), kind, namespace, str(meta["name"]))


def run(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    cluster = {object_key(obj): obj for _, obj in load_objects(args.cluster)} if args.cluster else {}
    inventory = Inventory(catalog)
    add_objects(inventory, list(cluster.values()))
    manifests = list(load_objects(args.manifests))
    enforcement = Enforcement(args.enforcement)
    results = []
    for _, obj in manifests:
        key = object_key(obj)
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
