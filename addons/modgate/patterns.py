"""Module path patterns for rules, matched as the go command matches GOPRIVATE.

Follows Go 1.26: `path.Match` (src/path/match.go) is ported byte for byte, and
`match_prefix_patterns` is golang.org/x/mod `module.MatchPrefixPatterns`
(module/module.go), the algorithm of 'go help module-private'.

A rule's pattern is one of four kinds, told apart by its first characters:

    github.com/org           PREFIX  a path.Match glob matched against the first as
    *.corp.example                   many path elements of the module path as the glob
                                     has: matches github.com/org/repo, and
                                     git.corp.example/x/y (GOPRIVATE semantics).
                                     One trailing "/" is ignored, as by Go.
    github.com/org/**/x-*    DEEP    a glob in which each "**" element stands for
                                     zero or more whole path elements; matched
                                     against the whole path, not a prefix.
    re:^example\\.com/.*$     REGEX   a Python regular expression, which must match
                                     the whole path (re.fullmatch).
    =example.com/lib         EXACT   the path itself and nothing else.

Glob syntax is path.Match's: `*` matches any run of characters but "/", `?` one
character but "/", `[a-z]`/`[^a-z]` a class, and `\\` escapes the next character.
A "," is refused in a single pattern: in GOPRIVATE it separates patterns, so a
rule writing one would not mean what it says (use `match_prefix_patterns` for
such lists).
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

from modgate.errors import ModgateError

__all__ = ["Pattern", "PatternKind", "compile_pattern", "match_prefix_patterns", "path_match"]

_SLASH, _BACKSLASH, _STAR = ord("/"), ord("\\"), ord("*")
_RUNE_ERROR = 0xFFFD
_GLOB_CHARS = frozenset("*?[\\")


class PatternKind(StrEnum):
    PREFIX = "prefix"
    DEEP = "deep"
    REGEX = "regex"
    EXACT = "exact"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled module path pattern; `text` is what the rule wrote."""

    text: str
    kind: PatternKind
    body: str  # text without its "=" or "re:" marker and trailing "/"
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def matches(self, module_path: str) -> bool:
        match self.kind:
            case PatternKind.PREFIX:
                return _match_prefix_glob(self.body, module_path)
            case PatternKind.DEEP:
                return _match_elements(self.body.split("/"), module_path.split("/"))
            case PatternKind.REGEX:
                assert self._regex is not None
                return self._regex.fullmatch(module_path) is not None
            case PatternKind.EXACT:
                return module_path == self.body
            case _:
                assert_never(self.kind)

    def __str__(self) -> str:
        return self.text


def compile_pattern(text: str) -> Pattern:
    """Parse a rule's module path pattern; raise ValueError naming it if malformed."""
    if text.startswith("re:"):
        return _compile_regex(text)
    if text.startswith("="):
        return _compile_exact(text)
    glob = text.removesuffix("/")
    if glob == "":
        raise _error(text, "it is empty")
    if "," in glob:
        raise _error(text, "',' separates GOPRIVATE-style lists; write one pattern per entry")
    if "**" in glob:
        return _compile_deep(text, glob)
    _check_glob(text, glob)
    return Pattern(text, PatternKind.PREFIX, glob)


class PatternError(ModgateError, ValueError):
    """A module path pattern or glob that cannot be compiled; the message names it."""


def _error(text: str, problem: str) -> PatternError:
    return PatternError(f"{text!r} is not a module path pattern: {problem}")


def _compile_regex(text: str) -> Pattern:
    body = text.removeprefix("re:")
    if body == "":
        raise _error(text, "the regular expression after 're:' is empty")
    try:
        regex = re.compile(body)
    except re.error as e:
        raise _error(text, f"bad regular expression: {e}") from None
    return Pattern(text, PatternKind.REGEX, body, regex)


def _compile_exact(text: str) -> Pattern:
    body = text.removeprefix("=")
    if body == "":
        raise _error(text, "the path after '=' is empty")
    if not _GLOB_CHARS.isdisjoint(body):
        raise _error(text, "an '=' pattern is a literal path; drop the '=' to use * ? [ \\")
    return Pattern(text, PatternKind.EXACT, body)


def _compile_deep(text: str, glob: str) -> Pattern:
    for element in glob.split("/"):
        if "**" in element and element != "**":
            raise _error(text, f"'**' must be a whole path element, not part of {element!r}")
        if element != "**":
            _check_glob(text, element)
    return Pattern(text, PatternKind.DEEP, glob)


def _check_glob(text: str, glob: str) -> None:
    try:
        path_match(glob, "")
    except ValueError as e:
        raise _error(text, f"bad glob ({e}: check '[...]' classes and '\\' escapes)") from None


def _match_elements(pattern: list[str], elements: list[str]) -> bool:
    """Match path elements one glob each, where "**" takes zero or more of them."""
    if not pattern:
        return not elements
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_elements(rest, elements[i:]) for i in range(len(elements) + 1))
    return bool(elements) and path_match(head, elements[0]) and _match_elements(rest, elements[1:])


