"""The artifact store: where answers from upstreams are kept, behind a small interface.

A lookup is a value: `Hit(entry)` (fresh), `Stale(entry)` (past its TTL, still
servable when the upstream fails) or `Miss()`. Bodies go in and out as files, so
a 500 MiB zip is never held in memory. `DiskStore` keeps them in a diskcache
directory; the interface is what an S3-backed store will implement later.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import diskcache

from modgate.errors import CacheError

# Bodies smaller than this are stored inside SQLite and read back as bytes in one call;
# larger ones as files. (diskcache's own default threshold.)
INLINE_MAX = 32 * 1024


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


class DiskStore:
    """A Store in a diskcache directory: one item per answer, the entry's metadata in
    the item's tag, so metadata and body are written and evicted together."""

    def __init__(self, directory: Path, size_limit: int | None) -> None:
        """Open (or create) the store. `size_limit` None keeps the one the store has."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".modgate-write-test"
            probe.write_bytes(b"")
            probe.unlink()
            # Evict the least recently *used* entries past the limit, not the oldest
            # stored: a module every build needs stays. diskcache's default limit (1 GiB,
            # least-recently-stored) would drop artifacts silently.
            limit = {} if size_limit is None else {"size_limit": size_limit}
            self._cache = diskcache.Cache(
                str(directory),
                eviction_policy="least-recently-used",
                disk_min_file_size=INLINE_MAX,
                **limit,
            )
        except (OSError, sqlite3.Error) as e:
            raise CacheError(
                f"cache directory {directory} cannot be used: {e}; "
                "choose a writable local directory with --cache-dir"
            ) from e
        self.directory = directory

    def lookup(self, key: str, now: float) -> Lookup:
        tag = self._tag(key)
        if tag is None:
            return Miss()
        try:
            entry = Entry(**json.loads(tag))
        except (TypeError, ValueError):
            self.delete(key)  # written by an incompatible version, or damaged
            return Miss()
        return Hit(entry) if entry.fresh(now) else Stale(entry)

    def _tag(self, key: str) -> str | None:
        # A read of the tag column only: the body file is not opened.
        with self._cache.transact():
            row = self._cache._sql(  # noqa: SLF001 - diskcache has no tag-only read
                "SELECT tag FROM Cache WHERE key = ? AND raw = 1", (key,)
            ).fetchone()
        return row[0] if row else None

    def open(self, entry: Entry) -> Body | None:
        body = self.raw(entry)
        if body is None or not _intact(body, entry):
            if body is not None:
                body.close()
            self.delete(entry.key)  # unreadable or damaged: the caller fetches it again
            return None
        return body

    def raw(self, entry: Entry) -> Body | None:
        """The stored body as it is on disk, unchecked; None when it cannot be read."""
        try:
            value = self._cache.get(entry.key, default=None, read=True)
        except (OSError, sqlite3.Error, UnicodeDecodeError):
            return None
        if value is None:
            return None
        return Body(data=bytes(value)) if isinstance(value, bytes) else Body(file=value)

    def put(self, entry: Entry, body: Path) -> None:
        tag = json.dumps(asdict(entry), separators=(",", ":"))
        try:
            if entry.size < INLINE_MAX:
                self._cache.set(entry.key, body.read_bytes(), tag=tag)
            else:
                with body.open("rb") as f:
                    self._cache.set(entry.key, f, read=True, tag=tag)
        except (OSError, sqlite3.Error) as e:
            raise CacheError(f"cannot store {entry.key!r} in {self.directory}: {e}") from e

    def delete(self, key: str) -> None:
        with contextlib.suppress(sqlite3.Error):  # unreadable: the next put replaces it
            self._cache.delete(key)

    def entries(self) -> Iterator[Entry]:
        """Every readable entry, in storage order (for `modgate cache verify`)."""
        for key in self._cache.iterkeys():
            if isinstance(key, str) and isinstance(looked := self.lookup(key, 0.0), Hit | Stale):
                yield looked.entry

    def resize(self, size_limit: int) -> None:
        if self._cache.size_limit != size_limit:
            self._cache.reset("size_limit", size_limit)

    def close(self) -> None:
        self._cache.close()

    def __len__(self) -> int:
        return len(self._cache)


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
