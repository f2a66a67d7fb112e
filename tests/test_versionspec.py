"""Tests for modgate.versionspec: syntax, normal forms, matching and errors."""

import dataclasses
import re

import pytest

from modgate.versionspec import Comparator, VersionSpec, parse_spec

PSEUDO_V2_UNTAGGED = "v2.0.0-20191109021931-daa7c04131f5"
PSEUDO_V0_UNTAGGED = "v0.0.0-20191109021931-daa7c04131f5"
PSEUDO_AFTER_V123 = "v1.2.4-0.20191109021931-daa7c04131f5"
PSEUDO_AFTER_V003 = "v0.0.4-0.20191109021931-daa7c04131f5"

NORMAL_FORMS = [
    # (text, str(parse_spec(text)))
    ("*", "*"),
    ("x", "*"),
    ("X", "*"),
    ("v1.2.3", "v1.2.3"),
    ("1.2.3", "v1.2.3"),
    ("=v1.2.3", "v1.2.3"),
    ("=1.2.3", "v1.2.3"),
    ("v1.2.3+meta", "v1.2.3"),
    ("v2.0.0+incompatible", "v2.0.0+incompatible"),
    ("v1.2.3-rc.1", "v1.2.3-rc.1"),
    ("!=v1.3.0", "!=v1.3.0"),
    (">=v1.2.0", ">=v1.2.0"),
    (">=1.2", ">=v1.2.0"),
    (">= 1.2", ">=v1.2.0"),
    (">1.2.3", ">v1.2.3"),
    (">1.2", ">=v1.3.0-0"),
    (">1", ">=v2.0.0-0"),
    ("<2.0.0", "<v2.0.0-0"),
    ("<v2.0.0+incompatible", "<v2.0.0-0"),
    ("<v2.0.0-rc.1", "<v2.0.0-rc.1"),
    ("<1.2", "<v1.2.0-0"),
    ("<=1.2.3", "<=v1.2.3"),
    ("<=1.2", "<v1.3.0-0"),
    ("<=v1", "<v2.0.0-0"),
    ("=1.2", ">=v1.2.0 <v1.3.0-0"),
    ("v1.2", ">=v1.2.0 <v1.3.0-0"),
    ("1.2.x", ">=v1.2.0 <v1.3.0-0"),
    ("1.2.*", ">=v1.2.0 <v1.3.0-0"),
    ("1.x", ">=v1.0.0 <v2.0.0-0"),
    ("1.x.x", ">=v1.0.0 <v2.0.0-0"),
    ("v1.*", ">=v1.0.0 <v2.0.0-0"),
    ("v1.X", ">=v1.0.0 <v2.0.0-0"),
    ("v1", ">=v1.0.0 <v2.0.0-0"),
    ("0.x", ">=v0.0.0 <v1.0.0-0"),
    ("^1.2.3", ">=v1.2.3 <v2.0.0-0"),
    ("^0.2.3", ">=v0.2.3 <v0.3.0-0"),
    ("^0.0.3", ">=v0.0.3 <v0.0.4-0"),
    ("^0.0.0", ">=v0.0.0 <v0.0.1-0"),
    ("^1.2", ">=v1.2.0 <v2.0.0-0"),
    ("^0.2", ">=v0.2.0 <v0.3.0-0"),
    ("^0.0", ">=v0.0.0 <v0.1.0-0"),
    ("^1", ">=v1.0.0 <v2.0.0-0"),
    ("^0", ">=v0.0.0 <v1.0.0-0"),
    ("^v1.2.3-beta.2", ">=v1.2.3-beta.2 <v2.0.0-0"),
    ("^2.0.0+incompatible", ">=v2.0.0+incompatible <v3.0.0-0"),
    ("^9.0.0", ">=v9.0.0 <v10.0.0-0"),
    ("^99999999999999999999.0.0", ">=v99999999999999999999.0.0 <v100000000000000000000.0.0-0"),
    ("~1.4.0", ">=v1.4.0 <v1.5.0-0"),
    ("~1.4.7", ">=v1.4.7 <v1.5.0-0"),
    ("~0.0.3", ">=v0.0.3 <v0.1.0-0"),
    ("~1.4", ">=v1.4.0 <v1.5.0-0"),
    ("~1", ">=v1.0.0 <v2.0.0-0"),
    ("~v1.9.0", ">=v1.9.0 <v1.10.0-0"),
    ("~ 1.4.0", ">=v1.4.0 <v1.5.0-0"),
    (">=1.2.0 <2.0.0", ">=v1.2.0 <v2.0.0-0"),
    (">=1.2.0,<2.0.0", ">=v1.2.0 <v2.0.0-0"),
    (">=1.2.0, <2.0.0 !=1.4.0", ">=v1.2.0 <v2.0.0-0 !=v1.4.0"),
    ("  >=1.2.0\t<2.0.0  ", ">=v1.2.0 <v2.0.0-0"),
    ("* >=1", ">=v1.0.0"),
    ("1.x || >=3.0.0", ">=v1.0.0 <v2.0.0-0 || >=v3.0.0"),
    ("1.2.3||1.2.5", "v1.2.3 || v1.2.5"),
    ("* || 1.2.3", "* || v1.2.3"),
]


