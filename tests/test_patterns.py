"""Tests for modgate.patterns.

PATH_MATCH_CASES and PREFIX_PATTERN_CASES were printed by a throwaway Go
program (Go 1.26 path.Match, golang.org/x/mod v0.43.0 module.MatchPrefixPatterns)
and pasted verbatim; most path.Match rows are Go's own match_test.go table, the
rest probe UTF-8 handling and error reporting. The tests never run Go.
"""

import dataclasses
import re

import pytest

from modgate.patterns import (
    Pattern,
    PatternKind,
    compile_pattern,
    match_prefix_patterns,
    path_match,
)

PATH_MATCH_CASES = [
    # (pattern, name, matched, Go's error)
    ("abc", "abc", True, ""),
    ("*", "abc", True, ""),
    ("*c", "abc", True, ""),
    ("a*", "a", True, ""),
    ("a*", "abc", True, ""),
    ("a*", "ab/c", False, ""),
    ("a*/b", "abc/b", True, ""),
    ("a*/b", "a/c/b", False, ""),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True, ""),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True, ""),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False, ""),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False, ""),
    ("a*b?c*x", "abxbbxdbxebxczzx", True, ""),
    ("a*b?c*x", "abxbbxdbxebxczzy", False, ""),
    ("ab[c]", "abc", True, ""),
    ("ab[b-d]", "abc", True, ""),
    ("ab[e-g]", "abc", False, ""),
    ("ab[^c]", "abc", False, ""),
    ("ab[^b-d]", "abc", False, ""),
    ("ab[^e-g]", "abc", True, ""),
    ("a\\*b", "a*b", True, ""),
    ("a\\*b", "ab", False, ""),
    ("a?b", "a☺b", True, ""),
    ("a[^a]b", "a☺b", True, ""),
    ("a???b", "a☺b", False, ""),
    ("a[^a][^a][^a]b", "a☺b", False, ""),
    ("[a-ζ]*", "α", True, ""),
    ("*[a-ζ]", "A", False, ""),
    ("a?b", "a/b", False, ""),
    ("a*b", "a/b", False, ""),
    ("[\\]a]", "]", True, ""),
    ("[\\-]", "-", True, ""),
    ("[x\\-]", "x", True, ""),
    ("[x\\-]", "-", True, ""),
    ("[x\\-]", "z", False, ""),
    ("[\\-x]", "x", True, ""),
    ("[\\-x]", "-", True, ""),
    ("[\\-x]", "a", False, ""),
    ("[]a]", "]", False, "syntax error in pattern"),
    ("[-]", "-", False, "syntax error in pattern"),
    ("[x-]", "x", False, "syntax error in pattern"),
    ("[x-]", "-", False, "syntax error in pattern"),
    ("[x-]", "z", False, "syntax error in pattern"),
    ("[-x]", "x", False, "syntax error in pattern"),
    ("[-x]", "-", False, "syntax error in pattern"),
    ("[-x]", "a", False, "syntax error in pattern"),
    ("\\", "a", False, "syntax error in pattern"),
    ("[a-b-c]", "a", False, "syntax error in pattern"),
    ("[", "a", False, "syntax error in pattern"),
    ("[^", "a", False, "syntax error in pattern"),
    ("[^bc", "a", False, "syntax error in pattern"),
    ("a[", "a", False, "syntax error in pattern"),
    ("a[", "ab", False, "syntax error in pattern"),
    ("a[", "x", False, "syntax error in pattern"),
    ("a/b[", "x", False, "syntax error in pattern"),
    ("*x", "xxx", True, ""),
    ("a*[", "abc", False, "syntax error in pattern"),
    ("[]", "a", False, "syntax error in pattern"),
    ("[^]", "a", False, "syntax error in pattern"),
    ("a\\", "a", False, "syntax error in pattern"),
    ("*", "a/b", False, ""),
    ("*/*", "a/b", True, ""),
    ("*[^a]", "é", True, ""),
    ("*[^a][^a]", "é", False, ""),
    ("*?", "é", True, ""),
    ("*é", "xé", True, ""),
    ("[à-ÿ]", "é", True, ""),
    ("", "", True, ""),
    ("", "a", False, ""),
    ("*", "", True, ""),
    ("?", "", False, ""),
    ("[a]", "", False, ""),
    ("a[b-a]", "ab", False, ""),
    ("[^a-c]", "b", False, ""),
    ("[ab", "", False, "syntax error in pattern"),
    ("*??", "☺", True, ""),
    ("*[�]", "é", True, ""),
    ("*?", "☺", True, ""),
    ("a*??b", "a☺b", True, ""),
    ("[�]", "�", True, ""),
    ("x*[", "abc", False, "syntax error in pattern"),
    ("a*b*[", "axxx", False, "syntax error in pattern"),
    ("github.com/*/[x", "", False, "syntax error in pattern"),
    ("x[/a]", "xa", True, ""),
    ("x[.-0]y", "x/y", True, ""),
]

