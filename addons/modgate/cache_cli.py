"""`modgate cache …`: look after the store from the command line, also while modgate
runs (diskcache's own locking; evicted answers a running modgate held in memory are
dropped within a second: store.STAMP).

    modgate cache ls [PATTERN] [--json]       what is stored, by module and version
    modgate cache stats [--json]              entries and bytes by kind, ages, largest modules
    modgate cache evict MODULE[@VERSION]      remove a module's (or one version's) answers
    modgate cache prune --max-size/--older-than/--unused-since   least recently used first
    modgate cache verify [--remove]           re-hash everything stored
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    """Of the module requests traced, the share answered from the cache."""
    import sqlite3

    from modgate.trace.store import default_db

    db = default_db(cache_dir)
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            served, cached = conn.execute(
                "SELECT COUNT(*), SUM(cache IN ('hit', 'negative', 'stale')) FROM requests "
                "WHERE kind IN ('list','info','mod','zip','latest')"
            ).fetchone()
    except sqlite3.Error:
        return None
    return (cached or 0) / served if served else None


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
    from modgate.verify import recheck

    total = len(store)
    checked = size = 0
    bad: list[str] = []
    for entry in store.entries():
        checked += 1
        size += entry.size
        if sys.stderr.isatty() and checked % 200 == 0:
            print(f"\rchecked {checked}/{total}", end="", file=sys.stderr, flush=True)
        body = store.raw(entry)
        problem = "unreadable" if body is None else recheck(entry, body)
        if body is not None:
            body.close()
        if problem:
            path = entry.key.rsplit(" ", 1)[1]
            print(f"BAD {path}: {problem}")
            bad.append(entry.key)
    if sys.stderr.isatty() and checked >= 200:
        print(file=sys.stderr)
    summary = f"checked {checked} entries ({size / (1 << 20):.1f} MiB): {len(bad)} bad"
    if args.remove and bad:
        for key in bad:
            store.delete(key)
        summary += f", removed {len(bad)} (fetched again on next request)"
    print(summary)
    return bad
