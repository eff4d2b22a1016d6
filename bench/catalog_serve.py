"""``crdguard`` with the packaged catalog replaced by given files, for catalog-size comparisons.

    python -m bench.catalog_serve --catalog-file kgateway.yaml [--catalog-file ...] -- serve ...

Everything else is ``crdguard`` as shipped: only ``webhook.catalogs.default_catalog_files``
answers with the named files instead of every packaged one. ``--catalog-file`` takes
a path, or the name of a packaged file (``kgateway.yaml``).

``--write-standin DIR [--components N]`` writes a synthetic catalog for development
while the real per-component files are being written: N components shaped like
the catalog contract (docs/catalog-schema.md), each with rules on the Gateway API
and Inference Extension CRDs. Numbers measured with it are not results.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import yaml

from webhook import catalogs
from webhook.cli import main as crdguard_main

# (CRD, Kind, served versions a controller line may read), as Gateway API and the
# Inference Extension publish them.
_STANDIN_CRDS = (
    ("httproutes.gateway.networking.k8s.io", "HTTPRoute", ("v1", "v1beta1")),
    ("grpcroutes.gateway.networking.k8s.io", "GRPCRoute", ("v1", "v1alpha2")),
    ("tlsroutes.gateway.networking.k8s.io", "TLSRoute", ("v1alpha2", "v1alpha3")),
    ("tcproutes.gateway.networking.k8s.io", "TCPRoute", ("v1alpha2",)),
    ("referencegrants.gateway.networking.k8s.io", "ReferenceGrant", ("v1beta1",)),
    ("backendtlspolicies.gateway.networking.k8s.io", "BackendTLSPolicy", ("v1", "v1alpha3")),
    ("listenersets.gateway.networking.x-k8s.io", "XListenerSet", ("v1alpha1",)),
    ("inferencepools.inference.networking.k8s.io", "InferencePool", ("v1",)),
)


def packaged(name: str) -> Path:
    return Path(str(resources.files("webhook.rules") / "catalog" / name))


def standin_catalog(components: int) -> dict[str, object]:
    """A catalog of ``components`` made-up controllers, each with two release lines of rules."""
    comps: list[dict[str, object]] = []
    rules: list[dict[str, object]] = []
    for i in range(components):
        name = f"standin-gateway-{i:02d}"
        comps.append(
            {
                "name": name,
                "detect": {
                    "images": [f"standin-{i:02d}/controller"],
                    "labels": {"app.kubernetes.io/name": name},
                    "charts": [name],
                },
                "features": {"experimental": {"env": {"name": f"SG{i}_EXPERIMENTAL", "value": "true"}}},
            }
        )
        for line, (lo, hi) in enumerate(((f"1.{i}.0", f"1.{i + 1}.0"), (f"1.{i + 1}.0", "9.0.0"))):
            for j, (crd, kind, versions) in enumerate(_STANDIN_CRDS):
                if (i + j) % 3 == 2:
                    continue  # not every controller reads every CRD
                rules.append(
                    {
                        "id": f"{name}-{lo}-reads-{kind.lower()}",
                        "component": name,
                        "versions": f">={lo} <{hi}",
                        **({"feature": "experimental"} if j >= 6 else {}),
                        "crd": crd,
                        "crdKind": kind,
                        "requires": {"servedVersion": versions[min(line, len(versions) - 1)]},
                        "whenCRDMissing": "tolerate" if j % 2 else "conflict",
                        "explanation": f"{name} {lo} watches {kind} (a synthetic stand-in rule).",
                        "evidence": [{"repo": f"example/{name}", "tag": f"v{lo}", "path": "go.mod"}],
                    }
                )
    return {
        "apiVersion": "crdguard.io/v1alpha1",
        "kind": "CompatibilityCatalog",
        "components": comps,
        "rules": rules,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--catalog-file", action="append", default=[], help="a file replacing the packaged ones"
    )
    parser.add_argument("--write-standin", type=Path, help="write a synthetic catalog file here and exit")
    parser.add_argument("--components", type=int, default=10)
    args, rest = parser.parse_known_args()
    if args.write_standin:
        text = yaml.safe_dump(standin_catalog(args.components), sort_keys=False)
        args.write_standin.write_text(text, encoding="utf-8")
        return 0
    files = [Path(f) if Path(f).exists() else packaged(f) for f in args.catalog_file]
    chosen = [(f"catalog {f.name}", f.read_text(encoding="utf-8")) for f in files]
    catalogs.default_catalog_files = lambda: chosen  # type: ignore[assignment]
    return crdguard_main(rest[1:] if rest[:1] == ["--"] else rest)


if __name__ == "__main__":
    sys.exit(main())
