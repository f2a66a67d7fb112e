"""Version ranges for rules, ordered by Go's semantic version precedence.

Versions are compared with `modgate.semver.compare`, a port of golang.org/x/mod
semver; the meaning of a shorthand such as `v1.2` follows the go command's
version queries (cmd/go/internal/modload/query.go); `^`, `~` and x-ranges are
spelt as in npm's node-semver.

Syntax::

    range        := alternative ( "||" alternative )*
    alternative  := term ( ( " " | "," )+ term )*        terms are ANDed
    term         := "*"                                   any version
                  | [ op ] version                        op: = != < <= > >=
                  | ( "^" | "~" ) version                 no wildcards here
    version      := [ "v" ] full | [ "v" ] series
    full         := 1.2.3, 1.2.3-rc.1, 2.0.0+incompatible  (a Go semantic version)
    series       := 1 | 1.2 | 1.x | 1.2.x | 1.* | 1.x.x   (X and * as x)

An operator may stand apart from its version (`>= 1.2.0`).

Meaning:

- A full version is itself; `=` and `!=` compare as Go does, ignoring build
  metadata, so `v2.0.0+incompatible` equals `v2.0.0`, and `v2.0.0+incompatible`
  is major version 2 like any other.
- A series `v1.2` (or `1.2.x`) means every version from its first release
  v1.2.0 up to the next series: `>=v1.2.0 <v1.3.0-0`. As in the go command's
  `@v1.2` query (golang.org/issue/31972), pre-releases of v1.2.0 are not in it.
  On a series, `=v1.2` is the series itself, `>=v1.2` starts at v1.2.0, `<v1.2`
  stops before it, `<=v1.2` takes the whole series and `>v1.2` what lies beyond
  it (`>=v1.3.0-0`). The go command refuses `<=v1.2` and `>v1.2` as ambiguous;
  here they take the whole series. `!=` needs a full version.
- Upper bounds exclude pre-releases: `<V`, for a V with no pre-release, means
  `<V-0`, so neither a pre-release of V nor a pseudo-version just before it
  (`vX.Y.Z-0.yyyymmddhhmmss-…`) slips under the bound. `^1.2.3` therefore does
  not match v2.0.0-rc.1. Write the pre-release to bound by it (`<v2.0.0-rc.1`).
- Otherwise ranges go by plain semantic order: `>=1.2.0 <2.0.0` matches the
  pre-release v1.5.0-beta and the pseudo-version v1.2.4-0.20200101000000-abcdef.
  Refusing pre-releases or pseudo-versions is a separate rule flag, not a range.
  Pseudo-versions of untagged modules (v0.0.0-…) sort below v0.0.0, so only
  ranges with no lower bound (`*`, `<v1.0.0`) match them.
- `^V` stays within V's first non-zero part: `^1.2.3` is `>=v1.2.3 <v2.0.0-0`,
  `^0.2.3` is `>=v0.2.3 <v0.3.0-0`, `^0.0.3` is `>=v0.0.3 <v0.0.4-0`.
  `~V` stays within V's minor version if it names one: `~1.4.0` is
  `>=v1.4.0 <v1.5.0-0`, `~1` is `>=v1.0.0 <v2.0.0-0`.

`str()` of a parsed range is its normalized form: these expansions, spelt out as
comparators on canonical versions ("*" for any), which parses back to an equal
range.
"""

import re
from dataclasses import dataclass
from typing import Literal, assert_never

from modgate import semver
from modgate.errors import ModgateError

__all__ = ["Comparator", "Op", "VersionSpec", "parse_spec"]

Op = Literal["=", "!=", "<", "<=", ">", ">="]

# Longest first, so that ">=" is not read as ">" followed by "=1.2".
_OPERATORS = (">=", "<=", "!=", ">", "<", "=", "^", "~")
_WILDCARDS = frozenset("xX*")
_HEAD = re.compile(r"([^-+]*)(.*)", re.DOTALL)
_EXPECTED = "expected a version such as v1.2.3, 1.2.3, v1.2, 1.x or *"

# A version as written in a term: a full canonical module version, or a series
# given by its leading numbers (none for "*").
_Target = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Comparator:
    """One bound: `version` is a canonical module version."""

    op: Op
    version: str

    def matches(self, version: str) -> bool:
        c = semver.compare(version, self.version)
        match self.op:
            case "=":
                return c == 0
            case "!=":
                return c != 0
            case "<":
                return c < 0
            case "<=":
                return c <= 0
            case ">":
                return c > 0
            case ">=":
                return c >= 0
            case _:
                assert_never(self.op)

    def __str__(self) -> str:
        return self.version if self.op == "=" else f"{self.op}{self.version}"


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """Alternatives ORed, each a tuple of comparators ANDed (empty: any version)."""

    alternatives: tuple[tuple[Comparator, ...], ...]

    def matches(self, version: str) -> bool:
        """Report whether `version` is in the range; ValueError if it is not a version."""
        if not semver.is_valid(version):
            raise VersionRangeError(f"{version!r} is not a semantic version such as v1.2.3")
        return any(all(c.matches(version) for c in alt) for alt in self.alternatives)

    def __str__(self) -> str:
        return " || ".join(" ".join(map(str, alt)) or "*" for alt in self.alternatives)


class VersionRangeError(ModgateError, ValueError):
    """A version range that cannot be parsed, or a version that is not one."""


class _TermError(Exception):
    """A problem with part of a range; `parse_spec` adds the whole text."""


def parse_spec(text: str) -> VersionSpec:
    """Parse a version range (see the module docstring); ValueError if malformed."""
    try:
        if text.strip() == "":
            raise _TermError("it is empty; write * for any version")
        return VersionSpec(tuple(_parse_alternative(alt) for alt in text.split("||")))
    except _TermError as e:
        raise VersionRangeError(f"{text!r} is not a version range: {e}") from None