@pytest.mark.parametrize(("text", "normal"), NORMAL_FORMS)
def test_normal_form(text: str, normal: str) -> None:
    spec = parse_spec(text)
    assert str(spec) == normal
    assert parse_spec(normal) == spec


def test_parsed_structure() -> None:
    assert parse_spec("^1.2.3 || !=v0.1.0") == VersionSpec(
        (
            (Comparator(">=", "v1.2.3"), Comparator("<", "v2.0.0-0")),
            (Comparator("!=", "v0.1.0"),),
        )
    )
    assert parse_spec("*") == VersionSpec(((),))


MATCHES = [
    # (range, version, matches)
    ("*", "v1.2.3", True),
    ("*", PSEUDO_V0_UNTAGGED, True),
    ("*", "v2.0.0+incompatible", True),
    # exact: Go's Compare ignores build metadata
    ("v1.2.3", "v1.2.3", True),
    ("v1.2.3", "v1.2.3+meta", True),
    ("1.2.3", "v1.2.3", True),
    ("=v1.2.3", "v1.2.4", False),
    ("v1.2.3", "v1.2.3-rc.1", False),
    ("v2.0.0+incompatible", "v2.0.0+incompatible", True),
    ("v2.0.0+incompatible", "v2.0.0", True),
    ("v1.2.3-rc.1", "v1.2.3-rc.1", True),
    ("v1.2.3-rc.1", "v1.2.3", False),
    ("!=v1.3.0", "v1.3.0", False),
    ("!=v1.3.0", "v1.3.0+meta", False),
    ("!=v1.3.0", "v1.3.0-rc.1", True),
    ("!=v1.3.0", "v1.3.1", True),
    # >= and >
    (">=v1.2.0", "v1.2.0", True),
    (">=v1.2.0", "v1.2.0-rc.1", False),
    (">=v1.2.0", "v1.1.9", False),
    (">=v1.2.0", "v10.0.0", True),
    (">=1.2", "v1.2.0-rc.1", False),
    (">v1.2.3", "v1.2.3", False),
    (">v1.2.3", "v1.2.3+meta", False),
    (">v1.2.3", PSEUDO_AFTER_V123, True),
    (">1.2", "v1.2.99", False),
    (">1.2", "v1.3.0-rc.1", True),
    (">1.2", "v1.3.0", True),
    # < keeps pre-releases and pseudo-versions of the bound out
    ("<2.0.0", "v1.99.0", True),
    ("<2.0.0", "v2.0.0-rc.1", False),
    ("<2.0.0", PSEUDO_V2_UNTAGGED, False),
    ("<2.0.0", "v2.0.0", False),
    ("<1.2.4", PSEUDO_AFTER_V123, False),
    ("<1.0.0", PSEUDO_V0_UNTAGGED, True),
    ("<v2.0.0-rc.1", "v2.0.0-beta", True),
    ("<v2.0.0-rc.1", "v2.0.0-rc.1", False),
    ("<1.2", "v1.1.9", True),
    ("<1.2", "v1.2.0-rc.1", False),
    ("<1.2", "v1.2.0", False),
    ("<=v1.2.3", "v1.2.3", True),
    ("<=v1.2.3", "v1.2.3-rc.1", True),
    ("<=v1.2.3", PSEUDO_AFTER_V123, False),
    ("<=1.2", "v1.2.99", True),
    ("<=1.2", "v1.3.0-rc.1", False),
    # series
    ("1.2.x", "v1.2.0", True),
    ("1.2.x", "v1.2.99", True),
    ("1.2.x", "v1.2.0-rc.1", False),
    ("1.2.x", "v1.3.0-rc.1", False),
    ("1.2.x", PSEUDO_AFTER_V123, True),
    ("1.2.x", "v1.2", True),
    ("v1.*", "v1.0.0", True),
    ("v1.*", "v0.9.0", False),
    ("v1.*", "v2.0.0", False),
    ("2.x", "v2.1.0+incompatible", True),
    ("2.x", "v3.0.0+incompatible", False),
    ("2.x", PSEUDO_V2_UNTAGGED, False),
    ("0.x", PSEUDO_V0_UNTAGGED, False),
    # caret
    ("^1.2.3", "v1.2.3", True),
    ("^1.2.3", "v1.2.2", False),
    ("^1.2.3", "v1.9.9", True),
    ("^1.2.3", "v1.5.0-beta", True),
    ("^1.2.3", PSEUDO_AFTER_V123, True),
    ("^1.2.3", "v1.2.3-rc.1", False),
    ("^1.2.3", "v2.0.0", False),
    ("^1.2.3", "v2.0.0-rc.1", False),
    ("^1.2.3", PSEUDO_V2_UNTAGGED, False),
    ("^1.2.3", "v2.0.0+incompatible", False),
    ("^1.2.3", "v1.3", True),
    ("^0.2.3", "v0.2.3", True),
    ("^0.2.3", "v0.2.9", True),
    ("^0.2.3", "v0.3.0-rc.1", False),
    ("^0.2.3", "v0.2.2", False),
    ("^0.0.3", "v0.0.3", True),
    ("^0.0.3", "v0.0.4", False),
    ("^0.0.3", PSEUDO_AFTER_V003, False),
    ("^1.2.3-beta.2", "v1.2.3-beta.11", True),
    ("^1.2.3-beta.2", "v1.2.3-alpha", False),
    ("^1.2.3-beta.2", "v1.2.3", True),
    ("^2.0.0+incompatible", "v2.3.0+incompatible", True),
    ("^2.0.0+incompatible", "v3.0.0+incompatible", False),
    ("^99999999999999999999.0.0", "v99999999999999999999.5.0", True),
    ("^99999999999999999999.0.0", "v100000000000000000000.0.0", False),
    # tilde
    ("~1.4.0", "v1.4.7", True),
    ("~1.4.0", "v1.3.9", False),
    ("~1.4.0", "v1.5.0", False),
    ("~1.4.0", "v1.5.0-rc.1", False),
    ("~1", "v1.99.0", True),
    ("~1", "v1.0.0-rc.1", False),
    ("~1", "v2.0.0-rc.1", False),
    # AND and OR
    (">=1.2.0 <2.0.0", "v1.5.0-beta", True),
    (">=1.2.0 <2.0.0", PSEUDO_AFTER_V123, True),
    (">=1.2.0 <2.0.0", "v2.0.0", False),
    (">=1.2.0, <2.0.0 !=1.4.0", "v1.4.0", False),
    (">=1.2.0, <2.0.0 !=1.4.0", "v1.4.1", True),
    ("1.x || >=3.0.0", "v1.5.0", True),
    ("1.x || >=3.0.0", "v2.0.0", False),
    ("1.x || >=3.0.0", "v3.1.0", True),
]


