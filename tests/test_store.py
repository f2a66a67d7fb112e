"""modgate.store.DiskStore on a real diskcache directory."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from modgate.errors import CacheError
from modgate.store import (
    HELD_MAX,
    INLINE_MAX,
    MEMORY_MAX,
    DiskStore,
    Entry,
    Hit,
    Miss,
    Stale,
)


def entry_for(
    key: str, body: bytes, expires_at: float | None = None, content_type: str = "text/plain"
) -> Entry:
    return Entry(key=key, status=200, content_type=content_type, size=len(body),
                 sha256=hashlib.sha256(body).hexdigest(), stored_at=100.0,
                 expires_at=expires_at, upstream="http://up.example")  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    s = DiskStore(tmp_path / "cache", size_limit=1 << 30)
    yield s
    s.close()


def put(
    store: DiskStore, tmp_path: Path, key: str, body: bytes, expires_at: float | None = None,
    content_type: str = "text/plain",
) -> Entry:  # fmt: skip
    f = tmp_path / f"spool-{len(body)}"
    f.write_bytes(body)
    entry = entry_for(key, body, expires_at, content_type)
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


def test_reads_never_wait_for_another_process_holding_the_write_lock(
    store: DiskStore, tmp_path: Path
) -> None:
    """Reads run on the event loop: writing down their batch of access times waits for
    SQLite's write lock (another worker's put, an eviction) on a thread, not in the read."""
    from modgate.store import TOUCH_BATCH

    entries = [put(store, tmp_path, f"k{i}", b"%d" % i) for i in range(2 * TOUCH_BATCH)]
    store.flush()
    other = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        started, now = time.monotonic(), time.time()
        for entry in entries:  # two batches' worth
            assert store.open(entry) is not None
        assert time.monotonic() - started < 2.0  # diskcache waits up to 60 s for the lock
    finally:
        other.execute("COMMIT")
        other.close()
    store.flush()
    with sqlite3.connect(store.directory / "cache.db") as db:
        used = dict(db.execute("SELECT key, access_time FROM Cache"))
    assert all(used[e.key] >= now for e in entries)


def test_mutable_entries_go_stale_after_their_expiry(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "list", b"v1.0.0\n", expires_at=200.0)
    assert store.lookup("list", now=199.9) == Hit(entry)
    assert store.lookup("list", now=200.0) == Stale(entry)
    assert store.lookup("other", now=0) == Miss()


@pytest.mark.parametrize(
    ("update", "value"),
    [
        ("UPDATE Cache SET value = ? WHERE key = ?", b"module evil.example/m\n"),  # damaged
        # A value of the wrong type: what a torn write or a stray tool can leave.
        ("UPDATE Cache SET value = CAST(? AS TEXT) WHERE key = ?", b"\xff\xfe"),
    ],
    ids=["damaged", "unreadable"],
)
def test_a_damaged_or_unreadable_small_body_is_dropped_not_raised(
    store: DiskStore, tmp_path: Path, update: str, value: bytes
) -> None:
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute(update, (value, "k"))
    assert store.open(entry) is None
    assert store.lookup("k", now=0) == Miss()
    assert store.open(entry) is None  # and it never entered the memory of served answers


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


def test_a_cache_database_corrupted_while_running_is_a_cache_error_and_loses_nothing(
    store: DiskStore, tmp_path: Path
) -> None:
    """diskcache's SQLite raises sqlite3.DatabaseError once cache.db is damaged under a
    running store: each call that needs it fails with CacheError (the addons answer 503),
    answers held in memory are still served, and no entry is dropped for it, so a
    database restored (or a transient fault gone) still has everything."""
    entries = [put(store, tmp_path, f"k{i}", f"body {i} ".encode() * 64) for i in range(200)]
    held = store.open(entries[0])  # served once: then answered from memory
    assert held is not None
    db = store.directory / "cache.db"
    good = db.read_bytes()
    with db.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xa5" * (len(good) - 4096))
    message = r"cache database .*/cache\.db: database disk image is malformed .*move .* aside"
    with pytest.raises(CacheError, match=message):
        store.lookup("k1", now=0)
    with pytest.raises(CacheError, match=message):
        store.open(entries[1])
    with pytest.raises(CacheError, match=message):
        list(store.entries())
    with pytest.raises(CacheError, match=message):
        len(store)
    assert store.lookup("k0", now=0) == Hit(entries[0])
    opened = store.open(entries[0])
    assert opened is not None and opened.data == b"body 0 " * 64
    db.write_bytes(good)
    assert [store.lookup(e.key, now=0) for e in entries] == [Hit(e) for e in entries]
    assert all(store.open(e) is not None for e in entries)


def test_a_stored_row_a_python_reader_would_unpickle_is_dropped(
    store: DiskStore, tmp_path: Path
) -> None:
    """diskcache's fetch unpickles rows in its pickle mode: modgate never stores one, so
    such a row is damage (or planted), never read."""
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute(
            "UPDATE Cache SET mode = 4, value = ? WHERE key = ?",
            (b"cbuiltins\nlen\n(S'abc'\ntR.", "k"),
        )
    assert store.open(entry) is None
    assert store.lookup("k", now=0) == Miss()


# --- small immutable answers held in memory ----------------------------------------------


def spoil_tags(store: DiskStore) -> None:
    """Make every stored entry unreadable from SQLite: only memory can answer now."""
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute("UPDATE Cache SET tag = 'damaged'")


def test_a_served_small_immutable_answer_is_then_answered_from_memory(
    store: DiskStore, tmp_path: Path
) -> None:
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    opened = store.open(entry)
    assert opened is not None and opened.data == b"module example.com/m\n"
    spoil_tags(store)
    assert store.lookup("k", now=0) == Hit(entry)
    again = store.open(entry)
    assert again is not None and again.data == b"module example.com/m\n"


def test_only_small_immutable_answers_are_held(store: DiskStore, tmp_path: Path) -> None:
    small = put(store, tmp_path, "small", b"s" * HELD_MAX)
    large = put(store, tmp_path, "large", b"l" * (HELD_MAX + 1))
    mutable = put(store, tmp_path, "list", b"v1.0.0\n", expires_at=1e12)
    code = put(store, tmp_path, "zip", b"PK small zip", content_type="application/zip")
    for entry in (small, large, mutable, code):
        opened = store.open(entry)
        assert opened is not None
        opened.close()
    spoil_tags(store)  # the disk lookups now fail (and drop the entry): a Miss
    assert store.lookup("small", now=0) == Hit(small)
    assert store.lookup("large", now=0) == Miss()
    assert store.lookup("list", now=0) == Miss()
    assert store.lookup("zip", now=0) == Miss()  # the code is checked on disk every time


def test_a_held_answer_damaged_on_disk_is_served_as_checked_until_dropped(
    store: DiskStore, tmp_path: Path
) -> None:
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    assert store.open(entry) is not None  # checked, and held
    with sqlite3.connect(store.directory / "cache.db") as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (b"module evil.example/m\n", "k"))
    held = store.open(entry)
    assert held is not None and held.data == b"module example.com/m\n"  # never the damage
    fresh = DiskStore(store.directory, size_limit=None)  # another process: nothing held
    try:
        assert fresh.open(entry) is None  # found damaged on disk, and dropped
        assert fresh.lookup("k", now=0) == Miss()
    finally:
        fresh.close()


def test_delete_drops_the_answer_from_memory_too(store: DiskStore, tmp_path: Path) -> None:
    entry = put(store, tmp_path, "k", b"module example.com/m\n")
    assert store.open(entry) is not None
    store.delete("k")
    assert store.lookup("k", now=0) == Miss()
    assert store.open(entry) is None


def test_put_replaces_the_answer_in_memory(store: DiskStore, tmp_path: Path) -> None:
    old = put(store, tmp_path, "k", b"old")
    assert store.open(old) is not None
    new = put(store, tmp_path, "k", b"new body")
    assert store.lookup("k", now=0) == Hit(new)
    opened = store.open(new)
    assert opened is not None and opened.data == b"new body"


def test_memory_is_bounded_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "cache", size_limit=1 << 30, held_total=3000)
    try:
        entries = {k: put(store, tmp_path, k, k.encode() * 1000) for k in "abc"}  # 1000 B each
        for k in "abc":
            assert store.open(entries[k]) is not None
        assert store.open(entries["a"]) is not None  # "a" used again: "b" is now the oldest
        entries["d"] = put(store, tmp_path, "d", b"d" * 1000)
        assert store.open(entries["d"]) is not None  # 4000 B > 3000: one must go
        spoil_tags(store)
        held = [k for k in "abcd" if store.lookup(k, now=0) == Hit(entries[k])]
        assert held == ["a", "c", "d"]
    finally:
        store.close()


def test_answers_from_memory_still_mark_entries_recently_used(
    store: DiskStore, tmp_path: Path
) -> None:
    first, _ = put(store, tmp_path, "a", b"a"), put(store, tmp_path, "b", b"b")
    assert store.open(first) is not None  # now held
    store.flush()

    def used() -> dict[str, float]:
        with sqlite3.connect(store.directory / "cache.db") as db:
            return dict(db.execute("SELECT key, access_time FROM Cache"))

    before = used()["a"]
    assert store.lookup("a", now=0) == Hit(first)
    assert store.open(first) is not None  # from memory
    store.flush()
    assert used()["a"] > before


def test_the_size_limit_evicts_module_answers_but_never_the_proofs_they_need(
    tmp_path: Path,
) -> None:
    # A cache past its size limit drops the least recently used answers; a checksum-
    # database lookup or tile, however old, stays: without them a client that finds the
    # zip cached could not verify it offline (issue 16 §3).
    store = DiskStore(tmp_path / "cache", size_limit=4 << 20)
    try:
        proofs = [
            put(
                store,
                tmp_path,
                "v2 sumdb/sum.modgate.test/lookup/example.modgate.test/a@v1.0.0",
                b"lookup\n" * 40,
            ),
            put(store, tmp_path, "v2 sumdb/sum.modgate.test/tile/8/0/000", b"t" * 8192),
            put(store, tmp_path, "v1 up sumdb/sum.modgate.test/latest", b"head\n", expires_at=1e12),
        ]
        zips = [
            put(
                store,
                tmp_path,
                f"v2 example.modgate.test/m{i}/@v/v1.0.0.zip",
                bytes([i]) * (64 << 10),
            )
            for i in range(100)
        ]
        assert isinstance(store.lookup(zips[0].key, now=1.0), Miss), "nothing was evicted"
        assert isinstance(store.lookup(zips[-1].key, now=1.0), Hit)
        for proof in proofs:
            assert store.lookup(proof.key, now=1.0) == Hit(proof), proof.key
    finally:
        store.close()
