"""What the cache holds, and keeping it in shape: the decisions behind `modgate cache ls`,
`stats`, `evict` and `prune`, over the store's items (no CLI, no printing).

An item is one stored answer, named by what it is: kind, module and version as the
GOPROXY protocol path says ("GOPROXY protocol"), or a checksum database's lookup or
tile. `prune` removes least recently used first, and only module answers: the
checksum-database lookups and tiles that prove the artifacts kept are small and are kept
with them (a fresh client offline needs them, in any order). The running modgate holds
small answers in memory: removing writes the store's eviction stamp, and a running
modgate drops what it holds when it sees that stamp change (store.py), so an evicted
version is fetched and checked again at its next request.
"""

from __future__ import annotations

import fnmatch
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modgate.errors import ModgateError, ProtocolError
from modgate.goproxy import parse_request
from modgate.store import DiskStore, Entry


@dataclass(frozen=True)
class Item:
    key: str
    kind: str  # list, info, mod, zip, latest, sumdb-lookup, sumdb-tile, ... or "other"
    module: str  # "" for checksum-database items
    version: str
    size: int
    stored_at: float
    used_at: float  # last served (the store's access time), or stored_at
    status: int
    verdict: str
    database: str = ""  # the checksum database of a lookup, tile or tree head

    @property
    def sumdb(self) -> bool:
        return self.kind.startswith("sumdb")


def item(entry: Entry, used_at: float | None) -> Item:
    """The item of a stored entry; its key ends with the protocol path it answers."""
    path = entry.key.rsplit(" ", 1)[-1]
    kind, module, version, database = "other", "", "", ""
    try:
        req = parse_request(path, _database_names(path))
    except ProtocolError:
        pass
    else:
        kind, module, version, database = req.kind.value, req.module, req.version, req.sumdb
    return Item(entry.key, kind, module, version, entry.size, entry.stored_at,
                used_at or entry.stored_at, entry.status, entry.verdict, database)  # fmt: skip


def _database_names(path: str) -> tuple[str, ...]:
    """The database name a `sumdb/<name>/...` path holds: up to its lookup/tile/latest."""
    if not path.startswith("sumdb/"):
        return ()
    parts = path.split("/")[1:]
    for i, part in enumerate(parts):
        if part in ("lookup", "tile", "latest", "supported"):
            return ("/".join(parts[:i]),)
    return ()


def items(store: DiskStore) -> Iterator[Item]:
    used = store.access_times()
    for entry in store.entries():
        yield item(entry, used.get(entry.key))


def matching(found: Iterable[Item], pattern: str) -> list[Item]:
    """Items whose module (or module@version) matches a glob: `golang.org/x/*`,
    `example.com/m@v1.*`; "" for all. A pattern without glob characters also matches the
    modules below it, as module rules do."""
    if not pattern:
        return list(found)
    name, _, version = pattern.partition("@")
    out = []
    for i in found:
        if not i.module:
            continue
        named = fnmatch.fnmatchcase(i.module, name) or (
            not any(c in name for c in "*?[") and i.module.startswith(name.rstrip("/") + "/")
        )
        if named and (not version or fnmatch.fnmatchcase(i.version, version)):
            out.append(i)
    return out


@dataclass
class Stats:
    entries: int = 0
    size: int = 0
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind: (n, bytes)
    oldest: float | None = None
    newest: float | None = None
    largest: list[tuple[str, int]] = field(default_factory=list)  # module: bytes
    modules: int = 0
    versions: int = 0


def stats(found: Iterable[Item], top: int = 10) -> Stats:
    s = Stats()
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_module: Counter[str] = Counter()
    versions: set[tuple[str, str]] = set()
    for i in found:
        s.entries += 1
        s.size += i.size
        kinds[i.kind][0] += 1
        kinds[i.kind][1] += i.size
        s.oldest = i.stored_at if s.oldest is None else min(s.oldest, i.stored_at)
        s.newest = i.stored_at if s.newest is None else max(s.newest, i.stored_at)
        if i.module:
            per_module[i.module] += i.size
            if i.version:
                versions.add((i.module, i.version))
    s.by_kind = {k: (v[0], v[1]) for k, v in sorted(kinds.items())}
    s.largest = per_module.most_common(top)
    s.modules, s.versions = len(per_module), len(versions)
    return s


def evictable(found: Iterable[Item], target: str) -> list[Item]:
    """What `evict MODULE[@VERSION]` removes: every answer of that module (or version),
    including its version lists and @latest."""
    module, _, version = target.partition("@")
    if not module or any(c in target for c in "*?["):
        raise ModgateError(f"{target!r}: name one module, optionally @version (no globs)")
    return [i for i in found if i.module == module and (not version or i.version in (version, ""))]


def prune_plan(
    found: Sequence[Item], now: float, max_size: int | None = None,
    older_than: float | None = None, unused_since: float | None = None,
) -> list[Item]:  # fmt: skip
    """Module answers to remove, least recently used first: those stored more than
    `older_than` seconds ago, those not served for `unused_since` seconds, then as many
    more as it takes to bring the whole store under `max_size` bytes."""
    if max_size is None and older_than is None and unused_since is None:
        raise ModgateError("prune: say what to remove: --max-size, --older-than or --unused-since")
    candidates = sorted((i for i in found if not i.sumdb), key=lambda i: (i.used_at, i.key))
    chosen: dict[str, Item] = {}
    for i in candidates:
        old = older_than is not None and now - i.stored_at > older_than
        unused = unused_since is not None and now - i.used_at > unused_since
        if old or unused:
            chosen[i.key] = i
    if max_size is not None:
        size = sum(i.size for i in found) - sum(i.size for i in chosen.values())
        for i in candidates:
            if size <= max_size:
                break
            if i.key not in chosen:
                chosen[i.key] = i
                size -= i.size
    return sorted(chosen.values(), key=lambda i: (i.used_at, i.key))


def hit_ratio(trace_db: Path) -> float | None:
    """Of the module requests traced in `trace_db`, the share answered from the cache."""
    if not trace_db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{trace_db}?mode=ro", uri=True) as conn:
            served, cached = conn.execute(
                "SELECT COUNT(*), SUM(cache IN ('hit', 'negative', 'stale')) FROM requests "
                "WHERE kind IN ('list','info','mod','zip','latest')"
            ).fetchone()
    except sqlite3.Error:
        return None
    return (cached or 0) / served if served else None


@dataclass(frozen=True)
class Bad:
    key: str
    path: str  # the protocol path it answers
    problem: str


@dataclass(frozen=True)
class Rechecked:
    checked: int
    size: int
    bad: tuple[Bad, ...]


def recheck_all(store: DiskStore, progress: Callable[[int, int], None] | None = None) -> Rechecked:
    """Re-hash every stored answer (verify.recheck): those that changed on disk.
    `progress(checked, total)` is called every 200 entries."""
    from modgate.verify import recheck

    total = len(store)
    checked = size = 0
    bad: list[Bad] = []
    for entry in store.entries():
        checked += 1
        size += entry.size
        if progress is not None and checked % 200 == 0:
            progress(checked, total)
        body = store.raw(entry)
        problem = "unreadable" if body is None else recheck(entry, body)
        if body is not None:
            body.close()
        if problem:
            bad.append(Bad(entry.key, entry.key.rsplit(" ", 1)[-1], problem))
    return Rechecked(checked, size, tuple(bad))
