"""Semantic versions as charts, images and Flux write them: with or without ``v``, exact or a range."""

from __future__ import annotations

import itertools

import pytest

from webhook.rules.versions import Version, VersionError, VersionRange


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2.1.1", Version(2, 1, 1), id="a plain version parses"),
        pytest.param("v2.1.1", Version(2, 1, 1), id="a leading v is ignored"),
        pytest.param("  v1.4.0 ", Version(1, 4, 0), id="surrounding blanks are ignored"),
        pytest.param("v2.1.0-rc.1", Version(2, 1, 0, ("rc", 1)), id="a prerelease keeps its identifiers"),
        pytest.param("1.0.0-0a.10", Version(1, 0, 0, ("0a", 10)), id="an alphanumeric id may start with 0"),
        pytest.param(
            "1.0.0-alpha.beta", Version(1, 0, 0, ("alpha", "beta")), id="alphanumeric ids stay text"
        ),
        pytest.param("2.1.1+build.5", Version(2, 1, 1), id="build metadata is dropped"),
        pytest.param("2", Version(2, 0, 0), id="a major alone fills minor and patch with zero"),
        pytest.param("v2.1", Version(2, 1, 0), id="a major and minor fill patch with zero"),
        pytest.param("0.0.0", Version(0, 0, 0), id="zeros are valid"),
    ],
)
def test_parse_reads_semver_with_or_without_v(text: str, expected: Version) -> None:
    assert Version.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty text is not a version"),
        pytest.param("v", id="a bare v is not a version"),
        pytest.param("latest", id="an image tag word is not a version"),
        pytest.param("2.1.1.1", id="four numbers are not a version"),
        pytest.param("01.2.3", id="a leading zero is not semver"),
        pytest.param("2.1.x", id="a wildcard is not a version"),
        pytest.param(">=2.0.0", id="a comparator is not a version"),
        pytest.param("*", id="a star is not a version"),
        pytest.param("@sha256:abcdef", id="a digest is not a version"),
        pytest.param("2.1.1-", id="an empty prerelease is not a version"),
        pytest.param("1.0.0-01", id="a numeric prerelease identifier with a leading zero is not semver"),
        pytest.param("1.0.0-rc.01", id="a later numeric identifier with a leading zero is not semver"),
        pytest.param("1.0.0-a..b", id="an empty prerelease identifier is not semver"),
        pytest.param("1.0.0+a..b", id="an empty build identifier is not semver"),
    ],
)
def test_parse_refuses_what_is_not_a_version(text: str) -> None:
    with pytest.raises(VersionError, match="not a semantic version"):
        Version.parse(text)


# The precedence example of semver.org section 11, in increasing order.
SEMVER_SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        *[
            pytest.param(a, b, id=f"{a} sorts before {b} as semver.org says")
            for a, b in itertools.pairwise(SEMVER_SPEC_ORDER)
        ],
        pytest.param("v2.1.0-rc.1", "2.1.0", id="a release candidate sorts before its release"),
        pytest.param("2.0.4", "v2.1.0", id="the 2.0 line sorts before 2.1 whatever the prefix"),
        pytest.param("2.9.0", "2.10.0", id="minor versions compare as numbers not text"),
        pytest.param("1.0.0-2", "1.0.0-10", id="numeric prerelease ids compare as numbers"),
        pytest.param("1.0.0-999", "1.0.0-a", id="numeric prerelease ids sort before alphanumeric ones"),
    ],
)
def test_ordering_follows_semver_precedence(lower: str, higher: str) -> None:
    assert Version.parse(lower) < Version.parse(higher)
    assert Version.parse(higher) > Version.parse(lower)
    assert Version.parse(lower) != Version.parse(higher)


def test_sorting_the_semver_spec_list_keeps_its_order() -> None:
    shuffled = list(reversed(SEMVER_SPEC_ORDER))
    assert [str(v) for v in sorted(Version.parse(t) for t in shuffled)] == SEMVER_SPEC_ORDER


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("v2.1.1", "2.1.1", id="the v prefix does not change equality"),
        pytest.param("2.1.1+build.1", "2.1.1+build.2", id="build metadata does not change equality"),
        pytest.param("2.1", "2.1.0", id="a partial version equals its zero-filled form"),
    ],
)
def test_equal_versions(a: str, b: str) -> None:
    assert Version.parse(a) == Version.parse(b)
    assert not Version.parse(a) < Version.parse(b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("v2.0.4", Version(2, 0, 4), id="a chart version with v is exact"),
        pytest.param("2.1.1", Version(2, 1, 1), id="an image tag without v is exact"),
        pytest.param("v2.1.0-rc.1", Version(2, 1, 0, ("rc", 1)), id="a prerelease is exact"),
        pytest.param("2.1.1+build.7", Version(2, 1, 1), id="build metadata with dots is still exact"),
        pytest.param("*", None, id="a star is a range not one release"),
        pytest.param(">=2.0.0", None, id="a lower bound is a range not one release"),
        pytest.param(">=2.0.0 <2.1.0", None, id="a bounded range is not one release"),
        pytest.param("~2.1.0", None, id="a tilde range is not one release"),
        pytest.param("^2.1.0", None, id="a caret range is not one release"),
        pytest.param("2.1.x", None, id="an x range is not one release"),
        pytest.param("2.1.1 - 2.2.0", None, id="a hyphen range is not one release"),
        pytest.param("2.1", None, id="a partial version is a range to Helm and Flux"),
        pytest.param("2", None, id="a major version alone is a range"),
        pytest.param("latest", None, id="latest is not a version"),
        pytest.param("@sha256:0123abcd", None, id="a digest is not a version"),
        pytest.param("", None, id="empty text is not a version"),
        pytest.param(None, None, id="no text is not a version"),
    ],
)
def test_exact_accepts_one_release_and_refuses_ranges(text: str | None, expected: Version | None) -> None:
    assert Version.exact(text) == expected


