"""The trace database: SQLite in WAL mode, so `modgate trace` reads while the proxy writes.

    sessions  id, client (IP, or "*" for a labelled session), label, started, stopped
    meta      journal_seq: the last journal entry committed (`journal`); journal_seq.N
              for the journal of the Nth writer running at once (workers)
    requests  one row per Record (`record.COLUMNS`) plus `refused`, indexed by
              (session, start) for `trace show`; rows arrive in about the order they
              end, so retention deletes from the lowest id up and needs no index;
              `identity` and `team` say who asked (rules.yaml teams), by (team, session)

A commit in WAL mode with synchronous=NORMAL reaches the operating system before it
returns: it survives the process being killed (SIGKILL), though not a power cut.
One writer (`TraceWriter`'s thread) and any number of readers; every connection
waits up to 5 s for a lock.

    TraceError(ModgateError)   the database cannot be opened, read or written
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modgate.errors import ModgateError
from modgate.trace.record import COLUMNS, Record, from_row, to_row
from modgate.trace.sessions import Label

SCHEMA_VERSION = 3  # 2: requests.origin; 3: requests.identity, requests.team
LABELLED = "*"  # the client of a labelled session: it takes every client's requests


def default_db(cache_dir: str | Path) -> Path:
    """trace.db beside the cache directory: ~/.modgate/trace.db by default (the cache is
    ~/.modgate/cache), DIR/../trace.db for `modgate run --cache-dir DIR`."""
    return Path(cache_dir).expanduser().absolute().parent / "trace.db"


_TYPES = {
    "start": "REAL NOT NULL", "end": "REAL NOT NULL", "ttfb": "REAL", "client": "TEXT NOT NULL",
    "client_port": "INTEGER", "port": "INTEGER", "status": "INTEGER", "bytes_in": "INTEGER",
    "bytes_out": "INTEGER", "session": "INTEGER NOT NULL REFERENCES sessions(id)",
    "origin": "TEXT NOT NULL DEFAULT ''", "identity": "TEXT NOT NULL DEFAULT ''",
    "team": "TEXT NOT NULL DEFAULT ''",
    "id": "INTEGER PRIMARY KEY",
}  # fmt: skip
_COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)
_INSERTED = [c for c in COLUMNS if c != "id"] + ["refused"]
_INSERT = (
    f"INSERT INTO requests ({', '.join(f'"{c}"' for c in _INSERTED)}) "
    f"VALUES ({', '.join('?' * len(_INSERTED))})"
)

SCHEMA = f"""
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    label TEXT,
    started REAL NOT NULL,
    stopped REAL
);
CREATE TABLE requests (
    {", ".join(f'"{c}" {_TYPES.get(c, "TEXT")}' for c in COLUMNS)},
    refused INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX requests_by_session ON requests(session, start);
CREATE INDEX requests_by_client ON requests(client, origin, "end");
CREATE INDEX requests_by_team ON requests(team, session) WHERE team != '';
CREATE INDEX open_labels ON sessions(stopped) WHERE label IS NOT NULL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('journal_seq', 0);
PRAGMA user_version = {SCHEMA_VERSION}
"""


# A writer looks up a client's latest session by it (TraceWriter._sync_sessions).
_BY_CLIENT = 'CREATE INDEX IF NOT EXISTS requests_by_client ON requests(client, origin, "end")'
# What each version added to `requests`, to bring an older database up to this one.
_MIGRATIONS = {
    1: ["ALTER TABLE requests ADD COLUMN origin TEXT NOT NULL DEFAULT ''"],
    2: [
        "ALTER TABLE requests ADD COLUMN identity TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE requests ADD COLUMN team TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX IF NOT EXISTS requests_by_team ON requests(team, session) WHERE team != ''",
    ],
}


def _seq_key(slot: int) -> str:
    return "journal_seq" if slot == 0 else f"journal_seq.{slot}"


class TraceError(ModgateError):
    """The trace database cannot be opened, read or written."""


@dataclass(frozen=True)
class SessionSummary:
    """One line of `modgate trace ls`."""

    id: int
    client: str
    label: str
    started: float
    first: float | None  # the first request's start
    last: float | None  # the last request's end
    requests: int
    versions: int  # distinct module@version
    bytes_out: int
    hits: int  # answered from the cache (hit, negative, stale)
    cached: int  # requests with a cache outcome at all
    refused: int
    errors: int
    stopped: float | None = None
    teams: str = ""  # the teams whose requests are in it, comma-separated
    identities: str = ""  # the members who asked, comma-separated

    @property
    def duration(self) -> float:
        return (self.last - self.first) if self.first is not None and self.last else 0.0

    @property
    def hit_ratio(self) -> float | None:
        return self.hits / self.cached if self.cached else None


_SUMMARY = """
SELECT s.id, s.client, coalesce(s.label, ''), s.started,
       min(r.start), max(r."end"), count(r.id),
       count(DISTINCT CASE WHEN r.version != '' THEN r.module || '@' || r.version END),
       coalesce(sum(r.bytes_out), 0),
       coalesce(sum(r.cache IN ('hit', 'negative', 'stale')), 0),
       coalesce(sum(r.cache != ''), 0),
       coalesce(sum(r.refused), 0),
       coalesce(sum(r.error != '' OR r.status >= 500 OR r.status = 0), 0),
       s.stopped,
       coalesce(group_concat(DISTINCT nullif(r.team, '')), ''),
       coalesce(group_concat(DISTINCT nullif(r.identity, '')), '')
FROM sessions s LEFT JOIN requests r ON r.session = s.id
"""


class TraceDB:
    def __init__(self, path: Path, *, create: bool = True, threaded: bool = False) -> None:
        """Open (or create) the database. `threaded`: opened here, used by one other thread."""
        self.path = path
        self._data_version = -1
        if not create and not path.exists():
            raise TraceError(
                f"no trace database at {path}; for a `modgate run --cache-dir DIR` give the "
                "same --cache-dir, or --db FILE"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Private whatever the umask (mitmdump sets none): SQLite gives its -wal and
            # -shm files the database file's mode. Only when it is new: closing any
            # descriptor of a file drops all of this process's POSIX locks on it, so in a
            # process whose writer has it open (the admin API, the dashboard) the next
            # connection to close, in any process, would take itself for the last and
            # delete the WAL under the writer: its commits then reach no reader.
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            self.conn = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=not threaded
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                with self.transaction():  # under the write lock: one process creates it
                    if self.conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for statement in SCHEMA.split(";"):
                            self.conn.execute(statement)
            if 0 < version < SCHEMA_VERSION:
                with self.transaction():  # one process migrates; the others see it done
                    found = self.conn.execute("PRAGMA user_version").fetchone()[0]
                    for step in range(found, SCHEMA_VERSION) if found else ():
                        for statement in _MIGRATIONS[step]:
                            self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if 0 < version <= SCHEMA_VERSION and create:
                # Added to version 2 without a new version: older modgates ignore it.
                self.conn.execute(_BY_CLIENT)
            if version > SCHEMA_VERSION:
                raise TraceError(
                    f"{path}: trace database version {version} is newer than this modgate "
                    f"understands ({SCHEMA_VERSION})"
                )
        except (sqlite3.Error, OSError) as e:
            raise TraceError(f"{path}: cannot open the trace database: {e}") from e

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.execute("COMMIT")

    # --- writing (the writer thread) ---------------------------------------------------

    def new_session(self, client: str, started: float, label: str | None = None) -> int:
        cur = self.conn.execute(
            "INSERT INTO sessions (client, label, started) VALUES (?, ?, ?)",
            (client, label, started),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def insert(self, records: Sequence[Record], sessions: Sequence[int] | None = None) -> None:
        """Insert records, into `sessions` (one per record) when given."""
        if sessions is None:
            rows = [to_row(r) for r in records]
        else:
            rows = [to_row(r, s) for r, s in zip(records, sessions, strict=True)]
        self.conn.executemany(_INSERT, rows)

    def prune(self, cutoff: float, chunk: int = 5_000) -> int:
        """Delete up to `chunk` requests that ended before `cutoff`, in one short
        transaction; once fewer remain, also the sessions left empty. Returns how many
        requests went: call again while it returns `chunk`."""
        with self.transaction():
            deleted = self.conn.execute(
                'DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE "end" < ? '
                "ORDER BY id LIMIT ?)",
                (cutoff, chunk),
            ).rowcount
            if deleted < chunk:
                self.conn.execute(
                    "DELETE FROM sessions WHERE started < ? AND (label IS NULL OR stopped IS "
                    "NOT NULL) AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.session = "
                    "sessions.id)",
                    (cutoff,),
                )
        return int(deleted)

    def open_sessions(self, since: float) -> list[tuple[str, int, float]]:
        """(client, session, last end) of each client's unlabelled session active since
        `since`, so a restarted writer carries on with them."""
        return [(c, s, e) for c, s, e in self.latest_sessions(since) if s is not None]

    def latest_sessions(
        self, since: float, clients: Sequence[str] | None = None
    ) -> list[tuple[str, int | None, float]]:
        """(client, session, end) of each client's latest request that ended after `since`
        (of `clients` only, if given: one index seek each, however long ago the client
        was last seen; else among the last 10,000 recorded); session None when that
        request was in a labelled session (the client's next request begins a new one,
        once the label has stopped). A client here is a session key (session_key)."""
        if clients is None:
            key = "(r.client || CASE WHEN r.origin = '' THEN '' ELSE ' ' || r.origin END)"
            rows = self.conn.execute(
                f'SELECT {key}, r.session, max(r."end"), s.label IS NOT NULL FROM requests r '
                "JOIN sessions s ON s.id = r.session WHERE r.id > (SELECT coalesce(max(id), 0)"
                f' - 10000 FROM requests) AND r."end" > ? GROUP BY {key}',
                (since,),
            ).fetchall()
        else:
            rows = []
            for key in clients:
                client, _, origin = key.partition(" ")
                row = self.conn.execute(
                    'SELECT r.session, r."end", s.label IS NOT NULL FROM requests r '
                    "JOIN sessions s ON s.id = r.session WHERE r.client = ? AND r.origin = ? "
                    'AND r."end" > ? ORDER BY r."end" DESC LIMIT 1',
                    (client, origin, since),
                ).fetchone()
                if row is not None:
                    rows.append((key, *row))
        return [(str(c), None if labelled else int(s), float(e)) for c, s, e, labelled in rows]

    def journal_seq(self, slot: int = 0) -> int:
        """The last entry of journal `slot` (journal.claim) committed."""
        row = self.conn.execute(
            "SELECT value FROM meta WHERE key = ?", (_seq_key(slot),)
        ).fetchone()
        return int(row[0]) if row else 0

    def set_journal_seq(self, seq: int, slot: int = 0) -> None:
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_seq_key(slot), seq),
        )

    # --- labels (`modgate trace start` / `stop`) -----------------------------------------

    def changed_elsewhere(self) -> bool:
        """Whether another connection (`modgate trace start`, say) committed since the
        last call: SQLite's data_version, a counter read without touching a table."""
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        changed, self._data_version = version != self._data_version, version
        return changed

    def labels(self, since: float) -> list[Label]:
        """Labelled sessions open now or stopped after `since`."""
        rows = self.conn.execute(
            "SELECT id, label, started, stopped FROM sessions WHERE label IS NOT NULL "
            "AND (stopped IS NULL OR stopped > ?) ORDER BY id",
            (since,),
        ).fetchall()
        return [Label(*row) for row in rows]

    def start_label(self, name: str, now: float) -> Label:
        """Open a labelled session, stopping one that is open."""
        with self.transaction():
            self._stop_labels(now)
            session = self.new_session(LABELLED, now, name)
        return Label(session, name, now)

    def stop_label(self, now: float) -> list[Label]:
        with self.transaction():
            return self._stop_labels(now)

    def _stop_labels(self, now: float) -> list[Label]:
        open_ = self.labels(now)
        self.conn.execute(
            "UPDATE sessions SET stopped = ? WHERE label IS NOT NULL AND stopped IS NULL", (now,)
        )
        return [Label(lb.session, lb.name, lb.started, now) for lb in open_ if lb.stopped is None]

    # --- reading -------------------------------------------------------------------------

    def sessions(self, limit: int | None = 20, team: str | None = None) -> list[SessionSummary]:
        """The latest `limit` sessions (all if None), oldest first; with `team`, those
        with requests of that team."""
        among = "sessions"
        params: list[object] = []
        if team is not None:
            among = "(SELECT DISTINCT session AS id FROM requests WHERE team = ?)"
            params.append(team)
        where = f"WHERE s.id IN (SELECT id FROM {among} ORDER BY id DESC"
        if limit is not None:
            where += " LIMIT ?"
            params.append(limit)
        rows = self.conn.execute(
            f"{_SUMMARY} {where}) GROUP BY s.id ORDER BY s.id", params
        ).fetchall()
        return [SessionSummary(*row) for row in rows]

    def session(self, session: int) -> SessionSummary:
        row = self.conn.execute(f"{_SUMMARY} WHERE s.id = ? GROUP BY s.id", (session,)).fetchone()
        if row is None:
            raise TraceError(f"no session {session} in {self.path}")
        return SessionSummary(*row)

    def last_session(self) -> int:
        """The session of the latest recorded request, else the latest labelled one."""
        row = self.conn.execute("SELECT session FROM requests ORDER BY id DESC LIMIT 1").fetchone()
        row = row or self.conn.execute("SELECT max(id) FROM sessions").fetchone()
        if row is None or row[0] is None:
            raise TraceError(f"no sessions recorded in {self.path} yet")
        return int(row[0])

    def resolve(self, ref: str) -> int:
        """A session ID as the user gives it: a number, or "last"."""
        if ref == "last":
            return self.last_session()
        try:
            return int(ref)
        except ValueError:
            raise TraceError(f"{ref!r} is not a session ID (a number, or 'last')") from None

    def records(self, session: int) -> list[Record]:
        """A session's requests in the order they started."""
        rows = self.conn.execute(
            f"SELECT {_COLUMN_LIST} FROM requests WHERE session = ? ORDER BY start, id",
            (session,),
        )
        return [from_row(row) for row in rows]

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM requests").fetchone()[0])
