"""Semantic versions and version ranges, tolerant of a leading ``v``.

Kubernetes ecosystems write versions both ways (chart ``v2.1.1``, image tag
``2.1.1``), so parsing accepts either and comparison ignores the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

# Strict semver identifiers: a numeric pre-release identifier has no leading zero ("1.0.0-01" is not
# semver), and no identifier is empty ("1.0.0-a..b").
_PRE_ID = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_VERSION = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?$"
)
_COMPARATOR = re.compile(r"^(?P<op>>=|<=|!=|==|=|>|<)?\s*(?P<version>v?[0-9][0-9A-Za-z.+-]*)$")


class VersionError(ValueError):
    """A version or range that cannot be parsed."""


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.match(text.strip())
        if match is None:
            raise VersionError(f"not a semantic version: {text!r}")
        pre = match["pre"]
        return cls(
            int(match["major"]),
            int(match["minor"] or 0),
            int(match["patch"] or 0),
            tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else (),
        )

    @classmethod
    def exact(cls, text: str | None) -> Version | None:
        """The version if ``text`` names exactly one (``v2.0.4``), else None (``*``, ``>=2``)."""
        # A partial version ("2.1") is a range to Helm and Flux, not one release.
        if not text or re.split(r"[-+]", text.lstrip("v"), maxsplit=1)[0].count(".") != 2:
            return None
        try:
            return cls.parse(text)
        except VersionError:
            return None

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its pre-releases; numeric identifiers before alphanumeric.
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            core += "-" + ".".join(str(p) for p in self.prerelease)
        return core


@dataclass(frozen=True, slots=True)
class VersionRange:
    """A conjunction of comparators, e.g. ``>=2.0.0 <2.1.0``; empty text matches everything."""

    text: str
    comparators: tuple[tuple[str, Version], ...]
    # Membership per version, computed once: judging asks the same few versions again and again.
    _members: dict[Version, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if text.strip() == "*":
            return cls("", ())
        parts = [p for p in re.split(r"[\s,]+", re.sub(r"(>=|<=|!=|==|=|>|<)\s+", r"\1", text))]
        comparators = []
        for part in filter(None, parts):
            match = _COMPARATOR.match(part)
            if match is None:
                raise VersionError(f"not a version constraint: {part!r} in {text!r}")
            op = match["op"] or "="
            comparators.append(("=" if op == "==" else op, Version.parse(match["version"])))
        return cls(text.strip(), tuple(comparators))

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, Version):
            return False
        member = self._members.get(version)
        if member is None:
            if len(self._members) >= _MEMO_LIMIT:
                self._members.clear()  # bounded: versions come from the cluster, not only the catalog
            member = self._members[version] = self._contains(version)
        return member

    def _contains(self, version: Version) -> bool:
        # A pre-release belongs to the line it leads up to: 2.1.0-rc.1 is built from 2.1 code,
        # so it matches ">=2.1.0", not "<2.1.0" (strict semver would say the opposite). A bound
        # that is itself a pre-release ("=2.1.0-rc.1", ">=2.1.0-rc.2") names pre-releases on
        # purpose: against it the whole version is compared.
        release = Version(version.major, version.minor, version.patch)
        return all(
            _OPS[op](version if bound.prerelease else release, bound) for op, bound in self.comparators
        )

    def __str__(self) -> str:
        return self.text or "*"


_MEMO_LIMIT = 1024

_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
