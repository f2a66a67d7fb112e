"""Semantic versions as the go command reads them: a port of golang.org/x/mod.

Follows, function for function, golang.org/x/mod v0.43.0 as vendored in Go 1.26:

- `semver/semver.go`: `IsValid`, `Canonical`, `Major`, `MajorMinor`, `Prerelease`,
  `Build`, `Compare`, `Max`, `Sort`. Versions need the leading "v"; `v1` and `v1.2`
  are shorthands for `v1.0.0` and `v1.2.0`; build metadata is ignored by `compare`
  and dropped by `canonical`; every invalid string sorts below every valid one.
- `module/module.go`: `CanonicalVersion`, which keeps a "+incompatible" suffix
  (the go command writes `v2.0.0+incompatible` as a canonical module version).
- `module/pseudo.go`: `IsPseudoVersion`, `PseudoVersionBase`, `PseudoVersionTime`,
  `PseudoVersionRev`, for the three forms of pseudo-version:

      vX.0.0-yyyymmddhhmmss-abcdef123456           (no earlier tag)
      vX.Y.(Z+1)-0.yyyymmddhhmmss-abcdef123456     (after vX.Y.Z)
      vX.Y.Z-pre.0.yyyymmddhhmmss-abcdef123456     (after vX.Y.Z-pre)

  each optionally followed by "+incompatible".

All version syntax is ASCII, so a non-ASCII character makes a version invalid;
ties between strings go by code point, which for UTF-8 is Go's byte order.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cmp_to_key

from modgate.errors import ModgateError

__all__ = [
    "Parsed",
    "build",
    "canonical",
    "canonical_module_version",
    "compare",
    "is_canonical",
    "is_canonical_module_version",
    "is_incompatible",
    "is_pseudo",
    "is_valid",
    "major",
    "major_minor",
    "max_version",
    "parse",
    "prerelease",
    "pseudo_base",
    "pseudo_rev",
    "pseudo_time",
    "sort_versions",
    "INCOMPATIBLE",
]

INCOMPATIBLE = "+incompatible"
"""The build suffix of a major version >= 2 from a module path without /vN."""

_DIGITS = frozenset("0123456789")
_IDENT = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")


@dataclass(frozen=True, slots=True)
class Parsed:
    """The parts of a valid version, as Go's `semver.parsed`.

    `short` is what `canonical` appends to a shorthand ("", ".0" or ".0.0");
    `prerelease` and `build` keep their leading "-" and "+".
    """

    major: str
    minor: str
    patch: str
    short: str = ""
    prerelease: str = ""
    build: str = ""


def parse(v: str) -> Parsed | None:
    """Split `v` into its parts, or return None when it is not a valid version."""
    if not v.startswith("v"):
        return None
    major, rest = _parse_int(v[1:])
    if major is None:
        return None
    if rest == "":
        return Parsed(major, "0", "0", short=".0.0")
    minor, rest = _parse_int(rest[1:]) if rest[0] == "." else (None, rest)
    if minor is None:
        return None
    if rest == "":
        return Parsed(major, minor, "0", short=".0")
    patch, rest = _parse_int(rest[1:]) if rest[0] == "." else (None, rest)
    if patch is None:
        return None
    pre, rest = _split_suffix(rest, "-", "+")
    meta, rest = _split_suffix(rest, "+", "")
    if rest or not _valid_prerelease(pre) or not _valid_build(meta):
        return None
    return Parsed(major, minor, patch, prerelease=pre, build=meta)


def _parse_int(v: str) -> tuple[str | None, str]:
    """Go's parseInt: leading decimal digits without extra leading zeros."""
    i = 0
    while i < len(v) and v[i] in _DIGITS:
        i += 1
    if i == 0 or (v[0] == "0" and i != 1):
        return None, v
    return v[:i], v[i:]


def _split_suffix(v: str, mark: str, stop: str) -> tuple[str, str]:
    """Cut a "-pre" or "+build" suffix off the front of `v`, up to `stop`."""
    if not v.startswith(mark):
        return "", v
    end = v.find(stop, 1) if stop else -1
    return (v, "") if end < 0 else (v[:end], v[end:])


def _idents(suffix: str) -> list[str] | None:
    """The dot-separated identifiers of a "-pre" or "+build" suffix, if well formed."""
    parts = suffix[1:].split(".")
    if any(p == "" or not set(p) <= _IDENT for p in parts):
        return None
    return parts


def _valid_prerelease(pre: str) -> bool:
    if pre == "":
        return True
    parts = _idents(pre)
    return parts is not None and not any(_is_bad_num(p) for p in parts)


