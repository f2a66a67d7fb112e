"""Appending to the audit log: one chain, however many processes write it.

Several workers (`modgate run --workers N`) append to ONE chain through an exclusive
`flock` on the log file, held for one batch: read the last entry (its seq and hash),
finish a torn tail if there is one, write the batch's lines in one `write(2)`, rewrite
the signed head, release. A dedicated writer process was the other way: it would need
its own supervision and a socket every worker feeds (a request recorded in a worker
that cannot reach it is a gap), while the lock needs nothing that can die separately:
the kernel releases it when its holder dies, however it dies, and the next holder finds
the file as it was left. A batch holds it for well under a millisecond (a tail read, a
write, a signature), so workers writing a few batches a second each never wait long.

What a holder finds at the end of the file:
- a newline: the last entry is whole; the next seq and prev follow from it;
- anything else: a torn line, left by a process killed in the middle of a write. It is
  finished with a newline and recorded by a `torn` entry (offset, length, SHA-256) before
  the batch, so the chain goes on and verify reports it, never silently;
- a last whole line that is not a valid entry: the log was damaged or edited. Nothing is
  appended (a chain cannot continue from an entry it cannot trust): AuditError, until an
  administrator has looked (`modgate audit verify`).

Durability: the lines are in the page cache when `append` returns, which survives
SIGKILL, as the trace journal does; a power cut can lose the last batches (the head
then points past the end, and verify says so).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modgate.audit import AuditError
from modgate.audit.chain import (
    CHECKPOINT,
    GENESIS,
    TORN,
    BadLine,
    Entry,
    Head,
    canonical,
    checkpoint_fields,
    decode,
    encode,
    encode_raw,
)

TAIL_CHUNK = 8192  # an entry is well under 2 KiB; a longer one is read in more steps
# A checkpoint is appended once this many entries or this many seconds have passed since
# the last one (and at every clean stop): what a rewrite of the tail can get away with,
# when the head is lost too.
CHECKPOINT_EVERY = 1000
CHECKPOINT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Pending:
    """An entry to append: everything but its place in the chain."""

    time: float
    kind: str
    fields: dict[str, Any]
    id: str = ""
    # More fields, worked out on the writer's thread (a zip's h1); not journalled.
    later: Callable[[], dict[str, Any]] | None = None
    raw: bytes = b""  # `fields` as canonical JSON, when made already (chain.canonical)


@dataclass(frozen=True, slots=True)
class Appended:
    first: int  # seq of the first entry of the batch
    last: int  # seq of the last (a checkpoint, perhaps)
    torn: str  # "" or what was found torn and recorded


def head_path(log: Path) -> Path:
    return log.with_name(log.name + ".head")


class AuditLog:
    def __init__(
        self,
        path: Path,
        key: Ed25519PrivateKey,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self.path, self.key = path, key
        self.head_path = head_path(path)
        self.checkpoint_every, self.checkpoint_seconds = checkpoint_every, checkpoint_seconds
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise AuditError(f"cannot open the audit log {path}: {e.strerror or e}") from e

    def close(self) -> None:
        os.close(self._fd)

    def append(self, batch: list[Pending], checkpoint: bool = False) -> Appended:
        """Chain `batch` onto the log, under the lock; with a checkpoint after it when one
        is due (or `checkpoint`). Raises AuditError or OSError; a failed write leaves at
        most a torn line, which the next append records."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            last, torn = self._tail(size)
            seq, prev = (last.seq, last.hash) if last else (0, GENESIS)
            out: list[bytes] = []
            note = ""
            if torn is not None:
                offset, fragment = torn
                out.append(b"\n")
                line, prev = encode(seq + 1, time.time(), TORN, {
                    "offset": offset, "length": len(fragment),
                    "sha256": hashlib.sha256(fragment).hexdigest(),
                }, prev)  # fmt: skip
                out.append(line)
                seq += 1
                note = f"{len(fragment)} bytes at byte {offset}, recorded as entry {seq}"
            first = seq + 1
            for p in batch:
                seq += 1
                line, prev = encode_raw(
                    seq, p.time, p.kind, p.raw or canonical(p.fields), prev, p.id
                )
                out.append(line)
            head = self._head()
            since = seq - (head.checkpoint if head else 0)
            now = time.time()
            due = head is None or now - head.checkpoint_time >= self.checkpoint_seconds
            mark, mark_time = (head.checkpoint, head.checkpoint_time) if head else (0, 0.0)
            if seq and (checkpoint or due or since >= self.checkpoint_every):
                seq += 1
                line, prev = encode(
                    seq, now, CHECKPOINT, checkpoint_fields(self.key, seq - 1, prev), prev
                )
                out.append(line)
                mark, mark_time = seq, now
            if out:
                data = b"".join(out)
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write: {written} of {len(data)} bytes")
                self._write_head(Head.make(self.key, seq, prev, mark, mark_time))
            return Appended(first, seq, note)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _tail(self, size: int) -> tuple[Entry | None, tuple[int, bytes] | None]:
        """The last whole entry, and the torn line after it (offset, bytes) if any."""
        if size == 0:
            return None, None
        end = size
        data = os.pread(self._fd, min(size, TAIL_CHUNK), size - min(size, TAIL_CHUNK))
        torn = None
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            while cut < 0 and len(data) < size:  # a torn line longer than a chunk
                data = self._read_back(size, len(data) * 2)
                cut = data.rfind(b"\n")
            fragment = data[cut + 1 :]
            torn = (size - len(fragment), fragment)
            end = size - len(fragment)
            data = data[: cut + 1]
            if not data:
                return None, torn
        start = data.rfind(b"\n", 0, len(data) - 1)
        while start < 0 and len(data) < end:
            data = self._read_back(end, len(data) * 2)
            start = data.rfind(b"\n", 0, len(data) - 1)
        line = data[start + 1 : -1]
        try:
            return decode(line), torn
        except BadLine as e:
            raise AuditError(
                f"{self.path}: the last entry (byte {end - len(line) - 1}) is not valid ({e}): "
                f"nothing more is appended until the log is repaired; run `modgate audit "
                f"verify`"
            ) from e

    def _read_back(self, end: int, n: int) -> bytes:
        n = min(end, n)
        return os.pread(self._fd, n, end - n)

    def _head(self) -> Head | None:
        try:
            return Head.from_bytes(self.head_path.read_bytes())
        except (FileNotFoundError, BadLine):
            return None

    def _write_head(self, head: Head) -> None:
        tmp = self.head_path.with_name(f"{self.head_path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, head.to_bytes())
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)

    def recent_ids(self, since: float, most: int = 200_000) -> set[str]:
        """The ids of the entries at the end of the log, back to the first one older than
        `since` (or `most` lines): what a replayed journal may hold already."""
        ids: set[str] = set()
        for n, entry in enumerate(backwards(self.path)):
            if entry.time < since or n >= most:
                break
            if entry.id:
                ids.add(entry.id)
        return ids


def backwards(path: Path, chunk: int = 65536) -> Iterator[Entry]:
    """The valid entries of `path` from the last to the first (lines that are not
    entries are passed over: verify is the judge of those)."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        rest = b""
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start) + rest
            end = start
            parts = data.split(b"\n")
            rest = parts[0] if start > 0 else b""
            for line in reversed(parts if start == 0 else parts[1:]):
                if line:
                    try:
                        yield decode(line)
                    except BadLine:
                        continue


def read_head(path: Path) -> Head | None:
    """The head beside the log at `path`, None if there is none."""
    try:
        return Head.from_bytes(head_path(path).read_bytes())
    except FileNotFoundError:
        return None
    except BadLine as e:
        raise AuditError(f"{head_path(path)}: {e}") from e
