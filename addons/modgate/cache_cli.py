"""`modgate cache …`: look after the store from the command line, also while modgate
runs (diskcache's own locking; evicted answers a running modgate held in memory are
dropped within a second: store.STAMP).

    modgate cache ls [PATTERN] [--json]       what is stored, by module and version
    modgate cache stats [--json]              entries and bytes by kind, ages, largest modules
    modgate cache evict MODULE[@VERSION]      remove a module's (or one version's) answers
    modgate cache prune --max-size/--older-than/--unused-since   least recently used first
    modgate cache verify [--remove]           re-hash everything stored
    modgate cache export FILE [--modules P] [--since DATE] [--session ID] [--against OLD]
    modgate cache import FILE --trust KEY.pub re-verified whole, or refused whole (bundle.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modgate import bundle, prefetch
    from modgate.config import SumdbConfig
    from modgate.store import DiskStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from modgate.home import default_home

    cache = sub.add_parser("cache", help="inspect and repair the cache")
    actions = cache.add_subparsers(metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        help="re-check every stored answer against the hashes it was stored and verified with",
        description="Re-hash every stored answer (SHA-256 of the body, and h1: of each .mod "
        "and .zip) and list those that changed on disk. Exit status 1 when any did. Also "
        "count the files an interrupted modgate left (removed at its next start).",
    )
    verify.add_argument("--cache-dir", type=Path, default=default_home() / "cache",
                        help="default: %(default)s")  # fmt: skip
    verify.add_argument("--remove", action="store_true",
                        help="remove the bad entries and the leftovers")  # fmt: skip
    verify.set_defaults(func=cmd_verify)

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cache-dir", type=Path, default=default_home() / "cache",
                       help="default: %(default)s")  # fmt: skip

    ls = actions.add_parser("ls", help="list what is stored, by module and version")
    ls.add_argument("pattern", nargs="?", default="",
                    help="module glob, optionally @version glob: x.org/m/*, m@v1.*")  # fmt: skip
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    where(ls)
    ls.set_defaults(func=cmd_ls)
    st = actions.add_parser("stats", help="entries and bytes by kind, ages, largest modules")
    st.add_argument("--json", action="store_true", help="one JSON object")
    where(st)
    st.set_defaults(func=cmd_stats)
    ev = actions.add_parser("evict", help="remove a module's answers, or one version's")
    ev.add_argument("target", metavar="MODULE[@VERSION]")
    where(ev)
    ev.set_defaults(func=cmd_evict)
    pr = actions.add_parser(
        "prune",
        help="remove module answers, least recently used first",
        description="Remove module answers (never checksum-database lookups and tiles, "
        "which prove the artifacts kept): those stored before --older-than, those not "
        "served for --unused-since, then the least recently used until the store is under "
        "--max-size.",
    )
    pr.add_argument("--max-size", type=_size, metavar="SIZE", help="e.g. 10GiB")
    pr.add_argument("--older-than", type=_duration, metavar="AGE", help="e.g. 90d")
    pr.add_argument("--unused-since", type=_duration, metavar="AGE", help="e.g. 30d")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    where(pr)
    pr.set_defaults(func=cmd_prune)

    ex = actions.add_parser(
        "export", help="write an air-gap bundle, signed with this modgate's key"
    )
    ex.add_argument("file", type=Path, metavar="FILE")
    ex.add_argument("--modules", default="", metavar="PATTERN", help="module glob[@version glob]")
    ex.add_argument(
        "--since", type=_date_arg, metavar="DATE", help="stored on or after (YYYY-MM-DD)"
    )
    ex.add_argument(
        "--session",
        type=int,
        metavar="TRACE_ID",
        help="the module versions a traced session downloaded (modgate trace ls)",
    )
    ex.add_argument(
        "--against", type=Path, metavar="OLD", help="an earlier bundle: carry only what it did not"
    )
    ex.add_argument(
        "--database",
        default="",
        help="the checksum database to carry (default: the one the cache holds)",
    )
    ex.add_argument(
        "--confdir",
        type=Path,
        default=default_home(),
        help="where the signing key is (default: %(default)s)",
    )
    where(ex)
    ex.set_defaults(func=cmd_export)
    im = actions.add_parser("import", help="check a bundle whole, then add it to the cache")
    im.add_argument("file", type=Path, metavar="FILE")
    im.add_argument(
        "--trust",
        type=Path,
        required=True,
        metavar="KEY.pub",
        help="the exporting modgate's bundle-signing.pub",
    )
    im.add_argument(
        "--rules",
        type=Path,
        help="the rules file of the modgate that will serve it "
        "(its checksum database and private modules); default: go env GOSUMDB",
    )
    im.add_argument("--jobs", type=int, default=8)
    where(im)
    im.set_defaults(func=cmd_import)


def _size(text: str) -> int:
    from modgate.config import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _duration(text: str) -> float:
    from modgate.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _open(args: argparse.Namespace) -> DiskStore:
    from modgate.errors import ModgateError
    from modgate.store import DiskStore

    directory = args.cache_dir.expanduser() / "artifacts"
    if not (directory / "cache.db").is_file():
        raise ModgateError(
            f"no cache at {args.cache_dir} (give the one modgate runs with: --cache-dir)"
        )
    return DiskStore(directory, size_limit=None)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def _date(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def cmd_ls(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from modgate import cacheadmin

    store = _open(args)
    try:
        found = cacheadmin.matching(cacheadmin.items(store), args.pattern)
    finally:
        store.close()
    found.sort(key=lambda i: (i.module, i.version, i.kind))
    for i in found:
        if args.json:
            print(json.dumps(asdict(i), sort_keys=True))
        else:
            version = f"@{i.version}" if i.version else ""
            print(f"{i.module}{version}  {i.kind}  {i.status}  {_mib(i.size)}  "
                  f"stored {_date(i.stored_at)}  used {_date(i.used_at)}")  # fmt: skip
    if not args.json:
        print(f"{len(found)} entries, {_mib(sum(i.size for i in found))}", file=sys.stderr)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from modgate import cacheadmin

    store = _open(args)
    try:
        s = cacheadmin.stats(cacheadmin.items(store))
        limit = store.size_limit
    finally:
        store.close()
    hits = _hit_ratio(args.cache_dir)
    if args.json:
        print(json.dumps({**asdict(s), "size_limit": limit, "hit_ratio": hits}, sort_keys=True))
        return 0
    print(f"{s.entries} entries, {_mib(s.size)} of {_mib(limit)}; {s.modules} modules, "
          f"{s.versions} versions")  # fmt: skip
    print(f"stored from {_date(s.oldest)} to {_date(s.newest)}")
    if hits is not None:
        print(f"hit ratio (trace, last 30 days): {hits:.0%}")
    for kind, (n, size) in s.by_kind.items():
        print(f"  {kind:<16} {n:>7}  {_mib(size):>12}")
    if s.largest:
        print("largest modules:")
        for module, size in s.largest:
            print(f"  {_mib(size):>12}  {module}")
    return 0


def _hit_ratio(cache_dir: Path) -> float | None:
    from modgate.cacheadmin import hit_ratio
    from modgate.trace.store import default_db

    return hit_ratio(default_db(cache_dir))


def cmd_evict(args: argparse.Namespace) -> int:
    from modgate import cacheadmin

    store = _open(args)
    try:
        gone = cacheadmin.evictable(cacheadmin.items(store), args.target)
        removed = store.remove(i.key for i in gone)
    finally:
        store.close()
    print(f"evicted {removed} entries of {args.target} ({_mib(sum(i.size for i in gone))}); "
          "fetched and checked again at their next request")  # fmt: skip
    return 0 if removed else 1


def cmd_prune(args: argparse.Namespace) -> int:
    import time

    from modgate import cacheadmin

    store = _open(args)
    try:
        found = list(cacheadmin.items(store))
        plan = cacheadmin.prune_plan(found, time.time(), args.max_size, args.older_than,
                                     args.unused_since)  # fmt: skip
        size = sum(i.size for i in plan)
        if args.dry_run:
            for i in plan:
                print(f"would remove {i.module}@{i.version} {i.kind} ({_mib(i.size)})")
            print(f"would remove {len(plan)} entries, {_mib(size)}")
            return 0
        removed = 0
        for start in range(0, len(plan), 500):
            removed += store.remove(i.key for i in plan[start : start + 500])
            if sys.stderr.isatty():
                print(f"\rremoved {removed}/{len(plan)}", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty() and plan:
            print(file=sys.stderr)
    finally:
        store.close()
    print(f"removed {removed} entries, {_mib(size)}; {len(found) - removed} left")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from modgate import leftovers
    from modgate.store import DiskStore

    cache_dir: Path = args.cache_dir.expanduser()
    store = DiskStore(cache_dir / "artifacts", size_limit=None)
    lock = leftovers.CacheLock(cache_dir)
    try:
        bad = _recheck(args, store)
        alone = lock.alone()
        left = leftovers.find(cache_dir, store.files(), alone)
        if left.files and args.remove:
            print(f"leftovers: removed {leftovers.remove(left)} left by interrupted runs")
        elif left.files:
            print(
                f"leftovers: {left} left by interrupted runs (spool/fetch-*, .val files no "
                "entry refers to): removed at modgate's next start, or now with --remove"
            )
        if not alone:
            hours = leftovers.STALE_AGE / 3600
            print(f"leftovers: a modgate uses this cache: only files untouched {hours:.0f}h count")
    finally:
        lock.close()
        store.close()
    return 1 if bad else 0


def _recheck(args: argparse.Namespace, store: DiskStore) -> list[str]:
    """Re-hash every entry; the keys of those that changed on disk."""
    from modgate.cacheadmin import recheck_all

    def progress(checked: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rchecked {checked}/{total}", end="", file=sys.stderr, flush=True)

    done = recheck_all(store, progress)
    if sys.stderr.isatty() and done.checked >= 200:
        print(file=sys.stderr)
    for bad in done.bad:
        print(f"BAD {bad.path}: {bad.problem}")
    summary = (
        f"checked {done.checked} entries ({done.size / (1 << 20):.1f} MiB): {len(done.bad)} bad"
    )
    if args.remove and done.bad:
        for bad in done.bad:
            store.delete(bad.key)
        summary += f", removed {len(done.bad)} (fetched again on next request)"
    print(summary)
    return [bad.key for bad in done.bad]


def _date_arg(text: str) -> float:
    import datetime

    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: give a date such as 2026-12-01") from e


def cmd_export(args: argparse.Namespace) -> int:
    from collections import Counter

    from tqdm import tqdm

    from modgate import bundle, cacheadmin
    from modgate.errors import ModgateError

    store = _open(args)
    try:
        found = list(cacheadmin.items(store))
        databases = Counter(i.database for i in found if i.sumdb)
        database = args.database or (databases.most_common(1)[0][0] if databases else "")
        if not args.database and len(databases) > 1:
            raise ModgateError(
                f"the cache holds several checksum databases ({', '.join(databases)}): "
                "name one with --database"
            )
        wanted = {i.key for i in cacheadmin.matching(found, args.modules)}
        versions = _session_versions(args) if args.session is not None else None

        def chosen(i: cacheadmin.Item) -> bool:
            if i.key not in wanted or (args.since and i.stored_at < args.since):
                return False
            return (
                versions is None
                or (i.module, i.version) in versions
                or (i.kind == "list" and any(m == i.module for m, _ in versions))
            )

        previous = _previous(args.against) if args.against else None
        picked = bundle.select(found, chosen, previous, database)
        key = bundle.signing_key(args.confdir.expanduser())
        total = sum(i.size for i in picked)
        with tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, disable=None) as bar:
            manifest = bundle.export(store, picked, args.file, key, database, bar.update)
    finally:
        store.close()
    print(
        f"wrote {args.file}: {len(manifest.versions)} module versions, {len(manifest.files)} "
        f"files, {_mib(total)}; signed with {args.confdir / bundle.PUBLIC}"
    )
    return 0


def _session_versions(args: argparse.Namespace) -> set[tuple[str, str]]:
    import sqlite3

    from modgate.errors import ModgateError
    from modgate.trace.store import default_db

    db = default_db(args.cache_dir)
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT DISTINCT module, version FROM requests WHERE session = ? "
                "AND module != '' AND version != ''",
                (args.session,),
            ).fetchall()
    except sqlite3.Error as e:
        raise ModgateError(f"{db}: cannot read the trace: {e}") from e
    if not rows:
        raise ModgateError(f"session {args.session}: no module versions in {db} (modgate trace ls)")
    return {(m, v) for m, v in rows}


def _previous(path: Path) -> bundle.Manifest:
    import tarfile

    from modgate import bundle
    from modgate.errors import ModgateError

    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile(bundle.MANIFEST)
            if member is None:
                raise KeyError(bundle.MANIFEST)
            return bundle.Manifest.loads(member.read())
    except (OSError, KeyError, tarfile.TarError) as e:
        raise ModgateError(f"--against {path}: no bundle manifest there: {e}") from e


def cmd_import(args: argparse.Namespace) -> int:
    import tempfile

    from modgate import bundle
    from modgate.store import DiskStore

    trusted = bundle.load_public(args.trust)
    db, private = _importer_checks(args.rules)
    with tempfile.TemporaryDirectory(prefix="modgate-import-") as scratch:
        work = Path(scratch)
        print(f"import: checking {args.file}", file=sys.stderr)
        manifest = bundle.unpack(args.file, trusted, work / "tree")
        if manifest.database and db is not None and manifest.database != db.name:
            raise bundle.BundleError(
                f"{args.file}: carries checksum database {manifest.database}, "
                f"this modgate checks against {db.name}"
            )
        outcome = _replay(args, manifest, work, db, private)
        if outcome.failed or outcome.refused:
            reasons = list(outcome.failed.items()) + list(outcome.refused.items())
            listed = "; ".join(f"{name}: {why}" for name, why in sorted(reasons)[:5])
            raise bundle.BundleError(f"{args.file}: refused whole, nothing imported: {listed}")
        target = DiskStore(args.cache_dir.expanduser() / "artifacts", size_limit=None)
        staging = DiskStore(work / "staging" / "cache" / "artifacts", size_limit=None)
        try:
            copied = bundle.copy_entries(staging, target)
        finally:
            staging.close()
            target.close()
    print(
        f"imported {copied} entries ({len(manifest.versions)} module versions) from {args.file}, "
        "every one checked"
    )
    return 0


def _importer_checks(rules: Path | None) -> tuple[SumdbConfig | None, str]:
    """The checksum database and private patterns of the modgate that will serve."""
    from modgate import goenv
    from modgate.config import parse_gosumdb
    from modgate.rulesfile import load_checked

    private = ""
    if rules is not None:
        config = load_checked(rules)
        private = config.checksum.private
        if config.checksum.databases is not None:
            return (config.checksum.databases[0] if config.checksum.databases else None), private
    values = goenv.values(["GOSUMDB", "GONOSUMDB", "GOPRIVATE"])
    private = private or values.get("GONOSUMDB") or values.get("GOPRIVATE", "")
    return parse_gosumdb(values.get("GOSUMDB", "off") or "off"), private


def _replay(
    args: argparse.Namespace,
    manifest: bundle.Manifest,
    work: Path,
    db: SumdbConfig | None,
    private: str,
) -> prefetch.Outcome:
    """Ask a modgate of its own, whose upstream is the bundle's tree and whose checksum
    database is the importer's, for every version the bundle carries."""
    import asyncio
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from tqdm import tqdm

    from modgate import bundle, prefetch
    from modgate.patterns import match_prefix_patterns
    from modgate.prefetch_cli import standalone

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(work / "tree"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/proxy"
    lines = [
        "proxies:",
        "  - url: https://bundle.modgate.invalid",
        f"    upstream: {base}",
        "checksum:",
    ]
    if db is not None:
        lines += ["  databases:", f"    - key: {db.key}", f"      upstream: {base}/sumdb/{db.name}"]
    else:
        lines += ["  databases: []"]
    if private:
        lines.append(f"  private: {private!r}")
    if pinned := bundle.pins(manifest):
        lines += ["  pins:", *(f"    - {p!r}" for p in pinned)]
    rules = work / "rules.yaml"
    rules.write_text("\n".join(lines) + "\n")
    wants = set()
    for full, hashes in manifest.versions.items():
        module, _, version = full.partition("@")
        wants.add(prefetch.Want(module, version, gomod_only="zip" not in hashes))
    try:
        with (
            standalone(work / "staging" / "cache", rules, work / "staging") as endpoint,
            tqdm(total=len(wants), unit=" versions", file=sys.stderr, disable=None) as bar,
        ):
            name = db.name if db is not None else ""
            return asyncio.run(
                prefetch.fetch_all(
                    endpoint,
                    wants,
                    name,
                    lambda m: match_prefix_patterns(private, m),
                    max(1, args.jobs),
                    lambda n, size: bar.update(n),
                    lambda path: f"proxy/{path}" in manifest.files,
                )
            )
    finally:
        server.shutdown()
        server.server_close()
