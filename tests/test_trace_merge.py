"""modgate.trace.merge and `modgate trace merge`: replicas' trace databases as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modgate.cli import main
from modgate.trace.merge import merge
from modgate.trace.store import TraceDB, TraceError
from traceworld import download, filled


def replicas(tmp_path: Path) -> list[Path]:
    """Two replicas' databases: a's sessions at 0 s and 120 s, b's at 60 s."""
    a, b = tmp_path / "a" / "trace.db", tmp_path / "b" / "trace.db"
    a.parent.mkdir()
    b.parent.mkdir()
    filled(a, [*download(), *download(start=120.0, cache="hit")]).close()
    filled(b, download(start=60.0, origin="go[7]")).close()
    return [a, b]


def test_sessions_of_all_replicas_in_start_order_with_their_origin(tmp_path: Path) -> None:
    a, b = replicas(tmp_path)
    out = tmp_path / "all.db"
    merged = merge(out, [("r1", a), ("r2", b)])
    assert (merged.sessions, merged.requests) == (3, 30)
    db = TraceDB(out, create=False)
    try:
        sessions = db.sessions(None)
        assert [s.requests for s in sessions] == [10, 10, 10]
        starts = [s.started for s in sessions]
        assert starts == sorted(starts)
        origins = [{r.origin for r in db.records(s.id)} for s in sessions]
        assert origins == [{"r1"}, {"r2 go[7]"}, {"r1"}]
    finally:
        db.close()


def test_an_existing_output_or_a_missing_source_is_refused(tmp_path: Path) -> None:
    a, _ = replicas(tmp_path)
    with pytest.raises(TraceError, match="exists: merge writes a new database"):
        merge(a, [("r1", a)])
    with pytest.raises(TraceError, match="nope.db: no trace database there"):
        merge(tmp_path / "all.db", [("r1", a), ("x", tmp_path / "nope.db")])
    assert not (tmp_path / "all.db").exists()


def test_the_command_names_replicas_by_directory_and_the_result_reads_with_db(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = replicas(tmp_path)
    out = tmp_path / "all.db"
    assert main(["trace", "merge", "-o", str(out), str(a), f"west={b}"]) == 0
    assert "3 sessions, 30 requests from 2 databases" in capsys.readouterr().out
    assert main(["trace", "show", "2", "--json", "--db", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["origin"] for r in doc["requests"]} == {"west go[7]"}
    assert main(["trace", "merge", "-o", str(out), str(a)]) == 2  # exists: one line, exit 2
    assert "exists" in capsys.readouterr().err
