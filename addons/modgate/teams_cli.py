"""modgate teams: the teams rules.yaml names, their members, and their tokens.

    modgate teams ls [--rules FILE]                     teams, members, how each signs in
    modgate teams passwd [USER]                         an argon2id hash of a password
                                                        (read from the terminal, or stdin)
    modgate teams token create TEAM MEMBER [--label L]  a new token, printed once
    modgate teams token ls                              every token (id, member, created)
    modgate teams token revoke ID                       remove a token
    modgate teams token rotate ID                       a new token for its member; the old
                                                        one is revoked in the same write

Token commands rewrite the teams file named by rules.yaml (`teams: teams.yaml`)
atomically; a running modgate picks the change up within a second. Only a token's
SHA-256 is written: the token itself is shown once, by create and rotate.
Exit status: 0 done, 2 bad usage or a file that cannot be read or written.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modgate.config import load_config
from modgate.errors import ConfigError
from modgate.teams import (
    Teams,
    create_token,
    hash_password,
    list_tokens,
    revoke_token,
    rotate_token,
)


def add_parser(sub: Any) -> None:
    """Add `modgate teams` to the subcommands of the modgate command line."""
    teams = sub.add_parser(
        "teams", help="teams, members and their tokens", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    teams.set_defaults(func=lambda _: (teams.print_help(), 2)[1])
    commands = teams.add_subparsers(metavar="COMMAND")

    def rules_option(p: argparse.ArgumentParser) -> None:
        help = "the rules file that names the teams (default: %(default)s)"
        p.add_argument("--rules", type=Path, default=Path("rules.yaml"), help=help)

    ls = commands.add_parser("ls", help="teams and members")
    rules_option(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per member")
    ls.set_defaults(func=cmd_ls)

    passwd = commands.add_parser("passwd", help="hash a password for the teams file")
    passwd.add_argument("user", nargs="?", help="print a `USER: {password: ...}` line")
    passwd.set_defaults(func=cmd_passwd)

    token = commands.add_parser("token", help="create, list, revoke, rotate tokens")
    token.set_defaults(func=lambda _: (token.print_help(), 2)[1])
    tokens = token.add_subparsers(metavar="COMMAND")
    create = tokens.add_parser("create", help="a new token for a member (added if new)")
    rules_option(create)
    create.add_argument("team")
    create.add_argument("member")
    create.add_argument("--label", default="", help="what it is for (shown by token ls)")
    create.set_defaults(func=cmd_create)
    tls = tokens.add_parser("ls", help="every token")
    rules_option(tls)
    tls.add_argument("--json", action="store_true", help="one JSON object per token")
    tls.set_defaults(func=cmd_token_ls)
    for name, func, text in (("revoke", cmd_revoke, "remove a token"),
                             ("rotate", cmd_rotate, "replace a token by a new one")):  # fmt: skip
        p = tokens.add_parser(name, help=text)
        rules_option(p)
        p.add_argument("id", help="the token's id (token ls), the 12 hex digits after mgt_")
        p.set_defaults(func=func)


def _teams(rules: Path) -> Teams:
    teams = load_config(rules).teams
    if teams is None:
        raise ConfigError(f"{rules}: no teams section (write `teams: teams.yaml` and the file)")
    return teams


def _file(rules: Path) -> Path:
    teams = _teams(rules)
    if teams.file is None:
        raise ConfigError(
            f"{rules}: the teams are written inline; modgate rewrites only a teams file of "
            "their own (and would lose this file's comments): move them to teams.yaml and "
            "write `teams: teams.yaml`"
        )
    return teams.file


def cmd_ls(args: argparse.Namespace) -> int:
    teams = _teams(args.rules)
    rows = []
    for team in sorted(teams.teams.values(), key=lambda t: t.name):
        members = [teams.members[m] for m in team.members]
        if not members:
            rows.append({"team": team.name, "member": "", "password": "", "tokens": 0})
        for m in sorted(members, key=lambda m: m.name):
            kind = ("htpasswd" if m.htpasswd else "yes") if m.password else ""
            rows.append({"team": team.name, "member": m.name, "password": kind,
                         "tokens": len(m.tokens)})  # fmt: skip
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    lines = [(str(r["team"]), str(r["member"]), str(r["password"] or "-"), str(r["tokens"]))
             for r in rows]  # fmt: skip
    _table([("TEAM", "MEMBER", "PASSWORD", "TOKENS"), *lines])
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("passwd: the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("passwd: an empty password")
    hashed = hash_password(password)
    print(f'{args.user}: {{password: "{hashed}"}}' if args.user else hashed)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    path = _file(args.rules)
    secret, token = create_token(path, args.team, args.member, args.label)
    print(secret)
    print(f"token {token.id} for {args.member} ({args.team}) written to {path}; it is shown "
          "only now", file=sys.stderr)  # fmt: skip
    return 0


def cmd_token_ls(args: argparse.Namespace) -> int:
    found = list_tokens(_file(args.rules))
    if args.json:
        for team, member, t in found:
            print(json.dumps({"team": team, "member": member, "id": t.id,
                              "created": t.created, "label": t.label}))  # fmt: skip
        return 0
    _table([("ID", "TEAM", "MEMBER", "CREATED", "LABEL")]
           + [(t.id, team, member, t.created, t.label) for team, member, t in found])  # fmt: skip
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    path = _file(args.rules)
    member = revoke_token(path, args.id)
    print(f"token {args.id} of {member.name} ({member.team}) revoked in {path}", file=sys.stderr)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    path = _file(args.rules)
    secret, token = rotate_token(path, args.id)
    print(secret)
    print(f"token {args.id} revoked; token {token.id} replaces it (shown only now)",
          file=sys.stderr)  # fmt: skip
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
