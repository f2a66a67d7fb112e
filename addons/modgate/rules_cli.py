"""modgate rules: check a rules file, and what it would do, before anything is downloaded.

    modgate rules validate [FILE]                        is the file valid? (exit 0, or 2)
    modgate rules check [--rules FILE] MODULE@VERSION…   verdict, rule and reason of each
    modgate rules check --gomod go.mod [--gosum go.sum]  every requirement of a build, and
                                                         with go.sum every version it uses
    modgate rules check --team T go.mod                  as team T sees it (rules naming
                                                         teams, `owners`); a go.mod alone
                                                         is --gomod

Exit status: 0 nothing refused, 1 something refused (in enforce mode; audit mode only
reports), 2 bad usage or an invalid rules file. The check runs offline: rules that
refuse retracted versions need the module's latest go.mod, which only a running
modgate fetches, so retractions are not checked here (a note says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

from modgate import semver
from modgate.config import Config
from modgate.errors import ConfigError
from modgate.gomod import GoMod, GoModError, parse_gomod, parse_gosum
from modgate.goproxy import check_module_path
from modgate.rules import Allow, Deny, Mode, Refuse, Rules
from modgate.rulesfile import load_checked


def add_parser(sub: Any) -> None:
    """Add `modgate rules` to the subcommands of the modgate command line."""
    rules = sub.add_parser(
        "rules", help="validate rules.yaml and check modules against it", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    rules.set_defaults(func=lambda _: (rules.print_help(), 2)[1])
    commands = rules.add_subparsers(metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a rules file; exit 2 if invalid")
    validate.add_argument("file", nargs="?", type=Path, default=Path("rules.yaml"),
                          help="default: %(default)s")  # fmt: skip
    validate.set_defaults(func=cmd_validate)

    check = commands.add_parser(
        "check", help="what the rules decide for module versions or a whole go.mod",
        description="Print the verdict, deciding rule and reason for each module version; "
        "exit 1 when anything is refused.",
    )  # fmt: skip
    check.add_argument(
        "--rules", type=Path, default=Path("rules.yaml"), help="default: %(default)s"
    )
    check.add_argument("modules", nargs="*", metavar="MODULE@VERSION",
                       help="module versions to check, or one go.mod file")  # fmt: skip
    check.add_argument("--gomod", type=Path, help="check every requirement of this go.mod")
    check.add_argument("--gosum", type=Path, help="with --gomod: also every version in go.sum")
    check.add_argument("--json", action="store_true", help="one JSON object per line")
    check.add_argument("--team", default=None, help="decide as this team's members are decided")
    check.set_defaults(func=cmd_check)


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_checked(args.file)  # ConfigError: main prints it, exit 2
    print(f"{args.file}: valid: {describe(config)}")
    return 0


def describe(config: Config) -> str:
    rules = config.rules
    hosts = "any host" if rules.hosts is None else (
        f"{len(rules.hosts.allow)} allowed hosts, others {rules.hosts.default.action}"
    )  # fmt: skip
    return (
        f"mode {rules.mode}; {len(rules.modules)} module rules, default {rules.default.action}; "
        f"{len(rules.routes)} routes; {hosts}"
    )


@dataclass(frozen=True)
class Row:
    module: str
    version: str
    source: str  # where the version comes from: go.mod, go.sum, a replacement ("" an argument)
    verdict: str = ""  # allow, deny, audit-deny, local
    rule: str = ""
    reason: str = ""


def cmd_check(args: argparse.Namespace) -> int:
    if len(args.modules) == 1 and "@" not in args.modules[0] and not args.gomod:
        args.gomod, args.modules = Path(args.modules[0]), []  # `rules check go.mod`
    if bool(args.modules) == bool(args.gomod):
        raise ConfigError("rules check: give MODULE@VERSION arguments or --gomod go.mod")
    if args.gosum and not args.gomod:
        raise ConfigError("rules check: --gosum goes with --gomod")
    config = load_checked(args.rules)
    rules, team = config.rules, args.team
    if team is not None and (config.teams is None or team not in config.teams.teams):
        known = ", ".join(sorted(config.teams.teams)) if config.teams else "none defined"
        raise ConfigError(f"rules check: --team {team}: no such team in {args.rules} ({known})")
    wanted = _from_args(args.modules) if args.modules else _from_gomod(args.gomod, args.gosum)
    rows = [judge(rules, row, team) for row in wanted]
    if args.json:
        for row in rows:
            print(json.dumps(row.__dict__))
    else:
        print_table(rows)
    retracted = [r.where for r in rules.modules if Refuse.RETRACTED in r.refuse]
    if retracted:
        print(f"note: retractions not checked offline ({', '.join(retracted)} refuse "
              "retracted versions; modgate checks them when serving)", file=sys.stderr)  # fmt: skip
    refused = sum(row.verdict == "deny" for row in rows)
    audited = sum(row.verdict == "audit-deny" for row in rows)
    audit = f", {audited} would be refused (audit mode)" if audited else ""
    view = f" (as team {team})" if team else ""
    print(f"{len(rows)} checked{view}, {refused} refused{audit}", file=sys.stderr)
    return 1 if refused else 0


def judge(rules: Rules, row: Row, team: str | None = None) -> Row:
    if row.verdict:  # decided already (a local replacement)
        return row
    match decision := rules.decide(row.module, row.version, team=team):
        case Allow(rule):
            return Row(row.module, row.version, row.source, "allow", rule.label)
        case Deny(rule, reason):
            verdict = "audit-deny" if rules.mode is Mode.AUDIT else "deny"
            return Row(row.module, row.version, row.source, verdict, rule.label, reason)
        case _:
            assert_never(decision)


def print_table(rows: list[Row]) -> None:
    """Aligned columns (FROM only for a go.mod check); the reason last, unpadded."""
    table = [("MODULE", "VERSION", "VERDICT", "RULE", "FROM", "REASON")]
    table += [(r.module, r.version, r.verdict, r.rule, r.source, r.reason) for r in rows]
    columns = [0, 1, 2, 3, 4] if any(r.source for r in rows) else [0, 1, 2, 3]
    widths = {i: max(len(line[i]) for line in table) for i in columns}
    for line in table:
        cells = [line[i].ljust(widths[i]) for i in columns]
        print("  ".join([*cells, line[5]]).rstrip())


def _from_args(items: list[str]) -> list[Row]:
    rows = []
    for item in items:
        module, at, version = item.partition("@")
        if not at or check_module_path(module) or not semver.is_valid(version):
            raise ConfigError(
                f"rules check: {item!r} is not MODULE@VERSION (e.g. golang.org/x/text@v0.3.8; "
                "queries such as @latest need a running modgate)"
            )
        rows.append(Row(module, semver.canonical_module_version(version), ""))
    return rows


def _from_gomod(gomod_path: Path, gosum_path: Path | None) -> list[Row]:
    gomod = _parse(gomod_path, parse_gomod)
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    for req in gomod.requires:
        row = _replaced(gomod, req.module, req.version)
        row = row or Row(req.module, req.version, "go.mod (indirect)" if req.indirect else "go.mod")
        if (row.module, row.version) not in seen:
            seen.add((row.module, row.version))
            rows.append(row)
    if gosum_path is not None:
        for module, version, is_gomod in _parse(gosum_path, parse_gosum):
            # A zip hash: the version's code was used. (go.mod hashes are graph metadata.)
            if not is_gomod and (module, version) not in seen:
                seen.add((module, version))
                rows.append(Row(module, version, "go.sum"))
    return rows


def _replaced(gomod: GoMod, module: str, version: str) -> Row | None:
    for rep in gomod.replaces:
        if rep.module == module and rep.version in ("", version):
            if not rep.new_version:
                return Row(module, version, f"replaced by {rep.new}", "local", "", "not downloaded")
            return Row(rep.new, rep.new_version, f"replaces {module}@{version}")
    return None


def _parse(path: Path, parse: Any) -> Any:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except (GoModError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
