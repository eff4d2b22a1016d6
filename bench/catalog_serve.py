"""``crdguard`` with the packaged catalog replaced by given files, for catalog-size comparisons.

    python -m bench.catalog_serve --catalog-file kgateway.yaml [--catalog-file ...] -- serve ...

Everything else is ``crdguard`` as shipped: only ``webhook.catalogs.default_catalog_files``
answers with the named files instead of every packaged one. ``--catalog-file`` takes
a path, or the name of a packaged file (``kgateway.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from webhook import catalogs
from webhook.cli import main as crdguard_main
from webhook.manifests import parse_documents
from webhook.rules.catalog import Catalog

KGATEWAY_FILE = "kgateway.yaml"  # the rules bench/opa/crdguard.rego implements


def packaged(name: str) -> Path:
    return Path(str(resources.files("webhook.rules") / "catalog" / name))


def only(names: list[str]) -> list[tuple[str, str]]:
    """``(name, text)`` of the named files (paths or packaged names), in place of every packaged one."""
    files = [Path(f) if Path(f).exists() else packaged(f) for f in names]
    return [(f"catalog {f.name}", f.read_text(encoding="utf-8")) for f in files]


def catalog_of(names: list[str]) -> Catalog:
    """The catalog crdguard judges with when served with ``--catalog-file`` ``names``."""
    return Catalog.merge(
        [(d.source, d.body) for name, text in only(names) for d in parse_documents(name, text)]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--catalog-file", action="append", default=[], help="a file replacing the packaged ones"
    )
    args, rest = parser.parse_known_args()
    chosen = only(args.catalog_file)
    catalogs.default_catalog_files = lambda: chosen  # type: ignore[assignment]
    return crdguard_main(rest[1:] if rest[:1] == ["--"] else rest)


if __name__ == "__main__":
    sys.exit(main())
