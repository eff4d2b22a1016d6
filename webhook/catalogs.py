"""Load the packaged default catalog and users' catalog files."""

from __future__ import annotations

from importlib import resources

from webhook.manifests import parse_documents, read_text
from webhook.rules.catalog import Catalog

DEFAULT_CATALOG = "default.yaml"


def default_catalog_text() -> str:
    return (resources.files("webhook.rules") / "catalog" / DEFAULT_CATALOG).read_text(encoding="utf-8")


def load_catalog(extra_files: list[str] | tuple[str, ...] = ()) -> Catalog:
    """The default catalog merged with ``extra_files`` in order; later entries win by id.

    Raises CatalogError or ManifestError, each naming the file at fault.
    """
    documents = [(d.source, d.body) for d in parse_documents("default catalog", default_catalog_text())]
    for path in extra_files:
        name, text = read_text(path)
        documents.extend((d.source, d.body) for d in parse_documents(name, text))
    return Catalog.merge(documents)