def _valid_build(meta: str) -> bool:
    return meta == "" or _idents(meta) is not None


def _is_num(x: str) -> bool:
    return set(x) <= _DIGITS


def _is_bad_num(x: str) -> bool:
    """A numeric identifier with a leading zero, which semver forbids."""
    return _is_num(x) and len(x) > 1 and x[0] == "0"


def is_valid(v: str) -> bool:
    """Report whether `v` is a valid semantic version string."""
    return parse(v) is not None


def canonical(v: str) -> str:
    """Fill in a missing .MINOR or .PATCH and drop build metadata; "" if invalid."""
    p = parse(v)
    if p is None:
        return ""
    if p.build:
        return v[: len(v) - len(p.build)]
    return v + p.short


def is_canonical(v: str) -> bool:
    """Report whether `v` is valid and already in `canonical` form (no build suffix)."""
    return v != "" and v == canonical(v)


def canonical_module_version(v: str) -> str:
    """Go's module.CanonicalVersion: `canonical`, but keeping "+incompatible"."""
    cv = canonical(v)
    if build(v) == INCOMPATIBLE:
        cv += INCOMPATIBLE
    return cv


def is_canonical_module_version(v: str) -> bool:
    """Report whether `v` is a version the go command would write as is."""
    return v != "" and v == canonical_module_version(v)


def major(v: str) -> str:
    """The major version prefix, as "v2" for "v2.1.0"; "" if invalid."""
    p = parse(v)
    return "" if p is None else v[: 1 + len(p.major)]


def major_minor(v: str) -> str:
    """The major.minor prefix, as "v2.1" for "v2.1.0" (and "v2.0" for "v2"); "" if invalid."""
    p = parse(v)
    # Go slices v when it spells the minor out; the string is the same either way.
    return "" if p is None else f"v{p.major}.{p.minor}"


def prerelease(v: str) -> str:
    """The "-pre" suffix of `v`, as "-pre" for "v2.1.0-pre+meta"; "" if none or invalid."""
    p = parse(v)
    return "" if p is None else p.prerelease


def build(v: str) -> str:
    """The "+build" suffix of `v`, as "+meta" for "v2.1.0+meta"; "" if none or invalid."""
    p = parse(v)
    return "" if p is None else p.build


def is_incompatible(v: str) -> bool:
    """Report whether `v` is a valid version carrying exactly the "+incompatible" build."""
    return build(v) == INCOMPATIBLE


def compare(v: str, w: str) -> int:
    """Return -1, 0 or +1 as `v` sorts before, with or after `w`.

    Invalid versions sort before valid ones and compare equal to each other.
    """
    pv, pw = parse(v), parse(w)
    if pv is None or pw is None:
        return (pv is not None) - (pw is not None)
    for x, y in ((pv.major, pw.major), (pv.minor, pw.minor), (pv.patch, pw.patch)):
        if c := _compare_int(x, y):
            return c
    return _compare_prerelease(pv.prerelease, pw.prerelease)


def _cmp[T: (str, int)](x: T, y: T) -> int:
    return (x > y) - (x < y)


def _compare_int(x: str, y: str) -> int:
    """Compare decimal strings without leading zeros: longer is larger."""
    return _cmp(len(x), len(y)) or _cmp(x, y)


def _compare_prerelease(x: str, y: str) -> int:
    """Semver 2.0.0 precedence of two "-pre" suffixes; "" (a release) sorts last."""
    if x == y:
        return 0
    if x == "" or y == "":
        return -1 if y == "" else 1
    xs, ys = x[1:].split("."), y[1:].split(".")
    for dx, dy in zip(xs, ys, strict=False):
        if dx != dy:
            return _compare_ident(dx, dy)
    return _cmp(len(xs), len(ys))


def _compare_ident(dx: str, dy: str) -> int:
    """Numeric identifiers sort numerically and before alphanumeric ones."""
    nx, ny = _is_num(dx), _is_num(dy)
    if nx != ny:
        return -1 if nx else 1
    if nx:
        return _compare_int(dx, dy)
    return _cmp(dx, dy)


def _compare_version(a: str, b: str) -> int:
    """Go's compareVersion: `compare`, then plain string order to break ties."""
    return compare(a, b) or _cmp(a, b)


def max_version(v: str, w: str) -> str:
    """Go's deprecated semver.Max: the canonical form of the greater version.

    Both arguments are canonicalized first, so an invalid one becomes "".
    """
    v, w = canonical(v), canonical(w)
    return v if compare(v, w) > 0 else w


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Return `versions` sorted as Go's semver.Sort does: by `compare`, then as strings."""
    return sorted(versions, key=cmp_to_key(_compare_version))