@pytest.mark.parametrize(("text", "version", "expected"), MATCHES)
def test_matches(text: str, version: str, expected: bool) -> None:
    assert parse_spec(text).matches(version) is expected


@pytest.mark.parametrize("version", ["", "master", "1.2.3", "v1.2.3-", "v1.2+meta", "latest"])
def test_matches_refuses_what_is_not_a_version(version: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(repr(version))} is not a semantic version"):
        parse_spec("*").matches(version)


NOT_A_VERSION = "is not a version; expected a version such as v1.2.3, 1.2.3, v1.2, 1.x or \\*"

ERRORS = [
    # (text, what the message says after "'<text>' is not a version range: ")
    ("", "it is empty; write \\* for any version"),
    ("  ", "it is empty; write \\* for any version"),
    ("^v1.x", "'\\^v1.x': \\^ takes a version such as v1.2.3 or v1.2, not a wildcard"),
    ("~1.*", "'~1.\\*': ~ takes a version such as v1.2.3 or v1.2, not a wildcard"),
    ("1.2.3 ||", "'\\|\\|' needs a range on each side"),
    ("|| 1.2.3", "'\\|\\|' needs a range on each side"),
    ("1.2.3 || , || 1.2.4", "'\\|\\|' needs a range on each side"),
    (">=", "'>=' needs a version after it"),
    ("1.2 <", "'<' needs a version after it"),
    ("!=1.2", "'!=1.2': != needs a full version such as v1.3.0"),
    ("!=v1.x", "'!=v1.x': != needs a full version such as v1.3.0"),
    (">=*", "'>=\\*': >= needs a version, not a wildcard"),
    ("<x", "'<x': < needs a version, not a wildcard"),
    ("^*", "'\\^\\*': \\^ needs a version, not a wildcard"),
    ("1.x.3", f"'1.x.3' {NOT_A_VERSION}"),
    ("x.1", f"'x.1' {NOT_A_VERSION}"),
    ("v01.2.3", f"'v01.2.3' {NOT_A_VERSION}"),
    ("1.2.3-01", f"'1.2.3-01' {NOT_A_VERSION}"),
    ("1.2.3-", f"'1.2.3-' {NOT_A_VERSION}"),
    ("1.2.3.4", f"'1.2.3.4' {NOT_A_VERSION}"),
    ("1..2", f"'1..2' {NOT_A_VERSION}"),
    ("abc", f"'abc' {NOT_A_VERSION}"),
    ("v", f"'v' {NOT_A_VERSION}"),
    ("vx", f"'vx' {NOT_A_VERSION}"),
    ("vv1.2.3", f"'vv1.2.3' {NOT_A_VERSION}"),
    ("V1.2.3", f"'V1.2.3' {NOT_A_VERSION}"),
    ("1.2-rc", f"'1.2-rc' {NOT_A_VERSION}"),
    ("1.2+meta", f"'1.2\\+meta' {NOT_A_VERSION}"),
    ("1.2.x-rc", f"'1.2.x-rc' {NOT_A_VERSION}"),
    ("1.0 | 2.0", f"'\\|' {NOT_A_VERSION}"),
    ("1.2.3 - 2.0.0", f"'-' {NOT_A_VERSION}"),
    (">=>=1.0", f"'>=1.0' {NOT_A_VERSION}"),
    ("=>1.0", f"'>1.0' {NOT_A_VERSION}"),
    (">=1.2.0 <2.0.0 latest", f"'latest' {NOT_A_VERSION}"),
]


@pytest.mark.parametrize(("text", "problem"), ERRORS)
def test_errors_quote_the_input_and_say_what_is_expected(text: str, problem: str) -> None:
    with pytest.raises(
        ValueError, match=f"^{re.escape(repr(text))} is not a version range: {problem}$"
    ):
        parse_spec(text)


def test_spec_is_frozen_and_hashable() -> None:
    spec = parse_spec("^1.2.3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.alternatives = ()  # type: ignore[misc]
    assert len({spec, parse_spec(">=v1.2.3 <v2.0.0-0"), parse_spec("1.x")}) == 2
