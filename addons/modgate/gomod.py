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
from modgate.errors import ModgateError

__all__ = [
    "GoMod",
    "Replacement",
    "Requirement",
    "Retraction",
    "parse_gomod",
    "parse_gosum",
    "retracted_by",
]


class GoModError(ModgateError, ValueError):
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
    go: str = ""  # the `go` directive's version, "" when there is none


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


def _lex(raw: str, number: int) -> tuple[list[str], str]:
    """One line's tokens, as written (strings keep their quotes), and its comment: the
    lexer of golang.org/x/mod/modfile (read.go, readToken). `//` starts a comment only
    outside a string; `( ) [ ] { } ,` are tokens of their own; anything else printable
    and not a space runs into an identifier. What that lexer refuses raises GoModError."""
    tokens: list[str] = []
    at, end = 0, len(raw)
    while at < end:
        char = raw[at]
        if char in " \t\r":
            at += 1
        elif raw.startswith("//", at):
            return tokens, raw[at + 2 :].strip()
        elif raw.startswith("/*", at):
            raise GoModError(f"line {number}: mod files must use // comments (not /* */)")
        elif char in _PUNCTUATION:
            tokens.append(char)
            at += 1
        elif char in '"`':
            close = _string_end(raw, at, number)
            tokens.append(raw[at:close])
            at = close
        elif _is_ident(char):
            start = at
            while at < end and _is_ident(raw[at]) and not raw.startswith("//", at):
                if raw.startswith("/*", at):
                    raise GoModError(f"line {number}: mod files must use // comments (not /* */)")
                at += 1
            tokens.append(raw[start:at])
        else:
            raise GoModError(f"line {number}: unexpected character {char!r}")
    return tokens, ""


_PUNCTUATION = frozenset("()[]{},")


def _is_ident(char: str) -> bool:
    """modfile's isIdent: printable, not a space, not punctuation."""
    return char not in _PUNCTUATION and not char.isspace() and char.isprintable()


def _string_end(raw: str, start: int, number: int) -> int:
    """Where the string opened at `start` ends (after its closing quote); a string may
    not run past its line. Backslash escapes the next character in "…" only."""
    quote, at = raw[start], start + 1
    while at < len(raw):
        if raw[at] == quote:
            return at + 1
        at += 2 if raw[at] == "\\" and quote == '"' else 1
    raise GoModError(f"line {number}: unterminated string")


def _unquote(token: str) -> str:
    if token[:1] == "`":
        return token[1:-1]
    if token[:1] == '"':
        return token[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return token


def _lines(text: str) -> list[_Line]:
    """Split a go.mod into directive lines, blocks opened, comments attached. The verb is
    its token as written, as in modfile: a quoted "retract" is a directive go does not
    know, which it skips in a dependency's go.mod (ParseLax), and so is a line "//"."""
    lines: list[_Line] = []
    block, block_above, opened = None, "", 0
    above: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):  # modfile ends lines at \n only
        tokens, comment = _lex(raw, number)
        if not tokens:
            above = [*above, comment] if comment or raw.strip() else []
            continue
        if block is not None and tokens[0] == ")":
            if len(tokens) > 1:
                raise GoModError(f"line {number}: expected newline after closing paren")
            block, above = None, []
            continue
        if block is None and len(tokens) > 2 and tokens[-2:] == ["(", ")"]:
            above = []  # an empty block
            continue
        if block is None and len(tokens) > 1 and tokens[-1] == "(":
            # parseToFile reads the lines of a block "verb (" only: "retract v1 (" is a
            # block too, of a type go skips in a dependency's go.mod.
            block = tokens[0] if len(tokens) == 2 else ""
            block_above, above, opened = "\n".join(above), [], number
            continue
        verb, args = (block, tokens) if block is not None else (tokens[0], tokens[1:])
        args = [_unquote(arg) for arg in args]
        lines.append(_Line(number, verb, args, comment, "\n".join(above), block_above))
        above = []
    if block is not None:
        raise GoModError(f"line {opened}: block is never closed with ')'")
    return lines


def parse_gomod(text: str) -> GoMod:
    """The module path, requirements, replacements, retractions and go version of a
    go.mod, read as go reads a dependency's (modfile.ParseLax): other directives are
    skipped, and so is a retraction go cannot read; a malformed require or replace, or
    text modfile cannot lex, raises GoModError."""
    module = ""
    requires: list[Requirement] = []
    replaces: list[Replacement] = []
    retractions: list[Retraction] = []
    go = ""
    for line in _lines(text):
        match line.verb:
            case "module" if line.args:
                module = line.args[0]
            case "go" if len(line.args) == 1:
                go = line.args[0]
            case "require":
                requires.append(_require(line))
            case "replace":
                replaces.append(_replace(line))
            case "retract":
                if (retraction := _retract(line)) is not None:
                    retractions.append(retraction)
    return GoMod(module, tuple(requires), tuple(replaces), tuple(retractions), go)


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


def _retract(line: _Line) -> Retraction | None:
    """modfile's parseVersionInterval as ParseLax applies it to a dependency's go.mod:
    "v1.2.3" or "[low, high]", tokens after it ignored, any string a version (compared
    as semver.Compare does, invalid before valid); an interval it cannot read is skipped,
    since go "may support additional syntax in the future"."""
    args = line.args
    if not args or args[0] == "(":
        return None
    if args[0] != "[":
        low = high = args[0]
    elif len(args) >= 5 and args[2] == "," and args[4] == "]":
        low, high = args[1], args[3]
    else:
        return None
    rationale = line.comment or line.above or line.block_above
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
