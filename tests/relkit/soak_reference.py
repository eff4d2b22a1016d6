"""The soak's reference verdicts: the catalog's facts as a small table, written here by hand.

Nothing here calls the rules engine. The table says which kgateway versions read which
BackendTLSPolicy version (a CRD that is absent is tolerated; one present without that version
served is a conflict; kgateway 2.1 starts that watch only for a CRD of bundle v1.4.0 or later and
silently ignores an older one, a warning), which need the BackendConfigPolicy CRD (absent is a
conflict), and which Gateway API bundle serves what. ``expected`` applies them the way the project documents a
decision (README, docs/catalog-schema.md): a conflict after the change that was not there before is
denied; one there before and after is an existing conflict, reported as a warning and an audit
annotation; a change to a CRD concerns only the rules about that CRD, a change to a Deployment
only the releases it runs. ``observed`` reads the same decision back from an AdmissionReview
response, so the whole decision is compared, not only ``allowed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BTP = "backendtlspolicies.gateway.networking.k8s.io"
BCP = "backendconfigpolicies.gateway.kgateway.dev"

# Gateway API bundle -> the BackendTLSPolicy versions it serves (FACTS.md, the table per tag).
BTP_SERVED: dict[str, frozenset[str]] = {
    "v1.3.0 experimental": frozenset({"v1alpha3"}),
    "v1.4.0 standard": frozenset({"v1"}),  # v1alpha3 listed with served: false
    "v1.4.0 experimental": frozenset({"v1", "v1alpha3"}),
}


@dataclass(frozen=True)
class Need:
    rule: str
    crd: str
    served: str | None  # None: the CRD must exist
    tolerate_missing: bool
    wording: str  # what the warning says is needed
    bundles: tuple[str, str] | None = None  # the CRD's bundle-version window (inclusive), if any
    warn: bool = False  # feature-off: a new conflict is a warning, not a denial


# kgateway minor line -> what it reads (FACTS.md, the kgateway table).
KGATEWAY_NEEDS: dict[str, tuple[Need, ...]] = {
    "2.0": (
        Need(
            "kgateway-2.0-reads-backendtlspolicy-v1alpha3", BTP, "v1alpha3", True, "BackendTLSPolicy v1alpha3"
        ),
    ),
    # docs/evidence/kgateway.md: the Istio CRD watcher 2.1 pins has backendtlspolicies minimum v1.4.0.
    "2.1": (
        Need(
            "kgateway-2.1-reads-backendtlspolicy-v1",
            BTP,
            "v1",
            True,
            "BackendTLSPolicy v1",
            ("1.4.0", "999.0.0"),
        ),
        Need(
            "kgateway-2.1-ignores-backendtlspolicy-below-bundle-v1.4",
            BTP,
            "v1",
            True,
            "BackendTLSPolicy v1",
            ("0.0.0", "1.3.99"),
            warn=True,
        ),
        Need("kgateway-2.1-requires-backendconfigpolicy-crd", BCP, None, False, BCP),
    ),
}


@dataclass(frozen=True)
class Cluster:
    """What the soak's cluster holds in a phase: kgateway releases and the two CRDs' state."""

    releases: Mapping[tuple[str, str], str]  # (namespace, Deployment name) -> version
    btp: str | None  # Gateway API bundle of the BackendTLSPolicy CRD, None when absent
    bcp: bool  # the BackendConfigPolicy CRD is installed


@dataclass(frozen=True)
class Decision:
    allowed: bool
    denied: tuple[str, ...] = ()  # rule ids
    warnings: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()  # rule ids, from the audit annotation

    def __str__(self) -> str:
        return (
            f"allowed={self.allowed} denied={list(self.denied)} existing={list(self.existing)} "
            f"warnings={list(self.warnings)}"
        )


@dataclass(frozen=True)
class Payload:
    """A review and what it changes: a CRD (to a bundle, or away), or a kgateway Deployment."""

    name: str
    review: Mapping[str, Any]
    crd: str | None = None
    crd_before: str | bool | None = None  # BTP: bundle or None; BCP: present or not
    crd_after: str | bool | None = None
    deployment: tuple[str, str] | None = None
    version_before: str | None = None
    version_after: str | None = None
    judged: bool = field(default=True)


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.lstrip("v").split("."))


def _in_window(need: Need, bundle: str) -> bool:
    if need.bundles is None:
        return True
    low, high = need.bundles
    return _release(low) <= _release(bundle.split(" ", 1)[0]) <= _release(high)


def _line(version: str) -> str | None:
    major, minor, _ = version.lstrip("v").split(".")
    key = f"{major}.{minor}"
    return key if key in KGATEWAY_NEEDS else None


def _conflicts(
    releases: Mapping[tuple[str, str], str], btp: str | None, bcp: bool, crds: set[str] | None
) -> dict[tuple[str, tuple[str, str]], tuple[Need, str]]:
    found = {}
    for source, version in releases.items():
        line = _line(version)
        for need in KGATEWAY_NEEDS.get(line or "", ()):
            if crds is not None and need.crd not in crds:
                continue
            present = (btp is not None) if need.crd == BTP else bcp
            if need.crd == BTP and btp is not None and not _in_window(need, btp):
                broken = False  # the watch never starts for this bundle
            elif not present:
                broken = not need.tolerate_missing
            elif need.served is not None:
                broken = need.served not in BTP_SERVED[btp or ""]
            else:
                broken = False
            if broken:
                found[(need.rule, source)] = (need, version)
    return found


def _warning(prefix: str, need: Need, source: tuple[str, str], version: str) -> str:
    text = f"crdguard: {prefix}: kgateway {version} ({source[0]}/{source[1]}) needs {need.wording}"
    return text if len(text) <= 119 else text[:116] + "..."


def expected(cluster: Cluster, payload: Payload) -> Decision:
    if not payload.judged:
        return Decision(True)
    if payload.crd is not None:
        crds: set[str] | None = {payload.crd}
        releases_before = releases_after = dict(cluster.releases)
        btp_before = payload.crd_before if payload.crd == BTP else cluster.btp
        btp_after = payload.crd_after if payload.crd == BTP else cluster.btp
        bcp_before = bool(payload.crd_before) if payload.crd == BCP else cluster.bcp
        bcp_after = bool(payload.crd_after) if payload.crd == BCP else cluster.bcp
    else:
        assert payload.deployment is not None
        crds = None
        source = payload.deployment
        releases_before = {source: payload.version_before} if payload.version_before else {}
        releases_after = {source: payload.version_after} if payload.version_after else {}
        btp_before = btp_after = cluster.btp
        bcp_before = bcp_after = cluster.bcp
    before = _conflicts(releases_before, btp_before, bcp_before, crds)  # type: ignore[arg-type]
    after = _conflicts(releases_after, btp_after, bcp_after, crds)  # type: ignore[arg-type]
    added = [key for key in after if key not in before and not after[key][0].warn]
    warned = [key for key in after if key not in before and after[key][0].warn]
    kept = [key for key in after if key in before]
    warnings = [_warning("new conflict (warn)", after[k][0], k[1], after[k][1]) for k in warned]
    warnings += [_warning("existing conflict", after[k][0], k[1], after[k][1]) for k in kept]
    return Decision(
        allowed=not added,
        denied=tuple(sorted({rule for rule, _ in added})),
        warnings=tuple(sorted(warnings)),
        existing=tuple(sorted({rule for rule, _ in kept})),
    )


def observed(response: Mapping[str, Any]) -> Decision:
    """The decision in an AdmissionReview response: the rule ids a denial names ("Rule <id> ("
    in its message), the warnings, and the existing conflicts of the audit annotation."""
    message = str((response.get("status") or {}).get("message", ""))
    denied = sorted(
        {
            line.strip().split(" ", 2)[1]
            for line in message.splitlines()
            if line.strip().startswith("Rule ") and " (" in line
        }
    )
    existing = (response.get("auditAnnotations") or {}).get("existing-conflicts", "")
    return Decision(
        allowed=bool(response.get("allowed")),
        denied=tuple(denied),
        warnings=tuple(sorted(response.get("warnings") or ())),
        existing=tuple(sorted(e for e in existing.split(",") if e)),
    )
