"""modgate trace: what went through modgate, per session (one `go` invocation).

    modgate trace ls [--team T]           sessions: when, client, requests, hit ratio, ...
                                          (and the team that asked, with rules.yaml teams)
    modgate trace show ID|last [--json]   a session's requests in order, and a summary
    modgate trace last                    the same as `show last`
    modgate trace export ID --har FILE    HAR 1.2, for browser devtools
    modgate trace export ID --flows FILE  a mitmproxy flow file, for mitmweb
    modgate trace waterfall ID -o FILE    a timeline, a row per module: .svg, .png, .html
    modgate trace sequence ID             a Mermaid sequence diagram
    modgate trace sbom ID -o FILE         a CycloneDX SBOM of the module versions downloaded
    modgate trace start NAME / stop       label the requests between them as one session

Sessions: a client's requests belong to one session until it pauses for longer than the
gap (modgate_trace_gap, 10 s); `start NAME` ... `stop` groups everything in between.

The database is trace.db beside modgate's cache directory: CONFDIR/trace.db, or, for
`modgate run --cache-dir DIR`, trace.db beside DIR: give the same --cache-dir here (or
--db FILE, for the modgate_trace_db option). --help after them says which file it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modgate.trace.record import Record
from modgate.trace.store import SessionSummary, TraceDB, default_db


def add_parser(sub: Any) -> None:
    """Add `modgate trace` to the subcommands of the modgate command line."""
    common = argparse.ArgumentParser(add_help=False)
    _where(common)
    trace = sub.add_parser(
        "trace", help="show what went through modgate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common], add_help=False,
    )  # fmt: skip
    trace.set_defaults(func=lambda _: (trace.print_help(), 2)[1])
    commands = trace.add_subparsers(metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = commands.add_parser(name, parents=[common], help=help, description=help, add_help=False)
        p.set_defaults(func=func)
        return p

    def session_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("session", metavar="ID", help="a session ID from `trace ls`, or 'last'")

    p = command("ls", cmd_ls, "list sessions, oldest first")
    p.add_argument(
        "-n", "--limit", type=int, default=20, help="the latest N (default: %(default)s)"
    )
    p.add_argument("--all", action="store_true", help="every session")
    p.add_argument("--team", help="only sessions with requests of this team (rules.yaml teams)")
    p.add_argument("--json", action="store_true", help="one JSON document")

    p = command("show", cmd_show, "a session's requests in order, and a summary")
    session_arg(p)
    p.add_argument("--json", action="store_true", help="one JSON document")
    _audit_arg(p)

    p = command("last", cmd_show, "the latest session's requests (show last)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    _audit_arg(p)
    p.set_defaults(session="last")

    p = command("export", cmd_export, "write a session as HAR or as a mitmproxy flow file")
    session_arg(p)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--har", type=Path, metavar="FILE", help="HAR 1.2 (browser devtools)")
    out.add_argument("--flows", type=Path, metavar="FILE", help="mitmproxy flows (mitmweb -r)")

    p = command("waterfall", cmd_waterfall, "draw a session's timeline")
    session_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, action="append", metavar="FILE",
                   help="FILE.svg, FILE.png or FILE.html (interactive: zoom, filters); "
                        "repeat for several")  # fmt: skip
    p.add_argument("--full", action="store_true",
                   help="one row per request, not one per module")  # fmt: skip

    p = command("sequence", cmd_sequence, "a session as a Mermaid sequence diagram")
    session_arg(p)
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: standard output")
    p.add_argument(
        "--limit", type=int, default=500, help="requests drawn, 0 for all (default: %(default)s)"
    )

    p = command("sbom", cmd_sbom, "a CycloneDX SBOM of the module versions a session downloaded")
    session_arg(p)
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: standard output")

    p = command("merge", cmd_merge, "several replicas' trace databases into one (read with --db)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="the new database (must not exist)")  # fmt: skip
    p.add_argument("sources", nargs="+", metavar="[NAME=]DB",
                   help="a replica's trace.db; NAME (default: its directory's name) prefixes "
                        "its requests' origin")  # fmt: skip

    p = command("start", cmd_start, "begin a labelled session: everything until `stop`")
    p.add_argument("name")
    command("stop", cmd_stop, "end the labelled session")


def _audit_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audit-log", type=Path, metavar="FILE",
        help="the audit log whose entries the AUDIT column names (default: audit.log in "
        "--confdir, else beside the trace database)",
    )  # fmt: skip


def _audit_seqs(args: argparse.Namespace, records: list[Record]) -> list[int | None]:
    """Each record's audit entry (`modgate audit export`), None where there is none."""
    from modgate.audit.find import seqs_of_requests

    path = getattr(args, "audit_log", None)
    if path is None:
        confdir = getattr(args, "confdir", None)
        path = Path(confdir) / "audit.log" if confdir else db_path(args).parent / "audit.log"
    if not records:
        return []
    keys = {(r.start, r.client_port) for r in records}
    found = seqs_of_requests(
        Path(path).expanduser(), keys, min(r.start for r in records), max(r.end for r in records)
    )
    return [found.get((r.start, r.client_port)) for r in records]


