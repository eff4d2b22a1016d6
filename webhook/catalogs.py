"""Load the packaged default catalog and users' catalog files."""

from __future__ import annotations

from importlib import resources

from webhook.manifests import parse_documents, read_text
from webhook.rules.catalog import Catalog
from webhook.rules.releases import ReleaseSet, release_set_from_data


def default_catalog_files() -> list[tuple[str, str]]:
    """``(name, text)`` of every packaged catalog file (one per component), in name order."""
    folder = resources.files("webhook.rules") / "catalog"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return [(f"default catalog {f.name}", f.read_text(encoding="utf-8")) for f in files]


def default_catalog_text() -> str:
    """The packaged catalog files as one multi-document YAML stream."""
    return "\n---\n".join(text for _, text in default_catalog_files())


def load_catalog(extra_files: list[str] | tuple[str, ...] = ()) -> Catalog:
    """The default catalog merged with ``extra_files`` in order; later entries win by id.

    Raises CatalogError or ManifestError, each naming the file at fault.
    """
    documents = [
        (d.source, d.body) for name, text in default_catalog_files() for d in parse_documents(name, text)
    ]
    for path in extra_files:
        name, text = read_text(path)
        documents.extend((d.source, d.body) for d in parse_documents(name, text))
    return Catalog.merge(documents)


def load_releases() -> dict[str, ReleaseSet]:
    """The packaged release data (``webhook/rules/releases/*.yaml``, ``make releases``), by component."""
    folder = resources.files("webhook.rules") / "releases"
    found: dict[str, ReleaseSet] = {}
    for f in sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name):
        for document in parse_documents(f"release data {f.name}", f.read_text(encoding="utf-8")):
            release_set = release_set_from_data(document.body, document.source)
            found[release_set.component] = release_set
    return found