PREFIX_PATTERN_CASES = [
    # (globs, target, matched)
    ("", "rsc.io/quote", False),
    (",", "rsc.io/quote", False),
    ("rsc.io", "rsc.io/quote", True),
    ("rsc.io/", "rsc.io/quote", True),
    ("rsc.io//", "rsc.io/quote", False),
    ("rsc.io/quote", "rsc.io/quote", True),
    ("rsc.io/quote/", "rsc.io/quote", True),
    ("rsc.io/quote/v3", "rsc.io/quote", False),
    ("rsc.io/quo", "rsc.io/quote", False),
    ("*/quote", "rsc.io/quote", True),
    ("*/quo", "rsc.io/quote", False),
    ("*.io", "rsc.io/quote", True),
    ("*", "rsc.io/quote", True),
    ("*/*/*", "rsc.io/quote", False),
    ("*/*", "rsc.io/quote/v3", True),
    ("rsc.io/*/v3", "rsc.io/quote/v3/x", True),
    ("example.com,rsc.io", "rsc.io/quote", True),
    (",,rsc.io,", "rsc.io/quote", True),
    ("[,rsc.io", "rsc.io/quote", True),
    ("rsc.io[", "rsc.io/quote", False),
    ("RSC.io", "rsc.io/quote", False),
    ("rsc.io/quote", "rsc.io/quote/v3", True),
    ("rsc.io/quote", "rsc.io/quotes", False),
    ("*.corp.example", "git.corp.example/x/y", True),
    ("*.corp.example", "corp.example/x", False),
    ("git.corp.example/x", "git.corp.example", False),
    ("", "", False),
    ("*", "", True),
    ("a/", "a", True),
    ("/", "a", False),
    ("rsc.io/quote", "rsc.io/quote/", True),
    ("rsc.io/", "rsc.io/", True),
    ("*/", "rsc.io/quote", True),
    ("github.com/org", "github.com/org/repo/sub", True),
    ("github.com/org", "github.com/organisation/repo", False),
    ("github.com/o?g", "github.com/org/repo", True),
    ("github.com/[a-n]*", "github.com/org/repo", False),
    ("github.com/[n-z]*", "github.com/org/repo", True),
    (" rsc.io", "rsc.io/quote", False),
    ("rsc.io ,x", "rsc.io/quote", False),
    ("x[/a]", "xa", False),
    ("x[/a]", "x/", True),
    ("x[.-0]y", "x/y", False),
    ("x[.-0]y", "x.y/z", True),
    ("x*[,rsc.io", "rsc.io/quote", True),
]


@pytest.mark.parametrize(("pattern", "name", "matched", "error"), PATH_MATCH_CASES)
def test_path_match_matches_go(pattern: str, name: str, matched: bool, error: str) -> None:
    if error:
        with pytest.raises(ValueError, match=f"^{error}$"):
            path_match(pattern, name)
    else:
        assert path_match(pattern, name) is matched


@pytest.mark.parametrize(("globs", "target", "matched"), PREFIX_PATTERN_CASES)
def test_match_prefix_patterns_matches_go(globs: str, target: str, matched: bool) -> None:
    assert match_prefix_patterns(globs, target) is matched


def _single_plain_globs() -> list[tuple[str, str, bool]]:
    """The Go rows whose list holds one well-formed plain pattern."""
    rows = []
    for globs, target, matched in PREFIX_PATTERN_CASES:
        glob = globs.removesuffix("/")
        if glob and "," not in glob and "**" not in glob and not glob.startswith("="):
            try:
                path_match(glob, "")
            except ValueError:
                continue
            rows.append((globs, target, matched))
    return rows


@pytest.mark.parametrize(("text", "target", "matched"), _single_plain_globs())
def test_plain_pattern_agrees_with_go(text: str, target: str, matched: bool) -> None:
    assert compile_pattern(text).matches(target) is matched


@pytest.mark.parametrize(
    ("text", "kind", "body"),
    [
        ("github.com/org", PatternKind.PREFIX, "github.com/org"),
        ("github.com/org/", PatternKind.PREFIX, "github.com/org"),
        ("*.corp.example", PatternKind.PREFIX, "*.corp.example"),
        ("github.com/org/**/internal-*", PatternKind.DEEP, "github.com/org/**/internal-*"),
        ("**/internal", PatternKind.DEEP, "**/internal"),
        ("re:^example\\.com/.*$", PatternKind.REGEX, "^example\\.com/.*$"),
        ("=example.com/lib", PatternKind.EXACT, "example.com/lib"),
        ("=re:x", PatternKind.EXACT, "re:x"),
    ],
)
def test_kind_is_told_by_the_first_characters(text: str, kind: PatternKind, body: str) -> None:
    pattern = compile_pattern(text)
    assert (pattern.text, pattern.kind, pattern.body) == (text, kind, body)
    assert str(pattern) == text