# module/pseudo.go: pseudoVersionRE. Go's \d and $ are ASCII and end-of-text;
# fullmatch with re.ASCII gives the same meaning in Python.
_PSEUDO_RE = re.compile(
    r"v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?",
    re.ASCII,
)


def is_pseudo(v: str) -> bool:
    """Report whether `v` is a pseudo-version (Go's module.IsPseudoVersion)."""
    return v.count("-") >= 2 and is_valid(v) and _PSEUDO_RE.fullmatch(v) is not None


_TIMESTAMP_FIELDS = ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14))


@dataclass(frozen=True, slots=True)
class _Pseudo:
    base: str  # "vX.0.0", "vX.Y.(Z+1)-0" or "vX.Y.Z-pre.0"
    timestamp: str
    rev: str
    build: str


class PseudoVersionError(ModgateError, ValueError):
    """A pseudo-version that is not one, or whose parts are impossible."""


def _pseudo_error(v: str, problem: str) -> PseudoVersionError:
    """The message of Go's InvalidVersionError for a pseudo-version."""
    return PseudoVersionError(f"pseudo-version {_go_quote(v)} invalid: {problem}")


def _go_quote(s: str) -> str:
    """Quote like Go's %q (exactly so for printable text, "\\n" and the like)."""
    return json.dumps(s, ensure_ascii=False)


def _parse_pseudo(v: str) -> _Pseudo:
    """Go's parsePseudoVersion: split a pseudo-version into its four parts."""
    if not is_pseudo(v):
        raise _pseudo_error(v, "syntax error")
    meta = build(v)
    rest, rev = v[: len(v) - len(meta)].rsplit("-", 1)
    dash, dot = rest.rfind("-"), rest.rfind(".")
    cut = dot if dot > dash else dash
    return _Pseudo(rest[:cut], rest[cut + 1 :], rev, meta)


def pseudo_rev(v: str) -> str:
    """The revision identifier of pseudo-version `v` (usually a 12-hex commit prefix).

    Raises ValueError if `v` is not a pseudo-version.
    """
    return _parse_pseudo(v).rev


def pseudo_time(v: str) -> datetime:
    """The commit time (UTC) embedded in pseudo-version `v`.

    Raises ValueError if `v` is not a pseudo-version or the time is not a real one,
    and also for year 0000, which Go accepts but `datetime` cannot hold.
    """
    ts = _parse_pseudo(v).timestamp  # yyyymmddhhmmss, Go's layout "20060102150405"
    year, month, day, hour, minute, second = (int(ts[a:b]) for a, b in _TIMESTAMP_FIELDS)
    if year == 0:
        raise _pseudo_error(v, f"time {_go_quote(ts)} is in year 0, which Python cannot hold")
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _pseudo_error(v, f"malformed time {_go_quote(ts)}") from None


def pseudo_base(v: str) -> str:
    """The tagged version that pseudo-version `v` follows, or "" for form vX.0.0-….

    `v1.2.4-0.…` gives "v1.2.3", `v1.2.3-pre.0.…` gives "v1.2.3-pre", and a
    "+incompatible" suffix is carried over. Raises ValueError as Go's
    module.PseudoVersionBase errs: not a pseudo-version, a vX.0.0-… form with
    build metadata, or a vX.Y.0-0.… form whose base would have patch -1.
    """
    p = _parse_pseudo(v)
    pre = prerelease(p.base)
    if pre == "":
        if p.build:
            raise _pseudo_error(
                v, f"lacks base version, but has build metadata {_go_quote(p.build)}"
            )
        return ""
    if pre == "-0":
        release = p.base[: -len(pre)]
        head, _, patch = release.rpartition(".")
        if (before := _dec_decimal(patch)) == "":
            raise _pseudo_error(v, f"version before {release} would have negative patch number")
        return f"{head}.{before}{p.build}"
    return p.base.removesuffix(".0") + p.build


def _dec_decimal(d: str) -> str:
    """Go's decDecimal: the decimal string `d` minus one, or "" if it is all zeros."""
    nonzero = d.rstrip("0")
    if nonzero == "":
        return ""
    last = nonzero[-1]
    digits = nonzero[:-1] + chr(ord(last) - 1) + "9" * (len(d) - len(nonzero))
    return digits[1:] if len(digits) > 1 and digits[0] == "0" else digits
