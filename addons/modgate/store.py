"""The artifact store: where answers from upstreams are kept, behind a small interface.

A lookup is a value: `Hit(entry)` (fresh), `Stale(entry)` (past its TTL, still
servable when the upstream fails) or `Miss()`. Bodies go in and out as files, so
a 500 MiB zip is never held in memory. `DiskStore` keeps them in a diskcache
directory; a `Tier` (objectstore.S3Tier: an S3 bucket several replicas share) can stand
behind it, asked by the gateway after a local miss.

`DiskStore` also keeps the small immutable answers it has served (a canonical
version's .info and .mod: "GOPROXY protocol", they never change) in a bounded
least-recently-used memory, so a hot hit costs no SQLite at all. A body enters it
only after its SHA-256 was checked on the way out of the disk; `put` and `delete`
drop it. Its reads still count as uses of the disk entry (for eviction). An entry
damaged or removed on disk (by another process, or evicted by diskcache) may still be
answered from memory until this process drops it: what is held was checked and never
changes. Zips are never held: the code is read and checked from disk on every serve,
so damage there is found, and healed, at the next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import diskcache

from modgate.errors import CacheError

# Bodies smaller than this are stored inside SQLite and read back as bytes in one call;
# larger ones as files. (diskcache's own default threshold.)
INLINE_MAX = 32 * 1024
PIECE = 256 * 1024  # a stored file is copied into the cache this much at a time
# Stored files up to this size are opened into memory (read and SHA-256-checked whole)
# and answered in one write; larger ones stream from disk through the BlobServer. A
# loopback stream costs a connection and mitmproxy's per-chunk work, more than reading
# a small file does (scripts/bench, issue 6); the cap keeps memory bounded per answer.
MEMORY_MAX = 1 << 20
# Least-recently-used bookkeeping: reads note when an entry was used and write the times
# down in batches. diskcache's own get() for this policy runs one SQLite write
# transaction per read, the largest cost of a cache hit (scripts/bench, issue 6).
TOUCH_BATCH = 256
TOUCH_EVERY = 5.0  # seconds
# Immutable answers up to HELD_MAX bytes are held in memory once served, up to HELD_TOTAL
# bytes in all: two SQLite SELECTs, a JSON decode and a SHA-256 per hit were a tenth of
# what modgate added to a small cached hit (scripts/bench, issue 6).
HELD_MAX = 64 * 1024
HELD_TOTAL = 16 << 20
# Written by `remove` (modgate cache evict/prune, another process): a store holding
# answers in memory drops them once it sees the file change, within STAMP_EVERY seconds.
STAMP = "evictions.stamp"
STAMP_EVERY = 1.0
ZIP_TYPE = "application/zip"  # goproxy's content type of a .zip: never held


@dataclass(frozen=True)
class Entry:
    """What the store knows about one stored answer."""

    key: str
    status: int  # 200, or 404/410 for a negative entry
    content_type: str
    size: int
    sha256: str  # of the body, checked before a body is served
    stored_at: float
    expires_at: float | None  # None: immutable, never expires
    upstream: str  # which upstream URL gave it
    h1: str = ""  # for .mod/.zip: the hash it was verified with
    verdict: str = ""  # "verified" or "unverified" (private module, first seen)
    checked_by: str = ""  # where the expected hash came from

    def fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Hit:
    entry: Entry


@dataclass(frozen=True)
class Stale:
    entry: Entry


@dataclass(frozen=True)
class Miss:
    pass


Lookup = Hit | Stale | Miss


class Body:
    """An open stored body: `data` for small ones, `file` (seekable, on disk) for large."""

    def __init__(self, data: bytes | None = None, file: BinaryIO | None = None) -> None:
        assert (data is None) != (file is None)
        self.data, self.file = data, file

    def read(self) -> bytes:
        """The whole body, in memory (for answers known to be small, or read whole anyway)."""
        if self.data is not None:
            return self.data
        assert self.file is not None
        return self.file.read()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Store(Protocol):
    """What the gateway needs from storage."""

    def lookup(self, key: str, now: float) -> Lookup: ...

    def open(self, entry: Entry) -> Body | None:
        """The body of `entry`, or None when it is gone or damaged (then it is dropped)."""
        ...

    def put(self, entry: Entry, body: Path) -> None: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


# diskcache's least-recently-used policy, except that checksum-database answers
# (lookups, tiles, tree heads: a key whose path starts with "sumdb/") are never culled
# by the size limit. A cached zip is only as good as the proof a fresh client needs to
# verify it offline (issue 16 §3); they are small, and `modgate cache prune` spares them
# too. diskcache reads its policies from this table by the name stored in the cache, so
# registering one more is all it takes; the cull query is its own with a WHERE added.
KEEP_PROOFS = "modgate-least-recently-used-keep-proofs"
_LRU = diskcache.core.EVICTION_POLICY["least-recently-used"]
diskcache.core.EVICTION_POLICY.setdefault(
    KEEP_PROOFS,
    {
        **_LRU,
        "cull": "SELECT {fields} FROM Cache WHERE key NOT LIKE '% sumdb/%'"
        " ORDER BY access_time LIMIT ?",
    },
)


class Tier(Protocol):
    """A store shared by replicas behind each one's local Store (objectstore.S3Tier):
    asynchronous, bodies in and out as files. Raises ObjectStoreError when unusable."""

    async def get(self, key: str, spool: Path) -> tuple[Entry, Path] | None:
        """The answer stored under `key`, its body in a new file in `spool` (the caller
        removes it), checked against its entry; None when there is none."""
        ...

    async def put(self, entry: Entry, body: Path) -> None: ...

    def status(self) -> str: ...

    async def close(self) -> None: ...


class DiskStore:
    """A Store in a diskcache directory: one item per answer, the entry's metadata in
    the item's tag, so metadata and body are written and evicted together."""

    def __init__(
        self, directory: Path, size_limit: int | None, held_total: int = HELD_TOTAL
    ) -> None:
        """Open (or create) the store. `size_limit` None keeps the one the store has;
        `held_total` bounds the bytes of small immutable bodies held in memory."""
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = directory / ".modgate-write-test"
            probe.write_bytes(b"")
            probe.unlink()
            # Evict the least recently *used* entries past the limit, not the oldest
            # stored: a module every build needs stays. diskcache's default limit (1 GiB,
            # least-recently-stored) would drop artifacts silently.
            limit = {} if size_limit is None else {"size_limit": size_limit}
            self._cache = diskcache.Cache(
                str(directory),
                eviction_policy=KEEP_PROOFS,
                disk_min_file_size=INLINE_MAX,
                **limit,
            )
        except (OSError, sqlite3.Error) as e:
            raise CacheError(
                f"cache directory {directory} cannot be used: {e}; "
                "choose a writable local directory with --cache-dir"
            ) from e
        self.directory = directory
        self._touched: dict[str, float] = {}
        self._flushed = time.monotonic()
        # Writes them down (`_touch`); its thread starts with the first batch.
        self._toucher = ThreadPoolExecutor(1, thread_name_prefix="modgate-store")
        self._touching: Future[None] | None = None
        # key -> (entry, its checked body), least recently used first. A lock: `put` runs
        # in a worker thread (asyncio.to_thread) while the event loop reads.
        self._held: OrderedDict[str, tuple[Entry, bytes]] = OrderedDict()
        self._held_size, self._held_total = 0, held_total
        self._held_lock = threading.Lock()
        self._stamp, self._stamp_checked = self._read_stamp(), time.monotonic()

    def lookup(self, key: str, now: float) -> Lookup:
        held = self._held.get(key)
        if held is not None and not self._evicted_elsewhere():
            return Hit(held[0])  # immutable: fresh for ever
        tag = self._tag(key)
        if tag is None:
            return Miss()
        entry = _entry_from_tag(tag)
        if entry is None:
            self.delete(key)  # written by an incompatible version, or damaged
            return Miss()
        return Hit(entry) if entry.fresh(now) else Stale(entry)

    def held(self, key: str) -> Entry | None:
        """The entry held in memory under `key` (its body checked when it was read), or
        None: what fasthit.py's answers stay valid by. A read counts as a use (eviction)."""
        if self._evicted_elsewhere():
            return None
        with self._held_lock:
            held = self._held.get(key)
            if held is None:
                return None
            self._held.move_to_end(key)
        self._touch(key)
        return held[0]

    def _tag(self, key: str) -> str | None:
        # A read of the tag column only: the body file is not opened. One SELECT is atomic
        # on its own; diskcache's transact() would take SQLite's write lock (BEGIN
        # IMMEDIATE) on every request for nothing (scripts/bench, issue 6).
        with self._database():
            row = self._cache._sql(  # noqa: SLF001 - diskcache has no tag-only read
                "SELECT tag FROM Cache WHERE key = ? AND raw = 1", (key,)
            ).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def _database(self) -> Iterator[None]:
        """SQLite failing under a running store (cache.db damaged, the disk gone) is a
        CacheError, answered 503 by the addons. Nothing is dropped for it: the entries
        may all be readable again once the fault is gone."""
        try:
            yield
        except sqlite3.Error as e:
            raise CacheError(
                f"cache database {self.directory / 'cache.db'}: {e} (if this persists, stop "
                f"modgate and move {self.directory} aside: the cache is rebuilt empty)"
            ) from e

    def open(self, entry: Entry) -> Body | None:
        with self._held_lock:
            held = self._held.get(entry.key)
            if held is not None and (held[0] is entry or held[0] == entry):
                self._held.move_to_end(entry.key)
            else:
                held = None
        if held is not None:
            self._touch(entry.key)
            return Body(data=held[1])
        body = self.raw(entry)
        if body is not None and body.file is not None and entry.size <= MEMORY_MAX:
            with body.file as file:
                body = _read_whole(file)
        if body is None or not _intact(body, entry):
            if body is not None:
                body.close()
            self.delete(entry.key)  # unreadable or damaged: the caller fetches it again
            return None
        if body.data is not None and _holdable(entry):
            self._hold(entry, body.data)
        return body

    def _hold(self, entry: Entry, data: bytes) -> None:
        """Keep a checked immutable body in memory, dropping the least recently used."""
        with self._held_lock:
            self._drop_held(entry.key)
            self._held[entry.key] = (entry, data)
            self._held_size += len(data)
            while self._held_size > self._held_total:
                _, (_, old) = self._held.popitem(last=False)
                self._held_size -= len(old)

    def _drop_held(self, key: str) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._held_size -= len(held[1])

    def raw(self, entry: Entry) -> Body | None:
        """The stored body as it is on disk, unchecked; None when it cannot be read.
        Raises CacheError when the database itself fails (see `_database`)."""
        try:
            # diskcache's get() without its per-read write: the same SELECT and fetch.
            with self._database():
                row = self._cache._sql(  # noqa: SLF001
                    "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
                    (entry.key,),
                ).fetchone()
            # Only the modes `put` writes: diskcache's fetch would unpickle a pickle row.
            if row is None or row[0] not in _BODY_MODES:
                return None
            value = self._cache._disk.fetch(*row, True)  # noqa: SLF001
        except CacheError as e:
            if isinstance(e.__cause__, sqlite3.Error) and _row_damaged(e.__cause__):
                return None
            raise
        except (OSError, UnicodeDecodeError):
            return None
        self._touch(entry.key)
        return Body(data=bytes(value)) if isinstance(value, bytes) else Body(file=value)

    def _touch(self, key: str) -> None:
        self._touched[key] = time.time()
        if len(self._touched) >= TOUCH_BATCH or time.monotonic() - self._flushed >= TOUCH_EVERY:
            # On a thread of its own, one batch at a time: the caller is the event loop,
            # and the write waits for SQLite's write lock, which another worker may hold.
            touched, self._touched = self._touched, {}
            self._flushed = time.monotonic()
            self._touching = self._toucher.submit(self._write_touched, touched)

    def flush(self) -> None:
        """Write down when entries were last read (eviction drops the least recent), and
        wait for what is being written."""
        if self._touching is not None:
            self._touching.result()
        touched, self._touched = self._touched, {}
        self._flushed = time.monotonic()
        self._write_touched(touched)

    def _write_touched(self, touched: dict[str, float]) -> None:
        if not touched:
            return
        with contextlib.suppress(sqlite3.Error, diskcache.Timeout), self._cache.transact():
            for key, used in list(touched.items()):  # (one C call: a late `_touch` may add)
                self._cache._sql(  # noqa: SLF001
                    "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1", (used, key)
                )

    def put(self, entry: Entry, body: Path) -> None:
        tag = json.dumps(asdict(entry), separators=(",", ":"))
        try:
            if entry.size < INLINE_MAX:
                self._cache.set(entry.key, body.read_bytes(), tag=tag)
            else:
                with body.open("rb") as f:
                    self._cache.set(entry.key, _Pieces(f), read=True, tag=tag)
        except (OSError, sqlite3.Error) as e:
            raise CacheError(f"cannot store {entry.key!r} in {self.directory}: {e}") from e
        finally:
            with self._held_lock:  # the old answer, if held, is gone
                self._drop_held(entry.key)

    def delete(self, key: str) -> None:
        with self._held_lock:
            self._drop_held(key)
        with contextlib.suppress(sqlite3.Error):  # unreadable: the next put replaces it
            self._cache.delete(key)

    def _read_stamp(self) -> int:
        try:
            return (self.directory / STAMP).stat().st_mtime_ns
        except OSError:
            return 0

    def _evicted_elsewhere(self) -> bool:
        """Whether `remove` ran since this store last looked (at most every STAMP_EVERY
        seconds); if so, what it holds in memory is dropped, to be read again from disk."""
        if time.monotonic() - self._stamp_checked < STAMP_EVERY:
            return False
        self._stamp_checked = time.monotonic()
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        with self._held_lock:
            self._held.clear()
            self._held_size = 0
        return True

    def remove(self, keys: Iterable[str]) -> int:
        """Delete entries for good (cache evict, prune), and say so to every modgate that
        holds some in memory (STAMP). How many were there."""
        removed = 0
        for key in keys:
            with self._held_lock:
                self._drop_held(key)
            with self._database():
                removed += bool(self._cache.delete(key))
        stamp = self.directory / STAMP
        stamp.touch()
        os.utime(stamp, ns=(time.time_ns(), time.time_ns()))
        return removed

    def access_times(self) -> dict[str, float]:
        """When each entry was last served (or stored), as the eviction order sees it."""
        self.flush()
        with self._database():
            rows = self._cache._sql(  # noqa: SLF001 - diskcache does not list them
                "SELECT key, access_time FROM Cache WHERE raw = 1"
            ).fetchall()
        return {key: float(used) for key, used in rows if isinstance(key, str)}

    def entries(self) -> Iterator[Entry]:
        """Every readable entry, in storage order (for `modgate cache verify`)."""
        with self._database():
            keys = list(self._cache.iterkeys())
        for key in keys:
            if isinstance(key, str) and isinstance(looked := self.lookup(key, 0.0), Hit | Stale):
                yield looked.entry

    def files(self) -> set[str]:
        """The body files entries refer to, relative to the directory (leftovers.py)."""
        rows = self._cache._sql(  # noqa: SLF001 - diskcache lists no file names
            "SELECT filename FROM Cache WHERE filename IS NOT NULL"
        ).fetchall()
        return {Path(row[0]).as_posix() for row in rows}

    @property
    def size_limit(self) -> int:
        return int(self._cache.size_limit)

    def resize(self, size_limit: int) -> None:
        if self._cache.size_limit != size_limit:
            with self._database():
                self._cache.reset("size_limit", size_limit)

    def close(self) -> None:
        self.flush()
        if self._touching is not None:  # its thread's own SQLite connection too
            self._toucher.submit(self._cache.close).result()
        self._toucher.shutdown()
        self._cache.close()

    def __len__(self) -> int:
        with self._database():
            return len(self._cache)

    def volume(self) -> int:
        """Bytes the store holds on disk (diskcache's estimate: bodies and database)."""
        with self._database():
            return int(self._cache.volume())


