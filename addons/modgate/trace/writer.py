"""The trace writer: one thread owns the trace database; the proxy only enqueues.

`submit` appends the record to the pending journal (one small write: from then on it
survives modgate being killed) and queues it, and returns: no SQLite on the event
loop, and no waiting for a commit. The thread commits at most once every `pace`
seconds: a record that arrives sooner after the last commit waits for the rest of that
time (it is already in the journal, so waiting costs no safety). It then takes
everything queued (up to `batch` records), places each in its session, inserts them in
one transaction with the journal's sequence number, commits, calls each record's `done`
callback, and empties the journal once nothing queued is left uncommitted. On start it
replays the journal lines the database has not seen: what a killed modgate had not
committed yet.

A batch that cannot be written (disk full, database locked for long) is logged as an
error, counted, and tried again every RETRY_WAIT seconds with what has arrived since;
its lines stay in the journal until it is committed.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from modgate import dirhash
from modgate.batchthread import STOP, BatchThread
from modgate.trace import journal
from modgate.trace.record import Record
from modgate.trace.sessions import (
    DEFAULT_GAP,
    TAG_GAP,
    Begin,
    Label,
    Sessionizer,
    session_key,
)
from modgate.trace.store import TraceDB

log = logging.getLogger("modgate")

Done = Callable[[str | None], None]
"""Called on the writer thread once the record is committed (None) or failed (the error)."""

PRUNE_EVERY = 600.0
PRUNE_CHUNK = 5_000
# Labels stopped longer ago than this no longer take requests (which start after them).
LABELS_SINCE = 86400.0
# How far back a writer looks for a client's latest session (an index seek, however far):
# the longest a session stays open between requests (sessions.py).
SESSIONS_SINCE = TAG_GAP
# A batch that fails is tried again after this long, with what has arrived since; at most
# this many records wait (in memory; they are in the journal too), the oldest go first.
RETRY_WAIT = 1.0
RETRY_MAX = 100_000
# Commits at most this often. A transaction per record or two, as requests arrive one by
# one, cost more CPU than the rest of a cached hit (scripts/bench, issue 6); records
# still reach the database within this long.
PACE = 0.1
# A record whose origin (the go command at the other end of its connection) is still being
# looked up waits for it this long at most, on the writer's thread, never the client's.
# The journal holds the record without it: one replayed after a kill has no origin.
ORIGIN_LATE = 10.0


@dataclass(frozen=True)
class _Item:
    record: Record
    body: bytes | None = None  # a served .mod/.zip, to compute its h1 when none was given
    done: Done | None = None
    seq: int = 0  # its line in the journal
    origin: Future[str] | None = None  # Record.origin, when not known yet (peers.Lookups)
    until: float = 0.0  # time.monotonic() after which the record goes without it


@dataclass
class Stats:
    written: int = 0
    failures: int = 0  # attempts to write a batch that failed
    dropped: int = 0  # records given up after failures (past RETRY_MAX waiting)
    recovered: int = 0  # replayed from the journal on start
    batches: int = 0
    busy: float = 0.0  # seconds the thread spent writing
    last_error: str = ""
    lag: float = 0.0  # seconds from the last batch's earliest request end to its commit


class TraceWriter(BatchThread["_Item"]):
    def __init__(
        self,
        path: Path,
        *,
        gap: float = DEFAULT_GAP,
        retention: float | None = None,
        batch: int = 512,
        pace: float = PACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("modgate-trace", "trace writer")
        self.path, self.retention, self.batch, self.clock = path, retention, batch, clock
        self.pace = pace
        self._committed = -pace  # time.monotonic() of the last commit
        self.sessionizer = Sessionizer(gap)
        self.stats = Stats()
        self._db: TraceDB | None = None
        self._next_prune = 0.0
        self._pruned = 0
        self._cached_labels: list[Label] | None = None
        # Session keys whose latest session was read since another writer last wrote.
        self._synced: set[str] = set()
        self.journal_path = path.with_name(path.name + ".pending")  # slot 0's: see start
        self._slot = 0
        self._journal: journal.Journal | None = None

    def start(self) -> None:
        """Open the database (a TraceError is raised here, not later), queue what the
        journal holds that the database lacks, and start the thread."""
        self._db = TraceDB(self.path, threaded=True)
        self._slot, self.journal_path, fd = journal.claim(self.journal_path)
        committed = self._db.journal_seq(self._slot)
        pending = [(s, r) for s, r in journal.read(self.journal_path) if s > committed]
        # Requests replayed, or arriving soon, carry on with the sessions they were part of.
        since = min([self.clock(), *(r.start for _, r in pending)]) - self.sessionizer.gap
        for client, session, last_end in self._db.open_sessions(since):
            self.sessionizer.resume(client, session, last_end)
        for seq, record in pending:
            self._queue.put(_Item(record, seq=seq))
        self.stats.recovered = len(pending)
        if pending:
            log.warning(
                "modgate: trace: recovering %d requests recorded before modgate stopped "
                "without writing them (%s)", len(pending), self.journal_path,
            )  # fmt: skip
        last = max([committed, *(s for s, _ in pending)])
        self._journal = journal.Journal(self.journal_path, last, fd)
        self._start_thread()

    def _closed(self) -> None:
        # The database is closed by the thread itself, as it ends (_run).
        if self._journal is not None:
            self._journal.close()

    def submit(
        self,
        record: Record,
        body: bytes | None = None,
        done: Done | None = None,
        origin: Future[str] | None = None,
    ) -> None:
        """Journal and queue a record (on the caller's thread: one small write, no SQLite).
        `origin`: the record's origin, once found (it waits ORIGIN_LATE at most). A stopped
        writer reports it lost at once."""
        if self._thread is None or not self._thread.is_alive() or self._journal is None:
            self.stats.dropped += 1
            if done is not None:
                done(f"the trace writer for {self.path} is not running")
            return
        until = time.monotonic() + ORIGIN_LATE
        try:
            self._journal.append(
                record,
                lambda seq: self._queue.put(_Item(record, body, done, seq, origin, until)),
            )
        except OSError as e:  # the journal's disk is full or gone: the record is not lost yet
            log.error("modgate: cannot append to the trace journal %s: %s", self.journal_path, e)
            self._queue.put(_Item(record, body, done, 0, origin, until))

    def _run(self) -> None:
        assert self._db is not None
        try:
            while True:
                wait = RETRY_WAIT if self._retry else self._until_prune()
                items = self._take(wait, self._committed, self.batch)
                if not items and not self._retry:
                    self._prune()
                    continue
                batch = self._retry + [i for i in items if isinstance(i, _Item)]
                self._retry = []
                if batch:
                    self._write(batch)
                if STOP in items:
                    self._drain()
                    if self._journal is not None and not self._failing:
                        self._journal.truncate_if(self._queue.empty)
                    return
                if self._until_prune() == 0:
                    self._prune()
        finally:
            self._db.close()

    def _until_prune(self) -> float | None:
        if self.retention is None:
            return None
        return max(0.0, self._next_prune - self.clock())

    def _drain(self) -> None:
        """The last attempt, at stop: what fails stays in the journal for the next start."""
        rest: list[_Item] = self._retry
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Item):
                rest.append(item)
        if rest:
            self._write(rest)

    def _write(self, batch: list[_Item]) -> None:
        assert self._db is not None
        began = time.perf_counter()
        error: str | None = None
        try:
            records = [_with_h1(_with_origin(item)) for item in batch]
            with self._db.transaction():
                labels = self._labels(records)
                self._db.insert(records, [self._place(r, labels) for r in records])
                seq = max(item.seq for item in batch)
                if seq:
                    self._db.set_journal_seq(seq, self._slot)
            self._committed = time.monotonic()
            self.stats.lag = max(0.0, time.time() - min(r.end for r in records))
            self.stats.written += len(records)
            self._failing = False
            if self._journal is not None:
                self._journal.truncate_if(self._queue.empty)
        except Exception as e:  # sqlite3.Error, TraceError, or a bug: the writer goes on
            error = f"cannot write the trace to {self.path}: {e}"
            self.stats.failures += 1
            self.stats.last_error = error
            self._failing = True
            # Sessions begun in the rolled-back transaction do not exist.
            self.sessionizer = Sessionizer(self.sessionizer.gap)
            self._cached_labels = None
            self._synced.clear()
            self._retry, batch = batch[-RETRY_MAX:], batch[:-RETRY_MAX]
            self.stats.dropped += len(batch)
            log.error(
                "modgate: %s (%d requests waiting, retried every %.0fs; %d given up)",
                error, len(self._retry), RETRY_WAIT, self.stats.dropped,
            )  # fmt: skip
        self.stats.batches += 1
        self.stats.busy += time.perf_counter() - began
        for item in batch:
            if item.done is not None:
                try:
                    item.done(error)
                except Exception:  # a callback must not stop the writer
                    log.exception("modgate: trace callback failed")

    def _labels(self, records: list[Record]) -> list[Label]:
        """The labelled sessions, read again only when another process wrote; and the
        latest session of each client in `records` that this writer has not read since
        then: another writer on this database (a worker of the same modgate) may have
        begun or continued it, and a client's requests are spread across workers. Called
        under the write lock, so two writers never both begin a session for one client."""
        assert self._db is not None
        now = self.clock()
        if self._db.changed_elsewhere() or self._cached_labels is None:
            self._cached_labels = self._db.labels(since=now - LABELS_SINCE)
            self._synced.clear()
        unread = sorted({session_key(r.client, r.origin) for r in records} - self._synced)
        if unread:
            for client, session, end in self._db.latest_sessions(now - SESSIONS_SINCE, unread):
                if session is None:
                    self.sessionizer.labelled(client)
                else:
                    self.sessionizer.resume(client, session, end)
            # From here on this writer knows them: what it writes changes no one else's.
            self._synced.update(unread)
        return self._cached_labels

    def _place(self, record: Record, labels: list[Label]) -> int:
        """The session `record` goes into, begun now if it is a new one."""
        assert self._db is not None
        key = session_key(record.client, record.origin)
        decision = self.sessionizer.place(key, record.start, labels)
        if isinstance(decision, Begin):
            session = self._db.new_session(key, record.start)
        else:
            session = decision.session
        self.sessionizer.joined(key, decision, session, record.end)
        return session

    def _prune(self) -> None:
        """One chunk of retention: short, so records keep flowing while a backlog goes."""
        assert self._db is not None and self.retention is not None
        try:
            deleted = self._db.prune(self.clock() - self.retention, PRUNE_CHUNK)
        except sqlite3.Error as e:
            log.error("modgate: cannot prune the trace database %s: %s", self.path, e)
            deleted = 0
        more = deleted == PRUNE_CHUNK
        self._next_prune = self.clock() + (0.0 if more else PRUNE_EVERY)
        self._pruned += deleted
        if not more and self._pruned:
            log.info("modgate: trace: removed %d requests past the retention", self._pruned)
            self._pruned = 0


def _with_origin(item: _Item) -> _Item:
    """The item with its record's origin, once found (or given up on: see ORIGIN_LATE)."""
    if item.origin is None:
        return item
    try:
        found = item.origin.result(timeout=max(0.0, item.until - time.monotonic()))
    except Exception:  # not found in time, or the lookup failed: the record goes without
        found = ""
    record = item.record.replace(origin=found) if found else item.record
    return dataclasses.replace(item, record=record, origin=None)


def _with_h1(item: _Item) -> Record:
    """The record with the h1 of its body when no verifier gave one (off the event loop)."""
    record, body = item.record, item.body
    if body is None or record.h1 or record.status != 200:
        return record
    try:
        if record.kind == "mod":
            return record.replace(h1=dirhash.hash_gomod(body))
        if record.kind == "zip":
            prefix = f"{record.module}@{record.version}/"
            return record.replace(h1=dirhash.hash_zip(io.BytesIO(body), prefix))
    except (ValueError, dirhash.ZipError):
        pass  # not a valid module zip: no hash to give
    return record