def _parse_alternative(text: str) -> tuple[Comparator, ...]:
    words = text.replace(",", " ").split()
    if not words:
        raise _TermError("'||' needs a range on each side")
    return tuple(c for word in _join_operators(words) for c in _parse_term(word))


def _join_operators(words: list[str]) -> list[str]:
    """Join an operator written apart from its version (`>= 1.2`) to that version."""
    joined: list[str] = []
    for word in words:
        if joined and joined[-1] in _OPERATORS:
            joined[-1] += word
        else:
            joined.append(word)
    if joined[-1] in _OPERATORS:
        raise _TermError(f"{joined[-1]!r} needs a version after it")
    return joined


def _parse_term(word: str) -> tuple[Comparator, ...]:
    op = next((o for o in _OPERATORS if word.startswith(o)), "")
    written = word[len(op) :]
    target = _parse_version(written)
    if target == ():
        if op:
            raise _TermError(f"{word!r}: {op} needs a version, not a wildcard")
        return ()
    if op in ("^", "~") and not _WILDCARDS.isdisjoint(written):
        raise _TermError(f"{word!r}: {op} takes a version such as v1.2.3 or v1.2, not a wildcard")
    if op == "!=" and isinstance(target, tuple):
        raise _TermError(f"{word!r}: != needs a full version such as v1.3.0")
    return _expand(op, target)


def _parse_version(written: str) -> _Target:
    """Read `v1.2.3-pre`, `1.2`, `1.x` or `*` into a full version or a series."""
    if written in _WILDCARDS:
        return ()
    head, suffix = _split_head(written)
    parts = head.split(".")
    wild = next((i for i, p in enumerate(parts) if p in _WILDCARDS), len(parts))
    numbers, wildcards = parts[:wild], parts[wild:]
    if len(parts) > 3 or not set(wildcards) <= _WILDCARDS or (wildcards and suffix):
        raise _TermError(f"{written!r} is not a version; {_EXPECTED}")
    version = "v" + ".".join(numbers) + suffix
    if not numbers or not semver.is_valid(version):
        raise _TermError(f"{written!r} is not a version; {_EXPECTED}")
    if len(numbers) == 3:
        return semver.canonical_module_version(version)
    return tuple(numbers)


def _split_head(written: str) -> tuple[str, str]:
    """Split "v1.2.3-rc.1+b" into "1.2.3" and "-rc.1+b"."""
    m = _HEAD.fullmatch(written.removeprefix("v"))
    assert m is not None
    return m[1], m[2]


def _expand(op: str, target: _Target) -> tuple[Comparator, ...]:
    """Turn one term into comparators on full versions."""
    if isinstance(target, str):
        return _expand_full(op, target)
    first = _first_release(target)
    match op:
        case "" | "=":
            return (Comparator(">=", first), Comparator("<", _next_series(target)))
        case ">=":
            return (Comparator(">=", first),)
        case "<":
            return (Comparator("<", _below(first)),)
        case "<=":
            return (Comparator("<", _next_series(target)),)
        case ">":
            return (Comparator(">=", _next_series(target)),)
        case "^":
            return (Comparator(">=", first), Comparator("<", _caret_limit(first, len(target))))
        case "~":
            return (Comparator(">=", first), Comparator("<", _tilde_limit(first, len(target))))
    raise AssertionError(op)


def _expand_full(op: str, version: str) -> tuple[Comparator, ...]:
    match op:
        case "" | "=":
            return (Comparator("=", version),)
        case "!=" | "<=" | ">" | ">=":
            return (Comparator(op, version),)
        case "<":
            return (Comparator("<", _below(version)),)
        case "^":
            return (Comparator(">=", version), Comparator("<", _caret_limit(version, 3)))
        case "~":
            return (Comparator(">=", version), Comparator("<", _tilde_limit(version, 3)))
    raise AssertionError(op)


def _below(version: str) -> str:
    """The bound that `<version` means: a release's own pre-releases are excluded."""
    if semver.prerelease(version):
        return version
    return semver.canonical(version) + "-0"


def _first_release(numbers: tuple[str, ...]) -> str:
    return "v" + ".".join(numbers + ("0",) * (3 - len(numbers)))


def _next_series(numbers: tuple[str, ...]) -> str:
    """The lowest version after the series `numbers` (1.2 -> v1.3.0-0)."""
    return _bump(numbers, len(numbers) - 1)


def _bump(numbers: tuple[str, ...], index: int) -> str:
    """The lowest version whose part `index` is one more: _bump((1, 2, 3), 0) is v2.0.0-0."""
    bumped = numbers[:index] + (_increment(numbers[index]),)
    return _first_release(bumped) + "-0"


def _caret_limit(version: str, given: int) -> str:
    """Upper bound of ^version: bump the first non-zero part, or the last part given."""
    numbers = _numbers(version)
    index = next((i for i, n in enumerate(numbers[: given - 1]) if n != "0"), given - 1)
    return _bump(numbers, index)


def _tilde_limit(version: str, given: int) -> str:
    """Upper bound of ~version: bump the minor version, or the major if only it is given."""
    return _bump(_numbers(version), 0 if given == 1 else 1)


def _numbers(version: str) -> tuple[str, ...]:
    p = semver.parse(version)
    assert p is not None
    return (p.major, p.minor, p.patch)


def _increment(number: str) -> str:
    """A decimal string plus one, at any length (Go's incDecimal in module/pseudo.go)."""
    head = number.rstrip("9")
    nines = len(number) - len(head)
    head = head[:-1] + chr(ord(head[-1]) + 1) if head else "1"
    return head + "0" * nines