def _where(p: argparse.ArgumentParser) -> None:
    """--confdir, --cache-dir and --db, on `trace` and on each of its commands, so they
    may come before or after the command. No defaults here: argparse would let a
    command's default overwrite what was given before it; `db_path` applies them."""
    from modgate.home import default_home

    where = p.add_argument_group("where the traces are")
    where.add_argument(
        "--confdir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
        help=f"modgate's state directory: DIR/trace.db (default: {default_home()}, "
        "or $MODGATE_HOME)",
    )  # fmt: skip
    where.add_argument(
        "--cache-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
        help="the --cache-dir `modgate run` was given: trace.db beside DIR",
    )  # fmt: skip
    where.add_argument(
        "--db", type=Path, default=argparse.SUPPRESS, metavar="FILE",
        help="the trace database itself (modgate_trace_db)",
    )  # fmt: skip
    p.add_argument("-h", "--help", action=_Help)


class _Help(argparse.Action):
    """--help, ending with the database the options before it name."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
            help="show this help and the trace database it reads",
        )  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        parser.print_help()
        print(f"\nthe trace database here: {db_path(namespace)}")
        parser.exit()


def db_path(args: argparse.Namespace) -> Path:
    """--db; else trace.db beside --cache-dir, as `modgate run` places it; else beside
    CONFDIR/cache, the cache `modgate run` uses by default: CONFDIR/trace.db."""
    from modgate.home import default_home

    if getattr(args, "db", None):
        return Path(args.db).expanduser()
    if getattr(args, "cache_dir", None):
        return default_db(args.cache_dir)
    return default_db(Path(getattr(args, "confdir", None) or default_home()) / "cache")


@contextmanager
def _open(args: argparse.Namespace, create: bool = False) -> Iterator[TraceDB]:
    db = TraceDB(db_path(args), create=create)
    try:
        yield db
    finally:
        db.close()


def _session(args: argparse.Namespace) -> tuple[SessionSummary, list[Record]]:
    """The session named by `args.session` (an id or "last") and its records."""
    with _open(args) as db:
        session = db.session(db.resolve(args.session))
        return session, db.records(session.id)


def cmd_ls(args: argparse.Namespace) -> int:
    from modgate.trace.report import ls_text, summary_json

    with _open(args) as db:
        sessions = db.sessions(None if args.all else args.limit, args.team)
    if args.json:
        print(json.dumps([summary_json(s) for s in sessions], indent=2))
    else:
        sys.stdout.write(ls_text(sessions))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from modgate.trace.report import show_json, show_text

    session, records = _session(args)
    audit = _audit_seqs(args, records)
    if args.json:
        print(json.dumps(show_json(session, records, audit), indent=2))
    else:
        sys.stdout.write(show_text(session, records, audit))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from modgate.trace.flows import write_flows, write_har

    session, records = _session(args)
    if args.har:
        n = write_har(session, records, args.har)
        print(f"wrote {n} requests of session {session.id} to {args.har} (HAR 1.2)")
    else:
        n = write_flows(records, args.flows)
        print(f"wrote {n} requests of session {session.id} to {args.flows} (mitmproxy flows)")
    return 0


def cmd_waterfall(args: argparse.Namespace) -> int:
    from modgate.errors import ModgateError
    from modgate.trace.waterfall import SUFFIXES, render

    wrong = [str(o) for o in args.output if o.suffix.lower() not in SUFFIXES]
    if wrong:
        raise ModgateError(f"{', '.join(wrong)}: write a .svg, .png or .html file")
    session, records = _session(args)
    for output in args.output:
        render(session, records, output, grouped=not args.full)
        print(f"wrote the waterfall of session {session.id} ({len(records)} requests) to {output}")
    return 0


def cmd_sequence(args: argparse.Namespace) -> int:
    from modgate.trace.sequence import mermaid

    session, records = _session(args)
    _emit(mermaid(session, records, args.limit), args.output)
    return 0


def cmd_sbom(args: argparse.Namespace) -> int:
    from modgate.trace.sbom import downloaded, sbom_json

    session, records = _session(args)
    _emit(sbom_json(session, records), args.output)
    if args.output:
        found = downloaded(records)
        unhashed = sum(1 for d in found if not d.zip.h1)
        note = f" ({unhashed} without an h1 hash)" if unhashed else ""
        print(f"wrote an SBOM of {len(found)} module versions{note} to {args.output}")
    return 0


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def cmd_merge(args: argparse.Namespace) -> int:
    from modgate.trace.merge import merge

    sources = []
    for text in args.sources:
        name, sep, path = text.partition("=")
        db = Path(path if sep else name).expanduser()
        sources.append((name if sep else db.resolve().parent.name, db))
    merged = merge(args.output, sources)
    print(
        f"{args.output}: {merged.sessions} sessions, {merged.requests} requests from "
        f"{len(sources)} databases; read it with `modgate trace ls --db {args.output}`"
    )
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    with _open(args, create=True) as db:
        label = db.start_label(args.name, time.time())
    print(f"session {label.session} {label.name!r} started: everything goes into it until `stop`")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with _open(args, create=True) as db:
        stopped = db.stop_label(time.time())
    if not stopped:
        print("no labelled session was open")
        return 1
    for label in stopped:
        print(f"session {label.session} {label.name!r} stopped")
    return 0
