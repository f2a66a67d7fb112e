"""`modgate cache …`: look after the store from the command line."""

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
