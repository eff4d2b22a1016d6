"""The bench payloads judged in one process, without HTTP: µs per review per class, or a profile.

    python -m bench.replay [--passes 5] [--rounds 20] [--profile CLASS] [--catalog-file kgateway.yaml]

The payloads and the scenario are the ones `make bench` builds (bench/payloads.py, from
CRDGUARD_UPSTREAM); each review goes through what /validate does after reading the body:
decode, parse, judge, respond (denials plan their fixes). Best of ``--passes`` passes of
``--rounds`` rounds over a class's payloads, so other jobs on the machine disturb it less.
``--profile CLASS`` prints cProfile's top functions for that class instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

from bench import payloads
from bench.catalog_serve import catalog_of
from webhook.admission.app import ServiceConfig, judge, respond
from webhook.admission.review import decode, parse_review
from webhook.catalogs import load_catalog
from webhook.rules.catalog import Catalog
from webhook.rules.plan import RecentFixes
from webhook.state.files import StaticState, inventory_from_files


def bodies_by_class(work: Path) -> dict[str, list[bytes]]:
    upstream = payloads.Upstream.load(payloads.upstream_dir())
    manifest = payloads.write_payloads(payloads.build_payloads(upstream), work / "payloads")
    payloads.write_scenario(upstream, work / "cluster")
    out: dict[str, list[bytes]] = {}
    for entry in manifest["payloads"]:
        out.setdefault(entry["class"], []).append((work / "payloads" / entry["file"]).read_bytes())
    return out


def review_all(bodies: list[bytes], config: ServiceConfig) -> None:
    for body in bodies:
        review = parse_review(decode(body))
        respond(review, judge(review, config), config)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--profile", metavar="CLASS")
    parser.add_argument("--catalog-file", action="append", default=[], help="judge with only these files")
    parser.add_argument("--plan-every-denial", action="store_true", help="no reuse of recent fixes")
    args = parser.parse_args()
    catalog: Catalog = catalog_of(args.catalog_file) if args.catalog_file else load_catalog()
    with tempfile.TemporaryDirectory(prefix="crdguard-replay-") as tmp:
        work = Path(tmp)
        classes = bodies_by_class(work)
        scenario = [str(p) for p in sorted((work / "cluster").iterdir())]
        state = StaticState(inventory_from_files(scenario, catalog), scenario)
        config = ServiceConfig(catalog, state, recent_fixes=RecentFixes(0 if args.plan_every_denial else 64))
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [review_all(classes[args.profile], config) for _ in range(args.rounds)])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        return 0
    result = {}
    for cls, bodies in classes.items():
        best = float("inf")
        for _ in range(args.passes):
            started = time.perf_counter()
            for _ in range(args.rounds):
                review_all(bodies, config)
            best = min(best, (time.perf_counter() - started) / (args.rounds * len(bodies)))
        result[cls] = round(best * 1e6, 1)
    print(json.dumps({"us_per_review": result, "components": len(catalog.components)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
