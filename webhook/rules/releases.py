"""What installing each upstream release puts in a cluster: release facts as data, for the planner.

The facts (CRD names, listed and served versions, bundle annotations, the Gateway API
``safe-upgrades`` policy and what it refuses, chart version -> controller version) are
generated from upstream by ``hack/gen_releases.py`` (``make releases``) into
``webhook/rules/releases/*.yaml``. This module reads those documents and turns upstream
objects into facts; the generator and a test share :func:`bundle_facts`, so the data and
a regeneration cannot drift apart unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.rules.objects import CRD_KIND, CRDInfo, summarize_crd
from webhook.rules.versions import Version

SAFE_UPGRADES_POLICY = "safe-upgrades.gateway.networking.k8s.io"
_POLICY_KIND = "ValidatingAdmissionPolicy"
# ``matches(object.metadata.annotations['<group>/bundle-version'], '<regex>')``, optionally negated.
_MATCHES = re.compile(r"(!?)matches\(object\.metadata\.annotations\['[^']*/bundle-version'\],\s*'([^']*)'\)")


class ReleaseDataError(ValueError):
    """A release data document that cannot be used."""


@dataclass(frozen=True, slots=True)
class SafeUpgradesPolicy:
    """Gateway API's own ValidatingAdmissionPolicy (from v1.5.0): what it refuses on CRD writes.

    Its CEL refuses a Gateway API CRD whose bundle-version annotation matches one of
    ``refused_versions`` (unless it matches one of ``allowed_versions``), and, when
    ``refuses_experimental_over_standard``, an UPDATE that puts an experimental CRD over a
    standard one. CEL ``matches`` is an unanchored RE2 search, as ``re.search`` is here.
    """

    bundle_version: str
    refuses_experimental_over_standard: bool
    refused_versions: tuple[str, ...]
    allowed_versions: tuple[str, ...]

    def refuses_version(self, bundle_version: str | None) -> bool:
        if bundle_version is None:
            return True
        if any(re.search(p, bundle_version) for p in self.allowed_versions):
            return False
        return any(re.search(p, bundle_version) for p in self.refused_versions)

    def refusal(
        self, crd: str, old_channel: str | None, new_channel: str | None, new_version: str | None
    ) -> str:
        """Why the policy refuses writing ``crd`` so ("" when it does not)."""
        if self.refuses_version(new_version):
            return (
                f"the {SAFE_UPGRADES_POLICY} policy (from Gateway API {self.bundle_version}) refuses "
                f"bundle version {new_version} on {crd}"
            )
        if (
            self.refuses_experimental_over_standard
            and old_channel is not None
            and old_channel != "experimental"
            and new_channel != "standard"
        ):
            return (
                f"the {SAFE_UPGRADES_POLICY} policy (from Gateway API {self.bundle_version}) refuses "
                f"the experimental channel over standard {crd}"
            )
        return ""

    def floor(self, known: Iterable[str]) -> str | None:
        """The lowest of ``known`` bundle versions the policy accepts."""
        accepted = sorted((v for v in known if not self.refuses_version(v)), key=Version.parse)
        return accepted[0] if accepted else None

    def to_data(self) -> dict[str, Any]:
        return {
            "bundleVersion": self.bundle_version,
            "refusesExperimentalOverStandard": self.refuses_experimental_over_standard,
            "refusedVersions": list(self.refused_versions),
            "allowedVersions": list(self.allowed_versions),
        }

    @classmethod
    def from_data(cls, raw: Mapping[str, Any]) -> SafeUpgradesPolicy:
        return cls(
            str(raw["bundleVersion"]),
            bool(raw["refusesExperimentalOverStandard"]),
            tuple(str(p) for p in raw.get("refusedVersions", ())),
            tuple(str(p) for p in raw.get("allowedVersions", ())),
        )


@dataclass(frozen=True, slots=True)
class CRDFacts:
    name: str
    versions: tuple[tuple[str, bool, bool], ...]  # (name, served, storage), in listed order
    annotations: Mapping[str, str]  # only <group>/bundle-version and <group>/channel

    def info(self) -> CRDInfo:
        """The summary crdguard would make of this CRD once installed (the real summarizer)."""
        return summarize_crd(self.as_object())

    def as_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": CRD_KIND,
            "metadata": {"name": self.name, "annotations": dict(self.annotations)},
            "spec": {
                "versions": [{"name": n, "served": s, "storage": st} for n, s, st in self.versions],
            },
        }

    @property
    def channel(self) -> str | None:
        return next((v for k, v in self.annotations.items() if k.endswith("/channel")), None)

    @property
    def bundle_version(self) -> str | None:
        return next((v for k, v in self.annotations.items() if k.endswith("/bundle-version")), None)


@dataclass(frozen=True, slots=True)
class Release:
    """One installable release: a bundle (version + channel) or a chart version."""

    component: str
    version: str
    channel: str | None
    crds: tuple[CRDFacts, ...]
    policy: SafeUpgradesPolicy | None
    controller: str | None  # the controller version a chart runs (its image tag)
    source: str  # where the facts were read: "<repo>@<tag>", or "FACTS.md"

    @property
    def label(self) -> str:
        return f"{self.version} {self.channel}" if self.channel else self.version


@dataclass(frozen=True, slots=True)
class ReleaseSet:
    """The releases of one component, with how to install one (a command template)."""

    component: str
    kind: str  # "bundle" (kubectl apply of a file) or "chart" (a Helm chart)
    install: str  # bundle: command with {version} {channel}; chart: the chart reference
    chart_name: str | None
    release_name: str | None
    namespace: str | None
    crds_for: str | None  # a chart that installs the CRDs of this catalog component
    releases: tuple[Release, ...]

    def find(self, version: str, channel: str | None = None) -> Release | None:
        for release in self.releases:
            if release.version == version and (channel is None or release.channel == channel):
                return release
        return None

    @property
    def channels(self) -> tuple[str | None, ...]:
        return tuple(dict.fromkeys(r.channel for r in self.releases))


def crd_facts(obj: Mapping[str, Any]) -> CRDFacts:
    meta = obj.get("metadata") or {}
    annotations = {
        str(k): str(v)
        for k, v in (meta.get("annotations") or {}).items()
        if str(k).endswith("/bundle-version") or str(k).endswith("/channel")
    }
    versions = tuple(
        (str(v["name"]), v.get("served") is True, v.get("storage") is True)
        for v in (obj.get("spec") or {}).get("versions") or []
    )
    return CRDFacts(str(meta.get("name")), versions, annotations)


def policy_facts(obj: Mapping[str, Any]) -> SafeUpgradesPolicy:
    """Read what the safe-upgrades policy's CEL refuses (its tag's own expressions)."""
    meta = obj.get("metadata") or {}
    bundle_version = next(
        (str(v) for k, v in (meta.get("annotations") or {}).items() if str(k).endswith("/bundle-version")),
        "",
    )
    refused: list[str] = []
    allowed: list[str] = []
    over_standard = False
    for validation in (obj.get("spec") or {}).get("validations") or []:
        expression = str(validation.get("expression", ""))
        if "'experimental'" in expression and "oldObject" in expression:
            over_standard = True
        for negated, pattern in _MATCHES.findall(expression):
            # YAML and CEL each unescape once: '\\\\d' in the file is the regex \d.
            regex = pattern.replace("\\\\", "\\")
            (refused if negated else allowed).append(regex)
    if not refused and not over_standard:
        raise ReleaseDataError(f"{meta.get('name')}: no bundle-version or channel check found in its CEL")
    return SafeUpgradesPolicy(
        bundle_version.removesuffix("-dev"), over_standard, tuple(refused), tuple(allowed)
    )


def bundle_facts(objects: Iterable[Mapping[str, Any]]) -> tuple[list[CRDFacts], SafeUpgradesPolicy | None]:
    """The CRDs (in install order) and the safe-upgrades policy, if any, of one upstream bundle."""
    crds: list[CRDFacts] = []
    policy = None
    for obj in objects:
        if obj.get("kind") == CRD_KIND:
            crds.append(crd_facts(obj))
        elif (
            obj.get("kind") == _POLICY_KIND
            and (obj.get("metadata") or {}).get("name") == SAFE_UPGRADES_POLICY
        ):
            policy = policy_facts(obj)
    return crds, policy


def release_to_data(release: Release) -> dict[str, Any]:
    data: dict[str, Any] = {"version": release.version}
    if release.channel:
        data["channel"] = release.channel
    if release.controller:
        data["controller"] = release.controller
    data["source"] = release.source
    data["crds"] = [
        {
            "name": c.name,
            **({"annotations": dict(c.annotations)} if c.annotations else {}),
            "versions": [{"name": n, "served": s, "storage": st} for n, s, st in c.versions],
        }
        for c in release.crds
    ]
    if release.policy is not None:
        data["safeUpgrades"] = release.policy.to_data()
    return data


def release_set_from_data(raw: Mapping[str, Any], where: str) -> ReleaseSet:
    try:
        component = str(raw["component"])
        releases = tuple(
            Release(
                component=component,
                version=str(r["version"]),
                channel=r.get("channel"),
                crds=tuple(
                    CRDFacts(
                        str(c["name"]),
                        tuple((str(v["name"]), bool(v["served"]), bool(v["storage"])) for v in c["versions"]),
                        {str(k): str(v) for k, v in (c.get("annotations") or {}).items()},
                    )
                    for c in r.get("crds") or []
                ),
                policy=SafeUpgradesPolicy.from_data(r["safeUpgrades"]) if r.get("safeUpgrades") else None,
                controller=r.get("controller"),
                source=str(r.get("source", "")),
            )
            for r in raw["releases"]
        )
        return ReleaseSet(
            component=component,
            kind=str(raw["kind"]),
            install=str(raw["install"]),
            chart_name=raw.get("chartName"),
            release_name=raw.get("releaseName"),
            namespace=raw.get("namespace"),
            crds_for=raw.get("crdsFor"),
            releases=releases,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReleaseDataError(f"{where}: malformed release data ({exc!r})") from None
