"""modgate.gomod: requirements, replacements and retractions of go.mod; go.sum lines."""

from __future__ import annotations

import pytest

from modgate.errors import ModgateError
from modgate.gomod import (
    GoModError,
    Replacement,
    Requirement,
    Retraction,
    parse_gomod,
    parse_gosum,
    retracted_by,
)

GOMOD = """\
module example.com/app // the main module

go 1.21

require golang.org/x/text v0.14.0

require (
	github.com/acme/lib v1.2.3
	github.com/acme/old v0.1.0 // indirect
	"github.com/acme/quoted" v1.0.0
)

replace github.com/acme/lib => ../lib

replace (
	github.com/acme/old v0.1.0 => github.com/fork/old v0.1.1
)

// Published with a broken build.
retract v1.0.0

retract [v1.1.0, v1.1.5] // leaks credentials

// Block rationale.
retract (
	v1.3.0 // own rationale
	// line above
	v1.4.0

	v1.5.0
)
"""


def test_requirements_replacements_and_retractions() -> None:
    gomod = parse_gomod(GOMOD)
    assert gomod.module == "example.com/app"
    assert gomod.go == "1.21"
    assert parse_gomod("module a.test/m\n").go == ""
    assert gomod.requires == (
        Requirement("golang.org/x/text", "v0.14.0"),
        Requirement("github.com/acme/lib", "v1.2.3"),
        Requirement("github.com/acme/old", "v0.1.0", indirect=True),
        Requirement("github.com/acme/quoted", "v1.0.0"),
    )
    assert gomod.replaces == (
        Replacement("github.com/acme/lib", "", "../lib", ""),
        Replacement("github.com/acme/old", "v0.1.0", "github.com/fork/old", "v0.1.1"),
    )
    assert gomod.retractions == (
        Retraction("v1.0.0", "v1.0.0", "Published with a broken build."),
        Retraction("v1.1.0", "v1.1.5", "leaks credentials"),
        Retraction("v1.3.0", "v1.3.0", "own rationale"),
        Retraction("v1.4.0", "v1.4.0", "line above"),
        Retraction("v1.5.0", "v1.5.0", "Block rationale."),
    )


@pytest.mark.parametrize(
    ("version", "covered_by"),
    [("v1.0.0", "v1.0.0"), ("v1.1.0", "[v1.1.0, v1.1.5]"), ("v1.1.3", "[v1.1.0, v1.1.5]"),
     ("v1.1.5", "[v1.1.0, v1.1.5]"), ("v1.1.6", None), ("v0.9.0", None), ("v1.5.0", "v1.5.0")],
)  # fmt: skip
def test_retracted_by(version: str, covered_by: str | None) -> None:
    found = retracted_by(version, parse_gomod(GOMOD).retractions)
    assert (str(found) if found else None) == covered_by


@pytest.mark.parametrize(
    ("text", "message"),
    [("require example.com/x\n", "line 1: expected 'require module/path v1.2.3'"),
     ("replace a => \n", "line 1: expected 'replace module"),
     ("require (\n\texample.com/x vX\n)\n", "line 2: expected 'require")],
)  # fmt: skip
def test_malformed_directives_name_the_line(text: str, message: str) -> None:
    with pytest.raises(GoModError, match=message):
        parse_gomod(text)


@pytest.mark.parametrize(
    ("text", "retractions"),
    [('module example.com/m\n"//"\nretract v1.0.0\n', ("v1.0.0",)),
     ('retract v1.0.0\n"//" // a comment\n"\\"//"\n', ("v1.0.0",)),
     ('retract (\n\tv1.0.0\n)\n"//"\n`//`\n', ("v1.0.0",)),
     ('"retract" v1.1.0\nretract v1.0.0 // "quoted" //\n', ("v1.0.0",)),
     ("retract [v1.0.0,v1.0.5]\r\nretract v1.1.0\r\n", ("[v1.0.0, v1.0.5]", "v1.1.0"))],
)  # fmt: skip
def test_lines_are_lexed_as_go_lexes_them(text: str, retractions: tuple[str, ...]) -> None:
    """modfile's lexer: "//" inside a quoted string is no comment, and a line whose first
    token is a string is a directive go does not know (ParseLax skips it)."""
    assert tuple(str(r) for r in parse_gomod(text).retractions) == retractions


@pytest.mark.parametrize(
    ("text", "read", "retracted"),
    [("retract [v1.0.0, v1.1.0\nretract v2.0.0 // kept\n", ["v2.0.0"], ["v2.0.0"]),
     ("retract v1.0.0 (\n\tv1.1.0\n)\nretract [v1.0.0]\nretract\nretract v2.0.0\n", ["v2.0.0"], ["v2.0.0"]),
     ("retract ()\nretract (\n\t[v1.0.0, v1.0.1]\n)\n", ["[v1.0.0, v1.0.1]"], ["v1.0.0", "v1.0.1"]),
     ("retract v1.0.0 and more\n", ["v1.0.0"], ["v1.0.0"]),
     ("retract latest\n", ["latest"], []),
     ("retract [bogus, v1.0.0]\n", ["[bogus, v1.0.0]"], ["v0.1.0", "v1.0.0"])],
)  # fmt: skip
def test_retractions_are_read_as_go_reads_a_dependencys_go_mod(
    text: str, read: list[str], retracted: list[str]
) -> None:
    """modfile.ParseLax, which go uses for every go.mod but the main module's: an interval
    it cannot read is skipped (the rest are kept), tokens after one are ignored, and any
    string is a version, compared as semver.Compare does (invalid before valid)."""
    retractions = parse_gomod(text).retractions
    assert [str(r) for r in retractions] == read
    for version in ["v0.1.0", "v1.0.0", "v1.0.1", "v2.0.0", "v3.0.0"]:
        assert (retracted_by(version, retractions) is not None) == (version in retracted), version


def test_a_quoted_path_keeps_its_slashes() -> None:
    gomod = parse_gomod('require "example.com/a//b" v1.0.0 // indirect\n')
    assert gomod.requires == (Requirement("example.com/a//b", "v1.0.0", indirect=True),)


@pytest.mark.parametrize(
    ("text", "message"),
    [('retract "v1.0.0\n', "line 1: unterminated string"),
     ('module m\nrequire "example.com/x v1.0.0\\"\n', "line 2: unterminated string"),
     ("module m /* no */\n", "line 1: mod files must use // comments"),
     ("module m\nrequire (\n\tx.com/y v1.0.0\n", "line 2: block is never closed"),
     ("require (\n) x\n", "line 2: expected newline after closing paren"),
     ("module m\x00\n", r"line 1: unexpected character '\\x00'")],
)  # fmt: skip
def test_what_go_cannot_lex_is_a_modgate_error(text: str, message: str) -> None:
    with pytest.raises(GoModError, match=message) as raised:
        parse_gomod(text)
    assert isinstance(raised.value, ModgateError)


def test_gosum() -> None:
    text = "a.example/m v1.0.0 h1:abc=\na.example/m v1.0.0/go.mod h1:def=\n\nb.example/n v0.1.0/go.mod h1:x=\n"
    assert parse_gosum(text) == [
        ("a.example/m", "v1.0.0", False),
        ("a.example/m", "v1.0.0", True),
        ("b.example/n", "v0.1.0", True),
    ]
    with pytest.raises(GoModError, match="line 1"):
        parse_gosum("a.example/m v1.0.0\n")
