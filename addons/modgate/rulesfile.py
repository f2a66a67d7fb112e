"""The rules file as a whole: the checks every load of it makes (`modgate run` at start,
each hot reload, `modgate rules validate`), and whether an edited file may replace the
rules in force. No mitmproxy; reads only the go.sum files the rules file names.

A hot reload must not weaken the policy by accident. An editor saving a file may leave
it empty or cut short for a moment; read then, it parses as "no rules", and applying it
would silently let every host and module through. So an edit that leaves no host or
module rule where there were some, or an empty file where there was content, replaces
nothing unless the file says so with `unrestricted: true`:

    may_replace(in_force, edited) -> Replace() | Keep(reason)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from modgate.config import Config, load_config
from modgate.verify import Pins

MARKER = "unrestricted: true"


def digest(path: str) -> bytes | None:
    """The SHA-256 of the rules file at `path`; None for no file, or one unreadable. What
    the watcher compares, the audit log records and replicas compare with each other."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).digest() if path else None
    except OSError:
        return None


def check(config: Config) -> Pins:
    """Every check of a parsed rules file that needs more than its text: the pins and the
    go.sum files it names (readable, well-formed, agreeing). `run` and `rules validate`
    both call it, so validate refuses whatever run would. Raises ConfigError."""
    return Pins(config.checksum, config.source)


def load_checked(path: Path) -> Config:
    """Read a rules file and make every check `run` makes of it before it starts."""
    config = load_config(path)
    check(config)
    return config


@dataclass(frozen=True)
class Replace:
    """The edited file may replace the rules in force."""


@dataclass(frozen=True)
class Keep:
    """The rules in force stay: `reason` says why and how to apply the edit anyway."""

    reason: str


def may_replace(in_force: Config, edited: Config) -> Replace | Keep:
    """May `edited` (a rules file just re-read) replace `in_force`?"""
    if edited.rules.unrestricted:
        return Replace()
    fix = f"if that is meant, write '{MARKER}' in it"
    if _empty(edited) and not _empty(in_force):
        return Keep(
            "the file sets nothing but defaults (an editor may leave it empty in the middle "
            f"of saving), and applying it would drop everything it set; {fix}"
        )
    dropped = in_force.rules.restrictions
    if dropped and not edited.rules.restrictions:
        return Keep(
            f"it drops every host and module rule ({', '.join(dropped)} are gone), as a file "
            f"cut short would; {fix} (without {', '.join(dropped)})"
        )
    return Replace()


def _empty(config: Config) -> bool:
    """Whether the file sets nothing but defaults (empty, blank, comments only, or
    `default: allow`)."""
    return replace(config, source="") == Config(source="")
