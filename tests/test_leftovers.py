"""modgate.leftovers: what an interrupted modgate leaves in a real cache directory, and
that a cache another modgate is using loses only files nobody has touched for long."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from modgate import leftovers
from modgate.leftovers import STALE_AGE, CacheLock
from modgate.store import DiskStore, Entry


def entry(key: str, data: bytes) -> Entry:
    sha256 = hashlib.sha256(data).hexdigest()
    return Entry(key=key, status=200, content_type="application/zip", size=len(data), sha256=sha256,
                 stored_at=0, expires_at=None, upstream="http://up")  # fmt: skip


def a_cache(tmp_path: Path) -> tuple[Path, DiskStore, Path, Path]:
    """A cache holding one large stored body, plus what SIGKILL leaves: a spool file and
    a `.val` body no row refers to (diskcache writes the file, then inserts the row)."""
    cache = tmp_path / "cache"
    store = DiskStore(cache / "artifacts", 1 << 30)
    body = tmp_path / "body"
    body.write_bytes(b"z" * 100_000)
    store.put(entry("kept", b"z" * 100_000), body)
    (cache / "spool").mkdir()
    spooled = cache / "spool" / "fetch-abc123"
    spooled.write_bytes(b"x" * 5000)
    orphan = cache / "artifacts" / "ab" / "cd" / "0123456789abcdef.val"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"y" * 7000)
    return cache, store, spooled, orphan


def test_alone_every_leftover_is_found_and_nothing_stored(tmp_path: Path) -> None:
    cache, store, spooled, orphan = a_cache(tmp_path)
    try:
        found = leftovers.find(cache, store.files(), alone=True)
        assert found.files == tuple(sorted((spooled, orphan)))
        assert found.size == 12_000
        removed = leftovers.remove(found)
        assert removed == found
        assert str(removed) == "2 files (0.0 MiB)"
        assert not spooled.exists() and not orphan.exists()
        [kept] = store.entries()
        body = store.open(kept)
        assert body is not None and body.data == b"z" * 100_000
    finally:
        store.close()


def test_while_another_modgate_holds_the_cache_only_old_files_count(tmp_path: Path) -> None:
    cache, store, spooled, orphan = a_cache(tmp_path)
    running = CacheLock(cache)  # another modgate: flock conflicts between open files
    running.share()
    mine = CacheLock(cache)
    try:
        assert not mine.alone()
        assert leftovers.find(cache, store.files(), alone=False).files == ()
        old = time.time() - STALE_AGE - 60
        os.utime(orphan, (old, old))  # untouched for over an hour: nobody is writing it
        assert leftovers.find(cache, store.files(), alone=False).files == (orphan,)
        running.close()
        assert mine.alone()  # the other one stopped
        assert leftovers.find(cache, store.files(), alone=True).files == (orphan, spooled)
    finally:
        mine.close()
        running.close()
        store.close()


def test_the_lock_file_and_cache_directory_are_private(tmp_path: Path) -> None:
    lock = CacheLock(tmp_path / "new")
    lock.close()
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / leftovers.LOCK_NAME).stat().st_mode & 0o777 == 0o600
