"""The writer thread: committed before the callback, batched, hashes bodies it is given,
counts what it could not write and goes on."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from modgate.trace import journal
from modgate.trace import writer as writer_module
from modgate.trace.store import TraceDB
from modgate.trace.writer import TraceWriter
from traceworld import T0, rec
from world.modules import ModuleVersion


def count(path: Path) -> int:
    with sqlite3.connect(path) as conn:  # another connection: sees only what is committed
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def test_each_callback_runs_once_its_record_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    writer = TraceWriter(path)
    writer.start()
    seen: list[tuple[int, str | None]] = []
    done = threading.Event()

    def callback(i: int) -> object:
        def call(error: str | None) -> None:
            seen.append((count(path), error))
            if i == 199:
                done.set()

        return call

    for i in range(200):
        writer.submit(rec(i * 0.01, version=f"v1.0.{i}"), done=callback(i))  # type: ignore[arg-type]
    assert done.wait(10)
    writer.stop()
    assert len(seen) == 200
    assert all(error is None for _, error in seen)
    assert all(n >= i + 1 for i, (n, _) in enumerate(seen))  # visible before the call
    assert writer.stats.written == 200 and writer.stats.batches < 200  # group commits


def test_stop_writes_what_is_still_queued(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path / "t.db")
    writer.start()
    for i in range(1000):
        writer.submit(rec(i * 0.001))
    writer.stop()
    assert count(tmp_path / "t.db") == 1000


def test_commits_are_paced_a_record_after_a_quiet_spell_is_committed_at_once(
    tmp_path: Path,
) -> None:
    writer = TraceWriter(tmp_path / "t.db", pace=1.0)
    writer.start()
    first = threading.Event()
    submitted = time.monotonic()
    writer.submit(rec(0.0), done=lambda _e: first.set())
    assert first.wait(10)
    assert time.monotonic() - submitted < 0.9  # no wait for the first in a while
    rest = threading.Semaphore(0)
    for i in range(20):  # one every 10 ms: each would be its own transaction unpaced
        writer.submit(rec(0.01 * (i + 1)), done=lambda _e: rest.release())
        time.sleep(0.01)
    for _ in range(20):
        assert rest.acquire(timeout=10)
    writer.stop()
    assert writer.stats.written == 21
    assert writer.stats.batches <= 3


def test_the_h1_of_a_served_body_is_computed_when_no_verifier_gave_one(tmp_path: Path) -> None:
    mv = ModuleVersion("example.com/Upper", "v1.0.0")
    writer = TraceWriter(tmp_path / "t.db")
    writer.start()
    common = {"module": mv.path, "version": mv.version}
    writer.submit(rec(0.0, kind="zip", **common), body=mv.zip_bytes())
    writer.submit(rec(0.1, kind="mod", **common), body=mv.gomod)
    writer.submit(rec(0.2, kind="zip", h1="h1:given=", **common), body=mv.zip_bytes())
    writer.submit(rec(0.3, kind="zip", **common, status=200), body=b"not a zip")
    writer.stop()
    db = TraceDB(tmp_path / "t.db", create=False)
    assert [r.h1 for r in db.records(1)] == [mv.zip_hash, mv.gomod_hash, "h1:given=", ""]


def test_a_batch_that_cannot_be_written_is_logged_counted_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "RETRY_WAIT", 0.05)
    path = tmp_path / "t.db"
    writer = TraceWriter(path)
    writer.start()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE requests RENAME TO gone")  # every insert now fails
    committed = threading.Event()
    writer.submit(rec(), done=lambda e: committed.set())
    deadline = time.monotonic() + 10
    while writer.stats.failures < 2:  # tried, and tried again
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not writer.healthy and not committed.is_set()
    assert "cannot write the trace" in writer.stats.last_error
    assert "no such table" in caplog.text and "1 requests waiting" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert len(journal.read(writer.journal_path)) == 1  # still journaled meanwhile

    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE gone RENAME TO requests")
    assert committed.wait(10)
    assert writer.healthy and writer.stats.dropped == 0
    writer.stop()
    assert count(path) == 1 and journal.read(writer.journal_path) == []


def test_records_older_than_the_retention_are_dropped(tmp_path: Path) -> None:
    day = 86400.0
    old = TraceWriter(tmp_path / "t.db", clock=lambda: T0)
    old.start()
    old.submit(rec(0.0))
    old.submit(rec(5 * day))
    old.stop()
    writer = TraceWriter(tmp_path / "t.db", retention=2 * day, clock=lambda: T0 + 6 * day)
    writer.start()
    writer.stop()
    assert count(tmp_path / "t.db") == 1


def test_a_label_set_by_another_process_takes_the_next_requests(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    writer = TraceWriter(path, clock=lambda: T0)
    writer.start()
    cli = TraceDB(path)  # as `modgate trace start` opens it
    wrote = threading.Semaphore(0)

    def submit(start: float) -> None:
        writer.submit(rec(start), done=lambda _e: wrote.release())
        assert wrote.acquire(timeout=10)

    submit(0.0)
    label = cli.start_label("warm", T0 + 1.0)
    submit(1.5)
    submit(2.0)
    cli.stop_label(T0 + 3.0)
    submit(3.5)  # within the gap of session 1, but after a label: a new session
    writer.stop()
    sessions = [(s.id, s.label, s.requests) for s in cli.sessions()]
    assert sessions == [(1, "", 1), (label.session, "warm", 2), (3, "", 1)]


def test_a_stopped_writer_reports_a_record_lost_at_once(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path / "t.db")
    writer.start()
    writer.stop()
    errors: list[str | None] = []
    writer.submit(rec(), done=errors.append)
    assert errors == [f"the trace writer for {tmp_path / 't.db'} is not running"]
    assert writer.stats.dropped == 1


def test_what_a_killed_writer_had_not_committed_is_replayed_once_on_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    TraceDB(path).close()
    pending = path.with_name("t.db.pending")
    # as a killed modgate leaves it: entries 1-2 committed (journal_seq 2), 3-4 not,
    # and a last line cut off mid-write
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 2 WHERE key = 'journal_seq'")
    lines = [
        b"%d %s\n" % (i, journal.encode(rec(i * 0.1, version=f"v1.0.{i}"))) for i in (1, 2, 3, 4)
    ]  # noqa: E501
    pending.write_bytes(b"".join(lines) + lines[0][:20])
    writer = TraceWriter(path)
    writer.start()
    assert writer.stats.recovered == 2
    writer.submit(rec(1.0, version="v2.0.0"))
    writer.stop()
    db = TraceDB(path, create=False)
    assert [r.version for r in db.records(1)] == ["v1.0.3", "v1.0.4", "v2.0.0"]
    assert db.journal_seq() == 5 and pending.read_bytes() == b""
    again = TraceWriter(path)
    again.start()
    again.stop()
    assert db.count() == 3  # nothing replayed twice


def test_the_journal_round_trips_every_field() -> None:
    r = rec(kind="zip", attempts=("a: 404", "b: 200"), ttfb=None, bytes_out=None, h1="h1:x=")
    assert journal.decode(journal.encode(r)) == r


def test_a_restarted_writer_carries_on_with_the_open_sessions(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    first = TraceWriter(path, clock=lambda: T0 + 1)
    first.start()
    first.submit(rec(0.0))
    first.submit(rec(0.5, client="10.0.0.2"))
    first.stop()
    second = TraceWriter(path, clock=lambda: T0 + 3)
    second.start()
    second.submit(rec(2.0))  # within the gap: the same session
    second.submit(rec(2.1, client="10.0.0.3"))  # a new client: a new session
    second.stop()
    db = TraceDB(path, create=False)
    assert [(s.client, s.requests) for s in db.sessions()] == [
        ("127.0.0.1", 2), ("10.0.0.2", 1), ("10.0.0.3", 1),
    ]  # fmt: skip


def test_writers_sharing_a_database_each_journal_apart_and_share_sessions(
    tmp_path: Path,
) -> None:
    """Workers of one modgate: two writers, one database. Each claims its own journal
    (one truncating a shared journal would drop the other's lines), and a client's
    requests, spread over both, go into one session."""
    path = tmp_path / "t.db"
    writers = [TraceWriter(path, clock=lambda: T0), TraceWriter(path, clock=lambda: T0)]
    for w in writers:
        w.start()
    assert [w.journal_path.name for w in writers] == ["t.db.pending", "t.db.pending.1"]
    wrote = threading.Semaphore(0)
    for i in range(20):
        writers[i % 2].submit(rec(i * 0.1, version=f"v1.0.{i}"), done=lambda _e: wrote.release())
        assert wrote.acquire(timeout=10)
    for w in writers:
        w.stop()
    db = TraceDB(path, create=False)
    assert db.count() == 20
    assert [(s.requests, s.client) for s in db.sessions()] == [(20, "127.0.0.1")]
    assert db.journal_seq(0) == 10 and db.journal_seq(1) == 10


def test_a_client_new_to_a_writer_joins_the_session_another_writer_began(
    tmp_path: Path,
) -> None:
    """Two workers: A begins go[7]'s session; B then writes another client's request
    (so B has seen A's commit), and only then one of go[7]'s, with nothing written in
    between. B must still look go[7] up, not begin a second session for it (seen with
    24 go commands over two workers: tests/test_e2e_workers.py)."""
    path = tmp_path / "t.db"
    a, b = TraceWriter(path, clock=lambda: T0), TraceWriter(path, clock=lambda: T0)
    for w in (a, b):
        w.start()
    wrote = threading.Semaphore(0)
    for writer, origin in ((a, "go[7]"), (b, "go[8]"), (b, "go[7]")):
        writer.submit(rec(0.1, origin=origin), done=lambda _e: wrote.release())
        assert wrote.acquire(timeout=10)
    for w in (a, b):
        w.stop()
    db = TraceDB(path, create=False)
    assert sorted((s.client, s.requests) for s in db.sessions()) == [
        ("127.0.0.1 go[7]", 2), ("127.0.0.1 go[8]", 1)
    ]  # fmt: skip


def test_a_go_command_idle_for_many_requests_keeps_its_session_on_another_writer(
    tmp_path: Path,
) -> None:
    """The same across a long pause: thousands of other requests between go[7]'s last
    on A and its next on B (a window of recent rows once missed it)."""
    path = tmp_path / "t.db"
    a, b = TraceWriter(path, clock=lambda: T0), TraceWriter(path, clock=lambda: T0)
    for w in (a, b):
        w.start()
    wrote = threading.Semaphore(0)
    a.submit(rec(0.0, origin="go[7]"), done=lambda _e: wrote.release())
    assert wrote.acquire(timeout=10)
    for i in range(3000):
        a.submit(rec(0.001 * i, origin=f"go[{100 + i % 50}]"))
    a.submit(rec(5.0, origin="go[9]"), done=lambda _e: wrote.release())
    assert wrote.acquire(timeout=30)
    b.submit(rec(6.0, origin="go[7]"), done=lambda _e: wrote.release())
    assert wrote.acquire(timeout=10)
    for w in (a, b):
        w.stop()
    db = TraceDB(path, create=False)
    [seven] = [s for s in db.sessions(limit=1000) if s.client.endswith("go[7]")]
    assert seven.requests == 2


def test_a_killed_writers_journal_is_replayed_by_the_writer_that_claims_it_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    first = TraceWriter(path)
    first.start()  # holds slot 0 while the killed writer's slot 1 waits
    line = b"1 %s\n" % journal.encode(rec(0.5, version="v9.0.0"))
    path.with_name("t.db.pending.1").write_bytes(line)
    second = TraceWriter(path)
    second.start()
    assert second.stats.recovered == 1 and first.stats.recovered == 0
    second.stop()
    first.stop()
    db = TraceDB(path, create=False)
    assert [r.version for r in db.records(1)] == ["v9.0.0"]
    assert db.journal_seq(1) == 1 and db.journal_seq(0) == 0
