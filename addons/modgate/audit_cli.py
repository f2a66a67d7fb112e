"""modgate audit: check and read the hash-chained audit log.

    modgate audit verify [--pubkey FILE]   walk the chain, checkpoints and head; exit 1
                                           naming the first bad entry
    modgate audit export --since WHEN [--format jsonl|csv]   entries from WHEN on
    modgate audit pubkey                   the public key that verifies the log

The log is audit.log in the confdir (`modgate run --confdir`, or the modgate_audit_log
option: give it here with --log). Verify with a copy of the public key kept away from
the machine modgate runs on: whoever can write the confdir can also replace the key
found there.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any

from modgate.audit import AuditError, keys
from modgate.audit.chain import Report, lines, verify
from modgate.audit.find import entries_from
from modgate.audit.log import head_path, read_head
from modgate.trace.escape import terminal


def add_parser(sub: Any) -> None:
    audit = sub.add_parser(
        "audit", help="verify and export the audit log", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = audit.add_subparsers(metavar="COMMAND", required=True)

    p = commands.add_parser("verify", help="check the log; exit 1 naming the first bad entry")
    _where(p)
    p.add_argument("--pubkey", type=Path, metavar="FILE",
                   help="the public key to verify with (default: the confdir's "
                   f"{keys.PUBLIC})")  # fmt: skip
    p.add_argument("--no-head", action="store_true",
                   help="a copy of the log without its .head file: truncation after the "
                   "last checkpoint cannot be detected")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser("export", help="entries from a time on, as JSON lines or CSV")
    _where(p)
    p.add_argument("--since", required=True, metavar="WHEN",
                   help="a date or time (ISO 8601, UTC unless it says), or how long ago (7d, "
                   "12h)")  # fmt: skip
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("pubkey", help="print the public key that verifies the log")
    _where(p)
    p.set_defaults(func=cmd_pubkey)


def _where(p: argparse.ArgumentParser) -> None:
    from modgate.home import default_home

    p.add_argument(
        "--confdir",
        type=Path,
        default=default_home(),
        help="modgate's state directory (default: %(default)s, or $MODGATE_HOME)",
    )
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="the audit log (default: CONFDIR/audit.log)")  # fmt: skip


def log_path(args: argparse.Namespace) -> Path:
    return Path(args.log or Path(args.confdir) / "audit.log").expanduser()


def cmd_verify(args: argparse.Namespace) -> int:
    path = log_path(args)
    public = keys.load_public(args.pubkey or Path(args.confdir).expanduser() / keys.PUBLIC)
    if not path.is_file():
        raise AuditError(f"{path}: no audit log here (--confdir, --log)")
    head_missing = False
    with path.open("rb") as f:
        # A consistent view of a log being written: its size and head, read under the
        # writers' lock; the walk then reads up to that size without holding it.
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            size = os.fstat(f.fileno()).st_size
            head = None if args.no_head else read_head(path)
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        if head is None and not args.no_head:
            head_missing = size > 0
        report = verify(_upto(lines(f), size), public, head)
    if head_missing and report.ok:
        report.problem = None
        reason = (f"{head_path(path)} is missing: whether the log was truncated or its end "
                  "rewritten cannot be told (--no-head to check a copy without it)")  # fmt: skip
        return _say(args, path, report, reason)
    return _say(args, path, report, str(report.problem) if report.problem else "")


def _upto(it: Any, size: int) -> Any:
    for offset, line, complete in it:
        if offset >= size:
            return
        if offset + len(line) + complete > size:  # being written now: not in the view
            return
        yield offset, line, complete


def _say(args: argparse.Namespace, path: Path, report: Report, problem: str) -> int:
    if args.json:
        print(json.dumps({
            "log": str(path), "ok": not problem, "entries": report.entries,
            "last_seq": report.last_seq, "checkpoints": report.checkpoints,
            "last_checkpoint": report.last_checkpoint, "problem": problem,
            "bad_seq": report.problem.seq if report.problem else None,
            "warnings": report.warnings,
        }, indent=2))  # fmt: skip
    else:
        for warning in report.warnings:
            print(terminal(f"warning: {warning}"))
        if not problem:
            unsigned = report.last_seq - report.last_checkpoint
            print(terminal(
                f"{path}: OK: {report.entries} entries, {report.checkpoints} checkpoints "
                f"(the last at entry {report.last_checkpoint}; {unsigned} after it, vouched "
                "for by the signed head)"
            ))  # fmt: skip
    if problem:
        if not args.json:
            print(terminal(f"modgate: {path}: first bad entry: {problem}"), file=sys.stderr)
        return 1
    return 0


def parse_since(text: str, now: float) -> float:
    """Unix time of `text`: ISO 8601 (a date, or a time; UTC unless it says), or a
    duration ago (7d, 12h)."""
    from modgate.config import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError as e:
        raise AuditError(
            f"--since {text!r}: not a date (2026-01-31, 2026-01-31T12:00Z) or a duration (7d)"
        ) from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


CSV_COLUMNS = ("seq", "time", "kind", "identity", "team", "module", "version", "h1",
               "reason", "fields", "id", "hash")  # fmt: skip


def cmd_export(args: argparse.Namespace) -> int:
    import time

    path = log_path(args)
    if not path.is_file():
        raise AuditError(f"{path}: no audit log here (--confdir, --log)")
    since = parse_since(args.since, time.time())
    out = sys.stdout
    writer = csv.writer(out) if args.format == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    for _, entry in entries_from(path, since):
        if entry.time < since:
            continue
        if writer is None:
            out.write(json.dumps(entry.to_json(), ensure_ascii=True) + "\n")
            continue
        f = entry.fields
        stamp = datetime.datetime.fromtimestamp(entry.time, datetime.UTC).isoformat()
        row = [entry.seq, stamp, entry.kind, f.get("identity", ""), f.get("team", ""),
               f.get("module", ""), f.get("version", ""), f.get("h1", ""), f.get("reason", ""),
               json.dumps(f, sort_keys=True, ensure_ascii=True), entry.id, entry.hash]  # fmt: skip
        writer.writerow([_cell(v) for v in row])
    return 0


def _cell(value: object) -> object:
    """A cell a spreadsheet shows as text: a client's string that starts like a formula
    (=, +, -, @, tab, CR) gets a leading apostrophe (OWASP's CSV injection advice)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def cmd_pubkey(args: argparse.Namespace) -> int:
    confdir = Path(args.confdir).expanduser()
    path = confdir / keys.PUBLIC
    if not path.is_file():
        keys.signing_key(confdir)  # made on first use, as `modgate run` would
    sys.stdout.write(keys.public_pem(keys.load_public(path)).decode())
    return 0
