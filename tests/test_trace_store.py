"""The trace database: records in and out, session summaries, labels, retention."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from modgate.trace.record import COLUMNS, Record, to_row
from modgate.trace.store import SCHEMA_VERSION, TraceDB, TraceError
from traceworld import T0, download, filled, rec


def test_a_record_comes_back_as_it_went_in(tmp_path: Path) -> None:
    r = rec(
        kind="zip", module="example.com/Upper", version="v1.0.0-rc.1", ttfb=None, bytes_out=None,
        attempts=("https://a: 404", "https://b: 200"), hash_verdict="verified",
        hash_source="sumdb", h1="h1:abc=", rule_verdict="allow", rule="modules[3]",
    )  # fmt: skip
    db = filled(tmp_path / "t.db", [r])
    [back] = db.records(1)
    assert back == r.replace(session=1, id=1)
    assert len(to_row(r)) == len(COLUMNS)  # every column but id, plus `refused`


def test_records_come_back_in_the_order_they_started(tmp_path: Path) -> None:
    slow_zip = rec(0.0, took=5.0, kind="zip")  # ends last, is written last
    quick = [rec(0.1 * i, kind="mod", version=f"v1.0.{i}") for i in range(1, 4)]
    db = filled(tmp_path / "t.db", [slow_zip, *quick])
    assert [r.version for r in db.records(1)] == ["v1.0.0", "v1.0.1", "v1.0.2", "v1.0.3"]


def test_the_summary_of_a_session_counts_what_ls_shows(tmp_path: Path) -> None:
    records = [
        *download(cache="hit"),
        rec(1.0, kind="zip", module="example.com/c", cache="miss", bytes_out=5000),
        rec(1.1, kind="zip", module="example.com/d", cache="", status=502, error="no upstream"),
        rec(1.2, kind="zip", module="example.com/e", rule_verdict="deny", status=403, cache=""),
        rec(1.3, kind="tunnel", module="", version="", cache="", bytes_out=None),
    ]
    db = filled(tmp_path / "t.db", records)
    [s] = db.sessions()
    assert (s.id, s.client, s.label, s.requests) == (1, "127.0.0.1", "", 14)
    assert s.versions == 5  # a@v1.2.0, B@v0.3.1, c, d and e (each v1.0.0)
    assert s.bytes_out == 10 * 1000 + 5000 + 2000
    assert (s.hits, s.cached, s.refused, s.errors) == (10, 11, 1, 1)
    assert s.hit_ratio == pytest.approx(10 / 11)
    assert s.duration == pytest.approx(1.31, abs=1e-6)
    assert db.session(1) == s


def test_ls_lists_the_latest_sessions_oldest_first(tmp_path: Path) -> None:
    records = [rec(100.0 * i, module=f"example.com/m{i}") for i in range(5)]
    db = filled(tmp_path / "t.db", records)
    assert [s.id for s in db.sessions()] == [1, 2, 3, 4, 5]
    assert [s.id for s in db.sessions(limit=2)] == [4, 5]
    assert db.last_session() == 5


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("last", 3), ("2", 2), ("x", "'x' is not a session ID"), ("9", "no session 9")],
)
def test_a_session_is_named_by_its_number_or_last(
    tmp_path: Path, ref: str, expected: int | str
) -> None:
    db = filled(tmp_path / "t.db", [rec(100.0 * i) for i in range(3)])
    if isinstance(expected, int):
        assert db.session(db.resolve(ref)).id == expected
    else:
        with pytest.raises(TraceError, match=expected):
            db.session(db.resolve(ref))


def test_labels_open_and_stop(tmp_path: Path) -> None:
    db = TraceDB(tmp_path / "t.db")
    first = db.start_label("build", T0)
    second = db.start_label("test", T0 + 5)  # starting one stops the open one
    assert [(lb.name, lb.stopped) for lb in db.labels(since=T0)] == [
        ("build", T0 + 5), ("test", None),
    ]  # fmt: skip
    assert [lb.session for lb in db.stop_label(T0 + 9)] == [second.session]
    assert db.stop_label(T0 + 10) == []
    assert db.labels(since=T0 + 9.5) == []
    assert first.session != second.session
    with pytest.raises(TraceError, match="no sessions recorded"):
        TraceDB(tmp_path / "empty.db").last_session()
    assert db.last_session() == second.session  # no requests yet: the latest label


def test_prune_drops_old_requests_and_the_sessions_they_leave_empty(tmp_path: Path) -> None:
    day = 86400.0
    records = [rec(0.0), rec(0.5), rec(3 * day), rec(3 * day + 1)]
    db = filled(tmp_path / "t.db", records)
    db.start_label("open", T0 - day)  # an open label is kept even when old
    assert [db.prune(T0 + day, chunk=1) for _ in range(3)] == [1, 1, 0]
    assert [(s.id, s.requests) for s in db.sessions()] == [(2, 2), (3, 0)]


def test_a_missing_or_newer_database_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no trace database at .*nothing.db"):
        TraceDB(tmp_path / "nothing.db", create=False)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(TraceError, match="newer than this modgate understands"):
        TraceDB(newer)


def test_the_database_is_in_wal_mode_so_readers_never_wait_for_the_writer(
    tmp_path: Path,
) -> None:
    db = filled(tmp_path / "t.db", [rec()])
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer = TraceDB(tmp_path / "t.db")
    with writer.transaction():
        writer.insert([rec(1.0).replace(session=1)])
        assert db.count() == 1  # the reader sees the last commit while a write is open
    assert db.count() == 2


def test_refused_is_a_rule_denial_or_a_hash_that_did_not_check_out() -> None:
    assert rec(rule_verdict="deny").refused
    assert rec(hash_verdict="mismatch").refused
    assert not rec(rule_verdict="audit-deny", hash_verdict="unverified").refused
    assert isinstance(rec(), Record)


def test_a_new_trace_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """`mitmdump -s` sets no umask: the trace (paths, clients, errors) is still private."""
    old = os.umask(0o022)
    try:
        db = TraceDB(tmp_path / "home" / "trace.db")
        with db.transaction():
            db.conn.execute("PRAGMA user_version")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "home").iterdir()}
        db.close()
    finally:
        os.umask(old)
    assert modes["trace.db"] == 0o600
    assert all(mode == 0o600 for name, mode in modes.items() if name.startswith("trace.db")), modes
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700


def test_a_version_1_database_gains_the_origin_column_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "trace.db"
    db = TraceDB(path)
    db.insert([rec(0.0, origin="go[12]")], [db.new_session("127.0.0.1", T0)])
    db.conn.execute("DROP INDEX requests_by_client")  # as version 1 made it
    db.conn.execute("DROP INDEX requests_by_team")
    for column in ("origin", "identity", "team"):
        db.conn.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    db.conn.execute("PRAGMA user_version = 1")
    db.close()
    again = TraceDB(path)
    assert again.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [old] = again.records(1)
    assert old.origin == ""
    again.insert([rec(1.0, origin="go[13]")], [1])
    assert [r.origin for r in again.records(1)] == ["", "go[13]"]
    assert again.latest_sessions(0.0, ["127.0.0.1 go[13]"]) == [("127.0.0.1 go[13]", 1, T0 + 1.01)]
    again.close()


def test_a_journal_line_written_before_the_origin_field_still_reads() -> None:
    from modgate.trace import journal

    line = journal.encode(rec(0.0, origin="tag ci", identity="alice", team="team-a"))
    values = json.loads(line)[:-3]  # the fields it had no room for
    assert journal.decode(json.dumps(values).encode()).origin == ""
    before_teams = journal.decode(json.dumps(json.loads(line)[:-2]).encode())
    assert (before_teams.origin, before_teams.identity, before_teams.team) == ("tag ci", "", "")
    assert journal.decode(line).team == "team-a"
    assert journal.decode(line).origin == "tag ci"


def test_a_version_2_database_gains_identity_and_team_and_ls_filters_by_team(
    tmp_path: Path,
) -> None:
    path = tmp_path / "trace.db"
    db = TraceDB(path)
    db.insert([rec(0.0, origin="go[12]")], [db.new_session("127.0.0.1", T0)])
    db.conn.execute("DROP INDEX requests_by_team")  # as version 2 made it
    db.conn.execute("ALTER TABLE requests DROP COLUMN identity")
    db.conn.execute("ALTER TABLE requests DROP COLUMN team")
    db.conn.execute("PRAGMA user_version = 2")
    db.close()
    again = TraceDB(path)
    assert again.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [old] = again.records(1)
    assert (old.origin, old.identity, old.team) == ("go[12]", "", "")
    second = again.new_session("127.0.0.2", T0 + 5)
    again.insert(
        [rec(6.0, identity="alice", team="team-a"), rec(7.0, identity="ci", team="team-a")],
        [second, second],
    )
    third = again.new_session("127.0.0.3", T0 + 9)
    again.insert([rec(9.0, identity="bob", team="team-b")], [third])
    assert [s.id for s in again.sessions(team="team-a")] == [second]
    assert [s.id for s in again.sessions(limit=1, team="team-b")] == [third]
    assert again.sessions(team="nobody") == []
    [summary] = again.sessions(team="team-a")
    assert summary.teams == "team-a" and sorted(summary.identities.split(",")) == ["alice", "ci"]
    assert [r.identity for r in again.records(second)] == ["alice", "ci"]
    again.close()


def test_a_reader_opened_beside_the_writer_leaves_its_commits_visible(tmp_path: Path) -> None:
    """The admin API and the dashboard open the database in the writer's own process.
    Opening it must not drop the writer's POSIX locks (closing any descriptor of a file
    does), or the next connection to close elsewhere deletes the WAL under the writer,
    and what it commits afterwards reaches no reader until it stops."""
    import subprocess
    import sys

    path = tmp_path / "trace.db"
    writer = TraceDB(path)
    with writer.transaction():
        writer.insert([rec(T0)], [writer.new_session("127.0.0.1", T0)])
    TraceDB(path, create=False).close()  # a reader, in this process

    def count_elsewhere() -> int:
        code = f"import sqlite3; c = sqlite3.connect({str(path)!r}); print(c.execute('SELECT count(*) FROM requests').fetchone()[0]); c.close()"
        return int(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )

    assert count_elsewhere() == 1
    with writer.transaction():
        writer.insert([rec(T0 + 1)], [1])
    assert count_elsewhere() == 2
    assert path.with_name("trace.db-wal").exists()
    writer.close()