@pytest.mark.parametrize(
    ("text", "version", "inside"),
    [
        pytest.param(">=2.0.0 <2.1.0", "2.0.0", True, id="a lower bound is inclusive"),
        pytest.param(">=2.0.0 <2.1.0", "v2.0.4", True, id="a version inside a bounded range matches"),
        pytest.param(">=2.0.0 <2.1.0", "2.1.0", False, id="an upper bound is exclusive"),
        pytest.param(">=2.0.0 <2.1.0", "1.9.9", False, id="a version below the range does not match"),
        pytest.param(
            ">=2.0.0 <2.1.0", "2.1.0-rc.1", False, id="a release candidate is not in the line before it"
        ),
        pytest.param(">=2.1.0", "2.1.0-rc.1", True, id="a release candidate belongs to the line it leads to"),
        pytest.param(">=2.0.0 <2.1.0", "2.0.5-beta.2", True, id="a 2.0 pre-release is in the 2.0 line"),
        pytest.param(">=2.1.0", "v2.2.0", True, id="an open range matches later versions"),
        pytest.param(">= 2.0.0, < 2.1.0", "2.0.5", True, id="blanks after operators and commas are fine"),
        pytest.param("=2.1.1", "v2.1.1", True, id="an equality matches the same version with v"),
        pytest.param("==2.1.1", "2.1.2", False, id="a double equals is an equality"),
        pytest.param("2.1.1", "2.1.1", True, id="a bare version is an equality"),
        pytest.param("!=2.1.1", "2.1.1", False, id="an inequality excludes its version"),
        pytest.param("!=2.1.1", "2.1.2", True, id="an inequality keeps other versions"),
        pytest.param(">2.1.1", "2.1.1", False, id="a strict lower bound excludes itself"),
        pytest.param("<=2.1.1", "2.1.1", True, id="an inclusive upper bound includes itself"),
        pytest.param("<2.1", "2.0.9", True, id="a partial bound is zero-filled"),
        pytest.param("", "0.0.1", True, id="an empty range matches everything"),
        pytest.param("=2.1.0-rc.1", "2.1.0-rc.1", True, id="a pre-release bound matches that pre-release"),
        pytest.param("=2.1.0-rc.1", "2.1.0-rc.2", False, id="a pre-release bound is not its neighbour"),
        pytest.param("=2.1.0-rc.1", "2.1.0", False, id="a pre-release bound is not its release"),
        pytest.param(">=2.1.0-rc.2", "2.1.0-rc.1", False, id="an earlier candidate is below a bound"),
        pytest.param(">=2.1.0-rc.2", "2.1.0", True, id="the release is above its candidate bound"),
        pytest.param("<2.1.0-rc.1", "2.1.0-beta.3", True, id="a beta is below a candidate bound"),
        pytest.param("*", "9.9.9", True, id="a star range matches everything"),
    ],
)
def test_range_membership(text: str, version: str, inside: bool) -> None:
    assert (Version.parse(version) in VersionRange.parse(text)) is inside


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("~2.1", id="tilde ranges are not supported"),
        pytest.param(">=2.0.0 || <1.0.0", id="alternatives are not supported"),
        pytest.param("latest", id="a word is not a constraint"),
        pytest.param(">=", id="an operator without a version is not a constraint"),
        pytest.param(">=2.0.x", id="a wildcard bound is not a constraint"),
    ],
)
def test_range_parse_refuses_what_it_cannot_judge(text: str) -> None:
    with pytest.raises(VersionError):
        VersionRange.parse(text)


def test_range_matches_only_versions() -> None:
    assert "2.1.1" not in VersionRange.parse("")
    assert None not in VersionRange.parse("*")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("", "*", id="an empty range reads as a star"),
        pytest.param("*", "*", id="a star range reads as a star"),
        pytest.param(" >=2.1.0 ", ">=2.1.0", id="a range reads as written without blanks around"),
    ],
)
def test_range_text(text: str, shown: str) -> None:
    assert str(VersionRange.parse(text)) == shown


def test_version_text_drops_the_prefix() -> None:
    assert str(Version.parse("v2.1.0-rc.1")) == "2.1.0-rc.1"
