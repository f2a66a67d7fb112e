"""The pending journal: each record is appended here, one line, before the request goes
on, so a record survives modgate being killed before the writer has committed it.

    <seq> <JSON array of record.COLUMNS>\\n

One `write(2)` per record to a file opened with O_APPEND: the bytes are in the
operating system's page cache when `append` returns, which is what surviving SIGKILL
takes (surviving a power cut would take an fsync per request; SQLite's WAL with
synchronous=NORMAL makes the same trade). The writer thread truncates the journal
whenever everything in it is committed; on start it replays the lines whose sequence
number the database has not seen (`TraceDB.journal_seq`).

Appending a line and queueing the record happen under one lock, and so does the
writer's check-and-truncate, so no line is truncated before its record is committed.

Several writers on one database (the workers of `modgate run --workers N`, or two
modgates sharing a cache directory) each need a journal of their own: one truncating a
shared file would drop the other's uncommitted lines. Each claims a slot (`claim`): the
first of `trace.db.pending`, `trace.db.pending.1`, ... that no running process holds an
flock on, and keeps it locked while it runs. A slot found free was left by a writer that
ended (or was killed): its new owner replays what it holds.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from modgate.trace.record import COLUMNS, Record

# Made once: json.dumps with separators builds a new encoder on every call, and this
# runs on the event loop for every request.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_VALUES = operator.attrgetter(*COLUMNS)


def encode(record: Record) -> bytes:
    return _ENCODER.encode(_VALUES(record)).encode()


def decode(data: bytes) -> Record:
    fields = json.loads(data)
    if not isinstance(fields, list) or not len(COLUMNS) - 3 <= len(fields) <= len(COLUMNS):
        raise ValueError("not a journal line of this modgate")
    # A line without `origin`, `identity` or `team`: written before them.
    values = dict(zip(COLUMNS, fields, strict=False))
    values["attempts"] = tuple(values["attempts"])
    return Record(**values)


def read(path: Path) -> list[tuple[int, Record]]:
    """The journal's entries; a torn last line (the process died mid-write) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n"):
        seq, _, body = line.partition(b" ")
        try:
            entries.append((int(seq), decode(body)))
        except (ValueError, TypeError):
            continue
    return entries


def claim(base: Path) -> tuple[int, Path, int]:
    """The first free journal slot for `base`: (slot, path, an open, locked descriptor
    for the Journal)."""
    if sys.platform == "win32":  # no flock: one writer per database
        return 0, base, os.open(base, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    import fcntl

    slot = 0
    while True:
        path = base if slot == 0 else base.with_name(f"{base.name}.{slot}")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            slot += 1
            continue
        return slot, path, fd


class Journal:
    def __init__(self, path: Path, last_seq: int, fd: int | None = None) -> None:
        """Append to `path` (through `fd`, from `claim`, if given)."""
        self.path = path
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fd = fd
        self._lock = threading.Lock()
        self._seq = last_seq

    def append(self, record: Record, then: Callable[[int], None]) -> None:
        """Append `record` and call `then(seq)` (queue it) before anyone can truncate."""
        line = encode(record)
        with self._lock:
            self._seq += 1
            os.write(self._fd, b"%d %s\n" % (self._seq, line))
            then(self._seq)

    def truncate_if(self, drained: Callable[[], bool]) -> bool:
        """Empty the journal if `drained()` says every queued record is committed."""
        with self._lock:
            if not drained():
                return False
            os.ftruncate(self._fd, 0)
            return True

    def close(self) -> None:
        os.close(self._fd)