@pytest.mark.parametrize(
    ("text", "path", "matched"),
    [
        # PREFIX: GOPRIVATE semantics, the glob against as many leading elements.
        ("github.com/org", "github.com/org", True),
        ("github.com/org", "github.com/org/repo", True),
        ("github.com/org", "github.com/org/repo/v2", True),
        ("github.com/org", "github.com/organisation/repo", False),
        ("github.com/org", "github.com", False),
        ("github.com/org/", "github.com/org/repo", True),
        ("*.corp.example", "git.corp.example/x/y", True),
        ("*.corp.example", "corp.example/x", False),
        ("github.com/*/tools", "github.com/acme/tools/cmd", True),
        ("github.com/*/tools", "github.com/acme/toolsx", False),
        ("github.com/a?me", "github.com/acme/x", True),
        ("github.com/[a-c]*", "github.com/acme/x", True),
        ("github.com/[^a-c]*", "github.com/acme/x", False),
        ("*", "anything/at/all", True),
        # DEEP: ** is zero or more whole elements, and the whole path must match.
        ("github.com/org/**/internal-*", "github.com/org/internal-x", True),
        ("github.com/org/**/internal-*", "github.com/org/a/b/internal-x", True),
        ("github.com/org/**/internal-*", "github.com/org/a/internal-x/more", False),
        ("github.com/org/**/internal-*", "github.com/other/internal-x", False),
        ("github.com/org/**", "github.com/org", True),
        ("github.com/org/**", "github.com/org/a/b/c", True),
        ("github.com/org/**", "github.com/orgs/a", False),
        ("**/internal", "internal", True),
        ("**/internal", "example.com/x/internal", True),
        ("**/internal", "example.com/x/internal/y", False),
        ("example.com/**/**/v2", "example.com/v2", True),
        ("example.com/**/v2/**", "example.com/a/v2/b", True),
        ("*.io/**/*-go", "rsc.io/quote/sampler-go", True),
        ("*.io/**/*-go", "rsc.io/quote/sampler-golang", False),
        # REGEX: a full match, never a search.
        ("re:example\\.com/(foo|bar)", "example.com/foo", True),
        ("re:example\\.com/(foo|bar)", "example.com/foo/v2", False),
        ("re:example\\.com/(foo|bar)", "xexample.com/foo", False),
        ("re:example\\.com/.*", "example.com/foo/v2", True),
        ("re:.*/v[2-9]", "gopkg.in/x/v3", True),
        # EXACT: equality only.
        ("=example.com/lib", "example.com/lib", True),
        ("=example.com/lib", "example.com/lib/sub", False),
        ("=example.com/lib", "example.com/li", False),
        ("=example.com/lib", "EXAMPLE.com/lib", False),
    ],
)
def test_matches(text: str, path: str, matched: bool) -> None:
    assert compile_pattern(text).matches(path) is matched


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "it is empty"),
        ("/", "it is empty"),
        ("a.com,b.com", "',' separates GOPRIVATE-style lists"),
        ("github.com/[org", r"bad glob \(syntax error in pattern"),
        ("github.com/org\\", r"bad glob \(syntax error in pattern"),
        ("github.com/[]x", r"bad glob \(syntax error in pattern"),
        ("github.com/[a-]", r"bad glob \(syntax error in pattern"),
        ("github.com/org/**/[x", r"bad glob \(syntax error in pattern"),
        ("github.com/*/[x", r"bad glob \(syntax error in pattern"),
        ("github.com/org**", "'\\*\\*' must be a whole path element, not part of 'org\\*\\*'"),
        ("github.com/**x/y", "'\\*\\*' must be a whole path element, not part of '\\*\\*x'"),
        ("re:", "the regular expression after 're:' is empty"),
        ("re:example.com/(", "bad regular expression: .*unterminated subpattern"),
        ("re:[", "bad regular expression: .*unterminated character set"),
        ("=", "the path after '=' is empty"),
        ("=example.com/*", "an '=' pattern is a literal path"),
        ("=example.com/[ab]", "an '=' pattern is a literal path"),
    ],
)
def test_invalid_patterns_are_refused(text: str, problem: str) -> None:
    with pytest.raises(
        ValueError, match=f"^{re.escape(repr(text))} is not a module path pattern: {problem}"
    ):
        compile_pattern(text)


def test_pattern_is_frozen_and_compares_by_text() -> None:
    pattern = compile_pattern("re:a.*")
    assert pattern == compile_pattern("re:a.*")
    assert pattern != compile_pattern("re:b.*")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pattern.text = "x"  # type: ignore[misc]
    assert isinstance(pattern, Pattern)
    assert "_regex" not in repr(pattern)
