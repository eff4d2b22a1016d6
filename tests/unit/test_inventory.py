"""The Inventory under a writer that never pauses: lock-free readers see every update whole."""

from __future__ import annotations

import sys
import threading

from helpers import BTP, crd, deployment

from webhook.rules.catalog import Catalog
from webhook.rules.inventory import Inventory
from webhook.rules.objects import CRD_KIND, ObjectRef, summarize
from webhook.rules.versions import Version

READERS = 2
READS_PER_READER = 600_000  # at least a million reads in all


def test_readers_never_see_a_release_or_crd_missing_while_a_writer_flips_versions(catalog: Catalog) -> None:
    versions = ("v2.0.4", "v2.1.1")
    deployments = [summarize("apps", "Deployment", deployment(v), catalog) for v in versions]
    crds = [
        summarize("apiextensions.k8s.io", CRD_KIND, crd(BTP, served), catalog)
        for served in ({"v1alpha3": True}, {"v1": True, "v1alpha3": False})
    ]
    inventory = Inventory(catalog)
    for summary in (deployments[0], crds[0]):
        assert summary is not None
        inventory.upsert(summary)
    ref = ObjectRef("Deployment", "kgateway-system", "kgateway")
    expected = {Version.parse(v) for v in versions}
    stop = threading.Event()
    violations: list[str] = []
    reads = [0] * READERS

    def write() -> None:
        flips = 0
        while not stop.is_set():
            for summary in (deployments[flips % 2], crds[flips % 2]):
                assert summary is not None
                inventory.upsert(summary)
            flips += 1

    def read(slot: int) -> None:
        seen: list[str] = []
        for _ in range(READS_PER_READER):
            found = inventory.releases_from(ref)
            if len(found) != 1 or found[0].version not in expected:
                seen.append(f"releases_from: {found}")
            by_component = list(inventory.releases("kgateway"))
            if len(by_component) != 1 or by_component[0].version not in expected:
                seen.append(f"releases: {by_component}")
            if inventory.crd(BTP) is None:
                seen.append("crd missing")
        reads[slot] = READS_PER_READER * 3
        violations.extend(seen[:5])

    # Switch threads often, so the writer is interrupted at every step of an update.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        writer = threading.Thread(target=write)
        readers = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
        writer.start()
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join()
        stop.set()
        writer.join()
    finally:
        sys.setswitchinterval(interval)
    assert sum(reads) >= 1_000_000
    assert violations == []
