"""A static cluster view read from manifest files: for ``crdguard check``, ``review`` and demos."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.manifests import load_objects
from webhook.rules.catalog import Catalog
from webhook.rules.inventory import Inventory
from webhook.rules.objects import summarize


def group_of(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def add_objects(inventory: Inventory, objects: list[Mapping[str, Any]]) -> None:
    for obj in objects:
        summary = summarize(group_of(obj), str(obj.get("kind")), obj, inventory.catalog)
        if summary is not None:
            inventory.upsert(summary)


def inventory_from_files(paths: list[str], catalog: Catalog) -> Inventory:
    """An Inventory holding every judged object in ``paths`` (raises ManifestError naming the file)."""
    inventory = Inventory(catalog)
    add_objects(inventory, [obj for _, obj in load_objects(paths)])
    return inventory


class StaticState:
    """A ClusterState that never changes: the objects of some files, ready at once."""

    def __init__(self, inventory: Inventory, sources: list[str]) -> None:
        self.inventory = inventory
        self.sources = sources

    @property
    def view(self) -> Inventory:
        return self.inventory

    def start(self) -> None:
        """Nothing to start: the files were read before serving."""

    def stop(self) -> None:
        """Nothing to stop."""

    def readiness(self) -> tuple[bool, str]:
        return True, f"static state from {len(self.sources)} path(s)"

    def describe(self) -> dict[str, Any]:
        return {"mode": "static", "sources": self.sources, "objects": self.inventory.counts()}