def match_prefix_patterns(globs: str, target: str) -> bool:
    """Go's module.MatchPrefixPatterns: does a prefix of `target` match a glob in `globs`?

    `globs` is a comma-separated list as in GOPRIVATE or GONOSUMDB. Empty and
    malformed entries are ignored, and so is one trailing "/" on an entry.
    """
    return any(_match_prefix_glob(glob.removesuffix("/"), target) for glob in globs.split(","))


def _match_prefix_glob(glob: str, target: str) -> bool:
    """Match `glob` (N slashes) against the first N+1 elements of `target`."""
    if glob == "":
        return False
    n = glob.count("/")
    elements = target.split("/")
    if len(elements) <= n:
        return False
    try:
        return path_match(glob, "/".join(elements[: n + 1]))
    except ValueError:
        return False


def path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: does `name` match the shell `pattern` as a whole?

    Raises ValueError("syntax error in pattern") for a malformed pattern, which
    Go reports whatever the name (so `path_match(p, "")` validates `p`). Works on
    UTF-8 bytes as Go does, so `?` and classes take one code point, or one byte of
    a broken sequence, which `*` may leave behind by skipping byte-wise.
    """
    return _match(_utf8(pattern), _utf8(name))


class _BadPatternError(PatternError):
    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def _match(pattern: bytes, name: bytes) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return _SLASH not in name  # a trailing * matches the rest unless it has a /
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        rest = _match_after_star(chunk, name, last=not pattern) if star else None
        if rest is not None:
            name = rest
            continue
        _check_chunks(pattern)
        return False
    return not name


def _match_after_star(chunk: bytes, name: bytes, *, last: bool) -> bytes | None:
    """Try `chunk` after skipping 1, 2, … bytes of `name`, never skipping a "/"."""
    for i, c in enumerate(name):
        if c == _SLASH:
            break
        rest = _match_chunk(chunk, name[i + 1 :])
        if rest is not None and not (last and rest):
            return rest
    return None


def _check_chunks(pattern: bytes) -> None:
    """Raise if what is left of the pattern is malformed, as Go checks before failing."""
    while pattern:
        _, chunk, pattern = _scan_chunk(pattern)
        _match_chunk(chunk, b"")


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    """Split off leading stars and the run of non-star terms after them."""
    stripped = pattern.lstrip(b"*")
    star, pattern = len(stripped) < len(pattern), stripped
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == _BACKSLASH:
            i += 1  # an escape at the very end is reported by _match_chunk
        elif c in b"[]":
            in_range = c == ord("[")
        elif c == _STAR and not in_range:
            return star, pattern[:i], pattern[i:]
        i += 1
    return star, pattern, b""


def _match_chunk(chunk: bytes, s: bytes) -> bytes | None:
    """Match a star-free chunk against the start of `s`; return the rest of `s`.

    Like Go, it reads the whole chunk even after a mismatch, so that a malformed
    chunk always raises.
    """
    failed = False
    while chunk:
        failed = failed or not s
        c = chunk[0]
        if c == ord("["):
            r, n = (0, 0) if failed else _decode_rune(s)
            s = s[n:]
            matched, chunk = _match_class(chunk[1:], r)
            failed = failed or not matched
            continue
        if c == ord("?"):
            if not failed:
                failed = s[0] == _SLASH
                s = s[_decode_rune(s)[1] :]
            chunk = chunk[1:]
            continue
        if c == _BACKSLASH:
            chunk = chunk[1:]
            if not chunk:
                raise _BadPatternError
        if not failed:
            failed = chunk[0] != s[0]
            s = s[1:]
        chunk = chunk[1:]
    return None if failed else s


def _match_class(chunk: bytes, r: int) -> tuple[bool, bytes]:
    """Parse a class after its "[": whether rune `r` is in it, and the chunk after "]"."""
    negated = chunk[:1] == b"^"
    if negated:
        chunk = chunk[1:]
    matched, ranges = False, 0
    while not (chunk[:1] == b"]" and ranges > 0):
        lo, chunk = _get_esc(chunk)
        hi = lo
        if chunk[0] == ord("-"):
            hi, chunk = _get_esc(chunk[1:])
        matched = matched or lo <= r <= hi
        ranges += 1
    return matched != negated, chunk[1:]


def _get_esc(chunk: bytes) -> tuple[int, bytes]:
    """Read one possibly escaped character of a class; something must follow it."""
    if not chunk or chunk[0] in b"-]":
        raise _BadPatternError
    if chunk[0] == _BACKSLASH:
        chunk = chunk[1:]
        if not chunk:
            raise _BadPatternError
    r, n = _decode_rune(chunk)
    if (r == _RUNE_ERROR and n == 1) or len(chunk) == n:
        raise _BadPatternError
    return r, chunk[n:]


def _decode_rune(b: bytes) -> tuple[int, int]:
    """Go's utf8.DecodeRune: (rune, size), (RuneError, 1) if invalid, (RuneError, 0) if empty."""
    if not b:
        return _RUNE_ERROR, 0
    lead = b[0]
    size = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    try:
        return ord(b[:size].decode("utf-8")), size
    except UnicodeDecodeError:
        return _RUNE_ERROR, 1