# diskcache's storage modes of the values `put` writes: inline bytes, or a file.
_BODY_MODES = (diskcache.core.MODE_RAW, diskcache.core.MODE_BINARY)
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "key": str, "status": int, "content_type": str, "size": int, "sha256": str,
    "stored_at": (int, float), "expires_at": (int, float, type(None)), "upstream": str,
    "h1": str, "verdict": str, "checked_by": str,
}  # fmt: skip


class _Pieces:
    """A file whose reads return at most PIECE bytes. diskcache copies a stored file in
    reads of 4 MiB: with a few zips stored at once, 12 MiB of a worker's peak heap went
    to those copies (scripts/bench_memory, issue 13). 256 KiB pieces copy as fast."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def read(self, size: int = -1) -> bytes:
        return self.file.read(PIECE if size < 0 else min(size, PIECE))


def entry_from_json(text: str) -> Entry | None:
    """The Entry a JSON text describes (a shared tier's metadata), or None."""
    return _entry_from_tag(text)


def _entry_from_tag(tag: object) -> Entry | None:
    """The Entry a tag describes, or None when it is not one `put` wrote (damaged, or
    from an incompatible version): every field present is of its type."""
    try:
        fields = json.loads(tag) if isinstance(tag, str) else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict) or not all(
        isinstance(value, _FIELD_TYPES.get(name, ())) and not isinstance(value, bool)
        for name, value in fields.items()
    ):
        return None
    try:
        return Entry(**fields)
    except TypeError:  # a field missing
        return None


def _row_damaged(e: sqlite3.Error) -> bool:
    """A row whose value Python cannot convert (a TEXT that is not UTF-8): the database
    answered, one entry is damaged. Errors SQLite itself reports carry its error code."""
    return not hasattr(e, "sqlite_errorcode")


def _holdable(entry: Entry) -> bool:
    return entry.expires_at is None and entry.size <= HELD_MAX and entry.content_type != ZIP_TYPE


def _read_whole(file: BinaryIO) -> Body | None:
    try:
        return Body(data=file.read())
    except OSError:
        return None


def _intact(body: Body, entry: Entry) -> bool:
    """Size always; the SHA-256 of bodies held in memory (cheap). Large files are checked
    by size here; their full hash is checked when they were stored."""
    if body.data is not None:
        return (
            len(body.data) == entry.size and hashlib.sha256(body.data).hexdigest() == entry.sha256
        )
    assert body.file is not None
    return os.fstat(body.file.fileno()).st_size == entry.size


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(io.DEFAULT_BUFFER_SIZE * 64):
            h.update(chunk)
    return h.hexdigest()
