"""``crdguard check``: review manifests against a cluster state, as the webhook would."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

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
from webhook.manifests import load_objects
from webhook.rules.catalog import Catalog, Enforcement
from webhook.rules.engine import Change, Conflict, review_change
from webhook.rules.inventory import Inventory
from webhook.rules.messages import conflict_warning, denial_message, warnings
from webhook.rules.objects import CRD_KIND, summarize
from webhook.rules.plan import fixes_for
from webhook.state.files import add_objects, group_of

NAMESPACED_KINDS = {
    "Deployment",
    "HelmRelease",
    "OCIRepository",
    "HelmChart",
    "Application",
    "ConfigMap",
    "Secret",
    "Service",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check",
        help="review manifests against a cluster state, as the webhook would",
        description="Review each object of the manifests in order, as the API server would ask crdguard, "
        "against a saved cluster state (--cluster), the live cluster (--kubeconfig, --context or "
        "--in-cluster; read-only) or, with neither, an empty cluster.",
    )
    add_common(check)
    add_cluster_access(check, "judge against")
    check.add_argument("--output", choices=output.FORMATS, default="text", help=output.FORMAT_HELP)
    check.add_argument("--delete", action="store_true", help="review deleting the objects instead")
    check.add_argument(
        "manifests",
        nargs="+",
        metavar="MANIFEST",
        help="YAML or JSON files, directories (read recursively, sorted) or - for stdin",
    )
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


def placed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object with the namespace kubectl would give it, so one object has one key everywhere."""
    namespace = object_key(obj)[2]
    meta = dict(obj["metadata"])
    if namespace is None:
        meta.pop("namespace", None)
    else:
        meta["namespace"] = namespace
    return {**obj, "metadata": meta}


def conflict_json(conflict: Conflict) -> dict[str, Any]:
    release, rule = conflict.release, conflict.rule
    return {
        "rule": rule.id,
        "component": release.component,
        "version": release.version_text,
        "source": {
            "kind": release.source.kind,
            "namespace": release.source.namespace,
            "name": release.source.name,
        },
        "crd": rule.crd,
        "needs": rule.needed_version,
        "served": sorted(conflict.crd.served) if conflict.crd else [],
    }


def run(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    manifests = list(load_objects(args.manifests))
    if not manifests:
        raise UsageError(f"no Kubernetes objects in {' '.join(args.manifests)}: nothing to check")
    releases = load_releases()
    cluster = {object_key(obj): placed(obj) for obj in cluster_objects(args, catalog)}
    inventory = Inventory(catalog)
    add_objects(inventory, list(cluster.values()))
    enforcement = Enforcement(args.enforcement)
    results = []
    for source, raw in manifests:
        obj = placed(raw)
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
        fixes = [] if verdict.allowed else fixes_for(change, inventory, catalog, releases)
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
                "message": "" if verdict.allowed else denial_message(verdict, fixes),
                "warnings": warnings(verdict),
                "file": source.split(" (document ", 1)[0],
                "audited": [conflict_warning("new conflict (audit)", c) for c in verdict.audited],
                "conflicts": [conflict_json(c) for c in verdict.denied + verdict.warned + verdict.audited],
                "fixes": [f.to_json() for f in fixes],
            }
        )
    if args.output == "json":
        emit(output.to_json(results))
    elif args.output == "junit":
        emit(output.check_junit(results))
    elif args.output == "github":
        emit(output.check_github(results))
    else:
        lines = []
        for r in results:
            where = f"{r['namespace']}/{r['name']}" if r["namespace"] else r["name"]
            lines.append(
                f"{'allowed' if r['allowed'] else 'DENIED '} {r['operation']:<6} {r['kind']} {where}"
            )
            lines.extend(f"    warning: {warning}" for warning in r["warnings"])
            lines.extend(f"    audit: {audited}" for audited in r["audited"])
            if not r["allowed"]:
                lines.append("    " + r["message"].replace("\n", "\n    "))
        denied = sum(not r["allowed"] for r in results)
        lines.append(f"{len(results)} object(s) reviewed, {denied} denied")
        emit("\n".join(lines) + "\n")
    return EXIT_DENIED if any(not r["allowed"] for r in results) else EXIT_OK


def cluster_objects(args: argparse.Namespace, catalog: Catalog) -> list[Mapping[str, Any]]:
    """The cluster to judge against: saved files, the live cluster (read-only), or nothing."""
    live = args.kubeconfig or args.in_cluster or args.context
    if args.cluster and live:
        raise UsageError("--cluster reads a saved state; it cannot be combined with a live cluster")
    if args.cluster:
        return [obj for _, obj in load_objects(args.cluster)]
    if not live:
        return []
    access = resolve_access(args, default=True)
    if access is None:
        raise UsageError("--context needs a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config)")
    from webhook.state.watch import snapshot_objects

    return list(snapshot_objects(kube_client(access), catalog))
