"""OPA's copy of the cluster state: the same scenario, summarised by crdguard's own ingest code.

The objects go through ``summarize`` and ``Inventory.upsert`` (what the watch cache
runs), and the inventory's indexes are written out as ``data.cluster`` for
bench/opa/crdguard.rego: CRD served versions by name, component releases by
component and source, OCIRepositories by source. So OPA and crdguard hold the
same facts in the same shape and each review is a few lookups for both; the
policy, not the replication, is what is compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from webhook.rules.catalog import Catalog
from webhook.rules.detect import ComponentRelease
from webhook.rules.inventory import Inventory
from webhook.rules.objects import OCIREPOSITORY_KIND, ObjectRef, OCIRepositorySummary
from webhook.state.files import add_objects


def source_key(ref: ObjectRef) -> str:
    return f"{ref.kind}/{ref.namespace or ''}/{ref.name}"


def _release(release: ComponentRelease) -> dict[str, Any]:
    return {
        "component": release.component,
        "version": str(release.version) if release.version is not None else None,
        "version_text": release.version_text,
        "source": source_key(release.source),
        "detail": release.detail,
        "features": sorted(release.features),
    }


def inventory_data(inventory: Inventory, catalog: Catalog) -> dict[str, Any]:
    crds = {}
    for ref in inventory.refs("CustomResourceDefinition"):
        crd = inventory.crd(ref.name)
        if crd is not None:
            crds[crd.name] = {"served": sorted(crd.served), "listed": list(crd.listed), "bundle": crd.bundle}
    releases: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for component in catalog.components:
        for release in inventory.releases(component):
            releases.setdefault(component, {}).setdefault(source_key(release.source), []).append(
                _release(release)
            )
    ocirepositories = {}
    for ref in inventory.refs(OCIREPOSITORY_KIND):
        oci = inventory.summary(ref)
        if isinstance(oci, OCIRepositorySummary):
            ocirepositories[source_key(ref)] = {
                "url": oci.url,
                "tag": oci.tag,
                "semver": oci.semver,
                "digest": oci.digest,
            }
    return {"cluster": {"crds": crds, "releases": releases, "ocirepositories": ocirepositories}}


def opa_data(objects: Iterable[Mapping[str, Any]], catalog: Catalog) -> dict[str, Any]:
    inventory = Inventory(catalog)
    add_objects(inventory, list(objects))
    return inventory_data(inventory, catalog)
