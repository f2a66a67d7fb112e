"""The parts of go.mod and go.sum files that rules need, as pure functions.

Follows the Go modules reference, sections "go.mod files" (lexical elements, the
`require`, `replace` and `retract` directives, single lines and `( … )` blocks) and
"go.sum files", and golang.org/x/mod/modfile for what a retraction's rationale is:
the comment on the directive's own line, else the comments right above it (inside a
block, above the block when the line itself has none).

    parse_gomod(text).retractions  -> (Retraction("v1.0.0", "v1.0.0", "published by mistake"),)
    retracted_by("v1.0.0", retractions) -> Retraction(...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modgate import semver

__all__ = [
    "GoMod",
    "Replacement",
    "Requirement",
    "Retraction",
    "parse_gomod",
    "parse_gosum",
    "retracted_by",
]


class GoModError(ValueError):
    """A go.mod or go.sum line that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Requirement:
    module: str
    version: str
    indirect: bool = False


@dataclass(frozen=True)
class Replacement:
    """`replace module [version] => new [new_version]`; `new_version` is "" for a
    directory on disk (then `new` is that directory)."""

    module: str
    version: str  # "" replaces every version
    new: str
    new_version: str


@dataclass(frozen=True)
class Retraction:
    """ "retract directive": a version, or an inclusive interval [low, high]."""

    low: str
    high: str
    rationale: str = ""

    def covers(self, version: str) -> bool:
        return semver.compare(self.low, version) <= 0 <= semver.compare(self.high, version)

    def __str__(self) -> str:
        return self.low if self.low == self.high else f"[{self.low}, {self.high}]"


@dataclass(frozen=True)
class GoMod:
    module: str = ""
    requires: tuple[Requirement, ...] = ()
    replaces: tuple[Replacement, ...] = ()
    retractions: tuple[Retraction, ...] = ()


def retracted_by(version: str, retractions: tuple[Retraction, ...]) -> Retraction | None:
    """The retraction that covers `version`, if any."""
    return next((r for r in retractions if r.covers(version)), None)


@dataclass
class _Line:
    number: int
    verb: str  # the directive, inherited from the block inside one
    args: list[str]
    comment: str  # on the same line
    above: str  # the comment lines right above it
    block_above: str  # inside a block: the comment lines above the block


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|[^\s"`]+')


def _tokens(text: str) -> list[str]:
    out = []
    for token in _TOKEN.findall(text):
        if token[0] in '"`':
            token = token[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.append(token)
    return out


def _lines(text: str) -> list[_Line]:
    """Split a go.mod into directive lines, blocks opened, comments attached."""
    lines: list[_Line] = []
    block, block_above = "", ""
    above: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        code, _, comment = raw.partition("//")
        code, comment = code.strip(), comment.strip()
        if not code:
            above = [*above, comment] if comment or raw.strip() else []
            continue
        tokens = _tokens(code)
        if block and tokens == [")"]:
            block, above = "", []
            continue
        if not block and len(tokens) == 2 and tokens[1] == "(":
            block, block_above, above = tokens[0], "\n".join(above), []
            continue
        verb, args = (block, tokens) if block else (tokens[0], tokens[1:])
        lines.append(_Line(number, verb, args, comment, "\n".join(above), block_above))
        above = []
    return lines


def parse_gomod(text: str) -> GoMod:
    """The module path, requirements, replacements and retractions of a go.mod.
    Other directives are skipped; a malformed directive we read raises GoModError."""
    module = ""
    requires: list[Requirement] = []
    replaces: list[Replacement] = []
    retractions: list[Retraction] = []
    for line in _lines(text):
        match line.verb:
            case "module" if line.args:
                module = line.args[0]
            case "require":
                requires.append(_require(line))
            case "replace":
                replaces.append(_replace(line))
            case "retract":
                retractions.append(_retract(line))
    return GoMod(module, tuple(requires), tuple(replaces), tuple(retractions))


def _require(line: _Line) -> Requirement:
    if len(line.args) != 2 or not semver.is_valid(line.args[1]):
        raise GoModError(f"line {line.number}: expected 'require module/path v1.2.3'")
    indirect = re.fullmatch(r"indirect(;.*)?", line.comment) is not None
    return Requirement(line.args[0], line.args[1], indirect)


def _replace(line: _Line) -> Replacement:
    if "=>" not in line.args:
        raise GoModError(f"line {line.number}: expected 'replace module [version] => target'")
    arrow = line.args.index("=>")
    old, new = line.args[:arrow], line.args[arrow + 1 :]
    if len(old) not in (1, 2) or len(new) not in (1, 2):
        raise GoModError(f"line {line.number}: expected 'replace module [version] => target'")
    return Replacement(
        old[0], old[1] if len(old) == 2 else "", new[0], new[1] if len(new) == 2 else ""
    )


def _retract(line: _Line) -> Retraction:
    rationale = line.comment or line.above or line.block_above
    text = " ".join(line.args)
    interval = re.fullmatch(r"\[\s*(\S+?)\s*,\s*(\S+?)\s*\]", text)
    low, high = interval.groups() if interval else (text, text)
    if not (semver.is_valid(low) and semver.is_valid(high)):
        raise GoModError(
            f"line {line.number}: expected 'retract v1.2.3' or 'retract [v1.0.0, v1.2.3]'"
        )
    return Retraction(low, high, " ".join(rationale.split()))


def parse_gosum(text: str) -> list[tuple[str, str, bool]]:
    """The (module, version, is_go_mod) of each go.sum line ("go.sum files":
    `<module> <version>[/go.mod] <hash>`)."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise GoModError(f"line {number}: expected '<module> <version>[/go.mod] <hash>'")
        version = fields[1].removesuffix("/go.mod")
        out.append((fields[0], version, version != fields[1]))
    return out
