"""modgate.store.DiskStore on a real diskcache directory."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from modgate.errors import CacheError
from modgate.store import INLINE_MAX, MEMORY_MAX, DiskStore, Entry, Hit, Miss, Stale


def entry_for(key: str, body: bytes, expires_at: float | None = None) -> Entry:
    return Entry(key=key, status=200, content_type="application/zip", size=len(body),
                 sha256=hashlib.sha256(body).hexdigest(), stored_at=100.0,
                 expires_at=expires_at, upstream="http://up.example")  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    s = DiskStore(tmp_path / "cache", size_limit=1 << 30)
    yield s
    s.close()


def put(
    store: DiskStore, tmp_path: Path, key: str, body: bytes, expires_at: float | None = None
) -> Entry:
    f = tmp_path / f"spool-{len(body)}"
    f.write_bytes(body)
    entry = entry_for(key, body, expires_at)
    store.put(entry, f)
    return entry


@pytest.mark.parametrize(
    "size", [0, 100, INLINE_MAX, INLINE_MAX + 1, MEMORY_MAX, MEMORY_MAX + 1, 3 << 20]
)
def test_roundtrip_small_in_memory_large_as_file(
    store: DiskStore, tmp_path: Path, size: int
) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    entry = put(store, tmp_path, "k", body)
    assert store.lookup("k", now=1e12) == Hit(entry)  # immutable: fresh forever
    opened = store.open(entry)
    assert opened is not None
    try:
        if size <= MEMORY_MAX:  # stored inline, or as a file read whole when opened
            assert opened.data == body and opened.file is None
        else:
            assert opened.data is None and opened.file is not None and opened.file.read() == body
    finally:
        opened.close()


def test_reads_mark_entries_recently_used_in_batches(store: DiskStore, tmp_path: Path) -> None:
    first, second = put(store, tmp_path, "a", b"a"), put(store, tmp_path, "b", b"b")
    assert store.open(first) is not None  # "a" read after "b" was stored

    def used() -> dict[str, float]:
        with sqlite3.connect(store.directory / "cache.db") as db:
            return dict(db.execute("SELECT key, access_time FROM Cache"))

    assert used()["a"] < used()["b"]  # not written at once: no write per read
    store.flush()
    assert used()["a"] > used()["b"]  # so "b" is evicted first
    assert store.open(second) is not None


def test_mutable_entries_go_stale_after_their_expiry(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "list", b"v1.0.0\n", expires_at=200.0)
    assert store.lookup("list", now=199.9) == Hit(entry)
    assert store.lookup("list", now=200.0) == Stale(entry)
    assert store.lookup("other", now=0) == Miss()


def test_damaged_small_body_is_dropped(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (b"module evil.example/m\n", "k"))
    assert store.open(entry) is None
    assert store.lookup("k", now=0) == Miss()


def test_damaged_file_opened_into_memory_is_dropped(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "k", b"z" * MEMORY_MAX)
    with sqlite3.connect(store.directory / "cache.db") as db:
        (name,) = db.execute("SELECT filename FROM Cache WHERE key = ?", ("k",)).fetchone()
    with (store.directory / name).open("r+b") as f:  # same size, one byte different
        f.write(b"y")
    assert store.open(entry) is None
    assert store.lookup("k", now=0) == Miss()


def test_truncated_large_file_is_dropped(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "k", b"z" * (MEMORY_MAX + 1))
    opened = store.open(entry)
    assert opened is not None and opened.file is not None
    name = opened.file.name
    opened.close()
    with open(name, "r+b") as f:
        f.truncate(1000)
    assert store.open(entry) is None
    assert store.lookup("k", now=0) == Miss()


def test_unreadable_metadata_is_a_miss(store: DiskStore, tmp_path: Path) -> None:
    put(store, tmp_path, "k", b"data")
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute("UPDATE Cache SET tag = ? WHERE key = ?", ('{"key": "k"}', "k"))
    assert store.lookup("k", now=0) == Miss()
    assert len(store) == 0


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(
        CacheError, match=r"cache directory .*/file/cache cannot be used.*--cache-dir"
    ):
        DiskStore(blocker / "cache", size_limit=1 << 20)


def test_an_unreadable_row_is_dropped_not_raised(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    with sqlite3.connect(store.directory / "cache.db") as db:
        # A value of the wrong type: what a torn write or a stray tool can leave.
        db.execute("UPDATE Cache SET value = CAST(? AS TEXT) WHERE key = ?", (b"\xff\xfe", "k"))
    assert store.open(entry) is None
    assert store.lookup("k", now=0) == Miss()
