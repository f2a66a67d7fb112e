"""Several replicas' traces as one (issue 17): `modgate trace merge -o ALL.db A=a.db …`
copies every session and request of each replica's trace.db into a new database, in
the order the sessions started, each request's origin prefixed with its replica's name;
every `modgate trace` command then reads it with `--db ALL.db`.

Per-replica files merged on demand rather than one shared database: each replica's
writer records into a local SQLite file (SQLite is not for network file systems) and
journals first, so a request is never left unrecorded for want of a network hop to a
shared server; the merge costs nothing while modgate runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modgate.trace.store import TraceDB, TraceError


@dataclass(frozen=True)
class Merged:
    sessions: int
    requests: int


def merge(out: Path, sources: Sequence[tuple[str, Path]]) -> Merged:
    """Write `out` (which must not exist) from `sources`, (replica name, trace.db) pairs.
    Raises TraceError naming the file at fault."""
    if out.exists():
        raise TraceError(f"{out} exists: merge writes a new database; remove it or name another")
    for _, path in sources:
        if not path.is_file():
            raise TraceError(f"{path}: no trace database there")
    opened: list[tuple[str, TraceDB]] = []
    try:
        for name, path in sources:
            opened.append((name, TraceDB(path, create=False)))
        order = sorted(
            ((s.started, i, s) for i, (_, db) in enumerate(opened) for s in db.sessions(None)),
            key=lambda t: (t[0], t[1], t[2].id),
        )
        dest = TraceDB(out, create=True)
        requests = 0
        try:
            with dest.transaction():
                for _, i, s in order:
                    name, db = opened[i]
                    new = dest.new_session(s.client, s.started, s.label or None)
                    if s.stopped is not None:
                        dest.conn.execute(
                            "UPDATE sessions SET stopped = ? WHERE id = ?", (s.stopped, new)
                        )
                    records = [
                        replace(r, origin=f"{name} {r.origin}".rstrip(), id=0)
                        for r in db.records(s.id)
                    ]
                    dest.insert(records, [new] * len(records))
                    requests += len(records)
        finally:
            dest.close()
        return Merged(len(order), requests)
    finally:
        for _, db in opened:
            db.close()
