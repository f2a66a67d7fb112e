"""Finding audit entries by time without reading the whole log: `modgate trace show`
links a session's requests to their entries, `modgate audit export --since` starts
where the time does.

Entries are appended in roughly the order of their times (each process batches within
a fraction of a second; a batch retried after a failure may come later), so a binary
search over byte offsets lands near a time, and a scan from SLACK seconds before it
finds what is there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from modgate.audit.chain import BadLine, Entry, decode

SLACK = 120.0  # seconds an entry may be appended after a later one


def _entry_at(f: object, offset: int, size: int) -> tuple[int, Entry | None]:
    """The first entry starting at or after `offset`: (its offset, it)."""
    import io

    assert isinstance(f, io.BufferedReader)
    f.seek(offset)
    if offset:
        f.readline()  # the rest of the line `offset` fell in
    while True:
        at = f.tell()
        if at >= size:
            return size, None
        line = f.readline()
        try:
            return at, decode(line.rstrip(b"\n"))
        except BadLine:
            continue


def offset_before(path: Path, when: float) -> int:
    """A byte offset at or before the first entry with time >= `when` - SLACK."""
    target = when - SLACK
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        lo, hi = 0, size
        while hi - lo > 4096:
            mid = (lo + hi) // 2
            _, entry = _entry_at(f, mid, size)
            if entry is None or entry.time >= target:
                hi = mid
            else:
                lo = mid
        return lo


def entries_from(path: Path, since: float | None = None) -> Iterator[tuple[int, Entry]]:
    """(offset, entry) from about `since` on (every entry with a time >= since is among
    them; some a little before it may be too), in log order."""
    start = 0 if since is None else offset_before(path, since)
    with path.open("rb") as f:
        f.seek(start)
        if start:
            f.readline()
        offset = f.tell()
        for line in f:
            at, offset = offset, offset + len(line)
            try:
                yield at, decode(line.rstrip(b"\n"))
            except BadLine:
                continue


def seqs_of_requests(path: Path, keys: set[tuple[float, int]], since: float, until: float
                     ) -> dict[tuple[float, int], int]:  # fmt: skip
    """The seq of the entry recording each request, by its trace key (start, client port),
    for requests that ended between `since` and `until`."""
    found: dict[tuple[float, int], int] = {}
    if not path.is_file() or not keys:
        return found
    for _, entry in entries_from(path, since):
        if entry.time > until + SLACK:
            break
        f = entry.fields
        key = (f.get("start"), f.get("port"))
        if key in keys:
            found[key] = entry.seq
    return found
